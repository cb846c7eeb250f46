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


def random_trajectory(spec, rng, length, step_m=1.5, turn_sigma=np.radians(20.0), start=None):
    """Poses ``(length, 3)`` float32 of one collision-free trajectory in world ``spec``.

    spec: a :class:`~dmn_localizer.sim.spec.WorldSpec`; rng: numpy Generator; step_m: metres
    driven per step; turn_sigma: std of the heading change per step (radians); start: the
    first pose (3,) (default: a random free pose).
    """
    start = (spec.sample_free_poses(rng, 1)[0] if start is None else
             np.asarray(start)).astype(np.float64)
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


def exploring_trajectory(spec, rng, length, step_m=0.5, turn_sigma=np.radians(10.0)):
    """A coverage run for mapping: the robot repeatedly drives (breadth-first, along free
    layout cells) to the nearest cell it has not visited yet, so the run covers the world
    instead of circling in one region. Steps that would hit an obstacle are replaced by the
    nearest feasible heading, as in :func:`random_trajectory`.

    Returns poses ``(length, 3)`` float32.
    """
    from collections import deque
    free = ~np.asarray(spec.layout, bool)
    res = spec.layout_resolution_m
    shape = np.array(free.shape)
    visited = np.zeros_like(free)

    def cell(p):
        return tuple(np.clip((p[::-1] / res).astype(int), 0, shape - 1))

    def centre(c):
        return np.array([(c[1] + 0.5) * res, (c[0] + 0.5) * res])

    def path_to_unvisited(c0):
        prev, queue = {c0: None}, deque([c0])
        while queue:
            c = queue.popleft()
            if not visited[c]:
                path = []
                while c is not None:
                    path.append(c)
                    c = prev[c]
                return path[::-1][1:]
            for d in ((0, 1), (1, 0), (0, -1), (-1, 0)):
                n = (c[0] + d[0], c[1] + d[1])
                if 0 <= n[0] < shape[0] and 0 <= n[1] < shape[1] and free[n] and n not in prev:
                    prev[n] = c
                    queue.append(n)
        return []

    start = spec.sample_free_poses(rng, 1)[0].astype(np.float64)
    pos, yaw = start[:2], float(start[2])
    poses = [(pos[0], pos[1], yaw)]
    visited[cell(pos)] = True
    free[cell(pos)] = True
    max_turn = np.pi / 4
    while len(poses) < length:
        path = path_to_unvisited(cell(pos))
        if not path:  # every reachable cell seen: start a new lap
            visited[:] = False
            visited[cell(pos)] = True
            path = path_to_unvisited(cell(pos))
            if not path:
                break
        for c in path:
            goal = centre(c)
            d = (goal - pos) / max(np.hypot(*(goal - pos)), 1e-9)
            side = np.array([-d[1], d[0]]) * res  # sidestep decorations near walls
            goal = next((goal + f * side for f in (0, .1, -.1, .2, -.2, .25, -.25, .3, -.3)
                         if _segment_free(spec, pos, goal + f * side)), None)
            if goal is None:
                free[c] = False  # blocked: plan around it
                break
            heading = float(np.arctan2(goal[1] - pos[1], goal[0] - pos[0]))
            turn = float(wrap_angle(heading - yaw))
            for _ in range(int(abs(turn) // max_turn)):  # rotate in place, 45 deg a step
                yaw = float(wrap_angle(yaw + np.sign(turn) * max_turn))
                poses.append((pos[0], pos[1], yaw))
            yaw = heading
            n = max(1, int(round(np.hypot(*(goal - pos)) / step_m)))
            for i in range(1, n + 1):
                p = pos + (goal - pos) * i / n
                poses.append((p[0], p[1], wrap_angle(yaw + rng.normal(0.0, turn_sigma / 4))))
            pos = goal
            visited[c] = True
    poses = poses[:length]
    while len(poses) < length:
        poses.append(poses[-1])
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
