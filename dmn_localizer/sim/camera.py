"""Pinhole camera models of the simulated cameras (numbers for a ROS ``CameraInfo``).

Both renderers are ideal pinhole cameras without distortion. The rendered frame may be resized
anisotropically to the square output image, so ``fx`` and ``fy`` may differ.
"""
import math
from dataclasses import asdict, dataclass


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
