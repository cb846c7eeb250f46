"""Filter health: likelihood collapse -> random injection -> global
re-initialisation, tested with a synthetic observation model (no trained model needed), plus
odometry-buffer checks. The kidnapped-robot test with the shipped model and a simulated bag
is test_kidnapped_bag.py.

The synthetic model scores camera poses with a Gaussian bump around the true pose plus a
large random offset per image, like the DMN's unnormalised log-likelihood: a detector
looking at raw log-likelihood values would fire at random; the rank-based belief score must
not."""
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from dmn_localizer.config import LocalizerConfig
from dmn_localizer.geometry import compose, relative, wrap_angle
from dmn_localizer.localization.localizer import Localizer
from dmn_localizer.localization.odometry import OdometryBuffer
from dmn_localizer.mapping.view_map import ViewMap

REPO = Path(__file__).resolve().parents[1]
IMAGE = np.zeros((32, 32, 3), np.uint8)


class Oracle(torch.nn.Module):
    """Stands in for the DMN. log L(cam) = log(bump + floor * exp(texture)) + offset: a
    Gaussian bump (sigma_xy, sigma_yaw) around the true camera pose ``truth`` over a floor
    that varies smoothly with the pose (views elsewhere match by chance, by +-0.5 nats), plus
    a random ``offset`` per image."""

    def __init__(self, sigma_xy=1.0, sigma_yaw=0.4, floor=-8.0, offset=1e4, seed=0):
        super().__init__()
        self.truth = torch.zeros(3)
        self.sigma_xy, self.sigma_yaw, self.floor, self.offset = (sigma_xy, sigma_yaw, floor,
                                                                  offset)
        self.rng = np.random.default_rng(seed)
        self.broken = None  # or a value every log-likelihood becomes (nan, -inf, inf)

    def build_map(self, images, poses):
        return 'map'

    def encode_query(self, images):
        # what this image shows (the true pose) and its offset
        return self.truth.clone(), float(self.rng.uniform(-self.offset, self.offset))

    def log_likelihood(self, map_state, query, cam, chunk=None):
        truth, offset = query
        d = cam - truth
        bump = -0.5 * ((d[..., 0] ** 2 + d[..., 1] ** 2) / self.sigma_xy ** 2
                       + wrap_angle(d[..., 2]) ** 2 / self.sigma_yaw ** 2)
        x, y, yaw = cam[..., 0], cam[..., 1], cam[..., 2]
        texture = 0.5 * torch.sin(1.3 * x + 0.7 * y + yaw) * torch.cos(0.9 * y - 1.1 * x
                                                                       + 2 * yaw)
        ll = torch.logaddexp(bump, self.floor + texture) + offset
        if self.broken is not None:
            ll = torch.full_like(ll, self.broken)
        return ll


def square_map(size=20.0):
    vm = ViewMap()
    for x in (0.0, size):
        for y in (0.0, size):
            vm.add(IMAGE, [x, y, 0.0])
    return vm  # global region: [-2, 22]^2


# The oracle's wrong-place likelihoods are a smooth +-0.5 nat texture, so a lost belief
# still beats about half of the random poses: its detector threshold sits higher than the
# default (0.6, set for the shipped model, see test_kidnapped_robot_trained_model).
ORACLE_COLLAPSE_SCORE = 0.85


def make(oracle=None, **overrides):
    # the oracle scores every pose, and its map's four corner markers are not views: the
    # outside-the-map floor (max_context_distance) would cover most of the square
    cfg = LocalizerConfig(**{'num_particles': 256, 'global_num_particles': 2048,
                             'health_samples': 64, 'collapse_score': ORACLE_COLLAPSE_SCORE,
                             'max_context_distance': 0.0, **overrides})
    loc = Localizer(oracle or Oracle(), cfg, 'cpu', seed=3)
    loc.set_map(square_map())
    return loc


def lap(n, start=(4.0, 4.0, 0.0), step=0.5, seed=0):
    """n poses of a robot wandering inside [2, 18]^2 (turning back at the borders)."""
    rng = np.random.default_rng(seed)
    poses = [np.array(start, float)]
    for _ in range(n - 1):
        p = poses[-1]
        yaw = p[2] + rng.normal(0, 0.2)
        nxt = p + [step * math.cos(yaw), step * math.sin(yaw), 0.0]
        if not (2 < nxt[0] < 18 and 2 < nxt[1] < 18):
            yaw += math.pi / 2
            nxt = p.copy()
        nxt[2] = wrap_angle(yaw)
        poses.append(nxt)
    return np.array(poses)


