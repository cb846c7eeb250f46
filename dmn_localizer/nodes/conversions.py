"""ROS message <-> numpy conversions (the only place that knows message layouts).

Images are read with plain numpy from ``msg.data`` and ``msg.step`` (exact, no copy) and
decoded/resized with OpenCV; cv_bridge is not needed. Unsupported or malformed input raises
:class:`ImageError` with a one-line reason: callers warn (throttled) and skip the frame.
"""
import math

import cv2
import numpy as np
from geometry_msgs.msg import Pose, PoseArray, Quaternion

from dmn_localizer.geometry import quaternion_to_yaw, yaw_to_quaternion

# encoding -> (channels, dtype, conversion to RGB or None)
_ENCODINGS = {
    'rgb8': (3, np.uint8, None),
    'bgr8': (3, np.uint8, cv2.COLOR_BGR2RGB),
    'rgba8': (4, np.uint8, cv2.COLOR_RGBA2RGB),
    'bgra8': (4, np.uint8, cv2.COLOR_BGRA2RGB),
    'mono8': (1, np.uint8, cv2.COLOR_GRAY2RGB),
    '8UC3': (3, np.uint8, None),
}


class ImageError(ValueError):
    """An image message that cannot be used (the message says why, in one line)."""


def image_to_rgb(msg):
    """sensor_msgs/Image -> (H, W, 3) uint8 RGB array."""
    enc = msg.encoding
    if enc not in _ENCODINGS:
        raise ImageError(f'unsupported image encoding {enc!r} (supported: '
                         f'{", ".join(sorted(_ENCODINGS))})')
    ch, dtype, conversion = _ENCODINGS[enc]
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    if h <= 0 or w <= 0:
        raise ImageError(f'empty image ({w}x{h})')
    row = w * ch * np.dtype(dtype).itemsize
    data = np.frombuffer(bytes(msg.data) if not isinstance(msg.data, (bytes, bytearray,
                                                                      memoryview))
                         else msg.data, np.uint8)
    if step < row or data.size < step * (h - 1) + row:
        raise ImageError(f'truncated image data: {data.size} bytes for {w}x{h} {enc} '
                         f'(step {step})')
    rows = np.lib.stride_tricks.as_strided(data, shape=(h, row), strides=(step, 1))
    img = rows.reshape(h, w, ch) if ch > 1 else rows.reshape(h, w)
    if conversion is not None:
        return cv2.cvtColor(np.ascontiguousarray(img), conversion)
    return img.copy()  # own, writable memory (the message buffer is read-only)


def compressed_to_rgb(msg):
    """sensor_msgs/CompressedImage (jpeg/png) -> (H, W, 3) uint8 RGB array."""
    buf = np.frombuffer(bytes(msg.data), np.uint8)
    bgr = cv2.imdecode(buf, cv2.IMREAD_COLOR) if buf.size else None
    if bgr is None:
        raise ImageError(f'compressed image ({msg.format or "unknown format"}, {buf.size} '
                         'bytes) could not be decoded')
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def resize_square(img, size):
    """Resize an RGB image to size x size (area interpolation when shrinking)."""
    if img.shape[0] == size and img.shape[1] == size:
        return img
    shrink = img.shape[0] > size or img.shape[1] > size
    return cv2.resize(img, (size, size),
                      interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def stamp_to_sec(stamp):
    return stamp.sec + stamp.nanosec * 1e-9


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
