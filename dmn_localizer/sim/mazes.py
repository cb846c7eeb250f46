"""Random mazes rendered by ViZDoom at exact camera poses.

Layout: a block maze on a ``(2n+1) x (2n+1)`` grid (n = 5..9 cells a side; odd rows/columns
are cells, the rest walls) carved by a randomized depth-first search, with extra walls removed
to make loops. The grid is stretched over the 40 m x 40 m world, so one block is ``40 / (2n+1)``
metres (2.1-3.6 m). Appearance: the maze is split into regions, each with its own wall texture,
floor/ceiling flats and light level; some wall faces get an odd texture, and decorations
(lamps, pillars, trees) stand against walls. All of it is written as a UDMF text map; many maps
go into one PWAD so that one game process renders many worlds (``set_doom_map``).

Exact pose (see ``shared/SIMULATORS.md``): ``warp X Y`` sets the position and a
``TURN_LEFT_RIGHT_DELTA`` action the yaw; ViZDoom's ANGLE is counter-clockwise from +x like ours.
"""
import logging
import math
import os
import shutil
import struct
import tempfile

import cv2
import numpy as np

from dmn_localizer.geometry import WORLD_SIZE_M
from dmn_localizer.sim.camera import camera_from_fov, centre_crop_resize
from dmn_localizer.sim.spec import domain_rng, WorldSpec
from dmn_localizer.util.atomic import write_bytes

log = logging.getLogger(__name__)

BLOCK_UNITS = 128          # map units per layout block
CEILING_UNITS = 128
VIEW_HEIGHT_UNITS = 41     # Doom player's eye height
MAX_MAPS_PER_WAD = 50
HFOV_DEG = 90.0            # Doom's horizontal field of view at 4:3
NATIVE_W, NATIVE_H = 160, 120
# ViZDoom's 4:3 screen resolutions (the field of view is HFOV_DEG at each), small to large
SCREEN_RESOLUTIONS = ((160, 120), (200, 150), (256, 192), (320, 240), (400, 300), (512, 384),
                      (640, 480), (800, 600), (1024, 768), (1280, 960), (1400, 1050),
                      (1600, 1200))

WALL_TEXTURES = ('STARTAN2', 'BRICK1', 'BROWN1', 'CEMENT1', 'COMPBLUE', 'GRAY1', 'MARBLE1',
                 'METAL', 'ROCK1', 'STONE2', 'TEKWALL4', 'WOOD1', 'BROWNGRN', 'SP_ROCK1',
                 'BIGBRIK1', 'ICKWALL3', 'PIPE2', 'SKIN2', 'ZIMMER2', 'TANROCK5')
ODD_TEXTURES = ('COMPSTA1', 'SKY1', 'MARBFACE', 'MARBFAC2', 'SW1GSTON', 'LITE5', 'DOORRED',
                'EXITDOOR', 'PANCASE1', 'SP_DUDE4')
FLOOR_FLATS = ('FLOOR0_1', 'FLAT5_4', 'GRASS1', 'FLOOR4_8', 'FLAT14', 'RROCK09', 'FLOOR7_1',
               'SLIME13', 'FLAT1', 'CEIL3_5')
CEIL_FLATS = ('CEIL1_1', 'FLAT1', 'CEIL3_5', 'FLAT18', 'CEIL5_1', 'RROCK03')
# Doom 2 decoration thing types with a single sprite frame (animated ones would make the
# pixels depend on the game tic): floor lamp, techno column, pillars, trees, candelabra,
# stalagmite. Animated wall textures and flats are avoided for the same reason.
DECORATIONS = (2028, 48, 30, 31, 32, 33, 43, 54, 35, 47)
DECORATION_RADIUS_M = 0.6  # minimum keep-out radius around a decoration (in world metres)
DIRS = ((1, 0), (0, 1), (-1, 0), (0, -1))  # (drow, dcol) of directions +y, +x, -y, -x


