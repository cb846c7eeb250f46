"""The localizer core (no ROS): odometry interpolation, AMCL-style update gating, belief init,
and that a real (tiny, untrained) DMN drives the weights."""
import dataclasses
import math

import numpy as np
import pytest
import torch

from dmn_localizer.config import LocalizerConfig
from dmn_localizer.geometry import compose
from dmn_localizer.localization.diagnostics import filter_values
from dmn_localizer.localization.localizer import Localizer
from dmn_localizer.localization.odometry import OdometryBuffer
from dmn_localizer.mapping.view_map import ViewMap
from dmn_localizer.model.config import DMNConfig
from dmn_localizer.model.dmn import DMN
from dmn_localizer.model.preprocess import images_to_tensor
from dmn_localizer.util.device import select_device


def test_odometry_interpolation_and_delta():
    buf = OdometryBuffer()
    buf.add(0.0, [0.0, 0.0, 3.0])
    buf.add(1.0, [2.0, 0.0, -3.0])  # yaw crosses the +-pi seam: shortest arc
    p = buf.pose_at(0.5)
    np.testing.assert_allclose(p[:2], [1.0, 0.0])
    assert abs(abs(p[2]) - math.pi) < 1e-9
    assert buf.pose_at(-0.1) is None and buf.pose_at(5.0) is None
    d = buf.delta(0.0, 1.0)
    np.testing.assert_allclose(compose(np.array([0.0, 0.0, 3.0]), d), [2.0, 0.0, -3.0],
                               atol=1e-9)
    assert buf.add(0.5, [0, 0, 0]) is True and len(buf) == 1  # time went back: reset


@pytest.fixture(scope='module')
def tiny_model():
    torch.manual_seed(0)
    return DMN(DMNConfig())


def four_context_map():
    rng = np.random.default_rng(0)
    vm = ViewMap()
    for i in range(4):
        vm.add(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8), [5.0 * i, 2.0, 0.3 * i])
    return vm


def make_localizer(model, **overrides):
    cfg = LocalizerConfig(**{'num_particles': 64, 'global_num_particles': 128, **overrides})
    loc = Localizer(model, cfg, 'cpu', seed=1)
    loc.set_map(four_context_map())
    return loc


def test_global_init_covers_map_region(tiny_model):
    loc = make_localizer(tiny_model, global_initial_particles=512)
    loc.init_global()
    p, w = loc.particle_array()
    assert p.shape == (512, 3) and np.isclose(w.sum(), 1.0)  # narrowed to 128 by the update
    x0, y0, size = loc.bounds
    assert (p[:, 0] >= x0).all() and (p[:, 0] <= x0 + size).all()
    assert size == pytest.approx(15.0 + 4.0)  # contexts span 15 m, plus 2 m margin each side


def test_updates_follow_amcl_gating(tiny_model):
    loc = make_localizer(tiny_model, update_min_d=0.5, update_min_a=0.5)
    loc.init_gaussian([5.0, 2.0, 0.0], [1.0, 1.0, 0.2])
    img = np.zeros((32, 32, 3), np.uint8)
    assert loc.update(img).updated  # first image after init
    before = loc.particle_array()[1].copy()
    loc.add_motion([0.1, 0.0, 0.0])
    assert not loc.update(img).updated  # moved 0.1 m < 0.5 m
    loc.add_motion([0.5, 0.0, 0.0])
    rep = loc.update(img)
    assert rep.updated and 1.0 <= rep.ess <= 64.0
    assert loc.update(img, force=True).updated  # request_nomotion_update
    assert not np.allclose(loc.particle_array()[1], before) or rep.resampled


