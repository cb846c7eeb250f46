"""Filter health: the likelihood-collapse monitor and the evidence check (numpy, no torch).

Kidnapped robot, wrong initial pose. The DMN log-likelihood is unnormalised and its offset and
scale change from image to image, so neither its raw value nor the ESS (low in a healthy,
converged filter too) says whether the belief is wrong. Each update therefore also scores
``health_samples`` random poses of the map region and computes the *belief score*: the share
of those random poses whose log-likelihood is below the belief's log mean likelihood
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
re-initialises globally (which resets the count). An update whose log-likelihoods are all
non-finite keeps the weights and counts as collapsed.

Evidence (``min_evidence``, models whose scores are log-likelihood ratios only): the belief's
log mean likelihood ratio (prior weights: how much better the poses the filter believes in
explain the image than a view that tells nothing). When it stays below ``min_evidence``, the
belief is not backed by a view of the map that matches the images and the estimate is flagged
*unreliable* (the localizer's covariance then covers the map). The belief's mean, not the best
particle's score: with thousands of particles against hundreds of views, the best of them
matches a foreign image by chance. With a threshold that fits the model, an estimate that has
been unreliable for more than ``lost_search_delay`` updates in a row also searches: random
injection at each further unreliable update (:func:`record_score`).

This module keeps the counters and decides; :class:`~dmn_localizer.localization.localizer.
Localizer` draws and scores the reference poses and applies the recovery decided here.
"""
import logging
import math

import numpy as np
from dataclasses import dataclass

import torch

logger = logging.getLogger(__name__)


@dataclass
class UpdateReport:
    """What one observation update did (for diagnostics)."""
    updated: bool
    ess: float = float('nan')
    resampled: bool = False
    max_log_likelihood: float = float('nan')
    evidence: float = float('nan')      # the belief's log mean likelihood (ratio), see above
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
    evidence: float = float('nan')   # of the last update (see UpdateReport.evidence)
    weak_evidence: int = 0           # +1 per update whose evidence < min_evidence, -1 else
    unreliable: bool = False         # weak_evidence >= collapse_updates: the estimate is not
    #                                  backed by any matching view (covariance covers the map)
    unreliable_total: int = 0
    lost_updates: int = 0            # updates in a row the estimate has been unreliable


def belief_score(belief, ref_ll):
    """Share of the random reference poses whose log-likelihood ``ref_ll`` is below
    ``belief``, the belief's log mean likelihood (prior weights); NaN when no reference is
    finite."""
    ref_ll = ref_ll[torch.isfinite(ref_ll)]
    if ref_ll.numel() == 0:
        return math.nan
    return float((ref_ll < belief).float().mean())


def record_score(health, config, score, search_when_lost=False):
    """Update the collapse monitor ``health`` with one update's belief score. Returns
    (collapsed, recovery): recovery '', 'inject' (redraw ``recovery_alpha`` of the particles)
    or 'global' (re-initialise globally), for the caller to apply. With ``search_when_lost``
    an update whose estimate is lost (:func:`record_evidence` said so before) injects too when
    the collapse monitor calls for nothing, once it has been lost for more than
    ``lost_search_delay`` updates in a row, so a belief settled on a look-alike place keeps
    searching."""
    collapsed, recovery = _collapse_recovery(health, config, score)
    if (not recovery and search_when_lost and health.unreliable and config.recovery_alpha > 0.0
            and health.lost_updates > config.lost_search_delay):
        recovery = _injection(health)
    return collapsed, recovery


def _collapse_recovery(h, c, score):
    """(collapsed, recovery) of the collapse monitor alone (see :func:`record_score`)."""
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
        h.global_reinits += 1
        h.last_recovery = 'global'
        return True, 'global'
    if h.collapsed >= c.collapse_updates and c.recovery_alpha > 0.0:
        return True, _injection(h)
    return True, ''


def _injection(h):
    """Count a random injection in ``h``; returns 'inject'."""
    h.injections += 1
    h.last_recovery = 'inject'
    return 'inject'


def record_evidence(health, config, evidence, min_evidence):
    """Whether the images still match a view of the map: the belief's log mean likelihood
    ratio ``evidence`` against ``min_evidence`` (the threshold in use, see
    :attr:`Localizer.min_evidence <dmn_localizer.localization.localizer.Localizer.min_evidence>`),
    counted as the collapse count is (+1 per weak,
    -1 per matching update, capped): one chance match on a foreign map does not clear it, a few
    matching updates do. Returns :attr:`Health.unreliable`."""
    h, c = health, config
    h.evidence = float(evidence)
    weak = not evidence >= min_evidence
    h.weak_evidence = (min(h.weak_evidence + 1, 2 * c.collapse_updates) if weak
                       else max(h.weak_evidence - 1, 0))
    h.unreliable = h.weak_evidence >= c.collapse_updates
    h.lost_updates = h.lost_updates + 1 if h.unreliable else 0
    h.unreliable_total += int(h.unreliable)
    return h.unreliable


def anywhere_on_map(bounds, mean):
    """The covariance (3, 3) an unreliable estimate adds: the second moment, about the published
    ``mean`` (x, y, yaw), of a pose anywhere in the map's region ``bounds`` (x0, y0, size; a
    square) with any heading. Uniform there, it is the region's variance plus the offset of the
    mean from the region's centre, so a mean far from the centre gets the larger spread it
    needs to cover the far side."""
    x0, y0, size = (float(v) for v in bounds)
    offset = np.array([x0 + size / 2.0 - mean[0], y0 + size / 2.0 - mean[1]])
    cov = np.zeros((3, 3))
    cov[:2, :2] = np.eye(2) * size ** 2 / 12.0 + np.outer(offset, offset)
    cov[2, 2] = math.pi ** 2 / 3.0
    return cov
