"""The on-disk episode dataset: sharded compressed numpy files plus ``manifest.json``.

Layout of a dataset directory (format version 1)::

    manifest.json        format, generator version, domain, split, seeds, counts, image size,
                         camera model, per-shard file names and world seeds
    shard-00000.npz      W worlds each (np.savez_compressed, no pickled objects):
      world_seeds          (W,) int64     world seed (simulated) or area index (bags)
      context_images       (W, Kc, S, S, 3) uint8   pool of random context views
      context_poses        (W, Kc, 3) float32       their poses (x, y, yaw), world frame
      traj_images          (W, R, L, S, S, 3) uint8 R plausible trajectories of L steps
      traj_poses           (W, R, L, 3) float32
      layouts              (W, G, G) bool  top-down occupancy (True = occupied, row 0 = y near
                                           0), zero-padded to the shard's largest G
      layout_sizes         (W,) int32      each world's own G
      layout_resolution_m  (W,) float32    metres per layout cell
      origins              (W, 2) float64  world frame origin in the source frame (bags: the
                                           40 m area's lower-left corner in ``map``; sim: 0)

Poses are in the world frame of :mod:`dmn_localizer.data.episode` (``[0, 40]^2`` m).
An :class:`~dmn_localizer.data.episode.Episode` is built on the fly: ``Nc`` contexts drawn
without replacement from a world's pool plus a ``T``-step window of one of its trajectories,
with odometry = the true relative motion plus Gaussian noise (:data:`DEFAULT_ODOMETRY_NOISE`).
Reading streams shard by shard; at most one shard is in memory.

Splits come from disjoint world-seed ranges (:data:`SPLIT_SEEDS`), so test worlds are never
seen in training.

Several dataset directories open as one (``open_dataset([DIR, DIR, ...])``): their shards are
read in turn, each from its own directory; they must share the image and world size, and
may differ in context pool and trajectory sizes (episodes use at most the smallest).
"""
import json
import logging
import math
import os
import zipfile
from dataclasses import dataclass

import numpy as np

from dmn_localizer.data.episode import Episode
from dmn_localizer.util.errors import FileFormatError, UserError
from dmn_localizer.geometry import WORLD_SIZE_M, relative, wrap_angle
from dmn_localizer.util.atomic import atomic_path, write_json

log = logging.getLogger(__name__)

FORMAT = 'dmn_localizer.dataset'
FORMAT_VERSION = 1
MANIFEST = 'manifest.json'
SPLIT_SEEDS = {'train': (0, 1_000_000), 'val': (1_000_000, 1_100_000),
               'test': (1_100_000, 1_200_000)}
"""Half-open world-seed range ``[lo, hi)`` of each split; world i of a dataset built with
``--seed S`` has seed ``lo + S + i``."""
SHARD_KEYS = {'world_seeds': 1, 'context_images': 5, 'context_poses': 3, 'traj_images': 6,
              'traj_poses': 4, 'layouts': 3, 'layout_sizes': 1, 'layout_resolution_m': 1,
              'origins': 2}
"""Arrays of a shard and their number of dimensions."""
OPTIONAL_SHARD_KEYS = {'context_depths': 3, 'traj_depths': 4}
"""Arrays a shard may have: measured column depths (m) of the views (datasets built from bags
with a depth topic; NaN: no depth frame, +inf: no reading), one per image column."""
DEFAULT_ODOMETRY_NOISE = (0.1, 0.1, math.radians(2.0))
"""Std of the additive Gaussian odometry noise on (dx [m], dy [m], dyaw [rad]) per step."""
TRACKING_SIGMA = (6.0, 6.0, math.radians(30.0))
"""Tracking initial belief: Gaussian std around the first true pose (paper Section V)."""

_MANIFEST_KEYS = ('format', 'format_version', 'generator_version', 'domain', 'split',
                  'image_size', 'world_size_m', 'contexts_per_world', 'trajectories_per_world',
                  'trajectory_length', 'n_worlds', 'shards', 'camera')


QUERY_ORDERS = ('trajectory', 'random')
"""How an episode's T query views are drawn (see :meth:`Dataset.iter_episodes`)."""


def write_manifest(directory, manifest):
    write_json(os.path.join(directory, MANIFEST), manifest, indent=1)


