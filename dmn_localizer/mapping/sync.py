"""Pair camera images with poses by timestamp (pure Python, no rclpy).

Images wait in a short queue until a pose with a stamp within ``tolerance`` arrives (poses
often come later than images); each image is paired with the pose nearest in time. An image
that can no longer be matched (poses have moved past it) is dropped and counted.
"""
import bisect
from collections import deque


def nearest_within(stamps, stamp, tolerance):
    """Index of the entry of the sorted ``stamps`` nearest to ``stamp`` (the earlier one on a
    tie) if within ``tolerance``, else None."""
    i = bisect.bisect_left(stamps, stamp)
    best = None
    for j in (i - 1, i):
        if 0 <= j < len(stamps) and abs(stamps[j] - stamp) <= tolerance:
            if best is None or abs(stamps[j] - stamp) < abs(stamps[best] - stamp):
                best = j
    return best


class StampPairer:
    def __init__(self, tolerance_s, max_images=10, max_poses=500):
        self.tolerance = float(tolerance_s)
        self._images = deque(maxlen=max_images)  # (stamp, image)
        self._pose_stamps = deque(maxlen=max_poses)
        self._poses = deque(maxlen=max_poses)
        self.dropped = 0

    def reset(self):
        self._images.clear()
        self._pose_stamps.clear()
        self._poses.clear()

    def add_pose(self, stamp, pose):
        """Add a pose; returns the list of (stamp, image, pose) pairs it completes."""
        if self._pose_stamps and stamp < self._pose_stamps[-1]:
            self.reset()  # time went backwards (bag loop, sim reset): start over
        self._pose_stamps.append(stamp)
        self._poses.append(pose)
        return self._drain()

    def add_image(self, stamp, image):
        """Add an image; returns the list of (stamp, image, pose) pairs now complete."""
        if len(self._images) == self._images.maxlen:
            self.dropped += 1
        self._images.append((stamp, image))
        return self._drain()

    def _nearest_pose(self, stamp):
        return nearest_within(list(self._pose_stamps), stamp, self.tolerance)

    def _drain(self):
        pairs, waiting = [], deque(maxlen=self._images.maxlen)
        newest_pose = self._pose_stamps[-1] if self._pose_stamps else None
        for stamp, image in self._images:
            if newest_pose is None or newest_pose < stamp:
                waiting.append((stamp, image))  # a nearer pose may still come
                continue
            # poses still to come are later than newest_pose, hence farther: decide now
            j = self._nearest_pose(stamp)
            if j is None:
                self.dropped += 1
            else:
                pairs.append((stamp, image, self._poses[j]))
        self._images = waiting
        return pairs
