"""simulate-bag --hfov-deg: bags recorded with another camera. Real rendering, small:
camera_info states the recorded images' field of view, the maze crop has the right geometry,
and a maze camera wider than ViZDoom's is refused."""
import math
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from dmn_localizer.bags.read import camera_intrinsics, open_bag
from dmn_localizer.localization.camera import hfov_from_intrinsics
from dmn_localizer.sim.camera import centre_crop_resize
from dmn_localizer.sim.world import make_world

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _cli(*args):
    return subprocess.run([sys.executable, '-m', 'dmn_localizer', *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)


def _camera_info_and_image(bag):
    from rosbags.highlevel import AnyReader
    from pathlib import Path
    from dmn_localizer.bags import messages as M
    with AnyReader([Path(bag)], default_typestore=M.TYPESTORE) as r:
        got = {}
        for c, _, data in r.messages():
            if c.topic in ('/camera/camera_info', '/camera/image_raw') and c.topic not in got:
                got[c.topic] = r.deserialize(data, c.msgtype)
    return got['/camera/camera_info'], got['/camera/image_raw']


@pytest.mark.parametrize('domain', ['mazes', 'rooms'])
def test_bag_with_another_camera_states_it(tmp_path, domain):
    out = tmp_path / 'b'
    r = _cli('simulate-bag', '--domain', domain, '--hfov-deg', 60, '--image-size', 64,
             '--mapping-frames', 4, '--localization-frames', 2, '--out', out)
    assert r.returncode == 0, r.stderr
    for run in ('mapping', 'localization'):
        info, image = _camera_info_and_image(out / run)
        assert (info.width, info.height, image.width, image.height) == (64, 64, 64, 64)
        assert hfov_from_intrinsics(info.width, info.k[0]) == pytest.approx(60.0, abs=1e-6)
        assert (info.k[2], info.k[5]) == (32.0, 32.0)
        # vertical: rooms square pixels; mazes the 4:3 frame zoomed (tan(vfov/2) = 0.75 tan 30)
        tan_v = 32.0 / info.k[4]
        want = math.tan(math.radians(30)) * (1.0 if domain == 'rooms' else 0.75)
        assert tan_v == pytest.approx(want, rel=1e-9)
        # what replay reads from the bag: 60 deg
        reader = open_bag(str(out / run))
        try:
            width, fx = camera_intrinsics(reader, '/camera/image_raw')
        finally:
            reader.close()
        assert hfov_from_intrinsics(width, fx) == pytest.approx(60.0, abs=1e-6)


def _corr(a, b):
    return float(np.corrcoef(a.astype(np.float64).ravel(), b.astype(np.float64).ravel())[0, 1])


def _centre(img, fraction_w, fraction_h):
    """The whole-pixel centre region of a square image spanning the given shares."""
    n = img.shape[0]
    x0, y0 = (int(round(n / 2 * (1 - f))) for f in (fraction_w, fraction_h))
    return img[y0:n - y0, x0:n - x0]


def test_maze_crop_is_the_centre_of_the_native_view():
    """The 60 deg image (rendered at a larger screen: 96 px needs 256x192) is the centre of the
    90 deg view of the same poses; wrong geometries (another width, the full height, no crop)
    match clearly worse."""
    t30 = math.tan(math.radians(30))
    regions = {'60 deg': (t30, t30), 'full height': (t30, 1.0), 'full frame': (1.0, 1.0),
               '70 deg': (math.tan(math.radians(35)),) * 2,
               '50 deg': (math.tan(math.radians(25)),) * 2}
    with make_world('mazes', 3, 128) as w90, make_world('mazes', 3, 96, hfov_deg=60) as w60:
        assert (w60._renderer._game.get_screen_width(),
                w60._renderer._game.get_screen_height()) == (256, 192)
        poses = w90.sample_free_poses(np.random.default_rng(0), 8)
        wide, narrow = w90.render(poses), w60.render(poses)
    assert narrow.shape == (8, 96, 96, 3)
    small = [cv2.resize(im, (32, 32), interpolation=cv2.INTER_AREA) for im in narrow]
    corr = {name: np.array([_corr(cv2.resize(_centre(w, fw, fh), (32, 32),
                                             interpolation=cv2.INTER_AREA), s)
                            for w, s in zip(wide, small)])
            for name, (fw, fh) in regions.items()}
    assert corr['60 deg'].min() > 0.95, corr
    for name, c in corr.items():
        if name != '60 deg':
            assert corr['60 deg'].mean() > c.mean() + 0.1, (name, corr)


def test_room_camera_is_the_centre_of_the_native_view():
    """pybullet renders the asked field of view: the 60 deg image is the centre of the 75 deg
    view (square pixels: the same share of width and height), not another part of it."""
    share = {deg: math.tan(math.radians(deg)) / math.tan(math.radians(37.5))
             for deg in (30, 25, 35)}
    with make_world('rooms', 3, 128) as w75, make_world('rooms', 3, 64, hfov_deg=60) as w60:
        poses = w75.sample_free_poses(np.random.default_rng(0), 6)
        wide, narrow = w75.render(poses), w60.render(poses)
    small = [cv2.resize(im, (32, 32), interpolation=cv2.INTER_AREA) for im in narrow]
    corr = {deg: np.array([_corr(cv2.resize(_centre(w, f, f), (32, 32),
                                            interpolation=cv2.INTER_AREA), s)
                           for w, s in zip(wide, small)])
            for deg, f in share.items()}
    assert corr[30].min() > 0.95, corr
    assert corr[30].mean() > max(corr[25].mean(), corr[35].mean()) + 0.05, corr


def test_native_field_of_view_asked_for_is_the_default_camera():
    """--hfov-deg 90 on a maze at 64 px: the default images and camera (no crop)."""
    with make_world('mazes', 5, 64) as a, make_world('mazes', 5, 64, hfov_deg=90) as b:
        poses = a.sample_free_poses(np.random.default_rng(1), 4)
        assert np.array_equal(a.render(poses), b.render(poses))
        assert a.camera == b.camera


def test_centre_crop_resize_is_area_resampling():
    rng = np.random.default_rng(2)
    img = rng.integers(0, 256, size=(120, 160, 3), dtype=np.uint8)
    # the whole frame: OpenCV's area resize
    assert np.array_equal(centre_crop_resize(img, 1.0, 64, 64),
                          cv2.resize(img, (64, 64), interpolation=cv2.INTER_AREA))
    # a whole-pixel window: each output pixel is the mean of its 2x2 input block (rounded)
    blocks = img[30:90, 40:120].astype(np.float64).reshape(30, 2, 40, 2, 3).mean(axis=(1, 3))
    assert np.abs(centre_crop_resize(img, 0.5, 40, 30) - blocks).max() <= 0.5
    # a fractional window: an output pixel is the mean of the input area it covers
    ramp = np.tile(np.arange(160, dtype=np.uint8)[None, :, None], (120, 1, 3))
    x0 = 160 * (1 - 0.577) / 2
    step = 160 * 0.577 / 23
    want = x0 + step * (np.arange(23) + 0.5) - 0.5      # pixel i holds value i over [i, i + 1)
    got = centre_crop_resize(ramp, 0.577, 23, 7)
    assert np.abs(got[3, :, 0] - want).max() <= 0.5 + 1e-9
    flat = np.full((120, 160, 3), 77, np.uint8)
    assert (centre_crop_resize(flat, 0.577, 50, 50) == 77).all()


def test_cameras_a_maze_cannot_give_are_refused(tmp_path):
    for bad, words in ((['--hfov-deg', 100], 'only a narrower'),
                       (['--hfov-deg', 5, '--image-size', 512], 'largest ViZDoom screen'),
                       (['--hfov-deg', 0], 'within [1, 180)'),
                       (['--hfov-deg', 'nan'], 'within [1, 180)')):
        out = tmp_path / 'x'
        r = _cli('simulate-bag', '--domain', 'mazes', '--out', out, *bad)
        assert r.returncode == 2, (bad, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1 and words in r.stderr, (bad, r.stderr)
        assert not (out / 'mapping').exists()
    r = _cli('simulate-bag', '--domain', 'rooms', '--out', tmp_path / 'y', '--hfov-deg', 180)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