def test_close_updates_count_as_their_share_of_an_independent_view(tiny_model):
    """An update after less motion than evidence_min_d / evidence_min_a changes the log-weights
    by that share of the likelihoods (0.3 m of 0.5 m: 0.6; the larger of the two shares);
    with the settings at 0 by all of them; a forced update counts fully."""
    rng = np.random.default_rng(4)
    images = rng.integers(0, 255, (3, 32, 32, 3), dtype=np.uint8)
    changes = {}
    for d, a in ((0.5, 0.5), (0.0, 0.0)):
        loc = make_localizer(tiny_model, evidence_min_d=d, evidence_min_a=a, health_samples=0,
                             motion_noise_xy=0.0, motion_noise_yaw=0.0, motion_jump_share=0.0,
                             resample_ess_ratio=0.0)
        loc.init_gaussian([5.0, 2.0, 0.0], [2.0, 2.0, 0.5])
        assert loc.update(images[0]).updated           # the first image: forced
        for motion, share in (([0.3, 0.0, 0.1], 0.6), ([0.1, 0.0, -0.4], 0.8)):
            before = loc.log_weights.clone()
            loc.add_motion(motion)
            assert loc.evidence_share() == pytest.approx(share if d else 1.0)
            assert loc.update(images[1]).updated
            change = loc.log_weights - before
            changes.setdefault(d, []).append(change - change[..., :1])
        before = loc.log_weights.clone()
        assert loc.update(images[2], force=True).updated   # no motion, forced: counts fully
        change = loc.log_weights - before
        changes[d].append(change - change[..., :1])
    for got, full, share in zip(changes[0.5], changes[0.0], (0.6, 0.8, 1.0)):
        assert full.abs().max() > 1e-3                     # the image moved the weights
        torch.testing.assert_close(got, share * full, atol=1e-4, rtol=1e-4)


def weight_changes(model, images, steps, **config):
    """(localizer, the change of the log weights at each update relative to particle 0, each
    update's evidence) of a Gaussian belief updated with ``images``, one per step of ``steps``:
    a motion [dx, dy, dyaw] before the update, None (a forced update without motion) or 'new'
    (a new belief, drawn afresh, first). No noise, jumps, resampling or health check."""
    loc = make_localizer(model, health_samples=0, motion_noise_xy=0.0, motion_noise_yaw=0.0,
                         motion_jump_share=0.0, resample_ess_ratio=0.0, **config)
    out, evidence = [], []
    for i, (image, motion) in enumerate(zip(images, steps)):
        if i == 0 or motion == 'new':
            loc.init_gaussian([5.0, 2.0, 0.0], [2.0, 2.0, 0.5])
        before = loc.log_weights.clone()
        if isinstance(motion, list):
            loc.add_motion(motion)
        report = loc.update(image, force=motion is None)
        assert report.updated
        change = loc.log_weights - before
        out.append(change - change[..., :1])
        evidence.append(report.evidence)
    return loc, out, evidence


@pytest.mark.parametrize('name,value,steps,scales', [
    # after motion, on top of the evidence share (0.3 m of 0.5: 0.6); the first image and a
    # forced update count fully
    ('likelihood_scale', 0.5, ([0, 0, 0], [0.3, 0.0, 0.1], [1.0, 0.0, 0.0], None),
     (1.0, 0.5, 0.5, 1.0)),
    # the first update of each new belief only (a forced update is no new belief)
    ('initial_likelihood_scale', 3.0,
     ([0, 0, 0], [0.6, 0.0, 0.1], None, 'new', [0.6, 0.0, 0.0]), (3.0, 1.0, 1.0, 3.0, 1.0))])
def test_likelihood_factors_weigh_their_updates(tiny_model, name, value, steps, scales):
    """likelihood_scale multiplies the log-likelihoods in the weights of every update after
    motion; initial_likelihood_scale those of the first update of a new belief (init_gaussian,
    init_global); each -1 (the default) takes the model card's metadata value, else 1; a value
    set is used as given. The lost flag's evidence is unscaled."""
    rng = np.random.default_rng(5)
    images = rng.integers(0, 255, (len(steps), 32, 32, 3), dtype=np.uint8)
    full_loc, full, full_evidence = weight_changes(tiny_model, images, steps)
    assert getattr(full_loc, name) == 1.0                    # no card value: 1
    set_loc, scaled, scaled_evidence = weight_changes(tiny_model, images, steps,
                                                      **{name: value})
    assert getattr(set_loc, name) == value
    for got, f, scale in zip(scaled, full, scales):
        assert f.abs().max() > 1e-3
        torch.testing.assert_close(got, scale * f, atol=1e-4, rtol=1e-4)
    assert scaled_evidence[0] == pytest.approx(full_evidence[0])   # the flag reads raw scores
    carded = DMN(DMNConfig())
    carded.load_state_dict(tiny_model.state_dict())
    carded.card = {'metadata': {name: value}}
    card_loc, from_card, _ = weight_changes(carded, images, steps)
    assert getattr(card_loc, name) == value
    for c, got in zip(from_card, scaled):
        torch.testing.assert_close(c, got)
    assert getattr(weight_changes(carded, images, steps, **{name: 1.0})[0], name) == 1.0


