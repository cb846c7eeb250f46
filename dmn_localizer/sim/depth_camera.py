"""A simulated depth camera registered to the colour camera: depth images ray-cast on a
world's top-down layout (pure numpy).

Neither renderer gives a usable metric depth image (ViZDoom's depth buffer is 8-bit and
saturates a few metres away), so the simulated RGB-D camera computes one from the geometry the
worlds are made of: every occupied layout cell is a vertical prism from the floor up to the
domain's wall height, over a flat floor (and, in the mazes, a flat ceiling at the same
height). Each pixel gets the depth along the optical axis (REP-118 ``32FC1``, metres) of the
first surface its ray meets: a wall or object, else the floor or the ceiling; NaN where it
meets nothing within range (the rooms have no ceiling). Objects are prisms of the wall's
height here, whatever their rendered height.
"""
import numpy as np

from dmn_localizer.data.column_depth import column_depths


def layout_depth_images(layout, resolution_m, poses, camera, top_m, ceiling=True,
                        max_depth_m=60.0):
    """Depth images (P, H, W) float32 (m along the optical axis, NaN: no surface) of a level
    pinhole ``camera`` (:class:`~dmn_localizer.sim.camera.CameraModel`: size, field of view,
    ``cy``, ``fy``, ``height_m``) at camera poses (P, 3) in a world of ``layout``
    prisms ``top_m`` high."""
    poses = np.asarray(poses, np.float64).reshape(-1, 3)
    h, w = int(camera.height), int(camera.width)
    wall = column_depths(layout, resolution_m, poses, w, camera.hfov_deg,
                         max_depth_m=max_depth_m).astype(np.float64)          # (P, W)
    up = (camera.cy - (np.arange(h) + 0.5)) / camera.fy                      # (H,) tan, up > 0
    cam_h = float(camera.height_m)
    height = cam_h + wall[:, None, :] * up[None, :, None]                    # (P, H, W)
    on_wall = (height >= 0.0) & (height <= top_m) & (wall[:, None, :] < max_depth_m)
    with np.errstate(divide='ignore'):
        floor = np.where(up < 0, cam_h / -up, np.inf)                         # (H,)
        roof = np.where(up > 0, (top_m - cam_h) / up, np.inf) if ceiling else \
            np.full(h, np.inf)
    plane = np.minimum(floor, roof)[None, :, None]
    depth = np.where(on_wall, wall[:, None, :], plane)
    depth[~np.isfinite(depth) | (depth > max_depth_m)] = np.nan
    return depth.astype(np.float32)


def degrade(depth, rng, max_range_m=0.0, noise=0.0):
    """A real sensor's flaws on ideal depth images: multiplicative log-normal noise of sigma
    ``noise`` per pixel, and no reading (NaN) beyond ``max_range_m`` (0: unlimited)."""
    depth = np.asarray(depth, np.float32)
    if noise > 0:
        depth = depth * np.exp(noise * rng.standard_normal(depth.shape)).astype(np.float32)
    if max_range_m > 0:
        depth = np.where(depth > max_range_m, np.float32(np.nan), depth)
    return depth


__all__ = ['degrade', 'layout_depth_images']
