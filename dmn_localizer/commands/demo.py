"""``dmn-localizer demo``: the whole pipeline on a maze never seen in training.

Generates a test-split world, records a mapping bag and a localization bag (rosbag2, mcap),
builds the view-embedding map from the mapping bag, localizes over the localization bag from a
uniform belief with the shipped model (the same core the localizer node runs), and prints a
summary; DIR gets metrics.json, TUM trajectories and PNG plots.
"""
import argparse
import shutil
import time
from pathlib import Path

from dmn_localizer.util.errors import UserError

HELP = 'Map and globally localize in an unseen simulated maze; print a summary and plots.'


def add_arguments(parser):
    parser.add_argument('--out', type=Path, default=Path('demo_output'),
                        help='output directory (default: ./demo_output)')
    parser.add_argument('--seed', type=int, default=7, help='which unseen test world')
    parser.add_argument('--model', type=Path, help='model (default: shipped mazes model)')
    parser.add_argument('--particles', type=int, default=2048)
    parser.add_argument('--frames', type=int, default=120, help='localization run length')
    parser.add_argument('--image-size', type=int, default=64, help='camera image size in bags')
    parser.add_argument('--depth', action='store_true',
                        help='an RGB-D camera: record its depth topic and localize with the '
                        'measured column depths')


def run(args):
    from dmn_localizer.bags.simulate import DEPTH_TOPIC, simulate_bag
    from dmn_localizer.commands.replay import replay
    from dmn_localizer.data.dataset import SPLIT_SEEDS

    if args.seed < 0 or args.frames < 10 or args.particles < 1:
        raise UserError('--seed must be >= 0, --frames >= 10, --particles >= 1')
    world_seed = SPLIT_SEEDS['test'][0] + args.seed
    t0 = time.perf_counter()
    print(f'[demo] world: mazes test world {world_seed} (never used in training)')
    bags = args.out / 'bags'
    for run_name in ('mapping', 'localization'):  # the demo's own bags from an earlier run
        if (bags / run_name).is_dir():
            shutil.rmtree(bags / run_name)
    runs = simulate_bag('mazes', world_seed, bags, image_size=args.image_size,
                        localization_frames=args.frames, depth=args.depth)
    t_bags = time.perf_counter() - t0
    print(f"[demo] recorded {runs['mapping'][0]} ({len(runs['mapping'][1])} frames) and "
          f"{runs['localization'][0]} ({len(runs['localization'][1])} frames) "
          f'in {t_bags:.1f} s')
    replay_args = argparse.Namespace(
        bag=Path(runs['localization'][0]), map_bag=Path(runs['mapping'][0]), map=None,
        model=args.model, out=args.out, mode='global', particles=args.particles, seed=0,
        image_topic='/camera/image_raw', odom_topic='/odom', truth_topic='/ground_truth/pose',
        depth_topic=DEPTH_TOPIC if args.depth else None,
        keyframe_distance=2.0, keyframe_angle=0.5, world=f'mazes:{world_seed}', device='auto')
    metrics, pngs = replay(replay_args)
    ttc = metrics['time_to_converge_s']
    print('[demo] summary (global localization from a uniform belief: '
          f"{metrics['initial_particles']} poses for the first image, then "
          f"{metrics['particles']} particles; map of {metrics['map_contexts']} contexts):")
    print(f"  time to converge (< {metrics['tight_threshold_m']:.0f} m from then to the end): "
          + ('never' if ttc is None else f'{ttc:.1f} s'))
    print(f"  final x-y error:  {metrics['final_error_m']:.2f} m")
    print(f"  APE RMSE (evo):   {metrics['ape_rmse_m']:.2f} m")
    print(f"  success rate:     {100 * metrics['success_rate']:.0f}% of updates within "
          f"{metrics['success_threshold_m']:.2f} m (a random mapped pose: "
          f"{100 * metrics['success_rate_chance']:.0f}%)")
    print(f"  speed:            {metrics['frames_per_s']:.1f} frames/s on {metrics['device']}")
    print(f'  total time:       {time.perf_counter() - t0:.0f} s')
    print(f'[demo] plots: {", ".join(str(p) for p in pngs)}; metrics: {args.out}/metrics.json')
    return 0