def _carve(n, rng, loop_fraction):
    """(2n+1, 2n+1) bool occupancy of a random maze with loops (True = wall)."""
    g = 2 * n + 1
    occ = np.ones((g, g), dtype=bool)
    seen = np.zeros((n, n), dtype=bool)
    start = (int(rng.integers(n)), int(rng.integers(n)))
    stack = [start]
    seen[start] = True
    occ[2 * start[0] + 1, 2 * start[1] + 1] = False
    while stack:
        r, c = stack[-1]
        nbrs = [(r + dr, c + dc) for dr, dc in ((1, 0), (-1, 0), (0, 1), (0, -1))
                if 0 <= r + dr < n and 0 <= c + dc < n and not seen[r + dr, c + dc]]
        if not nbrs:
            stack.pop()
            continue
        nr, nc = nbrs[int(rng.integers(len(nbrs)))]
        seen[nr, nc] = True
        occ[2 * nr + 1, 2 * nc + 1] = False
        occ[r + nr + 1, c + nc + 1] = False
        stack.append((nr, nc))
    # loops: knock out a fraction of the remaining inner walls between two cells
    walls = [(i, j) for i in range(1, g - 1) for j in range(1, g - 1)
             if occ[i, j] and (i % 2) != (j % 2)]
    k = int(round(loop_fraction * len(walls)))
    for w in rng.permutation(len(walls))[:k]:
        occ[walls[w]] = False
    return occ


