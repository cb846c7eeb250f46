"""Can a DMN learn view agreement on a fixed set of training episodes, and does it carry over?

Trains a model on the pose-contrast loss alone (``dmn_localizer.filter.rollout.
pose_contrast_loss``; every other loss off) over a fixed set of ``--episodes`` training
episodes (the query's nearest context forced into a map of 4, fixed candidate poses per
batch), and every ``--every`` steps prints the loss and ``top1`` (the share of episodes whose
true pose scores highest among the candidates) on the first 128 of those episodes with fresh
candidates, and on the validation ``near`` split of ``--config`` (what ``near_pose_contrast``
and ``near_pose_top1`` report during training). A model that fits the first and not the
second memorises worlds instead of learning to compare views. Model card, section "The
attention scores proximity".

    python scripts/probe_pose_contrast_fit.py models/dmn_mazes --episodes 128 --steps 1000
"""
import argparse
import time

import numpy as np
import torch

from dmn_localizer.evaluation.protocol import load_episodes
from dmn_localizer.model.io import load_model
from dmn_localizer.training.config import load_train_config
from dmn_localizer.filter.rollout import make_batch, pose_contrast_loss
from dmn_localizer.data.dataset import open_dataset
from dmn_localizer.training.losses import pose_contrast
from dmn_localizer.training.validation import build_validation

BATCH = 16


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('model')
    ap.add_argument('--config', default='config/train_mazes.yaml',
                    help='training config: its train_data, val_data and loss kernels')
    ap.add_argument('--episodes', type=int, default=128)
    ap.add_argument('--steps', type=int, default=1000)
    ap.add_argument('--every', type=int, default=200)
    ap.add_argument('--lr', type=float, default=5e-4)
    ap.add_argument('--threads', type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = load_train_config(args.config)
    spec = pose_contrast(cfg)
    model = load_model(args.model)
    model.train()
    episodes = load_episodes(open_dataset(cfg.train_data), args.episodes, 16, 1, seed=123)
    rng = np.random.default_rng(0)
    batches = [make_batch(episodes[i:i + BATCH], 4, rng, 1.0, 1)
               for i in range(0, len(episodes), BATCH)]
    val = [b for b, _ in build_validation(cfg, open_dataset(cfg.val_data),
                                          torch.device('cpu'))['near']]

    def loss_of(b, generator):
        m = model.build_map(b.context_images, b.context_poses)
        q = model.encode_query(b.query_images[:, 0])
        return pose_contrast_loss(model, m, q, b.query_poses[:, 0], b.context_poses, spec,
                                  generator)

    def measure(items, seed):
        g, loss, top1, n = torch.Generator().manual_seed(seed), 0.0, 0.0, 0
        with torch.no_grad():
            for b in items:
                value, best = loss_of(b, g)
                loss, top1, n = loss + value.sum().item(), top1 + best.sum().item(), n + len(b)
        return f'loss {loss / n:.4f} top1 {top1 / n:.1%}'

    def report(step, t0):
        print(f'step {step} ({time.time() - t0:.0f} s): trained episodes '
              f'{measure(batches[:128 // BATCH], 5)}; validation {measure(val, 7)}', flush=True)

    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    t0 = time.time()
    report(0, t0)
    for step in range(1, args.steps + 1):
        i = step % len(batches)
        value, _ = loss_of(batches[i], torch.Generator().manual_seed(1000 + i))
        opt.zero_grad()
        value.mean().backward()
        opt.step()
        if step % args.every == 0 or step == args.steps:
            report(step, t0)


if __name__ == '__main__':
    main()
