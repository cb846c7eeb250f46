"""Turn recorded bags (images + ground-truth poses) into the episode dataset format.

The paper's Street View recipe: the pose frame is tiled with 40 m x 40 m candidate areas whose
lower-left corners lie on a grid of ``area_stride_m``; every area holding at least
``min_pairs`` image-pose pairs and at least one run of ``trajectory_length`` consecutive frames
inside it becomes one "world". Its poses are shifted into the area frame (``[0, 40]^2``; the
area's corner is stored in the shard's ``origins``), its context pool is a random subset of its
pairs and its trajectories are random windows of consecutive frames (same bag, no time gap
above ``max_gap_s``, every ``frame_stride``-th frame). Overlapping areas share pairs, as in the
paper. Layouts are unknown: stored as all-free 1 m grids. With a depth topic (an RGB-D
camera's depth image registered to the camera images) every view also stores its column depths
(``context_depths``, ``traj_depths``: one per image column, NaN where no depth frame came
within the tolerance, +inf where the sensor read nothing), which the aligned model's training
takes as the true depths (:mod:`dmn_localizer.training.view_pairs.worlds`).

Bags are read in **groups**: the bags of one group share one map frame (the mapping and
localization runs of one place, or the runs of one SLAM map); each group is tiled on its own,
so no area ever holds views of two groups. All bags of a group must give their poses in one
frame (else a one-line error), and where two bags of a group pass the same poses their images
must look alike: when an unrelated view of one bag often looks more like the other bag's view
than the same pose's view does (:func:`mixing_rank`), the bags are most likely different
places in frames that happen to share a name, and a warning says so.
"""
import logging
import math
import os
import time

import numpy as np

from dmn_localizer import __version__
from dmn_localizer.bags.read import read_pairs
from dmn_localizer.data.dataset import (FORMAT, FORMAT_VERSION, pack_layouts, write_manifest,
                                        write_shard)
from dmn_localizer.util.errors import UserError
from dmn_localizer.geometry import WORLD_SIZE_M
from dmn_localizer.localization.camera import HFOV_TOLERANCE_DEG

log = logging.getLogger(__name__)

AREAS_PER_SHARD = 50
MIXING_RANK = 0.25   # the mixing check's warning level (see mixing_rank)
NEAR_M, NEAR_RAD = 0.5, math.radians(15.0)   # "the same pose" for the mixing check


def _bags_in(folder):
    """The bags (sub-folders with a metadata.yaml) of a folder that is not a bag itself."""
    if not os.path.isdir(folder) or os.path.isfile(os.path.join(folder, 'metadata.yaml')):
        return []
    return sorted(os.path.join(folder, d) for d in os.listdir(folder)
                  if os.path.isfile(os.path.join(folder, d, 'metadata.yaml')))


def bag_groups(groups):
    """``{name: [bag, ...]}`` of a list of bags (one group each, named after the bag) or of a
    mapping ``{name: [bag, ...]}``; a folder that is not a bag stands for the bags in it."""
    if not isinstance(groups, dict):
        named = {}
        for bag in groups:
            base = name = os.path.basename(os.path.normpath(str(bag)))
            k = 1
            while name in named:
                k += 1
                name = f'{base}-{k}'
            named[name] = [bag]
        groups = named
    out = {}
    for name, bags in groups.items():
        paths = []
        for bag in bags:
            bag = str(bag)
            paths += _bags_in(bag) or [bag]
        out[str(name)] = paths
    return out


def _gray(images):
    """Images (N, S, S, 3) uint8 -> gray (N, S, S) float32 in [0, 1] less each one's mean."""
    g = images.astype(np.float32).mean(-1) / 255.0
    return g - g.mean((1, 2), keepdims=True)


def _shifted_difference(a, b, max_shift):
    """Mean absolute difference of gray images ``a`` (..., S, S) and ``b`` (broadcast), the
    smallest over horizontal shifts of up to ``max_shift`` columns (a few degrees of yaw)."""
    width = a.shape[-1]
    best = np.abs(a - b).mean((-2, -1))
    for k in range(1, max_shift + 1):
        for x, y in ((a[..., k:], b[..., :width - k]), (a[..., :width - k], b[..., k:])):
            best = np.minimum(best, np.abs(x - y).mean((-2, -1)))
    return best


