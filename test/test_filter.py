"""Particle filter math."""
import math

import pytest
import torch

from dmn_localizer.filter import (
    covariance, effective_sample_size, FilterConfig, jump, normalize_log_weights, ParticleFilter,
    sample_gaussian, sample_uniform, soft_resample, systematic_resample, transition,
    weighted_mean)
from dmn_localizer.filter.clusters import cluster_labels, heaviest_cluster_mean
from dmn_localizer.filter.particle_filter import kernel_bandwidth, KERNEL_MAX_STD_XY, regularize
from dmn_localizer.geometry import compose


def test_circular_mean_across_seam():
    p = torch.tensor([[[0.0, 0.0, math.pi - 0.1], [2.0, 4.0, -math.pi + 0.1]]])
    lw = torch.zeros(1, 2)
    m = weighted_mean(p, lw)
    assert torch.allclose(m[0, :2], torch.tensor([1.0, 2.0]))
    assert abs(abs(m[0, 2].item()) - math.pi) < 1e-5   # not 0, which a plain mean gives
    cov = covariance(p, lw)
    assert cov.shape == (1, 3, 3)
    assert torch.allclose(cov[0, 2, 2], torch.tensor(0.01), atol=1e-5)
    assert torch.allclose(cov[0, :2, :2], torch.tensor([[1.0, 2.0], [2.0, 4.0]]))
    # weights: only the second particle
    m2 = weighted_mean(p, torch.tensor([[-1e9, 0.0]]))
    assert torch.allclose(m2, p[:, 1], atol=1e-6)


def test_covariance_matches_sample_covariance():
    g = torch.Generator().manual_seed(0)
    p = sample_gaussian(torch.tensor([[5.0, -3.0, 0.2]]), (2.0, 1.0, 0.3), 20000, g)
    cov = covariance(p, torch.zeros(1, 20000))[0]
    assert torch.allclose(cov.diagonal(), torch.tensor([4.0, 1.0, 0.09]), rtol=0.05)
    assert abs(cov[0, 1]) < 0.1


def test_ess_and_normalisation():
    lw = torch.tensor([[0.0, 0.0, 0.0, 0.0], [0.0, -1e9, -1e9, -1e9]]) + 7.0
    assert torch.allclose(effective_sample_size(lw), torch.tensor([4.0, 1.0]))
    assert torch.allclose(torch.logsumexp(normalize_log_weights(lw), -1), torch.zeros(2),
                          atol=1e-6)


def test_systematic_resampling_keeps_distribution():
    g = torch.Generator().manual_seed(0)
    K = 10
    p = torch.arange(K, dtype=torch.float32).view(1, K, 1).repeat(1, 1, 3)
    w = torch.rand(1, K, generator=g)
    w /= w.sum()
    counts = torch.zeros(K)
    R = 2000
    for _ in range(R):
        newp, lw = systematic_resample(p, w.log(), g)
        counts += torch.bincount(newp[0, :, 0].long(), minlength=K)
        assert torch.allclose(lw, torch.full((1, K), -math.log(K)))
    assert torch.allclose(counts / (R * K), w[0], atol=0.01)
    # low variance: every particle drawn floor or ceil of K w times
    newp, _ = systematic_resample(p, w.log(), g)
    c = torch.bincount(newp[0, :, 0].long(), minlength=K).float()
    assert ((c - K * w[0]).abs() < 1.0 + 1e-5).all()


@pytest.mark.parametrize('alpha', [0.0, 0.5, 1.0])
def test_soft_resampling_unbiased_and_differentiable(alpha):
    g = torch.Generator().manual_seed(1)
    K = 8
    p = torch.randn(1, K, 3, generator=g)
    logits = torch.randn(1, K, generator=g, requires_grad=True)
    target = weighted_mean(p, logits)[0, 0].item()
    est = 0.0
    R = 3000
    for _ in range(R):
        newp, lw = soft_resample(p, logits, alpha, g)
        est += (torch.softmax(lw, -1) * newp[..., 0]).sum().item()
    assert abs(est / R - target) < 0.05
    newp, lw = soft_resample(p, logits, alpha, g)
    (torch.softmax(lw, -1) * newp[..., 0]).sum().backward()
    assert logits.grad is not None
    if alpha < 1.0:
        assert logits.grad.abs().sum() > 0


