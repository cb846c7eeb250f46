"""Differentiable particle filter over planar poses (paper Section IV; PF-net soft resampling).

Letters: B batch (independent filters), K particles. Particles are ``(B, K, 3)`` metric poses
``(x, y, yaw)``; weights are kept as log-weights ``(B, K)`` normalised with logsumexp. All
functions are pure torch, device-agnostic and differentiable where it makes sense; randomness
comes from an explicit ``torch.Generator`` (or the global one when ``None``).
"""
from dataclasses import dataclass
import logging
import math

import torch

from dmn_localizer.geometry import compose, wrap_angle

logger = logging.getLogger(__name__)

RESAMPLE_MODES = ('systematic', 'soft', 'none')


@dataclass
class FilterConfig:
    # Std of the noise added to the egomotion of each particle per step (in the frame of the
    # previous pose): metres along x, metres along y, radians of yaw.
    transition_std: tuple = (0.5, 0.5, math.radians(5.0))
    # Noise that grows with the motion (the localizer's odometry model): x and y std of
    # motion_noise[0] per metre travelled, yaw std of motion_noise[1] per radian turned plus
    # metre travelled; combined with transition_std as independent noise (root sum square).
    motion_noise: tuple = (0.0, 0.0)
    # 'systematic' (inference: low variance, no gradient), 'soft' (training: PF-net soft
    # resampling, gradients flow through the weights), 'none'.
    resample: str = 'systematic'
    # Soft resampling mixes the weights with a uniform: q = alpha w + (1 - alpha) / K.
    soft_alpha: float = 0.5
    # Resample only when ESS < this fraction of K (1.0: every step; 0: never).
    resample_ess_ratio: float = 0.5
    # The transition's heavy tail (:func:`jump`): at each prediction this share of the
    # particles gets extra noise of std jump_std (metres, metres, radians). 0: off.
    jump_share: float = 0.0
    jump_std: tuple = (0.0, 0.0, 0.0)
    # Regularised resampling (:func:`regularize`): after each systematic resampling every
    # particle moves by kernel noise of resample_jitter times the bandwidth of a Gaussian
    # kernel density estimate of the cloud. 0: off (duplicates stay duplicates).
    resample_jitter: float = 0.0

    def __post_init__(self):
        if self.resample not in RESAMPLE_MODES:
            raise ValueError(f'resample must be one of {RESAMPLE_MODES}, got {self.resample!r}')
        if not 0.0 <= self.soft_alpha <= 1.0:
            raise ValueError('soft_alpha must be in [0, 1]')
        self.transition_std = tuple(float(s) for s in self.transition_std)
        if len(self.transition_std) != 3 or min(self.transition_std) < 0:
            raise ValueError('transition_std must be three non-negative numbers')
        self.motion_noise = tuple(float(s) for s in self.motion_noise)
        if len(self.motion_noise) != 2 or min(self.motion_noise) < 0:
            raise ValueError('motion_noise must be two non-negative numbers')
        if not 0.0 <= self.jump_share <= 1.0:
            raise ValueError('jump_share must be in [0, 1]')
        self.jump_std = tuple(float(s) for s in self.jump_std)
        if len(self.jump_std) != 3 or min(self.jump_std) < 0:
            raise ValueError('jump_std must be three non-negative numbers')
        if not 0.0 <= self.resample_jitter:
            raise ValueError('resample_jitter must be >= 0')


def normalize_log_weights(log_w):
    """(B, K) -> (B, K) log-weights that logsumexp to 0 over K."""
    return log_w - torch.logsumexp(log_w, dim=-1, keepdim=True)


def effective_sample_size(log_w):
    """ESS = 1 / sum w^2 of the normalised weights: (B, K) -> (B,), in [1, K]."""
    lw = normalize_log_weights(log_w)
    return torch.exp(-torch.logsumexp(2.0 * lw, dim=-1))


def weighted_mean(particles, log_w):
    """Weighted mean pose (B, 3): arithmetic mean of x, y, circular mean of yaw.

    particles (B, K, 3), log_w (B, K) (normalised or not).
    """
    w = torch.softmax(log_w, dim=-1)
    xy = (w[..., None] * particles[..., :2]).sum(-2)
    s = (w * torch.sin(particles[..., 2])).sum(-1)
    c = (w * torch.cos(particles[..., 2])).sum(-1)
    return torch.cat([xy, torch.atan2(s, c)[..., None]], dim=-1)


