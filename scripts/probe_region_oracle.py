"""What do four contexts of a maze allow on the paper's sparse protocol? The global
localization of `eval` (Nc = 4 contexts, 5 random query views in random order, K = 2048
particles uniform over the world, success = x-y error < 8.94 m), with the observation model
replaced or helped by an oracle: one that knows each view's appearance region (the k x k
blocks of a maze that share wall texture, floor, ceiling and light;
:mod:`dmn_localizer.sim.mazes`), or one that knows the true pose where a query sees what a
context saw:

* ``grid``: a particle whose region is the query's (when a context shares the query's region),
  or no context's region (when none does), scores 0, any other ``log(--eps)``: the region
  knowledge with the regions' true extents, which no context shows;
* ``cameras``: the same decision from what the contexts show of the regions by their
  viewpoints: within ``--near`` m of a context of the query's region and not within
  ``--far`` m of another context (or, when no context shares the region, not within ``--far`` m
  of any);
* ``walls``: the same with the contexts' seen wall points (each of 16 columns at its
  ray-cast depth, the region of the floor in front of it) instead of their viewpoints;
* ``truth``: a Gaussian about the true pose (``--truth-sigma`` m and ten times as many
  degrees): the best an observation model can tell, to see what the filter itself allows;
* ``seen``: the same for a query view that sees what a context saw (as ``--overlap-m``
  defines it; 1 m unless given), no evidence from the others: what a perfect comparison of
  views could tell from the map;
* ``views``: ``seen`` plus what not seeing tells: for a query view that sees nothing a context
  saw, the particles whose view would see some of it get ``--eps``;
* ``model``: the learned model alone (``--model``), contexts summed; ``model+grid`` and
  ``model+walls``: the sum of the model's log-likelihood and that oracle's term;
  ``model+seen``: the model's scores on the query views that see what a context saw, no
  evidence from the others (what a perfect gate on the model's evidence would give);
  ``seen+model``: ``seen`` on the views that see what a context saw, the model on the others
  (a perfect comparison where views overlap, the model as it is elsewhere).

    python scripts/probe_region_oracle.py --data data/mazes/test --oracle walls --near 8 --far 2

``--mode tracking`` starts from the protocol's tracking belief instead (K = 256, a 6 m / 30 deg
Gaussian about a perturbed mean) and prints the rmse per step; ``--overlap-m`` also splits the
episodes by whether a query view sees what a context saw (at least ``--overlap-columns`` of its
16 columns' wall points within that distance of a context's), printing each part's figures.

    python scripts/probe_region_oracle.py --data data/mazes/test --oracle seen --mode tracking \
        --queries trajectory --overlap-m 2 --overlap-columns 2

Probes for docs/experiments.md (2026-12-06, thirteenth session: the regions; 2026-12-07,
twenty-second: what is seen): the oracles read the simulator's world specification, which no
localizer has. Each run takes one to four minutes on one thread (200 episodes).
"""
import argparse
import math

import numpy as np
import torch

from dmn_localizer.data.column_depth import column_depths
from dmn_localizer.data.dataset import open_dataset
from dmn_localizer.evaluation.protocol import EvalConfig, initial_belief, SUCCESS_M
from dmn_localizer.evaluation.run import protocol_episodes
from dmn_localizer.filter import ParticleFilter
from dmn_localizer.filter.rollout import make_batch
from dmn_localizer.geometry import compose
from dmn_localizer.model.column_warp import column_tangents
from dmn_localizer.sim.mazes import generate_maze

ORACLES = ('grid', 'cameras', 'walls', 'truth', 'seen', 'views', 'model', 'model+grid',
           'model+walls', 'model+seen', 'seen+model')
WALL_COLUMNS = 16
WALL_FRONT = 0.95   # a wall point's region: that of the floor just in front of the wall


class Regions:
    """The region of x-y points (..., 2) in one maze world."""

    def __init__(self, world_seed):
        spec = generate_maze(world_seed)
        self.region = torch.as_tensor(spec.params['region'])
        self.res = float(spec.layout_resolution_m)

    def __call__(self, xy):
        g = self.region.shape[0]
        col = (xy[..., 0] / self.res).long().clamp(0, g - 1)
        row = (xy[..., 1] / self.res).long().clamp(0, g - 1)
        return self.region[row, col]


