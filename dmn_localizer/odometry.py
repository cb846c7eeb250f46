"""Odometry history: the robot's odom-frame pose at any stamp, by interpolation (no rclpy).

The localizer needs the egomotion between two image stamps and ``odom_from_base`` at an image
stamp (for TF map -> odom); odometry arrives at its own rate, so poses are interpolated
linearly in x, y and along the shortest arc in yaw.
"""
import bisect
from collections import deque

import numpy as np

from dmn_localizer.geometry import relative, wrap_angle


class OdometryBuffer:
    def __init__(self, max_age_s=30.0, max_extrapolation_s=0.2):
        self.max_age = max_age_s
        self.max_extrapolation = max_extrapolation_s
        self._stamps = deque()
        self._poses = deque()

    def __len__(self):
        return len(self._stamps)

    def reset(self):
        self._stamps.clear()
        self._poses.clear()

    @property
    def latest_stamp(self):
        return self._stamps[-1] if self._stamps else None

    def add(self, stamp, odom_from_base):
        """Add a pose; a stamp earlier than the latest resets the buffer (time jumped back)
        and returns True, else False."""
        jumped = bool(self._stamps) and stamp < self._stamps[-1]
        if jumped:
            self.reset()
        self._stamps.append(float(stamp))
        self._poses.append(np.asarray(odom_from_base, np.float64))
        while self._stamps and self._stamps[0] < stamp - self.max_age:
            self._stamps.popleft()
            self._poses.popleft()
        return jumped

    def pose_at(self, stamp):
        """odom_from_base at ``stamp`` (3,), or None if the buffer does not cover it."""
        if not self._stamps:
            return None
        stamps = self._stamps
        if stamp >= stamps[-1]:
            return self._poses[-1].copy() if stamp - stamps[-1] <= self.max_extrapolation \
                else None
        if stamp < stamps[0]:
            return None
        i = bisect.bisect_right(stamps, stamp)
        t0, t1 = stamps[i - 1], stamps[i]
        p0, p1 = self._poses[i - 1], self._poses[i]
        a = 0.0 if t1 == t0 else (stamp - t0) / (t1 - t0)
        return np.array([p0[0] + a * (p1[0] - p0[0]), p0[1] + a * (p1[1] - p0[1]),
                         wrap_angle(p0[2] + a * wrap_angle(p1[2] - p0[2]))])

    def delta(self, stamp0, stamp1):
        """Egomotion from stamp0 to stamp1: base pose at stamp1 in the base frame at stamp0."""
        p0, p1 = self.pose_at(stamp0), self.pose_at(stamp1)
        if p0 is None or p1 is None:
            return None
        return relative(p0, p1)
