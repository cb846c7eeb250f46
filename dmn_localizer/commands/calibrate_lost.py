"""``dmn-localizer calibrate-lost``: choose a model's lost-flag threshold and the scale of its
published covariance on recordings.

Thin wrapper over :func:`dmn_localizer.replay.lost_threshold.calibrate`; the threshold goes
into the model card's ``metadata.min_evidence`` and the scale into
``metadata.covariance_scale``, which the localizer uses unless its ``min_evidence`` /
``covariance_scale`` parameters are set. First it fits the weight of a new belief's first
image into ``metadata.initial_likelihood_scale`` (:mod:`dmn_localizer.replay.first_image`),
and the runs are replayed with it (``--initial-likelihood-scale`` writes and uses a given one
instead). ``--likelihood-scale``, ``--pose-estimate`` and ``--nearest-contexts`` also write
``metadata.likelihood_scale`` / ``metadata.pose_estimate`` / ``metadata.nearest_contexts``, and
the runs are replayed with them; several ``--nearest-contexts`` counts are candidates, the
best on the own-map runs is chosen first (:mod:`dmn_localizer.replay.context_count`).
``--covariance-max-std`` gives the cloud spreads below which the covariance scale may apply
(written as ``metadata.covariance_scale_max_std``; several: the best is chosen,
:func:`~dmn_localizer.replay.lost_threshold.choose_max_std`).
"""
import json

from dmn_localizer.config import POSE_ESTIMATES
from dmn_localizer.util.errors import UserError

HELP = ("Choose the weight of the model's first image (initial_likelihood_scale), its lost-flag "
        'threshold (min_evidence) and the scale of its published covariance (covariance_scale) '
        'from recordings of at least two places and write them into its card.')


def add_arguments(parser):
    from dmn_localizer.commands.dataset_from_bags import add_place_arguments
    add_place_arguments(parser, 'rosbag2 directories, each its own place (a folder of bags: '
                        'one place; its bag with the most images is the map, the others are '
                        'runs)')
    parser.add_argument('--model', required=True,
                        help='the model to calibrate (its card is rewritten)')
    parser.add_argument('--dry-run', action='store_true',
                        help='print the result, leave the card as it is')
    parser.add_argument('--keep-min-evidence', action='store_true',
                        help="write only the covariance scale; keep the card's min_evidence "
                        '(the scale is still chosen with the newly calibrated threshold)')
    parser.add_argument('--likelihood-scale', type=float, default=None, metavar='S',
                        help="also write this likelihood_scale (> 0) into the card, and "
                        'calibrate with it applied (default: the card\'s, else 1)')
    parser.add_argument('--initial-likelihood-scale', type=float, default=None, metavar='S',
                        help="write this initial_likelihood_scale (> 0) into the card and "
                        'calibrate with it applied, instead of fitting it')
    parser.add_argument('--pose-estimate', choices=POSE_ESTIMATES, default=None,
                        help="also write this rule of the published pose into the card, and "
                        "calibrate with it applied (default: the card's, else mean)")
    parser.add_argument('--nearest-contexts', default=None, metavar='M[,M...]',
                        help='also write this count of contexts each particle attends to '
                        "(0: all) into the card, and calibrate with it applied (default: the "
                        "card's, else 8); several (e.g. 8,16,32): the one whose own-map runs "
                        'localize best, chosen first')
    parser.add_argument('--covariance-max-std', default=None, metavar='S[,S...]',
                        help='the cloud spread (m) below which a covariance scale below 1 '
                        'applies, written with the scale; several: the one that puts the most '
                        'own-map runs in the NEES band [1, 6] (default 0.5,0.75,1)')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--no-progress', action='store_true', help='no progress bar')


def run(args):
    from dmn_localizer.commands.dataset_from_bags import parse_groups
    from dmn_localizer.localization.diagnostics import describe_values
    from dmn_localizer.model.io import LOCALIZER_ARCHITECTURES, load_model, update_card_metadata
    from dmn_localizer.replay.lost_threshold import calibrate
    if args.likelihood_scale is not None and not 0 < args.likelihood_scale <= 100:
        raise UserError(f'--likelihood-scale must be in (0, 100], got {args.likelihood_scale:g}')
    if args.initial_likelihood_scale is not None and not 0 < args.initial_likelihood_scale <= 100:
        raise UserError('--initial-likelihood-scale must be in (0, 100], got '
                        f'{args.initial_likelihood_scale:g}')
    counts = parse_counts(args.nearest_contexts)
    spreads = parse_spreads(args.covariance_max_std)
    groups = parse_groups(args.bags, args.group)
    if len(groups) < 2:
        raise UserError('calibrate-lost needs at least two places: runs are localized on their '
                        "own place's map and on another's")
    model = load_model(args.model, architecture=LOCALIZER_ARCHITECTURES)
    given = {k: v for k, v in (('likelihood_scale', args.likelihood_scale),
                               ('initial_likelihood_scale', args.initial_likelihood_scale),
                               ('pose_estimate', args.pose_estimate)) if v is not None}
    model.card.setdefault('metadata', {}).update(given)   # the localizer reads them there
    result = calibrate(model, groups, args.image_topic, args.pose_topic, seed=args.seed,
                       progress=not args.no_progress,
                       fit_initial_scale=args.initial_likelihood_scale is None,
                       nearest_candidates=counts, max_std_candidates=spreads)
    print(json.dumps(result, indent=2))
    if result['min_evidence'] is None:
        raise UserError(f"no threshold chosen: {result['reason']}; the card is unchanged")
    if not args.dry_run:
        values = {k: v for k, v in result['metadata'].items()
                  if not (args.keep_min_evidence and k.startswith('min_evidence'))}
        values.update(given)
        update_card_metadata(args.model, **values)
        names = ('likelihood_scale', 'initial_likelihood_scale', 'pose_estimate',
                 'nearest_contexts', 'min_evidence', 'covariance_scale',
                 'covariance_scale_max_std')
        written = describe_values({k: values[k] for k in names if k in values})
        print(f"{args.model}: {written or 'nothing'} written to its card")
    return 0


def parse_counts(text):
    """The counts of ``--nearest-contexts M[,M...]`` (distinct, >= 0), or None when not given."""
    return _parse_list(text, int, 100000, '--nearest-contexts', 'counts >= 0', '8 or 8,16,32')


def parse_spreads(text):
    """The spreads of ``--covariance-max-std S[,S...]`` (distinct, >= 0, m), or None when not
    given."""
    return _parse_list(text, float, 1000, '--covariance-max-std', 'spreads in metres >= 0',
                       '0.5 or 0.5,0.75,1')


def _parse_list(text, kind, upper, option, what, example):
    """The sorted distinct values in [0, ``upper``] of a comma-separated option, None when not
    given; a UserError naming the option otherwise."""
    if text is None:
        return None
    try:
        values = sorted({kind(x) for x in text.split(',')})
    except ValueError:
        values = []
    if not values or not all(0 <= v <= upper for v in values):
        raise UserError(f'{option} takes {what} separated by commas (e.g. {example}), got '
                        f'{text!r}')
    return values
