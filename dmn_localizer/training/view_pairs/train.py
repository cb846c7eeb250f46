"""The view-pair recipe's training loop, its log and its curve."""
import dataclasses
from dataclasses import asdict
import logging
import math
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from tqdm import tqdm

from dmn_localizer.model.config import DMNConfig
from dmn_localizer.model.io import atomic_write_json, load_model, save_model
from dmn_localizer.training.logs import bar_total, write_csv
from dmn_localizer.training.view_pairs.config import RECIPE, ViewPairConfig
from dmn_localizer.training.view_pairs.filter_term import FilterTerm
from dmn_localizer.training.view_pairs.loss import training_loss
from dmn_localizer.training.view_pairs.sampling import sample_batch
from dmn_localizer.training.view_pairs.validation import (pose_ranking, protocol_success,
                                                          VAL_CANDIDATES, validation_set)
from dmn_localizer.training.view_pairs.worlds import load_view_worlds, predict_overlap_depth
from dmn_localizer.util.atomic import write_text
from dmn_localizer.util.device import select_device
from dmn_localizer.util.errors import UserError

log = logging.getLogger(__name__)


def _schedule(cfg, step):
    a = min(1.0, step / max(1, cfg.curriculum_steps))
    km = cfg.kernel_start[0] + a * (cfg.kernel_end[0] - cfg.kernel_start[0])
    kd = cfg.kernel_start[1] + a * (cfg.kernel_end[1] - cfg.kernel_start[1])
    return km, math.radians(kd)


def _lr(cfg, step, minutes):
    """Cosine decay from lr to lr_end over max_steps (or max_minutes, whichever ends first)."""
    a = step / max(1, cfg.max_steps)
    if cfg.max_minutes:
        a = max(a, minutes / cfg.max_minutes)
    a = min(1.0, a)
    return cfg.lr_end + 0.5 * (cfg.lr - cfg.lr_end) * (1 + math.cos(math.pi * a))


def plot_curve(rows, path):
    """PNG of the validation metrics against wall time (minutes)."""
    from dmn_localizer.util.figures import figure, save_png
    val = [r for r in rows if r.get('pose_top1') not in (None, '')]
    if not val:
        return
    t = [float(r['minutes']) for r in val]
    fig = figure(figsize=(10, 3.8))
    ax = fig.subplots(1, 2)
    ax[0].plot(t, [100 * float(r['pose_top1']) for r in val], label='pose top-1')
    ax[0].plot(t, [100 * float(r['pose_top1_wrong']) for r in val],
               label='pose top-1, wrong query')
    ax[0].axhline(100 / VAL_CANDIDATES, color='grey', ls=':', label='chance')
    ev = [r for r in val if r.get('val_success') not in (None, '')]
    if ev:
        ax[0].plot([float(r['minutes']) for r in ev],
                   [100 * float(r['val_success']) for r in ev], 'o-',
                   label='val global success@5')
    ax[0].set_xlabel('wall time (min)')
    ax[0].set_ylabel('%')
    ax[0].legend(fontsize=8)
    if any(float(r['depth_error']) for r in val):
        ax[1].plot(t, [float(r['depth_error']) for r in val], label='depth |log error|')
    if any(float(r['loss']) for r in val):
        ax[1].plot(t, [float(r['loss']) for r in val], label='train cross-entropy')
    if any(r.get('rollout_loss') not in (None, '') for r in val):
        ax[1].plot(t, [float(r['rollout_loss']) for r in val], label='train filter dense loss')
    ax[1].set_xlabel('wall time (min)')
    ax[1].legend(fontsize=8)
    save_png(fig, path, dpi=90)


FIELDS = ['step', 'minutes', 'loss', 'depth_error', 'pose_top1', 'pose_top1_wrong',
          'top_error_m', 'top_error_deg', 'val_success', 'val_success_wrong', 'val_rmse',
          'rollout_loss']


def validation_key(row):
    """How a validation row ranks for ``best`` (higher is better): the protocol's global
    success@5 where it was measured, then the candidate top-1 (``log.csv``'s values, as
    numbers or strings)."""
    return (float(row['val_success']) if row.get('val_success') not in (None, '') else -1.0,
            float(row['pose_top1']))


