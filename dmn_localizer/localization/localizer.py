"""The localizer core: a particle filter over base poses with DMN observation likelihoods.

Pure torch/numpy (the ROS node is a thin adapter around this). State: K particles of the
robot *base* pose ``map_from_base`` (x, y, yaw); the DMN scores the *camera* pose of each
particle, ``map_from_base * base_from_camera``. Updates follow AMCL's semantics: odometry
accumulates, and the filter moves and weighs particles only once the robot has moved more than
``update_min_d`` or turned more than ``update_min_a`` (or when an update is forced). Weights
stay in log space (per-image offsets of 1e4 nats are fine). Consecutive images less than
``evidence_min_d`` / ``evidence_min_a`` apart see nearly the same view, so such an update's
log-likelihoods are scaled by the share of that motion (:meth:`Localizer.evidence_share`): at a
higher frame rate the filter updates more often but gains the same evidence per metre; and by
the model's ``likelihood_scale`` (its card's): the share of an image's evidence that the
images before it have not already given, for a model whose scores are too sharp to multiply
image after image (forced updates count fully). The first update of a new belief weighs its
one image by ``initial_likelihood_scale`` instead (its card's: the factor that calibrates a
single image's posterior, :mod:`dmn_localizer.replay.first_image`). The
transition has a heavy tail (``motion_jump_*``; ``motion_jump_share`` 0 turns it off;
:func:`~dmn_localizer.filter.particle_filter.jump`, scaled by the same share): a cloud that
settled beside the true pose keeps a few particles searching around it; it pauses while the
collapse or weak-evidence count is positive (the images do not fit the belief: recovery by
random injection, not local search).

Scoring, and particles outside the map: :mod:`dmn_localizer.localization.scoring`. Filter
health (the belief score, the collapse count, random injection and global re-initialisation,
the evidence check): :mod:`dmn_localizer.localization.health`; here the reference poses are
drawn and scored and the recovery applied.

The health check can run after the estimate is out (``update(..., defer_health=True)``, then
:meth:`Localizer.check_health`): the node publishes the pose first, so the reference poses'
scoring (a quarter of the work at K = 256) is not in the image-to-pose latency. The reference
poses are drawn at the update either way, so a deferred check gives the same results. The
order of images, odometry and health checks is kept by
:class:`~dmn_localizer.localization.tracker.Tracker`.
"""
import logging
import math

import numpy as np
import torch

from dmn_localizer.config import LocalizerConfig, POSE_ESTIMATES
from dmn_localizer.filter.clusters import heaviest_cluster_mean
from dmn_localizer.filter.particle_filter import (covariance, effective_sample_size,
                                                  FilterConfig, normalize_log_weights,
                                                  ParticleFilter, sample_gaussian,
                                                  sample_uniform, weighted_mean)
from dmn_localizer.geometry import compose
from dmn_localizer.localization.camera import (HFOV_TOLERANCE_DEG, apply_camera,
                                               hfov_from_intrinsics, training_hfov_deg)
from dmn_localizer.localization.health import (anywhere_on_map, belief_score, Health,
                                               record_evidence, record_score, UpdateReport)
from dmn_localizer.localization.scoring import (FLOOR_CONTEXTS, MapScoring,  # noqa: F401
                                                PAIRS_PER_CHUNK)
from dmn_localizer.model.preprocess import images_to_tensor

logger = logging.getLogger(__name__)

PRECISIONS = ('fp32', 'bf16')
CONTEXT_POOLING_CHOICES = ('overlap_attention', 'sum', 'model')

# An egomotion larger than this between two images is broken odometry, not motion (m).
MAX_MOTION_M = 1000.0
# Contexts each particle attends to for a model whose card chooses none (nearest_contexts -1).
DEFAULT_NEAREST_CONTEXTS = 8
# The cloud x-y standard deviation (m) below which a covariance scale below 1 applies, for a
# model whose card chooses none (covariance_scale_max_std -1).
DEFAULT_COVARIANCE_SCALE_MAX_STD = 0.5
# The evidence threshold of a model whose card calibrates none (min_evidence -1): the value
# that separates models/aligned_mazes' own maps from foreign ones (docs/performance.md).
DEFAULT_MIN_EVIDENCE = 3.5

