"""Calibrate a model's lost-flag threshold (``min_evidence``) and the scale of its published
covariance (``covariance_scale``) on recordings of several places.

The localizer flags its estimate lost when the belief's evidence (its log mean likelihood
ratio, :mod:`dmn_localizer.localization.health`) stays below ``min_evidence``; while lost, it
also searches (random particles) and publishes a covariance that covers the map. Where that
threshold lies depends on the model: a fine-tuned model's scores sit elsewhere than the model
it started from. This module replays runs of held-out places through the localizer, each on
the map of its own place (the images match a view) and on the map of another place (they
match none), and picks the threshold that best tells the two apart.

Each place is a group of bags recorded in one map frame: the bag with the most images is the
map (its images and poses, as ``replay --map-bag``), the others are runs to localize. Only
images and poses are needed: the odometry is the pose topic's motion plus the noise of
``simulate-bag``'s wheel odometry (:data:`~dmn_localizer.bags.simulate.ODOM_NOISE`). The
runs start from a uniform belief with the localizer's defaults, the evidence check off (so no
search disturbs what is measured).

The flag counts as the localizer's does (:func:`~dmn_localizer.localization.health.
record_evidence`: +1 per update below the threshold, -1 per update above, flagged from
``collapse_updates`` on); a threshold's score is the mean share of updates flagged on foreign
maps minus that on own maps (Youden's J). The chosen threshold is the middle of those within
0.02 of the best score; below :data:`MIN_SEPARATION` the model cannot tell the maps apart on
these places and no threshold is chosen.

With a threshold chosen, the own-map runs also give the covariance scale: per run the mean x-y
NEES of its updates (an update flagged lost at the threshold publishes a covariance covering
the map and counts as 0), and the scale that puts the median run at 2, the mean NEES of a
calibrated 2-D estimate, applied and fitted as the localizer applies it (a scale below 1
only to a cloud that has stayed tighter than ``covariance_scale_max_std`` for
``covariance_scale_min_updates`` updates; :func:`choose_covariance_scale`). That spread is
chosen with the scale (:func:`choose_max_std`): the bound that puts the most runs in the NEES
band. Confident misses
(the estimate :data:`MISS_M` or more off and outside its own 2-sigma at scale 1: a wrong
place, which the lost flag and the model answer) are left out of the fit: the scale sizes the
cloud around the pose it tracks, and a run on a look-alike place would otherwise widen every
tracking cloud by its error (with a fine-tune's two held-out places, one such run sets the
median). The filter is the same at any scale; only what it publishes changes.

Given several candidate counts of the contexts each particle attends to (``nearest_contexts``),
the own-map runs first choose among them (:mod:`dmn_localizer.replay.context_count`), and
everything after is calibrated at the chosen count.

Before the runs, the weight of a new belief's first image (``initial_likelihood_scale``) is
fitted on images of the own-map runs (:mod:`dmn_localizer.replay.first_image`), and every run
is localized with it: it shapes the first cloud, and so what the threshold and the scale see.
"""
import dataclasses
import logging
import math

import numpy as np

from dmn_localizer.bags.read import open_bag
from dmn_localizer.bags.simulate import noisy_odometry
from dmn_localizer.config import LocalizerConfig
from dmn_localizer.localization.health import Health, record_evidence
from dmn_localizer.localization.localizer import cloud_xy_std, published_scale, tight_runs
from dmn_localizer.replay.context_count import choose_nearest_contexts
from dmn_localizer.replay.context_count import describe as describe_counts
from dmn_localizer.replay.first_image import (choose_initial_scale, first_image_samples, NEAR_M,
                                              NEAR_YAW)
from dmn_localizer.replay.offline import (build_map, CHI2_2DOF_95, localize, localizer_for,
                                          read_stream, TIGHT_M, Topics, xy_nees)
from dmn_localizer.util.errors import UserError

logger = logging.getLogger(__name__)

