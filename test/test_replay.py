"""``dmn-localizer replay``: a tiny generated bag end to end (offline and ``--live`` through the
real localizer node over DDS), determinism, evo reading our TUM files, argument errors,
interrupted runs. The model is a tiny untrained DMN: nothing here assumes localization works."""
import argparse
import json
import math
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from conftest import run_python, start_python, stop_process
from dmn_localizer.bags.simulate import simulate_bag
from dmn_localizer.commands.replay import replay
from dmn_localizer.model.config import DMNConfig
from dmn_localizer.model.dmn import DMN
from dmn_localizer.model.io import save_model

PARTICLES = 32
FRAMES = 6
# metrics.json keys documented in docs/cli.md "metrics.json keys"
DOCUMENTED = ['ape_rmse_m', 'rpe_rmse_m', 'success_rate', 'success_rate_tight',
              'time_to_converge_s', 'final_error_m', 'final_yaw_error_deg', 'frames_per_s',
              'nees_mean', 'share_inside_2sigma', 'particles', 'map_contexts', 'model_id',
              'device', 'frames', 'updates', 'success_rate_chance', 'success_rate_tight_chance',
              'converged_share_final', 'confident_miss_share', 'map_view_share',
              'off_share_with_map_view', 'off_share_without_map_view']
MAY_BE_NULL = {'time_to_converge_s', 'median_error_after_convergence_m',
               'min_evidence', 'off_share_with_map_view',
               'off_share_without_map_view'}   # null: the lost flag is off (the tiny DMN here)
TIMING = {'frames_per_s', 'latency_mean_s', 'latency_max_s'}
OUTPUTS = ['metrics.json', 'estimate.tum', 'groundtruth.tum', 'updates.csv', 'trajectory.png',
           'errors.png']


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp('replay')
    runs = simulate_bag('mazes', 3, root / 'bags', image_size=32, mapping_frames=60,
                        localization_frames=FRAMES)
    torch.manual_seed(0)
    model = root / 'tiny.safetensors'
    save_model(DMN(DMNConfig()), model)
    return root, runs['mapping'][0], runs['localization'][0], model


def replay_args(data, out, **kw):
    root, map_bag, bag, model = data
    args = dict(bag=bag, map_bag=map_bag, map=None, model=model, out=out, mode='global',
                particles=PARTICLES, seed=0, image_topic='/camera/image_raw',
                odom_topic='/odom', truth_topic='/ground_truth/pose', keyframe_distance=2.0,
                keyframe_angle=0.5, world='mazes:3', device='cpu', precision='fp32', live=False,
                rate=None, ros_domain_id=None)
    args.update(kw)
    return argparse.Namespace(**args)


@pytest.fixture(scope='module')
def offline(data):
    out = data[0] / 'offline'
    metrics, pngs = replay(replay_args(data, out), quiet=True)
    return out, metrics, pngs


def test_offline_end_to_end(offline):
    out, metrics, pngs = offline
    for name in OUTPUTS:
        assert (out / name).stat().st_size > 0, name
    assert [p.name for p in pngs] == ['trajectory.png', 'errors.png']
    assert not [p for p in os.listdir(out) if p.endswith('.tmp')]
    written = json.loads((out / 'metrics.json').read_text())
    assert set(written) == set(metrics)
    for key, value in metrics.items():
        assert written[key] == (value if isinstance(value, list) else
                                pytest.approx(value, nan_ok=True)), key
    for key in DOCUMENTED:
        assert key in written, key
    for key, value in written.items():
        if isinstance(value, float) or value is None:
            if value is None:
                assert key in MAY_BE_NULL, key
            else:
                assert math.isfinite(value), (key, value)
    assert written['frames'] == FRAMES and 0 < written['updates'] <= FRAMES
    assert written['particles'] == PARTICLES and written['map_contexts'] > 0
    assert 0.0 <= written['success_rate'] <= 1.0 and written['frames_per_s'] > 0
    # TUM: one line per update, 8 columns
    rows = np.loadtxt(out / 'estimate.tum')
    assert rows.shape == (written['updates'], 8)


