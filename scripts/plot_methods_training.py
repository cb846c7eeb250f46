"""Training curves of every method of scripts/train_all_methods.sh, side by side (PNG).

    python scripts/plot_methods_training.py RUNS_DIR OUT.png

Left: image use (validation dense loss with the query images shuffled across episodes minus
with the real ones; methods without a dense loss are left out). Right: validation pose MSE.
"""
import csv
import sys
from pathlib import Path

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402

from dmn_localizer.util.figures import save_png  # noqa: E402

METHODS = ('dmn', 'dmn_no_egocentric', 'dmn_no_attention', 'dmn_no_attention_no_egocentric',
           'latent_image', 'latent_vector', 'regression')


def main(runs, out):
    fig, (gap_ax, mse_ax) = plt.subplots(1, 2, figsize=(11, 4))
    for m in METHODS:
        log = Path(runs) / m / 'val_log.csv'
        if not log.is_file():
            print(f'{log}: missing, skipped', file=sys.stderr)
            continue
        rows = list(csv.DictReader(log.open()))
        if not rows:
            print(f'{log}: no validation yet, skipped', file=sys.stderr)
            continue
        steps = [int(r['step']) for r in rows]
        if rows[0].get('val_dense_gap_query') not in (None, ''):
            gap_ax.plot(steps, [float(r['val_dense_gap_query']) for r in rows], marker='o',
                        label=m)
        mse_ax.plot(steps, [float(r['val_mse']) for r in rows], marker='o', label=m)
    gap_ax.set_title('image use: validation dense loss, query images\n'
                     'shuffled minus real (nats)')
    gap_ax.axhline(0, color='k', lw=0.5)
    mse_ax.set_title('validation pose MSE (tracking episodes)')
    mse_ax.legend(fontsize=7)
    for ax in (gap_ax, mse_ax):
        ax.set_xlabel('training step')
        ax.grid(alpha=0.3)
    fig.suptitle(f'Every trainable method, same data and schedule ({runs})')
    fig.tight_layout()
    save_png(fig, out, dpi=90)
    print(f'wrote {out}')


if __name__ == '__main__':
    if len(sys.argv) != 3:
        sys.exit(__doc__.strip().splitlines()[2].strip())
    main(sys.argv[1], sys.argv[2])
