"""The common :class:`World` interface of the simulated domains and its factory.

A world is a pure-numpy :class:`~dmn_localizer.sim.spec.WorldSpec` (layout, obstacles,
appearance parameters, all derived from ``(domain, seed)``) plus a renderer that draws it at
exact camera poses. Poses are ``(x, y, yaw)`` in metres/radians in the world frame: origin at
the lower-left corner, the world spans ``[0, 40] x [0, 40]`` m, yaw counter-clockwise from +x
(:mod:`dmn_localizer.geometry`).

Use :func:`make_world` for one world; the dataset builder renders many worlds with one renderer
(:func:`make_renderer`), which is much faster for ViZDoom (many maps in one WAD).
"""
import numpy as np

from dmn_localizer.sim.mazes import generate_maze, MazeRenderer
from dmn_localizer.sim.rooms import generate_room, RoomRenderer
from dmn_localizer.sim.spec import DOMAINS


def generate_spec(domain, seed):
    """The :class:`~dmn_localizer.sim.spec.WorldSpec` of world ``seed`` of ``domain``
    (deterministic)."""
    if domain == 'mazes':
        return generate_maze(seed)
    if domain == 'rooms':
        return generate_room(seed)
    raise ValueError(f'unknown domain {domain!r}; valid: {", ".join(DOMAINS)}')


def make_renderer(domain, specs, image_size=32, tmpdir=None, hfov_deg=None):
    """A renderer for the worlds ``specs`` (all of ``domain``): ``select(i)`` picks world i,
    ``render(poses (P,3)) -> (P,H,W,3) uint8``, ``camera``, ``close()``. ``hfov_deg``: another
    camera's horizontal field of view (default: the domain's own; mazes: only narrower)."""
    if domain == 'mazes':
        return MazeRenderer(specs, image_size=image_size, tmpdir=tmpdir, hfov_deg=hfov_deg)
    if domain == 'rooms':
        return RoomRenderer(specs, image_size=image_size, hfov_deg=hfov_deg)
    raise ValueError(f'unknown domain {domain!r}; valid: {", ".join(DOMAINS)}')


class World:
    """One simulated world with its renderer.

    Attributes: ``domain``, ``seed``, ``size_m`` (40.0), ``layout`` ((G, G) bool occupancy,
    True = occupied, row 0 = y near 0), ``layout_resolution_m``, ``camera``
    (:class:`~dmn_localizer.sim.camera.CameraModel`), ``spec``
    (:class:`~dmn_localizer.sim.spec.WorldSpec`).
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

    def render_depth(self, poses):
        """Depth images ``(P, H, W)`` float32 (m along the optical axis, NaN: none) registered
        to :meth:`render`'s images: the simulated depth camera of
        :mod:`~dmn_localizer.sim.depth_camera`."""
        from dmn_localizer.sim.depth_camera import layout_depth_images
        if self.domain == 'mazes':
            from dmn_localizer.sim.mazes import ceiling_height_m
            top, ceiling = ceiling_height_m(self.spec), True
        else:
            from dmn_localizer.sim.rooms import WALL_HEIGHT_M
            top, ceiling = WALL_HEIGHT_M, False
        return layout_depth_images(self.layout, self.layout_resolution_m, poses, self.camera,
                                   top, ceiling, max_depth_m=1.5 * self.size_m)

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


def make_world(domain, seed, image_size=32, hfov_deg=None):
    """World ``seed`` of ``domain`` ('mazes' or 'rooms') rendering ``image_size``^2 RGB images
    (with a camera of ``hfov_deg`` horizontal field of view; default: the domain's own)."""
    if domain not in DOMAINS:
        raise ValueError(f'unknown domain {domain!r}; valid: {", ".join(DOMAINS)}')
    spec = generate_spec(domain, seed)
    return World(spec, make_renderer(domain, [spec], image_size, hfov_deg=hfov_deg))