def drive(loc, oracle, truths, odometry=None, defer=False):
    """One update per pose: odometry = the true relative motion (or ``odometry``); returns the
    reports and the x-y errors of the estimates. ``defer``: as the node, the estimate before
    the health check (``update(defer_health=True)``), and every other check left to the next
    update."""
    reports, errors = [], []
    for i, truth in enumerate(truths):
        if i:
            loc.add_motion(relative(truths[i - 1], truth) if odometry is None else odometry[i])
        oracle.truth = torch.as_tensor(truth, dtype=torch.float32)
        reports.append(loc.update(IMAGE, defer_health=defer))
        mean = loc.estimate()[0]
        errors.append(math.hypot(*(mean[:2] - truth[:2])))
        if defer and i % 2 == 0:
            loc.check_health()
    loc.check_health()
    return reports, np.array(errors)


def test_healthy_tracking_never_collapses_despite_huge_offsets():
    oracle = Oracle(offset=1e4)  # per-image offsets of +-1e4 nats (linear weights underflow)
    loc = make(oracle)
    truths = lap(40)
    loc.init_gaussian(truths[0], (0.3, 0.3, 0.1))
    reports, errors = drive(loc, oracle, truths)
    assert all(r.updated and not r.collapsed and not r.recovery for r in reports)
    assert min(r.belief_score for r in reports) > 0.95  # belief beats ~all random poses
    assert errors[-10:].max() < 1.0
    p, w = loc.particle_array()
    assert np.isfinite(p).all() and np.isfinite(w).all() and abs(w.sum() - 1) < 1e-4


def test_global_localization_converges_without_false_alarm():
    oracle = Oracle()
    loc = make(oracle)
    loc.init_global()
    reports, errors = drive(loc, oracle, lap(30, start=(12.0, 6.0, 1.0)))
    assert loc.health.global_reinits == 0
    assert not any(r.collapsed for r in reports)  # its best particles beat random poses
    assert errors[-5:].max() < 1.0


def kidnap(loc, oracle, before=15, after=40, defer=False):
    a = lap(before, start=(4.0, 4.0, 0.0), seed=1)
    b = lap(after, start=(15.0, 14.0, 2.5), seed=2)
    truths = np.concatenate([a, b])
    odometry = [relative(truths[i - 1], truths[i]) if i else None for i in range(len(truths))]
    odometry[before] = np.zeros(3)  # carried away: the wheels did not turn
    loc.init_gaussian(truths[0], (0.3, 0.3, 0.1))
    reports, errors = drive(loc, oracle, truths, odometry, defer)
    return reports[before:], errors[before:], errors[:before]


def relocalized_after(errors, within=1.5, hold=5):
    """First update from which the error stays below ``within`` for ``hold`` updates."""
    return next((i for i in range(len(errors) - hold + 1)
                 if errors[i:i + hold].max() < within), None)


# Bound on the updates from the teleport until the estimate is back within 1.5 m (for 5
# updates) with the synthetic model. Measured over seeds 0-9 (this test: seed 0): global
# path (no injection) 9-12, the re-init comes at collapse count 8; injection path 7-19 for 9
# seeds, while one seed locked onto the flank of the bump, still 2 m off after 40 updates.
SYNTHETIC_KIDNAP_BOUND = 25


@pytest.mark.parametrize('path', ['inject', 'global'])
def test_kidnapped_robot_recovers_synthetic(path):
    oracle = Oracle()
    loc = make(oracle, collapse_updates=3, global_reinit_updates=8,
               recovery_alpha=0.1 if path == 'inject' else 0.0)
    after, errors, before = kidnap(loc, oracle)
    assert before[-5:].max() < 1.0  # tracked before the kidnapping
    updated = [r for r in after if r.updated]
    assert sum(r.collapsed for r in updated[:4]) >= 3  # detected at once
    recoveries = [r.recovery for r in after if r.recovery]
    assert recoveries and recoveries[0] == path and set(recoveries) <= {'inject', 'global'}
    if path == 'global':
        assert loc.health.global_reinits >= 1 and loc.health.injections == 0
    back = relocalized_after(errors)
    assert back is not None and back <= SYNTHETIC_KIDNAP_BOUND, errors.round(1)
    assert not any(r.recovery for r in after[back + 5:])  # no recovery once relocalized


