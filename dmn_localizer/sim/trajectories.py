"""Plausible collision-free camera trajectories and random context views in a world.

A trajectory is a random walk of a robot driving forward with smooth heading changes: each
step turns by a small random angle and moves ``step_m`` forward; a step that would come closer
than the world's clearance to a wall or obstacle (checked densely along the segment) is replaced
by the feasible turn closest to the intended heading, turning in place when nothing else fits.
The camera looks along the direction of travel.
"""
import numpy as np

from dmn_localizer.geometry import wrap_angle
from dmn_localizer.sim.spec import FREE_RASTER_M


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


def turn_in_place(pose, frames):
    """Poses ``(frames, 3)`` float32 of one full turn in place at ``pose`` (x, y, yaw): the
    heading steps by 360 / ``frames`` degrees a frame, from ``pose``'s own; the next frame after
    the last would face as ``pose`` does again."""
    x, y, yaw = (float(v) for v in pose)
    headings = wrap_angle(yaw + 2.0 * np.pi * np.arange(frames) / frames)
    return np.stack([np.full(frames, x), np.full(frames, y), headings], 1).astype(np.float32)


def return_route(poses, turn_frames=4):
    """``poses`` (N, 3), then a turn about in place at the last one (``turn_frames`` frames
    of 180 / ``turn_frames`` deg, as the coverage run turns) and the same route driven back:
    the poses in reverse order, each facing the opposite way. (2N + turn_frames - 1, 3)."""
    poses = np.asarray(poses)
    x, y, yaw = (float(v) for v in poses[-1])
    turn = wrap_angle(yaw + np.pi * np.arange(1, turn_frames) / turn_frames)
    about = np.stack([np.full(turn_frames - 1, x), np.full(turn_frames - 1, y), turn], 1)
    back = poses[::-1].copy()
    back[:, 2] = wrap_angle(back[:, 2] + np.pi)
    return np.concatenate([poses, about.astype(poses.dtype), back])


def _raster_route(spec, start, cell):
    """Waypoints (list of (2,) arrays) of a collision-free route from ``start`` (x, y) to the
    nearest reachable free point of layout ``cell`` (row, column): breadth-first over the
    free-space raster (points ``clearance_m`` from anything), then shortened greedily to
    straight segments that stay free. None when no point of the cell can be reached."""
    from collections import deque
    ok = spec.distance_map >= spec.clearance_m
    n = ok.shape[0]
    res, r = spec.layout_resolution_m, FREE_RASTER_M
    i0, j0 = (np.clip((np.asarray(start)[::-1] / r).astype(int), 0, n - 1))
    lo = (np.asarray(cell) * res / r).astype(int)
    hi = (np.asarray(cell) + 1) * res / r
    prev = {(i0, j0): None}
    queue = deque([(i0, j0)])
    end = None
    while queue:
        i, j = queue.popleft()
        if lo[0] <= i < hi[0] and lo[1] <= j < hi[1] and ok[i, j]:
            end = (i, j)
            break
        for di, dj in ((0, 1), (1, 0), (0, -1), (-1, 0)):
            q = (i + di, j + dj)
            if 0 <= q[0] < n and 0 <= q[1] < n and ok[q] and q not in prev:
                prev[q] = (i, j)
                queue.append(q)
    if end is None:
        return None
    chain = []
    while end is not None:
        chain.append(np.array([(end[1] + 0.5) * r, (end[0] + 0.5) * r]))
        end = prev[end]
    chain = chain[::-1]
    route, here, k = [], np.asarray(start, np.float64), 0
    while k < len(chain) - 1:   # string pulling: the farthest raster point reachable straight
        far = next((m for m in range(len(chain) - 1, k, -1)
                    if _segment_free(spec, here, chain[m])), k + 1)
        here, k = chain[far], far
        route.append(here)
    return route or [chain[-1]]


def exploring_trajectory(spec, rng, length, step_m=0.5, turn_sigma=np.radians(10.0),
                         sight_m=0.0, cover=False, max_length=None):
    """A coverage run for mapping: the robot repeatedly drives (breadth-first, along free
    layout cells) to the nearest cell it has not visited yet, so the run covers the world
    instead of circling in one region. Where a decoration blocks the straight way to the next
    cell, the robot drives around it (:func:`_raster_route`); a cell is given up only when no
    free point of it can be reached.

    sight_m: reaching a cell also visits the free cells whose centres lie within this distance
    (an open space is covered in lanes about ``2 * sight_m`` apart instead of cell by cell).
    cover: go on past ``length`` until every reachable cell has been visited once (at most
    ``max_length`` poses, default ``8 * length``); a run that covers the world in fewer than
    ``length`` poses starts a new lap, as without ``cover``.

    Returns poses ``(N, 3)`` float32: N = ``length``, or more with ``cover``.
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
    max_length = 8 * length if max_length is None else max_length
    centres_xy = np.stack(np.meshgrid((np.arange(shape[1]) + 0.5) * res,
                                      (np.arange(shape[0]) + 0.5) * res), -1)
    lap_end = None   # the pose count when every reachable cell had been visited once
    while len(poses) < length or (cover and lap_end is None and len(poses) < max_length):
        path = path_to_unvisited(cell(pos))
        if not path:  # every reachable cell seen: start a new lap
            lap_end = len(poses) if lap_end is None else lap_end
            if len(poses) >= length:
                break
            visited[:] = False
            visited[cell(pos)] = True
            path = path_to_unvisited(cell(pos))
            if not path:
                break
        for c in path:
            goal = centre(c)
            d = (goal - pos) / max(np.hypot(*(goal - pos)), 1e-9)
            side = np.array([-d[1], d[0]]) * res  # sidestep decorations near walls
            route = next(([goal + f * side] for f in (0, .1, -.1, .2, -.2, .25, -.25, .3, -.3)
                          if _segment_free(spec, pos, goal + f * side)), None)
            if route is None:   # around a decoration, on the free-space raster
                route = _raster_route(spec, pos, c)
            if route is None:
                free[c] = False  # blocked: plan around it
                break
            for goal in route:
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
            if sight_m > 0:
                visited[np.hypot(*(centres_xy - pos).transpose(2, 0, 1)) <= sight_m] = True
                if visited[path[-1]]:   # seen from here: plan to the next unseen cell
                    break
    n = length
    if cover:
        n = min(max(length, len(poses) if lap_end is None else lap_end), max_length)
    poses = poses[:n]
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
