"""The localizer node's last pose across restarts: saved every 1 / ``save_pose_rate`` seconds
while the estimate changes, at deactivation and at exit; read at the first activation (the
file format: :mod:`dmn_localizer.localization.saved_pose`)."""
from pathlib import Path

import numpy as np

from dmn_localizer.localization.saved_pose import default_pose_file, load_pose, save_pose
from dmn_localizer.nodes.common import warn


class LastPose:
    """The last pose file of ``node`` (a LocalizerNode: its config, localizer and timers)."""

    def __init__(self, node):
        self.node = node
        self.timer = None
        self.unsaved = False   # an estimate newer than the saved pose

    def path(self):
        node = self.node
        if node.config.pose_file:
            return Path(node.config.pose_file)
        return default_pose_file(f'{node.get_namespace().rstrip("/")}/{node.get_name()}')

    def load(self):
        """The saved pose (mean (3,), covariance (3, 3)), or None (no usable file)."""
        node, path = self.node, self.path()
        if not path.is_file():
            return None
        try:
            frame_id, mean, cov = load_pose(path)
        except (OSError, ValueError) as exc:
            warn(node, f'saved pose not used: {exc}')
            return None
        if frame_id != node.config.global_frame_id:
            warn(node, f'saved pose not used: {path} is in frame {frame_id!r}, not '
                 f'{node.config.global_frame_id!r}')
            return None
        node.get_logger().info(f'starting from the last pose, saved in {path}')
        return mean, cov

    def schedule(self):
        """(Re)start the timer that saves the estimate every 1 / save_pose_rate seconds."""
        node = self.node
        if self.timer is not None:
            node.destroy_timer(self.timer)
            node._entities.remove(self.timer)
            self.timer = None
        if node.config.save_pose_rate > 0:
            self.timer = node.owned(node.create_timer(1.0 / node.config.save_pose_rate,
                                                      self.save))

    def save(self):
        """Save the estimate if it changed since the last save (one warning per minute when
        the file cannot be written)."""
        node = self.node
        localizer = node.localizer
        if not self.unsaved or node.config.save_pose_rate <= 0 \
                or localizer is None or not localizer.ready:
            return
        mean, cov = localizer.estimate()
        if not (np.isfinite(mean).all() and np.isfinite(cov).all()):
            return
        try:
            save_pose(self.path(), node.config.global_frame_id, mean, cov)
        except OSError as exc:
            warn(node, f'last pose not saved: {exc}', throttle_duration_sec=60.0)
            return
        self.unsaved = False
