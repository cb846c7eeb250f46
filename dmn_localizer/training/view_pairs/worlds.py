"""Simulated worlds held in memory as views (image, pose, true column depth) for the view-pair
recipe of the aligned model (:mod:`dmn_localizer.training.view_pairs`).

A world of a dataset (:mod:`dmn_localizer.data.dataset`) has ``Kc`` context views and ``R``
trajectories of ``L`` steps; here they are one list of ``V = Kc + R * L`` views per world, the
first ``Kc`` being the context pool. The true depth of every view's columns is ray-cast on the
world's stored layout (:func:`~dmn_localizer.data.column_depth.column_depths`). A dataset
built from bags has no layouts: there the true depths are the depth camera's measured column
depths when the bags had a depth topic (:mod:`dmn_localizer.data.from_bags`), else unknown.
Unknown depths (no depth frame, or a column the sensor read nothing in) are NaN and the depth
loss skips them; which views overlap is then judged on the column depths a model predicts there
(:func:`predict_overlap_depth`), kept apart in ``overlap_depth`` so they never supervise.
"""
from dataclasses import dataclass
import logging

import numpy as np
import torch
from tqdm import tqdm

from dmn_localizer.data.column_depth import column_depths
from dmn_localizer.data.dataset import open_dataset, SIZE_KEYS
from dmn_localizer.depth import pool_columns
from dmn_localizer.model.preprocess import images_to_tensor
from dmn_localizer.util.errors import UserError

log = logging.getLogger(__name__)


@dataclass
class ViewWorlds:
    images: np.ndarray       # (W, V, S, S, 3) uint8
    poses: np.ndarray        # (W, V, 3) float32
    depth: np.ndarray        # (W, V, J) float32 true column depths (NaN: unknown)
    n_context: int           # Kc: views [0, Kc) of a world are its context pool
    hfov_deg: float
    world_size: float
    domain: str
    # the depths that decide which views overlap: ``depth``, with the unknown ones filled by
    # :func:`predict_overlap_depth`
    overlap_depth: np.ndarray = None

    def __post_init__(self):
        if self.overlap_depth is None:
            self.overlap_depth = self.depth

    @property
    def n_worlds(self):
        return self.images.shape[0]


def load_view_worlds(path, columns, max_worlds=None, progress=True):
    """Every world of the dataset at ``path`` (a directory or a list of them; at most
    ``max_worlds``) with the true depth of ``columns`` columns per view."""
    ds = open_dataset(path)
    m = ds.manifest
    sizes = {tuple(int(shard.get('sizes', m)[k]) for k in SIZE_KEYS) for shard in m['shards']}
    if len(sizes) > 1:
        raise UserError(f'{ds.path}: the view_pairs recipe combines datasets of one '
                        f'{"/".join(SIZE_KEYS)} only; these have {sorted(sizes)}')
    camera = m.get('camera') or {}
    if 'hfov_deg' not in camera:
        raise UserError(f'{path}: the manifest records no camera field of view')
    hfov = float(camera['hfov_deg'])
    imgs, poses, depth = [], [], []
    n = 0
    bar = tqdm(total=max_worlds or ds.n_worlds, desc=f'loading {path}', unit='world',
               disable=not progress)
    for si in range(len(m['shards'])):
        a = ds.load_shard(si)
        w = len(a['world_seeds'])
        for wi in range(w):
            if max_worlds is not None and n >= max_worlds:
                break
            traj = a['traj_images'][wi]
            v_img = np.concatenate([a['context_images'][wi],
                                    traj.reshape((-1,) + traj.shape[2:])])
            v_pose = np.concatenate([a['context_poses'][wi], a['traj_poses'][wi].reshape(-1, 3)])
            g = int(a['layout_sizes'][wi])
            layout = a['layouts'][wi, :g, :g]
            if g and layout.any():
                d = column_depths(layout, float(a['layout_resolution_m'][wi]), v_pose, columns,
                                  hfov, max_depth_m=float(m['world_size_m']))
            elif 'context_depths' in a:
                traj_depths = a['traj_depths'][wi]
                d = measured_columns(np.concatenate([
                    a['context_depths'][wi],
                    traj_depths.reshape(-1, traj_depths.shape[-1])]), columns)
            else:
                d = np.full((len(v_pose), columns), np.nan, np.float32)
            imgs.append(v_img)
            poses.append(v_pose.astype(np.float32))
            depth.append(d)
            n += 1
            bar.update(1)
        if max_worlds is not None and n >= max_worlds:
            break
    bar.close()
    if not imgs:
        raise UserError(f'{path}: no worlds')
    return ViewWorlds(np.stack(imgs), np.stack(poses), np.stack(depth),
                      int(m['contexts_per_world']), hfov, float(m['world_size_m']),
                      str(m['domain']))


def measured_columns(depths, columns):
    """Measured column depths (V, C) of a dataset (one per image column; NaN: no frame, +inf:
    no reading) -> (V, ``columns``) true depths for training: pooled as the model pools them
    at run time (:func:`~dmn_localizer.depth.pool_columns`), NaN where that is not a finite
    depth."""
    try:
        out = pool_columns(depths, columns)
    except ValueError as exc:
        raise UserError(f'the dataset\'s depths: {exc}') from None
    out[~np.isfinite(out)] = np.nan
    return out


@torch.no_grad()
def predict_overlap_depth(worlds, model, device, batch=256):
    """Fill the columns of ``worlds`` whose true depths are unknown (NaN) in ``overlap_depth``
    with ``model``'s predicted column depths; returns how many views it filled (in part or
    whole)."""
    unknown = ~np.isfinite(worlds.depth).all(-1)                       # (W, V)
    if not unknown.any():
        return 0
    w, v = np.nonzero(unknown)
    filled = worlds.depth.copy()
    was_training = model.training
    model.eval()
    for i in range(0, len(w), batch):
        sl = slice(i, i + batch)
        images = images_to_tensor(worlds.images[w[sl], v[sl]], device)
        _, depth, _ = model.encode_columns(images)
        known = worlds.depth[w[sl], v[sl]]
        filled[w[sl], v[sl]] = np.where(np.isfinite(known), known, depth.float().cpu().numpy())
    model.train(was_training)
    worlds.overlap_depth = filled
    log.info('%d views without (all) true column depths: their overlaps use the model\'s '
             'predicted depths there', len(w))
    return len(w)


__all__ = ['load_view_worlds', 'measured_columns', 'predict_overlap_depth', 'ViewWorlds']
