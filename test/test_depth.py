"""A depth camera's frames as column depths: decoding (REP-118), the horizon band, pairing by
stamp, the simulated depth camera, the aligned model taking them, maps storing them, and
replay over real bags with a depth topic."""
import math

import numpy as np
import pytest
import torch

from dmn_localizer.data.column_depth import column_depths as ray_cast
from dmn_localizer.depth import DepthBuffer, depth_image_columns, raw_to_depth
from dmn_localizer.images import ImageError
from dmn_localizer.mapping.view_map import ViewMap
from dmn_localizer.model import build_model
from dmn_localizer.model.config import DMNConfig
from dmn_localizer.model.preprocess import images_to_tensor


def test_raw_to_depth_reads_metres_and_millimetres():
    mm = np.array([[0, 1500], [65535, 20]], '<u2')
    d = raw_to_depth('16UC1', 2, 2, 4, mm.tobytes())
    assert np.isnan(d[0, 0]) and np.isnan(d[1, 1])     # 0 = no reading; 2 cm below range
    np.testing.assert_allclose(d[0, 1], 1.5)
    np.testing.assert_allclose(d[1, 0], 65.535, rtol=1e-6)
    m = np.array([[2.0, np.inf], [np.nan, 0.5]], '<f4')
    d = raw_to_depth('32FC1', 2, 2, 8, m.tobytes())
    assert d[0, 0] == 2.0 and d[1, 1] == 0.5 and np.isnan(d[0, 1]) and np.isnan(d[1, 0])
    big = np.array([[1.25, 3.0]], '>f4')
    np.testing.assert_allclose(raw_to_depth('32FC1', 1, 2, 8, big.tobytes(), True), [[1.25, 3]])
    padded = np.zeros((2, 12), np.uint8)             # step 12 > 2 * 4: row padding skipped
    padded[:, :8] = np.array([[1.0, 2.0], [3.0, 4.0]], '<f4').view(np.uint8)
    np.testing.assert_allclose(raw_to_depth('32FC1', 2, 2, 12, padded.tobytes()),
                               [[1, 2], [3, 4]])


@pytest.mark.parametrize('args,match', [
    (('rgb8', 2, 2, 6, bytes(12)), 'unsupported depth encoding'),
    (('32FC1', 2, 2, 8, bytes(12)), 'truncated'),
    (('16UC1', 0, 2, 4, b''), 'empty')])
def test_bad_depth_frames_get_one_line_errors(args, match):
    with pytest.raises(ImageError, match=match):
        raw_to_depth(*args)


def test_depth_image_columns_read_the_horizon_band():
    depth = np.full((40, 8), 9.0, np.float32)          # floor and ceiling elsewhere
    depth[18:22] = np.array([1, 1, 2, 2, 3, 3, np.nan, np.nan], np.float32)
    np.testing.assert_allclose(depth_image_columns(depth, 4)[:3], [1, 2, 3])
    assert depth_image_columns(depth, 4)[3] == np.inf        # no reading in the band: beyond range
    np.testing.assert_allclose(depth_image_columns(depth, 8)[:6], [1, 1, 2, 2, 3, 3])
    with pytest.raises(ImageError, match='columns'):
        depth_image_columns(depth, 9)


def test_depth_buffer_pairs_by_nearest_stamp():
    buf = DepthBuffer(tolerance_s=0.05)
    buf.add(1.00, [1.0])
    buf.add(1.10, [2.0])
    assert buf.at(1.04)[0] == 1.0 and buf.at(1.07)[0] == 2.0
    assert buf.at(1.2) is None and buf.at(0.9) is None
    buf.add(0.5, [3.0])                                 # time went backwards: start over
    assert len(buf) == 1 and buf.at(1.0) is None and buf.at(0.5)[0] == 3.0