MIN_SEPARATION = 0.5
"""The least score (foreign-map flagged share minus own-map flagged share) worth a threshold."""
THRESHOLDS = np.round(np.arange(0.1, 15.0 + 1e-9, 0.1), 1)
"""The candidate thresholds (``min_evidence`` must be > 0 to be in use)."""
CALIBRATED_NEES = 2.0
"""The mean x-y NEES of a calibrated estimate (chi-square with 2 degrees of freedom)."""
MISS_M = TIGHT_M
"""An update whose x-y error is at least this (m) and outside the 2-sigma of its unscaled cloud
is a confident miss, left out of the covariance scale's fit."""
SCALE_RANGE = (0.05, 20.0)
"""The covariance scales :func:`choose_covariance_scale` may choose."""
MAX_STD_CANDIDATES = (0.5, 0.75, 1.0)
"""The cloud spreads (m) below which a scale below 1 may apply
(``covariance_scale_max_std``), of which :func:`choose_max_std` chooses one."""
NEES_BAND = (1.0, 6.0)
"""A run whose mean x-y NEES lies in this band counts as honest (neither far too sure nor far
too unsure)."""


def _image_count(bag, image_topic):
    reader = open_bag(bag)
    try:
        return sum(c.msgcount for c in reader.connections if c.topic == image_topic)
    finally:
        reader.close()


def split_place(bags, image_topic):
    """(map bag, [run bags]) of one place: the bag with the most images is the map."""
    counts = [_image_count(b, image_topic) for b in bags]
    order = sorted(range(len(bags)), key=lambda i: (-counts[i], i))
    return bags[order[0]], [bags[i] for i in order[1:]]


def run_trace(model, view_map, stream, seed=0, config=None):
    """(the belief's evidence, x-y NEES, the cloud's x-y standard deviation, the estimate's
    x-y error) at each update (arrays) of ``stream`` localized from a uniform belief on
    ``view_map``: the evidence check off (see the module docstring), the covariance unscaled
    (``covariance_scale`` 1)."""
    import torch
    cfg = dataclasses.replace(config or LocalizerConfig(), min_evidence=0.0,   # no search
                              covariance_scale=1.0)
    torch.manual_seed(seed)
    loc = localizer_for(model, cfg, torch.device('cpu'), seed, stream, view_map)
    track = localize(loc, stream, 'global')
    std = cloud_xy_std(np.asarray(track.covariances, np.float64).reshape(-1, 3, 3))
    return np.asarray(track.evidence, np.float64), xy_nees(track), std, track.errors()[0]


def _read_run(bag, topics, size, seed):
    """A run's stream with odometry from its poses plus simulated wheel noise."""
    stream = read_stream(bag, topics, size)
    stream.odom = noisy_odometry(stream.truth, np.random.default_rng(seed))[0]
    return stream


def _map(bag, topics, size):
    view_map = build_map(bag, topics, size)
    if len(view_map) == 0:
        raise UserError(f'{bag}: no pose-paired images to build a map from')
    return view_map


def flagged_share(trace, threshold, collapse_updates):
    """Share of the updates of an evidence ``trace`` the localizer flags lost at
    ``threshold``."""
    if len(trace) == 0:
        return 0.0
    return float(np.mean(flags(trace, threshold, collapse_updates)))


