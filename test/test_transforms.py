"""The transform buffer (localization/transforms.py): chains, interpolation, statics, errors,
the planar reduction (body and optical camera frames) and odometry samples from TF."""
import math

import numpy as np
import pytest

from dmn_localizer.geometry import compose, inverse, wrap_angle
from dmn_localizer.localization.odometry import OdometryBuffer
from dmn_localizer.localization.tf_odometry import TfOdometry
from dmn_localizer.localization.transforms import (ConnectivityError, ExtrapolationError,
                                                   Transform, TransformBuffer,
                                                   TransformError, UnknownFrameError,
                                                   camera_planar_pose, is_optical_frame,
                                                   planar_pose, rotation_matrix, slerp)


def rpy(roll, pitch, yaw):
    """Quaternion (x, y, z, w) of R = Rz(yaw) Ry(pitch) Rx(roll), as tf2's setRPY."""
    cr, sr = math.cos(roll / 2), math.sin(roll / 2)
    cp, sp = math.cos(pitch / 2), math.sin(pitch / 2)
    cy, sy = math.cos(yaw / 2), math.sin(yaw / 2)
    return (sr * cp * cy - cr * sp * sy, cr * sp * cy + sr * cp * sy,
            cr * cp * sy - sr * sp * cy, cr * cp * cy + sr * sp * sy)


def tf(x, y, z, roll=0.0, pitch=0.0, yaw=0.0):
    return Transform.make((x, y, z), rpy(roll, pitch, yaw))


def matrix(x, y, z, roll=0.0, pitch=0.0, yaw=0.0):
    """The same transform built independently: 4x4 from elementary rotation matrices."""
    def rx(a):
        return np.array([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]])

    def ry(a):
        return np.array([[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]])

    def rz(a):
        return np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]])
    m = np.eye(4)
    m[:3, :3] = rz(yaw) @ ry(pitch) @ rx(roll)
    m[:3, 3] = (x, y, z)
    return m


# REP-103 optical frame relative to its body frame: z forward, x right, y down
OPTICAL_FROM_BODY_Q = (-0.5, 0.5, -0.5, 0.5)


def test_transform_algebra_matches_matrices():
    a, b = (1.0, -2.0, 0.5, 0.3, -0.2, 1.1), (-0.4, 0.7, 0.2, -1.0, 0.4, 2.5)
    np.testing.assert_allclose((tf(*a) @ tf(*b)).matrix(), matrix(*a) @ matrix(*b), atol=1e-12)
    np.testing.assert_allclose(tf(*a).inverse().matrix(), np.linalg.inv(matrix(*a)), atol=1e-12)
    np.testing.assert_allclose(rotation_matrix(rpy(0.3, -0.2, 1.1)), matrix(*a)[:3, :3],
                               atol=1e-12)


def test_bad_transforms_rejected():
    with pytest.raises(ValueError, match='not finite'):
        Transform.make((math.nan, 0, 0), (0, 0, 0, 1))
    with pytest.raises(ValueError, match='zero'):
        Transform.make((0, 0, 0), (0, 0, 0, 0))
    np.testing.assert_allclose(Transform.make((0, 0, 0), (0, 0, 1e300, 1e300)).rotation,
                               [0, 0, 0.5 ** 0.5, 0.5 ** 0.5])   # no overflow
    with pytest.raises(ValueError, match='not finite'):   # composed out of range
        planar_pose(Transform.make((1e308, 0, 0), (0, 0, 0, 1))
                    @ Transform.make((1e308, 0, 0), (0, 0, 0, 1)))
    # not normalised: normalised, as tf2
    np.testing.assert_allclose(Transform.make((0, 0, 0), (0, 0, 0, 2)).rotation, [0, 0, 0, 1])
    buf = TransformBuffer()
    with pytest.raises(ValueError, match='own parent'):
        buf.set_transform('a', 'a', 0.0, Transform.identity())
    with pytest.raises(ValueError, match='empty'):
        buf.set_transform('', 'a', 0.0, Transform.identity())
    with pytest.raises(ValueError, match='stamp'):
        buf.set_transform('a', 'b', math.inf, Transform.identity())


