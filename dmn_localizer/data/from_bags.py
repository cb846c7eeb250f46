"""Turn recorded bags (images + ground-truth poses) into the episode dataset format.

The paper's Street View recipe: the pose frame is tiled with 40 m x 40 m candidate areas whose
lower-left corners lie on a grid of ``area_stride_m``; every area holding at least
``min_pairs`` image-pose pairs and at least one run of ``trajectory_length`` consecutive frames
inside it becomes one "world". Its poses are shifted into the area frame (``[0, 40]^2``; the
area's corner is stored in the shard's ``origins``), its context pool is a random subset of its
pairs and its trajectories are random windows of consecutive frames (same bag, no time gap
above ``max_gap_s``, every ``frame_stride``-th frame). Overlapping areas share pairs, as in the
paper. Layouts are unknown: stored as all-free 1 m grids.
"""
import logging
import os
import time

import numpy as np

from dmn_localizer import __version__
from dmn_localizer.bags.read import read_pairs
from dmn_localizer.data.dataset import (FORMAT, FORMAT_VERSION, pack_layouts, write_manifest,
                                        write_shard)
from dmn_localizer.errors import UserError
from dmn_localizer.geometry import WORLD_SIZE_M

log = logging.getLogger(__name__)

AREAS_PER_SHARD = 50


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


def build_from_bags(paths, image_topic, pose_topic, out, image_size=32, contexts=32,
                    trajectories=4, trajectory_length=10, area_stride_m=20.0, min_pairs=None,
                    frame_stride=1, max_dt_s=0.05, max_gap_s=2.0, seed=0, split='train'):
    """Write a dataset from bags ``paths`` into ``out``; returns the manifest (with counts)."""
    min_pairs = contexts if min_pairs is None else max(int(min_pairs), contexts)
    t0 = time.monotonic()
    pairs = read_pairs(paths, image_topic, pose_topic, image_size, max_dt_s)
    counts = dict(pairs.counts)
    if len(pairs.poses) == 0:
        raise UserError(f'no image-pose pairs in the bags (counts: {counts})')
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
    counts['areas'] = len(areas)
    if not areas:
        raise UserError(f'no 40 m x 40 m area holds {min_pairs} image-pose pairs and a run of '
                        f'{trajectory_length} frames (counts: {counts})')
    os.makedirs(out, exist_ok=True)
    shards = []
    for k, start in enumerate(range(0, len(areas), AREAS_PER_SHARD)):
        chunk = areas[start:start + AREAS_PER_SHARD]
        ci, cp, ti, tp = [], [], [], []
        for a, (o, inside, win) in enumerate(chunk, start=start):
            rng = np.random.default_rng([int(seed), a])
            c = np.sort(rng.choice(inside, contexts, replace=False))
            w = win[rng.choice(len(win), trajectories, replace=len(win) < trajectories)]
            shift = np.array([o[0], o[1], 0.0])
            ci.append(pairs.images[c])
            cp.append(pairs.poses[c] - shift)
            ti.append(pairs.images[w])
            tp.append(pairs.poses[w] - shift)
        cells = int(WORLD_SIZE_M)
        layouts, sizes, res = pack_layouts([np.zeros((cells, cells), bool)] * len(chunk),
                                           [WORLD_SIZE_M / cells] * len(chunk))
        seeds = list(range(start, start + len(chunk)))
        name = f'shard-{k:05d}.npz'
        write_shard(os.path.join(out, name), dict(
            world_seeds=np.asarray(seeds, np.int64), context_images=np.stack(ci),
            context_poses=np.stack(cp).astype(np.float32), traj_images=np.stack(ti),
            traj_poses=np.stack(tp).astype(np.float32), layouts=layouts, layout_sizes=sizes,
            layout_resolution_m=res, origins=np.stack([o for o, _, _ in chunk])))
        shards.append(dict(file=name, worlds=len(chunk), world_seeds=seeds))
    seconds = time.monotonic() - t0
    manifest = dict(
        format=FORMAT, format_version=FORMAT_VERSION, generator='dmn_localizer.data.from_bags',
        generator_version=f'{__version__}+bags1', domain='bags', split=split,
        sources=[os.path.abspath(p) for p in paths], image_topic=image_topic,
        pose_topic=pose_topic, area_stride_m=area_stride_m, min_pairs=min_pairs,
        frame_stride=frame_stride, seed=seed, n_worlds=len(areas), image_size=int(image_size),
        world_size_m=WORLD_SIZE_M, contexts_per_world=contexts,
        trajectories_per_world=trajectories, trajectory_length=trajectory_length,
        n_images=len(areas) * (contexts + trajectories * trajectory_length), camera=None,
        counts=counts, shards=shards, stats=dict(seconds=round(seconds, 3)),
        created=time.strftime('%Y-%m-%dT%H:%M:%S%z'))
    write_manifest(out, manifest)
    return manifest
