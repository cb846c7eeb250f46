"""What defines one simulated world, independent of any renderer: :class:`WorldSpec`, and the
seeded random streams (:func:`domain_rng`) that every world and trajectory is drawn from.

Poses are ``(x, y, yaw)`` in metres/radians in the world frame: origin at the lower-left
corner, the world spans ``[0, 40] x [0, 40]`` m (:mod:`dmn_localizer.geometry`).
"""
from dataclasses import dataclass, field

import cv2
import numpy as np

from dmn_localizer.geometry import WORLD_SIZE_M

DOMAINS = ('mazes', 'rooms')
_DOMAIN_IDS = {'mazes': 1, 'rooms': 2, 'bags': 3}
FREE_RASTER_M = 0.1
"""Resolution of the free-space distance raster used for pose sampling and collision checks."""


def domain_rng(domain, seed, stream=0):
    """A numpy Generator for ``(domain, seed, stream)``; stream 0 builds the world."""
    return np.random.default_rng([_DOMAIN_IDS[domain], int(seed), int(stream)])


@dataclass
class WorldSpec:
    """Everything that defines one world, independent of any renderer.

    layout: (G, G) bool, True = occupied (walls and objects), row 0 = y near 0, column 0 = x
    near 0, ``layout_resolution_m`` metres per cell. obstacles: (M, 3) float ``(x, y, radius)``
    in metres of round obstacles (decorations, objects). clearance_m: the minimum distance of a
    camera from any wall or obstacle. params: domain-specific appearance parameters.
    """
    domain: str
    seed: int
    layout: np.ndarray
    layout_resolution_m: float
    obstacles: np.ndarray
    clearance_m: float
    params: dict = field(default_factory=dict)
    size_m: float = WORLD_SIZE_M

    def __post_init__(self):
        self._dist = None

    @property
    def distance_map(self):
        """(R, R) float32 distance (m) of each ``FREE_RASTER_M`` raster cell to the nearest
        wall, obstacle or world border (computed once)."""
        if self._dist is None:
            r = int(round(self.size_m / FREE_RASTER_M))
            centres = (np.arange(r) + 0.5) * FREE_RASTER_M
            g = self.layout.shape[0]
            idx = np.clip((centres / self.layout_resolution_m).astype(int), 0, g - 1)
            occupied = self.layout[idx[:, None], idx[None, :]].copy()
            for x, y, rad in self.obstacles:
                d2 = (centres[None, :] - x) ** 2 + (centres[:, None] - y) ** 2
                occupied |= d2 <= rad * rad
            occupied[0, :] = occupied[-1, :] = occupied[:, 0] = occupied[:, -1] = True
            free = (~occupied).astype(np.uint8)
            self._dist = cv2.distanceTransform(free, cv2.DIST_L2, 5).astype(np.float32)
            self._dist *= FREE_RASTER_M
        return self._dist

    def clearance(self, xy):
        """Distance in metres to the nearest occupied point, for ``xy`` (..., 2) -> (...)."""
        xy = np.asarray(xy, dtype=np.float64)
        r = self.distance_map.shape[0]
        inside = np.all((xy >= 0.0) & (xy < self.size_m), axis=-1)
        ij = np.clip((xy / FREE_RASTER_M).astype(int), 0, r - 1)
        d = self.distance_map[ij[..., 1], ij[..., 0]]
        return np.where(inside, d, 0.0)

    def is_free(self, xy, clearance=None):
        """(..., 2) -> (...) bool: ``clearance`` (default ``clearance_m``) away from anything."""
        c = self.clearance_m if clearance is None else clearance
        return self.clearance(xy) >= c

    def sample_free_poses(self, rng, n):
        """``n`` uniformly random free poses (n, 3) float32, yaw uniform in [-pi, pi)."""
        out = np.zeros((0, 2))
        for _ in range(1000):
            xy = rng.uniform(0.0, self.size_m, size=(max(4 * n, 64), 2))
            out = np.concatenate([out, xy[self.is_free(xy)]])
            if len(out) >= n:
                break
        else:
            raise RuntimeError(f'{self.domain} world {self.seed}: no free space')
        yaw = rng.uniform(-np.pi, np.pi, size=n)
        return np.concatenate([out[:n], yaw[:, None]], axis=1).astype(np.float32)
