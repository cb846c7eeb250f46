"""Replay accuracy against the localizer's ``nearest_contexts`` M (PNG).

    python scripts/plot_nearest_contexts.py OUT.png RUN [RUN ...]

Each RUN is the ``--out`` folder of one ``dmn-localizer replay --nearest-contexts M`` run over
the same bags, or its ``metrics.json``, which records M; M = 0 (every particle attends to
every map context) is plotted at the map's size. Left: APE RMSE and median error after
convergence. Right: share of updates within 2 m and within 8.94 m (the paper's success
threshold).
"""
import json
import sys
from pathlib import Path

from dmn_localizer.util.figures import figure, save_png


def main(out, runs):
    rows = []
    for run in runs:
        path = Path(run) / 'metrics.json' if Path(run).is_dir() else Path(run)
        m = json.loads(path.read_text())
        n = m['nearest_contexts'] or m['map_contexts']
        rows.append((min(n, m['map_contexts']), m))
    rows.sort(key=lambda r: r[0])
    xs = [r[0] for r in rows]
    fig = figure(figsize=(10, 3.8))
    err_ax, ok_ax = fig.subplots(1, 2)
    err_ax.plot(xs, [r[1]['ape_rmse_m'] for r in rows], 'o-', label='APE RMSE')
    err_ax.plot(xs, [r[1]['median_error_after_convergence_m'] or float('nan') for r in rows],
                's--', label='median error after convergence')
    err_ax.set_ylabel('metres')
    ok_ax.plot(xs, [100 * r[1]['success_rate_tight'] for r in rows], 'o-', color='C2',
               label='within 2 m')
    ok_ax.plot(xs, [100 * r[1]['success_rate'] for r in rows], 's--', color='C4',
               label='within 8.94 m')
    ok_ax.set_ylabel('% of updates')
    ok_ax.set_ylim(0, 105)
    for ax in (err_ax, ok_ax):
        ax.set_xscale('log', base=2)
        ax.set_xticks(xs)
        ax.set_xticklabels([str(x) if x < rows[-1][1]['map_contexts'] else f'all ({x})'
                            for x in xs])
        ax.set_xlabel('contexts each particle attends to (M)')
        ax.grid(alpha=0.3)
    err_ax.legend(fontsize=8)
    ok_ax.legend(fontsize=8)
    fig.suptitle(f'{rows[0][1]["particles"]} particles, {rows[0][1]["mode"]} start, map of '
                 f'{rows[0][1]["map_contexts"]} contexts', fontsize=10)
    save_png(fig, out)
    print(f'wrote {out}')


if __name__ == '__main__':
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2:])
