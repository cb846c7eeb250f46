"""localizer_node input robustness, in-process: the node object is built in the test
process and its callbacks are called directly; plus one real process over DDS for a bad
map_file at start and the ~/load_map service.

Tiny random model, random images: nothing here assumes the model localizes."""
import math
import time

import cv2
import numpy as np
import pytest
import torch
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from geometry_msgs.msg import PoseWithCovarianceStamped
from nav_msgs.msg import Odometry
from rcl_interfaces.srv import SetParameters
from rosgraph_msgs.msg import Clock
from rclpy.parameter import Parameter
from sensor_msgs.msg import CompressedImage, Image
from std_srvs.srv import Trigger

from conftest import start_python, stop_process
from inprocess import (image_callback, make_node, rgb_msg, ros_context, stamp,
                       subscription_callback, tee_publishers, write_tiny_model_and_map)
from dmn_localizer.images import ImageError, compressed_to_rgb
from dmn_localizer.mapping.view_map import ViewMap
from dmn_localizer.localization.diagnostics import ERROR, WARN
from dmn_localizer.nodes.conversions import xyyaw_to_pose
from dmn_localizer.nodes.localizer_node import LocalizerNode

SMALL = dict(num_particles=16, global_num_particles=32, global_initial_particles=64,
             health_samples=8, update_min_d=0.1)
OUTPUTS = ['pose_pub', 'particles_pub', 'markers_pub', 'tf_pub', 'diag_pub']


@pytest.fixture(scope='module')
def files(tmp_path_factory):
    d = write_tiny_model_and_map(tmp_path_factory.mktemp('robust'),
                                 [[3.0 * i, 2.0 * (i % 2), 0.5] for i in range(6)])
    ViewMap().save(d / 'empty.dmnmap')
    (d / 'garbage.dmnmap').write_bytes(b'\x00\x01not a map at all' * 10)
    return d


@pytest.fixture(scope='module')
def context():
    with ros_context() as ctx:
        yield ctx


def localizer(context, files, **params):
    p = dict(SMALL, model=str(files / 'tiny.safetensors'), map_file=str(files / 'map.dmnmap'),
             odom_source='topic')
    p.update(params)
    node = make_node(LocalizerNode, context, **p)
    tee_publishers(node, OUTPUTS)
    return node


def odom_msg(t, pose):
    msg = Odometry(child_frame_id='base_link')
    msg.header.frame_id = 'odom'
    msg.pose.pose = xyyaw_to_pose(pose)
    return stamp(msg, t)


class Driver:
    """Feeds a node odometry (robot driving +x at 0.4 m/s) and random images every 0.5 s."""

    def __init__(self, node, t=100.0, x=0.0):
        self.node, self.t, self.x = node, t, x
        self.on_odom = subscription_callback(node, Odometry)
        self.on_image = image_callback(node)
        self.rng = np.random.default_rng(1)

    def odom(self, t=None, x=None):
        self.on_odom(odom_msg(self.t if t is None else t, [self.x if x is None else x, 0, 0]))

    def step(self, image=True):
        self.odom()
        self.on_odom(odom_msg(self.t + 0.25, [self.x + 0.1, 0.0, 0.0]))
        if image:
            self.on_image(rgb_msg(self.rng.integers(0, 255, (32, 32, 3)), self.t))
        self.t += 0.5
        self.x += 0.2


def health(node):
    return node.health()     # (level: OK 0, WARN 1, ERROR 2, message, values)


def test_bad_images_skipped_with_one_warning_per_topic(context, files):
    node = localizer(context, files)
    cb = image_callback(node)
    bad = [Image(height=4, width=4, encoding='32FC1', step=16, data=bytes(64)),
           Image(height=4, width=4, encoding='bayer_rggb8', step=4, data=bytes(16)),
           Image(height=4, width=4, encoding='rgb8', step=12, data=bytes(20)),   # truncated
           Image(height=0, width=0, encoding='rgb8', step=0, data=b''),          # empty
           stamp(Image(height=2, width=2, encoding='rgb8', step=6, data=bytes(12)), 0)]
    bad[-1].header.stamp.nanosec = 2_000_000_000                                 # bad stamp
    for _ in range(5):
        for msg in bad:
            cb(msg)
    warnings = node.log.messages('warning', 'camera/image_raw: frame skipped')
    assert len(warnings) == 1 and "unsupported image encoding '32FC1'" in warnings[0]
    assert node.tracker.images == 0
    # a throttled warning of another kind is not silenced by the image one
    bad_odom = odom_msg(100.0, [0.0, 0.0, 0.0])
    bad_odom.pose.pose.position.x = math.nan
    subscription_callback(node, Odometry)(bad_odom)
    assert node.log.messages('warning', 'odometry rejected: pose has non-finite values')
    assert len(node.tracker.odometry) == 0
    # any size and a supported encoding: resized to image_size and used
    seen = []
    step = node.localizer.step

    def step_seen(t, rgb, odom, **kwargs):
        seen.append(rgb.shape)
        return step(t, rgb, odom, **kwargs)
    node.localizer.step = step_seen
    drv = Driver(node)
    drv.odom()
    drv.odom(t=100.5)
    cb(rgb_msg(np.zeros((48, 64, 3), np.uint8), 100.2, 'bgr8'))
    assert node.tracker.images == 1 and seen == [(32, 32, 3)]
    assert node.tracker.updates == 1 and node.pose_pub.msgs
    node.destroy_node()


def test_undecodable_compressed_images_skipped(context, files):
    node = localizer(context, files, image_transport='compressed')
    cb = image_callback(node)
    for data in (b'', b'\xff\xd8\xff garbage', bytes(1000)):
        cb(stamp(CompressedImage(format='jpeg', data=data), 100.0))
    warnings = node.log.messages('warning', 'camera/image_raw/compressed: frame skipped')
    assert len(warnings) == 1 and 'could not be decoded' in warnings[0]
    ok, jpeg = cv2.imencode('.jpg', np.full((50, 70, 3), 128, np.uint8))
    cb(stamp(CompressedImage(format='jpeg', data=jpeg.tobytes()), 100.0))
    assert node.tracker.images == 1
    # a small PNG declaring 30000 x 30000 pixels is refused before decoding (2.7 GB, ~1 min)
    bomb = png_bomb(30000, 30000)
    with pytest.raises(ImageError, match='declares 30000x30000 pixels'):
        compressed_to_rgb(bomb, 'png')
    cb(stamp(CompressedImage(format='png', data=bomb), 100.0))   # the node's path: skipped
    assert node.tracker.images == 1
    node.destroy_node()


def png_bomb(w, h):
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack('>I', len(data)) + kind + data + struct.pack(
            '>I', zlib.crc32(kind + data) & 0xFFFFFFFF)
    return (b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', w, h, 8, 2, 0, 0, 0))
            + chunk(b'IDAT', zlib.compress(bytes(3 * w + 1) * 64, 9)) + chunk(b'IEND', b''))


def test_time_going_backwards_resets_the_time_base(context, files):
    node = localizer(context, files)
    drv = Driver(node)
    for _ in range(4):
        drv.step()
    before = node.tracker.updates
    assert before >= 2 and node.localizer.last_stamp is not None
    drv.t = 50.0  # bag loop / simulator reset
    drv.odom()
    assert node.log.messages('warning', 'odometry time went backwards')
    assert node.localizer.last_stamp is None and node.tracker.odometry.time_resets == 1
    level, message, values = health(node)
    assert level == WARN and 'time base reset' in message
    assert values['odometry_time_resets'] == 1
    for _ in range(4):
        drv.step()
    assert node.tracker.updates > before  # it keeps localizing on the new time base
    node.destroy_node()


def test_odometry_jump_flagged_and_not_applied(context, files):
    node = localizer(context, files, odom_jump_threshold=1.0)
    drv = Driver(node)
    for _ in range(3):
        drv.step()
    particles = node.localizer.particles.clone()
    drv.x += 5.0  # wheel odometry glitch: 5 m in 0.25 s
    drv.odom()
    assert node.tracker.odometry.jumps == 1 and node.localizer.last_stamp is None
    level, message, values = health(node)
    assert level == WARN and 'odometry jumped 5' in message and values['odometry_jumps'] == 1
    drv.odom(t=drv.t + 0.25, x=drv.x + 0.1)
    drv.on_image(rgb_msg(np.zeros((32, 32, 3)), drv.t))  # first image on the new time base
    assert torch.equal(node.localizer.particles, particles)  # the 5 m were not applied
    drv.t += 0.5
    drv.x += 0.2
    before = node.tracker.updates
    for _ in range(3):
        drv.step()
    assert node.tracker.updates > before
    node.destroy_node()


def test_missing_odometry_warns_in_diagnostics(context, files):
    node = localizer(context, files, odom_timeout=0.2)
    drv = Driver(node)
    for _ in range(3):
        drv.on_image(rgb_msg(np.zeros((32, 32, 3)), drv.t))
        drv.t += 0.5
    level, message, values = health(node)
    assert level == WARN and 'no odometry received' in message
    assert values['images_received'] == 3 and values['dropped_images'] == 2
    assert node.tracker.updates == 0 and not node.pose_pub.msgs
    drv.odom()
    time.sleep(0.3)
    level, message, _ = health(node)
    assert level == WARN and 'no odometry for' in message
    node.publish_diagnostics()  # and it serialises
    assert node.diag_pub.msgs[-1].status[0].level == DiagnosticStatus.WARN
    node.destroy_node()