def write_shard(path, arrays):
    """Write one shard (a dict of the :data:`SHARD_KEYS` arrays) atomically to ``path``: an
    interrupted write never leaves a file with the final name."""
    missing = set(SHARD_KEYS) - set(arrays)
    assert not missing, missing
    with atomic_path(path) as tmp:
        with open(tmp, 'wb') as f:
            np.savez_compressed(f, **arrays)


def pack_layouts(layouts, resolutions):
    """List of (G_i, G_i) bool -> (W, Gmax, Gmax) bool, (W,) int32 sizes, (W,) float32 res."""
    gmax = max(x.shape[0] for x in layouts)
    out = np.zeros((len(layouts), gmax, gmax), dtype=bool)
    for i, x in enumerate(layouts):
        out[i, :x.shape[0], :x.shape[1]] = x
    return (out, np.array([x.shape[0] for x in layouts], np.int32),
            np.asarray(resolutions, np.float32))


@dataclass
class InitialBelief:
    """Initial belief parameters of an episode.

    mode 'global': uniform over ``[low, high)`` (x, y over the world, yaw over [-pi, pi));
    mode 'tracking': Gaussian with ``mean`` (the first true pose) and std ``sigma``.
    """
    mode: str
    low: np.ndarray = None
    high: np.ndarray = None
    mean: np.ndarray = None
    sigma: np.ndarray = None

    def sample(self, rng, k):
        """``k`` particles (k, 3) float32 from the belief (yaw wrapped, x-y not clipped)."""
        if self.mode == 'global':
            s = rng.uniform(self.low, self.high, size=(k, 3))
        else:
            s = self.mean + rng.normal(size=(k, 3)) * self.sigma
            s[:, 2] = wrap_angle(s[:, 2])
        return s.astype(np.float32)


def episode_belief(episode, mode):
    """The initial belief of ``episode`` for ``mode`` 'global' or 'tracking'.

    global: uniform over ``[0, world_size]^2 x [-pi, pi)``; tracking: Gaussian around the first
    query pose with std 6 m, 6 m, 30 deg (:data:`TRACKING_SIGMA`).
    """
    if mode == 'global':
        s = float(episode.world_size)
        return InitialBelief('global', low=np.array([0.0, 0.0, -math.pi]),
                             high=np.array([s, s, math.pi]))
    if mode == 'tracking':
        return InitialBelief('tracking', mean=np.asarray(episode.query_poses[0], np.float64),
                             sigma=np.array(TRACKING_SIGMA))
    raise ValueError(f"belief mode must be 'global' or 'tracking', got {mode!r}")


def make_odometry(poses, rng=None, noise=DEFAULT_ODOMETRY_NOISE):
    """Odometry ``(T, 3)`` float32 of true poses ``(T, 3)``: pose t in the frame of pose t-1
    plus Gaussian noise with std ``noise`` (dx, dy, dyaw); row 0 is zero. No noise if rng is
    None or noise is None."""
    poses = np.asarray(poses, np.float64)
    odo = np.zeros_like(poses)
    if len(poses) > 1:
        odo[1:] = relative(poses[:-1], poses[1:])
        if rng is not None and noise is not None:
            odo[1:] += rng.normal(size=odo[1:].shape) * np.asarray(noise)
            odo[1:, 2] = wrap_angle(odo[1:, 2])
    return odo.astype(np.float32)


