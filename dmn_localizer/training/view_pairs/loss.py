"""The view-pair recipe's loss: the cross-entropy of the model's scores over the candidate
poses against a kernel of their distance to the truth (fine and coarse), plus the depth
head's error."""
import math

import torch

from dmn_localizer.filter.rollout import dense_loss
from dmn_localizer.model.aligned import AlignedMapState, AlignedQueryState
from dmn_localizer.model.preprocess import images_to_tensor


def _tensors(worlds, batch, device):
    w, q, ctx = batch['world'], batch['query'], batch['contexts']
    ci = images_to_tensor(worlds.images[w[:, None], ctx], device)
    qi = images_to_tensor(worlds.images[w, q], device)
    cp = torch.as_tensor(worlds.poses[w[:, None], ctx], device=device)
    cd = torch.as_tensor(worlds.depth[w[:, None], ctx], device=device)
    qd = torch.as_tensor(worlds.depth[w, q], device=device)
    cand = torch.as_tensor(batch['candidates'], device=device)
    return ci, cp, qi, cd, qd, cand


def _depth_error(pred, true):
    """Mean |log pred - log true| over columns with a known depth (NaN: unknown)."""
    ok = torch.isfinite(true)
    if not ok.any():
        return pred.sum() * 0.0
    return (torch.log(pred[ok]) - torch.log(true[ok])).abs().mean()


def mine(model, map_state, query, pool, n, device):
    """The ``n`` best-scoring poses (B, n, 3) of ``pool`` (B, P, 3) under the model, without
    gradient (hard negatives, or the truth's neighbours where the model is right)."""
    pool = torch.as_tensor(pool, device=device)
    with torch.no_grad():
        ll = model.log_likelihood(map_state, query, pool)
    idx = ll.topk(n, dim=1).indices
    return torch.gather(pool, 1, idx[..., None].expand(-1, -1, 3))


def training_loss(model, worlds, batch, kernel, cfg, device, true_depth=False):
    """(total loss, candidate cross-entropy, depth error) of one batch; ``kernel`` (m, rad)
    of the fine term; ``true_depth``: the warp uses the true column depths where known (the
    depth head still learns)."""
    ci, cp, qi, cd, qd, cand = _tensors(worlds, batch, device)
    B, N = cp.shape[:2]
    feat, depth, desc = model.encode_columns(torch.cat([ci.flatten(0, 1), qi]))
    J = feat.shape[1]
    true = torch.cat([cd.flatten(0, 1), qd])
    warp_depth = torch.where(torch.isfinite(true), true, depth) if true_depth else depth
    m = AlignedMapState(cp, feat[:B * N].view(B, N, J, -1), warp_depth[:B * N].view(B, N, J),
                        desc[:B * N].view(B, N, -1))
    qs = AlignedQueryState(feat[B * N:], warp_depth[B * N:], desc[B * N:])
    if cfg.coarse_weight > 0:
        coarse = torch.as_tensor(batch['coarse'], device=device)
        if cfg.mined_candidates:
            coarse = torch.cat([coarse, mine(model, m, qs, batch['pool'], cfg.mined_candidates,
                                             device)], 1)
        cand = torch.cat([cand, coarse], 1)
    ll = model.log_likelihood(m, qs, cand)
    K = cfg.candidates
    truth = cand[:, 0]   # both candidate sets start with the truth
    ce = dense_loss(cand[:, :K], ll[:, :K], truth, *kernel).mean()
    loss = ce
    if cfg.coarse_weight > 0:
        loss = loss + cfg.coarse_weight * dense_loss(
            cand[:, K:], ll[:, K:], truth, cfg.coarse_kernel[0],
            math.radians(cfg.coarse_kernel[1])).mean()
    derr = _depth_error(depth, true)
    return cfg.pair_weight * loss + cfg.depth_weight * derr, ce, derr