def test_likelihood_collapse_reported_in_diagnostics(context, files):
    """The recovery logic is the core's (test_robustness_filter.py); here: the node reports
    it. The belief score is forced to 0 (every update collapsed)."""
    node = localizer(context, files, collapse_updates=2, global_reinit_updates=4)
    node.localizer._belief_score = lambda query, ll: 0.0
    drv = Driver(node)
    for _ in range(2):
        drv.step()
    level, message, values = health(node)
    assert level == WARN and 'likelihood collapsed (count 2' in message
    assert values['recovery_injections'] == 1 and values['belief_score'] == 0.0
    assert node.log.messages('warning', 'injecting random particles')
    drv.step()
    drv.step()
    assert node.log.messages('warning', 'global re-initialisation')
    values = health(node)[2]
    assert values['recovery_global_reinits'] == 1
    # a fresh uniform sample, narrowed down by the next update
    assert values['particles'] == SMALL['global_initial_particles']
    drv.step()
    assert health(node)[2]['particles'] == SMALL['global_num_particles']
    node.destroy_node()


def initial_pose(frame='map', pose=(3.0, 1.0, 0.2), var=(0.04, 0.04, 0.01), cov=None):
    msg = PoseWithCovarianceStamped()
    msg.header.frame_id = frame
    msg.pose.pose = xyyaw_to_pose(pose)
    c = np.zeros((6, 6))
    c[0, 0], c[1, 1], c[5, 5] = var
    if cov is not None:
        c = cov
    msg.pose.covariance = c.flatten().tolist()
    return msg


def test_initial_pose_checks(context, files):
    node = localizer(context, files)
    cb = subscription_callback(node, PoseWithCovarianceStamped)
    particles = node.localizer.particles
    nan_pose = initial_pose()
    nan_pose.pose.pose.orientation.w = math.inf
    not_psd = np.zeros((6, 6))
    not_psd[0, 0] = not_psd[1, 1] = 1.0
    not_psd[0, 1] = not_psd[1, 0] = 3.0  # eigenvalues 4 and -2
    asym = np.zeros((6, 6))
    asym[0, 0] = asym[1, 1] = 1.0
    asym[0, 1] = 0.5
    bad_stamp = initial_pose()
    bad_stamp.header.stamp.nanosec = 2_000_000_000
    bad = {"frame 'odom'": initial_pose(frame='odom'),
           'non-finite values': nan_pose,
           'invalid stamp': bad_stamp,
           'covariance not finite': initial_pose(var=(math.nan, 0.04, 0.01)),
           'not symmetric positive semi-definite': [initial_pose(var=(-1.0, 0.04, 0.01)),
                                                    initial_pose(cov=not_psd),
                                                    initial_pose(cov=asym)],
           'far outside the map': initial_pose(pose=(1e30, 0.0, 0.0))}
    for reason, msgs in bad.items():
        for msg in msgs if isinstance(msgs, list) else [msgs]:
            node.log.clear()
            cb(msg)
            assert node.log.messages('warning', reason), (reason, node.log.records)
            assert node.localizer.particles is particles  # belief untouched
    cb(initial_pose(frame='/map', pose=(3.0, 1.0, 0.2), var=(1e-6, 1e-6, 1e-6)))
    p, _ = node.localizer.particle_array()   # a leading slash (ROS 1 style) is the frame
    assert node.localizer.particles is not particles and np.abs(p[:, 0] - 3.0).max() < 0.1
    cb(initial_pose(var=(0.0, 0.0, 0.0)))  # zero covariance: default sigmas (AMCL)
    p, _ = node.localizer.particle_array()
    assert len(p) == SMALL['num_particles'] and np.isfinite(p).all()
    cb(initial_pose(var=(1e12, 1e12, 1e12)))  # huge: clamped to the map size and pi
    p, _ = node.localizer.particle_array()
    assert np.isfinite(p).all() and np.abs(p[:, :2]).max() < 1e3
    node.destroy_node()


def trigger(node):
    return node.on_load_map(Trigger.Request(), Trigger.Response())


