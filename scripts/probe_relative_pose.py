"""Does a DMN's attention say where a particle is relative to a view, or only how close?

For validation episodes with the query's nearest context forced into a map of 4, it scores 64
candidate poses around the true pose (the truth and Gaussian offsets of 2 m / 20 deg) with
the attention logits of that nearest context (``DMN.attention_logits``, before the softmax
over contexts) and prints: how often the truth scores highest (chance 1/64), and the mean
correlation of the logits with each candidate's distance to the context's viewpoint and
with its yaw difference to it. A model that compares views peaks at the truth; one that
learned a proximity score follows the distances.

    python scripts/probe_relative_pose.py models/dmn_mazes data/mazes/val
"""
import argparse
import math

import numpy as np
import torch

from dmn_localizer.evaluation.protocol import load_episodes
from dmn_localizer.filter import sample_gaussian
from dmn_localizer.geometry import relative
from dmn_localizer.model.io import load_model
from dmn_localizer.filter.rollout import make_batch
from dmn_localizer.data.dataset import open_dataset

CANDIDATES = 64
OFFSET_STD = (2.0, 2.0, math.radians(20.0))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('model')
    ap.add_argument('val_data')
    ap.add_argument('--episodes', type=int, default=96)
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--threads', type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model(args.model, 'cpu').eval()
    episodes = load_episodes(open_dataset(args.val_data), args.episodes, 16, 1, seed=7919)
    rng, gen = np.random.default_rng(args.seed), torch.Generator().manual_seed(args.seed)
    top1, corr_dist, corr_yaw = [], [], []
    with torch.no_grad():
        for i in range(0, len(episodes) - 1, 16):
            b = make_batch(episodes[i:i + 16], 4, rng, near_context_prob=1.0)
            m = model.build_map(b.context_images, b.context_poses)
            q = model.encode_query(b.query_images[:, 0])
            truth = b.query_poses[:, 0]
            poses = torch.cat([truth[:, None],
                               sample_gaussian(truth, OFFSET_STD, CANDIDATES - 1, gen)], 1)
            logits = model.attention_logits(m, q, poses)                  # (B, 64, 4)
            nearest = (b.context_poses[..., :2] - truth[:, None, :2]).norm(dim=-1).argmin(-1)
            for k in range(len(b)):
                score = logits[k, :, nearest[k]].numpy()
                view = b.context_poses[k, nearest[k]]
                dist = (poses[k, :, :2] - view[:2]).norm(dim=-1).numpy()
                dyaw = relative(poses[k], view[None].expand(CANDIDATES, 3))[:, 2].abs().numpy()
                top1.append(score.argmax() == 0)
                corr_dist.append(np.corrcoef(score, dist)[0, 1])
                corr_yaw.append(np.corrcoef(score, dyaw)[0, 1])
    print(f'{args.model}: {len(top1)} episodes; truth scores highest of {CANDIDATES} '
          f'candidates in {np.mean(top1):.1%} (chance {1 / CANDIDATES:.1%}); mean correlation '
          f'of the logit with the distance to the view {np.mean(corr_dist):+.2f}, with the yaw '
          f'difference {np.mean(corr_yaw):+.2f}')


if __name__ == '__main__':
    main()
