"""``dmn-localizer replay``: build a map from a mapping bag, localize over a query bag with
the same core the node uses, and write metrics.json, TUM trajectories and PNG plots."""
import json
from pathlib import Path

from dmn_localizer.errors import UserError

HELP = 'Localize over a bag (map from another bag or a map file) and score it.'


def add_arguments(parser):
    parser.add_argument('--bag', required=True, type=Path, help='query (localization) bag')
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument('--map-bag', type=Path, help='bag to build the map from')
    src.add_argument('--map', type=Path, help='existing map file (.dmnmap)')
    parser.add_argument('--model', type=Path, help='model weights (default: shipped mazes)')
    parser.add_argument('--out', required=True, type=Path, help='output directory')
    parser.add_argument('--mode', choices=['global', 'tracking'], default='global')
    parser.add_argument('--particles', type=int, default=None,
                        help='particles (default: 2048 global, 256 tracking)')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--image-topic', default='/camera/image_raw')
    parser.add_argument('--odom-topic', default='/odom')
    parser.add_argument('--truth-topic', default='/ground_truth/pose')
    parser.add_argument('--keyframe-distance', type=float, default=2.0)
    parser.add_argument('--keyframe-angle', type=float, default=0.5)
    parser.add_argument('--world', default=None, metavar='DOMAIN:SEED',
                        help='simulated world the bags come from (draws its layout)')
    parser.add_argument('--device', default='auto')


def replay(args, quiet=False):
    """The replay as an importable function; returns (metrics, [png paths])."""
    import torch

    from dmn_localizer import replay as core
    from dmn_localizer.config import LocalizerConfig
    from dmn_localizer.localizer import Localizer, select_device
    from dmn_localizer.model.io import load_model
    from dmn_localizer.resources import default_model_path
    from dmn_localizer.view_map import ViewMap

    if args.particles is not None and args.particles < 1:
        raise UserError('--particles must be >= 1')
    torch.manual_seed(args.seed)
    model = load_model(args.model or default_model_path())
    size = model.config.image_size
    topics = core.Topics(args.image_topic, args.odom_topic, args.truth_topic)
    view_map = (ViewMap.load(args.map) if args.map else
                core.build_map(args.map_bag, topics, size, args.keyframe_distance,
                               args.keyframe_angle))
    if len(view_map) == 0:
        raise UserError('the map is empty')
    if view_map.images.shape[1] != size:
        raise UserError(f'map images are {view_map.images.shape[1]} px, the model expects {size}')
    k = args.particles or (2048 if args.mode == 'global' else 256)
    cfg = LocalizerConfig(num_particles=k, global_num_particles=k, update_min_d=0.0,
                          update_min_a=0.0, force_update_when_still=True)
    try:
        device = select_device(args.device)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    loc = Localizer(model, cfg, device, seed=args.seed)
    loc.set_map(view_map)
    stream = core.read_stream(args.bag, topics, size)
    track = core.localize(loc, stream, args.mode, progress=not quiet)
    metrics = core.compute_metrics(track)
    metrics.update(mode=args.mode, particles=k, map_contexts=len(view_map),
                   model_id=getattr(model, 'model_id', ''), device=str(device))
    layout = None
    if args.world:
        layout = world_layout(args.world)
    pngs = core.write_outputs(track, metrics, args.out, view_map=view_map, layout=layout)
    return metrics, pngs


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
    print(f'wrote {args.out}/metrics.json, estimate.tum, groundtruth.tum, '
          + ', '.join(p.name for p in pngs))
    return 0
