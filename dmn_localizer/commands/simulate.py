"""``dmn-localizer simulate``: render simulated worlds into a sharded episode dataset.

See :mod:`dmn_localizer.data.build` (generation) and :mod:`dmn_localizer.data.dataset`
(format, splits and reading).
"""
import glob
import logging
import os

from dmn_localizer.util.errors import UserError

HELP = 'Render simulated worlds into a sharded episode dataset.'
log = logging.getLogger(__name__)


def add_arguments(parser):
    parser.add_argument('--domain', required=True, choices=('mazes', 'rooms'))
    parser.add_argument('--split', required=True, choices=('train', 'val', 'test'),
                        help='world seeds come from disjoint ranges per split')
    parser.add_argument('--worlds', required=True, type=int, help='number of worlds')
    parser.add_argument('--out', required=True, help='output dataset directory')
    parser.add_argument('--image-size', type=int, default=32, help='square image side (px)')
    parser.add_argument('--seed', type=int, default=0,
                        help='offset of the first world seed inside the split range')
    parser.add_argument('--workers', type=int, default=max(1, min(os.cpu_count() or 1, 8)),
                        help='parallel processes (default: CPU count, at most 8)')
    parser.add_argument('--overwrite', action='store_true',
                        help='replace an existing dataset in --out')
    parser.add_argument('--no-progress', action='store_true', help='no progress bar')


def run(args):
    from dmn_localizer.data.dataset import SPLIT_SEEDS
    if args.worlds < 1:
        raise UserError(f'--worlds must be >= 1, got {args.worlds}')
    if not 8 <= args.image_size <= 512:
        raise UserError(f'--image-size must be within 8..512, got {args.image_size}')
    if args.workers < 1:
        raise UserError(f'--workers must be >= 1, got {args.workers}')
    lo, hi = SPLIT_SEEDS[args.split]
    if args.seed < 0 or args.seed + args.worlds > hi - lo:
        raise UserError(f'--seed {args.seed} + --worlds {args.worlds} must fit in the '
                        f'{args.split} range of {hi - lo} world seeds')
    out = args.out
    if os.path.exists(out) and not os.path.isdir(out):
        raise UserError(f'{out}: exists and is not a directory')
    if os.path.isdir(out) and os.listdir(out):
        old = glob.glob(os.path.join(out, 'shard-*.npz')) + glob.glob(
            os.path.join(out, 'manifest.json'))
        if not args.overwrite:
            raise UserError(f'{out}: not empty (use --overwrite to replace a dataset)')
        for f in old:
            os.remove(f)
    from dmn_localizer.data.build import build_dataset
    m = build_dataset(args.domain, args.split, args.worlds, out, image_size=args.image_size,
                      seed=args.seed, workers=args.workers, progress=not args.no_progress)
    st = m['stats']
    print(f'{m["n_worlds"]} {args.domain} worlds, {st["images"]} images '
          f'{args.image_size}x{args.image_size} in {st["seconds"]:.1f} s: '
          f'{st["images_per_s"]:.0f} images/s ({args.workers} workers) -> {out}')
    return 0