def test_saved_map_replays_the_same(data, offline):
    """--save-map writes the map built from --map-bag; replaying against that file with
    --map gives the same estimates (the nodes load the same file as map_file)."""
    from dmn_localizer.mapping.view_map import ViewMap
    out, metrics, _ = offline
    root = data[0]
    saved = root / 'maps' / 'saved.dmnmap'
    again, _ = replay(replay_args(data, root / 'saved_run', save_map=saved), quiet=True)
    assert len(ViewMap.load(saved)) == metrics['map_contexts'] == again['map_contexts']
    from_file, _ = replay(replay_args(data, root / 'from_file', map_bag=None, map=saved),
                          quiet=True)
    np.testing.assert_array_equal(np.loadtxt(root / 'from_file' / 'estimate.tum'),
                                  np.loadtxt(out / 'estimate.tum'))
    assert from_file['ape_rmse_m'] == metrics['ape_rmse_m']


def test_update_table_adds_up_to_the_metrics(offline):
    """updates.csv has one row per update, and its columns reproduce metrics.json: the APE
    from the x-y errors, the NEES and 2-sigma share, the lost count; its estimates are the
    TUM file's."""
    import csv
    from dmn_localizer.replay.offline import UPDATE_COLUMNS
    out, metrics, _ = offline
    with open(out / 'updates.csv', newline='') as f:
        table = list(csv.DictReader(f))
    assert tuple(table[0]) == UPDATE_COLUMNS and len(table) == metrics['updates']
    err = np.array([float(r['error_xy_m']) for r in table])
    assert math.sqrt(np.mean(err ** 2)) == pytest.approx(metrics['ape_rmse_m'], abs=1e-3)
    nees = np.array([float(r['nees_xy']) for r in table])
    assert nees.mean() == pytest.approx(metrics['nees_mean'], rel=1e-3)
    inside = np.array([int(r['inside_2sigma']) for r in table])
    assert inside.mean() == pytest.approx(metrics['share_inside_2sigma'])
    assert np.mean((inside == 0) & (err >= metrics['tight_threshold_m'])) == pytest.approx(
        metrics['confident_miss_share'])
    assert sum(int(r['lost']) for r in table) == metrics['unreliable_updates']
    assert all(r['evidence'] != '' for r in table)   # offline: every update has its evidence
    tum = np.loadtxt(out / 'estimate.tum')
    xy = np.array([[float(r['x_m']), float(r['y_m'])] for r in table])
    assert np.allclose(xy, tum[:, 1:3], atol=1e-3)
    view = np.array([float(r['map_view_m']) for r in table])
    covered = view <= metrics['map_view_threshold_m']
    assert covered.mean() == pytest.approx(metrics['map_view_share'])
    if covered.any():
        assert np.mean(err[covered] >= 2.0) == pytest.approx(metrics['off_share_with_map_view'])
    # errors.png has its third panel, the evidence: 8 x 6.5 inches before the tight crop
    # (height / width 0.77 after it) instead of 8 x 4.5 (about 0.55)
    header = (out / 'errors.png').read_bytes()[16:24]
    width, height = int.from_bytes(header[:4], 'big'), int.from_bytes(header[4:], 'big')
    assert height / width > 0.7, (width, height)


def _track(errors, step_s=1.0):
    """A track along the x axis whose estimates are ``errors`` metres off in y."""
    from dmn_localizer.replay import offline as core
    n = len(errors)
    truth = [np.array([float(i), 0.0, 0.0]) for i in range(n)]
    return core.Track(stamps=[i * step_s for i in range(n)],
                      estimates=[t + np.array([0.0, e, 0.0]) for t, e in zip(truth, errors)],
                      covariances=[np.eye(3)] * n, truth=truth, frames=n)


def test_convergence_is_when_the_error_stays_low_to_the_end():
    """A run that converged and diverged later has not converged; one that converged for good
    converged when the error dropped below 2 m for the last time."""
    from dmn_localizer.replay.offline import compute_metrics
    diverged = compute_metrics(_track([9, 9, 1, 1, 1, 1, 1, 1, 9, 9, 9, 9]))
    assert diverged['time_to_converge_s'] is None
    assert diverged['median_error_after_convergence_m'] is None
    assert diverged['converged_share_final'] == 0.0
    again = compute_metrics(_track([9, 1, 1, 1, 1, 1, 9, 9, 1, 1, 1, 1]))
    assert again['time_to_converge_s'] == 8.0
    assert again['converged_share_final'] == 1.0
    late = compute_metrics(_track([9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 1, 9, 1, 1, 1, 9]))
    assert late['time_to_converge_s'] is None
    assert late['converged_share_final'] == 0.75     # the last quarter: 3 of 4 within 2 m
    at_once = compute_metrics(_track([1.0, 1.9, 0.5]))
    assert at_once['time_to_converge_s'] == 0.0 and at_once['converged_share_final'] == 1.0
    # the threshold counts strictly, like the success rate: an error of 2 m is not converged
    assert compute_metrics(_track([1.0, 2.0]))['time_to_converge_s'] is None


