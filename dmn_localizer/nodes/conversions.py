"""ROS message <-> numpy conversions (the only place that knows message layouts).

Images are read with plain numpy from ``msg.data`` and ``msg.step`` (exact) through
:mod:`dmn_localizer.images`; cv_bridge is not needed. Unsupported or malformed input raises
:class:`~dmn_localizer.images.ImageError`: callers warn (throttled) and skip the frame.
"""
import math

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import Pose, PoseArray, Quaternion

from dmn_localizer.geometry import quaternion_to_yaw, yaw_to_quaternion
from dmn_localizer.images import compressed_to_rgb, raw_to_rgb


def image_to_rgb(msg):
    """sensor_msgs/Image -> (H, W, 3) uint8 RGB array (ImageError if unusable)."""
    return raw_to_rgb(msg.encoding, msg.height, msg.width, msg.step, msg.data)


def compressed_msg_to_rgb(msg):
    """sensor_msgs/CompressedImage -> (H, W, 3) uint8 RGB array (ImageError if unusable)."""
    return compressed_to_rgb(msg.data, msg.format)


def stamp_to_sec(stamp):
    return stamp.sec + stamp.nanosec * 1e-9


def checked_stamp_to_sec(stamp):
    """builtin_interfaces/Time -> seconds; ValueError for a stamp no clock produces
    (negative, or nanosec >= 1e9)."""
    if stamp.sec < 0 or not 0 <= stamp.nanosec < 1_000_000_000:
        raise ValueError(f'invalid stamp (sec {stamp.sec}, nanosec {stamp.nanosec})')
    return stamp_to_sec(stamp)


def sec_to_stamp(seconds):
    """Seconds -> builtin_interfaces/Time, clamped to what the message can hold."""
    from builtin_interfaces.msg import Time
    ns = min(max(int(round(seconds * 1e9)), 0), (2 ** 31 - 1) * 1_000_000_000 + 999_999_999)
    return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


def pose_to_xyyaw(pose):
    """geometry_msgs/Pose -> (x, y, yaw); raises ValueError when a field is not finite."""
    p, q = pose.position, pose.orientation
    vals = (p.x, p.y, p.z, q.x, q.y, q.z, q.w)
    if not all(math.isfinite(v) for v in vals):
        raise ValueError('pose has non-finite values')
    if q.x * q.x + q.y * q.y + q.z * q.z + q.w * q.w < 1e-12:
        raise ValueError('pose has a zero quaternion')
    return np.array([p.x, p.y, quaternion_to_yaw(q.x, q.y, q.z, q.w)])


def xyyaw_to_pose(xyyaw):
    x, y, yaw = (float(v) for v in xyyaw)
    qx, qy, qz, qw = yaw_to_quaternion(yaw)
    pose = Pose()
    pose.position.x, pose.position.y = x, y
    pose.orientation = Quaternion(x=qx, y=qy, z=qz, w=qw)
    return pose


def poses_to_pose_array(poses, frame_id, stamp):
    """(N, 3) poses -> geometry_msgs/PoseArray."""
    msg = PoseArray()
    msg.header.frame_id = frame_id
    msg.header.stamp = stamp
    msg.poses = [xyyaw_to_pose(p) for p in poses]
    return msg


def diagnostic_array(statuses, stamp):
    """A DiagnosticArray of ``statuses`` ``[(name, level, message, values)]``: ``level`` 0, 1, 2
    (OK, WARN, ERROR), a one-line ``message``, ``values`` a dict (stringified); hardware id
    ``dmn_localizer``, as diagnostic_updater sets one per node."""
    levels = (DiagnosticStatus.OK, DiagnosticStatus.WARN, DiagnosticStatus.ERROR)
    msg = DiagnosticArray()
    for name, level, message, values in statuses:
        status = DiagnosticStatus(name=name, hardware_id='dmn_localizer', level=levels[level],
                                  message=message)
        status.values = [KeyValue(key=k, value=str(v)) for k, v in values.items()]
        msg.status.append(status)
    msg.header.stamp = stamp
    return msg