def test_no_map_then_load_map_service(context, files):
    node = localizer(context, files, map_file='')
    level, message, _ = health(node)
    assert level == ERROR and 'no map' in message and 'load_map' in message
    subscription_callback(node, PoseWithCovarianceStamped)(initial_pose())
    assert node.log.messages('warning', 'initial pose ignored: no map loaded')
    drv = Driver(node)
    for _ in range(3):
        drv.step()
    node.publish_diagnostics()
    assert not any(getattr(node, n).msgs for n in OUTPUTS[:4])  # publishes nothing
    assert node.diag_pub.msgs[-1].status[0].level == DiagnosticStatus.ERROR
    response = trigger(node)
    assert not response.success and 'map_file parameter is empty' in response.message
    # map_file can be changed at run time; bad files leave the node without a map, saying why
    for name, problem in (('garbage.dmnmap', 'not a map file'),
                          ('empty.dmnmap', 'no contexts'), ('missing.dmnmap', 'no such')):
        path = str(files / name)
        assert node.set_parameters([Parameter('map_file', value=path)])[0].successful
        response = trigger(node)
        assert not response.success and path in response.message \
            and problem in response.message, response.message
        level, message, _ = health(node)
        assert level == ERROR and path in message
    node.set_parameters([Parameter('map_file', value=str(files / 'map.dmnmap'))])
    response = trigger(node)
    assert response.success and 'global localization started' in response.message
    for _ in range(3):
        drv.step()
    assert node.tracker.updates >= 1 and node.pose_pub.msgs and node.tf_pub.msgs
    assert health(node)[0] < ERROR
    # a bad map later: refused, the good one stays
    node.set_parameters([Parameter('map_file', value=str(files / 'garbage.dmnmap'))])
    assert not trigger(node).success
    assert node.localizer.ready and health(node)[0] < ERROR
    assert node.set_parameters([Parameter('model', value='x')])[0].successful is False
    node.destroy_node()


def test_bad_map_file_at_start_then_load_map_over_dds(ros_env, ros_peer, files):
    """A real process: a corrupt map_file gives one error line (no traceback), the node keeps
    running with diagnostics ERROR; set_parameters + ~/load_map bring it up."""
    bad = files / 'garbage.dmnmap'
    proc = start_python(['-m', 'dmn_localizer.nodes.localizer_node', '--ros-args',
                         '-r', '__node:=localizer', '-p', f'model:={files / "tiny.safetensors"}',
                         '-p', f'map_file:={bad}'], ros_env)
    diags = []
    n = ros_peer.node
    n.create_subscription(DiagnosticArray, '/diagnostics', diags.append, 10)
    try:
        assert ros_peer.spin_until(lambda: diags, 60), stop_process(proc)[1][-2000:]
        status = diags[-1].status[0]
        assert status.level == DiagnosticStatus.ERROR and str(bad) in status.message
        req = SetParameters.Request(parameters=[
            Parameter('map_file', value=str(files / 'map.dmnmap')).to_parameter_msg()])
        assert ros_peer.call(SetParameters, 'localizer/set_parameters',
                             request=req).results[0].successful
        response = ros_peer.call(Trigger, 'localizer/load_map')
        assert response.success, response.message
        diags.clear()
        assert ros_peer.spin_until(
            lambda: diags and diags[-1].status[0].level != DiagnosticStatus.ERROR, 10)
        assert proc.poll() is None
    finally:
        out, err = stop_process(proc)
    assert proc.returncode == 0, err[-2000:]
    assert 'Traceback' not in err
    errors = [line for line in err.splitlines() if '[ERROR]' in line]
    assert len(errors) == 1 and str(bad) in errors[0], err[-2000:]


def run_node_to_exit(args, env):
    """(exit status, non-empty stderr lines) of a node process expected to stop by itself."""
    import subprocess
    proc = start_python(args, env)
    try:
        _, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        _, err = stop_process(proc)
    return proc.returncode, [line for line in err.splitlines() if line.strip()]


def test_mapper_bad_map_file_exits_with_one_line(ros_env, files):
    """The mapper, asked to extend a corrupt map, stops (exit 2, one line): starting empty
    instead would overwrite the user's map at the next ~/save_map."""
    bad = files / 'garbage.dmnmap'
    status, lines = run_node_to_exit(['-m', 'dmn_localizer.nodes.mapper_node', '--ros-args',
                                      '-p', f'model:={files / "tiny.safetensors"}',
                                      '-p', f'map_file:={bad}'], ros_env)
    assert status == 2 and lines == [f'mapper_node: error: {bad}: not a map file, or truncated '
                                     '(bad header length)'], lines


