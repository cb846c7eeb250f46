"""``dmn-localizer finetune``: from a user's recordings to a model for their places.

Thin wrapper over :func:`dmn_localizer.training.finetune.finetune` (see it for the outputs).
"""
import os

from dmn_localizer.util.errors import UserError

DEFAULT_NEAREST_CANDIDATES = '8,16,32'
"""The counts of contexts per particle an aligned model's fine-tune chooses among on its
held-out places unless told otherwise."""

HELP = ('Fine-tune the model on your own recordings (image + pose bags of several places) '
        'for a time budget; writes the model and a card comparing it with the zero-shot one.')


def add_arguments(parser):
    from dmn_localizer.commands.dataset_from_bags import add_depth_arguments, add_place_arguments
    add_place_arguments(parser, 'rosbag2 directories, each its own place (a folder of bags: '
                        'one place)')
    add_depth_arguments(parser)
    parser.add_argument('--out', required=True, help='output directory (new or empty)')
    parser.add_argument('--from', dest='model', metavar='MODEL',
                        help='model to start from (default: the shipped models/aligned_mazes_e2e)')
    parser.add_argument('--minutes', type=float, default=60.0,
                        help='training time budget (default 60)')
    parser.add_argument('--filter-share', type=float, default=0.5,
                        help='aligned models: share of --minutes spent training end to end '
                             'through the particle filter, after the view pairs (default 0.5; '
                             '0 = view pairs only)')
    parser.add_argument('--val-share', type=float, default=0.25,
                        help='share of the places kept apart for validation (at least one)')
    parser.add_argument('--episodes', type=int, default=64,
                        help='validation episodes of the zero-shot and fine-tuned evaluation')
    parser.add_argument('--max-steps', type=int, help='stop after this many steps as well')
    parser.add_argument('--threads', type=int, help='torch CPU threads')
    parser.add_argument('--nearest-contexts', default=DEFAULT_NEAREST_CANDIDATES,
                        metavar='M[,M...]',
                        help='aligned models: the counts of contexts each particle attends to '
                        '(0: all) of which the last step writes to the card the one whose '
                        'held-out runs localize best; one count: written as given (default '
                        f'{DEFAULT_NEAREST_CANDIDATES})')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--no-progress', action='store_true', help='no progress bar')


def run(args):
    from dmn_localizer.commands.calibrate_lost import parse_counts
    from dmn_localizer.commands.dataset_from_bags import check_depth_arguments, parse_groups
    counts = parse_counts(args.nearest_contexts)
    groups = parse_groups(args.bags, args.group)
    check_depth_arguments(args)
    if not args.minutes > 0:
        raise UserError('--minutes must be > 0')
    if not 0 < args.val_share < 1:
        raise UserError('--val-share must be within (0, 1)')
    if args.episodes < 2 or (args.max_steps is not None and args.max_steps < 0):
        raise UserError('--episodes must be >= 2 and --max-steps >= 0')
    if args.model is not None and not os.path.exists(args.model) \
            and not os.path.exists(args.model + '.safetensors'):
        raise UserError(f'--from {args.model}: no such model')
    if os.path.isdir(args.out) and os.listdir(args.out):
        raise UserError(f'{args.out}: not empty')
    from dmn_localizer.evaluation.intervals import percent_with_interval
    from dmn_localizer.replay.lost_threshold import calibrate
    from dmn_localizer.training.finetune import finetune
    card = finetune(groups, args.image_topic, args.pose_topic, args.out, args.model,
                    minutes=args.minutes, val_share=args.val_share, episodes=args.episodes,
                    seed=args.seed, max_steps=args.max_steps, threads=args.threads,
                    progress=not args.no_progress, calibrate_lost=calibrate,
                    filter_share=args.filter_share, nearest_candidates=counts,
                    data_kw=(dict(depth_topic=args.depth_topic,
                                  depth_max_dt_s=args.depth_max_dt)
                             if args.depth_topic else None))
    z, f = card['zero_shot'], card['fine_tuned']
    print(f"{card['steps']} steps in {card['wall_time_s'] / 60:.1f} min on "
          f"{card['data']['train']['pairs']} pairs; held-out places "
          f"{', '.join(card['val_places'])} ({f.get('episodes')} episodes): global success@5 "
          f"{percent_with_interval(z['success@5'], z.get('episodes'))} -> "
          f"{percent_with_interval(f['success@5'], f.get('episodes'))}, tracking rmse@5 "
          f"{z['rmse@5']:.2f} -> "
          f"{f['rmse@5']:.2f} m; {args.out}/model, card.md")
    lost = card.get('lost_flag')
    if lost:
        print(f"lost flag: min_evidence {lost['min_evidence']:g} ({lost['description']})"
              if lost['min_evidence'] is not None else
              f"lost flag: not calibrated ({lost['reason']})")
        if lost.get('covariance_scale') is not None:
            print(f"covariance scale: {lost['covariance_scale']:g} "
                  f"({lost['covariance_description']})")
        if lost.get('initial_likelihood_scale') is not None:
            print(f"first image's weight: {lost['initial_likelihood_scale']:g} "
                  f"({lost['initial_description']})")
        if lost.get('nearest_contexts') is not None:
            print(f"contexts per particle: {lost['nearest_contexts']} "
                  f"({lost['nearest_description']})")
    print(f"try it: {card['replay_command']}")
    return 0