def test_chain_through_common_ancestor_and_static_edges():
    """map -> odom -> base_link -> camera_link (static) and odom -> other: any pair of frames,
    both directions, equals the product of the 4x4 matrices along the tree."""
    buf = TransformBuffer()
    e = {'odom': ('map', (2.0, 1.0, 0.0, 0.0, 0.0, 0.7)),
         'base_link': ('odom', (0.5, -1.0, 0.1, 0.05, -0.02, 1.3)),
         'camera_link': ('base_link', (0.2, 0.1, 0.3, 0.0, 0.2, -0.4)),
         'other': ('odom', (-3.0, 2.0, 0.0, 0.0, 0.0, 2.0))}
    for child, (parent, v) in e.items():
        buf.set_transform(parent, child, 10.0, tf(*v), static=child == 'camera_link')

    def root_from(f):
        m = np.eye(4)
        while f in e:
            m = matrix(*e[f][1]) @ m
            f = e[f][0]
        return m
    for target in ('map', 'odom', 'base_link', 'camera_link', 'other'):
        for source in ('map', 'odom', 'base_link', 'camera_link', 'other'):
            want = np.linalg.inv(root_from(target)) @ root_from(source)
            np.testing.assert_allclose(buf.lookup(target, source, 10.0).matrix(), want,
                                       atol=1e-9, err_msg=f'{target} <- {source}')
    # leading slashes are ignored, as in tf2; static-only chains answer at any time
    np.testing.assert_allclose(buf.lookup('/base_link', 'camera_link', 1e9).matrix(),
                               matrix(*e['camera_link'][1]), atol=1e-12)
    assert buf.latest_common_time('base_link', 'camera_link') is None
    assert buf.latest_common_time('map', 'camera_link') == 10.0


def test_interpolation_between_neighbouring_stamps():
    buf = TransformBuffer()
    buf.set_transform('odom', 'base', 1.0, tf(0.0, 0.0, 0.0, yaw=0.2))
    buf.set_transform('odom', 'base', 3.0, tf(4.0, 2.0, 0.0, yaw=1.0))
    buf.set_transform('odom', 'base', 2.0, tf(1.0, 1.0, 0.0, yaw=0.6))   # late: in order
    t = buf.lookup('odom', 'base', 2.5)
    np.testing.assert_allclose(t.translation, [2.5, 1.5, 0.0], atol=1e-12)
    np.testing.assert_allclose(planar_pose(t), [2.5, 1.5, 0.8], atol=1e-12)
    # the inverse direction interpolates the same edge
    np.testing.assert_allclose(buf.lookup('base', 'odom', 2.5).matrix(),
                               np.linalg.inv(t.matrix()), atol=1e-12)
    # yaw across +-pi goes the short way round
    buf.set_transform('odom', 'base', 4.0, tf(4.0, 2.0, 0.0, yaw=3.0))
    buf.set_transform('odom', 'base', 5.0, tf(4.0, 2.0, 0.0, yaw=-3.0))
    yaw = planar_pose(buf.lookup('odom', 'base', 4.5))[2]
    assert abs(abs(yaw) - math.pi) < 1e-9
    # slerp in 3D: half way of a 90 deg roll is 45 deg
    q = slerp(rpy(0, 0, 0), rpy(math.pi / 2, 0, 0), 0.5)
    np.testing.assert_allclose(q, rpy(math.pi / 4, 0, 0), atol=1e-12)
    # no stamp: the latest
    np.testing.assert_allclose(planar_pose(buf.lookup('odom', 'base')), [4.0, 2.0, -3.0],
                               atol=1e-12)


def test_two_dynamic_edges_interpolate_each_and_latest_common_time():
    buf = TransformBuffer()
    for s in (0.0, 1.0, 2.0):
        buf.set_transform('map', 'odom', s, tf(s, 0.0, 0.0))
    for s in (0.5, 1.5):
        buf.set_transform('odom', 'base', s, tf(0.0, 10 * s, 0.0))
    assert buf.latest_common_time('map', 'base') == 1.5
    np.testing.assert_allclose(buf.lookup('map', 'base').translation, [1.5, 15.0, 0.0])
    np.testing.assert_allclose(buf.lookup('map', 'base', 1.0).translation, [1.0, 10.0, 0.0])


