"""The view-pair recipe: trains the aligned observation model (``architecture: aligned``) to
compare views, on sets of candidate poses where only the images tell the truth apart.

One training sample: a world, a query view (a trajectory step), ``contexts`` views from the
world's context pool (with probability ``overlap_prob`` one of them overlaps the query: at least
``min_overlap`` of its columns are seen by both, from the true depths, so walls in between do
not count), and ``candidates`` poses:

* the truth; poses near it (``near_std``) and farther (``far_std``): coarse to fine;
* the true position turned by 60-180 deg (the same place, another view);
* decoys: the truth's pose relative to its nearest context, re-anchored at the other contexts
  (a particle's pose relative to the views alone cannot tell them from the truth);
* the poses of the world's other views, jittered (elsewhere in free space).

The coarse term scores ``coarse_candidates`` poses spread over the world's free space against a
wide kernel, and with ``mined_candidates`` also the model's own best-scoring poses of a pool
drawn over the whole world (hard negatives, mined without gradient each step).

Loss: the cross-entropy of the softmax of the model's log-likelihoods over the candidates
against a Gaussian kernel of each candidate's distance to the truth, the kernel shrinking from
``kernel_start`` to ``kernel_end`` over ``curriculum_steps`` (coarse to fine), plus
``depth_weight`` times the L1 error of the predicted log-depth of every view's columns against
the true depth.

Validation (the go/no-go signal, logged every ``val_every`` steps): on validation worlds, a
query and one context that overlaps it, 64 candidate poses (truth plus Gaussian offsets of 2 m,
2 m, 20 deg) with the truth at a random index: ``pose_top1`` is the share of queries whose truth
scores strictly highest (ties never count: chance 1/64), ``pose_top1_wrong`` the same with
another query's image (the gap is image use), ``top_error_m``/``top_error_deg`` the pose error of
the best candidate. Every ``eval_every`` steps (and at the end) the paper protocol on validation
episodes gives ``val_success@5`` (global, K = 2048) and ``val_rmse@5`` (tracking).

Outputs in the run folder: ``best`` (highest ``pose_top1`` then ``val_success@5``; see
:func:`train_view_pairs`), ``last``, ``final``, ``log.csv`` and ``curve.png`` (metrics against
wall time). Ctrl-C stops after the current step and still writes ``final``.

Modules: ``config`` (:class:`ViewPairConfig`), ``worlds`` (the views in memory), ``sampling``
(training samples), ``loss``, ``validation``, ``train`` (the loop, :func:`train_view_pairs`).
"""
from dmn_localizer.training.view_pairs.config import (is_view_pair_config,
                                                      load_view_pair_config, RECIPE,
                                                      ViewPairConfig)
from dmn_localizer.training.view_pairs.sampling import sample_batch
from dmn_localizer.training.view_pairs.train import train_view_pairs
from dmn_localizer.training.view_pairs.validation import pose_ranking, validation_set

__all__ = ['is_view_pair_config', 'load_view_pair_config', 'pose_ranking', 'RECIPE',
           'sample_batch', 'train_view_pairs', 'ViewPairConfig', 'validation_set']
