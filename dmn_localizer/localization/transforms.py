"""A transform tree, as tf2's buffer, for what the localizer reads from TF (no rclpy).

The localizer takes ``odom -> base`` (its odometry, as AMCL does) and the camera's mounting
``base -> camera`` from TF. No tf2_ros is needed: :mod:`dmn_localizer.nodes.tf_listener` fills a
:class:`TransformBuffer` from ``tf2_msgs/TFMessage`` on ``/tf`` and ``/tf_static``.

- Transforms are 3D (:class:`Transform`: translation and unit quaternion ``(x, y, z, w)``),
  stored per edge ``parent -> child`` (each frame has one parent, as in tf2). Static edges keep
  one transform valid at all times; dynamic edges keep a bounded, time-ordered history.
- ``lookup(target, source, stamp)`` gives ``target_from_source`` (it maps coordinates in
  ``source`` into ``target``, tf2's ``lookupTransform(target, source, time)``), composed along
  the tree through the frames' nearest common ancestor. Dynamic edges are interpolated between
  the neighbouring stamps: translation linearly, rotation by slerp. ``stamp=None`` is tf2's
  time 0: the latest time all the chain's dynamic edges cover.
- Errors are one-line :class:`TransformError` subclasses: :class:`UnknownFrameError`,
  :class:`ConnectivityError` (no chain between the frames) and :class:`ExtrapolationError`
  (the stamp is outside an edge's history by more than ``max_extrapolation_s``).
- :func:`planar_pose` reduces a transform to the planar ``(x, y, yaw)`` of the filter; and
  :func:`camera_planar_pose` gives a camera's, looking along z for a REP-103 optical frame,
  along x for a body frame (see there for how it tells them apart).
"""
import bisect
import math
from dataclasses import dataclass

import numpy as np


class TransformError(ValueError):
    """A lookup that cannot be answered (the message says why, on one line)."""


class UnknownFrameError(TransformError):
    pass


class ConnectivityError(TransformError):
    pass


class ExtrapolationError(TransformError):
    pass


# ----------------------------------------------------------------------- quaternions (x, y, z, w)
def quaternion_multiply(a, b):
    ax, ay, az, aw = a
    bx, by, bz, bw = b
    return np.array([aw * bx + ax * bw + ay * bz - az * by,
                     aw * by - ax * bz + ay * bw + az * bx,
                     aw * bz + ax * by - ay * bx + az * bw,
                     aw * bw - ax * bx - ay * by - az * bz])


def quaternion_rotate(q, v):
    """Vector ``v`` (3,) rotated by the unit quaternion ``q``."""
    u, w = np.asarray(q[:3]), q[3]
    v = np.asarray(v, np.float64)
    t = 2.0 * np.cross(u, v)
    return v + w * t + np.cross(u, t)


def rotation_matrix(q):
    """3x3 rotation matrix of the unit quaternion ``q``."""
    x, y, z, w = q
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


def slerp(q0, q1, a):
    """Spherical interpolation from ``q0`` (a = 0) to ``q1`` (a = 1), the shorter way."""
    q0, q1 = np.asarray(q0, np.float64), np.asarray(q1, np.float64)
    d = float(np.dot(q0, q1))
    if d < 0.0:            # q and -q are the same rotation: take the short arc
        q1, d = -q1, -d
    if d > 0.9995:         # nearly equal: linear, renormalised
        q = q0 + a * (q1 - q0)
        return q / np.linalg.norm(q)
    theta = math.acos(min(d, 1.0))
    s = math.sin(theta)
    return (math.sin((1.0 - a) * theta) * q0 + math.sin(a * theta) * q1) / s


