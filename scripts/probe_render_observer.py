"""How far does plain appearance get? `replay` with the model's scores replaced by the world's
own renderer: each camera pose the filter scores is rendered (ViZDoom mazes) and compared with
the image, ``-beta * mean |render - image| / 10`` grey levels (after averaging ``--pool`` x
``--pool`` blocks) or ``beta * ZNCC``; or, with ``--similarity depth``, no rendering: the
layout's ray-cast column depths at the pose against those at the true pose (the bag's ground
truth at the image's stamp), ``-beta * mean |log depth - log true depth|`` over 32 columns (the
layout alone, as a perfect depth camera would give it); ``both``: the sum of the two terms.
A pose in a wall (clearance < 0.1 m) gets the update's lowest score. Everything else is
`replay` as it is (the model given with ``--model`` only builds the map the filter's
outside-the-map test uses); the outputs are replay's.

    python scripts/probe_render_observer.py --world 1100007 --beta 3 --pool 4 -- \\
        replay --bag bags/demo/localization --map-bag bags/demo/mapping --out results --seed 0 \\
        --params-file no_lost_flag.yaml

``--world``: the bags' mazes world seed (the demo's default world is 1,100,007; a test-split
``simulate-bag --seed S`` is 1,100,000 + S). A probe for docs/experiments.md (2026-12-05,
tenth session), not a localizer: it reaches into the localizer's scoring.
"""
import argparse
import sys

import numpy as np
import torch

WALL_CLEARANCE_M = 0.1
RENDER_BATCH = 4096
DEPTH_COLUMNS = 32


def zncc(renders, image):
    """Zero-mean normalised cross-correlation of each render (N, H, W, 3) with the image."""
    a = renders.reshape(len(renders), -1).astype(np.float32)
    b = image.reshape(1, -1).astype(np.float32)
    a = a - a.mean(1, keepdims=True)
    b = b - b.mean(1, keepdims=True)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b) + 1e-6)


def pooled(images, k):
    """Mean of k x k blocks of images (N, H, W, 3)."""
    n, h, w, c = images.shape
    out = images.astype(np.float32)
    return out if k == 1 else out.reshape(n, h // k, k, w // k, k, c).mean(axis=(2, 4))


def layout_depths(world, poses):
    """Ray-cast column depths (P, 32) of camera poses (P, 3) on the world's layout."""
    from dmn_localizer.data.column_depth import column_depths
    from dmn_localizer.sim.mazes import HFOV_DEG
    return column_depths(world.layout, world.layout_resolution_m, poses, DEPTH_COLUMNS,
                         HFOV_DEG)


def install(world, similarity, beta, pool, truth=None):
    """Replace the localizer's model scores by render-and-compare scores (``truth``: the
    true pose at an image stamp, for ``depth``)."""
    from dmn_localizer.localization import localizer, scoring
    state = {}

    def scores(cam):
        poses = cam[0].detach().cpu().numpy().astype(np.float64)
        free = np.asarray(world.is_free(poses[:, :2], WALL_CLEARANCE_M), bool)
        out = np.full(len(poses), np.nan, np.float32)
        index = np.flatnonzero(free)
        layout = np.zeros(len(index), np.float32)
        if similarity in ('depth', 'both'):
            true = np.log(layout_depths(world, state['truth'][None]))
            layout = -np.abs(np.log(layout_depths(world, poses[index])) - true).mean(1)
            out[index] = layout
        if similarity == 'depth':
            index = index[:0]
        for i in range(0, len(index), RENDER_BATCH):
            j = index[i:i + RENDER_BATCH]
            renders = world.render(poses[j])
            if similarity == 'zncc':
                out[j] = zncc(renders, state['image'])
            else:
                out[j] = -np.abs(pooled(renders, pool) - pooled(state['image'][None], pool)
                                 ).mean(axis=(1, 2, 3)) / 10.0 + layout[i:i + RENDER_BATCH]
        out[~free] = np.nanmin(out) if free.any() else 0.0
        return torch.as_tensor(beta * out)[None]

    scoring.MapScoring._model_scores = lambda self, query, cam, index: scores(cam)
    scoring.MapScoring.model_log_likelihood = lambda self, query, cam: scores(cam)
    update = localizer.Localizer.update

    def update_keeping_the_image(self, image, *args, **kwargs):
        state['image'] = np.asarray(image)
        if truth is not None:
            state['truth'] = truth[state['image'].tobytes()]
        return update(self, image, *args, **kwargs)
    localizer.Localizer.update = update_keeping_the_image


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--world', type=int, required=True, help='mazes world seed')
    parser.add_argument('--similarity', choices=('mad', 'zncc', 'depth', 'both'),
                        default='mad', help="both: mad + depth")
    parser.add_argument('--beta', type=float, default=3.0)
    parser.add_argument('--pool', type=int, default=1, help='average k x k pixel blocks')
    parser.add_argument('cli', nargs=argparse.REMAINDER, help='-- then the replay command')
    args = parser.parse_args()
    from dmn_localizer.cli import main as cli_main
    from dmn_localizer.sim.world import make_world
    world = make_world('mazes', args.world)
    cli_args = args.cli[1:] if args.cli[:1] == ['--'] else args.cli
    truth = None
    if args.similarity in ('depth', 'both'):   # the true pose of each of the bag's images
        from dmn_localizer.bags.read import read_pairs
        pairs = read_pairs([cli_args[cli_args.index('--bag') + 1]], '/camera/image_raw',
                           '/ground_truth/pose', 32)
        truth = {image.tobytes(): pose for image, pose in zip(pairs.images, pairs.poses)}
    install(world, args.similarity, args.beta, args.pool, truth)
    sys.argv = ['dmn-localizer'] + cli_args
    return cli_main()


if __name__ == '__main__':
    sys.exit(main())
