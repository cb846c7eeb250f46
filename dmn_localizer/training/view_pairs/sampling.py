"""Training samples of the view-pair recipe: a query view, context views (one overlapping the
query with probability ``overlap_prob``) and candidate poses, the truth first (see
:mod:`dmn_localizer.training.view_pairs`)."""
import math

import numpy as np
import torch

from dmn_localizer.geometry import compose, relative, wrap_angle
from dmn_localizer.model.column_warp import view_overlap
from dmn_localizer.training.view_pairs.config import ViewPairConfig


def gaussian_poses(poses, std_m, std_rad, n, rng):
    """n Gaussian perturbations of each pose (B, 3) -> (B, n, 3)."""
    noise = rng.normal(size=poses.shape[:1] + (n, 3)) * np.array([std_m, std_m, std_rad])
    out = poses[:, None] + noise
    out[..., 2] = wrap_angle(out[..., 2])
    return out


def overlaps(worlds, w, q, ctx):
    """Overlap share (B, C) of query view q (B,) with views ctx (B, C) of worlds w (B,)."""
    P = torch.as_tensor(worlds.poses, dtype=torch.float32)
    D = torch.as_tensor(worlds.overlap_depth, dtype=torch.float32)
    cols = D.shape[-1]
    qp, qd = P[w, q][:, None], D[w, q][:, None]
    cp, cd = P[w[:, None], ctx], D[w[:, None], ctx]
    ov = view_overlap(cp, qp.expand_as(cp), qd.expand(cd.shape), cd, cols, worlds.hfov_deg)
    return torch.nan_to_num(ov, nan=0.0).numpy()


def sample_batch(worlds, cfg: ViewPairConfig, rng, overlap_prob=None):
    """One training batch as numpy arrays: ``world`` (B,), ``query`` (B,) view index,
    ``contexts`` (B, N) view indices, ``candidates`` (B, K, 3) with the truth at index 0,
    ``coarse`` (B, Kc, 3) likewise, and with ``mined_candidates`` a ``pool`` (B, P, 3) of
    poses uniform over the extent of each world's views."""
    B, N, K = cfg.batch_size, cfg.contexts, cfg.candidates
    overlap_prob = cfg.overlap_prob if overlap_prob is None else overlap_prob
    kc, V = worlds.n_context, worlds.poses.shape[1]
    w = rng.integers(worlds.n_worlds, size=B)
    q = rng.integers(kc, V, size=B)
    ctx = np.argsort(rng.random((B, kc)), axis=1)[:, :N]
    ov = overlaps(worlds, w, q, np.tile(np.arange(kc), (B, 1)))       # (B, Kc)
    for b in range(B):
        good = np.flatnonzero(ov[b] >= cfg.min_overlap)
        if len(good) and rng.random() < overlap_prob and not np.isin(ctx[b], good).any():
            ctx[b, rng.integers(N)] = rng.choice(good)
    truth = worlds.poses[w, q].astype(np.float64)                                 # (B, 3)
    n_near, n_far, n_turn = K // 4, K // 8, K // 8
    n_decoy = K // 4
    n_else = K - 1 - n_near - n_far - n_turn - n_decoy
    near = gaussian_poses(truth, cfg.near_std[0], math.radians(cfg.near_std[1]), n_near, rng)
    far = gaussian_poses(truth, cfg.far_std[0], math.radians(cfg.far_std[1]), n_far, rng)
    turn = gaussian_poses(truth, 0.3, 0.0, n_turn, rng)
    turn[..., 2] = wrap_angle(turn[..., 2] + rng.choice([-1.0, 1.0], size=turn.shape[:2])
                              * rng.uniform(math.radians(60), math.pi, size=turn.shape[:2]))
    cpose = worlds.poses[w[:, None], ctx].astype(np.float64)                       # (B, N, 3)
    nearest = np.linalg.norm(cpose[..., :2] - truth[:, None, :2], axis=-1).argmin(1)
    offset = relative(cpose[np.arange(B), nearest], truth)                         # (B, 3)
    anchor = cpose[np.arange(B)[:, None], rng.integers(N, size=(B, n_decoy))]     # (B, n, 3)
    decoy = compose(anchor, np.broadcast_to(offset[:, None], anchor.shape))
    decoy = decoy + rng.normal(size=decoy.shape) * np.array([0.3, 0.3, math.radians(5)])
    other = worlds.poses[w[:, None], rng.integers(V, size=(B, n_else))].astype(np.float64)
    other[..., :2] += rng.normal(size=other[..., :2].shape)
    other[..., 2] = rng.uniform(-math.pi, math.pi, size=other.shape[:2])
    cand = np.concatenate([truth[:, None], near, far, turn, decoy, other], 1)
    cand[..., 2] = wrap_angle(cand[..., 2])
    nc = cfg.coarse_candidates
    spread = worlds.poses[w[:, None], rng.integers(V, size=(B, nc))].astype(np.float64)
    spread[..., :2] += rng.normal(size=spread[..., :2].shape)
    spread[..., 2] = rng.uniform(-math.pi, math.pi, size=spread.shape[:2])
    spread[:, :nc // 8] = gaussian_poses(truth, 3.0, math.radians(45.0), nc // 8, rng)
    spread[:, 0] = truth
    spread[..., 2] = wrap_angle(spread[..., 2])
    out = dict(world=w, query=q, contexts=ctx, candidates=cand.astype(np.float32),
               coarse=spread.astype(np.float32))
    if cfg.mined_candidates:
        xy = worlds.poses[w, :, :2]                                                  # (B, V, 2)
        lo, hi = xy.min(1), xy.max(1)
        u = rng.random((B, cfg.mined_pool, 3))
        pool = np.concatenate([lo[:, None] + u[..., :2] * (hi - lo)[:, None],
                               (u[..., 2:] * 2.0 - 1.0) * math.pi], -1)
        out['pool'] = pool.astype(np.float32)
    return out
