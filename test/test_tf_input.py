"""The localizer's TF inputs (nodes/tf_listener.py): odometry from odom -> base on /tf
(odom_source tf, AMCL's way) and the camera mounting from /tf_static.

In-process: real node objects whose subscription callbacks get real messages (as the
robustness tests); over DDS: the node as a process, with a peer publishing /tf_static, /tf and
images."""
import math
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from geometry_msgs.msg import PoseWithCovarianceStamped, TransformStamped
from nav_msgs.msg import Odometry
from tf2_msgs.msg import TFMessage

import test_localizer_node
from conftest import start_python, stop_process
from inprocess import (image_callback, make_node, rgb_msg, ros_context, stamp,
                       subscription_callback, tee_publishers, write_tiny_model_and_map)
from dmn_localizer.geometry import compose
from dmn_localizer.nodes.common import LATCHED
from dmn_localizer.nodes.conversions import pose_to_xyyaw, xyyaw_to_pose
from dmn_localizer.nodes.localizer_node import LocalizerNode
from dmn_localizer.nodes.tf_listener import TF_STATIC_QOS

world = test_localizer_node.world                  # fixtures: a maze, a tiny model and map
model_and_map = test_localizer_node.model_and_map
MAP_FROM_ODOM = test_localizer_node.MAP_FROM_ODOM

SMALL = dict(num_particles=16, global_num_particles=64, global_initial_particles=0,
             health_samples=8, update_min_d=0.1, save_pose_rate=0.0)
OPTICAL_FROM_BODY_Q = (-0.5, 0.5, -0.5, 0.5)   # REP-103: z forward, x right, y down
MOUNT = (0.3, 0.1, 0.5)                          # camera_link in base_link: x, y, yaw


@pytest.fixture(scope='module')
def files(tmp_path_factory):
    return write_tiny_model_and_map(tmp_path_factory.mktemp('tf_input'),
                                    [[3.0 * i, 2.0 * (i % 2), 0.5 * i] for i in range(6)])


@pytest.fixture(scope='module')
def context():
    with ros_context() as ctx:
        yield ctx


def localizer(context, files, **params):
    p = dict(SMALL, model=str(files / 'tiny.safetensors'), map_file=str(files / 'map.dmnmap'))
    p.update(params)
    node = make_node(LocalizerNode, context, **p)
    tee_publishers(node, ['pose_pub'])
    return node


def transform(parent, child, t=0.0, xyz=(0.0, 0.0, 0.0), q=(0.0, 0.0, 0.0, 1.0)):
    msg = stamp(TransformStamped(child_frame_id=child), t)
    msg.header.frame_id = parent
    tr, r = msg.transform.translation, msg.transform.rotation
    tr.x, tr.y, tr.z = map(float, xyz)
    r.x, r.y, r.z, r.w = map(float, q)
    return msg


def planar(parent, child, t, pose, z=0.0):
    q = xyyaw_to_pose(pose).orientation
    return transform(parent, child, t, (pose[0], pose[1], z), (q.x, q.y, q.z, q.w))


def tf_callbacks(node):
    """{'/tf': callback, '/tf_static': callback} of the node's TF subscriptions."""
    return {s.topic_name: s.callback for s in node.subscriptions if s.msg_type is TFMessage}


def odom_at(t):
    """The robot's odom_from_base: driving and turning."""
    s = t - 100.0
    return np.array([0.4 * s, 0.1 * s, 0.2 * s])


def drive(node, odometry, steps=8, frame_id='camera_optical_frame'):
    """Odometry at t and t + 0.25 (``odometry(t, pose)`` sends it) and a random image at t,
    every 0.5 s (the same images for every node). Returns the published estimates."""
    on_image = image_callback(node)
    rng = np.random.default_rng(3)
    for i in range(steps):
        t = 100.0 + 0.5 * i
        odometry(t, odom_at(t))
        odometry(t + 0.25, odom_at(t + 0.25))
        img = rgb_msg(rng.integers(0, 255, (32, 32, 3)), t)
        img.header.frame_id = frame_id
        on_image(img)
    return np.array([pose_to_xyyaw(m.pose.pose) for m in node.pose_pub.msgs])


def via_topic(node):
    on_odom = subscription_callback(node, Odometry)

    def send(t, pose):
        msg = stamp(Odometry(child_frame_id='base_link'), t)
        msg.header.frame_id = 'odom'
        msg.pose.pose = xyyaw_to_pose(pose)
        on_odom(msg)
    return send


def via_tf(node, footprint_to_base=(0.0, 0.0, 0.0)):
    """odom -> base_footprint on /tf; base_footprint -> base_link (z 0.1 m and the given
    planar offset) on /tf_static."""
    cb = tf_callbacks(node)
    cb['/tf_static'](TFMessage(transforms=[planar('base_footprint', 'base_link', 0.0,
                                                  footprint_to_base, z=0.1)]))

    def send(t, pose):
        cb['/tf'](TFMessage(transforms=[planar('odom', 'base_footprint', t, pose)]))
    return send