__all__ = ['global_sample_sizes', 'Health', 'Localizer', 'MAX_MOTION_M', 'PAIRS_PER_CHUNK',
           'UpdateReport']


def global_sample_sizes(config, k=None):
    """(poses of the first update, particles after it) of a global localization: ``k`` for
    both when given, else ``global_initial_particles`` (at least ``global_num_particles``) and
    ``global_num_particles``."""
    target = k or config.global_num_particles
    return max(target, 0 if k else config.global_initial_particles), target


def cloud_xy_std(cov):
    """The x-y standard deviation (root mean square of x and y) of covariances (..., 3, 3)."""
    cov = np.asarray(cov, np.float64)
    return np.sqrt(0.5 * (cov[..., 0, 0] + cov[..., 1, 1]))


def published_scale(scale, xy_std, max_std, tight_updates=None, min_updates=0):
    """The factor on a cloud's covariance as published (per cloud, for an array of x-y standard
    deviations :func:`cloud_xy_std`): ``scale`` (the ``covariance_scale`` in use), except that
    a scale below 1 applies only while the cloud's x-y standard deviation is below ``max_std``
    m (> 0) and has been for ``min_updates`` updates in a row (``tight_updates``, counted by
    :func:`tight_runs`). A likelihood wider than the errors makes a tracked cloud too wide,
    which the scale corrects; a wide cloud that is still converging or searching is no such
    case, nor is one that has just converged (it may still sit beside the true pose), and
    shrinking those would make a wrong estimate look sure."""
    wide = (max_std > 0) & (np.asarray(xy_std) >= max_std)
    if max_std > 0 and min_updates > 0 and tight_updates is not None:
        wide = wide | (np.asarray(tight_updates) < min_updates)
    return np.where((scale < 1.0) & wide, 1.0, scale)


def tight_runs(xy_std, max_std):
    """For each update of a run (its clouds' x-y standard deviations, in order): how many
    updates in a row, this one included, had a cloud below ``max_std`` m (0 when this one does
    not)."""
    runs, count = np.zeros(len(xy_std), np.int64), 0
    for i, std in enumerate(np.asarray(xy_std, np.float64)):
        count = count + 1 if std < max_std else 0
        runs[i] = count
    return runs