def test_simulated_depth_camera_sees_walls_floor_and_ceiling():
    pytest.importorskip('vizdoom')
    from dmn_localizer.sim.world import make_world
    with make_world('mazes', 1_100_003, 32) as world:
        poses = world.sample_free_poses(np.random.default_rng(0), 6)
        depth = world.render_depth(poses)
        cam = world.camera
    walls = ray_cast(world.layout, world.layout_resolution_m, poses, 32, cam.hfov_deg,
                     max_depth_m=60.0)
    # at the horizon every column reads its wall; the band gives exactly the ray-cast depth
    np.testing.assert_allclose(np.stack([depth_image_columns(d, 32) for d in depth]), walls,
                               rtol=1e-5)
    # the bottom row sees the floor in front of a far wall: cam height / tan(angle below)
    below = ((31.5 - cam.cy) / cam.fy)
    far = walls[:, 0] > 4.0
    assert far.any()
    np.testing.assert_allclose(depth[far, 31, 0], cam.height_m / below, rtol=1e-5)


def _aligned():
    torch.manual_seed(0)
    return build_model(DMNConfig(architecture='aligned')).eval()


def test_measured_depths_replace_the_predicted_ones():
    model = _aligned()
    images = torch.rand(2, 3, 32, 32) * 2 - 1
    _, predicted, _ = model.encode_columns(images)
    measured = np.full((2, 32), np.nan, np.float32)
    measured[0, :8] = [1.0, 3.0] * 4          # columns 0-3 of 16: the lower median of a pair
    measured[1] = 250.0                                 # beyond range: clamped
    feat, depth, desc = model.encode_columns(images, torch.as_tensor(measured))
    np.testing.assert_allclose(depth[0, :4].detach(), 1.0)
    np.testing.assert_allclose(depth[0, 4:].detach(), predicted[0, 4:].detach())
    np.testing.assert_allclose(depth[1].detach(), 100.0)
    with pytest.raises(ValueError, match='multiple of 16'):
        model.encode_columns(images, torch.ones(2, 20))
    # depth_range: a column the camera read nothing in (+inf) is at least that far; a column
    # without a frame (NaN) keeps the prediction, and so does +inf with depth_range 0
    far = measured.copy()
    far[0, 8:] = np.inf
    _, ranged, _ = model.encode_columns(images, torch.as_tensor(far), depth_range=50.0)
    np.testing.assert_allclose(ranged[0, :4].detach(), 1.0)
    np.testing.assert_allclose(ranged[0, 4:].detach(),
                               predicted[0, 4:].detach().clamp(min=50.0), rtol=1e-6)
    none = torch.full((2, 32), float('nan'))
    _, kept, _ = model.encode_columns(images, none, depth_range=50.0)
    np.testing.assert_allclose(kept.detach(), predicted.detach())
    _, kept, _ = model.encode_columns(images, torch.as_tensor(far), depth_range=0.0)
    np.testing.assert_allclose(kept[0, 4:].detach(), predicted[0, 4:].detach())
    # a map built from images and depths equals one from the stored embeddings
    poses = torch.rand(1, 2, 3)
    emb = model.embed(images, measured)
    a = model.build_map(images[None], poses, measured[None])
    b = model.map_from_embeddings(emb[None], poses)
    torch.testing.assert_close(a.depth, b.depth)
    q = model.encode_query(images[:1], measured[:1])
    torch.testing.assert_close(q.depth, depth[:1])


def test_maps_store_depths(tmp_path):
    vm = ViewMap()
    image = np.zeros((32, 32, 3), np.uint8)
    vm.add(image, (0, 0, 0))
    vm.add(image, (1, 0, 0), depth=np.arange(32, dtype=np.float32))
    vm.add(image, (2, 0, 0))
    assert vm.depths.shape == (3, 32)
    assert np.isnan(vm.depths[[0, 2]]).all() and vm.depths[1, 5] == 5.0
    with pytest.raises(ValueError, match='columns'):
        vm.add(image, (3, 0, 0), depth=np.ones(16))
    vm.save(tmp_path / 'm.dmnmap')
    again = ViewMap.load(tmp_path / 'm.dmnmap')
    np.testing.assert_array_equal(again.depths, vm.depths)
    ViewMap(images=vm.images, poses=vm.poses).save(tmp_path / 'plain.dmnmap')
    assert ViewMap.load(tmp_path / 'plain.dmnmap').depths is None