class Dataset:
    """A dataset directory opened for streaming reads (see the module docstring)."""

    def __init__(self, path, manifest):
        self.path = path
        self.manifest = manifest

    @property
    def n_worlds(self):
        return int(self.manifest['n_worlds'])

    def _shard_path(self, shard):
        return os.path.join(shard.get('dir', self.path), shard['file'])

    def load_shard(self, index):
        """All arrays of shard ``index`` as a dict (checked against the manifest)."""
        shard = self.manifest['shards'][index]
        path = self._shard_path(shard)
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in SHARD_KEYS}
                arrays.update({k: z[k] for k in OPTIONAL_SHARD_KEYS if k in z.files})
        except KeyError as exc:
            raise FileFormatError(path, f'missing array {exc}') from None
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
            raise FileFormatError(path, f'unreadable shard ({exc})') from None
        m, w = dict(self.manifest, **shard.get('sizes', {})), int(shard['worlds'])
        s, kc = int(m['image_size']), int(m['contexts_per_world'])
        r, length = int(m['trajectories_per_world']), int(m['trajectory_length'])
        want = {'world_seeds': (w,), 'context_images': (w, kc, s, s, 3),
                'context_poses': (w, kc, 3), 'traj_images': (w, r, length, s, s, 3),
                'traj_poses': (w, r, length, 3)}
        if 'context_depths' in arrays or 'traj_depths' in arrays:
            want.update(context_depths=(w, kc, s), traj_depths=(w, r, length, s))
        for k, shape in want.items():
            if k not in arrays:
                raise FileFormatError(path, f'missing array {k!r}')
            if arrays[k].shape != shape:
                raise FileFormatError(path, f'{k} has shape {arrays[k].shape}, '
                                            f'manifest says {shape}')
        return arrays

    def world_seeds(self):
        """All world seeds (area indices for bag datasets) in shard order."""
        return [int(s) for shard in self.manifest['shards'] for s in shard['world_seeds']]

    def layout(self, world_seed):
        """``(layout (G, G) bool, resolution_m, origin (2,))`` of a world, for plots."""
        for shard in self.manifest['shards']:
            if world_seed in shard['world_seeds']:
                i = shard['world_seeds'].index(world_seed)
                with np.load(self._shard_path(shard), allow_pickle=False) as z:
                    g = int(z['layout_sizes'][i])
                    return (z['layouts'][i, :g, :g], float(z['layout_resolution_m'][i]),
                            z['origins'][i])
        raise KeyError(f'no world {world_seed} in {self.path}')

    def iter_episodes(self, n_contexts, steps, seed, shuffle=True, loop=False,
                      odometry_noise=DEFAULT_ODOMETRY_NOISE, queries='trajectory'):
        """Stream episodes, one per world per pass, deterministic for ``seed``.

        n_contexts: int, or ``(lo, hi)`` inclusive range drawn per episode; steps: T query
        steps (<= trajectory_length); shuffle: shard and world order random per pass (else file
        order); loop: repeat passes forever; odometry_noise: std (dx, dy, dyaw) or None.
        queries: ``'trajectory'`` (a T-step window of a driven trajectory) or ``'random'`` (the
        paper's Section V-A: T further views of the world's pool, disjoint from the contexts,
        in random order; the odometry is the relative pose between them).
        """
        if queries not in QUERY_ORDERS:
            raise ValueError(f'queries must be one of {", ".join(QUERY_ORDERS)}, '
                             f'got {queries!r}')
        m = self.manifest
        lo, hi = (n_contexts, n_contexts) if np.isscalar(n_contexts) else n_contexts
        lo, hi = int(lo), int(hi)
        if not 1 <= lo <= hi <= int(m['contexts_per_world']):
            raise ValueError(f'n_contexts must be within 1..{m["contexts_per_world"]}, '
                             f'got {n_contexts}')
        if not 1 <= int(steps) <= int(m['trajectory_length']):
            raise ValueError(f'steps must be within 1..{m["trajectory_length"]}, got {steps}')
        if queries == 'random' and hi + int(steps) > int(m['contexts_per_world']):
            raise ValueError(f'random queries need n_contexts + steps <= '
                             f'{m["contexts_per_world"]} views per world, got {hi} + {steps}')
        rng = np.random.default_rng(seed)
        domain, size = m['domain'], float(m['world_size_m'])
        while True:
            n_shards = len(m['shards'])
            for si in (rng.permutation(n_shards) if shuffle else range(n_shards)):
                a = self.load_shard(int(si))
                w = len(a['world_seeds'])
                for wi in (rng.permutation(w) if shuffle else range(w)):
                    nc = int(rng.integers(lo, hi + 1))
                    if queries == 'random':
                        drawn = rng.choice(a['context_poses'].shape[1], nc + steps,
                                           replace=False)
                        ci, qi = np.sort(drawn[:nc]), drawn[nc:]
                        q = a['context_poses'][wi, qi]
                        q_images = a['context_images'][wi, qi]
                    else:
                        ci = np.sort(rng.choice(a['context_poses'].shape[1], nc, replace=False))
                        ri = int(rng.integers(a['traj_poses'].shape[1]))
                        t0 = int(rng.integers(a['traj_poses'].shape[2] - steps + 1))
                        q = a['traj_poses'][wi, ri, t0:t0 + steps]
                        q_images = a['traj_images'][wi, ri, t0:t0 + steps]
                    yield Episode(
                        context_images=a['context_images'][wi, ci],
                        context_poses=a['context_poses'][wi, ci],
                        query_images=q_images,
                        query_poses=q,
                        odometry=make_odometry(q, rng, odometry_noise),
                        world_size=size, domain=domain,
                        world_seed=int(a['world_seeds'][wi]))
                del a
            if not loop:
                return


