"""Pinhole camera models of the simulated cameras (numbers for a ROS ``CameraInfo``).

Both renderers are ideal pinhole cameras without distortion. The rendered frame may be resized
anisotropically to the square output image, so ``fx`` and ``fy`` may differ.
"""
import functools
import math
from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class CameraModel:
    """Intrinsics of an ``width x height`` image: ``K = [[fx, 0, cx], [0, fy, cy], [0, 0, 1]]``.

    ``hfov_deg``/``vfov_deg`` are the full horizontal/vertical fields of view;
    ``height_m`` is the optical centre's height above the floor in world metres.
    """
    width: int
    height: int
    hfov_deg: float
    vfov_deg: float
    fx: float
    fy: float
    cx: float
    cy: float
    height_m: float = 0.0

    @property
    def k(self):
        """Row-major 3x3 camera matrix as a 9-tuple (``CameraInfo.k``)."""
        return (self.fx, 0.0, self.cx, 0.0, self.fy, self.cy, 0.0, 0.0, 1.0)

    @property
    def p(self):
        """Row-major 3x4 projection matrix as a 12-tuple (``CameraInfo.p``)."""
        return (self.fx, 0.0, self.cx, 0.0, 0.0, self.fy, self.cy, 0.0, 0.0, 0.0, 1.0, 0.0)

    def to_dict(self):
        return asdict(self)


def camera_from_fov(width, height, hfov_deg, vfov_deg=None, height_m=0.0):
    """Camera model of a ``width x height`` image with the given fields of view.

    ``vfov_deg`` defaults to the square-pixel value for the aspect ratio ``height / width``.
    """
    th = math.tan(math.radians(hfov_deg) / 2.0)
    if vfov_deg is None:
        vfov_deg = math.degrees(2.0 * math.atan(th * height / width))
    tv = math.tan(math.radians(vfov_deg) / 2.0)
    return CameraModel(width=int(width), height=int(height), hfov_deg=float(hfov_deg),
                       vfov_deg=float(vfov_deg), fx=width / 2.0 / th, fy=height / 2.0 / tv,
                       cx=width / 2.0, cy=height / 2.0, height_m=float(height_m))


@functools.lru_cache(maxsize=16)
def _area_weights(n_in, lo, hi, n_out):
    """(n_out, n_in) weights averaging input pixels ``[i, i + 1)`` over the output pixels'
    equal parts of the window ``[lo, hi)`` (fractional edges: by overlap)."""
    edges = lo + (hi - lo) * np.arange(n_out + 1) / n_out
    left, right = edges[:-1, None], edges[1:, None]
    pix = np.arange(n_in)[None, :]
    overlap = np.clip(np.minimum(right, pix + 1) - np.maximum(left, pix), 0.0, None)
    return overlap / overlap.sum(axis=1, keepdims=True)


def centre_crop_resize(image, fraction, width, height):
    """The centre window of ``image`` (H, W, C) spanning ``fraction`` of its width and of its
    height, area-resampled to ``height x width`` (uint8).

    The window's edges may fall inside pixels (``fraction * W`` need not be whole): an output
    pixel averages the input area it covers, so the crop is exactly the asked part of a pinhole
    image: a camera with ``tan(fov / 2)`` scaled by ``fraction`` in both directions.
    """
    h, w = image.shape[:2]
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f'crop fraction must be within (0, 1], got {fraction}')
    mx, my = w * (1.0 - fraction) / 2.0, h * (1.0 - fraction) / 2.0
    wx = _area_weights(w, mx, w - mx, int(width))
    wy = _area_weights(h, my, h - my, int(height))
    rows = (wy @ image.reshape(h, -1).astype(np.float64)).reshape(-1, w, image.shape[2])
    out = np.matmul(wx, rows)                                       # (out h, out w, C)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)
