"""PNG plots for replay and demo (matplotlib, Agg backend; written atomically)."""
import csv

import numpy as np

from dmn_localizer.util.figures import figure, save_png


def draw_layout(ax, layout):
    """layout = (occupancy (G, G) bool, resolution m, origin (x, y)) -> grey walls."""
    grid, res, origin = layout
    g = np.asarray(grid)
    extent = (origin[0], origin[0] + g.shape[1] * res, origin[1], origin[1] + g.shape[0] * res)
    ax.imshow(g, origin='lower', extent=extent, cmap='Greys', vmin=0, vmax=1.6,
              interpolation='nearest')


def plot_replay(track, metrics, out, view_map=None, layout=None):
    """trajectory.png (top-down: walls, contexts, truth, estimate, particle snapshots) and
    errors.png (x-y error and 2-sigma over time with the thresholds, the updates whose camera
    pose has no map view facing its way nearby shaded). Returns the paths."""
    est, gt = np.asarray(track.estimates), np.asarray(track.truth)
    t = np.asarray(track.stamps) - track.stamps[0]
    fig = figure(figsize=(7, 7))
    ax = fig.add_subplot(111)
    if layout is not None:
        draw_layout(ax, layout)
    if track.snapshots:
        from matplotlib import colormaps
        cmap = colormaps['viridis']
        for i, (_, particles, weights) in enumerate(track.snapshots):
            ax.scatter(particles[:, 0], particles[:, 1], s=2, alpha=0.35,
                       color=cmap(i / max(1, len(track.snapshots) - 1)), linewidths=0)
    if view_map is not None and len(view_map):
        p = view_map.poses
        ax.quiver(p[:, 0], p[:, 1], np.cos(p[:, 2]), np.sin(p[:, 2]), color='tab:green',
                  scale=30, width=0.004, label=f'map contexts ({len(p)})')
    ax.plot(gt[:, 0], gt[:, 1], '-', color='tab:blue', lw=2, label='ground truth')
    ax.plot(est[:, 0], est[:, 1], '.-', color='tab:red', lw=1, ms=3, label='estimate')
    ax.plot(gt[0, 0], gt[0, 1], 'o', color='tab:blue')
    ax.set_aspect('equal')
    ax.set_xlabel('x [m]')
    ax.set_ylabel('y [m]')
    ttc = metrics.get('time_to_converge_s')
    ax.set_title(f"APE RMSE {metrics['ape_rmse_m']:.2f} m, converged "
                 f"{'never' if ttc is None else f'after {ttc:.1f} s'} "
                 f"(particle snapshots: early = purple, late = yellow)", fontsize=9)
    ax.legend(loc='upper right', fontsize=8)
    traj_png = save_png(fig, out / 'trajectory.png')

    err, yaw_err = track.errors()
    cov = np.asarray(track.covariances)
    two_sigma = 2.0 * np.sqrt(np.maximum(cov[:, 0, 0] + cov[:, 1, 1], 0.0))
    evidence = np.asarray(track.evidence, np.float64)
    panels = 3 if len(evidence) == len(t) and np.isfinite(evidence).any() else 2
    fig = figure(figsize=(8, 4.5 if panels == 2 else 6.5))
    ax = fig.add_subplot(panels, 1, 1)
    ax.semilogy(t, np.maximum(err, 1e-3), label='x-y error')
    ax.semilogy(t, np.maximum(two_sigma, 1e-3), '--', label='2 sigma (filter)')
    ax.axhline(metrics['success_threshold_m'], color='grey', lw=0.8, ls=':')
    ax.axhline(metrics['tight_threshold_m'], color='grey', lw=0.8, ls='-.')
    _shade_without_map_view(ax, t, track.map_view_m, metrics.get('map_view_threshold_m'),
                            metrics.get('map_view_max_yaw_deg'))
    ax.set_ylabel('metres')
    ax.legend(fontsize=8)
    ax2 = fig.add_subplot(panels, 1, 2, sharex=ax)
    ax2.plot(t, np.degrees(yaw_err), color='tab:purple')
    ax2.set_ylabel('yaw error [deg]')
    if panels == 3:
        _plot_evidence(fig.add_subplot(panels, 1, 3, sharex=ax), t, evidence, track.lost,
                       metrics.get('min_evidence'))
    fig.axes[-1].set_xlabel('time [s]')
    err_png = save_png(fig, out / 'errors.png')
    return [traj_png, err_png]