def test_jumps_scale_with_the_evidence_share(tiny_model):
    """motion_jump_* reach the filter; an update after 0.3 m (evidence_min_d 0.5 m) jumps 0.6
    times as many particles as a full one (the jumps per metre do not grow with the frame
    rate)."""
    moved = {}
    for d in (0.5, 0.3):
        loc = make_localizer(tiny_model, num_particles=8000, motion_noise_xy=0.0,
                             motion_noise_yaw=0.0, motion_jump_share=0.2, motion_jump_xy=1.0,
                             motion_jump_yaw=0.3, health_samples=0, resample_ess_ratio=0.0)
        loc.init_gaussian([5.0, 2.0, 0.0], [0.0, 0.0, 0.0])
        loc.add_motion([d, 0.0, 0.0])
        loc.force_next = False
        assert loc.update(np.zeros((32, 32, 3), np.uint8)).updated
        off = np.hypot(*(loc.particle_array()[0][:, :2] - [5.0 + d, 2.0]).T)
        moved[d] = float((off > 1e-4).mean())
    assert moved[0.5] == pytest.approx(0.2, abs=0.015)
    assert moved[0.3] == pytest.approx(0.12, abs=0.015)


def test_weights_depend_on_the_image(tiny_model):
    """Same particles, different query images -> different weights: the DMN is in the loop."""
    a, b = make_localizer(tiny_model), make_localizer(tiny_model)
    a.init_gaussian([5.0, 2.0, 0.0], [3.0, 3.0, 1.0])
    b.init_gaussian([5.0, 2.0, 0.0], [3.0, 3.0, 1.0])
    rng = np.random.default_rng(3)
    a.update(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8))
    b.update(np.zeros((32, 32, 3), np.uint8))
    assert torch.isfinite(a.log_weights).all() and torch.isfinite(b.log_weights).all()
    assert not torch.allclose(a.log_weights, b.log_weights)


def test_estimate_of_gaussian_belief(tiny_model):
    loc = make_localizer(tiny_model, num_particles=4000)
    loc.init_gaussian([5.0, 2.0, 3.1], [0.5, 0.5, 0.1], k=4000)
    mean, cov = loc.estimate()
    np.testing.assert_allclose(mean[:2], [5.0, 2.0], atol=0.05)
    assert abs((mean[2] - 3.1 + math.pi) % (2 * math.pi) - math.pi) < 0.02
    np.testing.assert_allclose(np.sqrt(np.diag(cov)), [0.5, 0.5, 0.1], rtol=0.1)


def test_device_selection():
    assert select_device('cpu').type == 'cpu'
    with pytest.raises(ValueError):
        select_device('tpu')


def test_map_embeddings_from_the_mapper_are_reused(tiny_model):
    """A map carrying the same model's embeddings gives the same likelihoods without CNN1."""
    tiny_model.model_id = 'dmn-test'
    loc = make_localizer(tiny_model)
    vm = ViewMap(model_id='dmn-test')
    rng = np.random.default_rng(0)
    with torch.no_grad():
        for i in range(4):
            img = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
            emb = tiny_model.embed(images_to_tensor(img[None]))[0].numpy()
            vm.add(img, [5.0 * i, 2.0, 0.3 * i], emb)
    assert vm.embeddings.shape == (4, 64, 8, 8)
    loc.set_map(vm)
    from_embeddings = loc.map_state
    vm.model_id = 'another-model'  # foreign embeddings are ignored: images are re-embedded
    loc.set_map(vm)
    torch.testing.assert_close(from_embeddings.feat6, loc.map_state.feat6)
    torch.testing.assert_close(from_embeddings.key_pre, loc.map_state.key_pre)


