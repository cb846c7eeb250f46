"""Calibrate the weight of a new belief's first image (``initial_likelihood_scale``).

The first update of a global localization weighs its uniform sample of poses by one image's
log-likelihoods, evidence that no earlier image has given. Later images along a drive repeat
much of what the images before them showed, and the localizer tempers them for that
(``evidence_min_d``, ``likelihood_scale``); the first image is independent, but a model's
scores of one image can still be flatter or sharper than what the image tells: the first cloud
then spreads over more of the map than it should (and its mean lies far from every place the
image fits) or stakes all on one place.

The factor is chosen on recordings: for every :data:`EVERY`-th image of runs localized on their
own place's map, the first sample of a global localization (``global_initial_particles`` poses
drawn uniformly over the map's region) is scored, and each candidate factor weighs the poses by
its multiple of the log-likelihoods. The posterior is judged by the log of its mass on the
poses near the true pose (within :data:`NEAR_M` and :data:`NEAR_YAW`, floored at
:data:`FLOOR`): a proper score, highest for the factor whose posterior puts as much weight near
the truth as the images justify (a sharper one stakes it all on a wrong place where an image
misleads, a flatter one leaves it spread over the map). The factor with the highest mean score
over the images is chosen (1 among equals).
"""
import math

import numpy as np

SCALES = (0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 5.0, 6.0, 8.0)
"""The candidate factors."""
NEAR_M = 1.0
"""A pose this close to the true base pose in x-y (m) ..."""
NEAR_YAW = math.radians(20.0)
"""... and in heading (rad) is near it."""
FLOOR = 1e-6
"""The least posterior mass near the truth counted (an image whose posterior misses the truth
costs log(FLOOR), not minus infinity)."""
EVERY = 5
"""Every this-th image of a run is scored."""


def first_image_samples(localizer, stream, every=EVERY):
    """[(log-likelihoods (K,), near (K,) bool), ...] for every ``every``-th image of ``stream``
    that has a true pose: ``localizer``'s (map set) first sample of a global localization
    scored by the image, as the first update scores it (unscaled), and which of its poses are
    near the true base pose."""
    from dmn_localizer.geometry import compose, wrap_angle
    from dmn_localizer.replay.offline import truth_buffer
    localizer.init_global()
    base = localizer.particles                                  # (1, K, 3) map_from_base
    cam = compose(base, localizer.base_from_camera.to(base.device))
    poses = base[0].double().cpu().numpy()
    truth = truth_buffer(stream)
    samples = []
    for i in range(0, len(stream.images), every):
        gt = truth.pose_at(stream.image_stamps[i])
        if gt is None:
            continue
        ll = localizer.score_image(stream.images[i], cam)[1][0].double().cpu().numpy()
        near = ((np.hypot(poses[:, 0] - gt[0], poses[:, 1] - gt[1]) < NEAR_M)
                & (np.abs(wrap_angle(poses[:, 2] - gt[2])) < NEAR_YAW))
        samples.append((ll, near))
    return samples


def near_mass_score(ll, near, scale):
    """log of the posterior mass on the ``near`` poses when a uniform sample is weighed by
    ``scale`` times its log-likelihoods ``ll`` (non-finite ones weigh 0), at least
    log(:data:`FLOOR`); None when no log-likelihood is finite."""
    ll = np.asarray(ll, np.float64)
    finite = np.isfinite(ll)
    if not finite.any():
        return None
    z = scale * (ll[finite] - ll[finite].max())
    w = np.exp(z)
    mass = w[np.asarray(near)[finite]].sum() / w.sum()
    return float(np.log(max(mass, FLOOR)))


def choose_initial_scale(samples, scales=SCALES):
    """The factor of ``scales`` with the highest mean :func:`near_mass_score` over
    ``samples`` (of :func:`first_image_samples`): a dict with ``initial_likelihood_scale``
    (None without any scorable image), ``images`` and ``scores`` ({factor: mean score})."""
    scores = {}
    for scale in scales:
        values = [v for v in (near_mass_score(ll, near, scale) for ll, near in samples)
                  if v is not None]
        if values:
            scores[float(scale)] = float(np.mean(values))
    if not scores:
        return dict(initial_likelihood_scale=None, images=0, scores={})
    top = max(scores.values())
    best = 1.0 if scores.get(1.0) == top else max(scores, key=scores.get)
    return dict(initial_likelihood_scale=best, images=len(samples),
                scores={k: round(v, 3) for k, v in scores.items()})
