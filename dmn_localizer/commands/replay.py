"""``dmn-localizer replay``: build a map from a mapping bag, localize over a query bag with
the same core the node uses (or, with ``--live``, through the real localizer node over DDS),
and write metrics.json, TUM trajectories and PNG plots."""
import dataclasses
import json
import logging
import math
from pathlib import Path

from dmn_localizer.util.errors import UserError

logger = logging.getLogger(__name__)

HELP = 'Localize over a bag (map from another bag or a map file) and score it.'


def add_arguments(parser):
    parser.add_argument('--bag', required=True, type=Path, help='query (localization) bag')
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument('--map-bag', type=Path, help='bag to build the map from')
    src.add_argument('--map', type=Path, help='existing map file (.dmnmap)')
    parser.add_argument('--save-map', type=Path, metavar='FILE',
                        help="with --map-bag: also write the map built from it (.dmnmap), for "
                        "the nodes' map_file or a later replay --map")
    parser.add_argument('--model', type=Path, help='model weights (default: shipped mazes)')
    parser.add_argument('--out', required=True, type=Path, help='output directory')
    parser.add_argument('--mode', choices=['global', 'tracking'], default='global')
    parser.add_argument('--init-spread', type=float, nargs=2, default=None, metavar=('M', 'DEG'),
                        help='tracking mode: std of the initial Gaussian around the first true '
                        'pose, x-y (m) and yaw (deg); its mean is drawn from it (default 6 30, '
                        'the paper\'s)')
    parser.add_argument('--particles', type=int, default=None,
                        help='particles (default: 2048 global, 256 tracking); a global start '
                        "first scores the params file's global_initial_particles (16384) and "
                        'resamples them down to this')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--image-topic', default='/camera/image_raw')
    parser.add_argument('--odom-topic', default='/odom')
    parser.add_argument('--truth-topic', default='/ground_truth/pose')
    parser.add_argument('--depth-topic', default=None, metavar='TOPIC',
                        help='a depth image registered to the images, in both bags (e.g. '
                        '/camera/depth/image_raw from simulate-bag --depth): an aligned model '
                        'takes its column depths instead of predicting them (the nodes\' '
                        "'depth_topic' parameter; default: none)")
    parser.add_argument('--keyframe-distance', type=float, default=2.0)
    parser.add_argument('--keyframe-angle', type=float, default=0.5)
    parser.add_argument('--world', default=None, metavar='DOMAIN:SEED',
                        help='simulated world the bags come from (draws its layout)')
    parser.add_argument('--device', default='auto')
    parser.add_argument('--params-file', type=Path, default=None, metavar='YAML',
                        help="the localizer node's ROS 2 parameters file (e.g. an edited copy "
                        "of config/localizer.yaml): the filter runs with its values (default: "
                        "the node's defaults); the options below, when given, win")
    parser.add_argument('--precision', default=None, choices=('fp32', 'bf16'),
                        help="observation model arithmetic (offline replay; the node's "
                        "'precision' parameter, default fp32)")
    parser.add_argument('--context-pooling', default=None,
                        choices=('overlap_attention', 'sum', 'model'),
                        help="how an aligned model combines a particle's contexts (the node's "
                        "'context_pooling' parameter, default overlap_attention)")
    parser.add_argument('--update-min-d', type=float, default=None, metavar='M',
                        help="update the filter after this much translation, as the node does "
                        "(its 'update_min_d' parameter, default 0.25 m): frames closer "
                        "together only accumulate odometry, whatever the frame rate")
    parser.add_argument('--update-min-a', type=float, default=None, metavar='RAD',
                        help="or after this much rotation (the node's 'update_min_a', default "
                        "0.2 rad)")
    parser.add_argument('--nearest-contexts', type=int, default=None, metavar='M',
                        help="each particle attends to its M nearest map contexts, 0: to all "
                        "(offline replay; the node's 'nearest_contexts' parameter; default: "
                        "the model card's, else 8)")
    live = parser.add_argument_group('live replay (through the localizer node over DDS)')
    live.add_argument('--live', action='store_true',
                      help='start the localizer node, play the bag to it with its original '
                      'timing and score the estimates it publishes')
    live.add_argument('--rate', type=float, default=None,
                      help='playback speed factor for --live (default 1: real time)')
    live.add_argument('--ros-domain-id', type=int, default=None, metavar='ID',
                      help='ROS_DOMAIN_ID for the node and player (default: inherited)')


