"""What each training step trains on: the resumable episode stream, the curriculum and the
step's batch with its initial particles.

Data-parallel: every process draws the same global batch of ``batch_size * WORLD_SIZE``
episodes (same seeds: data is cheap next to the model) and keeps its own share, so all
processes keep identical RNG and data-stream states (see
:mod:`dmn_localizer.training.distributed`).
"""
from dataclasses import dataclass

import numpy as np
import torch

from dmn_localizer.filter.rollout import Batch, initial_particles, make_batch
from dmn_localizer.training.config import TrainConfig
from dmn_localizer.util.errors import UserError


class EpisodeStream:
    """Endless, resumable stream of episodes: epoch e iterates the dataset shuffled with seed
    ``seed + e``; the position is (epoch, episodes consumed in it). ``queries``: how an
    episode's query views are drawn (:meth:`~dmn_localizer.data.dataset.Dataset.iter_episodes`)."""

    def __init__(self, dataset, n_contexts, steps, seed, queries='trajectory'):
        self.dataset, self.n_contexts, self.steps, self.seed = dataset, n_contexts, steps, seed
        self.queries = queries
        self.epoch, self.consumed, self._it = 0, 0, None

    def _open(self):
        self._it = iter(self.dataset.iter_episodes(self.n_contexts, self.steps,
                                                   seed=self.seed + self.epoch, shuffle=True,
                                                   loop=False, queries=self.queries))

    def take(self, n):
        out = []
        fresh = 0
        while len(out) < n:
            if self._it is None:
                self._open()
            try:
                out.append(next(self._it))
                self.consumed += 1
                fresh += 1
            except StopIteration:
                if fresh == 0 and self.consumed == 0:
                    raise UserError('the training dataset yielded no episodes')
                self.epoch, self.consumed, self._it, fresh = self.epoch + 1, 0, None, 0
        return out

    def state(self):
        return {'epoch': self.epoch, 'consumed': self.consumed}

    def restore(self, state):
        self.epoch, self._it = int(state['epoch']), None
        skip, self.consumed = int(state['consumed']), 0
        if skip:
            self._open()
            for _ in range(skip):
                next(self._it)
            self.consumed = skip


def _lerp(a, b, frac):
    return a + (b - a) * min(max(frac, 0.0), 1.0)


def schedule(cfg: TrainConfig, step):
    """Curriculum values at ``step``: (init_std (m, deg), near_context_prob)."""
    f = step / max(cfg.curriculum_steps, 1)
    std = (_lerp(cfg.init_std_start[0], cfg.init_std_end[0], f),
           _lerp(cfg.init_std_start[1], cfg.init_std_end[1], f))
    return std, _lerp(cfg.near_context_prob_start, cfg.near_context_prob_end, f)


@dataclass
class StepBatch:
    """One step's share of the global batch (all of it in a single process)."""
    batch: Batch
    particles: torch.Tensor     # (b, K, 3) initial particles
    keep: torch.Tensor          # (b, 1) 1 for episodes that start from a tracking belief
    n_keep: torch.Tensor        # () their count over the global batch
    n_contexts: int             # contexts per episode this step
    init_std: tuple             # curriculum (m, deg)
    near_context_prob: float    # curriculum


def draw_step(cfg: TrainConfig, step, stream: EpisodeStream, rng: np.random.Generator,
              gen: torch.Generator, device, rank=0, world=1):
    """The global batch of ``step`` drawn from ``stream``, ``rng`` and ``gen`` (the same on
    every process), cut to process ``rank``'s share: a :class:`StepBatch`."""
    std, near_p = schedule(cfg, step)
    n_ctx = int(rng.integers(cfg.contexts[0], cfg.contexts[1] + 1))
    batch = make_batch(stream.take(cfg.batch_size * world), n_ctx, rng, near_p,
                       cfg.steps, device)
    draw = torch.rand(len(batch), generator=gen)
    particles = initial_particles(batch, cfg.particles, gen, global_prob=cfg.global_prob,
                                  draw=draw,
                                  init_std=std, perturb_mean=cfg.perturb_belief_mean,
                                  near_truth_fraction=cfg.near_truth_fraction,
                                  near_truth_std=cfg.near_truth_std,
                                  decoy_fraction=cfg.decoy_fraction,
                                  decoy_std=cfg.decoy_std).to(device)
    keep = (draw >= cfg.global_prob).float()[:, None]
    n_keep = keep.sum()                                 # over the global batch
    if world > 1:
        share = slice(rank * cfg.batch_size, (rank + 1) * cfg.batch_size)
        batch, particles, keep = batch.part(rank, world), particles[share], keep[share]
    return StepBatch(batch, particles, keep, n_keep, n_ctx, std, near_p)
