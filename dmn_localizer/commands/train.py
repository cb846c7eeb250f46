"""``dmn-localizer train``: train a DMN end to end through the particle filter.

Thin wrapper over :func:`dmn_localizer.training.train` (see it for outputs and resume).
"""
import logging
from pathlib import Path

from dmn_localizer.util.errors import UserError

HELP = ('Train an observation model: a DMN end to end through the particle filter, or the '
        'aligned model on view pairs (recipe: view_pairs in the config).')
log = logging.getLogger(__name__)


def add_arguments(parser):
    parser.add_argument('--config', required=True,
                        help='training YAML (e.g. config/train_mazes.yaml)')
    parser.add_argument('--out', help='run folder (default: runs/<config name>)')
    parser.add_argument('--resume', action='store_true',
                        help='continue exactly from OUT/checkpoint')
    parser.add_argument('--max-steps', type=int, help='override max_steps')
    parser.add_argument('--device', help="override device ('cpu', 'cuda', 'auto')")
    parser.add_argument('--threads', type=int,
                        help='override threads (torch CPU threads; 1 is faster on a busy machine)')
    parser.add_argument('--train-data', action='append', metavar='DIR',
                        help='override train_data; repeat to train on several dataset folders '
                        'at once (e.g. simulated worlds plus dataset-from-bags output)')
    parser.add_argument('--val-data', action='append', metavar='DIR',
                        help='override val_data; repeat to combine folders')
    parser.add_argument('--init-from', metavar='MODEL',
                        help='override init_from: start from this model\'s weights (same '
                             'architecture; a fresh optimizer)')
    parser.add_argument('--max-minutes', type=float,
                        help='stop after this many minutes of training (0: no limit)')
    parser.add_argument('--no-progress', action='store_true', help='no progress bar')


def _folders(value):
    """A repeated --train-data/--val-data: one folder as a string, several as a list."""
    return value[0] if value and len(value) == 1 else value


def run(args):
    args.train_data, args.val_data = _folders(args.train_data), _folders(args.val_data)
    from dmn_localizer.training.view_pairs import is_view_pair_config
    if is_view_pair_config(args.config):
        return _run_view_pairs(args)
    from dmn_localizer.training import load_train_config, train
    overrides = {k: v for k, v in (('max_steps', args.max_steps), ('device', args.device),
                                   ('threads', args.threads),
                                   ('train_data', args.train_data),
                                   ('val_data', args.val_data),
                                   ('init_from', args.init_from),
                                   ('max_minutes', args.max_minutes)) if v is not None}
    cfg = load_train_config(args.config, overrides)
    if cfg.max_steps < 0:
        raise UserError('--max-steps must be >= 0')
    _check_device(cfg.device)
    out = Path(args.out) if args.out else Path('runs') / Path(args.config).stem
    if not args.resume and (out / 'checkpoint' / 'state.pt').exists():
        raise UserError(f'{out}: holds a run already (use --resume, or another --out)')
    summary = train(cfg, out, resume=args.resume, progress=not args.no_progress)
    if summary['final'] is None:  # a data-parallel rank other than 0: rank 0 reports
        return 0
    print(f'trained {summary["steps"]} steps, best validation loss '
          f'{summary["best_val_mse"]:.5f}{" (early stop)" if summary["stopped_early"] else ""}'
          f' -> {summary["best"]}')
    return 0


def _check_device(name):
    """Refuse an unknown or absent device before any data is read."""
    from dmn_localizer.util.device import select_device
    try:
        select_device(name)
    except ValueError as exc:
        raise UserError(str(exc)) from None


def _run_view_pairs(args):
    """The aligned model's recipe (:mod:`dmn_localizer.training.view_pairs`)."""
    from dmn_localizer.training.view_pairs import load_view_pair_config, train_view_pairs
    if args.resume:
        raise UserError('--resume: the view_pairs recipe starts again; use --init-from '
                        'OUT/last to continue from the last checkpoint')
    cfg = load_view_pair_config(args.config, {
        'max_steps': args.max_steps, 'device': args.device, 'threads': args.threads,
        'train_data': args.train_data, 'val_data': args.val_data,
        'init_from': args.init_from, 'max_minutes': args.max_minutes})
    if cfg.max_steps < 0:
        raise UserError('--max-steps must be >= 0')
    _check_device(cfg.device)
    out = Path(args.out) if args.out else Path('runs') / Path(args.config).stem
    if (out / 'final.safetensors').exists():
        raise UserError(f'{out}: holds a finished run already (use another --out)')
    s = train_view_pairs(cfg, out, progress=not args.no_progress)
    f = s['final']
    print(f'trained {s["steps"]} steps in {s["minutes"]:.1f} min: pose top-1 '
          f'{100 * f["pose_top1"]:.1f}% (wrong query {100 * f["pose_top1_wrong"]:.1f}%)'
          + (f', val global success@5 {100 * f["val_success"]:.1f}%'
             if f['val_success'] != '' else '') + f' -> {out}/best')
    return 0
