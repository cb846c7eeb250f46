"""The training loop: end to end through the particle filter, with checkpoints and exact resume.

Outputs in ``out_dir``::

    checkpoint/model.safetensors + model.json   latest weights (see dmn_localizer.model.io)
    checkpoint/state.pt                         optimizer, RNG states, step, best, data position
                                                (plain tensors/dicts; loaded weights_only=True)
    best.safetensors + best.json                weights with the best validation loss
    final.safetensors + final.json              weights at the end of training
    train_log.csv, val_log.csv                  one row per log step / validation
    config.yaml                                 the resolved training config (a config file
                                                ``train --config`` takes; the process count
                                                in its first line, a comment)

Validation (every ``val_every`` steps, on fixed batches and fixed particles) reports the paper
loss and an image-use diagnostic: the same loss with the query images shuffled across the
batch's episodes and with the context images shuffled (poses kept). ``gap_query`` and
``gap_context`` (shuffled minus real) near 0 mean the model ignores the images. Two splits:
``val`` (paper protocol: one-step tracking, Gaussian 6 m / 30 deg, Nc = val_contexts) and
``near`` (nearest context forced in, 1.5 m / 15 deg, a quarter of the particles near the truth),
the go/no-go signal for image use early in training. On ``near`` the DMN also reports whether
its view keys depend on the relative pose: ``near_pose_contrast`` (:func:`pose_contrast_loss`
on fixed candidate poses) and ``near_pose_top1``, the share of episodes whose true pose scores
highest among 16 candidates for the nearest context (chance 1/16).

Data-parallel training: started by ``torchrun`` (``WORLD_SIZE`` > 1 in the environment), each
process wraps the model in ``DistributedDataParallel`` (gloo on CPU, nccl on CUDA, one GPU per
process by ``LOCAL_RANK``). ``batch_size`` is per process. Every process draws the same global
batch of ``batch_size * WORLD_SIZE`` episodes (same seeds: data is cheap next to the model) and
trains on its own share, so the averaged gradient is the single-process gradient of the global
batch, and all processes keep identical RNG and data-stream states: rank 0's checkpoint
resumes any number of processes. Only rank 0 validates, logs and writes files; the others wait
for its early-stopping decision.
"""
import csv
import io
import json
import logging
import math
import os
from pathlib import Path
import time

import numpy as np
import torch

from dmn_localizer.util.errors import FileFormatError, UserError
from dmn_localizer.filter import FilterConfig
from dmn_localizer.model.baselines import build_model
from dmn_localizer.model.config import DMNConfig
from dmn_localizer.model.io import (atomic_write_bytes, load_model, model_paths, save_model,
                                    state_to_safetensors_bytes, weights_id)
from dmn_localizer.training.config import TrainConfig
from dmn_localizer.filter.rollout import initial_particles, make_batch, PoseContrast, rollout
from dmn_localizer.util.device import select_device

logger = logging.getLogger(__name__)

TRAIN_FIELDS = ['step', 'samples', 'loss', 'mse', 'dense', 'attention', 'pose_contrast',
                'n_contexts', 'init_std_m', 'near_context_prob', 'samples_per_s', 'elapsed_s']
STATE_VERSION = 2  # 2: weights inside state.pt


def open_dataset(path):
    """Open a dataset folder (the data package's reader)."""
    from dmn_localizer.data.dataset import open_dataset as _open
    return _open(path)


class EpisodeStream:
    """Endless, resumable stream of episodes: epoch e iterates the dataset shuffled with seed
    ``seed + e``; the position is (epoch, episodes consumed in it)."""

    def __init__(self, dataset, n_contexts, steps, seed):
        self.dataset, self.n_contexts, self.steps, self.seed = dataset, n_contexts, steps, seed
        self.epoch, self.consumed, self._it = 0, 0, None

    def _open(self):
        self._it = iter(self.dataset.iter_episodes(self.n_contexts, self.steps,
                                                   seed=self.seed + self.epoch, shuffle=True,
                                                   loop=False))

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


def _filter_config(cfg):
    s = cfg.transition_std
    return FilterConfig(transition_std=(s[0], s[1], math.radians(s[2])), resample='soft',
                        soft_alpha=cfg.soft_alpha, resample_ess_ratio=1.0)


def _dense_kernel(cfg):
    return (cfg.dense_kernel_m, math.radians(cfg.dense_kernel_deg))


