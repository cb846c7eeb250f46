"""Batches of episodes as tensors, initial beliefs and the differentiable filter rollout.

Shared by training and evaluation. Letters: B batch, N contexts, T steps, K particles.
"""
from dataclasses import dataclass
import math

import numpy as np
import torch

from dmn_localizer.filter import (FilterConfig, normalize_log_weights, ParticleFilter,
                                  sample_gaussian, weighted_mean)
from dmn_localizer.geometry import compose, relative, wrap_angle
from dmn_localizer.model.nearest import log_likelihood_nearest
from dmn_localizer.model.preprocess import images_to_tensor


@dataclass
class Batch:
    context_images: torch.Tensor   # (B, N, 3, H, W) float in [-1, 1]
    context_poses: torch.Tensor    # (B, N, 3)
    query_images: torch.Tensor     # (B, T, 3, H, W)
    query_poses: torch.Tensor      # (B, T, 3)
    odometry: torch.Tensor         # (B, T, 3), row 0 zero
    world_size: torch.Tensor       # (B,) metres

    def __len__(self):
        return self.query_poses.shape[0]

    def part(self, index, parts):
        """Episodes ``[index * B / parts, (index + 1) * B / parts)`` (data-parallel share)."""
        n = len(self) // parts
        sl = slice(index * n, (index + 1) * n)
        return Batch(self.context_images[sl], self.context_poses[sl], self.query_images[sl],
                     self.query_poses[sl], self.odometry[sl], self.world_size[sl])

    def with_images(self, context_images=None, query_images=None):
        """A copy with other images (for the image-use diagnostic)."""
        return Batch(self.context_images if context_images is None else context_images,
                     self.context_poses,
                     self.query_images if query_images is None else query_images,
                     self.query_poses, self.odometry, self.world_size)


def select_contexts(episode, n, near_prob, rng):
    """Indices of ``n`` of the episode's contexts; with probability ``near_prob`` the context
    nearest (in x-y) to the first query is among them."""
    pool = len(episode.context_poses)
    if n > pool:
        raise ValueError(f'episode has {pool} contexts, {n} requested')
    idx = rng.permutation(pool)[:n]
    if near_prob > 0 and rng.random() < near_prob:
        d = np.linalg.norm(episode.context_poses[:, :2] - episode.query_poses[0, :2], axis=1)
        nearest = int(np.argmin(d))
        if nearest not in idx:
            idx[rng.integers(n)] = nearest
    return np.sort(idx)


def make_batch(episodes, n_contexts, rng, near_context_prob=0.0, steps=None, device='cpu'):
    """Stack episodes into a :class:`Batch` with ``n_contexts`` contexts each (first ``steps``
    queries)."""
    ci, cp, qi, qp, od, ws = [], [], [], [], [], []
    for ep in episodes:
        idx = select_contexts(ep, n_contexts, near_context_prob, rng)
        t = len(ep.query_poses) if steps is None else steps
        if t > len(ep.query_poses):
            raise ValueError(f'episode has {len(ep.query_poses)} query steps, {t} requested')
        ci.append(ep.context_images[idx])
        cp.append(ep.context_poses[idx])
        qi.append(ep.query_images[:t])
        qp.append(ep.query_poses[:t])
        od.append(ep.odometry[:t])
        ws.append(ep.world_size)

    def f(a):
        return torch.as_tensor(np.stack(a).astype(np.float32), device=device)
    return Batch(images_to_tensor(np.stack(ci), device), f(cp), images_to_tensor(np.stack(qi),
                 device), f(qp), f(od), torch.tensor(ws, dtype=torch.float32, device=device))