def train_view_pairs(cfg: ViewPairConfig, out_dir, progress=True):
    """Train; returns a summary dict. ``best`` is the model with the highest validation
    global success@5 at the protocol evaluations (every ``eval_every`` steps and at the end),
    or, before the first, with the highest ``pose_top1``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    device = select_device(cfg.device)
    if device.type == 'cpu' and cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    probe = DMNConfig(architecture='aligned', **{k: v for k, v in cfg.model.items()
                                                 if k != 'architecture'})
    columns = probe.image_size // 2
    # the candidate batches need the training views in memory; the end-to-end term streams
    train = (load_view_worlds(cfg.train_data, columns, cfg.max_train_worlds or None, progress)
             if cfg.uses_pairs else None)
    val = load_view_worlds(cfg.val_data, columns, None, progress)
    mcfg = cfg.model_config((train or val).hfov_deg)
    if cfg.init_from:
        model = load_model(cfg.init_from, device=device, architecture='aligned')
        # the camera is the data's, not the source model's, and the context pooling is the
        # run's: only the network must agree
        if dataclasses.replace(model.config, hfov_deg=mcfg.hfov_deg,
                               context_pooling=mcfg.context_pooling) != mcfg:
            raise UserError(f'{cfg.init_from}: its config differs from the run\'s model '
                            f'({model.config} != {mcfg})')
        model.config = mcfg
        model.set_camera(mcfg.hfov_deg)
    else:
        from dmn_localizer.model import build_model
        model = build_model(mcfg).to(device)
    write_text(out / 'config.yaml', yaml.safe_dump(asdict(cfg), sort_keys=False))
    for worlds in (train, val):
        if worlds is not None:
            predict_overlap_depth(worlds, model, device)
    term = FilterTerm(cfg, device) if cfg.rollout_weight else None
    vset = validation_set(val, cfg.val_queries, cfg.seed + 1, cfg.min_overlap)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    rows, best, best_key = [], None, None
    start = time.perf_counter()
    card = dict(recipe=RECIPE, train_data=cfg.train_data,
                train_worlds=train.n_worlds if train else None, val_data=cfg.val_data)

    def validate(step, loss, derr, protocol, rollout_loss):
        model.eval()
        top1, em, ed = pose_ranking(model, val, vset, device)
        top1w, _, _ = pose_ranking(model, val, vset, device, wrong_query=True)
        row = dict(step=step, minutes=round((time.perf_counter() - start) / 60, 3),
                   loss=round(loss, 5), depth_error=round(derr, 5), pose_top1=top1,
                   pose_top1_wrong=top1w, top_error_m=round(em, 3), top_error_deg=round(ed, 2),
                   val_success='', val_success_wrong='', val_rmse='',
                   rollout_loss=round(rollout_loss, 5) if term else '')
        if protocol and cfg.eval_episodes > 0:
            s, r, sw = protocol_success(model, cfg.val_data, cfg.eval_episodes, device,
                                        queries=cfg.eval_queries)
            row.update(val_success=s, val_success_wrong=sw, val_rmse=round(r, 3))
        model.train()
        rows.append(row)
        write_csv(out / 'log.csv', FIELDS, rows)
        plot_curve(rows, out / 'curve.png')
        meta = dict(card, steps=step, minutes=row['minutes'], validation=row)
        save_model(model, out / 'last', metadata=meta)
        return row, meta

    model.train()
    bar = tqdm(total=bar_total(cfg.max_steps), desc='view pairs', unit='step',
               disable=not progress)
    step, loss_avg, derr_avg, roll_avg = 0, 0.0, 0.0, 0.0
    interrupted = False
    try:
        while step < cfg.max_steps:
            if cfg.max_minutes and time.perf_counter() - start > 60 * cfg.max_minutes:
                log.info('wall-clock budget of %.1f min reached', cfg.max_minutes)
                break
            for g in opt.param_groups:
                g['lr'] = _lr(cfg, step, (time.perf_counter() - start) / 60)
            loss = ce = derr = roll = torch.zeros(())
            if cfg.uses_pairs:
                batch = sample_batch(train, cfg, rng)
                teach = rng.random() < 1.0 - step / max(1, cfg.true_depth_steps)
                loss, ce, derr = training_loss(model, train, batch, _schedule(cfg, step), cfg,
                                               device, true_depth=teach)
            if term is not None:
                roll = term.loss(model)
                loss = loss + cfg.rollout_weight * roll
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            step += 1
            k = 0.98 if step > 1 else 0.0
            loss_avg = k * loss_avg + (1 - k) * ce.item()
            derr_avg = k * derr_avg + (1 - k) * derr.item()
            roll_avg = k * roll_avg + (1 - k) * roll.item()
            bar.update(1)
            bar.set_postfix(ce=f'{loss_avg:.3f}', depth=f'{derr_avg:.3f}',
                            **({'filter': f'{roll_avg:.3f}'} if term else {}),
                            **({'minutes': f'{(time.perf_counter() - start) / 60:.1f}'
                                           f'/{cfg.max_minutes:g}'} if cfg.max_minutes else {}))
            if step % cfg.val_every == 0:
                protocol = cfg.eval_every > 0 and step % cfg.eval_every == 0
                row, meta = validate(step, loss_avg, derr_avg, protocol, roll_avg)
                key = validation_key(row)
                if best_key is None or key >= best_key:
                    best_key, best = key, row
                    save_model(model, out / 'best', metadata=meta)
    except KeyboardInterrupt:
        interrupted = True
        log.warning('interrupted at step %d: writing the final model', step)
    bar.close()
    row, meta = validate(step, loss_avg, derr_avg, cfg.eval_episodes > 0, roll_avg)
    save_model(model, out / 'final', metadata=meta)
    key = validation_key(row)
    if best_key is None or key >= best_key:
        best = row
        save_model(model, out / 'best', metadata=meta)
    summary = dict(steps=step, minutes=row['minutes'], final=row, best=best,
                   interrupted=interrupted)
    atomic_write_json(out / 'summary.json', summary)
    return summary
