"""Odometry from TF: ``odom -> base`` samples out of a
:class:`~dmn_localizer.localization.transforms.TransformBuffer`, as AMCL reads its odometry
(no rclpy)."""
import math

from dmn_localizer.localization.transforms import planar_pose, TransformError


class TfOdometry:
    """Odometry samples ``(stamp, odom_from_base (x, y, yaw))`` from a :class:`TransformBuffer`:
    one per stamp of the chain's dynamic edges (``odom -> base_footprint -> base_link`` alike)
    that is newer than the last sample and covered by all of them, in time order. When time
    went back (the buffer restarted one of the chain's edges), sampling starts again from the
    new data, so the :class:`~dmn_localizer.localization.odometry.OdometryBuffer` it feeds sees
    time go back and restarts its time base, as for an odometry topic."""

    def __init__(self, buffer, odom_frame, base_frame):
        self.buffer, self.odom_frame, self.base_frame = buffer, odom_frame, base_frame
        self.last_stamp = None
        self._epochs = None
        self.skipped = 0          # samples without a planar pose (see new_samples)
        self.last_skipped = ''    # why the last one was skipped

    def new_samples(self):
        """The new samples (a list, maybe empty); TransformError when TF has no chain from
        the odometry frame to the base, or only static edges on it."""
        buf = self.buffer
        edges = buf.dynamic_edges(self.odom_frame, self.base_frame)
        if not edges:
            raise TransformError(f'{self.odom_frame} -> {self.base_frame} is static in TF: '
                                 'it gives no odometry')
        epochs = {f: buf.epoch(f) for f in edges}
        if epochs != self._epochs:
            self._epochs, self.last_stamp = epochs, None
        ranges = [buf.time_range(f) for f in edges]
        lo, hi = max(r[0] for r in ranges), min(r[1] for r in ranges)
        after = self.last_stamp
        if after is None or after < lo:
            after = math.nextafter(lo, -math.inf)   # lo included
        candidates = sorted({s for f in edges for s in buf.stamps(f, after) if s <= hi})
        samples = []
        for s in candidates:
            try:
                samples.append((s, planar_pose(buf.lookup(self.odom_frame, self.base_frame, s))))
            except ValueError as exc:   # a base turned on its side: no odometry at s
                self.skipped += 1
                self.last_skipped = f'{self.odom_frame} -> {self.base_frame} at {s:.3f} s: {exc}'
        if candidates:
            self.last_stamp = candidates[-1]
        return samples