@pytest.fixture(scope='module')
def rgbd_bags(tmp_path_factory):
    pytest.importorskip('vizdoom')
    from dmn_localizer.bags.simulate import simulate_bag
    out = tmp_path_factory.mktemp('rgbd')
    simulate_bag('mazes', 1_100_003, out, image_size=32, mapping_frames=60,
                 localization_frames=12, depth=True)
    return out


def test_replay_reads_the_depth_topic_into_map_and_filter(rgbd_bags):
    """Real bags with a depth topic: the map's contexts and the query frames carry the depth
    camera's columns, and the localizer's map state holds them instead of predictions."""
    from dmn_localizer.localization.localizer import Localizer
    from dmn_localizer.config import LocalizerConfig
    from dmn_localizer.replay import offline as core
    topics = core.Topics(depth='/camera/depth/image_raw')
    view_map = core.build_map(rgbd_bags / 'mapping', topics, 32)
    assert view_map.depths is not None and np.isfinite(view_map.depths).mean() > 0.95
    stream = core.read_stream(rgbd_bags / 'localization', topics, 32)
    assert len(stream.depth) == len(stream.image_stamps) == 12
    assert all(stream.depth.at(s) is not None for s in stream.image_stamps)
    model = _aligned()
    loc = Localizer(model, LocalizerConfig(global_num_particles=64, num_particles=64), 'cpu')
    loc.set_map(view_map)
    expect = model.measured_depth(torch.as_tensor(view_map.depths), len(view_map))
    ok = torch.isfinite(expect)
    torch.testing.assert_close(loc.map_state.depth[0][ok], expect[ok].clamp(0.05, 100.0))
    # without the topic the same map's depths are the model's predictions
    plain = core.build_map(rgbd_bags / 'mapping', core.Topics(), 32)
    assert plain.depths is None
    loc.set_map(plain)
    assert not torch.allclose(loc.map_state.depth[0][ok], expect[ok])
    # the query's depth reaches the model: scores differ with and without it
    loc.set_map(view_map)
    loc.init_global()
    parts = loc.particles.clone()
    image = stream.images[0]
    with torch.no_grad():
        q_measured = model.encode_query(images_to_tensor(image[None]),
                                        stream.depth.at(stream.image_stamps[0])[None])
        q_predicted = model.encode_query(images_to_tensor(image[None]))
        a = model.log_likelihood(loc.map_state, q_measured, parts)
        b = model.log_likelihood(loc.map_state, q_predicted, parts)
    assert not torch.allclose(a, b)
    assert math.isfinite(float(a.max()))


def test_replay_command_with_depth_topic(rgbd_bags, tmp_path, capsys):
    from dmn_localizer.cli import main
    out = tmp_path / 'r'
    rc = main(['replay', '--bag', str(rgbd_bags / 'localization'), '--map-bag',
               str(rgbd_bags / 'mapping'), '--out', str(out), '--depth-topic',
               '/camera/depth/image_raw', '--particles', '256'])
    assert rc == 0
    import json
    metrics = json.loads((out / 'metrics.json').read_text())
    assert metrics['depth_topic'] == '/camera/depth/image_raw' and metrics['updates'] > 0
    assert metrics['images_with_depth'] == 12 and metrics['images_without_depth'] == 0
    # a bag without that topic is one line, before anything heavy
    capsys.readouterr()
    rc = main(['replay', '--bag', str(rgbd_bags / 'localization'), '--map-bag',
               str(rgbd_bags / 'mapping'), '--out', str(tmp_path / 'x'), '--depth-topic',
               '/nope'])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1 and '/nope' in err, err


