"""Fuzz both nodes' callbacks in-process (hypothesis): random sequences of messages with random
field values (encodings, sizes, data lengths, NaN/Inf/huge numbers, wrong frames, invalid and
out-of-order stamps, bad covariances) interleaved with service calls and diagnostics. No
exception may escape a callback, and the filter state and everything published stay finite.

Deterministic by default (CI); ``DMN_FUZZ_EXAMPLES=2000 DMN_FUZZ_RANDOM=1 pytest
test/test_fuzz_nodes.py`` for a longer, randomised run.
"""
import math
import os

import numpy as np
import pytest
from geometry_msgs.msg import PoseStamped, PoseWithCovarianceStamped
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nav_msgs.msg import Odometry
from sensor_msgs.msg import Image
from std_srvs.srv import Empty, Trigger

from inprocess import (image_callback, make_node, ros_context, subscription_callback,
                       tee_publishers, write_tiny_model_and_map)
from dmn_localizer.mapping.view_map import ViewMap
from dmn_localizer.nodes.localizer_node import LocalizerNode
from dmn_localizer.nodes.mapper_node import MapperNode

EXAMPLES = int(os.environ.get('DMN_FUZZ_EXAMPLES', '30'))
FUZZ = settings(max_examples=EXAMPLES, deadline=None,
                derandomize=not os.environ.get('DMN_FUZZ_RANDOM'),
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])

ENCODINGS = ['rgb8', 'bgr8', 'mono8', 'rgba8', 'bgra8', '8UC3', '32FC1', '16UC1',
             'bayer_rggb8', 'yuv422', '']
CHANNELS = {'rgb8': 3, 'bgr8': 3, '8UC3': 3, 'mono8': 1, 'rgba8': 4, 'bgra8': 4}
UINT32 = 2 ** 32 - 1

wild = st.floats(allow_nan=True, allow_infinity=True)
sane = st.floats(-5.0, 25.0)
coord = st.one_of(sane, sane, sane, wild)
sec = st.one_of(st.integers(100, 104), st.integers(100, 104), st.integers(-2 ** 31, 2 ** 31 - 1))
nanosec = st.one_of(st.integers(0, 999_999_999), st.sampled_from([1_000_000_000, UINT32]))
frame = st.one_of(st.just('map'), st.just('odom'), st.text(max_size=6))


def set_stamp(msg, s, ns):
    msg.header.stamp.sec, msg.header.stamp.nanosec = s, ns
    return msg


def set_pose(pose, x, y, z, yaw, quat=None):
    pose.position.x, pose.position.y, pose.position.z = x, y, z
    if quat is None and math.isfinite(yaw):
        quat = (0.0, 0.0, math.sin(yaw / 2), math.cos(yaw / 2))
    elif quat is None:
        quat = (0.0, 0.0, yaw, 1.0)
    (pose.orientation.x, pose.orientation.y, pose.orientation.z,
     pose.orientation.w) = quat


quaternion = st.one_of(st.none(), st.none(), st.tuples(wild, wild, wild, wild),
                       st.just((0.0, 0.0, 0.0, 0.0)))


@st.composite
def raw_images(draw):
    enc = draw(st.one_of(st.sampled_from(ENCODINGS), st.text(max_size=8)))
    h = draw(st.one_of(st.integers(0, 70), st.sampled_from([UINT32, 2 ** 31])))
    w = draw(st.one_of(st.integers(0, 70), st.sampled_from([UINT32, 2 ** 31])))
    ch = CHANNELS.get(enc, 3)
    step = draw(st.one_of(st.just(min(w * ch, UINT32)), st.integers(0, 300),
                          st.just(UINT32)))
    exact = min(h * step, 20_000)
    size = draw(st.one_of(st.just(exact), st.integers(0, 20_000),
                          st.just(max(0, exact - 1))))
    head = draw(st.binary(max_size=32))[:size]
    msg = Image(height=h, width=w, encoding=enc, step=step,
                data=head + bytes(size - len(head)), is_bigendian=draw(st.integers(0, 1)))
    return set_stamp(msg, draw(sec), draw(nanosec))


@st.composite
def good_images(draw):
    """A valid frame near the odometry stamps, so the update path runs."""
    s = draw(st.integers(100, 104))
    ns = draw(st.integers(0, 999_999_999))
    data = np.full((32, 32, 3), draw(st.integers(0, 255)), np.uint8)
    return set_stamp(Image(height=32, width=32, encoding='rgb8', step=96,
                           data=data.tobytes()), s, ns)


@st.composite
def odometry(draw):
    msg = Odometry(child_frame_id=draw(frame))
    msg.header.frame_id = draw(frame)
    set_pose(msg.pose.pose, draw(coord), draw(coord), draw(st.one_of(st.just(0.0), wild)),
             draw(coord), draw(quaternion))
    return set_stamp(msg, draw(sec), draw(nanosec))


@st.composite
def initial_poses(draw):
    msg = PoseWithCovarianceStamped()
    msg.header.frame_id = draw(frame)
    set_pose(msg.pose.pose, draw(coord), draw(coord), 0.0, draw(coord), draw(quaternion))
    cov = draw(st.one_of(st.lists(wild, min_size=36, max_size=36),
                         st.lists(st.sampled_from([0.0, 0.04, -0.04, 1e300]),
                                  min_size=36, max_size=36),
                         st.just([0.0] * 36)))
    msg.pose.covariance = cov
    return set_stamp(msg, draw(sec), draw(nanosec))