def generate_maze(seed):
    """The :class:`~dmn_localizer.sim.spec.WorldSpec` of maze ``seed`` (deterministic)."""
    rng = domain_rng('mazes', seed)
    n = int(rng.integers(5, 10))
    occ = _carve(n, rng, loop_fraction=float(rng.uniform(0.08, 0.2)))
    g = occ.shape[0]
    res = WORLD_SIZE_M / g
    k = 2 if n <= 6 else 3                                   # k x k regions
    nreg = k * k
    walls = rng.choice(len(WALL_TEXTURES), size=nreg, replace=nreg > len(WALL_TEXTURES))
    floors = rng.integers(len(FLOOR_FLATS), size=nreg)
    ceils = rng.integers(len(CEIL_FLATS), size=nreg)
    lights = rng.integers(144, 256, size=nreg)
    region = (np.arange(g) * k // g)
    region = region[:, None] * k + region[None, :]           # (G, G) region of each block
    # odd wall faces: (row, col, direction) of a free block -> texture index
    free = np.argwhere(~occ)
    odd = {}
    faces = [(int(r), int(c), d) for r, c in free for d, (dr, dc) in enumerate(DIRS)
             if occ[r + dr, c + dc]]
    for i in rng.permutation(len(faces))[:max(1, len(faces) // 12)]:
        odd[faces[i]] = int(rng.integers(len(ODD_TEXTURES)))
    # decorations: against a wall of some free blocks (never in a block's middle)
    decorations = []
    for i in rng.permutation(len(faces))[:max(2, len(free) // 6)]:
        r, c, d = faces[i]
        dr, dc = DIRS[d]
        y = (r + 0.5 + 0.35 * dr) * res
        x = (c + 0.5 + 0.35 * dc) * res
        decorations.append((x, y, int(rng.choice(DECORATIONS))))
    decorations = np.array(decorations, dtype=np.float64).reshape(-1, 3)
    # a robot keeping clearance_m from everything must still pass a decoration in a corridor
    # one block wide: (0.85 res - keep_out) >= 2 clearance_m holds for every block size
    keep_out = max(DECORATION_RADIUS_M, 0.2 * res)
    obstacles = np.concatenate(
        [decorations[:, :2], np.full((len(decorations), 1), keep_out)], axis=1)
    params = dict(cells=n, region=region, walls=walls, floors=floors, ceils=ceils,
                  lights=lights, odd=odd, decorations=decorations)
    return WorldSpec(domain='mazes', seed=int(seed), layout=occ, layout_resolution_m=res,
                     obstacles=obstacles, clearance_m=0.25 * res, params=params)


def _units_per_m(spec):
    return spec.layout.shape[0] * BLOCK_UNITS / spec.size_m


def ceiling_height_m(spec):
    """Height of a maze's ceiling (and walls) above its floor, in metres."""
    return CEILING_UNITS / _units_per_m(spec)


def udmf_text(spec):
    """UDMF (``namespace = "zdoom"``) text map of a maze spec."""
    occ, p = spec.layout, spec.params
    upm = _units_per_m(spec)
    verts, vlist = {}, []

    def vid(r, c):  # vertex at block corner (row r = y, col c = x)
        if (r, c) not in verts:
            verts[(r, c)] = len(vlist)
            vlist.append((c * BLOCK_UNITS, r * BLOCK_UNITS))
        return verts[(r, c)]

    lines, sides = [], []
    region = p['region']
    # corners of the edge of block (r, c) in direction d, ordered so the block is on the right
    # Doom draws a linedef's front side on the right of v1 -> v2 (right of (dx, dy) is
    # (dy, -dx)); these corner orders keep block (r, c) on the right of its edge d (DIRS order)
    edge = {0: lambda r, c: ((r + 1, c), (r + 1, c + 1)),        # +y edge, walked +x
            1: lambda r, c: ((r + 1, c + 1), (r, c + 1)),        # +x edge, walked -y
            2: lambda r, c: ((r, c + 1), (r, c)),                # -y edge, walked -x
            3: lambda r, c: ((r, c), (r + 1, c))}                # -x edge, walked +y
    for r, c in np.argwhere(~occ):
        r, c = int(r), int(c)
        reg = int(region[r, c])
        for d, (dr, dc) in enumerate(DIRS):
            a, b = edge[d](r, c)
            if occ[r + dr, c + dc]:
                key = (r, c, d)
                tex = (ODD_TEXTURES[p['odd'][key]] if key in p['odd']
                       else WALL_TEXTURES[int(p['walls'][reg])])
                sides.append(f'sidedef{{sector={reg};texturemiddle="{tex}";}}')
                lines.append(f'linedef{{v1={vid(*a)};v2={vid(*b)};sidefront={len(sides) - 1};'
                             'blocking=true;}')
            elif d in (0, 1) and int(region[r + dr, c + dc]) != reg:
                other = int(region[r + dr, c + dc])
                sides.append(f'sidedef{{sector={reg};}}')
                sides.append(f'sidedef{{sector={other};}}')
                lines.append(f'linedef{{v1={vid(*a)};v2={vid(*b)};sidefront={len(sides) - 2};'
                             f'sideback={len(sides) - 1};twosided=true;}}')
    out = ['namespace="zdoom";']
    free = np.argwhere(~occ)
    r0, c0 = free[0]
    out.append(f'thing{{x={(c0 + 0.5) * BLOCK_UNITS:.1f};y={(r0 + 0.5) * BLOCK_UNITS:.1f};'
               'type=1;angle=0;skill1=true;skill2=true;skill3=true;skill4=true;skill5=true;'
               'single=true;}')
    for x, y, t in p['decorations']:
        out.append(f'thing{{x={x * upm:.1f};y={y * upm:.1f};type={int(t)};skill1=true;'
                   'skill2=true;skill3=true;skill4=true;skill5=true;single=true;}')
    out += [f'vertex{{x={x:.1f};y={y:.1f};}}' for x, y in vlist]
    out += lines + sides
    for i in range(len(p['walls'])):
        out.append(f'sector{{heightfloor=0;heightceiling={CEILING_UNITS};'
                   f'texturefloor="{FLOOR_FLATS[int(p["floors"][i])]}";'
                   f'textureceiling="{CEIL_FLATS[int(p["ceils"][i])]}";'
                   f'lightlevel={int(p["lights"][i])};}}')
    return '\n'.join(out) + '\n'


def write_wad(path, texts):
    """Write a PWAD with maps ``MAP01..`` holding the UDMF ``texts`` (at most 99), atomically."""
    if len(texts) > 99:
        raise ValueError('at most 99 maps per WAD')
    lumps = []
    for i, t in enumerate(texts):
        lumps += [(f'MAP{i + 1:02d}', b''), ('TEXTMAP', t.encode('ascii')), ('ENDMAP', b'')]
    data, directory, pos = [], [], 12
    for name, blob in lumps:
        directory.append(struct.pack('<ii8s', pos, len(blob), name.encode('ascii')))
        data.append(blob)
        pos += len(blob)
    write_bytes(path, struct.pack('<4sii', b'PWAD', len(lumps), pos) + b''.join(data)
                + b''.join(directory))


def crop_fraction(hfov_deg):
    """The share of the native frame's width (and height) that spans ``hfov_deg`` (a pinhole
    centre crop); ValueError unless ``0 < hfov_deg <= HFOV_DEG``."""
    if not (math.isfinite(hfov_deg) and 0.0 < hfov_deg <= HFOV_DEG):
        raise ValueError(f'field of view {hfov_deg:g} deg: mazes render ViZDoom\'s fixed '
                         f'{HFOV_DEG:g} deg view, so only a narrower one (a centre crop) is '
                         'possible')
    return math.tan(math.radians(hfov_deg) / 2.0) / math.tan(math.radians(HFOV_DEG) / 2.0)


def crop_resolution(image_size, hfov_deg):
    """The smallest ViZDoom screen resolution ``(W, H)`` whose centre crop spanning
    ``hfov_deg`` is at least ``image_size`` pixels wide and high (never upsampled);
    ValueError where none is (or the field of view is wider than the native one)."""
    f = crop_fraction(hfov_deg)
    for w, h in SCREEN_RESOLUTIONS:
        if min(w, h) * f >= image_size:
            return w, h
    w, h = SCREEN_RESOLUTIONS[-1]
    raise ValueError(f'field of view {hfov_deg:g} deg at {image_size} px: the centre crop of '
                     f'the largest ViZDoom screen ({w}x{h}) is only {int(h * f)} px high')


class MazeRenderer:
    """ViZDoom renderer of up to :data:`MAX_MAPS_PER_WAD` maze specs in one game process.

    ``select(i)`` loads map i (~5 ms), ``render(poses (P, 3)) -> (P, S, S, 3) uint8``.

    ``hfov_deg`` (default: the native :data:`HFOV_DEG`, the whole 160x120 frame resized):
    another, narrower camera; the frame is rendered at :func:`crop_resolution` and its centre
    crop spanning ``hfov_deg`` (and the same share of the height: the 4:3 frame zoomed) is
    resized to the image. ``camera`` states the intrinsics of the images either way.
    """

    def __init__(self, specs, image_size=32, tmpdir=None, depth=False, hfov_deg=None):
        import vizdoom as vzd
        if not 1 <= len(specs) <= MAX_MAPS_PER_WAD:
            raise ValueError(f'1..{MAX_MAPS_PER_WAD} mazes per renderer, got {len(specs)}')
        self.specs = list(specs)
        self.image_size = int(image_size)
        if hfov_deg is None:
            self._crop, screen, hfov = None, (NATIVE_W, NATIVE_H), HFOV_DEG
        else:
            hfov = float(hfov_deg)
            screen = crop_resolution(self.image_size, hfov)
            self._crop = crop_fraction(hfov)
        # the 4:3 frame's vertical field of view, zoomed like the horizontal one
        vfov = math.degrees(2 * math.atan(0.75 * (self._crop or 1.0)))
        self.camera = camera_from_fov(self.image_size, self.image_size, hfov, vfov_deg=vfov,
                                      height_m=VIEW_HEIGHT_UNITS / _units_per_m(specs[0]))
        self._dir = tempfile.mkdtemp(prefix='dmn_maze_', dir=tmpdir)
        wad = os.path.join(self._dir, 'mazes.wad')
        write_wad(wad, [udmf_text(s) for s in self.specs])
        game = vzd.DoomGame()
        game.set_doom_game_path(os.path.join(os.path.dirname(vzd.__file__), 'freedoom2.wad'))
        game.set_doom_scenario_path(wad)
        game.set_doom_config_path(os.path.join(self._dir, '_vizdoom.ini'))
        game.set_doom_map('MAP01')
        game.set_screen_resolution(getattr(vzd.ScreenResolution, 'RES_%dX%d' % screen))
        game.set_screen_format(vzd.ScreenFormat.RGB24)
        for setter in ('hud', 'minimal_hud', 'crosshair', 'weapon', 'decals', 'particles',
                       'effects_sprites', 'messages', 'corpses', 'screen_flashes'):
            getattr(game, f'set_render_{setter}')(False)
        game.set_depth_buffer_enabled(bool(depth))
        game.set_window_visible(False)
        game.set_sound_enabled(False)
        game.set_available_buttons([vzd.Button.TURN_LEFT_RIGHT_DELTA])
        game.set_available_game_variables([vzd.GameVariable.POSITION_X,
                                           vzd.GameVariable.POSITION_Y,
                                           vzd.GameVariable.ANGLE])
        game.set_episode_timeout(0)
        game.set_mode(vzd.Mode.PLAYER)
        game.add_game_args('+sv_cheats 1 +freelook 0 +movebob 0 +cl_bob 0 +vid_aspect 3')
        game.init()
        self._game = game
        self._angle = vzd.GameVariable.ANGLE
        self._current = None
        self.select(0)

    def select(self, index):
        """Switch to maze ``index`` of the specs given at construction."""
        if index == self._current:
            return
        self._game.set_doom_map(f'MAP{index + 1:02d}')
        self._game.new_episode()
        self._game.advance_action(10)   # the first turn commands are ignored otherwise
        self._current = index

    def _states(self, poses):
        spec = self.specs[self._current]
        upm = _units_per_m(spec)
        game = self._game
        for x, y, yaw in np.asarray(poses, dtype=np.float64):
            game.send_game_command(f'warp {x * upm:.3f} {y * upm:.3f}')
            cur = game.get_game_variable(self._angle)
            delta = (math.degrees(yaw) - cur + 180.0) % 360.0 - 180.0
            game.make_action([-delta])   # the button turns clockwise
            yield game.get_state()

    def render(self, poses):
        """Images ``(P, S, S, 3)`` uint8 at world poses ``(P, 3)`` of the selected maze."""
        s = self.image_size
        out = np.empty((len(poses), s, s, 3), dtype=np.uint8)
        for i, state in enumerate(self._states(poses)):
            if self._crop in (None, 1.0):
                out[i] = cv2.resize(state.screen_buffer, (s, s), interpolation=cv2.INTER_AREA)
            else:
                out[i] = centre_crop_resize(state.screen_buffer, self._crop, s, s)
        return out

    def render_depth(self, poses):
        """Screen depth buffers ``(P, 120, 160)`` uint8 (the screen resolution: 160x120 unless
        ``hfov_deg`` asked for more; needs ``depth=True``; for tests)."""
        return np.stack([st.depth_buffer.copy() for st in self._states(poses)])

    def read_pose(self):
        """The game's current player pose (x, y, yaw) in world units of the selected maze."""
        spec = self.specs[self._current]
        upm = _units_per_m(spec)
        import vizdoom as vzd
        g = self._game
        return (g.get_game_variable(vzd.GameVariable.POSITION_X) / upm,
                g.get_game_variable(vzd.GameVariable.POSITION_Y) / upm,
                math.radians(g.get_game_variable(vzd.GameVariable.ANGLE)))

    def close(self):
        if self._game is not None:
            self._game.close()
            self._game = None
        shutil.rmtree(self._dir, ignore_errors=True)

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass
