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
    def __init__(self, max_age_s=30.0, max_extrapolation_s=0.2, max_jump_m=0.0,
                 max_speed=0.0):
        self.max_age = max_age_s
        self.max_extrapolation = max_extrapolation_s
        self.max_jump = max_jump_m     # 0 = no jump detection
        self.max_speed = max_speed     # m/s the robot can drive between two messages
        self._stamps = deque()
        self._poses = deque()
        self.time_resets = 0           # resets because time went backwards
        self.jumps = 0                 # resets because the pose jumped
        self.rejected = 0              # non-finite poses ignored
        self.last_reset = ''           # why the last reset happened (one line)

    def __len__(self):
        return len(self._stamps)

    def reset(self):
        self._stamps.clear()
        self._poses.clear()

    @property
    def latest_stamp(self):
        return self._stamps[-1] if self._stamps else None

    def add(self, stamp, odom_from_base):
        """Add a pose. The buffer restarts from this pose, and True is returned (with the
        reason in :attr:`last_reset`), when the stamp is earlier than the latest (time went
        back: bag loop, simulator reset) or when the pose moved more than
        ``max_jump_m + max_speed * dt`` since the previous one, dt seconds earlier (an
        odometry jump: the motion across it is not trusted; the speed term keeps messages
        lost while the node was busy from counting as jumps).
        Returns False otherwise; a non-finite pose or stamp is ignored (counted in
        :attr:`rejected`)."""
        pose = np.asarray(odom_from_base, np.float64)
        stamp = float(stamp)
        if pose.shape != (3,) or not np.isfinite(pose).all() or not np.isfinite(stamp):
            self.rejected += 1
            return False
        reset = False
        if self._stamps and stamp < self._stamps[-1]:
            self.time_resets += 1
            self.last_reset = (f'time went backwards ({self._stamps[-1]:.3f} s -> '
                               f'{stamp:.3f} s)')
            reset = True
        elif self._stamps and self.max_jump > 0:
            d = float(np.hypot(*(pose[:2] - self._poses[-1][:2])))
            if d > self.max_jump + self.max_speed * (stamp - self._stamps[-1]):
                self.jumps += 1
                self.last_reset = f'jumped {d:.3g} m at {stamp:.3f} s'
                reset = True
        if reset:
            self.reset()
        self._stamps.append(stamp)
        self._poses.append(pose)
        while self._stamps and self._stamps[0] < stamp - self.max_age:
            self._stamps.popleft()
            self._poses.popleft()
        return reset

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
