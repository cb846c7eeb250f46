"""One sparse-localization episode (paper Section III): the contract between data and model.

Letters: N contexts, T query steps, H x W images. Poses are ``(x, y, yaw)`` in metres/radians
in the world's metric frame (origin at the world's lower-left corner, the world spans
``[0, world_size] x [0, world_size]``; see :mod:`dmn_localizer.geometry`).
"""
from dataclasses import dataclass

import numpy as np


@dataclass
class Episode:
    context_images: np.ndarray   # (N, H, W, 3) uint8 RGB
    context_poses: np.ndarray    # (N, 3) float32 world-frame poses of the context cameras
    query_images: np.ndarray     # (T, H, W, 3) uint8 RGB
    query_poses: np.ndarray      # (T, 3) float32 true world-frame poses of the query camera
    odometry: np.ndarray         # (T, 3) float32 noisy egomotion: pose t in the frame of pose
    #                              t-1 (dx, dy, dyaw); row 0 is zero
    world_size: float = 40.0     # metres; the uniform belief covers [0, size]^2 x [-pi, pi)
    domain: str = ''             # 'mazes' | 'rooms' | 'bags'
    world_seed: int = -1         # seed that generated the world (-1: not simulated)

    def __post_init__(self):
        n, t = len(self.context_poses), len(self.query_poses)
        assert self.context_images.shape[:1] == (n,) and self.context_images.shape[-1] == 3
        assert self.query_images.shape[:1] == (t,) and self.odometry.shape == (t, 3)
        assert self.context_images.dtype == np.uint8 and self.query_images.dtype == np.uint8