def test_chance_level_beside_every_success_rate():
    """The chance levels are the success rates of an estimate at a random mapped pose: the
    share of map contexts within each threshold of the truth (strictly, tie-safe)."""
    from dmn_localizer.replay.offline import compute_metrics
    track = _track([0.0, 0.0])                       # truth at (0, 0) and (1, 0)
    edge = 1.0 + math.sqrt(80.0)                     # exactly the threshold from (1, 0)
    map_xy = np.array([[0.0, 0.0], [0.0, 1.5], [5.0, 0.0], [edge, 0.0], [30.0, 0.0]])
    m = compute_metrics(track, map_xy=map_xy)
    # within sqrt(80) = 8.94 m of (0, 0): 3; of (1, 0): 3 (the edge context is not strictly)
    assert m['success_rate_chance'] == pytest.approx((3 + 3) / 10)
    # within 2 m: (0,0): 2 ((0,0), (0,1.5)); (1,0): 2 (hypot(1, 1.5) = 1.80)
    assert m['success_rate_tight_chance'] == pytest.approx(4 / 10)
    assert m['success_rate'] == 1.0
    no_map = compute_metrics(track)
    assert no_map['success_rate_chance'] is None and no_map['success_rate_tight_chance'] is None


def test_map_views_facing_the_camera_and_the_errors_beside_them():
    """map_view_distance counts only the map views facing within 30 deg of the camera's
    heading; the metrics split the updates off by 2 m or more by whether the map had such a
    view within 2 m of the true camera pose (the mounting composed in)."""
    from dmn_localizer.replay import offline as core
    views = np.array([[0.0, 0.0, 0.0], [5.0, 0.0, math.pi], [0.0, 3.0, math.radians(25)]])
    cams = np.array([[1.0, 0.0, 0.0],                   # the east-facing view 1 m away
                     [1.0, 0.0, math.pi],               # the west-facing one 4 m away
                     [1.0, 0.0, math.radians(90)],      # nothing faces north
                     [0.0, 2.0, math.radians(20)]])     # both eastish views: 2 m, 1 m
    d = core.map_view_distance(cams, views)
    assert d[0] == pytest.approx(1.0) and d[1] == pytest.approx(4.0)
    assert d[2] == math.inf and d[3] == pytest.approx(1.0)
    assert np.all(core.map_view_distance(cams, np.zeros((0, 3))) == math.inf)
    # four updates along x; their true base poses face east, the camera sits 3 m ahead
    track = _track([0.5, 3.0, 0.5, 3.0])
    core.annotate_map_views(track, np.array([[3.0, 0.0, 0.0], [4.0, 0.0, 0.0]]),
                            (3.0, 0.0, 0.0))
    assert track.map_view_m == pytest.approx([0.0, 0.0, 1.0, 2.0])
    m = core.compute_metrics(track)
    assert m['map_view_share'] == 1.0 and m['off_share_with_map_view'] == 0.5
    assert m['off_share_without_map_view'] is None
    track.map_view_m = [0.5, 3.0, 2.5, 9.0]
    m = core.compute_metrics(track)
    assert m['map_view_share'] == 0.25 and m['off_share_with_map_view'] == 0.0
    assert m['off_share_without_map_view'] == pytest.approx(2 / 3)
    track.map_view_m = []    # not annotated: nothing claimed
    m = core.compute_metrics(track)
    assert m['map_view_share'] is None and m['off_share_with_map_view'] is None


