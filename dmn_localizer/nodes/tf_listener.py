"""The localizer's TF inputs without tf2_ros: ``/tf`` and ``/tf_static`` (tf2_msgs/TFMessage)
into a :class:`~dmn_localizer.localization.transforms.TransformBuffer`.

- :class:`TfListener` subscribes as tf2_ros's listener does: ``/tf`` reliable, volatile, depth
  100; ``/tf_static`` reliable, transient local, depth 100 (late joiners get the static
  transforms). The names are absolute, as tf2_ros's; the launch files and ``dmn-localizer run``
  remap them to ``tf`` / ``tf_static`` (``<namespace>/tf``), as nav2 does.
- :class:`TfInputs` gives the localizer odometry samples ``(stamp, odom_from_base)`` from TF
  (``odom_source: tf``, AMCL's way), and the localizer and the mapper the camera's mounting
  ``base_from_camera`` (x, y, yaw).

Bad transforms (non-finite, zero quaternion, empty or equal frames, invalid stamps) are
skipped with a throttled warning; a missing chain is a throttled warning, never an error.
"""
import time

import numpy as np
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from tf2_msgs.msg import TFMessage

from dmn_localizer.localization.tf_odometry import TfOdometry
from dmn_localizer.localization.transforms import (Transform, TransformBuffer,
                                                   camera_planar_pose, is_optical_frame)
from dmn_localizer.nodes.common import warn
from dmn_localizer.nodes.conversions import checked_stamp_to_sec

TF_TOPIC, TF_STATIC_TOPIC = '/tf', '/tf_static'
TF_QOS = QoSProfile(depth=100, history=HistoryPolicy.KEEP_LAST,
                    reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE)
TF_STATIC_QOS = QoSProfile(depth=100, history=HistoryPolicy.KEEP_LAST,
                           reliability=ReliabilityPolicy.RELIABLE,
                           durability=DurabilityPolicy.TRANSIENT_LOCAL)
START_GRACE_S = 3.0   # no "not in TF" warnings in the first seconds (TF still arriving)


def transform_from_msg(t):
    """geometry_msgs/TransformStamped -> (parent, child, stamp_s, Transform); ValueError for a
    bad one."""
    stamp = checked_stamp_to_sec(t.header.stamp)
    p, q = t.transform.translation, t.transform.rotation
    return (t.header.frame_id, t.child_frame_id, stamp,
            Transform.make((p.x, p.y, p.z), (q.x, q.y, q.z, q.w)))


class TfListener:
    """Fills ``buffer`` from ``/tf`` and ``/tf_static``; ``on_tf()`` runs after each ``/tf``
    message (and each ``/tf_static`` one). :attr:`subscriptions`: the two subscriptions."""

    def __init__(self, node, buffer, on_tf=None):
        self.node, self.buffer, self.on_tf = node, buffer, on_tf
        self.received = 0
        self.subscriptions = [
            node.create_subscription(TFMessage, TF_TOPIC, lambda m: self.add(m, False), TF_QOS),
            node.create_subscription(TFMessage, TF_STATIC_TOPIC, lambda m: self.add(m, True),
                                     TF_STATIC_QOS)]

    def add(self, msg, static):
        topic = TF_STATIC_TOPIC if static else TF_TOPIC
        for t in msg.transforms:
            try:
                parent, child, stamp, transform = transform_from_msg(t)
                self.buffer.set_transform(parent, child, stamp, transform, static=static)
            except ValueError as exc:
                warn(self.node, f'{topic}: transform {t.header.frame_id!r} -> '
                     f'{t.child_frame_id!r} skipped: {exc}', throttle_duration_sec=5.0,
                     key=('tf', topic))
        self.received += 1
        if self.on_tf is not None:
            self.on_tf()


class TfInputs:
    """The localizer's inputs from TF.

    ``on_odometry(stamp, odom_from_base)``, if given, receives each new ``odom_frame ->
    base_frame`` sample (:class:`~dmn_localizer.localization.tf_odometry.TfOdometry`), in time
    order, as the odometry topic's callback would. :meth:`camera_mounting` gives
    ``base_frame -> camera frame`` as a planar pose, or None when TF has no such chain."""

    def __init__(self, node, odom_frame, base_frame, camera_frame, on_odometry=None):
        self.node = node
        self.base_frame, self.camera_frame = base_frame, camera_frame
        self.buffer = TransformBuffer()
        self.odometry = TfOdometry(self.buffer, odom_frame, base_frame)
        self.on_odometry = on_odometry
        self.started = time.monotonic()
        self.mounting = None   # the last camera mounting from TF, (frame, (x, y, yaw))
        self.listener = TfListener(node, self.buffer,
                                   self.feed_odometry if on_odometry is not None else None)

    @property
    def subscriptions(self):
        return self.listener.subscriptions

    def feed_odometry(self):
        skipped = self.odometry.skipped
        try:
            samples = self.odometry.new_samples()
        except ValueError as exc:   # TransformError included
            if time.monotonic() - self.started > START_GRACE_S:
                warn(self.node, f'odom_source tf: no odometry from TF: {exc}',
                     throttle_duration_sec=10.0, key=('tf', 'odometry'))
            return
        if self.odometry.skipped > skipped:
            warn(self.node, f'odom_source tf: odometry sample skipped: '
                 f'{self.odometry.last_skipped}', throttle_duration_sec=10.0,
                 key=('tf', 'odometry sample'))
        for stamp, odom_from_base in samples:
            self.on_odometry(stamp, odom_from_base)

    def camera_mounting(self, frame_id=None):
        """``base_from_camera`` (x, y, yaw) of the frame ``frame_id`` (empty or None: the
        configured camera frame) from TF at the latest time, or None (one warning per frame,
        after the first seconds) when TF has no chain from the base to it or the camera looks
        straight up or down."""
        frame = frame_id or self.camera_frame
        try:
            base_from_camera = self.buffer.lookup(self.base_frame, frame)
            pose = camera_planar_pose(base_from_camera, frame)
        except ValueError as exc:   # TransformError included
            if time.monotonic() - self.started < START_GRACE_S:
                return None
            warn(self.node, f'camera mounting: TF has no usable {self.base_frame} -> {frame} '
                 f'({exc}): camera_offset_* used (warned once)',
                 throttle_duration_sec=float('inf'), key=('tf', 'mounting', frame))
            return None
        if self.mounting is None or self.mounting[0] != frame \
                or not np.allclose(self.mounting[1], pose, atol=1e-6):
            axis = 'z (optical frame)' if is_optical_frame(base_from_camera, frame) \
                else 'x (body frame)'
            self.node.get_logger().info(
                f'camera mounting from TF {self.base_frame} -> {frame}: x {pose[0]:.3f} m, '
                f'y {pose[1]:.3f} m, yaw {pose[2]:.3f} rad (looking along its {axis})')
        self.mounting = (frame, pose)
        return pose