def test_live_replay_gives_the_node_the_depth_topic(rgbd_bags, tmp_path, ros_env):
    """--live with --depth-topic: the player plays the depth frames, the localizer node
    subscribes (its depth_topic parameter) and pairs each image with one (its diagnostics)."""
    import json
    from conftest import run_python
    torch.manual_seed(0)
    model = tmp_path / 'aligned.safetensors'
    from dmn_localizer.model.io import save_model
    save_model(_aligned(), model)
    out = tmp_path / 'live'
    proc, _, stderr = run_python(
        ['-m', 'dmn_localizer', 'replay', '--map-bag', str(rgbd_bags / 'mapping'), '--bag',
         str(rgbd_bags / 'localization'), '--model', str(model), '--out', str(out),
         '--particles', '128', '--device', 'cpu', '--live', '--rate', '4', '--depth-topic',
         '/camera/depth/image_raw'], ros_env, timeout=150)
    assert proc.returncode == 0, stderr[-3000:]
    metrics = json.loads((out / 'metrics.json').read_text())
    assert metrics['updates'] > 0
    assert metrics['node_images_with_depth'] > 0
    assert metrics['node_images_without_depth'] == 0
    assert ViewMap.load(out / 'map.dmnmap').depths is not None


def test_simulated_sensor_flaws(tmp_path):
    from dmn_localizer.cli import main
    from dmn_localizer.sim.depth_camera import degrade
    ideal = np.array([[1.0, 4.0], [8.0, np.nan]], np.float32)
    d = degrade(ideal, np.random.default_rng(0), max_range_m=5.0)
    assert d[0, 0] == 1.0 and d[0, 1] == 4.0 and np.isnan(d[1]).all()
    assert depth_image_columns(d[1:], 2).tolist() == [np.inf, np.inf]   # beyond range: no reading
    noisy = degrade(np.full((50, 50), 2.0, np.float32), np.random.default_rng(0), noise=0.05)
    assert 0.03 < np.std(np.log(noisy / 2.0)) < 0.07
    np.testing.assert_array_equal(
        noisy, degrade(np.full((50, 50), 2.0, np.float32), np.random.default_rng(0), noise=0.05))
    # the sensor's flaws describe the --depth camera: one line without it
    assert main(['simulate-bag', '--out', str(tmp_path / 'b'), '--depth-range', '5']) == 2


def test_feed_loop_pairs_depth_and_diagnostics_say_when_it_is_missing():
    """The tracker gives each image the depth frame of its stamp; an image without one is
    counted, scored with predicted depths and reported (WARN) in the node's diagnostics."""
    from dmn_localizer.config import LocalizerConfig
    from dmn_localizer.localization.diagnostics import localizer_status
    from dmn_localizer.localization.localizer import Localizer
    from dmn_localizer.localization.tracker import Tracker
    rng = np.random.default_rng(0)
    vm = ViewMap()
    for i in range(4):
        vm.add(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8), [5.0 * i, 2.0, 0.3 * i],
               depth=np.full(32, 2.0 + i, np.float32))
    cfg = LocalizerConfig(num_particles=32, global_num_particles=64, health_samples=16,
                          update_min_d=0.1, depth_topic='camera/depth')
    loc = Localizer(_aligned(), cfg, 'cpu', seed=1)
    loc.set_map(vm)
    torch.testing.assert_close(loc.map_state.depth[0, :, 0], torch.tensor([2.0, 3, 4, 5]))
    loc.init_global()
    buf = DepthBuffer(0.05)
    buf.add(10.0, np.full(32, 1.5, np.float32))
    seen = []
    original = loc.model.encode_query
    loc.model.encode_query = lambda images, depth=None, depth_range=0.0: (
        seen.append(None if depth is None else float(depth[0, 0])) or
        original(images, depth, depth_range))
    t = Tracker(loc, depth_at=buf.at)
    image = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
    t.add_odometry(10.0, [0.0, 0.0, 0.0])
    assert t.add_image(10.0, image).updated
    status = localizer_status(t, cfg, 'ok', 'cpu')
    assert status[2]['images_with_depth'] == 1 and 'depth' not in status[1]
    t.add_odometry(10.5, [0.5, 0.0, 0.0])
    assert t.add_image(10.5, image).updated                 # no depth frame at 10.5
    assert seen == [1.5, None] and (t.with_depth, t.without_depth) == (1, 1)
    level, message, values = localizer_status(t, cfg, 'ok', 'cpu')
    assert level >= 1 and 'no depth frame' in message and values['images_without_depth'] == 1