SIZE_KEYS = ('contexts_per_world', 'trajectories_per_world', 'trajectory_length')
"""Manifest sizes that may differ between combined datasets (kept per shard)."""


def open_dataset(path):
    """Open the dataset directory ``path``, or several as one (a list of directories, see the
    module docstring); raises FileFormatError/UserError when invalid."""
    if isinstance(path, (list, tuple)):
        if not path:
            raise UserError('no dataset directory given')
        if len(path) > 1:
            return _combined([open_dataset(p) for p in path])
        path = path[0]
    path = os.fspath(path)
    mpath = os.path.join(path, MANIFEST)
    if not os.path.isdir(path):
        raise UserError(f'{path}: no such dataset directory')
    if not os.path.isfile(mpath):
        raise FileFormatError(path, f'no {MANIFEST} (not a dataset, or an interrupted build)')
    try:
        with open(mpath, encoding='utf-8') as f:
            manifest = json.load(f)
    except (OSError, ValueError) as exc:
        raise FileFormatError(mpath, f'unreadable manifest ({exc})') from None
    if not isinstance(manifest, dict) or manifest.get('format') != FORMAT:
        raise FileFormatError(mpath, f'not a {FORMAT} manifest')
    if manifest.get('format_version') != FORMAT_VERSION:
        raise FileFormatError(mpath, f'format version {manifest.get("format_version")}, '
                                     f'this reader supports {FORMAT_VERSION}')
    missing = [k for k in _MANIFEST_KEYS if k not in manifest]
    if missing:
        raise FileFormatError(mpath, f'missing keys {", ".join(missing)}')
    total = 0
    for shard in manifest['shards']:
        if not os.path.isfile(os.path.join(path, shard.get('file', ''))):
            raise FileFormatError(path, f'missing shard {shard.get("file")}')
        total += int(shard['worlds'])
    if total != int(manifest['n_worlds']):
        raise FileFormatError(mpath, f'shards hold {total} worlds, n_worlds says '
                                     f'{manifest["n_worlds"]}')
    return Dataset(path, manifest)


def _combined(datasets):
    """One Dataset reading the shards of ``datasets`` in turn (each from its directory)."""
    first = datasets[0].manifest
    for ds in datasets[1:]:
        for key in ('image_size', 'world_size_m'):
            if ds.manifest[key] != first[key]:
                raise UserError(f'{ds.path}: {key} {ds.manifest[key]}, but {datasets[0].path} '
                                f'has {first[key]}: datasets combine only at one {key}')
    shards = [dict(shard, dir=ds.path, sizes={k: ds.manifest[k] for k in SIZE_KEYS})
              for ds in datasets for shard in ds.manifest['shards']]
    manifest = dict(first, shards=shards, n_worlds=sum(ds.n_worlds for ds in datasets),
                    sources=[ds.path for ds in datasets],
                    **{k: min(int(ds.manifest[k]) for ds in datasets) for k in SIZE_KEYS})
    for key in ('domain', 'split', 'camera'):
        values = [ds.manifest[key] for ds in datasets]
        if any(v != values[0] for v in values):
            manifest[key] = None if key == 'camera' else 'mixed'
    return Dataset(os.pathsep.join(ds.path for ds in datasets), manifest)


__all__ = ['open_dataset', 'Dataset', 'episode_belief', 'InitialBelief', 'make_odometry',
           'SPLIT_SEEDS', 'WORLD_SIZE_M', 'write_shard', 'write_manifest', 'FORMAT',
           'FORMAT_VERSION']