def test_errors_unknown_frame_no_chain_extrapolation():
    buf = TransformBuffer()
    buf.set_transform('odom', 'base', 1.0, tf(0, 0, 0))
    buf.set_transform('odom', 'base', 2.0, tf(1, 0, 0))
    buf.set_transform('world', 'robot2', 0.0, tf(0, 0, 0), static=True)
    with pytest.raises(UnknownFrameError, match="frame 'camera' does not exist"):
        buf.lookup('base', 'camera')
    with pytest.raises(ConnectivityError, match="no chain between 'odom' and 'robot2'"):
        buf.lookup('odom', 'robot2')
    with pytest.raises(ExtrapolationError, match=r'odom -> base at 2\.500 s.*1\.000 s to '
                       r'2\.000 s.*by 0\.500 s'):
        buf.lookup('odom', 'base', 2.5)
    with pytest.raises(ExtrapolationError):
        buf.lookup('odom', 'base', 0.5)
    # within the tolerance: the nearest end
    np.testing.assert_allclose(buf.lookup('odom', 'base', 2.5, max_extrapolation_s=0.6)
                               .translation, [1, 0, 0])
    assert issubclass(ExtrapolationError, TransformError) and issubclass(TransformError,
                                                                         ValueError)
    # every message is one line
    for call in (lambda: buf.lookup('x', 'y'), lambda: buf.lookup('odom', 'robot2'),
                 lambda: buf.lookup('odom', 'base', 9.0)):
        with pytest.raises(TransformError) as exc:
            call()
        assert '\n' not in str(exc.value)


def test_history_is_bounded_and_time_going_back_restarts_an_edge():
    buf = TransformBuffer(cache_time_s=2.0, max_history=5)
    for i in range(20):
        buf.set_transform('odom', 'base', i * 0.1, tf(i, 0, 0))
    assert buf.stamps('base') == pytest.approx([1.5, 1.6, 1.7, 1.8, 1.9])
    for i in range(10):
        buf.set_transform('odom', 'base', 10.0 + i, tf(i, 0, 0))
    assert buf.stamps('base') == pytest.approx([17.0, 18.0, 19.0])   # 2 s of history
    epoch = buf.epoch('base')
    buf.set_transform('odom', 'base', 18.5, tf(0, 0, 0))   # late by < max_backward_s: kept
    assert buf.stamps('base') == pytest.approx([17.0, 18.0, 18.5, 19.0])
    assert buf.epoch('base') == epoch and buf.time_resets == 0
    buf.set_transform('odom', 'base', 3.0, tf(0, 0, 0))    # a looped bag
    assert buf.stamps('base') == [3.0] and buf.time_resets == 1 and buf.epoch('base') != epoch


def test_planar_reduction_of_body_and_optical_camera_frames():
    """The camera's planar pose in the base frame: its position and the heading of its
    optical axis: x of a body frame, z of an optical frame (REP-103)."""
    base_from_body = tf(0.3, -0.1, 0.5, yaw=0.6)          # camera_link, 0.6 rad to the left
    optical = base_from_body @ Transform.make((0, 0, 0), OPTICAL_FROM_BODY_Q)
    # the optical frame's z axis is the body frame's x axis
    np.testing.assert_allclose(rotation_matrix(optical.rotation)[:, 2],
                               rotation_matrix(base_from_body.rotation)[:, 0], atol=1e-12)
    for t, name, want_optical in ((base_from_body, 'camera_link', False),
                                  (optical, 'camera_optical_frame', True),
                                  (optical, 'camera_color_frame', True),   # by the axes
                                  (optical, 'front_camera_optical', True)):
        assert is_optical_frame(t, name) is want_optical
        np.testing.assert_allclose(camera_planar_pose(t, name), [0.3, -0.1, 0.6], atol=1e-12)
    # an optical name promises z forward: a body frame named so looks along its z axis
    np.testing.assert_allclose(camera_planar_pose(tf(0.3, -0.1, 0.5, pitch=-1.0, yaw=0.6),
                                                  'cam_optical_frame'),
                               [0.3, -0.1, 0.6 + math.pi - 2 * math.pi], atol=1e-9)
    # tilted 30 deg down, and upside down: the same heading
    for roll, pitch in ((0.0, 0.5), (math.pi, 0.0), (math.pi, -0.4)):
        body = tf(0.3, -0.1, 0.5, roll=roll, pitch=pitch, yaw=0.6)
        opt = body @ Transform.make((0, 0, 0), OPTICAL_FROM_BODY_Q)
        np.testing.assert_allclose(camera_planar_pose(body, 'cam'), [0.3, -0.1, 0.6],
                                   atol=1e-9)
        np.testing.assert_allclose(camera_planar_pose(opt, 'cam'), [0.3, -0.1, 0.6], atol=1e-9)
    # an optical frame rolled on its side (portrait camera): its name says it
    side_opt = tf(0.0, 0.0, 0.0, roll=math.pi / 2, yaw=0.6) \
        @ Transform.make((0, 0, 0), OPTICAL_FROM_BODY_Q)
    np.testing.assert_allclose(camera_planar_pose(side_opt, 'cam_optical_frame'),
                               [0, 0, 0.6], atol=1e-9)
    assert not is_optical_frame(side_opt, 'cam')
    # looking straight down: no heading
    with pytest.raises(ValueError, match='vertical'):
        camera_planar_pose(tf(0, 0, 1, pitch=math.pi / 2), 'cam_link')
    # a planar pose round trip
    np.testing.assert_allclose(planar_pose(Transform.from_planar([1.0, 2.0, -2.5])),
                               [1.0, 2.0, -2.5], atol=1e-12)


