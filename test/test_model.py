"""DMN networks: shapes, reference == factorised, invariance, gradients, init."""
import math

import pytest
import torch

from dmn_localizer.filter import FilterConfig, ParticleFilter
from dmn_localizer.model import DMN, DMNConfig, images_to_tensor

torch.set_num_threads(1)


def _inputs(B, N, K, S, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    ci = torch.rand(B, N, 3, S, S, generator=g, dtype=dtype) * 2 - 1
    cp = torch.rand(B, N, 3, generator=g, dtype=dtype) * torch.tensor([40, 40, 6.28]) - \
        torch.tensor([0, 0, 3.14])
    qi = torch.rand(B, 3, S, S, generator=g, dtype=dtype) * 2 - 1
    p = torch.rand(B, K, 3, generator=g, dtype=dtype) * torch.tensor([40, 40, 6.28]) - \
        torch.tensor([0, 0, 3.14])
    return ci, cp.to(dtype), qi, p.to(dtype)


@pytest.mark.parametrize('S,N,K', [(16, 1, 1), (32, 4, 7), (16, 9, 3), (64, 2, 5)])
def test_shapes_any_n_k(S, N, K):
    model = DMN(DMNConfig(image_size=S))
    ci, cp, qi, p = _inputs(2, N, K, S)
    m = model.build_map(ci, cp)
    assert m.embeddings.shape == (2, N, 64, S // 4, S // 4)
    q = model.encode_query(qi)
    assert q.key.shape == (2, 32, S // 4, S // 4)
    ll = model.log_likelihood(m, q, p)
    assert ll.shape == (2, K) and torch.isfinite(ll).all()
    assert torch.allclose(model.log_likelihood(m, q, p, chunk=2), ll, atol=1e-5)


def test_same_weights_serve_any_n_and_k():
    model = DMN(DMNConfig(image_size=16))
    ci, cp, qi, p = _inputs(1, 8, 16, 16)
    full = model(ci, cp, qi, p)
    assert torch.allclose(model(ci, cp, qi, p[:, :4]), full[:, :4], atol=1e-5)
    assert model(ci[:, :3], cp[:, :3], qi, p).shape == (1, 16)


@pytest.mark.parametrize('cfg', [
    DMNConfig(image_size=16),
    DMNConfig(image_size=16, attention='linear', query_trunk_sharing='none'),
    DMNConfig(attention='sigmoid', query_trunk_sharing='cnn1', final_relu=True),
    DMNConfig(image_size=32, attention_temperature=0.5),
    # the paper's ablations: without attention, without egocentric transform, without both
    DMNConfig(image_size=16, attention='uniform'),
    DMNConfig(image_size=16, egocentric=False),
    DMNConfig(image_size=16, attention='uniform', egocentric=False),
])
def test_reference_equals_efficient(cfg):
    torch.manual_seed(1)
    model = DMN(cfg)
    with torch.no_grad():  # larger last layer so differences would show
        model.fc1b.weight.mul_(10.0)
        model.fc1b.bias.fill_(0.3)
    ci, cp, qi, p = _inputs(2, 3, 5, cfg.image_size)
    a = model(ci, cp, qi, p)
    b = model.reference_log_likelihood(ci, cp, qi, p)
    assert (a - b).abs().max().item() < 1e-4
    # gradients agree too
    ga = torch.autograd.grad(a.square().sum(), list(model.parameters()), allow_unused=True)
    gb = torch.autograd.grad(model.reference_log_likelihood(ci, cp, qi, p).square().sum(),
                             list(model.parameters()), allow_unused=True)
    for x, y in zip(ga, gb):
        if x is not None or y is not None:
            assert torch.allclose(x, y, atol=1e-4, rtol=1e-3)


@pytest.mark.parametrize('weights', ['shipped', 'random_biases'])
def test_inference_path_equals_reference(weights):
    """Without autograd the fast path runs its own code (sums in place, the view key's bias
    through CNN6's first conv once, FC1 as a convolution, blocks of HEAD_CHUNK particles):
    still the reference's log-likelihoods within 1e-4, with the shipped weights and with
    random nonzero biases (initialisation leaves them 0), over all contexts, over each
    particle's selected contexts, and in a batch of two maps."""
    from dmn_localizer.model.dmn import HEAD_CHUNK
    from dmn_localizer.model.io import load_model
    from dmn_localizer.util.resources import dmn_model_path
    if weights == 'shipped':
        model = load_model(dmn_model_path())
    else:
        torch.manual_seed(5)
        model = DMN(DMNConfig())
        with torch.no_grad():
            for m in model.modules():
                if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
                    m.bias.normal_(0.0, 0.2)
            model.fc1b.weight.mul_(50.0)      # so that differences would show
    model.eval()
    K, N = HEAD_CHUNK + 44, 5                     # two blocks, the second a partial one
    ci, cp, qi, p = _inputs(1, N, K, 32, seed=7)
    with torch.no_grad():
        ref = model.reference_log_likelihood(ci, cp, qi, p)
        ms, q = model.build_map(ci, cp), model.encode_query(qi)
        every = torch.arange(N).expand(K, N)
        got = {'all contexts': model.log_likelihood(ms, q, p),
               'selected contexts': model.log_likelihood_selected(ms, q, p, every.flip(1))}
        ci2, cp2, qi2, p2 = _inputs(2, N, 40, 32, seed=8)
        batch = model(ci2, cp2, qi2, p2)
        ref2 = model.reference_log_likelihood(ci2, cp2, qi2, p2)
    assert ref.std() > 0.1                        # the likelihoods differ between particles
    for name, ll in got.items():
        assert (ll - ref).abs().max().item() < 1e-4, name
    assert (batch - ref2).abs().max().item() < 1e-4


def test_nearest_contexts_equal_a_map_of_just_those():
    """``log_likelihood_nearest``: each particle's log-likelihood equals the one computed on a
    map of only its M nearest contexts (x-y distance), for each map of a batch; with M >= Nc
    it is the all-contexts log-likelihood."""
    from dmn_localizer.model.nearest import log_likelihood_nearest, nearest_context_index
    torch.manual_seed(2)
    model = DMN(DMNConfig(image_size=16)).eval()
    with torch.no_grad():
        model.fc1b.weight.mul_(30.0)
    ci, cp, qi, p = _inputs(2, 6, 7, 16, seed=4)
    with torch.no_grad():
        ms, q = model.build_map(ci, cp), model.encode_query(qi)
        got = log_likelihood_nearest(model, ms, q, p, 2)
        assert torch.allclose(log_likelihood_nearest(model, ms, q, p, 6),
                              model.log_likelihood(ms, q, p), atol=1e-5)
        for b in range(2):
            for k in range(7):
                d = (cp[b, :, :2] - p[b, k, :2]).norm(dim=-1)
                near = d.argsort()[:2]
                assert set(nearest_context_index(cp[b], p[b], 2)[k].tolist()) == \
                    set(near.tolist())
                one = model(ci[b:b + 1, near], cp[b:b + 1, near], qi[b:b + 1],
                            p[b:b + 1, k:k + 1])
                assert (got[b, k] - one[0, 0]).abs() < 1e-4, (b, k)
        assert (got - model.log_likelihood(ms, q, p)).abs().max() > 1e-2


def test_bf16_autocast_keeps_the_attention_in_fp32():
    """Under bf16 autocast (``precision: bf16``) the memory-bound attention runs in fp32 on
    the map's fp32 tensors (bf16 would only add casts), the convolutions after it in bf16: the
    attention weights come out fp32 and within bf16's error of fp32's, on both paths, and the
    log-likelihoods stay close to fp32's."""
    from dmn_localizer.model.io import load_model
    from dmn_localizer.util.resources import dmn_model_path
    model = load_model(dmn_model_path()).eval()
    K, N = 300, 5
    ci, cp, qi, p = _inputs(1, N, K, 32, seed=9)
    every = torch.arange(N).expand(K, N)
    with torch.no_grad():
        ms = model.build_map(ci, cp)
        q32 = model.encode_query(qi)
        ll32, lam32 = model.log_likelihood(ms, q32, p, return_attention=True)
        sel32 = model.log_likelihood_selected(ms, q32, p, every)
        with torch.autocast('cpu', dtype=torch.bfloat16):
            q16 = model.encode_query(qi)
            ll16, lam16 = model.log_likelihood(ms, q16, p, return_attention=True)
            sel16 = model.log_likelihood_selected(ms, q16, p, every)
            lam_sel, _ = model._selected_attention(
                ms, q16, model._selected_coords(ms.poses[0], p[0], every), every, 32)
    assert q16.key.dtype == torch.bfloat16                   # autocast was on
    assert lam16.dtype == torch.float32 and lam_sel.dtype == torch.float32
    assert (lam16 - lam32).abs().max().item() < 0.002   # bf16 attention: 0.02 here
    assert (lam_sel - lam32[0]).abs().max().item() < 0.002
    assert (ll16.float() - ll32).abs().max().item() < 0.1 * ll32.std().item()
    assert (sel16.float() - sel32).abs().max().item() < 0.1 * ll32.std().item()


def _se2(poses, tx, ty, th):
    c, s = math.cos(th), math.sin(th)
    x = c * poses[..., 0] - s * poses[..., 1] + tx
    y = s * poses[..., 0] + c * poses[..., 1] + ty
    yaw = torch.remainder(poses[..., 2] + th + math.pi, 2 * math.pi) - math.pi
    return torch.stack([x, y, yaw], -1)


def test_world_motion_invariance():
    model = DMN(DMNConfig(image_size=16)).double()
    ci, cp, qi, p = _inputs(2, 4, 6, 16, dtype=torch.double)
    base = model(ci, cp, qi, p)
    for tx, ty, th in [(100.0, -37.0, 0.0), (0.0, 0.0, 2.5), (-500.0, 1234.5, -1.2)]:
        moved = model(ci, _se2(cp, tx, ty, th), qi, _se2(p, tx, ty, th))
        assert torch.allclose(moved, base, atol=1e-6)
    assert not torch.allclose(model(ci, cp, qi, p + torch.tensor([3.0, 0, 0]).double()), base,
                              atol=1e-6)


def test_attention_logits_are_what_the_attention_normalises():
    """``attention_logits`` softmaxed over contexts are the attention weights, they move with
    the particle's pose relative to the contexts only, and they need no head."""
    torch.manual_seed(0)
    model = DMN(DMNConfig(image_size=16)).double()
    ci, cp, qi, p = _inputs(2, 4, 6, 16, dtype=torch.double)
    m, q = model.build_map(ci, cp), model.encode_query(qi)
    logits = model.attention_logits(m, q, p)
    _, lam = model.log_likelihood(m, q, p, return_attention=True)
    assert logits.shape == lam.shape == (2, 6, 4)
    torch.testing.assert_close(torch.softmax(logits, -1), lam)
    moved = model.attention_logits(model.build_map(ci, _se2(cp, 30.0, -7.0, 1.1)), q,
                                   _se2(p, 30.0, -7.0, 1.1))
    torch.testing.assert_close(moved, logits)
    assert not torch.allclose(model.attention_logits(m, q, p + 2.0), logits)


def test_ablations_lose_what_they_ablate():
    """Without the egocentric transform the likelihoods depend on where the world is (no
    invariance); without attention they do not depend on the query key network."""
    torch.manual_seed(0)
    model = DMN(DMNConfig(image_size=16, egocentric=False)).double()
    ci, cp, qi, p = _inputs(2, 4, 6, 16, dtype=torch.double)
    moved = model(ci, _se2(cp, 10.0, -3.0, 0.7), qi, _se2(p, 10.0, -3.0, 0.7))
    assert not torch.allclose(moved, model(ci, cp, qi, p), atol=1e-6)
    model = DMN(DMNConfig(image_size=16, attention='uniform', query_trunk_sharing='none'))
    ci, cp, qi, p = _inputs(2, 4, 6, 16)
    before = model(ci, cp, qi, p)
    with torch.no_grad():
        for q in model.cnn3_head.parameters():
            q.add_(torch.randn_like(q))
    torch.testing.assert_close(model(ci, cp, qi, p), before)


def test_gradients_reach_every_parameter_through_soft_resampling():
    torch.manual_seed(0)
    model = DMN(DMNConfig(image_size=16, query_trunk_sharing='none'))
    B, N, K, T = 2, 3, 8, 3
    ci, cp, qi, _ = _inputs(B, N, K, 16)
    truth = torch.tensor([[10.0, 10.0, 0.1], [30.0, 5.0, -2.0]])
    g = torch.Generator().manual_seed(0)
    pf = ParticleFilter(FilterConfig(resample='soft', soft_alpha=0.5, resample_ess_ratio=1.0),
                        truth[:, None] + torch.randn(B, K, 3, generator=g), generator=g)
    m = model.build_map(ci, cp)
    loss = 0
    for t in range(T):
        if t:
            pf.predict(torch.zeros(B, 3))
        pf.update(model.log_likelihood(m, model.encode_query(qi), pf.particles))
        loss = loss + (pf.estimate()[:, :2] - truth[:, :2]).square().sum()
        pf.resample()
    # the last step's update only reaches the loss via the weights; earlier steps through
    # the soft-resampled weights
    loss.backward()
    missing = [n for n, prm in model.named_parameters()
               if prm.grad is None or prm.grad.abs().sum() == 0]
    assert not missing, missing


def test_init_wakes_image_paths():
    """He init + small last layer: swapping the query image moves the centred log-likelihood
    by a meaningful fraction of its spread across particles (TRAINING_NOTES: default init
    moved it by 0.0000)."""
    torch.manual_seed(0)
    model = DMN()
    ci, cp, qi, p = _inputs(1, 4, 64, 32)
    a = model(ci, cp, qi, p)
    b = model(ci, cp, torch.rand_like(qi) * 2 - 1, p)
    a, b = a - a.mean(), b - b.mean()
    assert (a - b).abs().mean() > 0.05 * a.std()


def test_images_to_tensor():
    import numpy as np
    x = images_to_tensor(np.array([[[[0, 255, 128]]]], dtype=np.uint8))
    assert x.shape == (1, 3, 1, 1)
    assert torch.allclose(x.flatten(), torch.tensor([-1.0, 1.0, 128 / 127.5 - 1]), atol=1e-6)
    with pytest.raises(ValueError):
        images_to_tensor(np.zeros((1, 2, 2, 3), dtype=np.float32))


def test_config_validation():
    with pytest.raises(ValueError, match='attention'):
        DMNConfig(attention='bogus')
    with pytest.raises(ValueError, match='query_trunk_sharing'):
        DMNConfig(query_trunk_sharing='cnn4')
    with pytest.raises(ValueError, match='unknown'):
        DMNConfig.from_dict({'nope': 1})
    with pytest.raises(ValueError):
        DMN()(*_inputs(1, 2, 2, 64))


@pytest.mark.parametrize('egocentric', [True, False])
def test_selected_contexts_equal_a_map_of_just_those(egocentric):
    """log_likelihood_selected == log_likelihood on a map of each particle's contexts."""
    torch.manual_seed(3)
    model = DMN(DMNConfig(egocentric=egocentric)).double().eval()
    N, K, M = 10, 6, 3
    imgs = torch.rand(1, N, 3, 32, 32, dtype=torch.float64) * 2 - 1
    poses = torch.rand(1, N, 3, dtype=torch.float64) * 30
    particles = torch.rand(1, K, 3, dtype=torch.float64) * 30
    query = model.encode_query(torch.rand(1, 3, 32, 32, dtype=torch.float64) * 2 - 1)
    ms = model.build_map(imgs, poses)
    index = torch.stack([torch.randperm(N)[:M] for _ in range(K)])
    got = model.log_likelihood_selected(ms, query, particles, index)
    for k in range(K):
        sub = model.build_map(imgs[:, index[k]], poses[:, index[k]])
        want = model.log_likelihood(sub, query, particles[:, k:k + 1])
        torch.testing.assert_close(got[:, k:k + 1], want, rtol=1e-9, atol=1e-9)