def test_camera_mounting_and_tracking_spread(data, offline, tmp_path):
    """Replay reads the camera mounting from /tf_static and gives it to the localizer (none
    on the plain bags: the camera sits at the base); --init-spread sets the tracking start."""
    import dmn_localizer.replay.offline as core
    assert offline[1]['base_from_camera'] == [0.0, 0.0, 0.0]
    assert 'init_spread' not in offline[1]
    mount = (0.2, 0.1, 0.5)
    runs = simulate_bag('mazes', 3, tmp_path / 'mounted', image_size=32, mapping_frames=60,
                        localization_frames=FRAMES, base_from_camera=mount)
    metrics, _ = replay(replay_args(data, tmp_path / 'out', bag=runs['localization'][0],
                                    map_bag=runs['mapping'][0], mode='tracking',
                                    init_spread=[0.5, 5.0]), quiet=True)
    assert metrics['base_from_camera'] == pytest.approx(mount, abs=1e-6)
    assert metrics['init_spread'] == pytest.approx([0.5, 5.0])
    stream = core.read_stream(runs['localization'][0], core.Topics(), 32)
    mean, std = core.initial_belief(stream, 'tracking', sigma=(0.5, 0.5, math.radians(5)))
    assert np.allclose(std, (0.5, 0.5, math.radians(5)))
    assert math.hypot(*(mean[:2] - runs['localization'][1][0, :2])) < 2.5
    assert np.allclose(core.initial_belief(stream, 'tracking')[1], (6, 6, math.radians(30)))


def test_same_seed_same_metrics(data, offline):
    out, _, _ = offline
    again = data[0] / 'again'
    replay(replay_args(data, again), quiet=True)
    a, b = (json.loads((d / 'metrics.json').read_text()) for d in (out, again))
    for m in (a, b):
        for key in TIMING:
            m.pop(key, None)
    assert a == b
    for name in ('estimate.tum', 'groundtruth.tum'):
        assert (out / name).read_bytes() == (again / name).read_bytes()


def test_evo_reads_our_trajectories(offline):
    from evo.core import metrics as evo_metrics
    from evo.core import sync
    from evo.tools import file_interface
    out, metrics, _ = offline
    ref = file_interface.read_tum_trajectory_file(str(out / 'groundtruth.tum'))
    est = file_interface.read_tum_trajectory_file(str(out / 'estimate.tum'))
    ref, est = sync.associate_trajectories(ref, est)   # what evo_ape does
    assert ref.num_poses == est.num_poses == metrics['updates']
    ape = evo_metrics.APE(evo_metrics.PoseRelation.translation_part)
    ape.process_data((ref, est))
    rmse = ape.get_statistic(evo_metrics.StatisticsType.rmse)
    assert abs(rmse - metrics['ape_rmse_m']) < 1e-6


def test_interrupted_write_leaves_no_metrics(data, offline, monkeypatch):
    """metrics.json is written last and an old one removed first: after an interrupted write
    there is no metrics.json vouching for a mixed set of files, and no temporary files."""
    import shutil

    from dmn_localizer.replay import plots
    from dmn_localizer.replay import offline as core
    src, metrics, _ = offline
    out = data[0] / 'interrupted'
    shutil.copytree(src, out)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    # Ctrl-C injected at one point, between the outputs before the plots and metrics.json: a
    # real SIGINT cannot be timed to land there (the whole write takes milliseconds)
    monkeypatch.setattr(plots, 'plot_replay', interrupted)
    track = core.Track(stamps=[1.0, 2.0], estimates=[np.zeros(3)] * 2,
                       covariances=[np.eye(3)] * 2, truth=[np.ones(3)] * 2, frames=2)
    with pytest.raises(KeyboardInterrupt):
        core.write_outputs(track, metrics, out)
    names = os.listdir(out)
    assert 'metrics.json' not in names
    assert not [n for n in names if n.endswith('.tmp')]


def test_live_replay_through_the_node(data, ros_env):
    """--live: the real localizer node process gets the bag over DDS; its estimates are
    scored; the node and the player are gone afterwards."""
    root, map_bag, bag, model = data
    out = root / 'live'
    proc, _, stderr = run_python(
        ['-m', 'dmn_localizer', 'replay', '--map-bag', str(map_bag), '--bag', str(bag),
         '--model', str(model), '--out', str(out), '--particles', str(PARTICLES), '--device',
         'cpu', '--live', '--rate', '4'], ros_env, timeout=150)
    assert proc.returncode == 0, stderr[-3000:]
    metrics = json.loads((out / 'metrics.json').read_text())
    assert metrics['live'] is True and metrics['updates'] > 0 and metrics['frames'] > 0
    assert metrics['images_published'] == FRAMES
    assert metrics['node_exit_status'] == 0
    assert math.isfinite(metrics['ape_rmse_m']) and metrics['frames_per_s'] > 0
    for name in OUTPUTS + ['map.dmnmap', 'node.log']:
        assert (out / name).exists(), name
    assert 'localizer' in (out / 'node.log').read_text()
    assert not _our_processes(out)