def wall_points(dataset, world_seed, poses, hfov_deg):
    """The points (N * J, 2) the views at ``poses`` (N, 3) see, one per column."""
    layout, res, origin = dataset.layout(world_seed)
    depth = torch.as_tensor(column_depths(layout, res, poses.numpy(), WALL_COLUMNS, hfov_deg,
                                          origin=origin, max_depth_m=40.0)) * WALL_FRONT
    local = torch.stack([depth, depth * column_tangents(WALL_COLUMNS, hfov_deg),
                         torch.zeros_like(depth)], -1)                   # (N, J, 3)
    return compose(poses[:, None].double(), local)[..., :2].reshape(-1, 2).float()


def oracle_ok(args, particles_xy, regions, query_xy, anchors):
    """Which particles (K,) the oracle keeps: ``anchors`` (P, 2) are the points whose region
    stands for what the contexts show (``cameras`` / ``walls``)."""
    q, own = regions(query_xy), regions(anchors)
    same = own == q
    if args.oracle.endswith('grid'):
        p = regions(particles_xy)
        if same.any():
            return p == q
        return ~(p[:, None] == own[None]).any(-1)
    dist = (particles_xy[:, None] - anchors[None]).norm(dim=-1)      # (K, P)
    if same.any():
        return (dist[:, same] < args.near).any(-1) & ~(dist[:, ~same] < args.far).any(-1)
    return ~(dist < args.far).any(-1)


