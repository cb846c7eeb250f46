"""Plot the x-y error over time of several replays (``replay`` / ``demo`` output folders) in one
PNG, e.g. one bag replayed with two parameter files:

    python scripts/plot_error_comparison.py --out docs/heavy_tail_demo.png \\
        'without heavy tail=out_off' 'default=out_on'

Each run is ``LABEL=FOLDER``; the folder holds ``estimate.tum`` and ``groundtruth.tum``.
"""
import argparse
import sys
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402

from dmn_localizer.util.atomic import atomic_path  # noqa: E402


def xy_error(folder):
    """(seconds since the first estimate, x-y error) of a replay folder."""
    paths = [Path(folder) / name for name in ('estimate.tum', 'groundtruth.tum')]
    for path in paths:
        if not path.is_file():
            sys.exit(f'{path}: no such file (a replay output folder has it)')
    est, gt = (np.loadtxt(path, ndmin=2) for path in paths)
    if len(est) == 0 or est.shape[1] < 3 or est.shape != gt.shape:
        sys.exit(f'{folder}: estimate.tum and groundtruth.tum are empty or do not match')
    return est[:, 0] - est[0, 0], np.hypot(est[:, 1] - gt[:, 1], est[:, 2] - gt[:, 2])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('runs', nargs='+', metavar='LABEL=FOLDER')
    parser.add_argument('--out', type=Path, required=True)
    parser.add_argument('--title', default='')
    args = parser.parse_args()
    fig, ax = plt.subplots(figsize=(8, 3.5))
    for run in args.runs:
        label, _, folder = run.rpartition('=')
        t, err = xy_error(folder)
        rmse = float(np.sqrt(np.mean(err ** 2)))
        ax.semilogy(t, err, label=f'{label or folder} (APE RMSE {rmse:.2f} m)')
    ax.axhline(2.0, color='grey', ls='-.', lw=0.8)
    ax.set_xlabel('time [s]')
    ax.set_ylabel('x-y error [m]')
    ax.set_title(args.title)
    ax.legend()
    fig.tight_layout()
    with atomic_path(args.out) as tmp:
        fig.savefig(tmp, format='png', dpi=100)
    print(args.out)


if __name__ == '__main__':
    main()
