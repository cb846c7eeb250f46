"""The view-pair recipe's end-to-end term: the aligned model's scores trained through the
particle filter on whole episodes (``rollout_weight`` in :class:`ViewPairConfig`).

The candidate terms teach the model to rank poses against one query; the filter multiplies
the scores of several queries and resamples in between, so how the scores of different
contexts and views add up matters too. This term runs the filter of
:func:`~dmn_localizer.filter.rollout.rollout` (soft resampling, so the gradient reaches every
step) over episodes drawn as the protocol draws them and takes its dense loss; with
``rollout_match_weight`` it adds the match term (:meth:`FilterTerm.match_loss`).
"""
import math

import numpy as np
import torch
import torch.nn.functional as F

from dmn_localizer.data.dataset import open_dataset
from dmn_localizer.filter.rollout import initial_particles, make_batch, rollout
from dmn_localizer.geometry import wrap_angle
from dmn_localizer.model.nearest import log_likelihood_nearest
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
        loss = r['dense'].mean()
        if cfg.rollout_match_weight:
            loss = loss + cfg.rollout_match_weight * self.match_loss(model, batch)
        return loss

    def match_loss(self, model, batch):
        """The match term of ``batch`` (see ``rollout_match_weight`` in
        :class:`ViewPairConfig`): the mean of the logistic losses of the true poses' scores
        (label 1, where a context sees the view) and of the best foreign-map scores (label
        0), a scalar tensor; each episode's foreign map is the next episode's contexts (zero
        with one episode)."""
        cfg = self.cfg
        if len(batch) < 2:
            return torch.zeros((), device=self.device)
        m = cfg.rollout_nearest_contexts
        query = model.encode_query(batch.query_images[:, 0])
        # label 1 only where a context sees the query's view (within 2 m and 45 deg): rare in
        # sparse episodes, so the own map is scored only when one does
        truth = batch.query_poses[:, :1]
        d = batch.context_poses - truth
        sees = ((d[..., :2].norm(dim=-1) < 2.0)
                & (wrap_angle(d[..., 2]).abs() < math.radians(45.0))).any(1)
        positive = torch.zeros((), device=self.device)
        if sees.any():
            own_map = model.build_map(batch.context_images, batch.context_poses)
            own = log_likelihood_nearest(model, own_map, query, truth, m)[:, 0]
            positive = (F.softplus(-own) * sees).sum() / sees.sum()
        images, poses = batch.context_images.roll(1, 0), batch.context_poses.roll(1, 0)
        foreign_map = model.build_map(images, poses)
        n = poses.shape[1]
        per = -(-cfg.rollout_match_particles // n)
        near = poses[:, torch.arange(n, device=poses.device).repeat_interleave(per)]
        std = torch.tensor([1.0, 1.0, math.radians(15.0)])
        near = near + (torch.randn(near.shape, generator=self.gen) * std).to(near.device)
        foreign = log_likelihood_nearest(model, foreign_map, query, near, m).amax(1)
        return 0.5 * (positive + F.softplus(foreign).mean())