def replay(args, quiet=False):
    """The replay as an importable function; returns (metrics, [png paths])."""
    from dmn_localizer.replay import offline as core
    check_arguments(args)
    topics = core.Topics(args.image_topic, args.odom_topic, args.truth_topic,
                         getattr(args, 'depth_topic', None) or '')
    types = core.check_bag(args.bag, topics)   # before the slow steps: fail fast
    base = node_config(args)
    if getattr(args, 'live', False):
        from dmn_localizer.replay.live import check_types
        check_types(types, topics)
    import torch

    from dmn_localizer.localization.diagnostics import filter_values
    from dmn_localizer.localization.localizer import global_sample_sizes
    from dmn_localizer.mapping.view_map import check_map_image_size, ViewMap
    from dmn_localizer.model.io import load_model, LOCALIZER_ARCHITECTURES
    from dmn_localizer.util.device import select_device
    from dmn_localizer.util.resources import default_model_path

    torch.manual_seed(args.seed)
    model = load_model(args.model or default_model_path(), architecture=LOCALIZER_ARCHITECTURES)
    size = model.config.image_size
    view_map = (ViewMap.load(args.map) if args.map else
                core.build_map(args.map_bag, topics, size, args.keyframe_distance,
                               args.keyframe_angle,
                               depth_sync_tolerance_s=base.depth_sync_tolerance_s))
    if len(view_map) == 0:
        raise UserError('the map is empty')
    check_map_image_size(view_map, size, args.map or args.map_bag)
    if getattr(args, 'save_map', None):
        args.save_map.parent.mkdir(parents=True, exist_ok=True)
        view_map.save(args.save_map)
        if not quiet:
            print(f'wrote {args.save_map} ({len(view_map)} contexts)')
    k = args.particles or (base.global_num_particles if args.mode == 'global'
                           else base.num_particles)
    sigma = tracking_sigma(args)
    given = {name: getattr(args, name, None)
             for name in ('precision', 'context_pooling', 'nearest_contexts')}
    policy = update_policy(args, base)
    cfg = dataclasses.replace(base, num_particles=k, global_num_particles=k, **policy,
                              **{name: v for name, v in given.items() if v is not None})
    try:
        device = select_device(args.device)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    stream = core.read_stream(args.bag, topics, size, cfg.depth_sync_tolerance_s)
    if topics.depth and not getattr(model, 'takes_depth', False):
        logger.warning('--depth-topic: the model %s predicts no column depths (only aligned '
                       'models take measured ones): the depth is not used', args.model)
    mounting = core.stream_mounting(stream, cfg)
    extra = {}
    if getattr(args, 'live', False):
        from dmn_localizer.replay.live import localize_live
        track, extra = localize_live(
            view_map, stream, args.bag, args.model or default_model_path(), args.out, topics,
            args.mode, k, size, args.rate or 1.0, args.device, args.ros_domain_id, quiet=quiet,
            policy=policy, sigma=sigma,
            params_file=getattr(args, 'params_file', None))
    else:
        loc = core.localizer_for(model, cfg, device, args.seed, stream, view_map, args.bag)
        track = core.localize(loc, stream, args.mode, progress=not quiet, sigma=sigma)
        extra = {'precision': cfg.precision,
                 'context_pooling': getattr(model.config, 'context_pooling', None),
                 'recovery_injections': loc.health.injections,
                 'recovery_global_reinits': loc.health.global_reinits,
                 'unreliable_updates': loc.health.unreliable_total,
                 **filter_values(loc)}
        if track.depth_pairs is not None:
            extra.update(images_with_depth=track.depth_pairs[0],
                         images_without_depth=track.depth_pairs[1])
    core.annotate_map_views(track, view_map.poses, mounting)
    metrics = core.compute_metrics(track, map_xy=view_map.poses[:, :2])
    initial = global_sample_sizes(cfg)[0] if args.mode == 'global' else k
    metrics.update(mode=args.mode, particles=k, initial_particles=initial,
                   map_contexts=len(view_map),
                   base_from_camera=[float(v) for v in mounting],
                   **({'camera_hfov_deg': model.hfov_deg} if hasattr(model, 'hfov_deg')
                      else {}),
                   update_min_d=cfg.update_min_d, update_min_a=cfg.update_min_a,
                   **({'depth_topic': topics.depth} if topics.depth else {}),
                   **({'params_file': str(args.params_file)}
                      if getattr(args, 'params_file', None) else {}),
                   **({'init_spread': [float(sigma[0]), math.degrees(sigma[2])]}
                      if args.mode == 'tracking' else {}),
                   model_id=getattr(model, 'model_id', ''), device=str(device), **extra)
    layout = None
    if args.world:
        layout = world_layout(args.world)
    pngs = core.write_outputs(track, metrics, args.out, view_map=view_map, layout=layout)
    return metrics, pngs


def tracking_sigma(args):
    """The tracking start's std (m, m, rad) from ``--init-spread M DEG`` (default the
    paper's)."""
    from dmn_localizer.data.dataset import TRACKING_SIGMA
    spread = getattr(args, 'init_spread', None)
    if spread is None:
        return TRACKING_SIGMA
    return (float(spread[0]), float(spread[0]), math.radians(spread[1]))


def node_config(args):
    """The localizer node's config for this replay: its defaults, or the values of
    ``--params-file`` (a warning per parameter the node would ignore)."""
    from dmn_localizer.config import LocalizerConfig, read_params_file
    path = getattr(args, 'params_file', None)
    if path is None:
        return LocalizerConfig()
    try:
        values, warnings = read_params_file(path, 'localizer', LocalizerConfig)
    except ValueError as exc:
        raise UserError(f'--params-file {exc}') from None
    for warning in warnings:
        logger.warning(warning)
    return LocalizerConfig(**values)


def update_policy(args, base):
    """The node's update policy (``update_min_d``, ``update_min_a``: ``base``'s, the
    :func:`node_config`, unless given), which offline and live replay both follow."""
    policy = {}
    for name in ('update_min_d', 'update_min_a'):
        value = getattr(args, name, None)
        policy[name] = getattr(base, name) if value is None else value
    return policy


def check_arguments(args):
    """Cheap checks before anything heavy is loaded (one-line errors, exit status 2)."""
    from dmn_localizer.model.io import model_paths
    if args.particles is not None and args.particles < 1:
        raise UserError('--particles must be >= 1')
    if getattr(args, 'save_map', None) and not args.map_bag:
        raise UserError('--save-map writes the map built from --map-bag (with --map the map '
                        'file exists already)')
    if getattr(args, 'live', False) and getattr(args, 'precision', None) not in (None, 'fp32'):
        raise UserError('--precision is for offline replay (--live runs the node with its own '
                        'precision parameter)')
    nearest = getattr(args, 'nearest_contexts', None)
    if nearest is not None and getattr(args, 'live', False):
        raise UserError('--nearest-contexts is for offline replay (--live runs the node with '
                        'its own nearest_contexts parameter)')
    if nearest is not None and nearest < 0:
        raise UserError('--nearest-contexts must be >= 0 (0: all contexts)')
    spread = getattr(args, 'init_spread', None)
    if spread is not None and args.mode != 'tracking':
        raise UserError('--init-spread is for --mode tracking (global starts uniform)')
    if spread is not None and not (0 < spread[0] <= 100 and 0 < spread[1] <= 180):
        raise UserError('--init-spread M DEG: M within (0, 100] m, DEG within (0, 180]')
    from dmn_localizer.config import field_specs, LocalizerConfig
    ranges = {name: rng for name, _, _, rng in field_specs(LocalizerConfig)}
    for flag in ('update_min_d', 'update_min_a'):
        value, (lo, hi) = getattr(args, flag, None), ranges[flag]
        if value is not None and not lo <= value <= hi:
            raise UserError(f'--{flag.replace("_", "-")} must be within [{lo}, {hi}] (the '
                            "node's range)")
    for flag, path in (('--bag', args.bag), ('--map-bag', args.map_bag), ('--map', args.map),
                       ('--params-file', getattr(args, 'params_file', None))):
        if path is not None and not Path(path).exists():
            raise UserError(f'{flag} {path}: no such file or directory')
    if args.model is not None and not model_paths(args.model)[0].is_file():
        raise UserError(f'--model {args.model}: no such file (a model is NAME.safetensors + '
                        'NAME.json; NAME alone is enough)')
    live = getattr(args, 'live', False)
    rate = getattr(args, 'rate', None)
    if rate is not None and not live:
        raise UserError('--rate only applies to --live')
    if rate is not None and not rate > 0:
        raise UserError('--rate must be > 0')
    if live and getattr(args, 'ros_domain_id', None) is not None \
            and not 0 <= args.ros_domain_id <= 232:
        raise UserError('--ros-domain-id must be in 0..232')
    if args.out.exists() and not args.out.is_dir():
        raise UserError(f'--out {args.out}: exists and is not a directory')


def world_layout(spec):
    from dmn_localizer.sim.world import make_world
    try:
        domain, seed = spec.split(':')
        seed = int(seed)
    except ValueError:
        raise UserError(f'--world expects DOMAIN:SEED, got {spec!r}') from None
    with make_world(domain, seed) as world:
        return world.layout, world.layout_resolution_m, (0.0, 0.0)


def run(args):
    metrics, pngs = replay(args)
    print(json.dumps(metrics, indent=2))
    print(f'wrote {args.out}/metrics.json, estimate.tum, groundtruth.tum, updates.csv, '
          + ', '.join(p.name for p in pngs))
    return 0
