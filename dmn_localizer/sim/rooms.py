"""Random square rooms rendered by pybullet's CPU TinyRenderer at exact camera poses.

A room fills the 40 m x 40 m world: walls one metre thick along the border, a textured floor,
four walls with different procedural textures (stripes, checkers, blotches, bricks in random
colours) and 3-8 random objects (boxes, spheres, cylinders, capsules and meshes from
``pybullet_data/random_urdfs``) in random colours. pybullet works in its own units: one unit is
:data:`M_PER_UNIT` world metres.
"""
import logging
import math
import os
import shutil
import tempfile

import cv2
import numpy as np

from dmn_localizer.geometry import WORLD_SIZE_M
from dmn_localizer.sim.camera import camera_from_fov
from dmn_localizer.sim.spec import domain_rng, WorldSpec

log = logging.getLogger(__name__)

M_PER_UNIT = 5.0           # world metres per pybullet unit (the room is 8 units wide)
WALL_M = 1.0               # wall thickness
WALL_HEIGHT_M = 20.0
CAMERA_HEIGHT_M = 2.5
FOV_DEG = 75.0             # horizontal = vertical (square image)
LAYOUT_CELLS = 40          # 1 m layout cells
TEXTURE_PX = 64
SHAPES = ('box', 'sphere', 'cylinder', 'capsule', 'mesh')


def _texture(rng):
    """A random procedural RGB texture (TEXTURE_PX, TEXTURE_PX, 3) uint8."""
    n = TEXTURE_PX
    c1, c2 = rng.integers(0, 256, size=(2, 3))
    kind = int(rng.integers(4))
    yy, xx = np.mgrid[0:n, 0:n]
    if kind == 0:      # stripes
        period = int(rng.integers(4, 17))
        mask = ((xx if rng.random() < 0.5 else yy) // period) % 2 == 0
    elif kind == 1:    # checker
        period = int(rng.integers(4, 17))
        mask = ((xx // period) + (yy // period)) % 2 == 0
    elif kind == 2:    # blotches
        small = rng.random((8, 8)).astype(np.float32)
        mask = cv2.resize(small, (n, n), interpolation=cv2.INTER_CUBIC) > 0.5
    else:              # bricks
        h = int(rng.integers(6, 13))
        row = yy // h
        mask = ((yy % h) < 2) | (((xx + (row % 2) * h) % (2 * h)) < 2)
    img = np.where(mask[..., None], c1, c2).astype(np.float32)
    img += rng.normal(0.0, 8.0, size=img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def generate_room(seed):
    """The :class:`~dmn_localizer.sim.spec.WorldSpec` of room ``seed`` (deterministic)."""
    rng = domain_rng('rooms', seed)
    size = WORLD_SIZE_M
    textures = [_texture(rng) for _ in range(5)]          # floor, walls +y, +x, -y, -x
    n_obj = int(rng.integers(3, 9))
    objects = []
    for _ in range(200):
        if len(objects) == n_obj:
            break
        r = float(rng.uniform(1.8, 4.0))
        x, y = rng.uniform(WALL_M + r + 1.0, size - WALL_M - r - 1.0, size=2)
        if all(math.hypot(x - o['x'], y - o['y']) > r + o['r'] + 3.0 for o in objects):
            yaw = float(rng.uniform(-np.pi, np.pi))
            objects.append(dict(x=float(x), y=float(y), r=r, yaw=yaw,
                                shape=SHAPES[int(rng.integers(len(SHAPES)))],
                                height=float(rng.uniform(3.0, 9.0)),
                                mesh=int(rng.integers(0, 1000)),
                                rgba=[*rng.uniform(0.1, 1.0, size=3).tolist(), 1.0]))
    res = size / LAYOUT_CELLS
    centres = (np.arange(LAYOUT_CELLS) + 0.5) * res
    layout = np.zeros((LAYOUT_CELLS, LAYOUT_CELLS), dtype=bool)
    w = int(math.ceil(WALL_M / res))
    layout[:w, :] = layout[-w:, :] = layout[:, :w] = layout[:, -w:] = True
    for o in objects:
        layout |= ((centres[None, :] - o['x']) ** 2 + (centres[:, None] - o['y']) ** 2
                   <= (o['r'] + 0.5 * res) ** 2)
    obstacles = np.array([(o['x'], o['y'], o['r']) for o in objects]).reshape(-1, 3)
    return WorldSpec(domain='rooms', seed=int(seed), layout=layout, layout_resolution_m=res,
                     obstacles=obstacles, clearance_m=WALL_M + 1.5,
                     params=dict(textures=textures, objects=objects))


class RoomRenderer:
    """pybullet TinyRenderer of room specs: ``select(i)`` builds room i (0.05-0.2 s),
    ``render(poses (P, 3)) -> (P, S, S, 3) uint8``; ``hfov_deg`` (default :data:`FOV_DEG`): the
    camera's field of view, horizontal = vertical (square pixels on the square image)."""

    def __init__(self, specs, image_size=32, hfov_deg=None):
        import pybullet as p
        import pybullet_data
        self._p = p
        self._data = pybullet_data.getDataPath()
        self.specs = list(specs)
        self.image_size = int(image_size)
        fov = FOV_DEG if hfov_deg is None else float(hfov_deg)
        if not 0.0 < fov < 180.0:
            raise ValueError(f'field of view {fov:g} deg: must be within (0, 180)')
        self.camera = camera_from_fov(self.image_size, self.image_size, fov,
                                      vfov_deg=fov, height_m=CAMERA_HEIGHT_M)
        self._client = p.connect(p.DIRECT)
        self._dir = tempfile.mkdtemp(prefix='dmn_room_')
        # pybullet's fov is the vertical one; aspect 1: the horizontal one is the same
        self._proj = p.computeProjectionMatrixFOV(fov, 1.0, 0.02, 20.0)
        self._current = None
        self.select(0)

    def _box(self, half, pos, yaw=0.0, rgba=(1, 1, 1, 1), texture=None):
        p, c = self._p, self._client
        vis = p.createVisualShape(p.GEOM_BOX, halfExtents=half, rgbaColor=rgba,
                                  physicsClientId=c)
        body = p.createMultiBody(0, -1, vis, basePosition=pos,
                                 baseOrientation=p.getQuaternionFromEuler((0, 0, yaw)),
                                 physicsClientId=c)
        if texture is not None:
            p.changeVisualShape(body, -1, textureUniqueId=texture, rgbaColor=(1, 1, 1, 1),
                                physicsClientId=c)
        return body

    def select(self, index):
        """Build room ``index`` of the specs given at construction."""
        if index == self._current:
            return
        p, c = self._p, self._client
        spec = self.specs[index]
        p.resetSimulation(physicsClientId=c)
        u = 1.0 / M_PER_UNIT
        size, wall, hgt = spec.size_m * u, WALL_M * u, WALL_HEIGHT_M * u
        tex = []
        for i, img in enumerate(spec.params['textures']):
            path = os.path.join(self._dir, f'tex{index}_{i}.png')
            cv2.imwrite(path, img[:, :, ::-1])
            tex.append(p.loadTexture(path, physicsClientId=c))
        half = size / 2.0
        self._box((half, half, 0.01), (half, half, -0.01), texture=tex[0])
        # walls +y, +x, -y, -x (each a thin box whose inner face is at the layout wall line)
        self._box((half, wall / 2, hgt / 2), (half, size - wall / 2, hgt / 2), texture=tex[1])
        self._box((wall / 2, half, hgt / 2), (size - wall / 2, half, hgt / 2), texture=tex[2])
        self._box((half, wall / 2, hgt / 2), (half, wall / 2, hgt / 2), texture=tex[3])
        self._box((wall / 2, half, hgt / 2), (wall / 2, half, hgt / 2), texture=tex[4])
        for o in spec.params['objects']:
            r, h = o['r'] * u, o['height'] * u
            pos = (o['x'] * u, o['y'] * u, h / 2)
            orn = p.getQuaternionFromEuler((0, 0, o['yaw']))
            kind = o['shape']
            if kind == 'mesh':
                urdf = os.path.join(self._data, 'random_urdfs', f'{o["mesh"]:03d}',
                                    f'{o["mesh"]:03d}.urdf')
                if os.path.exists(urdf):
                    # random_urdfs meshes are about 0.1 units across: scale to the footprint
                    body = p.loadURDF(urdf, (pos[0], pos[1], 0.0), orn, useFixedBase=True,
                                      globalScaling=r / 0.05, physicsClientId=c)
                    p.changeVisualShape(body, -1, rgbaColor=o['rgba'], physicsClientId=c)
                    continue
                kind = 'box'
            if kind == 'box':
                self._box((r * 0.7, r * 0.7, h / 2), pos, o['yaw'], o['rgba'])
                continue
            if kind == 'sphere':
                vis = p.createVisualShape(p.GEOM_SPHERE, radius=r, rgbaColor=o['rgba'],
                                          physicsClientId=c)
                pos = (pos[0], pos[1], r)
            elif kind == 'cylinder':
                vis = p.createVisualShape(p.GEOM_CYLINDER, radius=r, length=h,
                                          rgbaColor=o['rgba'], physicsClientId=c)
            else:
                vis = p.createVisualShape(p.GEOM_CAPSULE, radius=r * 0.8, length=h,
                                          rgbaColor=o['rgba'], physicsClientId=c)
                pos = (pos[0], pos[1], h / 2 + r * 0.8)
            p.createMultiBody(0, -1, vis, basePosition=pos, baseOrientation=orn,
                              physicsClientId=c)
        self._current = index

    def render(self, poses):
        """Images ``(P, S, S, 3)`` uint8 at world poses ``(P, 3)`` of the selected room."""
        p, c = self._p, self._client
        s = self.image_size
        u = 1.0 / M_PER_UNIT
        z = CAMERA_HEIGHT_M * u
        out = np.empty((len(poses), s, s, 3), dtype=np.uint8)
        for i, (x, y, yaw) in enumerate(np.asarray(poses, dtype=np.float64)):
            eye = (x * u, y * u, z)
            target = (eye[0] + math.cos(yaw), eye[1] + math.sin(yaw), z)
            view = p.computeViewMatrix(eye, target, (0, 0, 1))
            img = p.getCameraImage(s, s, view, self._proj, renderer=p.ER_TINY_RENDERER,
                                   flags=p.ER_NO_SEGMENTATION_MASK, shadow=0,
                                   lightDirection=(0.4, 0.3, 1.0), physicsClientId=c)[2]
            out[i] = np.asarray(img, dtype=np.uint8).reshape(s, s, 4)[:, :, :3]
        return out

    def close(self):
        if self._client is not None:
            try:
                self._p.disconnect(physicsClientId=self._client)
            except Exception:
                pass
            self._client = None
        shutil.rmtree(self._dir, ignore_errors=True)

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass
