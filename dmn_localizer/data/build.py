"""Build a simulated episode dataset: worlds rendered in parallel processes, one shard a task.

Each task renders up to :data:`WORLDS_PER_SHARD` worlds with ONE renderer (for ViZDoom: one
WAD holding all the task's maps, switched with ``set_doom_map``) and writes one shard
atomically. Per world: :data:`CONTEXTS_PER_WORLD` random context views and
:data:`TRAJECTORIES_PER_WORLD` trajectories of :data:`TRAJECTORY_LENGTH` steps, all from the
pose stream ``domain_rng(domain, seed, 1)``, so a world's data depend only on its seed.

Ctrl-C: workers ignore SIGINT; the parent terminates them (SIGTERM -> SystemExit, so their
``finally`` blocks close the renderers and delete temp files), removes any temp file and writes
no manifest. Finished shards keep their final names; a shard is never half written.
"""
import logging
import math
import multiprocessing as mp
import os
import queue
import signal
import sys
import time

import numpy as np

from dmn_localizer import __version__
from dmn_localizer.data.dataset import (FORMAT, FORMAT_VERSION, MANIFEST, SPLIT_SEEDS,
                                        pack_layouts, write_manifest,
                                        write_shard)
from dmn_localizer.geometry import WORLD_SIZE_M
from dmn_localizer.sim.trajectories import sample_views
from dmn_localizer.sim.spec import domain_rng
from dmn_localizer.sim.world import generate_spec, make_renderer
from dmn_localizer.util.atomic import remove_temp_files
from dmn_localizer.util.task_processes import run_tasks

log = logging.getLogger(__name__)

GENERATOR_VERSION = f'{__version__}+sim2'
CONTEXTS_PER_WORLD = 48
TRAJECTORIES_PER_WORLD = 2
TRAJECTORY_LENGTH = 16
WORLDS_PER_SHARD = 50

_progress = None


def world_views(spec):
    """Context poses (Kc, 3) and trajectories (R, L, 3) of a world (deterministic)."""
    rng = domain_rng(spec.domain, spec.seed, 1)
    return sample_views(spec, rng, CONTEXTS_PER_WORLD, TRAJECTORIES_PER_WORLD,
                        TRAJECTORY_LENGTH)


def render_worlds(domain, seeds, image_size, progress=None):
    """Render the views of worlds ``seeds``; returns the shard arrays dict (see dataset.py)."""
    specs = [generate_spec(domain, s) for s in seeds]
    kc, r, length = CONTEXTS_PER_WORLD, TRAJECTORIES_PER_WORLD, TRAJECTORY_LENGTH
    s = int(image_size)
    w = len(specs)
    ctx_img = np.empty((w, kc, s, s, 3), np.uint8)
    trj_img = np.empty((w, r, length, s, s, 3), np.uint8)
    ctx_pose = np.empty((w, kc, 3), np.float32)
    trj_pose = np.empty((w, r, length, 3), np.float32)
    renderer = make_renderer(domain, specs, image_size)
    try:
        for i, spec in enumerate(specs):
            c, t = world_views(spec)
            renderer.select(i)
            imgs = renderer.render(np.concatenate([c, t.reshape(-1, 3)]))
            ctx_img[i], trj_img[i] = imgs[:kc], imgs[kc:].reshape(r, length, s, s, 3)
            ctx_pose[i], trj_pose[i] = c, t
            if progress is not None:
                progress(1)
        camera = renderer.camera.to_dict()
    finally:
        renderer.close()
    layouts, sizes, res = pack_layouts([sp.layout for sp in specs],
                                       [sp.layout_resolution_m for sp in specs])
    arrays = dict(world_seeds=np.asarray(seeds, np.int64), context_images=ctx_img,
                  context_poses=ctx_pose, traj_images=trj_img, traj_poses=trj_pose,
                  layouts=layouts, layout_sizes=sizes, layout_resolution_m=res,
                  origins=np.zeros((w, 2)))
    return arrays, camera


def _init_worker(q):
    global _progress
    _progress = q
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))


def _task(args):
    domain, seeds, image_size, path = args
    arrays, camera = render_worlds(domain, seeds, image_size,
                                   progress=lambda n: _progress.put(n))
    write_shard(path, arrays)
    return os.path.basename(path), [int(x) for x in seeds], camera


def build_dataset(domain, split, n_worlds, out, image_size=32, seed=0, workers=2,
                  progress=True):
    """Render ``n_worlds`` worlds of ``domain``/``split`` into dataset directory ``out``.

    World i gets seed ``SPLIT_SEEDS[split][0] + seed + i``. Returns the manifest dict (with
    ``stats``: images, seconds, images_per_s).
    """
    lo, hi = SPLIT_SEEDS[split]
    first = lo + seed
    if first + n_worlds > hi:
        raise ValueError(f'--seed {seed} + --worlds {n_worlds} leaves the {split} seed range '
                         f'[{lo}, {hi})')
    os.makedirs(out, exist_ok=True)
    per = max(1, min(WORLDS_PER_SHARD, math.ceil(n_worlds / max(1, workers))))
    tasks = []
    for k, start in enumerate(range(0, n_worlds, per)):
        seeds = list(range(first + start, first + min(n_worlds, start + per)))
        tasks.append((domain, seeds, image_size, os.path.join(out, f'shard-{k:05d}.npz')))
    images_per_world = CONTEXTS_PER_WORLD + TRAJECTORIES_PER_WORLD * TRAJECTORY_LENGTH
    t0 = time.monotonic()
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=n_worlds, unit='world', desc=f'{domain}/{split}', file=sys.stderr)
    # spawn, not fork: a process that already runs threads (rclpy's, torch's, a test
    # runner's) cannot be forked safely, and the workers import little
    q = mp.get_context('spawn').Queue()

    def show_progress():
        try:
            while True:
                n = q.get_nowait()
                if bar is not None:
                    bar.update(n)
        except queue.Empty:
            pass

    try:
        results = run_tasks(_task, tasks, workers, initializer=_init_worker, initargs=(q,),
                            tick=show_progress,
                            describe=lambda t: f'{domain} worlds {t[1][0]}-{t[1][-1]}')
    except BaseException:
        remove_temp_files(out)
        raise
    finally:
        q.close()
        if bar is not None:
            bar.close()
    seconds = time.monotonic() - t0
    results.sort()
    n_images = n_worlds * images_per_world
    manifest = dict(
        format=FORMAT, format_version=FORMAT_VERSION, generator='dmn_localizer.sim',
        generator_version=GENERATOR_VERSION, domain=domain, split=split,
        split_seed_range=[lo, hi], seed_offset=seed, world_seeds=[first, first + n_worlds],
        n_worlds=n_worlds, image_size=int(image_size), world_size_m=WORLD_SIZE_M,
        contexts_per_world=CONTEXTS_PER_WORLD, trajectories_per_world=TRAJECTORIES_PER_WORLD,
        trajectory_length=TRAJECTORY_LENGTH, n_images=n_images, camera=results[0][2],
        shards=[dict(file=f, worlds=len(s), world_seeds=s) for f, s, _ in results],
        stats=dict(images=n_images, seconds=round(seconds, 3),
                   images_per_s=round(n_images / seconds, 1), workers=workers),
        created=time.strftime('%Y-%m-%dT%H:%M:%S%z'))
    write_manifest(out, manifest)
    return manifest


__all__ = ['build_dataset', 'render_worlds', 'world_views', 'MANIFEST', 'GENERATOR_VERSION']
