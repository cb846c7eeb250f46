"""Choose how many map contexts each particle attends to (``nearest_contexts``) for a model, on
recordings of its places.

On a dense map each particle is compared with its M nearest views only. Few views make the
likelihood jump where the nearest set changes between two poses a step apart; many views
smooth it, and blur it once most of them see other parts of the place; the cost of an update
grows with M. Where the balance lies depends on the model and on the places (open rooms, whose
views overlap from far, gain from more than corridors do), so it is measured: every own-map run
is localized at each candidate count, and the count with the lowest mean x-y RMSE over the runs
is chosen; a count within :data:`TIE_SHARE` of that RMSE that is smaller wins, as it costs
less. :func:`dmn_localizer.replay.lost_threshold.calibrate` runs it (``calibrate-lost
--nearest-contexts 8,16,32``) before the calibrations that depend on the count.
"""
import math

import numpy as np

# a smaller count whose mean RMSE is within this share of the best one's is chosen instead
TIE_SHARE = 0.05


def run_rmse(errors):
    """The x-y RMSE (m) of one run's per-update errors (NaN where it has none)."""
    errors = np.asarray(errors, np.float64)
    errors = errors[np.isfinite(errors)]
    return float(np.sqrt(np.mean(errors ** 2))) if len(errors) else math.nan


def choose_nearest_contexts(candidates, run_errors, tie_share=TIE_SHARE):
    """The count of ``candidates`` (ints >= 0, 0: all contexts) whose runs localize best.

    run_errors: a function of a count that returns the per-update x-y errors of each run
    localized with it (a list of arrays, the same runs for every count). Returns
    ``nearest_contexts`` (the chosen count), ``rmse`` ({count: [per-run RMSE]}) and
    ``mean_rmse`` ({count: mean over the runs}); the runs' order is kept."""
    candidates = sorted(set(int(m) for m in candidates), key=lambda m: (m == 0, m))
    if not candidates or min(candidates) < 0:
        raise ValueError('candidate counts must be >= 0 and at least one is needed')
    rmse = {m: [run_rmse(e) for e in run_errors(m)] for m in candidates}
    mean = {m: float(np.nanmean(v)) if np.isfinite(v).any() else math.inf
            for m, v in rmse.items()}
    best = min(mean.values())
    if not math.isfinite(best):
        raise ValueError('no run has an error to compare the counts by')
    chosen = next(m for m in candidates if mean[m] <= best * (1.0 + tie_share))
    return dict(nearest_contexts=chosen,
                rmse={m: [round(x, 3) for x in v] for m, v in rmse.items()},
                mean_rmse={m: round(x, 3) for m, x in mean.items()})


def describe(result, runs, places):
    """The card's ``nearest_contexts_calibration`` line of a :func:`choose_nearest_contexts`
    result over ``runs`` own-map runs of ``places`` (names)."""
    parts = ', '.join(f"{m if m else 'all'}: {x:.2f} m" for m, x in result['mean_rmse'].items())
    return (f"{runs} runs of {', '.join(places)} on their own map, mean x-y RMSE per count of "
            f"contexts: {parts} (dmn-localizer calibrate-lost)")
