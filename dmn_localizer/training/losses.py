"""The training loss: the rollout's loss terms the config asks for, weighted and summed.

``mse`` is the paper loss (the belief's weighted-mean pose error); ``dense``, ``attention``
and ``pose_contrast`` are our additions, each with its weight and kernel in
:class:`~dmn_localizer.training.config.TrainConfig` (see its comments) and computed by
:func:`dmn_localizer.filter.rollout.rollout`.
"""
import math

import torch

from dmn_localizer.filter import FilterConfig
from dmn_localizer.filter.rollout import PoseContrast


def filter_config(cfg):
    """The training filter: fixed transition noise, soft resampling at every step."""
    s = cfg.transition_std
    return FilterConfig(transition_std=(s[0], s[1], math.radians(s[2])), resample='soft',
                        soft_alpha=cfg.soft_alpha, resample_ess_ratio=1.0)


def dense_kernel(cfg):
    return (cfg.dense_kernel_m, math.radians(cfg.dense_kernel_deg))


def pose_contrast(cfg):
    """The pose-contrast loss's spec (also the validation diagnostic's)."""
    return PoseContrast(
        cfg.pose_contrast_poses,
        (cfg.pose_contrast_offset_std[0], math.radians(cfg.pose_contrast_offset_std[1])),
        (cfg.pose_contrast_kernel[0], math.radians(cfg.pose_contrast_kernel[1])),
        (cfg.attention_kernel_m, math.radians(cfg.attention_kernel_deg)))


def rollout_options(cfg, scale):
    """The keyword arguments of :func:`~dmn_localizer.filter.rollout.rollout` that make it
    compute the loss terms with a non-zero weight; ``scale`` the model's coordinate scale."""
    return dict(
        scale=scale, yaw_weight=cfg.yaw_weight,
        dense_kernel=dense_kernel(cfg) if cfg.dense_weight else None,
        attention_kernel=((cfg.attention_kernel_m, math.radians(cfg.attention_kernel_deg))
                          if cfg.attention_weight else None),
        pose_contrast=pose_contrast(cfg) if cfg.pose_contrast_weight else None)


def training_loss(cfg, r, keep, n_keep, world):
    """The weighted loss of one step's rollout ``r`` and its terms {mse, dense, attention,
    pose_contrast} (zero where not computed).

    ``keep`` (b, 1): 1 for this process's episodes that start from a tracking belief (not a
    global one), ``n_keep`` their count over the global batch, ``world`` the process count:
    unless ``mse_on_global``, the paper loss counts only those episodes.
    """
    if cfg.mse_on_global or cfg.global_prob == 0:
        mse = r['mse'].mean()
    else:  # the paper loss only on tracking-belief episodes (normalised over the global
        # batch; the data-parallel gradient average divides by the process count)
        keep = keep.to(r['mse'])
        mse = world * (r['mse'] * keep).sum() / (n_keep * r['mse'].shape[1]).clamp_min(1.0)
    loss = cfg.mse_weight * mse
    dense = r['dense'].mean() if 'dense' in r else torch.zeros(())
    if 'dense' in r:
        loss = loss + cfg.dense_weight * dense
    att = r['attention'].mean() if 'attention' in r else torch.zeros(())
    if 'attention' in r:
        loss = loss + cfg.attention_weight * att
    contrast = r['pose_contrast'].mean() if 'pose_contrast' in r else torch.zeros(())
    if 'pose_contrast' in r:
        loss = loss + cfg.pose_contrast_weight * contrast
    return loss, {'mse': mse, 'dense': dense, 'attention': att, 'pose_contrast': contrast}