@st.composite
def pose_stampeds(draw):
    msg = PoseStamped()
    msg.header.frame_id = draw(frame)
    set_pose(msg.pose, draw(coord), draw(coord), 0.0, draw(coord), draw(quaternion))
    return set_stamp(msg, draw(st.integers(100, 104)), draw(st.sampled_from([0, 500_000_000])))


@pytest.fixture(scope='module')
def files(tmp_path_factory):
    return write_tiny_model_and_map(tmp_path_factory.mktemp('fuzz'),
                                    [[4.0 * i, 3.0, 0.5 * i] for i in range(4)])


@pytest.fixture(scope='module')
def context():
    with ros_context() as ctx:
        yield ctx


def assert_finite_state(node):
    loc = node.localizer
    if loc.ready:
        p, w = loc.particle_array()
        assert np.isfinite(p).all() and np.isfinite(w).all()
        assert abs(float(w.sum()) - 1.0) < 1e-3
    for msg in node.pose_pub.msgs:
        p = msg.pose.pose.position
        assert math.isfinite(p.x) and math.isfinite(p.y)
        assert np.isfinite(np.asarray(msg.pose.covariance)).all()


# 'drive': a coherent step (odometry at t and t + 0.25 s, then an image at t, t += 0.5 s),
# moving by a mostly sane (dx, dyaw), so that random input lands on a working filter
drive = st.tuples(st.just('drive'), st.tuples(st.one_of(st.floats(-1, 1), st.floats(-1, 1), wild),
                                              st.floats(-1, 1)))
localizer_ops = st.lists(st.one_of(
    drive, drive, drive,
    st.tuples(st.just('odom'), odometry()),
    st.tuples(st.just('odom'), odometry()),
    st.tuples(st.just('image'), raw_images()),
    st.tuples(st.just('image'), good_images()),
    st.tuples(st.just('initialpose'), initial_poses()),
    st.tuples(st.just('call'), st.sampled_from(['reinit', 'nomotion', 'load_map', 'diag']))),
    max_size=14)


@FUZZ
@given(ops=localizer_ops, odom_jump=st.sampled_from([0.0, 1.0]))
def test_fuzz_localizer_callbacks(context, files, ops, odom_jump):
    node = make_node(LocalizerNode, context, model=str(files / 'tiny.safetensors'),
                     map_file=str(files / 'map.dmnmap'), num_particles=8,
                     global_num_particles=16, health_samples=4, update_min_d=0.0,
                     odom_jump_threshold=odom_jump, force_update_when_still=True,
                     odom_source='topic')
    tee_publishers(node, ['pose_pub', 'particles_pub', 'markers_pub', 'tf_pub', 'diag_pub'])
    on_odom = subscription_callback(node, Odometry)
    on_image = image_callback(node)
    on_initial = subscription_callback(node, PoseWithCovarianceStamped)
    calls = {'reinit': lambda: node.on_reinit_global(Empty.Request(), Empty.Response()),
             'nomotion': lambda: node.on_nomotion_update(Empty.Request(), Empty.Response()),
             'load_map': lambda: node.on_load_map(Trigger.Request(), Trigger.Response()),
             'diag': node.publish_diagnostics}
    clock = {'t': 100.0, 'pose': np.array([2.0, 3.0, 0.0])}

    def step(dx, dyaw):
        t, pose = clock['t'], clock['pose']
        nxt = pose + [dx * math.cos(pose[2]), dx * math.sin(pose[2]), dyaw]
        for s, p in ((t, pose), (t + 0.25, nxt)):
            msg = Odometry()
            set_pose(msg.pose.pose, p[0], p[1], 0.0, p[2])
            on_odom(set_stamp(msg, int(s), int((s % 1) * 1e9)))
        img = np.full((32, 32, 3), int(t * 10) % 256, np.uint8)
        on_image(set_stamp(Image(height=32, width=32, encoding='rgb8', step=96,
                                 data=img.tobytes()), int(t), int((t % 1) * 1e9)))
        clock['t'], clock['pose'] = t + 0.5, nxt

    try:
        for kind, arg in ops:
            if kind == 'drive':
                step(*arg)
            elif kind == 'odom':
                on_odom(arg)
            elif kind == 'image':
                on_image(arg)
            elif kind == 'initialpose':
                on_initial(arg)
            else:
                calls[arg]()
            assert_finite_state(node)
        node.publish_diagnostics()
    finally:
        node.destroy_node()


mapper_ops = st.lists(st.one_of(
    st.tuples(st.just('image'), raw_images()),
    st.tuples(st.just('image'), good_images()),
    st.tuples(st.just('pose'), pose_stampeds()),
    st.tuples(st.just('pose'), pose_stampeds()),
    st.tuples(st.just('call'), st.sampled_from(['save', 'clear']))), max_size=14)


@FUZZ
@given(ops=mapper_ops)
def test_fuzz_mapper_callbacks(context, files, tmp_path, ops):
    save_path = tmp_path / 'fuzz.dmnmap'
    node = make_node(MapperNode, context, model=str(files / 'tiny.safetensors'),
                     save_path=str(save_path), keyframe_min_distance=0.5,
                     sync_tolerance_s=0.6)
    on_image = image_callback(node)
    on_pose = subscription_callback(node, PoseStamped)
    try:
        for kind, arg in ops:
            if kind == 'image':
                on_image(arg)
            elif kind == 'pose':
                on_pose(arg)
            elif arg == 'save':
                response = node.on_save_map(Trigger.Request(), Trigger.Response())
                assert response.success, response.message
                assert len(ViewMap.load(save_path)) == len(node.view_map)
            else:
                node.on_clear_map(Trigger.Request(), Trigger.Response())
            assert np.isfinite(node.view_map.poses).all()
    finally:
        node.destroy_node()