def mixing_rank(pairs, i, j, max_pairs=200, references=64, seed=0):
    """Whether bags ``i`` and ``j`` of ``pairs`` show one place: for each view of one bag at a
    pose that the other bag also passed (within NEAR_M, NEAR_RAD; up to ``max_pairs`` of
    them), the share of ``references`` random views of the other bag that look more like it
    than the other bag's view at that pose (mean absolute difference of the gray images, the
    best of a few columns' shift); the mean over the views and both ways round. About 0 for
    one place (the same pose's view looks most alike), well above for different places at
    overlapping coordinates. None when the bags share fewer than 10 poses."""
    ranks = [_one_way_rank(pairs, a, b, max_pairs, references, seed) for a, b in ((i, j), (j, i))]
    return None if None in ranks else float(np.mean(ranks))


def _one_way_rank(pairs, i, j, max_pairs, references, seed):
    """:func:`mixing_rank` for the views of bag ``j`` against the references of bag ``i``."""
    from dmn_localizer.geometry import wrap_angle
    a, b = np.flatnonzero(pairs.bag == i), np.flatnonzero(pairs.bag == j)
    pa, pb = pairs.poses[a], pairs.poses[b]
    near = []
    for k in range(0, len(b), 256):   # blocks keep the distance matrix small
        blk = pb[k:k + 256]
        d = np.hypot(*(blk[:, None, :2] - pa[None, :, :2]).T).T
        d[np.abs(wrap_angle(blk[:, None, 2] - pa[None, :, 2])) > NEAR_RAD] = np.inf
        best = d.argmin(1)
        ok = d[np.arange(len(blk)), best] < NEAR_M
        near += list(zip(a[best[ok]], b[k:k + 256][ok]))
    if len(near) < 10:
        return None
    rng = np.random.default_rng(seed)
    near = np.asarray(near)[rng.permutation(len(near))[:max_pairs]]
    ref = _gray(pairs.images[rng.choice(a, references)])
    ai, bj = _gray(pairs.images[near[:, 0]]), _gray(pairs.images[near[:, 1]])
    shift = max(1, ai.shape[-1] // 10)
    d_near = _shifted_difference(ai, bj, shift)                            # (N,)
    d_ref = np.concatenate([_shifted_difference(ref[None], bj[k:k + 32, None], shift)
                            for k in range(0, len(bj), 32)])               # (N, R)
    return float((d_ref < d_near[:, None]).mean())


def _windows(pairs, inside, length, stride, max_gap_ns):
    """Index arrays (n, length) of runs of consecutive in-area frames (every stride-th)."""
    idx = np.flatnonzero(inside)
    out = []
    for phase in range(stride):
        sel = idx[phase::stride] if stride > 1 else idx
        # consecutive in the selection: same bag, original index step == stride, small gap
        if len(sel) < length:
            continue
        ok = ((np.diff(sel) == stride) & (np.diff(pairs.bag[sel]) == 0)
              & (np.diff(pairs.stamps[sel]) <= max_gap_ns * stride))
        run = 1
        for j in range(1, len(sel)):
            run = run + 1 if ok[j - 1] else 1
            if run >= length:
                out.append(sel[j - length + 1:j + 1])
    return np.asarray(out, np.int64).reshape(-1, length)


def _group_areas(pairs, contexts, min_pairs, trajectory_length, area_stride_m, frame_stride,
                 max_gap_s):
    """(origin (2,), in-area pair indices, windows) of each area of one group's pairs."""
    xy = pairs.poses[:, :2]
    lo = np.floor((xy.min(0) - WORLD_SIZE_M) / area_stride_m).astype(int) + 1
    hi = np.floor(xy.max(0) / area_stride_m).astype(int)
    areas = []
    for ky in range(lo[1], hi[1] + 1):
        for kx in range(lo[0], hi[0] + 1):
            o = np.array([kx, ky], np.float64) * area_stride_m
            inside = np.all((xy >= o) & (xy < o + WORLD_SIZE_M), axis=1)
            if inside.sum() < min_pairs:
                continue
            win = _windows(pairs, inside, trajectory_length, frame_stride, max_gap_s * 1e9)
            if len(win):
                areas.append((o, np.flatnonzero(inside), win))
    return areas


def read_group(name, paths, image_topic, pose_topic, image_size, max_dt_s, depth_topic=None,
               depth_max_dt_s=0.05):
    """The image-pose pairs of one group; UserError when its bags give poses in several
    frames, a warning when two of them look like different places (:func:`mixing_rank`)."""
    pairs = read_pairs(paths, image_topic, pose_topic, image_size, max_dt_s, depth_topic,
                       depth_max_dt_s)
    if len(pairs.frame_ids) > 1:
        raise UserError(f'group {name}: its bags give poses in the frames '
                        f'{", ".join(pairs.frame_ids)}; a group shares one map frame (give '
                        'each frame its own group)')
    suspects = []
    for i in range(len(paths)):
        for j in range(i + 1, len(paths)):
            r = mixing_rank(pairs, i, j)
            if r is not None and r > MIXING_RANK:
                suspects.append((paths[i], paths[j], r))
                log.warning('group %s: %s and %s look like different places at the same '
                            'poses (an unrelated view looks more alike than the same pose\'s '
                            'in %.0f%% of the cases); give them their own groups if they are',
                            name, paths[i], paths[j], 100 * r)
    return pairs, suspects


def build_from_bags(groups, image_topic, pose_topic, out, image_size=32, contexts=32,
                    trajectories=4, trajectory_length=10, area_stride_m=20.0, min_pairs=None,
                    frame_stride=1, max_dt_s=0.05, max_gap_s=2.0, seed=0, split='train',
                    default_hfov_deg=None, depth_topic=None, depth_max_dt_s=0.05):
    """Write a dataset from bags into ``out``; returns the manifest (with counts).

    groups: ``{name: [bag, ...]}`` (the bags of one map frame each) or a list of bags (one
    group each), see :func:`bag_groups`. Areas are tiled per group, so none mixes two; the
    manifest's ``groups`` lists each group's bags, pairs and areas (``first_area`` ..
    ``first_area + areas - 1`` are its world indices). The manifest's camera field of view
    comes from the bags' ``camera_info``, else ``default_hfov_deg`` (with a warning), else none.
    ``depth_topic``: also store each view's column depths from that topic (``depth_max_dt_s``:
    the largest stamp difference between an image and its depth frame); the manifest's
    ``depth`` names the topic and the column count (None without one).
    """
    min_pairs = contexts if min_pairs is None else max(int(min_pairs), contexts)
    t0 = time.monotonic()
    groups = bag_groups(groups)
    counts, areas, group_info, paths, hfovs = {}, [], [], [], []
    for name, bags in groups.items():
        pairs, suspects = read_group(name, bags, image_topic, pose_topic, image_size, max_dt_s,
                                     depth_topic, depth_max_dt_s)
        for k, v in pairs.counts.items():
            counts[k] = counts.get(k, 0) + v
        hfovs += list(pairs.hfov_deg)
        found = (_group_areas(pairs, contexts, min_pairs, trajectory_length, area_stride_m,
                              frame_stride, max_gap_s) if len(pairs.poses) else [])
        group_info.append(dict(name=name, bags=[os.path.abspath(p) for p in bags],
                               frame_id=(pairs.frame_ids or [None])[0],
                               pairs=int(len(pairs.poses)), first_area=len(areas),
                               areas=len(found),
                               suspected_mixing=[[os.path.abspath(a), os.path.abspath(b),
                                                  round(r, 3)] for a, b, r in suspects]))
        areas += [(o, inside, win, pairs) for o, inside, win in found]
        paths += bags
    counts['areas'] = len(areas)
    counts['groups'] = len(groups)
    for g in group_info if areas else ():   # (no area at all is an error below)
        if not g['areas']:
            log.warning('group %s: no 40 m x 40 m area holds %d image-pose pairs and a run of '
                        '%d frames (%d pairs)', g['name'], min_pairs, trajectory_length,
                        g['pairs'])
    if counts.get('pairs', 0) == 0:
        raise UserError(f'no image-pose pairs in the bags (counts: {counts})')
    if not areas:
        raise UserError(f'no 40 m x 40 m area holds {min_pairs} image-pose pairs and a run of '
                        f'{trajectory_length} frames (counts: {counts})')
    camera = None
    if hfovs:
        if max(hfovs) - min(hfovs) > HFOV_TOLERANCE_DEG:
            log.warning('the bags\' camera_info give fields of view from %.1f to %.1f deg; '
                        'the dataset records none (record one camera per dataset)',
                        min(hfovs), max(hfovs))
        else:
            camera = dict(hfov_deg=float(np.mean(hfovs)))
    elif default_hfov_deg is not None:
        log.warning('the bags have no camera_info beside %s: assuming a %.1f deg field of view',
                    image_topic, default_hfov_deg)
        camera = dict(hfov_deg=float(default_hfov_deg))
    os.makedirs(out, exist_ok=True)
    shards = []
    for k, start in enumerate(range(0, len(areas), AREAS_PER_SHARD)):
        chunk = areas[start:start + AREAS_PER_SHARD]
        ci, cp, ti, tp, cd, td = [], [], [], [], [], []
        for a, (o, inside, win, pairs) in enumerate(chunk, start=start):
            rng = np.random.default_rng([int(seed), a])
            c = np.sort(rng.choice(inside, contexts, replace=False))
            w = win[rng.choice(len(win), trajectories, replace=len(win) < trajectories)]
            shift = np.array([o[0], o[1], 0.0])
            ci.append(pairs.images[c])
            cp.append(pairs.poses[c] - shift)
            ti.append(pairs.images[w])
            tp.append(pairs.poses[w] - shift)
            if depth_topic:
                cd.append(pairs.depths[c])
                td.append(pairs.depths[w])
        cells = int(WORLD_SIZE_M)
        layouts, sizes, res = pack_layouts([np.zeros((cells, cells), bool)] * len(chunk),
                                           [WORLD_SIZE_M / cells] * len(chunk))
        seeds = list(range(start, start + len(chunk)))
        name = f'shard-{k:05d}.npz'
        depths = (dict(context_depths=np.stack(cd).astype(np.float32),
                       traj_depths=np.stack(td).astype(np.float32)) if depth_topic else {})
        write_shard(os.path.join(out, name), dict(
            world_seeds=np.asarray(seeds, np.int64), context_images=np.stack(ci),
            context_poses=np.stack(cp).astype(np.float32), traj_images=np.stack(ti),
            traj_poses=np.stack(tp).astype(np.float32), layouts=layouts, layout_sizes=sizes,
            layout_resolution_m=res, origins=np.stack([o for o, _, _, _ in chunk]),
            **depths))
        shards.append(dict(file=name, worlds=len(chunk), world_seeds=seeds))
    seconds = time.monotonic() - t0
    manifest = dict(
        format=FORMAT, format_version=FORMAT_VERSION, generator='dmn_localizer.data.from_bags',
        generator_version=f'{__version__}+bags1', domain='bags', split=split,
        sources=[os.path.abspath(p) for p in paths], image_topic=image_topic,
        pose_topic=pose_topic, groups=group_info, area_stride_m=area_stride_m,
        min_pairs=min_pairs,
        frame_stride=frame_stride, seed=seed, n_worlds=len(areas), image_size=int(image_size),
        world_size_m=WORLD_SIZE_M, contexts_per_world=contexts,
        trajectories_per_world=trajectories, trajectory_length=trajectory_length,
        n_images=len(areas) * (contexts + trajectories * trajectory_length), camera=camera,
        depth=(dict(topic=depth_topic, columns=int(image_size), max_dt_s=depth_max_dt_s)
               if depth_topic else None),
        counts=counts, shards=shards, stats=dict(seconds=round(seconds, 3)),
        created=time.strftime('%Y-%m-%dT%H:%M:%S%z'))
    write_manifest(out, manifest)
    return manifest
