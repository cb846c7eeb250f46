"""The common :class:`World` interface of the simulated domains and its factory.

A world is a pure-numpy :class:`WorldSpec` (layout, obstacles, appearance parameters, all
derived from ``(domain, seed)``) plus a renderer that draws it at exact camera poses. Poses are
``(x, y, yaw)`` in metres/radians in the world frame: origin at the lower-left corner, the world
spans ``[0, 40] x [0, 40]`` m, yaw counter-clockwise from +x (:mod:`dmn_localizer.geometry`).

Use :func:`make_world` for one world; the dataset builder renders many worlds with one renderer
(:func:`make_renderer`), which is much faster for ViZDoom (many maps in one WAD).
"""
import logging
from dataclasses import dataclass, field

import cv2
import numpy as np

from dmn_localizer.geometry import WORLD_SIZE_M

log = logging.getLogger(__name__)

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


def generate_spec(domain, seed):
    """The :class:`WorldSpec` of world ``seed`` of ``domain`` (deterministic)."""
    if domain == 'mazes':
        from dmn_localizer.sim.mazes import generate_maze
        return generate_maze(seed)
    if domain == 'rooms':
        from dmn_localizer.sim.rooms import generate_room
        return generate_room(seed)
    raise ValueError(f'unknown domain {domain!r}; valid: {", ".join(DOMAINS)}')


def make_renderer(domain, specs, image_size=32, tmpdir=None):
    """A renderer for the worlds ``specs`` (all of ``domain``): ``select(i)`` picks world i,
    ``render(poses (P,3)) -> (P,H,W,3) uint8``, ``camera``, ``close()``."""
    if domain == 'mazes':
        from dmn_localizer.sim.mazes import MazeRenderer
        return MazeRenderer(specs, image_size=image_size, tmpdir=tmpdir)
    if domain == 'rooms':
        from dmn_localizer.sim.rooms import RoomRenderer
        return RoomRenderer(specs, image_size=image_size)
    raise ValueError(f'unknown domain {domain!r}; valid: {", ".join(DOMAINS)}')


class World:
    """One simulated world with its renderer.

    Attributes: ``domain``, ``seed``, ``size_m`` (40.0), ``layout`` ((G, G) bool occupancy,
    True = occupied, row 0 = y near 0), ``layout_resolution_m``, ``camera``
    (:class:`~dmn_localizer.sim.camera.CameraModel`), ``spec`` (:class:`WorldSpec`).
    """

    def __init__(self, spec, renderer, index=0):
        self.spec = spec
        self._renderer = renderer
        self._index = index

    domain = property(lambda self: self.spec.domain)
    seed = property(lambda self: self.spec.seed)
    size_m = property(lambda self: self.spec.size_m)
    layout = property(lambda self: self.spec.layout)
    layout_resolution_m = property(lambda self: self.spec.layout_resolution_m)
    camera = property(lambda self: self._renderer.camera)

    def render(self, poses):
        """Render camera poses ``(P, 3)`` (x, y, yaw) -> images ``(P, H, W, 3)`` uint8 RGB."""
        poses = np.asarray(poses, dtype=np.float64).reshape(-1, 3)
        self._renderer.select(self._index)
        return self._renderer.render(poses)

    def sample_free_poses(self, rng, n):
        """``n`` random poses (n, 3) away from walls and obstacles, yaw uniform."""
        return self.spec.sample_free_poses(rng, n)

    def is_free(self, xy, clearance=None):
        return self.spec.is_free(xy, clearance)

    def close(self):
        self._renderer.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def make_world(domain, seed, image_size=32):
    """World ``seed`` of ``domain`` ('mazes' or 'rooms') rendering ``image_size``^2 RGB images."""
    if domain not in DOMAINS:
        raise ValueError(f'unknown domain {domain!r}; valid: {", ".join(DOMAINS)}')
    spec = generate_spec(domain, seed)
    return World(spec, make_renderer(domain, [spec], image_size))
