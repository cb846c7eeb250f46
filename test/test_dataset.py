"""Dataset building, manifest validation, streaming episodes, beliefs and the CLI."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from dmn_localizer.data.build import build_dataset, render_worlds
from dmn_localizer.data.dataset import (SPLIT_SEEDS, episode_belief, make_odometry,
                                        open_dataset)
from dmn_localizer.util.errors import FileFormatError, UserError
from dmn_localizer.geometry import compose

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='module')
def maze_ds(tmp_path_factory):
    out = str(tmp_path_factory.mktemp('ds') / 'mazes')
    build_dataset('mazes', 'val', 3, out, image_size=16, seed=5, workers=2, progress=False)
    return out


def test_manifest_and_shards(maze_ds):
    ds = open_dataset(maze_ds)
    m = ds.manifest
    assert m['domain'] == 'mazes' and m['split'] == 'val' and m['n_worlds'] == 3
    lo = SPLIT_SEEDS['val'][0]
    assert ds.world_seeds() == [lo + 5, lo + 6, lo + 7]
    assert m['image_size'] == 16 and m['camera']['width'] == 16
    assert m['n_images'] == 3 * (m['contexts_per_world']
                                 + m['trajectories_per_world'] * m['trajectory_length'])
    assert m['contexts_per_world'] >= 32 and m['trajectory_length'] >= 10
    assert not [f for f in os.listdir(maze_ds) if '.tmp' in f]
    a = ds.load_shard(0)
    assert a['context_images'].dtype == np.uint8
    layout, res, origin = ds.layout(lo + 6)
    assert layout.dtype == bool and abs(layout.shape[0] * res - 40.0) < 1e-4
    assert np.all(origin == 0)


def test_several_folders_open_as_one(maze_ds, tmp_path):
    """open_dataset([A, B]) streams the worlds of both folders (each shard read from its own
    folder), across different context pool and trajectory sizes; image sizes must agree."""
    from dmn_localizer.bags.simulate import simulate_bag
    from dmn_localizer.data.from_bags import build_from_bags
    runs = simulate_bag('mazes', 6, tmp_path / 'bags', image_size=16, mapping_frames=80,
                        localization_frames=2)
    bags = str(tmp_path / 'from_bags')
    build_from_bags([runs['mapping'][0]], '/camera/image_raw', '/ground_truth/pose', bags,
                    image_size=16, contexts=20, trajectories=2, trajectory_length=6)
    a, b = open_dataset(maze_ds), open_dataset(bags)
    both = open_dataset([maze_ds, bags])
    assert both.n_worlds == a.n_worlds + b.n_worlds
    assert both.manifest['contexts_per_world'] == 20 and both.manifest['domain'] == 'mixed'
    assert both.manifest['trajectory_length'] == 6 and both.manifest['sources'] == [maze_ds,
                                                                                    bags]
    eps = list(both.iter_episodes(4, 5, seed=0))
    assert sorted(e.domain for e in eps) == ['mixed'] * both.n_worlds
    images = {e.context_images.tobytes()[:4096] for e in eps}
    assert len(images) == both.n_worlds
    shards = [both.load_shard(i) for i in range(len(both.manifest['shards']))]
    assert shards[0]['context_images'].shape[1] == a.manifest['contexts_per_world']
    assert shards[-1]['context_images'].shape[1] == 20
    assert open_dataset([maze_ds]).manifest == a.manifest
    other = str(tmp_path / 'size8')
    build_dataset('mazes', 'val', 1, other, image_size=8, workers=1, progress=False)
    with pytest.raises(UserError, match='image_size 8'):
        open_dataset([maze_ds, other])


def test_dataset_is_deterministic(maze_ds, tmp_path):
    ds = open_dataset(maze_ds)
    seeds = ds.world_seeds()
    shard = ds.load_shard(0)
    i = int(np.where(shard['world_seeds'] == seeds[0])[0][0])
    again, _ = render_worlds('mazes', [seeds[0]], 16)
    for k in ('context_images', 'context_poses', 'traj_images', 'traj_poses'):
        assert np.array_equal(again[k][0], shard[k][i]), k


def test_splits_are_disjoint():
    ranges = sorted(SPLIT_SEEDS.values())
    assert all(a[1] <= b[0] for a, b in zip(ranges, ranges[1:]))


def test_streaming_episodes(maze_ds):
    ds = open_dataset(maze_ds)
    eps = list(ds.iter_episodes((4, 32), 10, seed=3))
    assert len(eps) == 3
    for ep in eps:
        assert 4 <= len(ep.context_poses) <= 32
        assert ep.query_images.shape == (10, 16, 16, 3) and ep.odometry.shape == (10, 3)
        assert np.all(ep.odometry[0] == 0) and ep.domain == 'mazes'
        assert np.all((ep.context_poses[:, :2] > 0) & (ep.context_poses[:, :2] < 40))
    again = list(ds.iter_episodes((4, 32), 10, seed=3))
    for a, b in zip(eps, again):
        assert np.array_equal(a.context_images, b.context_images)
        assert np.array_equal(a.odometry, b.odometry)
    other = list(ds.iter_episodes((4, 32), 10, seed=4))
    assert any(not np.array_equal(a.query_poses, b.query_poses) for a, b in zip(eps, other))
    fixed = list(ds.iter_episodes(8, 5, seed=0, shuffle=False))
    assert [e.world_seed for e in fixed] == ds.world_seeds()
    assert all(len(e.context_poses) == 8 for e in fixed)
    looped = ds.iter_episodes(4, 2, seed=0, loop=True)
    assert len([next(looped) for _ in range(7)]) == 7
    with pytest.raises(ValueError):
        next(ds.iter_episodes(1000, 5, seed=0))


def test_random_queries_are_views_apart_from_the_contexts(maze_ds):
    """queries='random' (the paper's sampling): T views of the world's pool, none of them a
    context, in random order, with the odometry between them; 'trajectory' is unchanged."""
    ds = open_dataset(maze_ds)
    shards = [ds.load_shard(i) for i in range(len(ds.manifest['shards']))]
    pools = {int(s): p for a in shards for s, p in zip(a['world_seeds'], a['context_poses'])}
    eps = list(ds.iter_episodes(4, 5, seed=2, queries='random', odometry_noise=None))
    assert len(eps) == 3
    steps = []
    for ep in eps:
        pool = pools[ep.world_seed]
        rows = [int(np.where((pool == q).all(1))[0][0]) for q in ep.query_poses]
        ctx = [int(np.where((pool == c).all(1))[0][0]) for c in ep.context_poses]
        assert len(set(rows)) == 5 and not set(rows) & set(ctx)
        pose = ep.query_poses[0].astype(np.float64)
        for t in range(1, 5):
            pose = compose(pose, ep.odometry[t].astype(np.float64))
            assert np.allclose(pose[:2], ep.query_poses[t, :2], atol=1e-3)
        steps.extend(np.hypot(*np.diff(ep.query_poses[:, :2], axis=0).T))
    trajectory = list(ds.iter_episodes(4, 5, seed=2, odometry_noise=None))
    walked = [np.hypot(*np.diff(e.query_poses[:, :2], axis=0).T).max() for e in trajectory]
    assert np.median(steps) > 2 * max(walked)        # random views lie far apart
    with pytest.raises(ValueError, match='queries'):
        next(ds.iter_episodes(4, 5, seed=0, queries='shuffled'))
    with pytest.raises(ValueError, match='n_contexts \\+ steps'):
        next(ds.iter_episodes(ds.manifest['contexts_per_world'], 5, seed=0, queries='random'))


def test_odometry_composes_to_true_trajectory(maze_ds):
    ds = open_dataset(maze_ds)
    for ep in ds.iter_episodes(4, 16, seed=1, odometry_noise=None):
        pose = ep.query_poses[0].astype(np.float64)
        for t in range(1, 16):
            pose = compose(pose, ep.odometry[t].astype(np.float64))
            assert np.allclose(pose[:2], ep.query_poses[t, :2], atol=1e-3)
            assert abs((pose[2] - ep.query_poses[t, 2] + np.pi) % (2 * np.pi) - np.pi) < 1e-4
    noisy = make_odometry(ep.query_poses, np.random.default_rng(0))
    assert not np.allclose(noisy, make_odometry(ep.query_poses))


def test_beliefs(maze_ds):
    ep = next(open_dataset(maze_ds).iter_episodes(4, 5, seed=0))
    g = episode_belief(ep, 'global')
    s = g.sample(np.random.default_rng(0), 2000)
    assert s[:, :2].min() >= 0 and s[:, :2].max() <= 40 and s[:, 2].min() < -3
    t = episode_belief(ep, 'tracking')
    s = t.sample(np.random.default_rng(0), 20000)
    assert np.allclose(s[:, :2].std(0), 6.0, rtol=0.05)
    assert np.allclose(t.mean, ep.query_poses[0])
    with pytest.raises(ValueError):
        episode_belief(ep, 'nope')


def test_manifest_validation(maze_ds, tmp_path):
    with pytest.raises(UserError):
        open_dataset(tmp_path / 'missing')
    with pytest.raises(FileFormatError):
        open_dataset(tmp_path)                          # no manifest
    m = json.load(open(os.path.join(maze_ds, 'manifest.json')))
    for change in ({'format': 'x'}, {'format_version': 99}, {'n_worlds': 4}):
        d = tmp_path / f'bad{len(os.listdir(tmp_path))}'
        d.mkdir()
        for s in m['shards']:
            os.symlink(os.path.join(maze_ds, s['file']), d / s['file'])
        (d / 'manifest.json').write_text(json.dumps({**m, **change}))
        with pytest.raises(FileFormatError):
            open_dataset(d)
    d = tmp_path / 'trunc'
    d.mkdir()
    (d / 'manifest.json').write_text(json.dumps(m))
    for s in m['shards']:
        (d / s['file']).write_bytes(open(os.path.join(maze_ds, s['file']), 'rb').read()[:100])
    with pytest.raises(FileFormatError):
        next(open_dataset(d).iter_episodes(4, 5, seed=0))


def _cli(*args, **kw):
    return subprocess.run([sys.executable, '-m', 'dmn_localizer', *args], cwd=REPO,
                          capture_output=True, text=True, timeout=120, **kw)


@pytest.mark.parametrize('args', [
    ['--worlds', '-1'], ['--worlds', '2', '--image-size', '3'],
    ['--worlds', '2', '--seed', '999999999'],
    ['--worlds', '2', '--workers', '0'], ['--worlds', 'x']])
def test_cli_bad_arguments(tmp_path, args):
    r = _cli('simulate', '--domain', 'mazes', '--split', 'train', '--out',
             str(tmp_path / 'o'), *args)
    assert r.returncode == 2, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and 'error' in r.stderr


def test_cli_refuses_non_empty_out(tmp_path):
    (tmp_path / 'x').write_text('keep me')
    r = _cli('simulate', '--domain', 'rooms', '--split', 'test', '--worlds', '1', '--out',
             str(tmp_path))
    assert r.returncode == 2 and 'not empty' in r.stderr
    assert (tmp_path / 'x').read_text() == 'keep me'


def test_cli_rooms_end_to_end(tmp_path):
    out = tmp_path / 'rooms'
    r = _cli('simulate', '--domain', 'rooms', '--split', 'test', '--worlds', '2', '--out',
             str(out), '--workers', '1', '--no-progress')
    assert r.returncode == 0, r.stderr
    assert 'images/s' in r.stdout
    ds = open_dataset(out)
    assert ds.manifest['domain'] == 'rooms' and ds.n_worlds == 2


def test_ctrl_c_leaves_no_partial_shard(tmp_path):
    out = tmp_path / 'big'
    p = subprocess.Popen([sys.executable, '-m', 'dmn_localizer', 'simulate', '--domain',
                          'mazes', '--split', 'train', '--worlds', '2000', '--out', str(out),
                          '--workers', '2', '--no-progress'], cwd=REPO,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60   # until a shard is finished (interrupted while writing more)
    while not (out.exists() and any(n.startswith('shard-') for n in os.listdir(out))):
        assert time.time() < deadline and p.poll() is None, 'no shard was ever finished'
        time.sleep(0.05)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 130, err
    names = os.listdir(out)
    assert 'manifest.json' not in names
    assert not [n for n in names if '.tmp' in n or n.startswith('.shard')], names
    finished = [n for n in names if n.startswith('shard-')]
    assert finished and len(finished) < 40
    for n in finished:     # whatever shard finished is complete
        with np.load(out / n, allow_pickle=False) as z:
            assert z['context_images'].shape[0] == len(z['world_seeds']) > 0