@dataclass(frozen=True)
class Transform:
    """A rigid 3D transform ``a_from_b``: translation (3,) and unit quaternion (x, y, z, w)."""
    translation: np.ndarray
    rotation: np.ndarray

    @staticmethod
    def identity():
        return Transform(np.zeros(3), np.array([0.0, 0.0, 0.0, 1.0]))

    @staticmethod
    def make(translation, rotation):
        """A checked transform: ValueError for non-finite values or a zero quaternion (the
        quaternion is normalised, as tf2 does)."""
        t = np.asarray(translation, np.float64).reshape(3)
        q = np.asarray(rotation, np.float64).reshape(4)
        if not (np.isfinite(t).all() and np.isfinite(q).all()):
            raise ValueError('transform not finite')
        q = q / max(float(np.abs(q).max()), 1e-300)   # no overflow in the norm
        n = float(np.linalg.norm(q))
        if n < 1e-9:
            raise ValueError('rotation quaternion is zero')
        return Transform(t, q / n)

    @staticmethod
    def from_planar(pose):
        """The transform of a planar pose ``(x, y, yaw)`` (z = 0, rotation about +z)."""
        x, y, yaw = (float(v) for v in pose)
        return Transform(np.array([x, y, 0.0]),
                         np.array([0.0, 0.0, math.sin(yaw / 2.0), math.cos(yaw / 2.0)]))

    def __matmul__(self, other):
        """``a_from_b @ b_from_c = a_from_c``."""
        return Transform(self.translation + quaternion_rotate(self.rotation, other.translation),
                         quaternion_multiply(self.rotation, other.rotation))

    def inverse(self):
        q = self.rotation * np.array([-1.0, -1.0, -1.0, 1.0])
        return Transform(-quaternion_rotate(q, self.translation), q)

    def matrix(self):
        """4x4 homogeneous matrix."""
        m = np.eye(4)
        m[:3, :3] = rotation_matrix(self.rotation)
        m[:3, 3] = self.translation
        return m

    def interpolate(self, other, a):
        """``self`` at a = 0, ``other`` at a = 1: translation linear, rotation slerp."""
        return Transform(self.translation + a * (other.translation - self.translation),
                         slerp(self.rotation, other.rotation, a))


# ----------------------------------------------------------------------- planar reduction
def planar_pose(transform, forward_axis=0):
    """``(x, y, yaw)`` of a transform ``a_from_b``: b's origin in a's x-y plane (the height is
    dropped) and the heading in that plane of b's axis ``forward_axis`` (0: x, 2: z). ValueError
    when that axis is (nearly) vertical, so that it has no heading."""
    f = rotation_matrix(transform.rotation)[:, forward_axis]
    if not (math.hypot(f[0], f[1]) >= 1e-6):
        raise ValueError(f"its {'xyz'[forward_axis]} axis is vertical: no heading")
    pose = np.array([float(transform.translation[0]), float(transform.translation[1]),
                     math.atan2(f[1], f[0])])
    if not np.isfinite(pose).all():
        raise ValueError('not finite')
    return pose


OPTICAL_SUFFIXES = ('_optical', '_optical_frame')
VERTICAL_COS = math.cos(math.radians(45.0))


def is_optical_frame(base_from_camera, frame_id=''):
    """Whether the camera frame is a REP-103 optical frame (z forward, x right, y down) rather
    than a body frame (x forward, y left, z up). A name ending in ``_optical`` or
    ``_optical_frame`` says it is (REP-103's naming); otherwise the axes do: a frame whose y
    axis is within 45 deg of the base's vertical is an optical frame of an upright (or upside
    down) camera, named otherwise; any other is a body frame. (A body frame rolled 90 deg onto
    its side has its y axis vertical too: give such a camera an optical frame, or
    ``camera_offset_*``.)"""
    if frame_id.endswith(OPTICAL_SUFFIXES):
        return True
    return bool(abs(rotation_matrix(base_from_camera.rotation)[2, 1]) > VERTICAL_COS)


# a camera mounted farther from the base than this is a broken transform (camera_offset_*'s
# range)
MAX_MOUNTING_M = 10.0