def _pose_contrast(cfg):
    """The pose-contrast loss's spec (also the validation diagnostic's)."""
    return PoseContrast(
        cfg.pose_contrast_poses,
        (cfg.pose_contrast_offset_std[0], math.radians(cfg.pose_contrast_offset_std[1])),
        (cfg.pose_contrast_kernel[0], math.radians(cfg.pose_contrast_kernel[1])),
        (cfg.attention_kernel_m, math.radians(cfg.attention_kernel_deg)))


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
    contrast = (_pose_contrast(cfg) if hasattr(model, 'attention_logits')
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
                            dense_kernel=_dense_kernel(cfg), pose_contrast=diag)
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


class _Csv:
    """Append-only CSV log that can be truncated back to a step (for resume)."""

    def __init__(self, path, fields=None):
        self.path, self.fields = Path(path), fields

    def truncate_after(self, step):
        if not self.path.exists():
            return
        with open(self.path, newline='') as f:
            rows = [r for r in csv.DictReader(f) if int(r['step']) <= step]
        if rows:
            self.fields = list(rows[0].keys())
        self._rewrite(rows)

    def _rewrite(self, rows):
        buf = io.StringIO()
        if self.fields:
            w = csv.DictWriter(buf, self.fields)
            w.writeheader()
            w.writerows(rows)
        atomic_write_bytes(self.path, buf.getvalue().encode())

    def append(self, row):
        new = not self.path.exists() or self.path.stat().st_size == 0
        if self.fields is None:
            self.fields = list(row.keys())
        with open(self.path, 'a', newline='') as f:
            w = csv.DictWriter(f, self.fields, extrasaction='ignore')
            if new:
                w.writeheader()
            w.writerow(row)


def _save_checkpoint(out, model, opt, step, best, bad, rng, gen, stream, cfg):
    """One atomic file, ``checkpoint/state.pt``, holds everything resume needs (weights
    included), so an interrupt at any moment leaves a consistent checkpoint. The weights are
    then also saved as ``checkpoint/model`` (safetensors + card) for eval and inspection."""
    ck = out / 'checkpoint'
    state = {'version': STATE_VERSION, 'step': step, 'best': best,
             'bad_validations': bad, 'optimizer': opt.state_dict(),
             'model_config': json.dumps(model.config.to_dict()),
             'model_state': {k: v.detach().cpu().clone() for k, v in
                             model.state_dict().items()},
             'torch_rng': gen.get_state(),
             'numpy_rng': json.dumps(rng.bit_generator.state),
             'stream': json.dumps(stream.state()), 'config': json.dumps(cfg.to_dict())}
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(ck / 'state.pt', buf.getvalue())
    save_model(model, ck / 'model', metadata={'step': step})


def _load_checkpoint(out, device):
    ck = out / 'checkpoint'
    path = ck / 'state.pt'
    if not path.exists():
        raise UserError(f'{path}: no checkpoint to resume from')
    try:
        state = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as exc:  # corrupted zip, forbidden pickle globals ...
        raise FileFormatError(path, f'not a readable checkpoint ({type(exc).__name__})') \
            from None
    if not isinstance(state, dict) or state.get('version') != STATE_VERSION:
        raise FileFormatError(path, 'unsupported checkpoint version')
    try:
        model = build_model(DMNConfig.from_dict(json.loads(state['model_config'])))
        model.load_state_dict(state['model_state'], strict=True)
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise FileFormatError(path, f'bad model in checkpoint ({str(exc).splitlines()[0]})') \
            from None
    model.model_id = weights_id(state_to_safetensors_bytes(model.state_dict()))
    return model.to(device), state


def _warm_start(model, path, device):
    """Copy the weights of the model at ``path`` into ``model`` (same architecture)."""
    source = load_model(path, device=device)
    if source.config != model.config:
        raise UserError(f'{path}: init_from model config differs from the training config\'s '
                        f'model ({source.config} != {model.config})')
    model.load_state_dict(source.state_dict())
    logger.info('warm start from %s (%s)', path, source.model_id)


class _Distributed:
    """The process group of a torchrun launch (or a single process)."""

    def __init__(self, device):
        self.world = int(os.environ.get('WORLD_SIZE', '1'))
        self.rank = int(os.environ.get('RANK', '0'))
        self.device = device
        if self.world > 1:
            import torch.distributed as dist
            if device.type == 'cuda':
                self.device = torch.device('cuda', int(os.environ.get('LOCAL_RANK', '0')))
                torch.cuda.set_device(self.device)
            dist.init_process_group('nccl' if device.type == 'cuda' else 'gloo')
            logger.info('data-parallel: rank %d of %d (%s)', self.rank, self.world,
                        dist.get_backend())

    @property
    def main(self):
        return self.rank == 0

    def wrap(self, module, find_unused=False):
        if self.world == 1:
            return module
        from torch.nn.parallel import DistributedDataParallel
        return DistributedDataParallel(
            module, device_ids=[self.device] if self.device.type == 'cuda' else None,
            find_unused_parameters=find_unused)

    def broadcast_flag(self, flag):
        """Rank 0's ``flag`` on every rank."""
        if self.world == 1:
            return flag
        import torch.distributed as dist
        t = torch.tensor([int(flag)], device=self.device)
        dist.broadcast(t, 0)
        return bool(t.item())

    def close(self):
        if self.world > 1:
            import torch.distributed as dist
            dist.barrier()   # leave together: a rank leaving while rank 0 still writes aborts
            dist.destroy_process_group()