def test_transition_and_sampling():
    g = torch.Generator().manual_seed(0)
    p = torch.tensor([[[1.0, 2.0, math.pi / 2]]])
    odo = torch.tensor([[1.0, 0.0, 0.5]])
    out = transition(p, odo, (0.0, 0.0, 0.0), g)
    assert torch.allclose(out, compose(p, odo[:, None]))
    assert torch.allclose(out[0, 0, :2], torch.tensor([1.0, 3.0]), atol=1e-6)
    u = sample_uniform(2, 5000, 40.0, g)
    assert u.shape == (2, 5000, 3) and u[..., :2].min() >= 0 and u[..., :2].max() <= 40
    assert u[..., 2].min() >= -math.pi and u[..., 2].max() < math.pi
    noisy = transition(p.expand(1, 5000, 3), odo, (0.3, 0.1, 0.0), g)
    assert abs(noisy[0, :, 1].std().item() - 0.3) < 0.03   # x noise along heading (+y)


def test_particle_filter_class():
    g = torch.Generator().manual_seed(0)
    pf = ParticleFilter(FilterConfig(resample='systematic', resample_ess_ratio=0.5),
                        sample_uniform(2, 100, 40.0, g), generator=g)
    assert torch.allclose(pf.ess(), torch.tensor([100.0, 100.0]))
    ll = torch.zeros(2, 100)
    ll[0, 3] = 50.0            # filter 0 collapses, filter 1 stays uniform
    pf.update(ll)
    before = pf.particles.clone()
    pf.resample()
    assert torch.allclose(pf.particles[0], before[0, 3].expand(100, 3))
    assert torch.equal(pf.particles[1], before[1])
    assert torch.allclose(pf.ess(), torch.tensor([100.0, 100.0]))
    pf.predict(torch.zeros(2, 3))
    assert pf.estimate().shape == (2, 3) and pf.covariance().shape == (2, 3, 3)
    with pytest.raises(ValueError):
        FilterConfig(resample='multinomial')


def test_jump_moves_a_share_of_the_particles_by_its_noise():
    g = torch.Generator().manual_seed(0)
    p = torch.zeros(1, 40000, 3)
    p[..., 2] = 3.0
    out = jump(p, 0.05, (1.0, 1.0, 0.3), g)
    moved = (out != p).any(-1)[0]
    assert abs(moved.float().mean().item() - 0.05) < 0.004
    assert abs(out[0, moved, 0].std().item() - 1.0) < 0.06
    yaw = torch.remainder(out[0, moved, 2] - 3.0 + math.pi, 2 * math.pi) - math.pi
    assert abs(yaw.std().item() - 0.3) < 0.02
    assert out[..., 2].abs().max() <= math.pi            # wrapped
    assert torch.equal(jump(p, 0.0, (1.0, 1.0, 0.3), g), p)
    with pytest.raises(ValueError):
        FilterConfig(jump_share=1.5)


@pytest.mark.parametrize('share', [0.0, 0.05])
def test_jumps_let_a_settled_cloud_reach_a_peak_beside_it(share):
    """A cloud that settled 2 m beside a narrow likelihood peak (flat around the cloud: no
    gradient to follow) stays there without jumps and reaches the peak with them."""
    g = torch.Generator().manual_seed(0)
    pf = ParticleFilter(FilterConfig(transition_std=(0.0, 0.0, 0.0), motion_noise=(0.1, 0.05),
                                     jump_share=share, jump_std=(1.0, 1.0, 0.26)),
                        sample_gaussian(torch.tensor([[2.0, 0.0, 0.0]]), (0.25, 0.25, 0.05),
                                        2048, g), generator=g)
    truth = torch.tensor([0.0, 0.0, 0.0])
    step = torch.tensor([[0.5, 0.0, 0.0]])
    for _ in range(20):
        pf.predict(step)
        truth = compose(truth, step[0])
        d2 = ((pf.particles[0, :, :2] - truth[:2]) ** 2).sum(-1)
        pf.update((3.0 * torch.exp(-d2 / (2 * 0.4 ** 2)))[None])
        pf.resample()
    error = torch.linalg.vector_norm(pf.estimate()[0, :2] - truth[:2]).item()
    assert (error < 0.5) if share else (error > 1.5)


def test_clusters_join_touching_cells_and_wrap_in_yaw():
    # a chain of cells 0.4 m apart joins; 1.2 m further on (two empty cells) is another cluster
    chain = torch.tensor([[0.1 + 0.4 * i, 0.1, 0.0] for i in range(5)])
    apart = torch.tensor([[chain[-1, 0] + 1.2, 0.1, 0.0]])
    # headings on both sides of +-pi are neighbours
    seam = torch.tensor([[10.1, 10.1, math.pi - 0.02], [10.1, 10.1, -math.pi + 0.02]])
    # same place, opposite heading: not a neighbour
    turned = torch.tensor([[0.1, 0.1, math.pi / 2]])
    label = cluster_labels(torch.cat([chain, apart, seam, turned]))
    assert len(set(label[:5].tolist())) == 1
    assert len(set(label.tolist())) == 4
    assert label[5] != label[0] and label[6] == label[7] and label[8] != label[0]
    assert sorted(set(label.tolist())) == [0, 1, 2, 3]


def test_heaviest_cluster_mean_is_the_mode_the_weight_backs():
    g = torch.Generator().manual_seed(0)
    mode = torch.tensor([4.0, -2.0, 3.1]) + torch.randn(300, 3, generator=g) * torch.tensor(
        [0.2, 0.2, 0.05])
    spread = torch.rand(300, 3, generator=g) * torch.tensor([40.0, 40.0, 2 * math.pi]) - \
        torch.tensor([20.0, 20.0, math.pi])
    particles = torch.cat([mode, spread])
    log_w = torch.zeros(600)            # half the weight near the mode, half spread out
    pose, share = heaviest_cluster_mean(particles, log_w)
    assert torch.hypot(pose[0] - 4.0, pose[1] + 2.0) < 0.05
    assert abs(math.remainder(float(pose[2]) - 3.1, 2 * math.pi)) < 0.02
    assert 0.45 < share < 0.6
    # the weighted mean of all particles lies between the mode and the spread
    mean = weighted_mean(particles[None], log_w[None])[0]
    assert torch.hypot(mean[0] - 4.0, mean[1] + 2.0) > 1.0


def test_regularised_resampling_draws_from_a_kernel_estimate_of_the_weighted_cloud():
    """Resampled duplicates spread out: the cloud after regularised resampling has the
    weighted covariance of the cloud before it, times 1 + h^2 (h the kernel bandwidth); the
    kernel is fitted to the whole cloud but capped, so a cloud split between two places 20 m
    apart does not smear each of them by metres; without it only the duplicates remain."""
    g = torch.Generator().manual_seed(0)
    k = 4096
    p = sample_gaussian(torch.tensor([[3.0, -2.0, 0.5]]), (0.6, 0.2, 0.1), k, g)
    lw = -0.5 * ((p[..., 0] - 3.3) / 0.5) ** 2          # the weights favour one side
    before = covariance(p, lw)[0]
    for jitter in (0.0, 2.0):
        pf = ParticleFilter(FilterConfig(resample_jitter=jitter), p.clone(), lw.clone(),
                            generator=g)
        assert pf.resample(force=True)
        distinct = len(torch.unique(pf.particles[0], dim=0))
        after = covariance(pf.particles, pf.log_weights)[0]
        if jitter:
            h = jitter * kernel_bandwidth(k)
            assert distinct == k
            assert torch.allclose(after.diagonal() / before.diagonal() - 1,
                                  torch.full((3,), h * h), rtol=0.25)
        else:
            assert distinct < 0.8 * k
            assert torch.allclose(after.diagonal(), before.diagonal(), rtol=0.06)
    split = torch.cat([p[:, :k // 2], p[:, k // 2:] + torch.tensor([20.0, 0.0, 0.0])], 1)
    pf = ParticleFilter(FilterConfig(resample_jitter=1.0), split.clone(), generator=g)
    pf.resample(force=True)
    left = pf.particles[0, pf.particles[0, :, 0] < 13.0]
    # each place widens by at most the capped kernel (1 m times h), not by h * 10 m
    assert left[:, 0].std() < math.hypot(0.6, KERNEL_MAX_STD_XY * kernel_bandwidth(k)) * 1.05
    assert pf.particles[..., 2].abs().max() <= math.pi
    bad = torch.full((1, 3, 3), math.nan)
    assert torch.equal(regularize(p[:, :8], bad, 1.0, g), p[:, :8])
    with pytest.raises(ValueError):
        FilterConfig(resample_jitter=-1.0)