def test_map_embeddings_that_do_not_fit_the_model_are_not_used(tiny_model, caplog):
    """A map file whose embeddings carry the model's id but not its shape (damaged, or
    written by other code) is embedded from its images, with one warning, not a crash."""
    tiny_model.model_id = 'dmn-test'
    loc = make_localizer(tiny_model)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (4, 32, 32, 3), dtype=np.uint8)
    poses = [[5.0 * i, 2.0, 0.3 * i] for i in range(4)]
    reference = ViewMap()
    for img, pose in zip(images, poses):
        reference.add(img, pose)
    loc.set_map(reference)
    want = loc.map_state
    for bad in (np.zeros((4, 1), np.float32), np.zeros((4, 64, 8, 8), np.int64)):
        vm = ViewMap(images=images, poses=np.asarray(poses, np.float32), embeddings=bad,
                     model_id='dmn-test')
        caplog.clear()
        with caplog.at_level('WARNING'):
            loc.set_map(vm)
        assert [r.message for r in caplog.records if 'do not fit model dmn-test' in r.message]
        torch.testing.assert_close(want.feat6, loc.map_state.feat6)


def test_nearest_contexts_path(tiny_model):
    """With M >= N contexts the nearest-M path is the plain path; with M < N a particle's
    likelihood equals the plain path on a map of just its M nearest contexts."""
    loc = make_localizer(tiny_model, nearest_contexts=8)  # 4 contexts
    loc.init_gaussian([5.0, 2.0, 0.0], [4.0, 4.0, 1.0])
    img = np.random.default_rng(5).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    with torch.no_grad():
        q = tiny_model.encode_query(images_to_tensor(img[None]))
        plain = tiny_model.log_likelihood(loc.map_state, q, loc.particles)
        torch.testing.assert_close(loc.model_log_likelihood(q, loc.particles), plain)
        loc.config.nearest_contexts = 2
        near = loc.model_log_likelihood(q, loc.particles)
        p = loc.particles[:, :1]
        d = np.hypot(*(loc.map_state.poses[0, :, :2] - p[0, 0, :2]).numpy().T)
        keep = torch.as_tensor(np.argsort(d)[:2])
        sub = tiny_model.build_map(images_to_tensor(four_context_map().images[keep.numpy()][None]),
                                   loc.map_state.poses[:, keep])
        torch.testing.assert_close(near[:, :1], tiny_model.log_likelihood(sub, q, p),
                                   atol=1e-5, rtol=1e-5)


def test_nearest_contexts_from_the_card(tiny_model):
    """``nearest_contexts`` -1 (the default) takes the model card's metadata value, else 8; a
    value >= 0 wins over the card; the count in use is what scores the particles."""
    img = np.random.default_rng(6).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    scores = {}
    try:
        for card, param in ((None, -1), ({'nearest_contexts': 2}, -1), (None, 2),
                            ({'nearest_contexts': 2}, 0), ({'nearest_contexts': 0}, -1)):
            if card is None:
                tiny_model.__dict__.pop('card', None)
            else:
                tiny_model.card = {'metadata': card}
            loc = make_localizer(tiny_model, nearest_contexts=param)       # 4 contexts
            loc.init_gaussian([5.0, 2.0, 0.0], [4.0, 4.0, 1.0])
            with torch.no_grad():
                q = tiny_model.encode_query(images_to_tensor(img[None]))
                scores[card and card['nearest_contexts'], param] = (
                    loc.nearest_contexts, loc.model_log_likelihood(q, loc.particles))
            assert filter_values(loc)['nearest_contexts'] == loc.nearest_contexts
    finally:
        tiny_model.__dict__.pop('card', None)
    assert [v[0] for v in scores.values()] == [8, 2, 2, 0, 0]
    torch.testing.assert_close(scores[2, -1][1], scores[None, 2][1])   # the card's 2 is used
    assert not torch.allclose(scores[2, -1][1], scores[None, -1][1])   # 2 of 4 is not all 4
    torch.testing.assert_close(scores[2, 0][1], scores[None, -1][1])   # 0 (all) = 8 >= 4