def camera_planar_pose(base_from_camera, frame_id=''):
    """The camera's planar pose in the base frame ``(x, y, yaw)``, as the model takes it: its
    position and the heading of its optical axis projected on the base's x-y plane (the z axis
    of an optical frame, the x axis of a body frame: :func:`is_optical_frame`). ValueError
    when the camera looks straight up or down or sits more than ``MAX_MOUNTING_M`` from the
    base."""
    pose = planar_pose(base_from_camera, 2 if is_optical_frame(base_from_camera, frame_id) else 0)
    if not np.abs(pose[:2]).max() <= MAX_MOUNTING_M:
        raise ValueError(f'the camera sits {np.abs(pose[:2]).max():.3g} m from the base '
                         f'(more than {MAX_MOUNTING_M:g} m)')
    return pose


# ----------------------------------------------------------------------- the buffer
class _Edge:
    """``parent -> child``: one static transform or a time-ordered history."""
    __slots__ = ('parent', 'static', 'stamps', 'transforms', 'epoch')

    def __init__(self, parent, static, epoch):
        self.parent, self.static, self.epoch = parent, static, epoch
        self.stamps, self.transforms = [], []


def _frame(name):
    return name[1:] if name.startswith('/') else name   # tf2 ignores a leading slash


class TransformBuffer:
    """Static and time-stamped transforms between named frames (see the module docstring).

    ``cache_time_s``: how long a dynamic edge's history reaches back from its newest stamp
    (tf2's default 10 s); ``max_history``: at most this many stamps per edge. A dynamic
    transform older than its edge's newest by more than ``max_backward_s`` means time went
    back (a looped bag, a reset simulator): the edge starts again from it (counted in
    :attr:`time_resets`; its :meth:`epoch` changes). Within that, a late transform is
    inserted in order."""

    def __init__(self, cache_time_s=10.0, max_history=1000, max_backward_s=1.0):
        self.cache_time = float(cache_time_s)
        self.max_history = int(max_history)
        self.max_backward = float(max_backward_s)
        self._edges = {}          # child frame -> _Edge
        self.time_resets = 0
        self._epochs = 0          # edges (re)started so far

    def __contains__(self, frame):
        frame = _frame(frame)
        return frame in self._edges or any(e.parent == frame for e in self._edges.values())

    def frames(self):
        return sorted({*self._edges, *(e.parent for e in self._edges.values())})

    def clear(self):
        self._edges.clear()

    def epoch(self, child):
        """Changes whenever the edge to ``child`` starts a new history (None: no such edge)."""
        edge = self._edges.get(_frame(child))
        return None if edge is None else edge.epoch

    def _new_epoch(self):
        self._epochs += 1
        return self._epochs

    def set_transform(self, parent, child, stamp, transform, static=False):
        """Store ``parent_from_child`` at ``stamp`` (seconds; ignored for a static one).
        ValueError for empty or equal frame names or a non-finite stamp."""
        parent, child = _frame(parent), _frame(child)
        if not parent or not child:
            raise ValueError('empty frame_id or child_frame_id')
        if parent == child:
            raise ValueError(f'{child!r} cannot be its own parent')
        edge = self._edges.get(child)
        if edge is None or edge.parent != parent or edge.static != static:
            edge = self._edges[child] = _Edge(parent, static, self._new_epoch())
        if static:
            edge.stamps, edge.transforms = [0.0], [transform]
            return
        stamp = float(stamp)
        if not math.isfinite(stamp):
            raise ValueError('stamp not finite')
        stamps = edge.stamps
        if stamps and stamp < stamps[-1] - self.max_backward:
            self.time_resets += 1
            edge.epoch = self._new_epoch()
            stamps.clear()
            edge.transforms.clear()
        i = bisect.bisect_left(stamps, stamp)
        if i < len(stamps) and stamps[i] == stamp:
            edge.transforms[i] = transform
        else:
            stamps.insert(i, stamp)
            edge.transforms.insert(i, transform)
        newest = stamps[-1]
        drop = bisect.bisect_left(stamps, newest - self.cache_time)
        drop = max(drop, len(stamps) - self.max_history)
        if drop > 0:
            del stamps[:drop]
            del edge.transforms[:drop]

    # ------------------------------------------------------------------ lookups
    def _path_to_root(self, frame):
        """[frame, parent, grandparent, ...] up to the root (a cycle is cut where it closes)."""
        path, seen = [frame], {frame}
        while frame in self._edges:
            frame = self._edges[frame].parent
            if frame in seen:
                break
            path.append(frame)
            seen.add(frame)
        return path

    def chain(self, target, source):
        """``(up, down)``: the frames from ``source`` up to the common ancestor (exclusive)
        and from ``target`` up to it (exclusive); each frame stands for its edge to its
        parent. UnknownFrameError, ConnectivityError."""
        target, source = _frame(target), _frame(source)
        for f in (target, source):
            if f not in self:
                raise UnknownFrameError(f'frame {f!r} does not exist (known: '
                                        f'{", ".join(self.frames()) or "none"})')
        up, down = self._path_to_root(source), self._path_to_root(target)
        common = set(down)
        for i, f in enumerate(up):
            if f in common:
                return up[:i], down[:down.index(f)]
        raise ConnectivityError(f'no chain between {target!r} and {source!r}: they are in '
                                f'trees rooted at {down[-1]!r} and {up[-1]!r}')

    def dynamic_edges(self, target, source):
        """The child frames of the chain's dynamic edges (see :meth:`chain`)."""
        up, down = self.chain(target, source)
        return [f for f in up + down if not self._edges[f].static]

    def latest_common_time(self, target, source):
        """The newest stamp all the chain's dynamic edges cover (None: all static)."""
        edges = self.dynamic_edges(target, source)
        if not edges:
            return None
        return min(self._edges[f].stamps[-1] for f in edges)

    def stamps(self, child, after=None):
        """The stamps of the dynamic edge to ``child`` (all, or those later than ``after``),
        in time order ([] for a static one)."""
        edge = self._edges.get(_frame(child))
        if edge is None or edge.static:
            return []
        return edge.stamps[bisect.bisect_right(edge.stamps, after):] if after is not None \
            else list(edge.stamps)

    def time_range(self, child):
        """(oldest, newest) stamp of the dynamic edge to ``child``."""
        stamps = self._edges[_frame(child)].stamps
        return stamps[0], stamps[-1]

    def _edge_at(self, child, stamp, tolerance):
        edge = self._edges[child]
        if edge.static:
            return edge.transforms[0]
        stamps = edge.stamps
        if stamp >= stamps[-1] or stamp <= stamps[0]:
            i = -1 if stamp >= stamps[-1] else 0
            gap = abs(stamp - stamps[i])
            if gap > tolerance:
                raise ExtrapolationError(
                    f'{edge.parent} -> {child} at {stamp:.3f} s: TF has it from '
                    f'{stamps[0]:.3f} s to {stamps[-1]:.3f} s (extrapolation by {gap:.3f} s)')
            return edge.transforms[i]
        i = bisect.bisect_right(stamps, stamp)
        t0, t1 = stamps[i - 1], stamps[i]
        return edge.transforms[i - 1].interpolate(edge.transforms[i], (stamp - t0) / (t1 - t0))

    def lookup(self, target, source, stamp=None, max_extrapolation_s=0.0):
        """``target_from_source`` at ``stamp`` (seconds; None: :meth:`latest_common_time`).
        TransformError subclasses when it cannot be answered (see the module docstring)."""
        up, down = self.chain(target, source)
        if stamp is None:
            stamp = self.latest_common_time(target, source)
        ancestor_from_source = Transform.identity()
        for f in up:
            ancestor_from_source = self._edge_at(f, stamp, max_extrapolation_s) \
                @ ancestor_from_source
        ancestor_from_target = Transform.identity()
        for f in down:
            ancestor_from_target = self._edge_at(f, stamp, max_extrapolation_s) \
                @ ancestor_from_target
        return ancestor_from_target.inverse() @ ancestor_from_source
