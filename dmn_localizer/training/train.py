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

The parts, one module each: what a step trains on (:mod:`~dmn_localizer.training.batches`:
episode stream, curriculum, batch and initial particles), the loss
(:mod:`~dmn_localizer.training.losses`), validation and its image-use diagnostic
(:mod:`~dmn_localizer.training.validation`), checkpoints and resume
(:mod:`~dmn_localizer.training.checkpoint`), the log files
(:mod:`~dmn_localizer.training.logs`) and data-parallel training under ``torchrun``
(:mod:`~dmn_localizer.training.distributed`).
"""
import logging
from pathlib import Path
import time

import numpy as np
import torch

from dmn_localizer.data.dataset import open_dataset
from dmn_localizer.model.io import model_paths, save_model
from dmn_localizer.training import checkpoint
from dmn_localizer.training.batches import draw_step, EpisodeStream
from dmn_localizer.training.config import TrainConfig
from dmn_localizer.training.distributed import Distributed, TrainStep
from dmn_localizer.training.logs import (bar_total, CsvLog, TRAIN_FIELDS, train_row,
                                         write_resolved_config)
from dmn_localizer.training.losses import filter_config, rollout_options, training_loss
from dmn_localizer.training.validation import build_validation, validate
from dmn_localizer.util.device import select_device

logger = logging.getLogger(__name__)


def train(cfg: TrainConfig, out_dir, resume=False, train_dataset=None, val_dataset=None,
          progress=True):
    """Train (data-parallel under torchrun, see :mod:`~dmn_localizer.training.distributed`);
    see :func:`_train`."""
    device = select_device(cfg.device)
    group = Distributed(device)
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
    model, opt, step, best, bad = checkpoint.start(cfg, out, device, resume, rng, gen, stream)
    # without attention (an ablation) the query key network gets no gradient
    step_module = group.wrap(TrainStep(model), find_unused=model.config.attention == 'uniform')
    if group.main:
        write_resolved_config(out, cfg, group.world)
        train_log = CsvLog(out / 'train_log.csv', TRAIN_FIELDS)
        val_log = CsvLog(out / 'val_log.csv')
        train_log.truncate_after(step if resume else -1)   # a fresh run starts fresh logs
        val_log.truncate_after(step if resume else -1)
        splits = build_validation(cfg, val_dataset, device)
    fcfg = filter_config(cfg)
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

    def save_checkpoint():
        checkpoint.save_checkpoint(out, model, opt, step, best, bad, rng, gen, stream, cfg)

    if step == 0 and not resume and group.main:
        run_validation()
        save_checkpoint()
    try:
        from tqdm import tqdm
        bar = tqdm(total=bar_total(cfg.max_steps), initial=step, disable=not progress, unit='step',
                   dynamic_ncols=True)
    except ImportError:  # pragma: no cover
        bar = None
    t0 = time.monotonic()
    window_t, window_n = time.monotonic(), 0
    stopped_early = False
    while step < cfg.max_steps:
        sb = draw_step(cfg, step, stream, rng, gen, device, group.rank, group.world)
        r = step_module(sb.batch, sb.particles, fcfg, gen, rollout_options(cfg, scale))
        loss, terms = training_loss(cfg, r, sb.keep, sb.n_keep, group.world)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        step += 1
        window_n += len(sb.batch) * group.world
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f'{loss.item():.4f}', refresh=False)
        if group.main and (step % cfg.log_every == 0 or step == cfg.max_steps):
            now = time.monotonic()
            train_log.append(train_row(step, step * cfg.batch_size * group.world, loss, terms,
                                       sb, window_n / max(now - window_t, 1e-9), now - t0))
            window_t, window_n = now, 0
        out_of_time = group.broadcast_flag(
            cfg.max_minutes > 0 and time.monotonic() - t0 >= 60.0 * cfg.max_minutes)
        if step % cfg.val_every == 0 or step == cfg.max_steps or out_of_time:
            if group.main:
                run_validation()
                save_checkpoint()
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