@torch.no_grad()
def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--data', required=True, help='a mazes dataset (simulate --domain mazes)')
    ap.add_argument('--oracle', choices=ORACLES, required=True)
    ap.add_argument('--model', default='models/aligned_mazes_e2e')
    ap.add_argument('--episodes', type=int, default=200)
    ap.add_argument('--eps', type=float, default=0.01,
                    help='likelihood of a particle the oracle rejects (kept: 1)')
    ap.add_argument('--near', type=float, default=8.0, help='metres (cameras, walls)')
    ap.add_argument('--far', type=float, default=2.0, help='metres (cameras, walls)')
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--truth-sigma', type=float, default=1.0, help='metres (truth)')
    ap.add_argument('--mode', choices=('global', 'tracking'), default='global')
    ap.add_argument('--particles', type=int, default=0,
                    help="K (default: the protocol's, 2,048 global / 256 tracking)")
    ap.add_argument('--queries', choices=('random', 'trajectory'), default='random',
                    help="the query views: eval's --queries")
    ap.add_argument('--overlap-m', type=float, default=0.0,
                    help='split the episodes by view overlap at this distance (0: no split)')
    ap.add_argument('--overlap-columns', type=int, default=4)
    args = ap.parse_args()
    torch.set_num_threads(1)
    cfg = EvalConfig(seed=args.seed, queries=args.queries)
    dataset = open_dataset(args.data)
    hfov = float(dataset.manifest['camera']['hfov_deg'])
    episodes, _ = protocol_episodes(dataset, args.episodes, cfg)   # eval's episodes
    model = None
    if 'model' in args.oracle:
        from dmn_localizer.model.io import load_model
        model = load_model(args.model)
        model.set_context_pooling('sum')
        print(f"model: {args.model} ({model.card['model_id']})")
    rng = np.random.default_rng(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    k = args.particles or (cfg.k_global if args.mode == 'global' else cfg.k_tracking)
    overlap_m = args.overlap_m or 1.0    # what "sees what a context saw" means here
    errors, overlaps = [], []
    for ep in episodes:
        regions = Regions(ep.world_seed)
        batch = make_batch([ep], cfg.contexts, rng, 0.0, cfg.steps)
        cp, qp = batch.context_poses[0], batch.query_poses[0]
        overlap = args.overlap_m > 0 or args.oracle in ('seen', 'views', 'model+seen',
                                                        'seen+model')
        walls = (wall_points(dataset, ep.world_seed, cp, hfov)   # what the contexts saw
                 if overlap or args.oracle.endswith('walls') else None)
        anchors = walls if args.oracle.endswith('walls') else cp[:, :2]
        seen = (query_overlaps(dataset, ep.world_seed, walls, qp, hfov, overlap_m,
                               args.overlap_columns) if overlap else None)
        if args.overlap_m > 0:
            overlaps.append(bool(seen.any()))
        pf = ParticleFilter(cfg.filter_config(), initial_belief(batch, args.mode, k, cfg, gen),
                            generator=gen)
        if model is not None:
            m = model.build_map(batch.context_images, batch.context_poses)
        err = []
        for t in range(cfg.steps):
            if t:
                pf.predict(batch.odometry[:, t])
            ll = torch.zeros(k)
            speaks = model_speaks(args.oracle, seen is not None and bool(seen[t]))
            if model is not None and speaks:
                q = model.encode_query(batch.query_images[:, t])
                ll = model.log_likelihood(m, q, pf.particles, chunk=128)[0]
            if args.oracle == 'views' and not seen[t]:
                sees = query_overlaps(dataset, ep.world_seed, walls, pf.particles[0].double(),
                                      hfov, overlap_m, args.overlap_columns)
                ll = torch.where(sees, math.log(args.eps), 0.0)
            elif args.oracle == 'truth' or (args.oracle in ('seen', 'views', 'seen+model')
                                            and seen[t]):
                d = pf.particles[0] - qp[t]
                yaw = torch.atan2(torch.sin(d[:, 2]), torch.cos(d[:, 2]))
                ll = -0.5 * ((d[:, :2] ** 2).sum(-1) / args.truth_sigma ** 2
                             + (yaw / math.radians(10 * args.truth_sigma)) ** 2)
            elif args.oracle not in ('model', 'model+seen', 'seen+model'):
                ok = oracle_ok(args, pf.particles[0, :, :2], regions, qp[t, :2], anchors)
                ll = ll + torch.where(ok, 0.0, math.log(args.eps))
            pf.update(ll[None])
            err.append(float((pf.estimate()[0, :2] - qp[t, :2]).norm()))
            if t < cfg.steps - 1:
                pf.resample()
        errors.append(err)
    errors = np.array(errors)
    report(f'{args.oracle}, {args.mode}', errors, args.mode, cfg.steps)
    if overlaps:
        overlaps = np.array(overlaps)
        report(f'  {overlaps.sum()} episodes whose queries see what a context saw',
               errors[overlaps], args.mode, cfg.steps)
        report(f'  {(~overlaps).sum()} episodes whose queries do not', errors[~overlaps],
               args.mode, cfg.steps)


def model_speaks(oracle, seen):
    """Whether the model scores a query view (``seen``: it sees what a context saw): always,
    but only where it sees it for ``model+seen`` and only where it does not for
    ``seen+model`` (the oracle speaks there)."""
    if oracle == 'model+seen':
        return seen
    if oracle == 'seen+model':
        return not seen
    return True


def query_overlaps(dataset, world_seed, seen, query_poses, hfov, overlap_m, columns):
    """Which query views (T,) see what a context saw: at least ``columns`` of their
    columns' wall points within ``overlap_m`` of one of the contexts' wall points ``seen``
    (:func:`wall_points`)."""
    own = wall_points(dataset, world_seed, query_poses, hfov).reshape(len(query_poses), -1, 2)
    near = (own[:, :, None] - seen[None, None]).norm(dim=-1).min(-1).values < overlap_m
    return near.sum(-1) >= columns


def report(what, errors, mode, steps):
    """One line: global success per step, or the tracking rmse per step and the share of
    episodes within 3 m at the last."""
    if len(errors) == 0:
        print(f'{what}: no episodes')
    elif mode == 'global':
        print(f'{what} ({len(errors)} episodes): global success@1..{steps} '
              + ' / '.join(f'{100 * x:.1f}%' for x in (errors < SUCCESS_M).mean(0)))
    else:
        print(f'{what} ({len(errors)} episodes): tracking rmse@1..{steps} '
              + ' / '.join(f'{x:.2f}' for x in np.sqrt((errors ** 2).mean(0)))
              + f' m; within 3 m at {steps}: {100 * (errors[:, -1] < 3.0).mean():.1f}%')


if __name__ == '__main__':
    main()
