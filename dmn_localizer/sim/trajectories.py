"""Plausible collision-free camera trajectories and random context views in a world.

A trajectory is a random walk of a robot driving forward with smooth heading changes: each
step turns by a small random angle and moves ``step_m`` forward; a step that would come closer
than the world's clearance to a wall or obstacle (checked densely along the segment) is replaced
by the feasible turn closest to the intended heading, turning in place when nothing else fits.
The camera looks along the direction of travel.
"""
import numpy as np

from dmn_localizer.geometry import wrap_angle


def _segment_free(spec, a, b, spacing=0.1):
    n = max(2, int(np.ceil(np.hypot(*(b - a)) / spacing)) + 1)
    pts = a[None, :] + np.linspace(0.0, 1.0, n)[:, None] * (b - a)[None, :]
    return bool(np.all(spec.is_free(pts)))


def random_trajectory(spec, rng, length, step_m=1.5, turn_sigma=np.radians(20.0)):
    """Poses ``(length, 3)`` float32 of one collision-free trajectory in world ``spec``.

    spec: a :class:`~dmn_localizer.sim.world.WorldSpec`; rng: numpy Generator; step_m: metres
    driven per step; turn_sigma: std of the heading change per step (radians).
    """
    start = spec.sample_free_poses(rng, 1)[0].astype(np.float64)
    pos, yaw = start[:2], float(start[2])
    poses = [(pos[0], pos[1], yaw)]
    candidates = np.radians(np.array([0, 15, -15, 30, -30, 45, -45, 60, -60, 90, -90, 120,
                                      -120, 150, -150, 180], dtype=np.float64))
    while len(poses) < length:
        want = yaw + rng.normal(0.0, turn_sigma)
        moved = False
        for dy in candidates:
            h = want + dy
            nxt = pos + step_m * np.array([np.cos(h), np.sin(h)])
            if _segment_free(spec, pos, nxt):
                pos, yaw, moved = nxt, float(wrap_angle(h)), True
                break
        if not moved:   # cornered: turn in place
            yaw = float(wrap_angle(yaw + np.pi / 2))
        poses.append((pos[0], pos[1], yaw))
    return np.asarray(poses, dtype=np.float32)


def sample_views(spec, rng, n_contexts, n_trajectories, length, step_m=None):
    """Random context poses ``(n_contexts, 3)`` and trajectories ``(n_trajectories, length, 3)``.

    step_m defaults to half a maze block for mazes and 2 m for rooms.
    """
    if step_m is None:
        step_m = 0.5 * spec.layout_resolution_m if spec.domain == 'mazes' else 2.0
    contexts = spec.sample_free_poses(rng, n_contexts)
    trajs = np.stack([random_trajectory(spec, rng, length, step_m)
                      for _ in range(n_trajectories)]) if n_trajectories else \
        np.zeros((0, length, 3), np.float32)
    return contexts, trajs