@pytest.mark.parametrize('nearest', [0, 2])  # all contexts, and the nearest-M path
def test_bf16_precision_close_to_fp32(nearest):
    """precision 'bf16' (autocast) gives weights close to fp32's; bad values are refused."""
    from dmn_localizer.model.io import load_model
    from dmn_localizer.util.resources import dmn_model_path
    model = load_model(dmn_model_path())      # the shipped weights: realistic values
    rng = np.random.default_rng(2)
    image = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
    weights = {}
    for precision in ('fp32', 'bf16'):
        loc = make_localizer(model, precision=precision, health_samples=0,
                             nearest_contexts=nearest, global_initial_particles=0)
        loc.init_global()
        loc.update(image, force=True)
        weights[precision] = loc.particle_array()[1]
    assert not np.allclose(weights['fp32'], weights['bf16'], rtol=0, atol=1e-9)  # it is bf16
    assert 0.5 * np.abs(weights['fp32'] - weights['bf16']).sum() < 0.02  # total variation
    with pytest.raises(ValueError, match='precision'):
        make_localizer(model, precision='fp16')


def test_rate_monitor_counts_the_window_and_restarts_when_time_goes_back():
    from dmn_localizer.localization.rates import RateMonitor
    m = RateMonitor(window_s=5.0)
    assert m.rate(0.0) == 0.0
    for i in range(11):
        m.tick(100.0 + 0.5 * i)                   # 2 Hz for 5 s
    assert m.rate(105.0) == pytest.approx(2.0)
    assert m.rate(108.0) == pytest.approx(2.0)    # the last 4 events still in the window
    assert m.rate(120.0) == 0.0                   # none in the window
    m.tick(130.0)
    m.tick(10.0)                                  # a looped bag: the window starts again
    assert len(m.times) == 1 and m.rate(10.0) == 0.0


def test_heaviest_cluster_pose_and_a_covariance_that_covers_the_other_mode(tiny_model, caplog):
    """Two modes, 70% and 30% of the weight, 10 m apart: with 'heaviest_cluster' the
    published pose is the heavy mode's (AMCL's rule), not the weighted mean between them; the
    covariance is the cloud's spread around that pose, so it still covers the other mode.
    'mean' publishes the mean. The parameter's default (empty) takes the rule chosen for the
    model (its card's metadata.pose_estimate), else 'mean'; a card with an unknown rule gets
    one warning and the mean."""
    assert LocalizerConfig().pose_estimate == ''
    assert make_localizer(tiny_model).pose_estimate == 'mean'      # a model without a card
    tiny_model.card = {'metadata': {'pose_estimate': 'heaviest_cluster'}}
    try:
        for chosen_by in ({'pose_estimate': 'heaviest_cluster'}, {}):   # parameter, card
            loc = make_localizer(tiny_model, num_particles=1000, **chosen_by)
            assert loc.pose_estimate == 'heaviest_cluster'
            loc.init_gaussian([0.0, 0.0, 0.0], [0.2, 0.2, 0.05], k=1000)
            loc.particles[0, 700:, 0] += 10.0
            pose, cov = loc.estimate()
            assert abs(pose[0]) < 0.1 and abs(pose[1]) < 0.1
            assert cov[0, 0] > 0.3 * 10.0 ** 2 * 0.9          # second moment about the pose
        loc.config = dataclasses.replace(loc.config, pose_estimate='mean')   # the parameter
        mean, cov_mean = loc.estimate()                                    # wins over the card
        assert abs(mean[0] - 3.0) < 0.1
        assert cov_mean[0, 0] < cov[0, 0]
        tiny_model.card = {'metadata': {'pose_estimate': 'median'}}
        caplog.clear()
        assert make_localizer(tiny_model).pose_estimate == 'mean'
        assert sum("card's pose_estimate 'median'" in r.message for r in caplog.records) == 1
    finally:
        del tiny_model.card
    with pytest.raises(ValueError, match='pose_estimate'):
        make_localizer(tiny_model, pose_estimate='median')