def covariance(particles, log_w, mean=None):
    """Weighted covariance (B, 3, 3) of (x, y, yaw); yaw deviations are wrapped around the
    circular mean, so a cloud straddling +-pi has a small yaw variance."""
    w = torch.softmax(log_w, dim=-1)
    mean = weighted_mean(particles, log_w) if mean is None else mean
    d = particles - mean[..., None, :]
    d = torch.cat([d[..., :2], wrap_angle(d[..., 2:])], dim=-1)
    return torch.einsum('bk,bki,bkj->bij', w, d, d)


def _systematic_indices(w, generator, k=None):
    """Systematic (low-variance) resampling indices from normalised weights (B, K) -> (B, k),
    k = K unless given."""
    B, K = w.shape
    k = K if k is None else k
    u = torch.rand(B, 1, generator=generator, device='cpu').to(w.device, w.dtype)
    positions = (torch.arange(k, device=w.device, dtype=w.dtype) + u) / k
    cdf = torch.cumsum(w, dim=-1)
    cdf[..., -1] = 1.0 + 1e-6  # guard the last bin against rounding
    return torch.searchsorted(cdf.contiguous(), positions.contiguous()).clamp_(max=K - 1)


def systematic_resample(particles, log_w, generator=None, k=None):
    """Systematic resampling: particles (B, K, 3), log_w (B, K) -> (particles (B, k, 3),
    uniform log_w (B, k)), k = K unless given (fewer or more particles than before).

    Unbiased: every particle is drawn floor(k w) or ceil(k w) times. No gradient flows.
    """
    B, K = log_w.shape
    k = K if k is None else int(k)
    with torch.no_grad():
        idx = _systematic_indices(torch.softmax(log_w, dim=-1), generator, k)
    new = torch.gather(particles, 1, idx[..., None].expand(B, k, particles.shape[-1]))
    return new, log_w.new_full((B, k), -math.log(k))


def soft_resample(particles, log_w, alpha, generator=None):
    """PF-net soft resampling (Karkus et al., CoRL 2018): draw from q = alpha w + (1-alpha)/K
    and keep importance weights w/q, so gradients flow through the weights.

    particles (B, K, 3), log_w (B, K) -> (particles (B, K, 3), normalised log_w (B, K)).
    alpha = 1 is ordinary resampling, alpha = 0 keeps the weights and draws uniformly.
    """
    B, K = log_w.shape
    lw = normalize_log_weights(log_w)
    if alpha >= 1.0:
        log_q = lw
    elif alpha <= 0.0:
        log_q = torch.full_like(lw, -math.log(K))
    else:
        log_q = torch.logaddexp(lw + math.log(alpha),
                                torch.full_like(lw, math.log(1.0 - alpha) - math.log(K)))
    with torch.no_grad():
        idx = _systematic_indices(torch.exp(log_q), generator)
    new = torch.gather(particles, 1, idx[..., None].expand(B, K, particles.shape[-1]))
    new_lw = torch.gather(lw - log_q, 1, idx)
    return new, normalize_log_weights(new_lw)


def motion_std(odometry, transition_std, motion_noise):
    """The transition noise std (B, 3) on (dx, dy, dyaw) for egomotion ``odometry`` (B, 3):
    the fixed ``transition_std`` and the motion-proportional ``motion_noise`` (see
    :class:`FilterConfig`), root sum square."""
    d = torch.linalg.vector_norm(odometry[:, :2], dim=-1)
    grow = torch.stack([motion_noise[0] * d, motion_noise[0] * d,
                        motion_noise[1] * (odometry[:, 2].abs() + d)], -1)
    return torch.sqrt(odometry.new_tensor(transition_std) ** 2 + grow ** 2)


def transition(particles, odometry, std, generator=None):
    """Move particles by the egomotion plus noise: particles (B, K, 3), odometry (B, 3) = new
    pose in the frame of the previous one; std (3,) or (B, 3) per-step noise on (dx, dy,
    dyaw)."""
    noise = torch.randn(particles.shape, generator=generator, device='cpu')
    std = torch.as_tensor(std, dtype=particles.dtype, device=particles.device)
    std = std[:, None, :] if std.dim() == 2 else std
    noise = noise.to(particles.device, particles.dtype) * std
    return compose(particles, odometry[:, None, :].to(particles.dtype) + noise)


def jump(particles, share, std, generator=None):
    """The heavy tail of the transition: each particle (B, K, 3), with probability ``share``,
    moves by extra Gaussian noise of std (3,) (metres, metres, radians; x-y in the map frame).

    A filter whose cloud has settled a little beside the true pose (resampling leaves no
    particle there) keeps a few particles searching around it, which the likelihood then
    favours; the cost is a cloud slightly wider than the odometry noise alone makes it.
    """
    if share <= 0.0:
        return particles
    B, K = particles.shape[:2]
    moved = torch.rand(B, K, generator=generator, device='cpu') < share
    noise = torch.randn(B, K, 3, generator=generator, device='cpu') * torch.tensor(std)
    p = particles + noise.to(particles.device, particles.dtype)
    p = torch.cat([p[..., :2], wrap_angle(p[..., 2:])], dim=-1)
    return torch.where(moved[..., None].to(particles.device), p, particles)


# The regularising kernel's standard deviations are capped at these (metres along each
# principal axis of the x-y covariance, radians of yaw): the kernel is fitted to the cloud as a
# whole, and a cloud split between distant places would otherwise smear each place by the
# distance between them.
KERNEL_MAX_STD_XY = 1.0
KERNEL_MAX_STD_YAW = 0.2


def kernel_bandwidth(k, dim=3):
    """The bandwidth factor of a Gaussian kernel density estimate of ``k`` samples in ``dim``
    dimensions whose density is close to Gaussian (Silverman's rule): the kernel's covariance
    is this squared times the samples' covariance."""
    return (4.0 / (k * (dim + 2.0))) ** (1.0 / (dim + 4.0))


def regularize(particles, cov, factor, generator=None):
    """Regularised resampling (the regularised particle filter, Musso, Oudjane and Le Gland,
    2001): move resampled particles (B, K, 3) by Gaussian kernel noise whose covariance is
    ``(factor * kernel_bandwidth(K))^2`` times ``cov`` (B, 3, 3), the weighted covariance of
    the cloud before resampling, its x-y principal standard deviations capped at
    :data:`KERNEL_MAX_STD_XY` and its yaw's at :data:`KERNEL_MAX_STD_YAW` (x-y and yaw
    drawn independently). A covariance that is not finite gives no noise.

    Resampling duplicates the heavy particles; with little motion noise the duplicates stay
    together, and the cloud shrinks onto a few poses whatever the likelihood says about the
    poses between them (sample impoverishment): a cloud that converged a metre beside the
    true pose along a corridor, where consecutive images barely tell the positions apart,
    stays there with a spread of a few decimetres. Drawing from a kernel density estimate of
    the posterior instead keeps the cloud as wide as its weights were and lets it move where
    the likelihood is flat.
    """
    B, K = particles.shape[:2]
    h = factor * kernel_bandwidth(K)
    cov = cov.to(torch.float64)
    # a covariance that is not finite (weights without any finite value) gives no kernel
    cov = torch.where(torch.isfinite(cov).all(-1).all(-1)[:, None, None], cov,
                      torch.zeros_like(cov))
    vals, vecs = torch.linalg.eigh(cov[:, :2, :2])
    sd = torch.sqrt(vals.clamp(min=0.0)).clamp(max=KERNEL_MAX_STD_XY)
    root_xy = vecs * sd[:, None, :]                                        # (B, 2, 2)
    sd_yaw = torch.sqrt(cov[:, 2, 2].clamp(min=0.0)).clamp(max=KERNEL_MAX_STD_YAW)
    z = torch.randn(B, K, 3, generator=generator, device='cpu', dtype=torch.float64)
    noise = torch.cat([torch.einsum('bij,bkj->bki', root_xy, z[..., :2]),
                       z[..., 2:] * sd_yaw[:, None, None]], -1) * h
    p = particles + noise.to(particles.device, particles.dtype)
    return torch.cat([p[..., :2], wrap_angle(p[..., 2:])], dim=-1)


def sample_uniform(batch, k, world_size, generator=None, device='cpu', origin=(0.0, 0.0)):
    """Uniform particles over ``origin + [0, world_size]^2 x [-pi, pi)``: (batch, k, 3)."""
    u = torch.rand(batch, k, 3, generator=generator, device='cpu', dtype=torch.float32)
    p = torch.stack([origin[0] + u[..., 0] * world_size, origin[1] + u[..., 1] * world_size,
                     (u[..., 2] * 2.0 - 1.0) * math.pi], dim=-1)
    return p.to(device)


def sample_gaussian(mean, std, k, generator=None):
    """Gaussian particles around mean (B, 3) with std (3,) (metres, metres, radians): (B, k, 3)."""
    B = mean.shape[0]
    n = torch.randn(B, k, 3, generator=generator, device='cpu').to(mean.device, mean.dtype)
    p = mean[:, None, :] + n * mean.new_tensor(std)
    return torch.cat([p[..., :2], wrap_angle(p[..., 2:])], dim=-1)


class ParticleFilter:
    """Stateful batch of B particle filters. The observation model is external::

        pf = ParticleFilter(FilterConfig(), particles0)          # (B, K, 3), uniform weights
        pf.predict(odometry)                                     # (B, 3), skip at t = 0
        pf.update(log_likelihood)                                # (B, K) from the DMN
        pose, cov = pf.estimate(), pf.covariance()               # (B, 3), (B, 3, 3)
        pf.resample()                                            # per config (ESS-gated)
    """

    def __init__(self, config: FilterConfig, particles, log_weights=None, generator=None):
        self.config = config
        self.generator = generator
        self.particles = particles
        B, K = particles.shape[:2]
        self.log_weights = (particles.new_full((B, K), -math.log(K)) if log_weights is None
                            else normalize_log_weights(log_weights))

    @property
    def num_particles(self):
        return self.particles.shape[1]

    def predict(self, odometry, jump_scale=1.0):
        """Apply egomotion (B, 3) with the configured noise (:func:`motion_std`) and its heavy
        tail (:func:`jump`, for ``config.jump_share * jump_scale`` of the particles)."""
        c = self.config
        std = (c.transition_std if not any(c.motion_noise)
               else motion_std(odometry.to(self.particles.dtype), c.transition_std,
                               c.motion_noise))
        self.particles = transition(self.particles, odometry, std, self.generator)
        if c.jump_share > 0.0 and any(c.jump_std):
            self.particles = jump(self.particles, min(1.0, c.jump_share * jump_scale),
                                  c.jump_std, self.generator)

    def update(self, log_likelihood):
        """log w <- log w + log-likelihood (B, K), normalised."""
        self.log_weights = normalize_log_weights(self.log_weights + log_likelihood)

    def estimate(self):
        """Weighted mean pose (B, 3)."""
        return weighted_mean(self.particles, self.log_weights)

    def covariance(self):
        """Weighted covariance (B, 3, 3) of (x, y, yaw)."""
        return covariance(self.particles, self.log_weights)

    def ess(self):
        """Effective sample size (B,)."""
        return effective_sample_size(self.log_weights)

    def resample(self, force=False):
        """Resample per ``config.resample`` when ESS < resample_ess_ratio * K (or force);
        systematic resampling is regularised by ``config.resample_jitter`` (:func:`regularize`).

        Filters of the batch that do not need it keep their particles. Returns whether any
        filter resampled.
        """
        mode = self.config.resample
        if mode == 'none':
            return False
        K = self.num_particles
        need = (self.ess() < self.config.resample_ess_ratio * K)
        if force or self.config.resample_ess_ratio >= 1.0:
            need = torch.ones_like(need)
        if not bool(need.any()):
            return False
        if mode == 'systematic':
            p, lw = systematic_resample(self.particles, self.log_weights, self.generator)
            if self.config.resample_jitter > 0.0:
                p = regularize(p, self.covariance(), self.config.resample_jitter,
                               self.generator)
        else:
            p, lw = soft_resample(self.particles, self.log_weights, self.config.soft_alpha,
                                  self.generator)
        m = need[:, None]
        self.particles = torch.where(m[..., None], p, self.particles)
        self.log_weights = torch.where(m, lw, self.log_weights)
        return True

    def resize(self, k):
        """Systematic resampling of every filter of the batch to ``k`` particles (uniform
        weights), whatever the ESS: a large first sample narrowed down to the working count."""
        self.particles, self.log_weights = systematic_resample(
            self.particles, self.log_weights, self.generator, k)
