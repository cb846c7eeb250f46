"""True per-column depth of a view, ray-cast on the world's top-down layout.

Every simulated dataset stores each world's occupancy layout (walls and objects; see
:mod:`dmn_localizer.data.dataset`), and both simulated domains are worlds of vertical surfaces,
so the depth of an image column is the distance along its ray in the ground plane to the first
occupied layout cell, times ``cos`` of the ray's angle (depth along the optical axis, the
convention of :mod:`dmn_localizer.model.column_warp`). This supervises the aligned model's depth
head without rendering anything again. Decorations smaller than a layout cell are not in the
layout; a ray that leaves the layout or goes past ``max_depth_m`` gets ``max_depth_m``.
"""
import numpy as np

from dmn_localizer.model.column_warp import column_tangents


def _first_hit(layout, resolution_m, origin, x0, y0, ang, dist):
    """Index of the first occupied sample along each ray (P, J) at distances ``dist``
    (S,) or (P, J, S), and whether one was hit (outside the layout counts as occupied)."""
    g_rows, g_cols = layout.shape
    x = x0 + np.cos(ang) * dist
    y = y0 + np.sin(ang) * dist
    c = np.floor((x - origin[0]) / resolution_m).astype(np.int64)
    r = np.floor((y - origin[1]) / resolution_m).astype(np.int64)
    inside = (c >= 0) & (c < g_cols) & (r >= 0) & (r < g_rows)
    hit = ~inside | layout[r.clip(0, g_rows - 1), c.clip(0, g_cols - 1)]
    first = hit.argmax(-1)
    return first, np.take_along_axis(hit, first[..., None], -1)[..., 0]


def column_depths(layout, resolution_m, poses, columns, hfov_deg, origin=(0.0, 0.0),
                  max_depth_m=40.0, step_m=0.02):
    """Depth (P, J) float32 of ``columns`` image columns for camera poses (P, 3).

    layout: (G, G) bool, True = occupied, row 0 = y near ``origin[1]``, column 0 = x near
    ``origin[0]``, ``resolution_m`` metres per cell. Rays march in coarse steps (a quarter
    cell), then in steps of ``step_m`` inside the coarse step that first hit, so a depth is
    exact to within ``step_m`` (walls thinner than a quarter cell can be missed).
    """
    poses = np.asarray(poses, np.float64).reshape(-1, 3)
    layout = np.asarray(layout, bool)
    coarse = resolution_m / 4.0
    tan = column_tangents(columns, hfov_deg).double().numpy()               # (J,)
    cos = np.cos(np.arctan(tan))
    ang = poses[:, 2:3] + np.arctan(tan)[None]                              # (P, J)
    dist = np.arange(1, int(np.ceil(max_depth_m / coarse)) + 1) * coarse    # (S,)
    fine = np.arange(1, int(np.ceil(coarse / step_m)) + 1) * step_m         # (F,)
    out = np.empty(ang.shape, np.float32)
    for i in range(0, len(poses), 64):   # 64 views at a time bound the samples
        a = ang[i:i + 64, :, None]
        x0, y0 = poses[i:i + 64, 0, None, None], poses[i:i + 64, 1, None, None]
        first, found = _first_hit(layout, resolution_m, origin, x0, y0, a, dist)
        before = np.where(first > 0, dist[np.maximum(first - 1, 0)], 0.0)  # last free sample
        first_f, found_f = _first_hit(layout, resolution_m, origin, x0, y0, a,
                                      before[..., None] + fine)
        along = np.where(found_f, before + fine[first_f], dist[first])
        along = np.where(found, along, np.inf)
        out[i:i + 64] = np.minimum(along * cos, max_depth_m)
    return out


__all__ = ['column_depths']
