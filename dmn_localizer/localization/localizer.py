"""The localizer core: a particle filter over base poses with DMN observation likelihoods.

Pure torch/numpy (the ROS node is a thin adapter around this). State: K particles of the
robot *base* pose ``map_from_base`` (x, y, yaw); the DMN scores the *camera* pose of each
particle, ``map_from_base * base_from_camera``. Updates follow AMCL's semantics: odometry
accumulates, and the filter moves and weighs particles only once the robot has moved more than
``update_min_d`` or turned more than ``update_min_a`` (or when an update is forced).

Filter health (kidnapped robot, wrong initial pose). The DMN log-likelihood is unnormalised
and its offset and scale change from image to image, so neither its raw value nor the ESS (low
in a healthy, converged filter too) says whether the belief is wrong. Each update therefore
also scores ``health_samples`` random poses of the map region and computes the *belief score*:
the share of those random poses whose log-likelihood is below the belief's log mean likelihood
``log sum_k w_k L_k`` (the weights before the update, as in AMCL's w_avg). It is rank-based,
so any per-image offset or scale cancels, and it lies in [0, 1]: about 1 when some particles
explain the image better than nearly every random pose (healthy tracking, and a uniform belief
whose best particles are near the truth), about 0.5 or less when the particles do no better
than random poses (kidnapped robot, wrong initial pose). An update has *collapsed* when the
score is below ``collapse_score``. A *collapse count* adds one per collapsed update and takes
one back per healthy update (never below 0), so a lost filter, whose score is only mostly
low, still builds up evidence while a healthy one with an occasional low score does not. From
a count of ``collapse_updates`` on, ``recovery_alpha`` of the particles are redrawn uniformly
at each collapsed update (random injection); at ``global_reinit_updates`` the filter
re-initialises globally (which resets the count). Weights stay in log space (per-image
offsets of 1e4 nats are fine); an update whose log-likelihoods are all non-finite keeps the
weights and counts as collapsed.

Outside the map (``max_context_distance``). A particle whose camera is farther than
``max_context_distance`` from every map context has no view the model could compare the
image with; the model's score there is an extrapolation (the DMN never saw such poses in
training) and could pull the belief outside the mapped area, even behind its walls. Such a
particle is not scored by the model: it gets the update's *no-evidence floor*, the lowest
log-likelihood of the map's own context poses (at most :data:`FLOOR_CONTEXTS` of them, evenly
spread), so it never outscores a mapped pose whose view matches, and when every particle is
outside the weights stay as they are. Near a context the model's scores are unchanged. Random
reference poses of the health check that are outside do not count in the belief score.

The health check can run after the estimate is out (``update(..., defer_health=True)``, then
:meth:`Localizer.check_health`): the node publishes the pose first, so the reference poses'
scoring (a quarter of the work at K = 256) is not in the image-to-pose latency. The reference
poses are drawn at the update either way, so a deferred check gives the same results.
"""
import logging
import math
from dataclasses import dataclass

import numpy as np
import torch

from dmn_localizer.config import LocalizerConfig
from dmn_localizer.filter.particle_filter import (covariance, effective_sample_size,
                                                  FilterConfig, normalize_log_weights,
                                                  ParticleFilter, sample_gaussian,
                                                  sample_uniform, weighted_mean)
from dmn_localizer.geometry import compose
from dmn_localizer.localization.camera import apply_camera, hfov_from_intrinsics
from dmn_localizer.model.nearest import log_likelihood_nearest, nearest_context_index
from dmn_localizer.model.preprocess import images_to_tensor

logger = logging.getLogger(__name__)

# default (particle, context) pairs whose attention is computed at once (the ``chunk``
# argument): small enough to stay in cache, and bounded memory whatever the map size.
# Measured at Nc = 4 (128 particles a call): 512 pairs take K=2048 from 321 to 220 ms and
# K=8192 from 1,465 to 1,119 ms against 1024. (The convolutions after the attention run in
# blocks of dmn.HEAD_CHUNK particles.)
PAIRS_PER_CHUNK = 512
PRECISIONS = ('fp32', 'bf16')