def _our_processes(out):
    """Processes whose command line mentions ``out`` (the node: its map file is there)."""
    found = []
    for pid in os.listdir('/proc'):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            with open(f'/proc/{pid}/cmdline', 'rb') as f:
                cmd = f.read().decode(errors='replace').replace('\0', ' ')
        except OSError:
            continue
        if str(out) in cmd and 'dmn_localizer.nodes' in cmd:
            found.append(cmd)
    return found


def _children(pid):
    """Pids of the live child processes of ``pid``."""
    found = []
    for child in os.listdir('/proc'):
        try:
            with open(f'/proc/{child}/stat') as f:
                stat = f.read().rsplit(')', 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(stat[1]) == pid and stat[0] != 'Z':
            found.append(int(child))
    return found


def _alive(pid):
    try:
        with open(f'/proc/{pid}/stat') as f:
            return f.read().rsplit(')', 1)[1].split()[0] != 'Z'
    except OSError:
        return False


def test_live_replay_ctrl_c(data, ros_env):
    """Ctrl-C during a live replay: exit 130, the node and the player are stopped, and there
    is no metrics.json (nor any temporary file) in the output directory."""
    root, map_bag, bag, model = data
    out = root / 'live_interrupted'
    proc = start_python(['-m', 'dmn_localizer', 'replay', '--map-bag', str(map_bag), '--bag',
                         str(bag), '--model', str(model), '--out', str(out), '--particles',
                         str(PARTICLES), '--device', 'cpu', '--live', '--rate', '0.1'], ros_env)
    lines = []
    try:
        deadline = time.monotonic() + 120
        for line in proc.stderr:   # the player reports when it starts playing
            lines.append(line)
            if 'playing' in line or time.monotonic() > deadline:
                break
        assert any('playing' in ln for ln in lines), ''.join(lines)
        children = _children(proc.pid)
        assert len(children) == 2, children   # the node and the player
        time.sleep(1.0)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            stop_process(proc)
    assert proc.returncode == 130, ''.join(lines) + stderr
    assert 'interrupted' in stderr
    names = os.listdir(out)
    assert 'metrics.json' not in names and not [n for n in names if n.endswith('.tmp')]
    assert 'node.log' in names
    assert not [pid for pid in children if _alive(pid)]


def test_params_file_sets_the_filter(data, offline, tmp_path, caplog):
    """--params-file: the node's YAML (nested names, '/**' and the node's own section) sets the
    offline filter; command-line options win; a parameter the node does not declare is a
    warning, as the node ignores it."""
    from dmn_localizer.util.resources import config_path
    text = config_path('localizer.yaml').read_text()
    for old, new in (('update_min_d: 0.25', 'update_min_d: 2.0'),
                     ('global_num_particles: 2048', 'global_num_particles: 48')):
        assert old in text
        text = text.replace(old, new)
    path = tmp_path / 'my_localizer.yaml'
    path.write_text(text + '/**:\n  ros__parameters:\n    update_min_a: 3.0\n'
                    '    typo_parameter: 1.0\n')
    with caplog.at_level('WARNING'):
        metrics, _ = replay(replay_args(data, tmp_path / 'a', particles=None,
                                        params_file=path), quiet=True)
    assert "'typo_parameter' is not one of the localizer node's" in caplog.text
    assert metrics['particles'] == 48 and metrics['update_min_d'] == 2.0
    assert metrics['update_min_a'] == 0.2            # the node's own section wins over '/**'
    assert metrics['params_file'] == str(path)
    assert metrics['updates'] < offline[1]['updates']      # 0.5 m steps: every 4th frame
    metrics, _ = replay(replay_args(data, tmp_path / 'b', particles=None, params_file=path,
                                    update_min_d=0.25), quiet=True)
    assert metrics['particles'] == 48 and metrics['update_min_d'] == 0.25
    assert metrics['updates'] == offline[1]['updates']


def test_bad_arguments_one_line_exit_2(data, tmp_path):
    root, map_bag, bag, model = data
    not_a_bag = tmp_path / 'notes.txt'
    not_a_bag.write_text('hello: [')

    def params(line, node='localizer'):
        path = tmp_path / f'params{len(list(tmp_path.glob("params*")))}.yaml'
        path.write_text(f'/**/{node}:\n  ros__parameters:\n    {line}\n')
        return path
    base = ['--map-bag', str(map_bag), '--bag', str(bag), '--model', str(model)]
    out = ['--out', str(tmp_path / 'out')]
    cases = [  # (expected on stderr, arguments)
        ('no such file', ['--map-bag', str(map_bag), '--bag', str(tmp_path / 'nope'),
                          '--model', str(model), *out]),
        ('no such file', [*base[:4], '--model', str(tmp_path / 'nope.safetensors'), *out]),
        ('--particles', [*base, *out, '--particles', '0']),
        ('--rate only applies', [*base, *out, '--rate', '2']),
        ('--rate must be', [*base, *out, '--live', '--rate', '0']),
        ('--precision is for offline replay', [*base, *out, '--live', '--precision', 'bf16']),
        ('--nearest-contexts is for offline', [*base, *out, '--live', '--nearest-contexts',
                                               '4']),
        ('--nearest-contexts must be', [*base, *out, '--nearest-contexts', '-1']),
        ('--init-spread is for --mode tracking', [*base, *out, '--init-spread', '1', '10']),
        ('--update-min-d must be', [*base, *out, '--update-min-d', '-1']),
        ('required: --out', base),
        ("update_min_d must be float, not 'far'",
         [*base, *out, '--params-file', str(params('update_min_d: far'))]),
        ('outside [0.0, 100.0]', [*base, *out, '--params-file',
                                  str(params('update_min_d: -1.0'))]),
        ("no parameters for node 'localizer'", [*base, *out, '--params-file',
                                                str(params('x: 1', node='mapper'))]),
        ('cannot read it as YAML', [*base, *out, '--params-file', str(not_a_bag)]),
        ('takes nav_msgs/msg/Odometry', [*base, *out, '--live', '--odom-topic',
                                         '/ground_truth/pose']),
        ('not a readable rosbag2 bag', ['--map-bag', str(not_a_bag), '--bag', str(bag),
                                        '--model', str(model), *out]),
    ]
    procs = [(expected, subprocess.Popen([sys.executable, '-m', 'dmn_localizer', 'replay',
                                          *argv], stdout=subprocess.PIPE,
                                         stderr=subprocess.PIPE, text=True))
             for expected, argv in cases]
    for expected, p in procs:
        stdout, stderr = p.communicate(timeout=120)
        assert p.returncode == 2, (expected, stderr)
        assert len(stderr.strip().splitlines()) == 1, (expected, stderr)
        assert expected in stderr, (expected, stderr)
        assert 'Traceback' not in stderr
    assert not (tmp_path / 'out').exists()


def test_camera_info_of_the_bag_reaches_the_model(data, tmp_path):
    """The bag's camera_info (the simulated 90 deg camera) is what an aligned model trained
    for a 75 deg camera is told."""
    import dmn_localizer.replay.offline as core
    from dmn_localizer.model import build_model
    stream = core.read_stream(data[2], core.Topics(), 32)
    assert stream.camera_intrinsics == (32, pytest.approx(16.0))    # 90 deg at 32 px
    torch.manual_seed(0)
    model = tmp_path / 'aligned.safetensors'
    save_model(build_model(DMNConfig(architecture='aligned', hfov_deg=75.0)), model)
    metrics, _ = replay(replay_args(data, tmp_path / 'out', model=model), quiet=True)
    assert metrics['camera_hfov_deg'] == pytest.approx(90.0)


def test_a_confident_miss_is_far_off_and_outside_the_published_ellipse():
    """confident_miss_share counts the updates more than tight_threshold_m (2 m) off whose
    truth lies outside the published 2-sigma ellipse: far off with a tight covariance counts,
    far off with a wide one or close with a tight one does not."""
    from dmn_localizer.replay.offline import compute_metrics, Track
    tight, wide = np.diag([0.1, 0.1, 0.1]) ** 2, np.diag([5.0, 5.0, 1.0]) ** 2
    track = Track(stamps=[0.0, 1.0, 2.0, 3.0],
                  estimates=[[3.0, 0, 0], [13.0, 0, 0], [20.5, 0, 0], [30.0, 0, 0]],
                  truth=[[0.0, 0, 0], [10.0, 0, 0], [20.0, 0, 0], [30.0, 0, 0]],
                  covariances=[tight, wide, tight, tight], frames=4, seconds=1.0)
    metrics = compute_metrics(track)
    assert metrics['tight_threshold_m'] == 2.0
    assert metrics['confident_miss_share'] == 0.25          # the first update only
    assert metrics['share_inside_2sigma'] == 0.5             # the wide one and the exact one