@pytest.mark.parametrize('value,message', [
    ('-5.0', 'parameter update_min_d: Invalid parameter value (-5.0)'),
    ('abc', "parameter update_min_d: Trying to set parameter 'update_min_d' to 'abc' of type "
     "'STRING', expecting type 'DOUBLE'")])
def test_bad_parameter_value_exits_with_one_line(ros_env, value, message):
    """A parameter of the wrong type or out of range (a typo in the YAML) stops the node with
    one line naming it (exit 2), not a traceback."""
    status, lines = run_node_to_exit(['-m', 'dmn_localizer.nodes.localizer_node', '--ros-args',
                                      '-p', f'update_min_d:={value}'], ros_env)
    assert status == 2 and len(lines) == 1, lines
    assert lines[0].startswith(f'localizer_node: error: {message}'), lines


def test_integer_for_a_float_parameter_is_taken(context, files):
    """update_min_d: 1 in a YAML (an integer) sets the float parameter to 1.0, as the user
    meant, instead of stopping the node on the type."""
    node = localizer(context, files, update_min_d=1)
    try:
        assert node.get_parameter('update_min_d').value == 1.0
        assert node.config.update_min_d == 1.0
    finally:
        node.destroy_node()


def test_diagnostics_run_on_the_ros_clock_with_input_rates(context, files):
    """Under use_sim_time, the odometry age and the input rates are sim time (the /clock
    topic), not wall time: 10 Hz odometry over 2 sim seconds fed in a few wall milliseconds
    reads 10 Hz; 3 sim seconds without odometry is a timeout; the camera rate, with a map
    loaded and no image, is a WARN of its own status, as diagnostic_updater's tasks."""
    node = localizer(context, files, use_sim_time=True, odom_timeout=1.0)
    set_clock = subscription_callback(node, Clock)

    def at(t):
        set_clock(Clock(clock=stamp(Odometry(), t).header.stamp))
    on_odom = subscription_callback(node, Odometry)
    for i in range(21):     # in a few wall milliseconds: a wall-clock rate would read 1,000s Hz
        at(500.0 + 0.1 * i)
        on_odom(odom_msg(500.0 + 0.1 * i, [0.01 * i, 0.0, 0.0]))
    level, message, values = health(node)
    assert values['odometry_age_s'] == pytest.approx(0.0, abs=1e-6)
    assert 'no odometry' not in message
    node.publish_diagnostics()
    statuses = {s.name.split(': ', 1)[1]: s for s in node.diag_pub.msgs[-1].status}
    assert list(statuses) == ['filter', 'camera frequency', 'odometry frequency']
    assert all(s.hardware_id == 'dmn_localizer' for s in statuses.values())
    odom = {kv.key: kv.value for kv in statuses['odometry frequency'].values}
    assert float(odom['actual_frequency_hz']) == pytest.approx(10.0, rel=1e-3)
    assert statuses['odometry frequency'].level == DiagnosticStatus.OK
    assert statuses['camera frequency'].level == DiagnosticStatus.WARN   # a map, no images
    at(505.0)                                       # 3 sim seconds later, no odometry
    level, message, values = health(node)
    assert values['odometry_age_s'] == pytest.approx(3.0, abs=1e-6)
    assert level == WARN and 'no odometry for 3.0 s' in message
    node.destroy_node()


@pytest.mark.parametrize('threads', [1, 0])
def test_cpu_threads_parameter_sets_the_process_threads(context, files, threads):
    """cpu_threads: 1 puts torch on one thread (steady where other processes use the CPUs);
    0 leaves the process's setting alone."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        node = localizer(context, files, cpu_threads=threads)
        assert torch.get_num_threads() == (1 if threads else 2)
        node.destroy_node()
    finally:
        torch.set_num_threads(before)


def test_diagnostics_and_the_configure_log_name_the_filter_values_in_use(context, files):
    """The values a model's card may choose (the parameter when set, else the card's, else
    the fallback) are in the filter's diagnostics (the configure log line too:
    test_localizer_node.py, whose process log is read)."""
    node = localizer(context, files, pose_estimate='heaviest_cluster', likelihood_scale=0.5)
    values = health(node)[2]
    assert values['pose_estimate'] == 'heaviest_cluster' and values['likelihood_scale'] == 0.5
    assert values['covariance_scale'] == 1.0   # neither the parameter nor the card sets one
    assert values['min_evidence'] is None      # the DMN's scores have no scale: no lost flag
    node.publish_diagnostics()   # and it serialises
    keys = {v.key: v.value for v in node.diag_pub.msgs[-1].status[0].values}
    assert keys['pose_estimate'] == 'heaviest_cluster' and keys['min_evidence'] == 'None'
    node.destroy_node()