def _shade_without_map_view(ax, t, map_view_m, threshold_m, max_yaw_deg):
    """Shade the updates whose true camera pose has no map view facing its way (within
    ``max_yaw_deg``) within ``threshold_m``: the map never saw what the image shows there."""
    view = np.asarray(map_view_m, np.float64)
    if threshold_m is None or len(view) != len(t) or not (view > threshold_m).any():
        return
    ax.fill_between(t, 0, 1, where=view > threshold_m, transform=ax.get_xaxis_transform(),
                    color='grey', alpha=0.2, step='mid', linewidth=0,
                    label=f'no map view within {threshold_m:g} m facing within '
                          f'{max_yaw_deg:g} deg')


def _plot_evidence(ax, t, evidence, lost, threshold):
    """The belief's evidence per update, the lost flag's threshold and the updates it
    flagged (shaded)."""
    ax.plot(t, evidence, color='tab:green', lw=1, label='evidence (log likelihood ratio)')
    if threshold is not None:
        ax.axhline(threshold, color='grey', lw=0.8, ls='--', label=f'min_evidence {threshold:g}')
    if len(lost) == len(t) and any(lost):
        flagged = np.asarray(lost, bool)
        ax.fill_between(t, 0, 1, where=flagged, transform=ax.get_xaxis_transform(),
                        color='tab:red', alpha=0.15, step='mid', label='flagged lost')
    ax.set_ylabel('evidence')
    ax.legend(fontsize=8, loc='lower right')


def _read_csv(path):
    with open(path) as f:
        rows = list(csv.DictReader(f))
    return {k: np.array([float(r[k]) if r[k] not in ('', 'None') else np.nan for r in rows])
            for k in (rows[0] if rows else {})}


def plot_training_curves(run_dir, path):
    """Learning curve of a training run (``train_log.csv``, ``val_log.csv``): losses, and the
    image-use gaps (validation loss with shuffled minus real query/context images)."""
    from pathlib import Path
    run_dir = Path(run_dir)
    train, val = _read_csv(run_dir / 'train_log.csv'), _read_csv(run_dir / 'val_log.csv')
    fig = figure(figsize=(11, 7))
    ax = fig.add_subplot(221)
    ax.plot(train['samples'], train['dense'], lw=0.8, label='train dense CE')
    ax.plot(val['step'] * (train['samples'][-1] / max(train['step'][-1], 1)), val['val_dense'],
            'o-', label='val dense CE (paper tracking split)')
    ax.set_xlabel('training samples')
    ax.set_ylabel('nats')
    ax.legend(fontsize=8)
    ax = fig.add_subplot(222)
    ax.plot(val['step'], val['val_mse'], 'o-', label='val MSE (paper loss)')
    ax.plot(val['step'], val['near_mse'], 's-', label='val MSE, near-context split')
    ax.set_xlabel('step')
    ax.legend(fontsize=8)
    ax = fig.add_subplot(212)
    for key, label in (('val_dense_gap_query', 'dense: shuffled query - real'),
                       ('val_dense_gap_context', 'dense: shuffled contexts - real'),
                       ('near_dense_gap_query', 'near split dense: shuffled query - real'),
                       ('near_dense_gap_context', 'near split dense: shuffled contexts - real'),
                       ('decoy_dense_gap_query', 'decoy split dense: shuffled query - real'),
                       ('decoy_dense_gap_context', 'decoy split dense: shuffled contexts - real')):
        if key in val:
            ax.plot(val['step'], val[key], 'o-', label=label)
    ax.axhline(0.0, color='grey', lw=0.8)
    ax.set_xlabel('step')
    ax.set_ylabel('loss gap (nats): > 0 = images used')
    ax.legend(fontsize=8)
    return save_png(fig, path)
