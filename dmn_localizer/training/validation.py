"""Validation of a training run: fixed batches and particles, the paper loss and the
image-use diagnostic.

Validation (every ``val_every`` steps, on fixed batches and fixed particles) reports the paper
loss and an image-use diagnostic: the same loss with the query images shuffled across the
batch's episodes and with the context images shuffled (poses kept). ``gap_query`` and
``gap_context`` (shuffled minus real) near 0 mean the model ignores the images. Two splits:
``val`` (paper protocol: one-step tracking, Gaussian 6 m / 30 deg, Nc = val_contexts) and
``near`` (nearest context forced in, 1.5 m / 15 deg, a quarter of the particles near the truth),
the go/no-go signal for image use early in training. On ``near`` the DMN also reports whether
its view keys depend on the relative pose: ``near_pose_contrast`` (:func:`pose_contrast_loss`
on fixed candidate poses) and ``near_pose_top1``, the share of episodes whose true pose scores
highest among 16 candidates for the nearest context (chance 1/16). With ``decoy_fraction`` >
0 a third split, ``decoy`` (the near batches, half the particles on decoys), where only the
images can tell the truth from the decoys.
"""
import numpy as np
import torch

from dmn_localizer.filter import FilterConfig
from dmn_localizer.filter.rollout import initial_particles, make_batch, rollout
from dmn_localizer.training.config import TrainConfig
from dmn_localizer.training.losses import dense_kernel, pose_contrast
from dmn_localizer.util.errors import UserError


def build_validation(cfg: TrainConfig, dataset, device):
    """Fixed validation batches and particles: {split: [(Batch, particles), ...]}."""
    rng = np.random.default_rng(cfg.seed + 7919)
    gen = torch.Generator().manual_seed(cfg.seed + 7919)
    episodes = []
    for ep in dataset.iter_episodes(cfg.context_pool, 1, seed=cfg.seed + 7919, shuffle=True,
                                    loop=False):
        episodes.append(ep)
        if len(episodes) >= cfg.val_episodes:
            break
    if len(episodes) < 2:
        raise UserError('the validation dataset needs at least 2 episodes')
    splits = {'val': [], 'near': []}
    bs = max(2, cfg.val_batch_size)
    for i in range(0, len(episodes), bs):
        chunk = episodes[i:i + bs]
        if len(chunk) < 2:
            break
        b = make_batch(chunk, cfg.val_contexts, rng, 0.0, 1, device)
        p = initial_particles(b, cfg.particles, gen, init_std=cfg.val_init_std,
                              perturb_mean=cfg.perturb_belief_mean).to(device)
        splits['val'].append((b, p))
        b = make_batch(chunk, cfg.val_contexts, rng, 1.0, 1, device)
        p = initial_particles(b, cfg.particles, gen, init_std=(1.5, 15.0),
                              perturb_mean=cfg.perturb_belief_mean,
                              near_truth_fraction=0.25).to(device)
        splits['near'].append((b, p))
        if cfg.decoy_fraction > 0:  # where only the images can tell truth from decoys
            p = initial_particles(b, cfg.particles, gen, init_std=(1.5, 15.0),
                                  perturb_mean=cfg.perturb_belief_mean,
                                  near_truth_fraction=0.25, decoy_fraction=0.5,
                                  decoy_std=cfg.decoy_std).to(device)
            splits.setdefault('decoy', []).append((b, p))
    return splits


@torch.no_grad()
def validate(model, cfg: TrainConfig, splits):
    """Validation losses and the image-use diagnostic (see module docstring)."""
    was_training = model.training
    model.eval()
    fcfg = FilterConfig(resample='none')
    # relative-pose diagnostic: the same candidate poses at every validation
    contrast_gen = torch.Generator().manual_seed(cfg.seed + 104729)
    contrast = (pose_contrast(cfg) if hasattr(model, 'attention_logits')
                and not getattr(model, 'regresses_pose', False) else None)
    out = {}
    for name, items in splits.items():
        sums = {}
        for b, p in items:
            variants = {'': b,
                        '_shuf_query': b.with_images(query_images=b.query_images.roll(1, 0)),
                        '_shuf_context': b.with_images(
                            context_images=b.context_images.roll(1, 0))}
            for suffix, bb in variants.items():
                # the relative-pose diagnostic rides on the near split's real-image rollout
                # (one update, no resampling: the filter draws nothing from the generator)
                diag = contrast if (name, suffix) == ('near', '') else None
                r = rollout(model, bb, p, fcfg, contrast_gen if diag else None,
                            scale=model.config.coord_scale_m, yaw_weight=cfg.yaw_weight,
                            dense_kernel=dense_kernel(cfg), pose_contrast=diag)
                for key in [k for k in ('mse', 'dense', 'pose_contrast', 'pose_top1')
                            if k in r]:  # regression: no dense
                    key_name = key if key.startswith('pose') else f'{key}{suffix}'
                    sums[f'{name}_{key_name}'] = (sums.get(f'{name}_{key_name}', 0.0)
                                                  + r[key].sum().item())
        n = sum(len(b) for b, _ in items)
        vals = {k: v / n for k, v in sums.items()}
        for key in [k for k in ('mse', 'dense') if f'{name}_{k}' in vals]:
            vals[f'{name}_{key}_gap_query'] = (vals[f'{name}_{key}_shuf_query']
                                               - vals[f'{name}_{key}'])
            vals[f'{name}_{key}_gap_context'] = (vals[f'{name}_{key}_shuf_context']
                                                 - vals[f'{name}_{key}'])
        out.update(vals)
    model.train(was_training)
    return out