def initial_particles(batch, k, generator, *, global_prob=0.0, init_std=(6.0, 30.0),
                      perturb_mean=True, near_truth_fraction=0.0, near_truth_std=(1.5, 15.0),
                      decoy_fraction=0.0, decoy_std=(0.5, 5.0), draw=None):
    """Particles (B, K, 3) for the first step: per episode a uniform (global) belief over its
    world with probability ``global_prob``, else a Gaussian tracking belief with std
    ``init_std`` (m, deg); then a share of them replaced by near-truth samples. ``draw`` (B,)
    in [0, 1) decides global vs tracking when given (else drawn from ``generator``).

    Tracking belief: with ``perturb_mean`` (default, as in PF-net) its mean is the first true
    pose plus Gaussian noise of the same std, so the belief's mean is not the answer; the
    paper's uninformed tracking RMSE (~9.5 m) implies this. Without it the mean is the truth.

    Decoys (``decoy_fraction``, our addition): the true pose's offset from its nearest context,
    re-anchored at randomly chosen contexts (plus ``decoy_std`` noise). Relative to "its"
    context a decoy looks exactly like the truth, so only comparing the query image with the
    context images tells them apart: a model that ignores the images cannot lower the dense
    loss on them.
    """
    B = len(batch)
    truth = batch.query_poses[:, 0]
    dev = truth.device
    std = (init_std[0], init_std[0], math.radians(init_std[1]))
    mean = sample_gaussian(truth, std, 1, generator)[:, 0] if perturb_mean else truth
    gauss = sample_gaussian(mean, std, k, generator)
    if global_prob > 0:
        u = torch.rand(B, k, 3, generator=generator).to(dev)
        ws = batch.world_size[:, None]
        uni = torch.stack([u[..., 0] * ws, u[..., 1] * ws, (u[..., 2] * 2 - 1) * math.pi], -1)
        if draw is None:
            draw = torch.rand(B, generator=generator)
        is_global = (draw.to(dev) < global_prob)[:, None, None]
        gauss = torch.where(is_global, uni, gauss)
    n_near = int(round(near_truth_fraction * k))
    if n_near:
        near = sample_gaussian(truth, (near_truth_std[0], near_truth_std[0],
                                       math.radians(near_truth_std[1])), n_near, generator)
        gauss = torch.cat([near, gauss[:, n_near:]], dim=1)
    n_decoy = min(int(round(decoy_fraction * k)), k - n_near)
    if n_decoy:
        gauss[:, n_near:n_near + n_decoy] = decoy_particles(batch, n_decoy, decoy_std,
                                                            generator)
    return gauss


def decoy_particles(batch, n, std, generator):
    """(B, n, 3): the first true pose's offset from its nearest context, applied to contexts
    drawn uniformly (the nearest one included, which gives near-truth samples)."""
    truth = batch.query_poses[:, 0]
    ctx = batch.context_poses                                           # (B, N, 3)
    B, N = ctx.shape[:2]
    nearest = (ctx[..., :2] - truth[:, None, :2]).norm(dim=-1).argmin(-1)   # (B,)
    anchor = ctx[torch.arange(B), nearest]                              # (B, 3)
    offset = relative(anchor, truth)                                    # (B, 3)
    j = torch.randint(N, (B, n), generator=generator).to(ctx.device)
    chosen = torch.gather(ctx, 1, j[..., None].expand(B, n, 3))        # (B, n, 3)
    decoys = compose(chosen, offset[:, None, :].expand(B, n, 3))
    noise = torch.randn(B, n, 3, generator=generator).to(ctx.device)
    noise = noise * decoys.new_tensor([std[0], std[0], math.radians(std[1])])
    return torch.cat([decoys[..., :2] + noise[..., :2],
                      wrap_angle(decoys[..., 2:] + noise[..., 2:])], dim=-1)


def _pose_kernel_d2(poses, truth, kernel_m, kernel_rad):
    """Squared kernel distance of poses (B, n, 3) to truth (B, 3): (B, n)."""
    d2 = (poses[..., :2] - truth[:, None, :2]).square().sum(-1) / kernel_m ** 2
    return d2 + wrap_angle(poses[..., 2] - truth[:, None, 2]).square() / kernel_rad ** 2


def pose_loss(estimate, truth, scale, yaw_weight):
    """Paper loss per sample: ((x-x*)^2 + (y-y*)^2)/scale^2 + yaw_weight * wrap(yaw-yaw*)^2.

    estimate, truth (..., 3) -> (...).
    """
    d = (estimate[..., :2] - truth[..., :2]) / scale
    return d.square().sum(-1) + yaw_weight * wrap_angle(estimate[..., 2] - truth[..., 2]).square()


def dense_loss(particles, log_w, truth, kernel_m, kernel_rad):
    """Cross-entropy of the normalised particle weights against a Gaussian kernel of each
    particle's distance to the truth: particles (B, K, 3), log_w (B, K), truth (B, 3) -> (B,)."""
    target = torch.softmax(-0.5 * _pose_kernel_d2(particles, truth, kernel_m, kernel_rad),
                           dim=-1).detach()
    return -(target * normalize_log_weights(log_w)).sum(-1)