def drive(t):
    """A robot driving an arc: odom_from_base (x, y, yaw) at t."""
    return np.array([math.sin(0.3 * t) * 2.0, 1.0 - math.cos(0.3 * t) * 2.0,
                     wrap_angle(0.3 * t - 3.0)])


def test_tf_odometry_samples_feed_an_odometry_buffer_like_the_topic():
    """odom -> base_footprint (dynamic) -> base_link (static): one sample per new stamp, equal to
    the odometry the same motion gives; time going back restarts the OdometryBuffer."""
    buf = TransformBuffer()
    footprint_from_base = tf(0.0, 0.0, 0.1)    # base_link 10 cm above the footprint
    buf.set_transform('base_footprint', 'base_link', 0.0, footprint_from_base, static=True)
    source = TfOdometry(buf, 'odom', 'base_link')
    with pytest.raises(UnknownFrameError, match="'odom'"):
        source.new_samples()     # no odometry yet
    with pytest.raises(TransformError, match='static'):
        TfOdometry(buf, 'base_footprint', 'base_link').new_samples()
    odom = OdometryBuffer()
    fed = []
    for i in range(30):
        t = 100.0 + 0.05 * i
        buf.set_transform('odom', 'base_footprint', t, Transform.from_planar(drive(t)))
        buf.set_transform('map', 'odom', t + 1.0, tf(5, 5, 0))   # another edge: not a sample
        for stamp, pose in source.new_samples():
            fed.append(stamp)
            assert not odom.add(stamp, pose)
    assert fed == pytest.approx([100.0 + 0.05 * i for i in range(30)])
    for t in (100.0, 100.5, 101.4):
        np.testing.assert_allclose(odom.pose_at(t), drive(t), atol=1e-9)
    np.testing.assert_allclose(odom.delta(100.0, 101.45), compose(inverse(drive(100.0)),
                                                                  drive(101.45)), atol=1e-9)
    assert source.new_samples() == []      # nothing new
    # a looped bag: the edge restarts and so does the odometry buffer's time base
    buf.set_transform('odom', 'base_footprint', 50.0, Transform.from_planar(drive(50.0)))
    samples = source.new_samples()
    assert [s for s, _ in samples] == [50.0]
    assert odom.add(*samples[0]) and odom.time_resets == 1


def test_tf_odometry_with_two_dynamic_edges_waits_for_both():
    buf = TransformBuffer()
    source = TfOdometry(buf, 'odom', 'base_link')
    for s in (1.0, 2.0, 3.0):
        buf.set_transform('odom', 'base_footprint', s, tf(s, 0, 0))
    buf.set_transform('base_footprint', 'base_link', 1.5, tf(0, 0, 0))
    buf.set_transform('base_footprint', 'base_link', 2.5, tf(0, 1, 0))
    samples = source.new_samples()
    assert [s for s, _ in samples] == [1.5, 2.0, 2.5]
    np.testing.assert_allclose(samples[1][1], [2.0, 0.5, 0.0], atol=1e-12)
    buf.set_transform('base_footprint', 'base_link', 3.5, tf(0, 1, 0))
    assert [s for s, _ in source.new_samples()] == [3.0]