def test_tf_and_topic_odometry_give_the_same_estimate(context, files):
    """The same motion, once as nav_msgs/Odometry (odom_source topic) and once as odom ->
    base_footprint on /tf through a static base_footprint -> base_link (odom_source tf, the
    default): the same estimates. A base_link 0.2 m off the footprint (other odometry of
    base_link) gives other estimates: the comparison can tell."""
    topic = localizer(context, files, odom_source='topic')
    tf = localizer(context, files)
    off = localizer(context, files)
    try:
        assert tf.config.odom_source == 'tf'
        assert not [s for s in tf.subscriptions if s.msg_type is Odometry]
        assert sorted(tf_callbacks(tf)) == ['/tf', '/tf_static']
        by_topic = drive(topic, via_topic(topic))
        by_tf = drive(tf, via_tf(tf))
        by_off = drive(off, via_tf(off, footprint_to_base=(0.2, 0.0, 0.0)))
        assert len(by_topic) >= 6 and np.ptp(by_topic[:, 0]) > 0.01   # updates that moved
        np.testing.assert_allclose(by_tf, by_topic, atol=1e-6)
        assert tf.tracker.odometry_samples == topic.tracker.odometry_samples == 16
        assert tf.tracker.updates == topic.tracker.updates
        assert not np.allclose(by_off[:len(by_topic)], by_topic, atol=1e-3)
        assert not tf.log.messages('warning', 'odometry')
    finally:
        for n in (topic, tf, off):
            n.destroy_node()


def test_camera_mounting_from_tf_static(context, files):
    """base_link -> camera_link -> camera_optical_frame on /tf_static: the filter scores the
    camera where TF mounts it, exactly as with the same camera_offset_* and no TF; without
    either, other estimates. camera_offset_* is the fallback, with one warning."""
    by_tf = localizer(context, files, odom_source='topic')
    by_offset = localizer(context, files, odom_source='topic', camera_offset_x=MOUNT[0],
                          camera_offset_y=MOUNT[1], camera_offset_yaw=MOUNT[2])
    none = localizer(context, files, odom_source='topic')
    none.tf_inputs.started -= 60.0   # past the start grace period: the fallback is warned
    try:
        tilted = xyyaw_to_pose(MOUNT).orientation
        # camera_link pitched 0.3 rad down (rotation about its y axis) and 0.4 m up
        pitch = (0.0, math.sin(0.15), 0.0, math.cos(0.15))
        from dmn_localizer.localization.transforms import quaternion_multiply
        q = quaternion_multiply((tilted.x, tilted.y, tilted.z, tilted.w), pitch)
        tf_callbacks(by_tf)['/tf_static'](TFMessage(transforms=[
            transform('base_link', 'camera_link', 0.0, (MOUNT[0], MOUNT[1], 0.4), q),
            transform('camera_link', 'camera_optical_frame', 0.0, (0.0, 0.0, 0.0),
                      OPTICAL_FROM_BODY_Q)]))
        est_tf = drive(by_tf, via_topic(by_tf))
        np.testing.assert_allclose(by_tf.localizer.base_from_camera.numpy(), MOUNT, atol=1e-6)
        assert by_tf.log.messages('info', 'camera mounting from TF base_link -> '
                                  'camera_optical_frame: x 0.300 m, y 0.100 m, yaw 0.500 rad '
                                  '(looking along its z (optical frame))')
        assert not by_tf.log.messages('warning', 'camera mounting')
        est_offset = drive(by_offset, via_topic(by_offset))
        est_none = drive(none, via_topic(none))
        assert len(est_tf) >= 6
        np.testing.assert_allclose(est_tf, est_offset, atol=1e-5)
        assert not np.allclose(est_none, est_tf, atol=1e-3)
        assert not by_offset.log.messages('warning', 'camera mounting')   # TF may still come
        warned = none.log.messages('warning', 'camera mounting')
        assert len(warned) == 1 and "TF has no usable base_link -> camera_optical_frame " \
            "(frame 'base_link' does not exist" in warned[0]
        # the image's own frame is looked up: a body frame (x forward) works as well
        drive(by_tf, via_topic(by_tf), steps=1, frame_id='camera_link')
        np.testing.assert_allclose(by_tf.localizer.base_from_camera.numpy(), MOUNT, atol=1e-6)
    finally:
        for n in (by_tf, by_offset, none):
            n.destroy_node()


def test_odom_source_is_tf_or_topic(context, files):
    from dmn_localizer.util.errors import UserError
    with pytest.raises(UserError, match="odom_source must be 'tf' or 'topic', not 'wheels'"):
        localizer(context, files, odom_source='wheels')