def choose_threshold(own, foreign, collapse_updates, thresholds=THRESHOLDS):
    """The threshold that best separates the ``own``-map traces from the ``foreign``-map ones
    (lists of evidence arrays; see the module docstring): a dict with ``min_evidence`` (None
    when the best score is below :data:`MIN_SEPARATION`), the flagged shares on own and foreign
    maps at it (per trace) and the score."""
    if not own or not foreign:
        raise ValueError('both own-map and foreign-map traces are needed')
    scores, shares = [], []
    for t in thresholds:
        o = [flagged_share(tr, t, collapse_updates) for tr in own]
        f = [flagged_share(tr, t, collapse_updates) for tr in foreign]
        shares.append((o, f))
        scores.append(float(np.mean(f) - np.mean(o)))
    scores = np.asarray(scores)
    near_best = np.flatnonzero(scores >= scores.max() - 0.02)
    pick = int(near_best[len(near_best) // 2])
    o, f = shares[pick]
    good = scores[pick] >= MIN_SEPARATION
    return dict(min_evidence=float(thresholds[pick]) if good else None,
                score=round(float(scores[pick]), 3),
                own_flagged=[round(v, 3) for v in o], foreign_flagged=[round(v, 3) for v in f])


def flags(trace, threshold, collapse_updates):
    """Whether the localizer flags each update of an evidence ``trace`` lost at ``threshold``
    (bool array)."""
    health = Health()
    config = LocalizerConfig(collapse_updates=collapse_updates)
    return np.array([record_evidence(health, config, e, threshold) for e in trace], bool)


def choose_covariance_scale(evidence, nees, threshold, collapse_updates, stds=None,
                            max_std=0.0, min_updates=0, errors=None):
    """The covariance scale for own-map runs (lists of per-update evidence and x-y NEES
    arrays at scale 1) and the lost threshold: the one that puts the median over runs of their
    mean NEES at :data:`CALIBRATED_NEES`, within :data:`SCALE_RANGE`, over the updates it
    applies to as the localizer publishes it (flagged updates count 0): a scale above 1
    applies to every update; with ``stds`` (the cloud's x-y standard deviation per update)
    and ``max_std`` > 0, a scale below 1 only to the updates whose cloud is tighter than
    ``max_std`` and has been for ``min_updates`` updates in a row (the localizer's own rule,
    :func:`~dmn_localizer.localization.localizer.published_scale`; the unflagged ones among
    them: the tracking it corrects; the median over the runs that have such updates, and no
    scale below 1 when none has). Fitting the whole run instead would shrink the tracked
    updates further to make up for the unscaled converging ones). With ``errors`` (the x-y
    error per update), the confident misses (:data:`MISS_M` or more off, NEES above
    :data:`~dmn_localizer.replay.offline.CHI2_2DOF_95` at scale 1) are left out of the fit
    (see the module docstring). Returns a dict with ``covariance_scale``, the runs' mean NEES
    (all updates) at scale 1 and at the chosen one, at the chosen one over the updates it was
    fitted to (None: none in that run), and the confident misses left out per run."""
    runs = []
    for i, (ev, ne) in enumerate(zip(evidence, nees)):
        if len(ne) == 0:
            continue
        lost = flags(ev, threshold, collapse_updates) if threshold else np.zeros(len(ne), bool)
        miss = np.zeros(len(ne), bool)
        if errors is not None:
            miss = (np.asarray(errors[i], np.float64) >= MISS_M) & ~(ne < CHI2_2DOF_95) & ~lost
        ne = np.where(lost | ~np.isfinite(ne), 0.0, ne)
        std = np.zeros(len(ne)) if stds is None else np.asarray(stds[i], np.float64)
        runs.append((ne, (std, tight_runs(std, max_std), lost, miss)))
    if not runs:
        return dict(covariance_scale=None)

    def run_mean(ne, cloud, scale):
        std, tight, _, _ = cloud
        return float(np.mean(ne / published_scale(scale, std, max_std, tight, min_updates)))

    def fit_mean(ne, cloud, scale):   # over the updates the scale applies to, or None
        std, tight, lost, miss = cloud
        factor = published_scale(scale, std, max_std, tight, min_updates)
        applies = ~miss if scale >= 1.0 else (factor != 1.0) & ~lost & ~miss
        return float(np.mean(ne[applies] / factor[applies])) if applies.any() else None

    def median(scale):
        means = [m for m in (fit_mean(ne, cloud, scale) for ne, cloud in runs) if m is not None]
        return np.median(means) if means else 0.0
    lo, hi = np.log(SCALE_RANGE[0]), np.log(SCALE_RANGE[1])   # the median falls as it grows
    if all(fit_mean(ne, cloud, 0.5) is None for ne, cloud in runs):
        lo = 0.0   # no run tracks tightly for long enough: nothing to shrink, a scale >= 1
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if median(np.exp(mid)) > CALIBRATED_NEES else (lo, mid)
    scale = float(f'{float(np.exp(0.5 * (lo + hi))):.2g}')
    fitted = [fit_mean(ne, cloud, scale) for ne, cloud in runs]
    return dict(covariance_scale=scale,
                confident_misses=[int(cloud[3].sum()) for _, cloud in runs],
                own_nees=[round(run_mean(ne, cloud, 1.0), 2) for ne, cloud in runs],
                own_nees_scaled=[round(run_mean(ne, cloud, scale), 2) for ne, cloud in runs],
                own_nees_fitted=[None if m is None else round(m, 2) for m in fitted])


def choose_max_std(candidates, fit):
    """The covariance scale and the cloud spread below which it applies when below 1
    (``covariance_scale_max_std``): ``fit(max_std)`` (:func:`choose_covariance_scale` on the
    own-map runs) for each candidate, and the candidate whose scale puts the most runs' mean
    NEES (all updates, as published) in :data:`NEES_BAND`; on a tie the smallest, which
    shrinks the fewest clouds. Which spread separates tracking from converging depends on the
    model: one whose likelihood is wide tracks with a cloud near 0.5 m, and a bound there
    shrinks its cloud only now and then. Returns the chosen fit's dict with
    ``covariance_scale_max_std`` and ``max_std_candidates`` (per candidate: the scale and the
    runs in the band)."""
    fits = {}
    for max_std in sorted(set(candidates)):
        result = fit(max_std)
        if result['covariance_scale'] is None:
            return result
        inside = sum(NEES_BAND[0] <= v <= NEES_BAND[1] for v in result['own_nees_scaled'])
        fits[max_std] = dict(result, covariance_scale_max_std=max_std, runs_in_band=inside)
    best = max(fits.values(), key=lambda r: (r['runs_in_band'], -r['covariance_scale_max_std']))
    best['max_std_candidates'] = {f'{m:g}': dict(covariance_scale=r['covariance_scale'],
                                                 runs_in_band=r['runs_in_band'])
                                  for m, r in fits.items()}
    return best


def calibrate(model, places, image_topic, pose_topic, calibrate_on=None, seed=0,
              config=None, progress=False, fit_initial_scale=True, nearest_candidates=None,
              max_std_candidates=None):
    """Calibrate ``min_evidence`` for ``model`` (see the module docstring).

    With ``fit_initial_scale``, first the weight of a new belief's first image
    (``initial_likelihood_scale``, :mod:`dmn_localizer.replay.first_image`) on the own-map
    runs; the runs are then localized with it (else with the config's or the card's). With
    two or more ``nearest_candidates`` (counts of contexts per particle), first the count
    (:func:`~dmn_localizer.replay.context_count.choose_nearest_contexts` on the own-map runs),
    and everything after at it; with one, that count (written to ``metadata`` too). The
    covariance scale is fitted for each of ``max_std_candidates`` (cloud spreads below which a
    scale below 1 applies; default the config's ``covariance_scale_max_std`` when >= 0, else
    :data:`MAX_STD_CANDIDATES`) and :func:`choose_max_std` keeps one.

    places: ``{name: [bag, ...]}`` (one map frame each); calibrate_on: the names whose runs are
    localized (default all; held-out places for a fine-tuned model), each on its own map and on
    the map of the next place in name order (any place of ``places``). Returns the dict of
    :func:`choose_threshold` plus the run pairs and the per-run median evidence, the
    covariance scale (:func:`choose_covariance_scale`) and its bound (:func:`choose_max_std`),
    the first image's weight and ``metadata``, what goes into the model card
    (``metadata.min_evidence``, ``metadata.covariance_scale`` with
    ``metadata.covariance_scale_max_std``, ``metadata.initial_likelihood_scale``, and
    ``metadata.nearest_contexts`` when chosen), or a dict
    with ``min_evidence`` None and the ``reason`` when the runs cannot be made or the model's
    scores are not log-likelihood ratios."""
    if getattr(model, 'set_camera', None) is None:
        return dict(min_evidence=None, reason='only for models whose scores are log-likelihood '
                    'ratios (aligned); the DMN has no evidence check')
    names = sorted(places)
    targets = sorted(calibrate_on if calibrate_on is not None else names)
    if len(names) < 2:
        return dict(min_evidence=None, reason='needs at least two places (a foreign map)')
    split = {}   # place -> (map bag, run bags), read off the bags' metadata when needed

    def place(name):
        if name not in split:
            split[name] = split_place(list(places[name]), image_topic)
        return split[name]
    jobs = []    # (run bag, [(kind, map place)]): each run on its own map and a foreign one
    for name in targets:
        other = names[(names.index(name) + 1) % len(names)]
        jobs += [(run, [('own', name), ('foreign', other)]) for run in place(name)[1]]
    if not jobs:
        return dict(min_evidence=None, reason='no place has a run besides its map bag (record '
                    'each place twice: a mapping run and a localization run)')
    from tqdm import tqdm
    topics = Topics(image_topic, pose_topic, pose_topic)
    size = model.config.image_size
    maps = {}    # place -> its view map, built once
    streams = {}   # run bag -> its stream, read once

    def view_map(name):
        if name not in maps:
            maps[name] = _map(place(name)[0], topics, size)
        return maps[name]

    def stream_of(run):
        if run not in streams:
            streams[run] = _read_run(run, topics, size, seed)
        return streams[run]
    traces = {'own': [], 'foreign': []}
    own_nees, own_std, own_error = [], [], []
    runs, cameras = [], set()
    initial = counts = None
    own_runs = [(stream_of(run), view_map(pairs[0][1])) for run, pairs in jobs]
    if nearest_candidates is not None and len(set(nearest_candidates)) > 1:
        counts = _nearest_contexts(model, own_runs, nearest_candidates, seed, config, progress)
        counts['nearest_description'] = describe_counts(counts, len(jobs), targets)
    elif nearest_candidates is not None:    # one count, given: applied and written as it is
        m = int(next(iter(nearest_candidates)))
        counts = dict(nearest_contexts=m, nearest_description=f'{m}, given (not chosen)')
    if counts is not None:
        config = dataclasses.replace(config or LocalizerConfig(),
                                     nearest_contexts=counts['nearest_contexts'])
    if fit_initial_scale:
        initial = _initial_scale(model, own_runs, seed, config, progress)
        if initial['initial_likelihood_scale'] is not None:
            config = dataclasses.replace(config or LocalizerConfig(),
                                         initial_likelihood_scale=initial[
                                             'initial_likelihood_scale'])
    with tqdm(total=2 * len(jobs), desc='lost-flag calibration', unit='run',
              disable=not progress) as bar:
        for run, pairs in jobs:
            stream = stream_of(run)
            for kind, map_name in pairs:
                view_map(map_name)
                trace, nees, std, error = run_trace(model, maps[map_name], stream, seed,
                                                    config)
                traces[kind].append(trace)
                if kind == 'own':
                    own_nees.append(nees)
                    own_std.append(std)
                    own_error.append(error)
                    cameras.add(getattr(model, 'hfov_deg', None))   # the bags' camera_info
                finite = trace[np.isfinite(trace)]
                runs.append(dict(kind=kind, map_place=map_name, run=str(run),
                                 updates=len(trace),
                                 median_evidence=(round(float(np.median(finite)), 2)
                                                  if len(finite) else None)))
                bar.update()
    collapse_updates = (config or LocalizerConfig()).collapse_updates
    result = choose_threshold(traces['own'], traces['foreign'], collapse_updates)
    result['runs'] = runs
    if counts is not None:
        result.update(counts)
    if initial is not None and initial['initial_likelihood_scale'] is not None:
        result.update(initial)
        result['initial_description'] = (
            f"{initial['images']} images of {len(jobs)} runs of {', '.join(targets)}, each "
            f"scored as the first image of a global localization on its own map: mean log "
            f"posterior mass within {NEAR_M:g} m and {math.degrees(NEAR_YAW):g} deg of the "
            f"true pose {initial['scores'][1.0]:.2f} at 1, "
            f"{initial['scores'][initial['initial_likelihood_scale']]:.2f} at "
            f"{initial['initial_likelihood_scale']:g} (dmn-localizer calibrate-lost)")
    result['description'] = (
        f"{len(traces['own'])} runs of {', '.join(targets)} on their own and another place's "
        f"map: own maps flagged {_range(result['own_flagged'])}, foreign maps "
        f"{_range(result['foreign_flagged'])} of the updates (dmn-localizer calibrate-lost)")
    if result['min_evidence'] is None:
        result['reason'] = (f"own and foreign maps not told apart (best score "
                            f"{result['score']:.2f} < {MIN_SEPARATION})")
        result['covariance_scale'] = None
        return result
    cfg = config or LocalizerConfig()
    if max_std_candidates is None:
        max_std_candidates = ((cfg.covariance_scale_max_std,)
                              if cfg.covariance_scale_max_std >= 0 else MAX_STD_CANDIDATES)
    result.update(choose_max_std(max_std_candidates, lambda max_std: choose_covariance_scale(
        traces['own'], own_nees, result['min_evidence'], collapse_updates, own_std, max_std,
        cfg.covariance_scale_min_updates, own_error)))
    if result['covariance_scale'] is not None:
        result['covariance_description'] = (
            f"{len(own_nees)} runs of {', '.join(targets)} on their own map: mean x-y NEES "
            f"{_span(result['own_nees'])} at scale 1, {_span(result['own_nees_scaled'])} at "
            f"{result['covariance_scale']:g}{_tracked(result)}{_misses(result)}"
            f"{_max_std(result)} (dmn-localizer calibrate-lost)")
        if len(cameras) == 1 and None not in cameras:   # the scale holds for this camera
            result['covariance_scale_hfov_deg'] = round(float(cameras.pop()), 2)
    result['metadata'] = _card_metadata(result)
    return result


def _nearest_contexts(model, pairs, candidates, seed, config, progress):
    """:func:`~dmn_localizer.replay.context_count.choose_nearest_contexts` over the (stream,
    its own view map) ``pairs``, each localized as the lost-flag runs are
    (:func:`run_trace`)."""
    from tqdm import tqdm
    bar = tqdm(total=len(set(candidates)) * len(pairs), desc='contexts per particle',
               unit='run', disable=not progress)

    def run_errors(m):
        cfg = dataclasses.replace(config or LocalizerConfig(), nearest_contexts=m)
        errors = []
        for stream, view_map in pairs:
            errors.append(run_trace(model, view_map, stream, seed, cfg)[3])
            bar.update()
        return errors
    with bar:
        return choose_nearest_contexts(candidates, run_errors)


def _initial_scale(model, pairs, seed, config, progress):
    """:func:`~dmn_localizer.replay.first_image.choose_initial_scale` over the images of the
    (stream, its own view map) ``pairs``."""
    import torch
    from tqdm import tqdm
    cfg = config or LocalizerConfig()
    samples = []
    for stream, view_map in tqdm(pairs, desc='first-image weight', unit='run',
                                 disable=not progress):
        loc = localizer_for(model, cfg, torch.device('cpu'), seed, stream, view_map)
        samples += first_image_samples(loc, stream)
    return choose_initial_scale(samples)


def _card_metadata(result):
    """The model-card metadata of a :func:`calibrate` result: ``min_evidence`` and
    ``covariance_scale``, each with its description, the horizontal field of view of the
    camera the scale was calibrated with, ``initial_likelihood_scale`` and
    ``nearest_contexts``; only what was chosen."""
    values = {}
    if result.get('nearest_contexts') is not None:
        values.update(nearest_contexts=result['nearest_contexts'],
                      nearest_contexts_calibration=result['nearest_description'])
    if result.get('initial_likelihood_scale') is not None:
        values.update(initial_likelihood_scale=result['initial_likelihood_scale'],
                      initial_likelihood_scale_calibration=result['initial_description'])
    if result.get('min_evidence') is not None:
        values.update(min_evidence=result['min_evidence'],
                      min_evidence_calibration=result['description'])
    if result.get('covariance_scale') is not None:
        values.update(covariance_scale=result['covariance_scale'],
                      covariance_scale_max_std=result['covariance_scale_max_std'],
                      covariance_scale_calibration=result['covariance_description'])
        if result.get('covariance_scale_hfov_deg') is not None:
            values['covariance_scale_hfov_deg'] = result['covariance_scale_hfov_deg']
    return values


def _max_std(result):
    """'; below 1 only for clouds under M m (...)' of a scale below 1."""
    if result['covariance_scale'] >= 1.0:
        return ''
    candidates = result.get('max_std_candidates') or {}
    chosen = f"; applied to clouds under {result['covariance_scale_max_std']:g} m"
    if len(candidates) < 2:
        return chosen
    tried = ', '.join(f"{m} m: scale {r['covariance_scale']:g}, {r['runs_in_band']} runs"
                      for m, r in candidates.items())
    return (f"{chosen}, the bound that puts the most runs in NEES [{NEES_BAND[0]:g}, "
            f"{NEES_BAND[1]:g}] ({tried})")


def _tracked(result):
    """', over the updates it applies to A-B' where a scale below 1 applies to only some."""
    fitted = [m for m in result.get('own_nees_fitted') or [] if m is not None]
    if result['covariance_scale'] >= 1.0 or not fitted:
        return ''
    return f' ({_span(fitted)} over the updates it applies to)'


def _misses(result):
    """'; N confident misses left out' where the fit left some out."""
    n = sum(result.get('confident_misses') or [])
    return f'; {n} confident miss{"es" if n > 1 else ""} left out' if n else ''


def _span(values):
    return f'{min(values):.2f}' if len(values) == 1 else f'{min(values):.2f}-{max(values):.2f}'


def _range(shares):
    lo, hi = 100 * min(shares), 100 * max(shares)
    return f'{lo:.0f}%' if round(lo) == round(hi) else f'{lo:.0f}-{hi:.0f}%'