# Context poses scored for the no-evidence floor (see the module docstring), evenly spread
# over the map: a bounded cost per update, and only when some particle is outside the map.
FLOOR_CONTEXTS = 64

# An egomotion larger than this between two images is broken odometry, not motion (m).
MAX_MOTION_M = 1000.0


@dataclass
class UpdateReport:
    """What one observation update did (for diagnostics)."""
    updated: bool
    ess: float = float('nan')
    resampled: bool = False
    max_log_likelihood: float = float('nan')
    belief_score: float = float('nan')  # in [0, 1], see the module docstring
    collapsed: bool = False
    recovery: str = ''               # '', 'inject' or 'global'
    unreliable: bool = False         # no view of the map matches (see Health.unreliable)


@dataclass
class Health:
    """Likelihood-collapse monitor state and counters (see the module docstring)."""
    belief_score: float = float('nan')  # of the last update
    collapsed: int = 0               # collapse count: +1 per collapsed, -1 per healthy update
    collapsed_total: int = 0
    injections: int = 0
    global_reinits: int = 0
    last_recovery: str = ''
    weak_evidence: int = 0           # +1 per update whose best score < min_evidence, -1 else
    unreliable: bool = False         # weak_evidence >= collapse_updates: the estimate is not
    #                                  backed by any matching view (covariance covers the map)
    unreliable_total: int = 0