@pytest.mark.parametrize('jump_share', [0.0, 0.05])
def test_deferred_health_check_gives_the_same_filter(jump_share):
    """The node publishes the estimate before the health check (update(defer_health=True),
    then check_health(), or the next update runs it): same reports, recoveries (injections,
    then a global re-initialisation), particles; also with the transition's heavy tail,
    which the health state gates, and with regularised resampling (the default), which draws
    from the same generator."""
    runs = []
    for defer in (False, True):
        oracle = Oracle()
        loc = make(oracle, collapse_updates=2, global_reinit_updates=4, recovery_alpha=0.1,
                   motion_jump_share=jump_share)
        after, _, _ = kidnap(loc, oracle, defer=defer)
        runs.append(([(r.updated, r.belief_score, r.collapsed, r.recovery, r.ess)
                      for r in after], loc.particle_array(), loc.health))
    (reports, (p, w), health), (reports_deferred, (pd, wd), health_deferred) = runs
    recoveries = {r[3] for r in reports}
    assert recoveries == {'', 'inject', 'global'}
    assert reports_deferred == reports and health_deferred == health
    np.testing.assert_array_equal(pd, p)
    np.testing.assert_array_equal(wd, w)


def test_wrong_initial_pose_recovers():
    oracle = Oracle()
    loc = make(oracle)
    truths = lap(30, start=(5.0, 15.0, -1.0))
    loc.init_gaussian([15.0, 4.0, 1.0], (0.5, 0.5, 0.2))  # operator clicked the wrong spot
    reports, errors = drive(loc, oracle, truths)
    assert reports[0].collapsed and any(r.recovery for r in reports)
    assert errors[-5:].max() < 1.5


def test_recovery_can_be_disabled():
    oracle = Oracle()
    loc = make(oracle, recovery_alpha=0.0, global_reinit_updates=0)
    after, _, _ = kidnap(loc, oracle, after=12)
    assert loc.health.collapsed_total >= 3 and not any(r.recovery for r in after)
    loc = make(oracle, health_samples=0)
    after, _, _ = kidnap(loc, oracle, after=12)
    updated = [r for r in after if r.updated]
    assert not any(r.collapsed for r in updated) and math.isnan(updated[0].belief_score)


@pytest.mark.parametrize('delay', [0, 4])
def test_the_search_while_lost_waits_lost_search_delay_updates(delay):
    """With a threshold that fits the model, an estimate lost (weak evidence for
    collapse_updates updates) searches by random injection only once it has been lost for
    more than lost_search_delay updates in a row, then at each further lost update; lost
    again after matching views, it waits again. The collapse monitor does not wait."""
    from dmn_localizer.localization.health import Health, record_evidence, record_score
    cfg = LocalizerConfig(collapse_updates=3, lost_search_delay=delay, recovery_alpha=0.1)
    health = Health()

    def run(evidence, score=0.9, search=True):   # score 0.9: the collapse monitor is content
        got = []
        for e in evidence:
            record_evidence(health, cfg, e, 1.0)
            got.append((health.unreliable, record_score(health, cfg, score, search)[1]))
        return got
    weak = run([0.0] * 12)
    assert [lost for lost, _ in weak] == [False] * 2 + [True] * 10
    assert [r for _, r in weak] == [''] * (2 + delay) + ['inject'] * (10 - delay)
    # matching views: the weak count falls back below collapse_updates (from its cap, 6)
    assert [lost for lost, _ in run([2.0] * 4)] == [True] * 3 + [False]
    again = run([0.0] * 8)   # lost at once (the count was at 2), the search waits again
    assert [lost for lost, _ in again] == [True] * 8
    assert [r for _, r in again] == [''] * delay + ['inject'] * (8 - delay)
    assert health.lost_updates == 8
    # the search needs a threshold chosen for the model (search_when_lost)
    assert all(r == '' for _, r in run([0.0] * 3, search=False))
    # a collapsed belief (the collapse monitor) injects without waiting
    fresh = Health()
    health = fresh
    assert [r for _, r in run([0.0] * 3, score=0.1)] == ['', '', 'inject']