def test_bad_tf_is_skipped_with_a_warning(context, files):
    """Non-finite or zero-rotation transforms, bad stamps, frames named after themselves:
    skipped with one throttled warning per topic, never an exception; no chain from odom to
    base_link: a throttled warning (after the first seconds), no odometry."""
    node = localizer(context, files)
    try:
        cb = tf_callbacks(node)
        bad = [transform('odom', 'base_link', 100.0, (math.nan, 0, 0)),
               transform('odom', 'base_link', 100.0, q=(0, 0, 0, 0)),
               transform('odom', 'odom', 100.0),
               transform('', 'base_link', 100.0),
               transform('odom', 'base_link', 100.0)]
        bad[-1].header.stamp.nanosec = 2_000_000_000
        for _ in range(3):
            cb['/tf'](TFMessage(transforms=bad))
            cb['/tf_static'](TFMessage(transforms=bad[:2]))
        assert len(node.log.messages('warning', '/tf: transform')) == 1
        assert len(node.log.messages('warning', '/tf_static: transform')) == 1
        assert node.tracker.odometry_samples == 0
        assert 'no odometry received (TF odom -> base_link)' in node.health()[1]
        node.tf_inputs.started -= 60.0   # past the start grace period
        cb['/tf'](TFMessage(transforms=[transform('odom', 'base_footprint', 100.0)]))
        cb['/tf'](TFMessage(transforms=[transform('odom', 'base_footprint', 100.1)]))
        warned = node.log.messages('warning', 'odom_source tf: no odometry from TF')
        assert len(warned) == 1 and "frame 'base_link' does not exist" in warned[0]
        assert node.tracker.odometry_samples == 0
        # base_link appears: odometry flows from the whole history
        cb['/tf_static'](TFMessage(transforms=[transform('base_footprint', 'base_link')]))
        cb['/tf'](TFMessage(transforms=[transform('odom', 'base_footprint', 100.2)]))
        assert node.tracker.odometry_samples == 3
        assert node.tracker.odometry.latest_stamp == pytest.approx(100.2)
    finally:
        node.destroy_node()


def test_localizer_over_dds_with_tf_odometry_and_static_mounting(ros_env, ros_peer,
                                                                 model_and_map, world):
    """The node as a process with the default odom_source (tf): its odometry is the peer's
    odom -> base_link on /tf, its camera mounting the peer's /tf_static, published (transient
    local) before the node starts. map -> odom composed with that odometry is the estimate."""
    model_file, map_file = model_and_map
    n = ros_peer.node
    static_pub = n.create_publisher(TFMessage, '/tf_static', TF_STATIC_QOS)
    static_pub.publish(TFMessage(transforms=[
        transform('base_link', 'camera_link', 0.0, (0.25, -0.05, 0.3)),
        transform('camera_link', 'camera_optical_frame', 0.0, (0.0, 0.0, 0.0),
                  OPTICAL_FROM_BODY_Q)]))
    node = start_python(['-m', 'dmn_localizer', 'run', 'localize', '--map-file', str(map_file),
                         '--model', str(model_file), '-p', 'num_particles:=100',
                         '-p', 'global_num_particles:=300', '-p', 'update_min_d:=0.1'],
                        ros_env)
    poses, tfs = [], []
    n.create_subscription(PoseWithCovarianceStamped, 'amcl_pose', poses.append, LATCHED)
    n.create_subscription(TFMessage, '/tf', tfs.append, 100)
    robot = test_localizer_node.Robot(ros_peer, world, odom_via='tf')
    try:
        robot.wait_for_node()
        if not robot.drive_until(lambda: len(poses) >= 3, poses):
            raise AssertionError((len(poses), stop_process(node)[1][-3000:]))
        est = poses[-1]
        t_est = est.header.stamp.sec + est.header.stamp.nanosec * 1e-9
        map_from_odom_at = test_localizer_node.map_from_odom_at
        assert ros_peer.spin_until(lambda: map_from_odom_at(tfs, t_est + 1.0) is not None, 10)
        np.testing.assert_allclose(compose(map_from_odom_at(tfs, t_est + 1.0),
                                           robot.odom_at(t_est)),
                                   pose_to_xyyaw(est.pose.pose), atol=1e-4)
    finally:
        out, err = stop_process(node)
    assert node.returncode == 0, err[-3000:]
    assert 'camera mounting from TF base_link -> camera_optical_frame: x 0.250 m, ' \
        'y -0.050 m, yaw 0.000 rad' in err, err[-3000:]
    assert 'camera_offset_* used' not in err and 'no odometry from TF' not in err


frames = st.sampled_from(['odom', 'base_link', 'base_footprint', 'camera_optical_frame',
                          'camera_link', 'map', '', '/odom', 'x'])
