"""Keyframe selection for mapping: keep a view only where the map does not already have one.

A new context is added when the camera is farther than ``min_distance`` from every existing
context, or turned more than ``min_angle`` relative to the nearest existing context.
"""
import numpy as np

from dmn_localizer.geometry import wrap_angle


def is_new_keyframe(pose, context_poses, min_distance, min_angle):
    """pose (3,), context_poses (N, 3) -> True if pose should become a new context."""
    if len(context_poses) == 0:
        return True
    d = np.hypot(context_poses[:, 0] - pose[0], context_poses[:, 1] - pose[1])
    nearest = int(np.argmin(d))
    if d[nearest] > min_distance:
        return True
    return abs(float(wrap_angle(context_poses[nearest, 2] - pose[2]))) > min_angle