@pytest.mark.parametrize('broken', [math.nan, -math.inf, math.inf])
def test_non_finite_likelihoods_keep_the_belief_finite(broken):
    oracle = Oracle()
    loc = make(oracle, global_reinit_updates=4, collapse_updates=2)
    truths = lap(8)
    loc.init_gaussian(truths[0], (0.3, 0.3, 0.1))
    drive(loc, oracle, truths[:3])
    oracle.broken = broken
    reports, _ = drive(loc, oracle, truths[2:])  # (the first one only sets the start)
    reports = reports[1:]
    assert all(r.updated and r.collapsed for r in reports)
    assert [r.recovery for r in reports[:4]] == ['', 'inject', 'inject', 'global']
    p, w = loc.particle_array()
    assert np.isfinite(p).all() and np.isfinite(w).all() and abs(w.sum() - 1) < 1e-4
    assert np.isfinite(loc.estimate()[0]).all()


def test_broken_odometry_never_reaches_the_particles():
    oracle = Oracle()
    loc = make(oracle)
    loc.init_global()
    odom = OdometryBuffer(max_jump_m=0.0)
    odom.add(1.0, [0.0, 0.0, 0.0])
    assert loc.step(1.0, IMAGE, odom) is not None
    odom.add(2.0, [1e300, 0.0, 0.0])  # finite but absurd, jump detection off
    assert loc.step(2.0, IMAGE, odom) is None and loc.last_stamp is None
    assert np.isfinite(loc.particle_array()[0]).all()
    with pytest.raises(ValueError):
        loc.init_gaussian([math.nan, 0.0, 0.0], (1.0, 1.0, 1.0))


def test_odometry_buffer_jumps_and_non_finite():
    buf = OdometryBuffer(max_jump_m=1.0)
    assert buf.add(0.0, [0.0, 0.0, 0.0]) is False
    assert buf.add(0.1, [0.5, 0.0, 0.0]) is False
    assert buf.add(0.2, [3.0, 0.0, 0.0]) is True  # 2.5 m in 0.1 s
    assert buf.jumps == 1 and 'jumped 2.5 m' in buf.last_reset and len(buf) == 1
    assert buf.add(0.3, [math.nan, 0.0, 0.0]) is False and buf.rejected == 1 and len(buf) == 1
    assert buf.add(0.1, [3.0, 0.0, 0.0]) is True and buf.time_resets == 1
    assert 'time went backwards' in buf.last_reset
    buf = OdometryBuffer(max_jump_m=1.0, max_speed=2.0)
    buf.add(0.0, [0.0, 0.0, 0.0])
    assert buf.add(3.0, [5.0, 0.0, 0.0]) is False  # messages lost for 3 s at 1.7 m/s: no jump
    assert buf.add(3.1, [7.0, 0.0, 0.0]) is True and buf.jumps == 1


@pytest.mark.parametrize('initial, near', [(0, False), (16384, True)])
def test_a_large_first_sample_finds_a_sharp_likelihood(initial, near):
    """A global localization draws ``global_initial_particles`` uniform poses for its first
    image and resamples them down to ``global_num_particles``. With a likelihood peaked within
    0.2 m / 0.05 rad of the truth (and nothing elsewhere), 256 uniform poses over the 24 m
    square leave none near it (the first estimate lands anywhere); 16,384 put some there, and
    the first estimate with them."""
    oracle = Oracle(sigma_xy=0.2, sigma_yaw=0.05, floor=-20.0, offset=0.0)
    oracle.truth = torch.tensor([13.0, 7.0, 2.0])
    loc = make(oracle, global_num_particles=256, global_initial_particles=initial)
    loc.init_global()
    assert loc.particles.shape[1] == max(initial, 256)
    report = loc.update(IMAGE)
    assert report.updated and loc.particles.shape[1] == 256
    assert report.resampled or not initial
    error = float(np.hypot(*(loc.estimate()[0][:2] - oracle.truth.numpy()[:2])))
    assert (error < 1.0) == near, error
    # the next update works on the narrowed cloud (no second narrowing)
    loc.add_motion([0.5, 0.0, 0.0])
    oracle.truth = torch.as_tensor(compose(oracle.truth.numpy(), np.array([0.5, 0.0, 0.0])),
                                   dtype=torch.float32)
    assert loc.update(IMAGE).updated and loc.particles.shape[1] == 256