@pytest.mark.parametrize('std_m,scale,max_std,published', [
    (0.2, 0.2, 0.5, 0.2),     # a tight cloud (tracking): the calibrated shrink applies
    (2.0, 0.2, 0.5, 1.0),     # a wide one (converging, searching): published as it is
    (2.0, 0.2, 0.0, 0.2),     # max_std 0: the shrink applies to every cloud
    (2.0, 3.0, 0.5, 3.0)])    # a scale above 1 (an overconfident model) applies to every cloud
def test_covariance_scale_shrinks_only_a_tight_cloud(tiny_model, std_m, scale, max_std,
                                                     published):
    """The published covariance is the cloud's times covariance_scale, except that a scale
    below 1 applies only while the cloud's x-y std is below covariance_scale_max_std."""
    from dmn_localizer.filter.particle_filter import covariance
    loc = make_localizer(tiny_model, num_particles=4000, covariance_scale=scale,
                         covariance_scale_max_std=max_std, covariance_scale_min_updates=0)
    loc.init_gaussian([5.0, 2.0, 0.3], [std_m, std_m, 0.1])
    mean, cov = loc.estimate()
    cloud = covariance(loc.particles, loc.log_weights,
                       torch.as_tensor(mean, dtype=torch.float32)[None])[0].double().numpy()
    np.testing.assert_allclose(cov, cloud * published, rtol=1e-4, atol=1e-9)


@pytest.mark.parametrize('card,param,max_std', [
    (None, -1.0, 0.5),                                # no card value: 0.5 m
    ({'covariance_scale_max_std': 1.5}, -1.0, 1.5),   # the card's (calibrate-lost)
    ({'covariance_scale_max_std': 1.5}, 0.5, 0.5)])   # a value >= 0 overrides the card
def test_covariance_scale_max_std_comes_from_the_card(tiny_model, card, param, max_std):
    """covariance_scale_max_std -1 (the default): the card's value, else 0.5 m; a cloud of
    1 m is shrunk by a scale below 1 only where the value in use is above 1 m."""
    from dmn_localizer.filter.particle_filter import covariance
    try:
        if card is not None:
            tiny_model.card = {'metadata': card}
        loc = make_localizer(tiny_model, num_particles=4000, covariance_scale=0.2,
                             covariance_scale_max_std=param, covariance_scale_min_updates=0)
        loc.init_gaussian([5.0, 2.0, 0.3], [1.0, 1.0, 0.1])
        mean, cov = loc.estimate()
        assert loc.covariance_scale_max_std == max_std
        assert filter_values(loc)['covariance_scale_max_std'] == max_std
    finally:
        tiny_model.__dict__.pop('card', None)
    cloud = covariance(loc.particles, loc.log_weights,
                       torch.as_tensor(mean, dtype=torch.float32)[None])[0].double().numpy()
    np.testing.assert_allclose(cov, cloud * (0.2 if max_std > 1.0 else 1.0), rtol=1e-4,
                               atol=1e-9)