class Localizer:
    def __init__(self, model, config: LocalizerConfig, device='cpu', seed=0,
                 base_from_camera=(0.0, 0.0, 0.0), chunk=PAIRS_PER_CHUNK):
        self.model = model.eval().to(device)
        self.config = config
        self.device = torch.device(device)
        if config.precision not in PRECISIONS:
            raise ValueError(f"precision must be 'fp32' or 'bf16', not {config.precision!r}")
        if config.camera_hfov_deg > 0:
            if not hasattr(model, 'set_camera'):
                logger.warning('camera_hfov_deg is ignored: a %s model does not use the '
                               'camera geometry', model.config.architecture)
            else:
                model.set_camera(config.camera_hfov_deg)
        self.camera_hfov_deg = None   # the camera's, once camera intrinsics were given
        self.generator = torch.Generator().manual_seed(seed)
        self.base_from_camera = torch.tensor(base_from_camera, dtype=torch.float32)
        self.chunk = chunk
        self.map_state = None
        self.map_size = 0
        self.context_poses = None     # (N, 3) map context poses, for the outside test
        self._floor = None            # (query, no-evidence floor) of the last query
        self.bounds = None            # (x0, y0, size) of the global-localization region
        self.filter = None            # the ParticleFilter (B = 1) of map_from_base poses
        self.pending = np.zeros(3)    # odometry accumulated since the last update
        self.force_next = True        # the first image after (re)initialisation is used
        self.last_stamp = None        # stamp of the last image consumed by :meth:`step`
        self.health = Health()
        self._pending_health = None  # see update(defer_health=True)

    # ------------------------------------------------------------------ map and belief
    @property
    def ready(self):
        return self.map_state is not None and self.particles is not None

    @torch.no_grad()
    def set_map(self, view_map, margin=2.0):
        """Embed the map's contexts once (or reuse the embeddings the mapper stored with the
        same model); the global region is their bounding square + margin."""
        self._floor = None
        if len(view_map) == 0:
            self.map_state, self.map_size, self.bounds = None, 0, None
            self.context_poses = None
            self.filter = self._pending_health = None
            return
        poses = torch.as_tensor(view_map.poses, dtype=torch.float32, device=self.device)[None]
        model_id = getattr(self.model, 'model_id', None)
        if view_map.embeddings is not None and model_id and view_map.model_id == model_id:
            emb = torch.as_tensor(view_map.embeddings, device=self.device)[None]
            self.map_state = self.model.map_from_embeddings(emb, poses)  # the mapper's CNN1
        else:
            imgs = images_to_tensor(view_map.images[None], self.device)
            self.map_state = self.model.build_map(imgs, poses)
        self.map_size = len(view_map)
        self.context_poses = poses[0]
        lo = view_map.poses[:, :2].min(0) - margin
        hi = view_map.poses[:, :2].max(0) + margin
        size = float(max(hi - lo))
        self.bounds = (float(lo[0]), float(lo[1]), size)

    def init_global(self, k=None):
        """Uniform belief over the map's region and all headings."""
        if self.bounds is None:
            raise RuntimeError('global localization needs a map')
        k = k or self.config.global_num_particles
        x0, y0, size = self.bounds
        self._set(sample_uniform(1, k, size, self.generator, origin=(x0, y0)))

    def init_gaussian(self, mean, std, k=None):
        """Gaussian belief around map_from_base ``mean`` (3,) with std (sx, sy, syaw)."""
        k = k or self.config.num_particles
        if not (np.isfinite(np.asarray(mean, np.float32)).all()
                and np.isfinite(np.asarray(std, np.float32)).all()):
            raise ValueError('initial pose mean and std must be finite')
        mean = torch.as_tensor(mean, dtype=torch.float32)[None]
        self._set(sample_gaussian(mean, [float(s) for s in std], k, self.generator))

    def _set(self, particles):
        self.filter = ParticleFilter(self.filter_config(), particles.to(self.device),
                                     generator=self.generator)
        self.pending[:] = 0.0
        self.force_next = True
        self.health.collapsed = 0
        self._pending_health = None  # a check of the replaced belief no longer applies

    def reset_time(self):
        """Forget the previous image stamp (odometry time base restarted)."""
        self.last_stamp = None
        self.pending[:] = 0.0

    # ------------------------------------------------------------------ filtering
    def add_motion(self, delta):
        """Accumulate odometry (pose t in the frame of pose t-1) since the last update."""
        self.check_health()  # a pending check (and its recovery) comes before this motion
        self.pending = compose(self.pending, np.asarray(delta, np.float64))

    def step(self, stamp, image, odometry, defer_health=False):
        """Consume an image taken at ``stamp`` (s), taking the egomotion since the previous
        image from ``odometry`` (an :class:`~dmn_localizer.localization.odometry.OdometryBuffer`).
        ``defer_health`` as in :meth:`update`.

        Returns the :class:`UpdateReport`, or None when the odometry does not cover the stamps
        (the time base is then restarted at the next image) or the image is out of order.
        """
        if self.last_stamp is not None:
            if stamp <= self.last_stamp:
                return None
            delta = odometry.delta(self.last_stamp, stamp)
            if delta is None or not np.isfinite(delta).all() \
                    or math.hypot(delta[0], delta[1]) > MAX_MOTION_M:
                self.last_stamp = None
                return None
            self.add_motion(delta)
        elif odometry.pose_at(stamp) is None:
            return None
        self.last_stamp = stamp
        return self.update(image, defer_health=defer_health)

    def moved_enough(self):
        d = math.hypot(self.pending[0], self.pending[1])
        return d > self.config.update_min_d or abs(self.pending[2]) > self.config.update_min_a

    @torch.no_grad()
    def update(self, image, force=False, defer_health=False):
        """Consume one camera image (H, W, 3) uint8 RGB at the model's image size.

        Moves the particles by the pending motion and weighs them with the DMN if the robot
        moved enough (or ``force``, a forced update, or the first image); else does nothing.
        With ``defer_health`` the health check (and any recovery it calls for) waits for
        :meth:`check_health`, which fills in the returned report's health fields; a check still
        pending at the next motion or update runs first.
        """
        self.check_health()
        if not self.ready:
            return UpdateReport(False)
        if not (force or self.force_next or self.config.force_update_when_still
                or self.moved_enough()):
            return UpdateReport(False)
        self.force_next = False
        self.filter.config = self.filter_config()   # parameters may have changed at run time
        self._predict(self.pending)
        self.pending[:] = 0.0
        cam = compose(self.particles, self.base_from_camera.to(self.device))
        k = cam.shape[1]
        reference = self._health_reference()
        if reference is not None and not defer_health:  # scored in the particles' pass
            cam = torch.cat([cam, reference], dim=1)
        with self._autocast():
            query = self.model.encode_query(images_to_tensor(image[None], self.device))
            ll, outside = self._scores(query, cam)
            ll = ll.float()
        ll = torch.where(torch.isfinite(ll), ll, torch.full_like(ll, -math.inf))
        ref_ll = None
        if reference is not None and not defer_health:
            ll, ref_ll = ll[:, :k], self._without_outside(ll[0, k:], outside, k)
        resampled = False
        belief = None  # the belief's log mean likelihood; None: no usable evidence
        if bool(torch.isfinite(ll).any()):
            belief = torch.logsumexp(self.log_weights + ll, -1)[0]
            self.filter.update(ll)
            resampled = self.filter.resample()
        report = UpdateReport(True, self.ess(), resampled, float(ll.max()))
        report.unreliable = self._check_evidence(report.max_log_likelihood)
        self._pending_health = (report, belief, reference, ref_ll, query)
        if not defer_health:
            self.check_health()
        return report

    @torch.no_grad()
    def check_health(self):
        """The health check of the last update, if still pending: scores its reference poses
        (unless the update already did), updates the collapse monitor, applies the recovery it
        calls for and fills in the update's report. Returns that report, or None."""
        pending, self._pending_health = self._pending_health, None
        if pending is None:
            return None
        report, belief, reference, ref_ll, query = pending
        if belief is None:
            score = 0.0  # no usable evidence: weights kept, counts as collapsed
        elif reference is None:
            score = math.nan
        else:
            if ref_ll is None:
                with self._autocast():
                    ref_ll, outside = self._scores(query, reference)
                ref_ll = self._without_outside(ref_ll.float()[0], outside)
            score = self._belief_score(belief, ref_ll)
        report.belief_score = score
        report.collapsed, report.recovery = self._check_health(score)
        return report

    def _check_evidence(self, best):
        """Whether the images still match a view of the map: the best particle's score
        against ``min_evidence`` (models whose scores are log-likelihood ratios only)."""
        h, c = self.health, self.config
        if c.min_evidence <= 0 or getattr(self.model, 'set_camera', None) is None:
            return False
        # +1 per weak, -1 per matching update (capped), as the collapse count: one chance
        # match on a foreign map does not clear it, a few matching updates do
        weak = not best >= c.min_evidence
        h.weak_evidence = (min(h.weak_evidence + 1, 2 * c.collapse_updates) if weak
                           else max(h.weak_evidence - 1, 0))
        h.unreliable = h.weak_evidence >= c.collapse_updates
        h.unreliable_total += int(h.unreliable)
        return h.unreliable

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16,
                              enabled=self.config.precision == 'bf16')

    def _health_reference(self):
        """``health_samples`` random camera poses (1, m, 3) of the map area, or None."""
        m = self.config.health_samples
        if m <= 0 or self.bounds is None:
            return None
        x0, y0, size = self.bounds
        ref = sample_uniform(1, m, size, self.generator, origin=(x0, y0)).to(self.device)
        return compose(ref, self.base_from_camera.to(self.device))

    @staticmethod
    def _belief_score(belief, ref_ll):
        """Share of the random reference poses whose log-likelihood ``ref_ll`` is below
        ``belief``, the belief's log mean likelihood (prior weights); NaN when no reference is
        finite."""
        ref_ll = ref_ll[torch.isfinite(ref_ll)]
        if ref_ll.numel() == 0:
            return math.nan
        return float((ref_ll < belief).float().mean())

    def _check_health(self, score):
        """Update the collapse monitor with one update's belief score and apply the recovery
        it calls for. Returns (collapsed, recovery)."""
        h, c = self.health, self.config
        h.belief_score = score
        if math.isnan(score):
            return False, ''
        if score >= c.collapse_score:
            h.collapsed = max(0, h.collapsed - 1)
            return False, ''
        h.collapsed += 1
        h.collapsed_total += 1
        if c.global_reinit_updates and h.collapsed >= c.global_reinit_updates:
            logger.warning('likelihood collapsed (count %d, belief score %.2f): global '
                           're-initialisation', h.collapsed, score)
            self.init_global()
            h.global_reinits += 1
            h.last_recovery = 'global'
            return True, 'global'
        if h.collapsed >= c.collapse_updates and c.recovery_alpha > 0.0:
            self._inject_random(c.recovery_alpha)
            h.injections += 1
            h.last_recovery = 'inject'
            return True, 'inject'
        return True, ''

    def log_likelihood(self, query, cam):
        """Log-likelihoods (1, K) of camera poses ``cam`` (1, K, 3) for an encoded query: the
        model's for poses within ``max_context_distance`` of a map context, the no-evidence
        floor (:meth:`no_evidence_floor`) for the others."""
        return self._scores(query, cam)[0]

    def _scores(self, query, cam):
        """(:meth:`log_likelihood` (1, K), the outside mask (K,) or None when the test is
        off). One nearest-context search serves both the outside test and the model's
        nearest-context scoring."""
        c = self.config
        selected = 0 < c.nearest_contexts < self.map_size
        index = outside = None
        if selected or (c.max_context_distance > 0 and self.context_poses is not None):
            index = nearest_context_index(self.context_poses, cam[0],
                                          c.nearest_contexts if selected else 1)  # nearest first
        if c.max_context_distance > 0 and index is not None:
            d = torch.linalg.vector_norm(cam[0, :, :2] - self.context_poses[index[:, 0], :2],
                                         dim=-1)
            outside = d > c.max_context_distance
        index = index if selected else None
        if outside is None or not bool(outside.any()):
            return self._model_scores(query, cam, index), outside
        ll = torch.empty(cam.shape[:2], device=cam.device)
        ll[0, outside] = self.no_evidence_floor(query)
        inside = ~outside
        if bool(inside.any()):
            ll[0, inside] = self._model_scores(
                query, cam[:, inside], None if index is None else index[inside]).float()[0]
        return ll, outside

    def no_evidence_floor(self, query):
        """The lowest model log-likelihood of the map's context poses (at most
        :data:`FLOOR_CONTEXTS`, evenly spread) for this query: a pose outside the map scores
        as the least-matching mapped view. Computed once per query."""
        if self._floor is not None and self._floor[0] is query:
            return self._floor[1]
        n = self.map_size
        pick = torch.linspace(0, n - 1, min(n, FLOOR_CONTEXTS)).round().long()
        ll = self.model_log_likelihood(query, self.context_poses[pick][None]).float()[0]
        ll = ll[torch.isfinite(ll)]
        floor = float(ll.min()) if ll.numel() else -math.inf
        self._floor = (query, floor)
        return floor

    @staticmethod
    def _without_outside(ref_ll, outside, start=0):
        """Reference log-likelihoods with the outside poses' (``outside[start:]``) set to NaN
        (not counted)."""
        if outside is None:
            return ref_ll
        return torch.where(outside[start:], torch.full_like(ref_ll, math.nan), ref_ll)

    def model_log_likelihood(self, query, cam):
        """The model's log-likelihoods (1, K) of camera poses ``cam`` (1, K, 3).

        With more than ``nearest_contexts`` contexts in the map, each particle attends only to
        its M nearest contexts (x-y distance): the per-particle cost no longer grows with the
        map, and the attention sees as many contexts as in training.
        """
        # the map size is the localizer's own count: the map state may be any observation
        # model's (the tests' synthetic models keep an opaque one)
        return log_likelihood_nearest(self.model, self.map_state, query, cam,
                                      self.config.nearest_contexts,
                                      chunk=max(1, self.chunk // self.map_size),
                                      n_contexts=self.map_size)

    def _model_scores(self, query, cam, index):
        """The model's log-likelihoods of ``cam`` with each pose's nearest contexts ``index``
        (K, M) already found, or over every context when None (as :meth:`model_log_likelihood`
        would choose)."""
        if index is None:
            return self.model.log_likelihood(self.map_state, query, cam,
                                             chunk=max(1, self.chunk // self.map_size))
        return self.model.log_likelihood_selected(self.map_state, query, cam, index)

    def set_camera_intrinsics(self, width, fx):
        """The camera's intrinsics (image width and focal length, pixels, e.g. from
        ``camera_info``): a model that uses the camera geometry is told its field of view
        (unless ``camera_hfov_deg`` sets it), a model trained with another camera is reported.
        Returns a one-line warning or None; ValueError for intrinsics that are not positive."""
        hfov = hfov_from_intrinsics(width, fx)
        if self.camera_hfov_deg is not None and abs(hfov - self.camera_hfov_deg) < 1e-6:
            return None
        self.camera_hfov_deg = hfov
        return apply_camera(self.model, hfov, self.config.camera_hfov_deg)[1]

    def filter_config(self):
        """The particle filter's settings from the localizer's (read at every use: parameters
        may change at run time): noise proportional to the motion, systematic resampling
        when ESS < resample_ess_ratio * K."""
        c = self.config
        return FilterConfig(transition_std=(0.0, 0.0, 0.0),
                            motion_noise=(c.motion_noise_xy, c.motion_noise_yaw),
                            resample='systematic', resample_ess_ratio=c.resample_ess_ratio)

    @property
    def particles(self):
        """(1, K, 3) map_from_base poses (None before a belief is set)."""
        return None if self.filter is None else self.filter.particles

    @particles.setter
    def particles(self, value):
        self.filter.particles = value

    @property
    def log_weights(self):
        """(1, K) normalised log-weights (None before a belief is set)."""
        return None if self.filter is None else self.filter.log_weights

    @log_weights.setter
    def log_weights(self, value):
        self.filter.log_weights = value

    def _predict(self, delta):
        self.filter.predict(torch.as_tensor(delta, dtype=torch.float32,
                                            device=self.device)[None])

    def _inject_random(self, share):
        """Replace a share of the particles by uniform ones (recovery from a wrong belief)."""
        if self.bounds is None:
            return
        k = self.particles.shape[1]
        n = int(round(share * k))
        if n == 0:
            return
        x0, y0, size = self.bounds
        idx = torch.randperm(k, generator=self.generator)[:n].to(self.device)
        self.particles[:, idx] = sample_uniform(1, n, size, self.generator,
                                                origin=(x0, y0)).to(self.device)
        self.log_weights[:, idx] = float(torch.logsumexp(self.log_weights, -1)) - math.log(k)
        self.log_weights = normalize_log_weights(self.log_weights)

    # ------------------------------------------------------------------ outputs
    def estimate(self):
        """(mean (3,), covariance (3, 3)) of map_from_base, numpy float64."""
        mean = weighted_mean(self.particles, self.log_weights)[0]
        cov = covariance(self.particles, self.log_weights)[0].double().cpu().numpy()
        if self.health.unreliable and self.bounds is not None:
            # not backed by any matching view: the spread of a pose anywhere on the map
            size = self.bounds[2]
            cov = cov + np.diag([size ** 2 / 12.0, size ** 2 / 12.0, math.pi ** 2 / 3.0])
        return mean.double().cpu().numpy(), cov

    def particle_array(self):
        """(particles (K, 3), normalised weights (K,)) as numpy."""
        return (self.particles[0].cpu().numpy(),
                torch.softmax(self.log_weights[0], -1).cpu().numpy())

    def ess(self):
        return float(effective_sample_size(self.log_weights)[0]) if self.ready else 0.0