def attention_loss(attention, context_poses, truth, kernel_m, kernel_rad):
    """Auxiliary loss: cross-entropy of the attention at the true pose against a kernel of
    each context's pose distance to it (the overlapping views should get the attention).

    attention (B, N) (normalised here), context_poses (B, N, 3), truth (B, 3) -> (B,).
    """
    target = torch.softmax(-0.5 * _pose_kernel_d2(context_poses, truth, kernel_m, kernel_rad),
                           dim=-1).detach()
    a = attention / attention.sum(-1, keepdim=True).clamp_min(1e-12)
    return -(target * torch.log(a.clamp_min(1e-12))).sum(-1)


@dataclass
class PoseContrast:
    """The pose-contrast auxiliary loss (our addition, see :func:`pose_contrast_loss`):
    ``poses`` candidate poses per query (the truth and poses offset from it by Gaussian
    noise of ``offset_std`` (m, rad)), target kernel ``kernel`` (m, rad) over them, contexts
    weighted by a kernel ``context_kernel`` (m, rad) of their distance to the truth."""
    poses: int = 16
    offset_std: tuple = (2.0, math.radians(20.0))
    kernel: tuple = (0.75, math.radians(10.0))
    context_kernel: tuple = (4.0, math.radians(45.0))


def pose_contrast_loss(model, map_state, query, truth, context_poses, spec: PoseContrast,
                       generator):
    """Auxiliary loss that trains the view keys to depend on the relative pose: for each
    context, the cross-entropy of its attention logits (:meth:`DMN.attention_logits`,
    before the normalisation over contexts) across candidate poses around the truth, against
    a kernel of the candidates' distance to the truth; summed over contexts weighted by an
    unnormalised kernel of each context's distance to the truth (views that overlap the
    query count, far ones hardly). The attention loss compares contexts at one pose; this
    one compares poses for one context, the signal the coordinate path lacks.

    truth (B, 3), context_poses (B, N, 3) -> the loss (B,) and, as a diagnostic, whether the
    truth has a higher logit than every other candidate for the context nearest to it in
    kernel distance (B,) float (chance: 1 / ``spec.poses``; a tie is not a win, so logits that
    do not depend on the pose score 0).
    """
    std = (spec.offset_std[0], spec.offset_std[0], spec.offset_std[1])
    offsets = sample_gaussian(truth, std, spec.poses - 1, generator)          # (B, n-1, 3)
    poses = torch.cat([truth[:, None], offsets.to(truth)], dim=1)             # (B, n, 3)
    logits = model.attention_logits(map_state, query, poses)                  # (B, n, N)
    logp = torch.log_softmax(logits, dim=1)
    target = torch.softmax(-0.5 * _pose_kernel_d2(poses, truth, *spec.kernel), dim=1)
    ce = -(target.detach()[..., None] * logp).sum(1)                          # (B, N)
    weight = torch.exp(-0.5 * _pose_kernel_d2(context_poses, truth, *spec.context_kernel))
    nearest = weight.argmax(-1)                                               # (B,)
    at = logits.detach().gather(2, nearest[:, None, None].expand(-1, logits.shape[1], 1))
    at = at[..., 0]                                                           # (B, n)
    wins = at[:, 0] > at[:, 1:].max(1).values                                 # ties lose
    return (weight.detach() * ce).sum(-1), wins.float()


