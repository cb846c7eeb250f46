"""``dmn-localizer dataset-from-bags``: recorded bags (images + poses) -> episode dataset.

See :mod:`dmn_localizer.data.from_bags` for the area sampling recipe and the groups: each
positional BAG is one group (a folder of bags: its bags together), ``--group NAME=BAG,BAG``
puts bags that share one map frame together; no area mixes two groups.
"""
import os

from dmn_localizer.util.errors import UserError

HELP = 'Turn recorded bags (images + ground-truth poses) into an episode dataset.'


def add_place_arguments(parser, bags_help, group_help='bags recorded in one map frame (one '
                        'place); repeat per place'):
    """The recordings of the commands that take places: positional BAGs, ``--group``, the
    image and pose topics (see :func:`parse_groups`)."""
    parser.add_argument('bags', nargs='*', metavar='BAG', help=bags_help)
    parser.add_argument('--group', action='append', default=[], metavar='NAME=BAG[,BAG...]',
                        help=group_help)
    parser.add_argument('--image-topic', required=True)
    parser.add_argument('--pose-topic', required=True,
                        help='PoseStamped, PoseWithCovarianceStamped or Odometry')


def add_depth_arguments(parser):
    """An RGB-D camera's depth topic for the commands that build datasets from bags."""
    parser.add_argument('--depth-topic', default='', metavar='TOPIC',
                        help='a depth image registered to the camera images (32FC1 m, 16UC1 '
                        'mm): each view also stores its measured column depths, which '
                        'supervise an aligned model\'s depth head in training')
    parser.add_argument('--depth-max-dt', type=float, default=0.05, metavar='S',
                        help='max stamp difference between an image and its depth frame (s)')


def check_depth_arguments(args):
    if args.depth_max_dt < 0:
        raise UserError('--depth-max-dt must be >= 0')


def add_arguments(parser):
    add_place_arguments(
        parser, 'rosbag2 directories, each its own world (its own map frame); a folder of bags '
        '(e.g. simulate-bag\'s OUT) is one world',
        'bags recorded in one map frame (the mapping and localization runs of one place); '
        'repeat for each place. Areas never mix two groups')
    parser.add_argument('--out', required=True, help='output dataset directory (new or empty)')
    parser.add_argument('--image-size', type=int, default=32)
    parser.add_argument('--contexts', type=int, default=32, help='context pool per area')
    parser.add_argument('--trajectories', type=int, default=4, help='trajectories per area')
    parser.add_argument('--trajectory-length', type=int, default=10)
    parser.add_argument('--area-stride', type=float, default=20.0,
                        help='grid spacing (m) of the 40 m areas\' corners')
    parser.add_argument('--min-pairs', type=int, default=None,
                        help='image-pose pairs an area needs (default: --contexts)')
    parser.add_argument('--frame-stride', type=int, default=1,
                        help='use every k-th frame in trajectories')
    parser.add_argument('--max-dt', type=float, default=0.05,
                        help='max image-pose stamp difference (s)')
    parser.add_argument('--split', default='train', choices=('train', 'val', 'test'))
    parser.add_argument('--seed', type=int, default=0)
    add_depth_arguments(parser)


def parse_groups(bags, group_args):
    """``{name: [bag, ...]}`` of the positional bags (one group each) and ``--group``
    arguments; UserError for a malformed group, a name given twice or a missing bag."""
    from dmn_localizer.data.from_bags import bag_groups
    groups = bag_groups(bags)
    for spec in group_args:
        name, sep, paths = spec.partition('=')
        paths = [p for p in paths.split(',') if p]
        if not sep or not name or not paths:
            raise UserError(f'--group {spec}: expected NAME=BAG[,BAG...]')
        if name in groups:
            raise UserError(f'--group {name}: this group name is given twice')
        groups.update(bag_groups({name: paths}))
    if not groups:
        raise UserError('no bags: give BAG arguments or --group NAME=BAG[,BAG...]')
    for paths in groups.values():
        for b in paths:
            if not os.path.exists(b):
                raise UserError(f'{b}: no such bag')
    return groups


def run(args):
    groups = parse_groups(args.bags, args.group)
    if not 8 <= args.image_size <= 512:
        raise UserError(f'--image-size must be within 8..512, got {args.image_size}')
    if min(args.contexts, args.trajectories, args.trajectory_length, args.frame_stride) < 1:
        raise UserError('--contexts, --trajectories, --trajectory-length and --frame-stride '
                        'must be >= 1')
    if args.area_stride <= 0 or args.max_dt < 0:
        raise UserError('--area-stride must be > 0 and --max-dt >= 0')
    check_depth_arguments(args)
    if os.path.isdir(args.out) and os.listdir(args.out):
        raise UserError(f'{args.out}: not empty')
    from dmn_localizer.data.from_bags import build_from_bags
    n_bags = sum(len(bags) for bags in groups.values())
    print(f'reading {n_bags} bag{"s" * (n_bags != 1)} -> {args.out}', flush=True)
    m = build_from_bags(groups, args.image_topic, args.pose_topic, args.out,
                        image_size=args.image_size, contexts=args.contexts,
                        trajectories=args.trajectories,
                        trajectory_length=args.trajectory_length,
                        area_stride_m=args.area_stride, min_pairs=args.min_pairs,
                        frame_stride=args.frame_stride, max_dt_s=args.max_dt, seed=args.seed,
                        split=args.split, depth_topic=args.depth_topic or None,
                        depth_max_dt_s=args.depth_max_dt)
    c = m['counts']
    print(f'{c["images"]} images, {c["poses"]} poses -> {c["pairs"]} pairs; bad images '
          f'{c["bad_images"]}, bad poses {c["bad_poses"]}, images without pose '
          f'{c["images_without_pose"]}; {c["groups"]} groups, {c["areas"]} areas -> {args.out}')
    if args.depth_topic:
        print(f'{c["depth_images"]} depth images ({c["bad_depth_images"]} bad); pairs without '
              f'a depth frame: {c["pairs_without_depth"]}')
    for g in m['groups']:
        print(f'  {g["name"]}: {len(g["bags"])} bags, {g["pairs"]} pairs, {g["areas"]} areas'
              + (' (bags that look like different places: see the warning)'
                 if g['suspected_mixing'] else ''))
    return 0