def test_dataset_from_bags_stores_the_measured_column_depths(rgbd_bags, tmp_path):
    """dataset-from-bags --depth-topic: each view keeps the columns of its own depth frame
    (here ray-cast at its pose in the world: the simulated camera is exact at the horizon),
    and the view-pair recipe takes them as the true depths of the model's columns."""
    from dmn_localizer.cli import main
    from dmn_localizer.data.dataset import open_dataset
    from dmn_localizer.sim.world import make_world
    from dmn_localizer.training.view_pairs.worlds import load_view_worlds, measured_columns
    out = tmp_path / 'ds'
    args = ['dataset-from-bags', str(rgbd_bags), '--image-topic', '/camera/image_raw',
            '--pose-topic', '/ground_truth/pose', '--contexts', '16', '--trajectories', '2',
            '--trajectory-length', '6']
    assert main(args + ['--depth-topic', '/camera/depth/image_raw', '--out', str(out)]) == 0
    ds = open_dataset(out)
    assert ds.manifest['depth']['topic'] == '/camera/depth/image_raw'
    a = ds.load_shard(0)
    with make_world('mazes', 1_100_003, 32) as world:
        layout, res, hfov = world.layout, world.layout_resolution_m, world.camera.hfov_deg
    poses = np.concatenate([a['context_poses'][0], a['traj_poses'][0].reshape(-1, 3)])
    poses = poses.astype(np.float64) + [*a['origins'][0], 0.0]
    measured = np.concatenate([a['context_depths'][0],
                               a['traj_depths'][0].reshape(-1, 32)])
    walls = ray_cast(layout, res, poses, 32, hfov, max_depth_m=60.0)
    # float32 poses: a column at a wall's edge may see the other wall
    assert np.mean(np.isclose(measured, walls, rtol=1e-3)) > 0.97
    worlds = load_view_worlds(str(out), 16, progress=False)
    np.testing.assert_array_equal(worlds.depth[0], measured_columns(measured, 16))
    assert np.isfinite(worlds.depth).all()
    # without the topic the views have no true depths (the recipe predicts them)
    assert main(args + ['--out', str(tmp_path / 'plain')]) == 0
    assert np.isnan(load_view_worlds(str(tmp_path / 'plain'), 16, progress=False).depth).all()
    # a bag without that topic is refused in one line
    assert main(args + ['--depth-topic', '/nope', '--out', str(tmp_path / 'x')]) == 2


def test_measured_columns_pool_image_columns_as_the_model_does():
    """Dataset columns -> the model's columns: the lower median of each group, +inf (no
    reading) counted as a value, NaN (no frame) ignored; what is not a finite depth is NaN
    (unknown) for training, as the model takes the same measured depths at run time."""
    from dmn_localizer.training.view_pairs.worlds import measured_columns
    d = np.array([[1, 2, np.inf, np.inf, np.nan, np.nan, 3, np.nan],
                  [5, np.inf, np.nan, 4, 1, 1, 2, 2]], np.float32)
    out = measured_columns(d, 4)
    np.testing.assert_array_equal(out, [[1, np.nan, np.nan, 3], [5, 4, 1, 2]])
    model = torch.nanmedian(torch.as_tensor(d).view(2, 4, 2), -1).values.numpy()
    finite = np.isfinite(model)
    np.testing.assert_array_equal(out[finite], model[finite])
    with pytest.raises(Exception, match='do not split'):
        measured_columns(d, 3)