def test_covariance_scale_shrinks_a_cloud_only_after_it_stayed_tight(tiny_model):
    """covariance_scale_min_updates: a scale below 1 applies from the Nth update in a row with
    a tight cloud on; a wide cloud restarts the count, and so does a new belief."""
    from dmn_localizer.localization.localizer import cloud_xy_std
    loc = make_localizer(tiny_model, num_particles=2000, covariance_scale=0.25,
                         covariance_scale_min_updates=3, motion_noise_xy=0.0,
                         motion_noise_yaw=0.0, motion_jump_share=0.0, resample_ess_ratio=0.0,
                         health_samples=0)   # no recovery: the cloud stays as it is
    img = np.zeros((32, 32, 3), np.uint8)

    def published_factor():
        _, cov = loc.estimate()
        return cloud_xy_std(cov) ** 2 / cloud_xy_std(loc._spread()[1]) ** 2
    for std, factors in ((2.0, [1, 1]), (0.1, [1, 1, 0.25, 0.25])):
        loc.init_gaussian([5.0, 2.0, 0.3], [std, std, 0.05])
        got = []
        for _ in factors:
            assert loc.update(img, force=True).updated
            got.append(published_factor())
        np.testing.assert_allclose(got, factors, rtol=1e-4)
    loc.init_gaussian([5.0, 2.0, 0.3], [0.1, 0.1, 0.05])     # a new belief counts anew
    assert loc.update(img, force=True).updated and published_factor() == pytest.approx(1.0)
    for _ in range(3):
        loc.update(img, force=True)
    assert published_factor() == pytest.approx(0.25)
    tight = loc.particles.clone()        # within the belief: wide for an update, then tight
    loc.particles[0, :, :2] += 3.0 * torch.randn(loc.particles.shape[1], 2)
    loc.update(img, force=True)
    loc.particles.copy_(tight)
    loc.update(img, force=True)
    assert published_factor() == pytest.approx(1.0), loc.tight_updates
    for _ in range(2):
        loc.update(img, force=True)
    assert published_factor() == pytest.approx(0.25)
    loc._inject_random(0.3)              # the search while lost: the count starts again
    assert loc.tight_updates == 0


def test_a_cloud_resampled_onto_few_particles_has_a_usable_covariance(tiny_model):
    """After resampling, a tight cloud may hold copies of a handful of particles: its
    covariance is singular, and the published (and saved) one must still pass the initial
    pose check (symmetric, positive semi-definite), or a restart drops the saved pose."""
    from dmn_localizer.localization.initial_pose import covariance_xyyaw
    rng = np.random.default_rng(0)
    failures = 0
    for trial in range(50):
        loc = make_localizer(tiny_model, num_particles=100)
        loc.init_gaussian([21.35, 29.78, 0.69], [0.1, 0.1, 0.05], k=100)
        distinct = loc.particles[0, :int(rng.integers(2, 4))].clone()
        loc.particles[0] = distinct[torch.as_tensor(rng.integers(len(distinct), size=100))]
        loc.log_weights[:] = torch.as_tensor(rng.normal(0, 1, 100), dtype=torch.float32)
        _, cov = loc.estimate()
        full = np.zeros((6, 6))
        full[np.ix_([0, 1, 5], [0, 1, 5])] = cov
        try:
            covariance_xyyaw(full.reshape(36))
        except ValueError:
            failures += 1
    assert failures == 0


def test_an_initial_pose_holds_at_its_stamp(tiny_model):
    # the motion since the pose's stamp moves it, not the motion since the previous image;
    # stamp 0 (unset) or one the odometry does not cover: the pose of the next image (AMCL)
    img = np.zeros((32, 32, 3), np.uint8)

    def mean_x_after(stamp, image_stamp):
        odometry = OdometryBuffer()
        for i in range(31):                          # 1 m/s along x, samples up to 3 s
            odometry.add(0.1 * i, [0.1 * i, 0.0, 0.0])
        loc = make_localizer(tiny_model)
        loc.init_gaussian([5.0, 2.0, 0.0], [0.01, 0.01, 0.001])
        assert loc.step(1.0, img, odometry).updated   # the previous image, at 1 s
        loc.init_gaussian([8.0, 2.0, 0.0], [0.01, 0.01, 0.001], stamp=stamp,
                          odometry=odometry)
        for i in range(31, 41):                      # more odometry, up to 4 s
            odometry.add(0.1 * i, [0.1 * i, 0.0, 0.0])
        report = loc.step(image_stamp, img, odometry)
        return None if report is None else float(loc.estimate()[0][0])

    assert mean_x_after(2.0, 2.5) == pytest.approx(8.5, abs=0.05)   # not 9.5
    assert mean_x_after(2.0, 1.5) == pytest.approx(8.0, abs=0.05)   # older: the pose is its own
    assert mean_x_after(0.0, 3.5) == pytest.approx(8.0, abs=0.05)   # unset: the next image's
    assert mean_x_after(1e6, 3.5) == pytest.approx(8.0, abs=0.05)   # not covered: likewise
