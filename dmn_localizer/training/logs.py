"""The files a training run logs: ``train_log.csv`` (one row per log step), ``val_log.csv``
(one row per validation), both truncated back to the checkpoint's step on resume, and
``config.yaml``, the resolved training config."""
import csv
import io
import json
from pathlib import Path

from dmn_localizer.model.io import atomic_write_bytes

TRAIN_FIELDS = ['step', 'samples', 'loss', 'mse', 'dense', 'attention', 'pose_contrast',
                'n_contexts', 'init_std_m', 'near_context_prob', 'samples_per_s', 'elapsed_s']


class CsvLog:
    """Append-only CSV log that can be truncated back to a step (for resume). Rows are
    appended, not the file rewritten, so a crash can leave a torn last row: truncating drops
    it."""

    def __init__(self, path, fields=None):
        self.path, self.fields = Path(path), fields

    def truncate_after(self, step):
        if not self.path.exists():
            return
        with open(self.path, newline='') as f:
            rows = [r for r in csv.DictReader(f) if _step(r) is not None and _step(r) <= step]
        if rows:
            self.fields = list(rows[0].keys())
        self._rewrite(rows)

    def _rewrite(self, rows):
        if self.fields:
            write_csv(self.path, self.fields, rows)
        else:
            atomic_write_bytes(self.path, b'')

    def append(self, row):
        new = not self.path.exists() or self.path.stat().st_size == 0
        if self.fields is None:
            self.fields = list(row.keys())
        with open(self.path, 'a', newline='') as f:
            w = csv.DictWriter(f, self.fields, extrasaction='ignore')
            if new:
                w.writeheader()
            w.writerow(row)


def write_csv(path, fields, rows):
    """``rows`` (dicts) under a header of ``fields``, written to ``path`` atomically."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fields)
    w.writeheader()
    w.writerows(rows)
    atomic_write_bytes(path, buf.getvalue().encode())


def _step(row):
    """A log row's step, or None for a torn row (a crash during an append)."""
    if None in row.values() or None in row:   # fewer or more fields than the header
        return None
    try:
        return int(row['step'])
    except (KeyError, TypeError, ValueError):
        return None


def train_row(step, samples, loss, terms, sb, samples_per_s, elapsed_s):
    """A ``train_log.csv`` row: the step's loss, its ``terms`` (:func:`~dmn_localizer.
    training.losses.training_loss`) and curriculum (a :class:`~dmn_localizer.training.
    batches.StepBatch`), the throughput."""
    return {'step': step, 'samples': samples,
            'loss': f'{loss.item():.6g}', 'mse': f'{terms["mse"].item():.6g}',
            'dense': f'{terms["dense"].item():.6g}',
            'attention': f'{terms["attention"].item():.6g}',
            'pose_contrast': f'{terms["pose_contrast"].item():.6g}',
            'n_contexts': sb.n_contexts,
            'init_std_m': f'{sb.init_std[0]:.3g}',
            'near_context_prob': f'{sb.near_context_prob:.3g}',
            'samples_per_s': f'{samples_per_s:.4g}', 'elapsed_s': f'{elapsed_s:.1f}'}


def write_resolved_config(out, cfg, world):
    """``out/config.yaml``: the resolved training config (a config file ``train --config``
    takes), the process count in its first line, a comment."""
    import yaml
    atomic_write_bytes(out / 'config.yaml', (
        f'# the resolved training config of this run ({world} process'
        f'{"es" if world > 1 else ""}); `dmn-localizer train --config` takes it\n'
        + yaml.safe_dump(json.loads(json.dumps(cfg.to_dict())), sort_keys=False)).encode())


# a step limit this large means "no step limit" (a run bounded by its time budget)
UNBOUNDED_STEPS = 10 ** 8


def bar_total(max_steps):
    """The progress bar's total: ``max_steps``, or None (no ETA) for a run bounded by time."""
    return None if max_steps >= UNBOUNDED_STEPS else max_steps