class Localizer(MapScoring):
    def __init__(self, model, config: LocalizerConfig, device='cpu', seed=0,
                 base_from_camera=(0.0, 0.0, 0.0), chunk=PAIRS_PER_CHUNK):
        self.model = model.eval().to(device)
        self.config = config
        self.device = torch.device(device)
        if config.precision not in PRECISIONS:
            raise ValueError(f"precision must be 'fp32' or 'bf16', not {config.precision!r}")
        if config.pose_estimate and config.pose_estimate not in POSE_ESTIMATES:
            raise ValueError(f'pose_estimate must be one of {", ".join(POSE_ESTIMATES)} or '
                             f'empty (the model\'s), not {config.pose_estimate!r}')
        card_rule = self._card_metadata('pose_estimate')
        if card_rule is not None and card_rule not in POSE_ESTIMATES:
            logger.warning("the model card's pose_estimate %r is not one of %s: using 'mean'",
                           card_rule, ', '.join(POSE_ESTIMATES))
        if config.camera_hfov_deg > 0:
            if not hasattr(model, 'set_camera'):
                logger.warning('camera_hfov_deg is ignored: a %s model does not use the '
                               'camera geometry', model.config.architecture)
            else:
                model.set_camera(config.camera_hfov_deg)
        self._apply_context_pooling(config.context_pooling)
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
        self.new_belief = True        # no update since the belief was set (init_*)
        self.last_stamp = None        # stamp of the last image consumed by :meth:`step`
        self.pose_stamp = None        # stamp of an initial pose (init_gaussian) not yet updated
        self.health = Health()
        self._pending_health = None  # see update(defer_health=True)
        self._narrow_to = None       # see init_global
        self.tight_updates = 0       # updates in a row with a tight cloud (published_scale)
        self._summary = None         # (pose, covariance) of the belief after the last update

    # ------------------------------------------------------------------ map and belief
    @property
    def takes_depth(self):
        """Whether the model uses a depth camera's column depths (the aligned model)."""
        return getattr(self.model, 'takes_depth', False)

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
        emb = None
        if view_map.embeddings is not None and model_id and view_map.model_id == model_id:
            emb = torch.as_tensor(view_map.embeddings, device=self.device)
            want = tuple(self.model.embed(images_to_tensor(view_map.images[:1],
                                                           self.device)).shape[1:])
            if not emb.is_floating_point() or tuple(emb.shape[1:]) != want:
                logger.warning('the map\'s stored embeddings (%s %s) do not fit model %s (%s): '
                               'embedding its images instead', tuple(emb.shape[1:]),
                               str(emb.dtype).replace('torch.', ''), model_id, want)
                emb = None
        if emb is not None:
            self.map_state = self.model.map_from_embeddings(emb[None], poses)  # the mapper's
        else:
            imgs = images_to_tensor(view_map.images[None], self.device)
            if self.takes_depth and view_map.depths is not None:
                self.map_state = self.model.build_map(imgs, poses, view_map.depths[None],
                                                      self.config.depth_range)
            else:
                self.map_state = self.model.build_map(imgs, poses)
        self.map_size = len(view_map)
        self.context_poses = poses[0]
        lo = view_map.poses[:, :2].min(0) - margin
        hi = view_map.poses[:, :2].max(0) + margin
        size = float(max(hi - lo))
        self.bounds = (float(lo[0]), float(lo[1]), size)

    def init_global(self, k=None):
        """Uniform belief over the map's region and all headings: ``k`` particles, or
        ``global_initial_particles`` that the first update resamples down to
        ``global_num_particles``."""
        if self.bounds is None:
            raise RuntimeError('global localization needs a map')
        first, target = global_sample_sizes(self.config, k)
        x0, y0, size = self.bounds
        self._set(sample_uniform(1, first, size, self.generator, origin=(x0, y0)))
        self._narrow_to = target if first > target else None

    def init_gaussian(self, mean, std, k=None, stamp=None, odometry=None):
        """Gaussian belief around map_from_base ``mean`` (3,) with std (sx, sy, syaw).

        With the ``odometry`` buffer the belief holds at ``stamp`` (s): the next image moves it
        by the odometry since ``stamp``, not since the previous image (an image older than
        ``stamp`` takes it as its own pose). A ``stamp`` of None or 0, or one the odometry does
        not cover, makes it the pose of the next image, as AMCL's initial pose."""
        k = k or self.config.num_particles
        if not (np.isfinite(np.asarray(mean, np.float32)).all()
                and np.isfinite(np.asarray(std, np.float32)).all()):
            raise ValueError('initial pose mean and std must be finite')
        mean = torch.as_tensor(mean, dtype=torch.float32)[None]
        self._set(sample_gaussian(mean, [float(s) for s in std], k, self.generator))
        if odometry is not None:
            covered = stamp and odometry.pose_at(stamp) is not None
            self.last_stamp = self.pose_stamp = stamp if covered else None

    def _set(self, particles):
        self.filter = ParticleFilter(self.filter_config(), particles.to(self.device),
                                     generator=self.generator)
        self.pending[:] = 0.0
        self.force_next = True
        self.new_belief = True
        self.health.collapsed = 0
        self._pending_health = None  # a check of the replaced belief no longer applies
        self._narrow_to = None       # particles the first update resamples down to
        self.pose_stamp = None       # a new belief: no initial pose stamp (init_gaussian sets it)
        self.tight_updates = 0
        self._summary = None

    def reset_time(self):
        """Forget the previous image stamp (odometry time base restarted)."""
        self.last_stamp = None
        self.pending[:] = 0.0

    # ------------------------------------------------------------------ filtering
    def add_motion(self, delta):
        """Accumulate odometry (pose t in the frame of pose t-1) since the last update."""
        self.check_health()  # a pending check (and its recovery) comes before this motion
        self.pending = compose(self.pending, np.asarray(delta, np.float64))

    def step(self, stamp, image, odometry, defer_health=False, depth=None):
        """Consume an image taken at ``stamp`` (s), taking the egomotion since the previous
        image from ``odometry`` (an :class:`~dmn_localizer.localization.odometry.OdometryBuffer`).
        ``defer_health`` and ``depth`` as in :meth:`update`.

        Returns the :class:`UpdateReport`, or None when the odometry does not cover the stamps
        (the time base is then restarted at the next image) or the image is out of order.
        """
        if self.pose_stamp is not None and stamp <= self.pose_stamp:
            self.last_stamp = None    # an image older than the initial pose: the pose is its own
        self.pose_stamp = None
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
        return self.update(image, defer_health=defer_health, depth=depth)

    def moved_enough(self):
        d = math.hypot(self.pending[0], self.pending[1])
        return d > self.config.update_min_d or abs(self.pending[2]) > self.config.update_min_a

    def evidence_share(self):
        """How much of an independent observation an image after the pending motion is, in
        (0, 1]: the larger of translation / ``evidence_min_d`` and rotation /
        ``evidence_min_a``, capped at 1 (a share of 0 in a setting turns its term off; both
        0: 1)."""
        c = self.config
        shares = [abs(float(v)) / lim for v, lim in (
            (math.hypot(self.pending[0], self.pending[1]), c.evidence_min_d),
            (self.pending[2], c.evidence_min_a)) if lim > 0]
        return min(1.0, max(shares)) if shares else 1.0

    @torch.no_grad()
    def update(self, image, force=False, defer_health=False, depth=None):
        """Consume one camera image (H, W, 3) uint8 RGB at the model's image size, and its
        measured column depths (W,) (m, NaN: no reading; :mod:`dmn_localizer.depth`) from an
        RGB-D camera, if any: a model that takes depth uses them instead of its predictions.

        Moves the particles by the pending motion and weighs them with the DMN if the robot
        moved enough (or ``force``, a forced update, or the first image); else does nothing.
        With ``defer_health`` the health check (and any recovery it calls for) waits for
        :meth:`check_health`, which fills in the returned report's health fields; a check still
        pending at the next motion or update runs first.
        """
        self.check_health()
        if not self.ready:
            return UpdateReport(False)
        forced = force or self.force_next or self.config.force_update_when_still
        if not (forced or self.moved_enough()):
            return UpdateReport(False)
        share = 1.0 if forced else self.evidence_share()
        first, self.new_belief = self.new_belief, False
        self.force_next = False
        self.filter.config = self.filter_config()   # parameters may have changed at run time
        self._predict(self.pending, share if self._belief_fits() else 0.0)
        self.pending[:] = 0.0
        cam = compose(self.particles, self.base_from_camera.to(self.device))
        k = cam.shape[1]
        reference = self._health_reference()
        if reference is not None and not defer_health:  # scored in the particles' pass
            cam = torch.cat([cam, reference], dim=1)
        query, ll, outside = self.score_image(image, cam, depth)
        ref_ll = None
        if reference is not None and not defer_health:
            ll, ref_ll = ll[:, :k], self._without_outside(ll[0, k:], outside, k)
        resampled = False
        belief = None  # the belief's log mean likelihood; None: no usable evidence
        if bool(torch.isfinite(ll).any()):
            belief = torch.logsumexp(self.log_weights + ll, -1)[0]
            weight = (self.initial_likelihood_scale if first else
                      share if forced else share * self.likelihood_scale)
            self.filter.update(ll if weight == 1.0 else ll * weight)
            resampled = self._narrow_to is None and self.filter.resample()
        if self._narrow_to is not None:  # the first update of a global localization
            self.filter.resize(self._narrow_to)
            self._narrow_to, resampled = None, True
        self._summary = self._spread()   # estimate() publishes it unless the belief moves on
        tight = cloud_xy_std(self._summary[1]) < self.covariance_scale_max_std
        self.tight_updates = self.tight_updates + 1 if tight else 0
        report = UpdateReport(True, self.ess(), resampled, float(ll.max()),
                              evidence=-math.inf if belief is None else float(belief))
        report.unreliable = self._check_evidence(report.evidence)
        self._pending_health = (report, belief, reference, ref_ll, query)
        if not defer_health:
            self.check_health()
        return report

    @torch.no_grad()
    def score_image(self, image, cam, depth=None):
        """(the encoded query, log-likelihoods (1, K) with -inf for non-finite ones, the
        outside mask (:meth:`_scores`)) of camera poses ``cam`` (1, K, 3) for one image (H, W,
        3) uint8 RGB and its measured column depths (as :meth:`update`), in the configured
        precision: how an update scores its particles."""
        with self._autocast():
            images = images_to_tensor(image[None], self.device)
            query = (self.model.encode_query(images, np.asarray(depth, np.float32)[None],
                                             self.config.depth_range)
                     if self.takes_depth and depth is not None else
                     self.model.encode_query(images))
            ll, outside = self._scores(query, cam)
            ll = ll.float()
        return query, torch.where(torch.isfinite(ll), ll, torch.full_like(ll, -math.inf)), outside

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

    def _belief_fits(self):
        """Whether the images fit the belief: neither the collapse count (belief score) nor
        the weak-evidence count is positive. The transition's heavy tail searches only then;
        after a mismatch (a kidnapping, a foreign map, the mapped area left behind) the random
        injection searches, and jumps would let the cloud settle on a look-alike place."""
        return self.health.collapsed == 0 and self.health.weak_evidence == 0

    def _check_evidence(self, evidence):
        """Whether the images still match a view of the map (:func:`health.record_evidence`;
        models whose scores are log-likelihood ratios only)."""
        threshold = self.lost_flag_threshold
        if threshold is None:
            return False
        return record_evidence(self.health, self.config, evidence, threshold)

    @property
    def lost_flag_threshold(self):
        """:attr:`min_evidence` where the lost flag is in use (a positive threshold and a
        model whose scores are log-likelihood ratios, an aligned one), else None."""
        threshold = self.min_evidence
        if threshold <= 0 or getattr(self.model, 'set_camera', None) is None:
            return None
        return threshold

    @property
    def min_evidence(self):
        """The evidence threshold in use: the ``min_evidence`` parameter, or when it is
        negative the value calibrated for the model (its card's ``metadata.min_evidence``),
        else :data:`DEFAULT_MIN_EVIDENCE`."""
        value = self.config.min_evidence
        if value >= 0:
            return value
        card_value = self._card_value('min_evidence')
        return DEFAULT_MIN_EVIDENCE if card_value is None else card_value

    @property
    def min_evidence_fits_model(self):
        """Whether :attr:`min_evidence` was chosen for this model: set as a parameter, or
        calibrated for it (its card's value: ``calibrate-lost``, ``finetune``). The fallback
        for a card without one only flags: on its own maps it may call a good estimate lost,
        and searching there would scatter it."""
        return self.config.min_evidence >= 0 or self._card_value('min_evidence') is not None

    @property
    def nearest_contexts(self):
        """The contexts each particle attends to (0: all): the ``nearest_contexts`` parameter,
        or when it is negative (the default -1) the value chosen for the model (its card's
        ``metadata.nearest_contexts``: ``calibrate-lost --nearest-contexts``), else
        :data:`DEFAULT_NEAREST_CONTEXTS`."""
        return int(self._chosen('nearest_contexts', DEFAULT_NEAREST_CONTEXTS))

    @property
    def likelihood_scale(self):
        """The factor on the model's log-likelihoods in the particle weights: the
        ``likelihood_scale`` parameter, or when it is <= 0 (the default -1) the value calibrated
        for the model (its card's ``metadata.likelihood_scale``), else 1."""
        return self._factor('likelihood_scale')

    @property
    def initial_likelihood_scale(self):
        """The factor on the model's log-likelihoods at the first update of a new belief: the
        ``initial_likelihood_scale`` parameter, or when it is <= 0 (the default -1) the value
        calibrated for the model (its card's ``metadata.initial_likelihood_scale``) while the
        model uses the camera it was calibrated with (another field of view changes what one
        image tells), else 1."""
        return self._factor('initial_likelihood_scale', card_applies=not self._camera_differs())

    def _card_metadata(self, name):
        """The model card's ``metadata.<name>`` as written, or None."""
        return ((getattr(self.model, 'card', None) or {}).get('metadata') or {}).get(name)

    def _card_value(self, name):
        """The model card's calibrated ``metadata.<name>`` (float), or None."""
        value = self._card_metadata(name)
        return None if value is None else float(value)

    @property
    def covariance_scale(self):
        """The factor on the published covariance: the ``covariance_scale`` parameter, or when
        it is <= 0 (the default -1) the value calibrated for the model (its card's
        ``metadata.covariance_scale``: ``calibrate-lost``, ``finetune``) while the model uses
        the camera it was calibrated with, else 1."""
        return self._factor('covariance_scale', card_applies=not self._camera_differs())

    @property
    def covariance_scale_max_std(self):
        """The cloud x-y standard deviation (m) below which a :attr:`covariance_scale` below 1
        applies (:func:`published_scale`): the ``covariance_scale_max_std`` parameter, or when
        it is negative (the default -1) the value chosen with the model's scale (its card's
        ``metadata.covariance_scale_max_std``: ``calibrate-lost``), else
        :data:`DEFAULT_COVARIANCE_SCALE_MAX_STD`."""
        return self._chosen('covariance_scale_max_std', DEFAULT_COVARIANCE_SCALE_MAX_STD)

    @property
    def pose_estimate(self):
        """The rule of the published pose: the ``pose_estimate`` parameter, or when it is empty
        (the default) the one chosen for the model (its card's ``metadata.pose_estimate``),
        else 'mean'."""
        if self.config.pose_estimate:
            return self.config.pose_estimate
        card_rule = self._card_metadata('pose_estimate')
        return card_rule if card_rule in POSE_ESTIMATES else 'mean'

    def _factor(self, name, card_applies=True):
        """A factor parameter ``name``: its value when > 0, else (<= 0, the default -1) the
        card's positive ``metadata.<name>`` where ``card_applies``, else 1."""
        value = getattr(self.config, name)
        if value > 0:
            return value
        card_value = self._card_value(name)
        if card_value is None or card_value <= 0 or not card_applies:
            return 1.0
        return card_value

    def _chosen(self, name, default):
        """A parameter ``name`` whose negative value stands for the model's choice: its value
        when >= 0, else the card's ``metadata.<name>`` when >= 0, else ``default``."""
        value = getattr(self.config, name)
        if value >= 0:
            return value
        card_value = self._card_value(name)
        return default if card_value is None or card_value < 0 else card_value

    def _camera_differs(self):
        """Whether the model now uses a camera other than the one its card's covariance scale
        and first-image weight were calibrated with (``metadata.covariance_scale_hfov_deg``,
        written by the same ``calibrate-lost`` run, else the camera it was trained with): an
        aligned model told another field of view."""
        calibrated = self._card_value('covariance_scale_hfov_deg')
        if calibrated is None:
            calibrated = training_hfov_deg(self.model)
        in_use = getattr(self.model, 'hfov_deg', None)
        return (in_use is not None and calibrated is not None
                and abs(float(in_use) - calibrated) > HFOV_TOLERANCE_DEG)

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

    _belief_score = staticmethod(belief_score)

    def _check_health(self, score):
        """Update the collapse monitor with one update's belief score and apply the recovery
        it calls for; while the estimate is lost (no view of the map backs it) and the monitor
        calls for none, random particles are injected as for a collapse, so a belief settled
        on a look-alike place (after a kidnapping) keeps searching, provided the threshold
        that says "lost" fits the model (:attr:`min_evidence_fits_model`). Returns
        (collapsed, recovery)."""
        collapsed, recovery = record_score(self.health, self.config, score,
                                           search_when_lost=self.min_evidence_fits_model)
        if recovery == 'global':
            self.init_global()
        elif recovery == 'inject':
            self._inject_random(self.config.recovery_alpha)
        return collapsed, recovery

    def _apply_context_pooling(self, pooling):
        """Models that combine contexts in several ways (aligned) use ``pooling``; 'model':
        their own (the card's)."""
        if pooling not in CONTEXT_POOLING_CHOICES:
            raise ValueError(f'context_pooling must be one of {", ".join(CONTEXT_POOLING_CHOICES)}'
                             f', not {pooling!r}')
        if pooling != 'model' and hasattr(self.model, 'set_context_pooling'):
            self.model.set_context_pooling(pooling)

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
        when ESS < resample_ess_ratio * K regularised by ``resample_jitter``, the transition's
        heavy tail (motion_jump_*)."""
        c = self.config
        return FilterConfig(transition_std=(0.0, 0.0, 0.0),
                            motion_noise=(c.motion_noise_xy, c.motion_noise_yaw),
                            resample='systematic', resample_ess_ratio=c.resample_ess_ratio,
                            jump_share=c.motion_jump_share,
                            jump_std=(c.motion_jump_xy, c.motion_jump_xy, c.motion_jump_yaw),
                            resample_jitter=c.resample_jitter)

    @property
    def particles(self):
        """(1, K, 3) map_from_base poses (None before a belief is set)."""
        return None if self.filter is None else self.filter.particles

    @particles.setter
    def particles(self, value):
        self.filter.particles = value
        self._summary = None

    @property
    def log_weights(self):
        """(1, K) normalised log-weights (None before a belief is set)."""
        return None if self.filter is None else self.filter.log_weights

    @log_weights.setter
    def log_weights(self, value):
        self.filter.log_weights = value
        self._summary = None

    def _predict(self, delta, share=1.0):
        """Move the particles by ``delta``; the transition's heavy tail scales with the
        update's evidence share (the jumps per metre do not grow with the frame rate)."""
        self._summary = None
        self.filter.predict(torch.as_tensor(delta, dtype=torch.float32,
                                            device=self.device)[None], jump_scale=share)

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
        self.tight_updates = 0   # a searching cloud: its count starts again
        self.log_weights = normalize_log_weights(self.log_weights)

    # ------------------------------------------------------------------ outputs
    def estimate(self):
        """(pose (3,), covariance (3, 3)) of map_from_base, numpy float64: the pose of
        :attr:`pose_estimate` (the heaviest cluster's weighted mean, or the weighted mean of
        all particles), the covariance the whole cloud's spread around it times
        :attr:`covariance_scale` (:func:`published_scale`: a shrinking scale only once the
        cloud has been tight for a while) (plus a term covering the map while the estimate is
        lost)."""
        mean, cov = self._summary if self._summary is not None else self._spread()
        cfg = self.config
        cov = cov * float(published_scale(self.covariance_scale, cloud_xy_std(cov),
                                          self.covariance_scale_max_std, self.tight_updates,
                                          cfg.covariance_scale_min_updates))
        if self.health.unreliable and self.bounds is not None:
            cov = cov + anywhere_on_map(self.bounds, mean)
        return mean, cov

    def _spread(self):
        """(the published pose (3,), the cloud's covariance (3, 3) about it), numpy float64."""
        if self.pose_estimate == 'heaviest_cluster':
            mean = heaviest_cluster_mean(self.particles[0], self.log_weights[0])[0]
        else:
            mean = weighted_mean(self.particles, self.log_weights)[0]
        # in float64: a cloud resampled onto a few particles has a singular covariance, which
        # float32 rounding can turn slightly indefinite (and the saved pose unusable)
        mean = mean.double()
        cov = covariance(self.particles.double(), self.log_weights.double(), mean[None])[0]
        cov = cov.cpu().numpy()
        return mean.cpu().numpy(), (cov + cov.T) / 2.0

    def particle_array(self):
        """(particles (K, 3), normalised weights (K,)) as numpy."""
        return (self.particles[0].cpu().numpy(),
                torch.softmax(self.log_weights[0], -1).cpu().numpy())

    def ess(self):
        return float(effective_sample_size(self.log_weights)[0]) if self.ready else 0.0
