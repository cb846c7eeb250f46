"""``dmn-localizer simulate-bag``: record a simulated robot's mapping and localization runs.

Writes two rosbag2 bags, ``OUT/mapping`` and ``OUT/localization`` (see
:mod:`dmn_localizer.bags.simulate` for topics and frames).
"""
import math
import os

from dmn_localizer.util.errors import UserError

HELP = 'Record a mapping and a localization run through a simulated world as rosbag2 bags.'


def add_arguments(parser):
    parser.add_argument('--domain', default='mazes', choices=('mazes', 'rooms'))
    parser.add_argument('--split', default='test', choices=('train', 'val', 'test'),
                        help='the split whose worlds to record (default test: never seen in '
                        'training, so a stand-in for your own recordings)')
    parser.add_argument('--seed', type=int, default=0,
                        help="world index within the split: the world seed is the split's "
                        'first seed + SEED (train 0, val 1000000, test 1100000), as for simulate')
    parser.add_argument('--out', required=True,
                        help='output directory (gets OUT/mapping and OUT/localization)')
    parser.add_argument('--storage', default='mcap', choices=('mcap', 'sqlite3'),
                        help='rosbag2 storage (Humble reads sqlite3 by default)')
    parser.add_argument('--bag-version', type=int, default=9, choices=(8, 9),
                        help='rosbag2 format: 9 (Jazzy, Kilted) or 8 (also Humble, with '
                        '--storage sqlite3)')
    parser.add_argument('--image-size', type=int, default=64, help='square image side (px)')
    parser.add_argument('--hfov-deg', type=float, metavar='DEG',
                        help="another camera's horizontal field of view (default: the world's "
                        'own camera, mazes 90, rooms 75); rooms render it (square pixels), '
                        'mazes only a narrower one: the centre crop of the 90 deg view that '
                        'spans it (rendered at a resolution where the crop is at least '
                        '--image-size)')
    parser.add_argument('--depth', action='store_true',
                        help='also record a depth camera registered to the images on '
                        '/camera/depth/image_raw (32FC1, m; ray-cast on the world\'s layout), as '
                        'an RGB-D camera gives: replay --depth-topic uses it')
    parser.add_argument('--depth-range', type=float, default=0.0, metavar='M',
                        help='with --depth: no reading beyond M metres, as a real sensor '
                        '(default 0: unlimited)')
    parser.add_argument('--depth-noise', type=float, default=0.0, metavar='SIGMA',
                        help='with --depth: multiplicative log-normal noise per pixel (e.g. '
                        '0.02; default 0)')
    parser.add_argument('--mapping-frames', type=int, metavar='N',
                        help='frames of the mapping run (default: until it has passed within '
                        '1.5 m of every reachable place of the world, at least 800)')
    parser.add_argument('--mapping-return', action='store_true',
                        help='after covering the world the mapping run turns about and drives '
                        'its route back, so the map has views facing both ways along it '
                        '(twice the frames); the localization run is the one without it')
    parser.add_argument('--localization-frames', type=int, default=150)
    parser.add_argument('--rate', type=float, default=4.0, help='frames per second')
    parser.add_argument('--step', type=float, default=0.5, help='metres driven per frame')
    parser.add_argument('--kidnap-at', type=int, metavar='FRAME',
                        help='teleport the robot at this localization frame to a mapped place '
                        '>= 10 m away, unseen by its odometry (kidnapped-robot test)')
    parser.add_argument('--turn-first', action='store_true',
                        help='the localization run begins with one full turn in place (12 '
                        'frames, 30 deg each, counted in --localization-frames), then drives '
                        'the route it drives without the turn')


def _check_hfov(domain, hfov_deg, image_size):
    """UserError (one line) for a field of view the domain's camera cannot give."""
    if not (math.isfinite(hfov_deg) and 1.0 <= hfov_deg < 180.0):
        raise UserError(f'--hfov-deg must be within [1, 180), got {hfov_deg:g}')
    if domain == 'mazes':
        from dmn_localizer.sim.mazes import crop_resolution
        try:
            crop_resolution(image_size, hfov_deg)
        except ValueError as exc:
            raise UserError(f'--hfov-deg: {exc}') from None


def run(args):
    if not 8 <= args.image_size <= 512:
        raise UserError(f'--image-size must be within 8..512, got {args.image_size}')
    from dmn_localizer.data.dataset import SPLIT_SEEDS
    lo, hi = SPLIT_SEEDS[args.split]
    if not 0 <= args.seed < hi - lo:
        raise UserError(f'--seed must be within 0..{hi - lo - 1} for --split {args.split}, '
                        f'got {args.seed}')
    if (args.mapping_frames is not None and args.mapping_frames < 2) \
            or args.localization_frames < 2:
        raise UserError('--mapping-frames and --localization-frames must be >= 2')
    if args.kidnap_at is not None and not 1 <= args.kidnap_at < args.localization_frames:
        raise UserError(f'--kidnap-at must be within 1..{args.localization_frames - 1}')
    from dmn_localizer.bags.simulate import TURN_FIRST_FRAMES, simulate_bag
    if args.turn_first and not TURN_FIRST_FRAMES < (args.kidnap_at or args.localization_frames):
        raise UserError(f'--turn-first takes the first {TURN_FIRST_FRAMES} localization frames: '
                        f'--localization-frames and --kidnap-at must be > {TURN_FIRST_FRAMES}')
    if args.rate <= 0 or not 0 < args.step <= 5:
        raise UserError('--rate must be > 0 and --step within (0, 5] m')
    if args.hfov_deg is not None:
        _check_hfov(args.domain, args.hfov_deg, args.image_size)
    if (args.depth_range or args.depth_noise) and not args.depth:
        raise UserError('--depth-range and --depth-noise describe the --depth camera: add '
                        '--depth')
    if not (0 <= args.depth_range <= 1000 and 0 <= args.depth_noise <= 1):
        raise UserError('--depth-range must be within [0, 1000] m and --depth-noise within '
                        '[0, 1]')
    for run_name in ('mapping', 'localization'):
        if os.path.exists(os.path.join(args.out, run_name)):
            raise UserError(f'{os.path.join(args.out, run_name)}: exists (bags are never '
                            'overwritten)')
    world = lo + args.seed
    print(f'world: {args.domain} {args.split} world {world} (replay --world '
          f'{args.domain}:{world} draws its layout)')
    res = simulate_bag(args.domain, world, args.out, storage=args.storage,
                       image_size=args.image_size, mapping_frames=args.mapping_frames,
                       localization_frames=args.localization_frames, rate_hz=args.rate,
                       step_m=args.step, kidnap_at=args.kidnap_at,
                       bag_version=args.bag_version, hfov_deg=args.hfov_deg,
                       depth=args.depth, depth_range=args.depth_range,
                       depth_noise=args.depth_noise, turn_first=args.turn_first,
                       mapping_return=args.mapping_return)
    for name, (path, poses, _) in res.items():
        print(f'{name}: {path} ({len(poses)} frames, {args.storage}, rosbag2 format '
              f'{args.bag_version})')
    return 0
