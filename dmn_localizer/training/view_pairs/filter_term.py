"""The view-pair recipe's end-to-end term: the aligned model's scores trained through the
particle filter on whole episodes (``rollout_weight`` in :class:`ViewPairConfig`).

The candidate terms teach the model to rank poses against one query; the filter multiplies
the scores of several queries and resamples in between, so how the scores of different
contexts and views add up matters too. This term runs the filter of
:func:`~dmn_localizer.filter.rollout.rollout` (soft resampling, so the gradient reaches every
step) over episodes drawn as the protocol draws them and takes its dense loss.
"""
import math

import numpy as np
import torch

from dmn_localizer.data.dataset import open_dataset
from dmn_localizer.filter.rollout import initial_particles, make_batch, rollout
from dmn_localizer.training.batches import EpisodeStream
from dmn_localizer.training.config import TrainConfig
from dmn_localizer.training.losses import filter_config
from dmn_localizer.training.view_pairs.config import ViewPairConfig


class FilterTerm:
    """Draws the term's episodes (a resumable stream seeded by the run's seed) and computes
    its loss for a model."""

    def __init__(self, cfg: ViewPairConfig, device):
        self.cfg, self.device = cfg, device
        self.contexts = cfg.rollout_contexts or cfg.contexts
        self.stream = EpisodeStream(open_dataset(cfg.train_data), self.contexts,
                                    cfg.rollout_steps, cfg.seed + 104729,
                                    queries=cfg.rollout_queries)
        self.rng = np.random.default_rng(cfg.seed + 104729)
        self.gen = torch.Generator().manual_seed(cfg.seed + 104729)
        # the DMN recipe's training filter (the protocol's transition noise, soft resampling)
        self.filter = filter_config(TrainConfig())

    def draw(self):
        """The next batch of episodes and their initial particles."""
        cfg = self.cfg
        batch = make_batch(self.stream.take(cfg.rollout_batch), self.contexts, self.rng, 0.0,
                           cfg.rollout_steps, self.device)
        particles = initial_particles(batch, cfg.rollout_particles, self.gen, global_prob=1.0,
                                      near_truth_fraction=cfg.rollout_near_truth,
                                      decoy_fraction=cfg.rollout_decoys).to(self.device)
        return batch, particles

    def loss(self, model, drawn=None):
        """The mean dense loss over the episodes and steps of ``drawn`` (default: the next
        :meth:`draw`), a scalar tensor."""
        cfg = self.cfg
        batch, particles = drawn or self.draw()
        kernel = (cfg.rollout_kernel[0], math.radians(cfg.rollout_kernel[1]))
        r = rollout(model, batch, particles, self.filter, self.gen, dense_kernel=kernel,
                    nearest_contexts=cfg.rollout_nearest_contexts)
        return r['dense'].mean()