wild = st.one_of(st.floats(-5.0, 5.0), st.floats(allow_nan=True, allow_infinity=True))
stamps = st.one_of(st.floats(99.0, 104.0), st.just(-1.0), st.just(1e12))


@st.composite
def transforms(draw):
    t = draw(stamps)
    msg = transform(draw(frames), draw(frames), 0.0,
                    [draw(wild) for _ in range(3)], [draw(wild) for _ in range(4)])
    if t >= 0:
        msg.header.stamp.sec, msg.header.stamp.nanosec = int(t), int((t % 1) * 1e9)
    else:
        msg.header.stamp.nanosec = 2_000_000_000
    return msg


tf_ops = st.lists(st.one_of(
    st.tuples(st.sampled_from(['/tf', '/tf_static']), st.lists(transforms(), max_size=4)),
    st.tuples(st.just('image'), st.floats(99.0, 104.0), frames)), max_size=25)


@settings(max_examples=int(os.environ.get('DMN_FUZZ_EXAMPLES', '30')), deadline=None,
          derandomize=not os.environ.get('DMN_FUZZ_RANDOM'),
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(ops=tf_ops)
def test_fuzz_tf_callbacks(context, files, ops):
    """Random /tf and /tf_static messages (wild values, frames, stamps) between images: no
    exception escapes a callback and everything published stays finite."""
    node = localizer(context, files, update_min_d=0.0, force_update_when_still=True)
    try:
        cb, on_image = tf_callbacks(node), image_callback(node)
        good = [planar('odom', 'base_link', 99.0 + 0.25 * i, odom_at(99.0 + 0.25 * i))
                for i in range(21)]
        cb['/tf'](TFMessage(transforms=good[:4]))
        rng = np.random.default_rng(0)
        for i, (kind, arg, *rest) in enumerate(ops):
            if kind == 'image':
                img = rgb_msg(rng.integers(0, 255, (32, 32, 3)), arg)
                img.header.frame_id = rest[0]
                on_image(img)
            else:
                cb[kind](TFMessage(transforms=arg + good[4 + i % 17:5 + i % 17]))
        for m in node.pose_pub.msgs:
            assert np.isfinite(pose_to_xyyaw(m.pose.pose)).all()
            assert np.isfinite(m.pose.covariance).all()
        assert np.isfinite(node.localizer.base_from_camera.numpy()).all()
    finally:
        node.destroy_node()


def test_mapper_takes_the_camera_mounting_from_tf_static(context, files):
    """The mapper stores camera poses with the localizer's mounting: from /tf_static when TF
    has it (the same poses as with those camera_offset_*), else camera_offset_* (one
    warning)."""
    from geometry_msgs.msg import PoseStamped

    from dmn_localizer.nodes.mapper_node import MapperNode

    def run(with_tf, grace=True, **params):
        node = make_node(MapperNode, context, model=str(files / 'tiny.safetensors'),
                         keyframe_min_distance=0.5, **params)
        if not grace:
            node.tf_inputs.started -= 60.0
        try:
            if with_tf:
                q = (-0.5, 0.5, -0.5, 0.5)   # optical frame of a camera looking along base x
                from dmn_localizer.localization.transforms import quaternion_multiply
                yaw = xyyaw_to_pose(MOUNT).orientation
                tf_callbacks(node)['/tf_static'](TFMessage(transforms=[transform(
                    'base_link', 'camera_optical_frame', 0.0, (MOUNT[0], MOUNT[1], 0.4),
                    quaternion_multiply((yaw.x, yaw.y, yaw.z, yaw.w), q))]))
            on_pose = subscription_callback(node, PoseStamped)
            on_image = image_callback(node)
            rng = np.random.default_rng(0)
            for i in range(4):
                t = 100.0 + i
                msg = stamp(PoseStamped(), t)
                msg.header.frame_id = 'map'
                msg.pose = xyyaw_to_pose(odom_at(t) * 4)
                on_pose(msg)
                img = rgb_msg(rng.integers(0, 255, (32, 32, 3)), t)
                img.header.frame_id = 'camera_optical_frame'
                on_image(img)
            return node.view_map.poses.copy(), node.log
        finally:
            node.destroy_node()
    base = np.array([odom_at(100.0 + i) * 4 for i in range(4)])
    by_tf, log = run(True)
    by_offset, _ = run(False, camera_offset_x=MOUNT[0], camera_offset_y=MOUNT[1],
                       camera_offset_yaw=MOUNT[2])
    plain, plain_log = run(False, grace=False)
    assert len(by_tf) == 4
    np.testing.assert_allclose(by_tf, compose(base, np.array(MOUNT)), atol=1e-6)
    np.testing.assert_allclose(by_tf, by_offset, atol=1e-6)
    np.testing.assert_allclose(plain, base, atol=1e-9)
    assert len(plain_log.messages('warning', 'camera mounting: TF has no usable')) == 1