def rollout(model, batch, particles, filter_config: FilterConfig, generator, *,
            scale=20.0, yaw_weight=0.5, dense_kernel=None, attention_kernel=None, chunk=None,
            keep_particles=False, nearest_contexts=0, pose_contrast: PoseContrast = None):
    """Run the filter over the batch's T steps with the DMN as observation model.

    particles: (B, K, 3) initial particles (uniform weights). Returns a dict with ``estimates``
    (B, T, 3), ``mse`` (B, T) paper loss per step, ``dense`` (B, T) when ``dense_kernel`` =
    (metres, radians) is given, ``attention`` (B, T) (:func:`attention_loss` at the true pose)
    when ``attention_kernel`` is given, and ``history`` [(particles, log_weights)] per step
    when keep_particles, ``pose_contrast`` and ``pose_top1`` (B, T)
    (:func:`pose_contrast_loss`, candidate poses drawn from ``generator``) when its spec is
    given. Resampling happens after each update but the last (per
    ``filter_config``). ``nearest_contexts`` M > 0: each particle attends only to its M
    nearest contexts (:func:`~dmn_localizer.model.nearest.log_likelihood_nearest`, as the
    localizer on large maps).

    A regression model (``model.regresses_pose``) has no filter: this returns
    :func:`regression_rollout` (``estimates``, ``mse``, and ``history`` when keep_particles).
    """
    if getattr(model, 'regresses_pose', False):
        return regression_rollout(model, batch, particles, scale=scale, yaw_weight=yaw_weight,
                                  keep_particles=keep_particles)
    B, T = batch.query_poses.shape[:2]
    m = model.build_map(batch.context_images, batch.context_poses)
    pf = ParticleFilter(filter_config, particles, generator=generator)
    est, mse, dense, att, contrast, hist = [], [], [], [], [], []
    for t in range(T):
        if t:
            pf.predict(batch.odometry[:, t])
        q = model.encode_query(batch.query_images[:, t])
        pf.update(log_likelihood_nearest(model, m, q, pf.particles, nearest_contexts,
                                         chunk=chunk))
        e = weighted_mean(pf.particles, pf.log_weights)
        truth = batch.query_poses[:, t]
        est.append(e)
        mse.append(pose_loss(e, truth, scale, yaw_weight))
        if dense_kernel is not None:
            dense.append(dense_loss(pf.particles, pf.log_weights, truth, *dense_kernel))
        if attention_kernel is not None:
            _, lam = model.log_likelihood(m, q, truth[:, None], return_attention=True)
            att.append(attention_loss(lam[:, 0], batch.context_poses, truth, *attention_kernel))
        if pose_contrast is not None:
            contrast.append(pose_contrast_loss(model, m, q, truth, batch.context_poses,
                                               pose_contrast, generator))
        if keep_particles:
            hist.append((pf.particles.detach(), pf.log_weights.detach()))
        if t < T - 1:
            pf.resample()
    out = {'estimates': torch.stack(est, 1), 'mse': torch.stack(mse, 1)}
    if dense:
        out['dense'] = torch.stack(dense, 1)
    if att:
        out['attention'] = torch.stack(att, 1)
    if contrast:
        out['pose_contrast'] = torch.stack([c[0] for c in contrast], 1)
        out['pose_top1'] = torch.stack([c[1] for c in contrast], 1)
    if keep_particles:
        out['history'] = hist
    return out


def regression_rollout(model, batch, particles, *, scale=20.0, yaw_weight=0.5,
                       keep_particles=False):
    """The regression baseline over the batch's T steps (paper Section V-B): a point estimate
    instead of a belief.

    The first estimate is the mean of the initial belief, taken as the (unweighted) mean of
    ``particles`` (B, K, 3), the particles a filter would start from (the same estimate as
    the ``uninformed`` method: for a uniform global belief about the world centre with an
    arbitrary yaw, for tracking about the belief's mean). Each step t moves the estimate by
    the egomotion (t > 0, no noise), then composes it with the offset that
    ``model.regress(map, query, estimate)`` predicts (in the estimate's frame). Gradients flow
    through all steps. Returns ``estimates`` (B, T, 3), ``mse`` (B, T) (:func:`pose_loss`),
    and ``history`` [(estimate (B, 1, 3), zero log-weights (B, 1))] when keep_particles.
    """
    T = batch.query_poses.shape[1]
    m = model.build_map(batch.context_images, batch.context_poses)
    e = weighted_mean(particles, particles.new_zeros(particles.shape[:2]))
    est, mse, hist = [], [], []
    for t in range(T):
        if t:
            e = compose(e, batch.odometry[:, t])
        q = model.encode_query(batch.query_images[:, t])
        e = compose(e, model.regress(m, q, e))
        est.append(e)
        mse.append(pose_loss(e, batch.query_poses[:, t], scale, yaw_weight))
        if keep_particles:
            hist.append((e.detach()[:, None], e.new_zeros(e.shape[0], 1)))
    out = {'estimates': torch.stack(est, 1), 'mse': torch.stack(mse, 1)}
    if keep_particles:
        out['history'] = hist
    return out