class _TrainStep(torch.nn.Module):
    """The model's forward for DistributedDataParallel: one rollout (its gradient hooks sync
    the DMN's parameters, which are this module's)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, batch, particles, fcfg, generator, kwargs):
        return rollout(self.model, batch, particles, fcfg, generator, **kwargs)


def train(cfg: TrainConfig, out_dir, resume=False, train_dataset=None, val_dataset=None,
          progress=True):
    """Train (data-parallel under torchrun, see the module docstring); see :func:`_train`."""
    device = select_device(cfg.device)
    group = _Distributed(device)
    try:
        return _train(cfg, out_dir, resume, train_dataset, val_dataset,
                      progress and group.main, group)
    finally:
        group.close()


def _train(cfg: TrainConfig, out_dir, resume, train_dataset, val_dataset, progress, group):
    """Train a DMN; returns a summary dict (steps, best validation loss, paths).

    ``train_dataset``/``val_dataset`` default to ``open_dataset(cfg.train_data/val_data)``.
    With ``resume``, continues from ``out_dir/checkpoint`` exactly (same batches, particles
    and optimizer state as an uninterrupted run).
    """
    out = Path(out_dir)
    if group.main:
        out.mkdir(parents=True, exist_ok=True)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = group.device
    train_dataset = train_dataset or open_dataset(cfg.train_data)
    val_dataset = val_dataset or open_dataset(cfg.val_data)

    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    stream = EpisodeStream(train_dataset, cfg.context_pool, cfg.steps, cfg.seed)
    step, best, bad = 0, float('inf'), 0
    if resume:
        model, state = _load_checkpoint(out, device)
        model.train()
        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        opt.load_state_dict(state['optimizer'])
        step, best, bad = int(state['step']), float(state['best']), int(state['bad_validations'])
        rng.bit_generator.state = json.loads(state['numpy_rng'])
        gen.set_state(state['torch_rng'])
        stream.restore(json.loads(state['stream']))
        logger.info('resumed from step %d (best val %.5f)', step, best)
    else:
        model = build_model(cfg.model_config()).to(device).train()
        if cfg.init_from:
            _warm_start(model, cfg.init_from, device)
        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    import yaml
    # without attention (an ablation) the query key network gets no gradient
    step_module = group.wrap(_TrainStep(model),
                             find_unused=model.config.attention == 'uniform')
    if group.main:
        atomic_write_bytes(out / 'config.yaml', (
            f'# the resolved training config of this run ({group.world} process'
            f'{"es" if group.world > 1 else ""}); `dmn-localizer train --config` takes it\n'
            + yaml.safe_dump(json.loads(json.dumps(cfg.to_dict())), sort_keys=False)).encode())
        train_log = _Csv(out / 'train_log.csv', TRAIN_FIELDS)
        val_log = _Csv(out / 'val_log.csv')
        train_log.truncate_after(step if resume else -1)   # a fresh run starts fresh logs
        val_log.truncate_after(step if resume else -1)
        splits = build_validation(cfg, val_dataset, device)
    fcfg = _filter_config(cfg)
    scale = model.config.coord_scale_m

    def run_validation():
        nonlocal best, bad
        v = validate(model, cfg, splits)
        improved = v['val_mse'] < best
        if improved:
            best, bad = v['val_mse'], 0
            save_model(model, out / 'best', metadata={'step': step, 'validation': v,
                                                      'train_config': cfg.to_dict()})
        else:
            bad += 1
        val_log.append(dict({'step': step}, **{k: f'{x:.6g}' for k, x in v.items()}))
        logger.info('step %d: val %.4f (query gap %+.4f, context gap %+.4f) near %.4f '
                    '(query gap %+.4f)%s', step, v['val_mse'], v['val_mse_gap_query'],
                    v['val_mse_gap_context'], v['near_mse'],
                    v.get('near_dense_gap_query', v['near_mse_gap_query']),  # regression
                    ' *' if improved else '')
        return v

    if step == 0 and not resume and group.main:
        run_validation()
        _save_checkpoint(out, model, opt, step, best, bad, rng, gen, stream, cfg)
    try:
        from tqdm import tqdm
        bar = tqdm(total=cfg.max_steps, initial=step, disable=not progress, unit='step',
                   dynamic_ncols=True)
    except ImportError:  # pragma: no cover
        bar = None
    t0 = time.monotonic()
    window_t, window_n = time.monotonic(), 0
    stopped_early = False
    while step < cfg.max_steps:
        std, near_p = schedule(cfg, step)
        n_ctx = int(rng.integers(cfg.contexts[0], cfg.contexts[1] + 1))
        batch = make_batch(stream.take(cfg.batch_size * group.world), n_ctx, rng, near_p,
                           cfg.steps, device)
        draw = torch.rand(len(batch), generator=gen)
        particles = initial_particles(batch, cfg.particles, gen, global_prob=cfg.global_prob,
                                      draw=draw,
                                      init_std=std, perturb_mean=cfg.perturb_belief_mean,
                                      near_truth_fraction=cfg.near_truth_fraction,
                                      near_truth_std=cfg.near_truth_std,
                                      decoy_fraction=cfg.decoy_fraction,
                                      decoy_std=cfg.decoy_std).to(device)
        # this process's share of the global batch (all of it in a single process)
        keep = (draw >= cfg.global_prob).float()[:, None]
        n_keep = keep.sum()                                 # over the global batch
        if group.world > 1:
            share = slice(group.rank * cfg.batch_size, (group.rank + 1) * cfg.batch_size)
            batch, particles, keep = (batch.part(group.rank, group.world), particles[share],
                                      keep[share])
        r = step_module(batch, particles, fcfg, gen, dict(
            scale=scale, yaw_weight=cfg.yaw_weight,
            dense_kernel=_dense_kernel(cfg) if cfg.dense_weight else None,
            attention_kernel=((cfg.attention_kernel_m, math.radians(cfg.attention_kernel_deg))
                              if cfg.attention_weight else None),
            pose_contrast=_pose_contrast(cfg) if cfg.pose_contrast_weight else None))
        if cfg.mse_on_global or cfg.global_prob == 0:
            mse = r['mse'].mean()
        else:  # the paper loss only on tracking-belief episodes (normalised over the global
            # batch; the data-parallel gradient average divides by the process count)
            keep = keep.to(r['mse'])
            mse = group.world * (r['mse'] * keep).sum() / (
                n_keep * r['mse'].shape[1]).clamp_min(1.0)
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
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        step += 1
        window_n += len(batch) * group.world
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f'{loss.item():.4f}', refresh=False)
        if group.main and (step % cfg.log_every == 0 or step == cfg.max_steps):
            now = time.monotonic()
            train_log.append({'step': step, 'samples': step * cfg.batch_size * group.world,
                              'loss': f'{loss.item():.6g}', 'mse': f'{mse.item():.6g}',
                              'dense': f'{dense.item():.6g}', 'attention': f'{att.item():.6g}',
                              'pose_contrast': f'{contrast.item():.6g}',
                              'n_contexts': n_ctx,
                              'init_std_m': f'{std[0]:.3g}', 'near_context_prob': f'{near_p:.3g}',
                              'samples_per_s': f'{window_n / max(now - window_t, 1e-9):.4g}',
                              'elapsed_s': f'{now - t0:.1f}'})
            window_t, window_n = now, 0
        out_of_time = group.broadcast_flag(
            cfg.max_minutes > 0 and time.monotonic() - t0 >= 60.0 * cfg.max_minutes)
        if step % cfg.val_every == 0 or step == cfg.max_steps or out_of_time:
            if group.main:
                run_validation()
                _save_checkpoint(out, model, opt, step, best, bad, rng, gen, stream, cfg)
            if group.broadcast_flag(bad >= cfg.patience):
                logger.info('early stop at step %d: no improvement in %d validations', step,
                            bad)
                stopped_early = True
                break
        if out_of_time:
            logger.info('time budget of %g min reached at step %d', cfg.max_minutes, step)
            break
    if bar is not None:
        bar.close()
    if not group.main:
        return {'steps': step, 'best_val_mse': best, 'stopped_early': stopped_early,
                'best': None, 'final': None, 'out': str(out)}
    save_model(model, out / 'final', metadata={'step': step, 'train_config': cfg.to_dict(),
                                               'processes': group.world})
    best_path = model_paths(out / 'best')[0]
    return {'steps': step, 'best_val_mse': best, 'stopped_early': stopped_early,
            'best': str(best_path), 'final': str(model_paths(out / 'final')[0]),
            'out': str(out)}
