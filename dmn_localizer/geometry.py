"""Planar pose geometry shared by the whole package (numpy and torch alike).

State layout, used everywhere: a pose is ``(x, y, yaw)`` in metres and radians, yaw
counter-clockwise from the frame's +x axis (REP-103). Arrays of poses have shape ``(..., 3)``.
Frame-explicit names read right to left: ``map_from_base`` maps base coordinates into the map.

Every function works on numpy arrays and on torch tensors (it uses only operators and the
array's own ``sin``/``cos``/``atan2`` through :func:`_ops`), so the filter, the simulators and
the nodes share one implementation of angle wrapping and pose composition.
"""
import math

import numpy as np

WORLD_SIZE_M = 40.0
"""Side of the square area each environment is treated as (paper convention)."""


def _ops(a):
    if isinstance(a, np.ndarray) or np.isscalar(a):
        return np
    import torch  # only when a tensor was passed
    return torch


def wrap_angle(a):
    """Wrap angles to [-pi, pi)."""
    return (a + math.pi) % (2.0 * math.pi) - math.pi


def _stack(xp, parts):
    return xp.stack(parts, -1) if xp is np else xp.stack(parts, dim=-1)


def compose(a_from_b, b_from_c):
    """Pose composition ``a_from_c = a_from_b * b_from_c`` (broadcasting over leading dims)."""
    xp = _ops(a_from_b)
    x, y, t = a_from_b[..., 0], a_from_b[..., 1], a_from_b[..., 2]
    u, v, s = b_from_c[..., 0], b_from_c[..., 1], b_from_c[..., 2]
    c, sn = xp.cos(t), xp.sin(t)
    return _stack(xp, [x + c * u - sn * v, y + sn * u + c * v, wrap_angle(t + s)])


def inverse(a_from_b):
    """Inverse pose ``b_from_a``."""
    xp = _ops(a_from_b)
    x, y, t = a_from_b[..., 0], a_from_b[..., 1], a_from_b[..., 2]
    c, sn = xp.cos(t), xp.sin(t)
    return _stack(xp, [-c * x - sn * y, sn * x - c * y, wrap_angle(-t)])


def relative(a_from_b, a_from_c):
    """``b_from_c``: pose c expressed in the frame of pose b (both given in frame a)."""
    return compose(inverse(a_from_b), a_from_c)


def yaw_to_quaternion(yaw):
    """Quaternion ``(x, y, z, w)`` of a rotation by ``yaw`` about +z."""
    return (0.0, 0.0, math.sin(yaw / 2.0), math.cos(yaw / 2.0))


def quaternion_to_yaw(x, y, z, w):
    """Yaw of a quaternion (the rotation's heading in the x-y plane)."""
    return math.atan2(2.0 * (w * z + x * y), 1.0 - 2.0 * (y * y + z * z))
