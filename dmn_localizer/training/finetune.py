"""Fine-tune a DMN on a user's recordings: bags -> dataset -> training -> a model and a card.

The recordings come in groups, one per place (see :mod:`dmn_localizer.data.from_bags`);
whole places are kept apart for validation (``val_share`` of the groups, at least one), so no
validation view is a neighbour of a training view. Both shares become datasets
(``OUT/data/train``, ``OUT/data/val``), the model is evaluated on the validation places before
(zero-shot) and after training with the paper's protocol (global success@5, tracking rmse@5,
and the same with the query images of other episodes: the wrong-image twins, which show
whether the images are used), and trained for a time budget ``minutes`` in ``OUT/run``: a DMN
with its own recipe (the model card's training config), an aligned model with the view-pair
recipe at fine-tuning settings (:data:`ALIGNED_FINETUNE`; which views overlap is judged on the
starting model's predicted depths, unless the bags carry an RGB-D camera's depth topic
(``data_kw['depth_topic']``): then its measured column depths judge the overlaps where they
read something and supervise the depth head), then for ``filter_share`` of the budget end to
end through the particle filter from its best model (:data:`ALIGNED_FILTER`, in
``OUT/run_filter``). For aligned models the card
also holds the tie-safe top-1 of the true pose among 64 candidates and its wrong-image twin.
``OUT/model`` is the best validated model (also after Ctrl-C: the best one so far),
``OUT/card.json`` and ``OUT/card.md`` hold the figures side by side, the data counts, the wall
time and the replay command to try it, and ``OUT/curve.png`` the validation curve over training
(the validation loss of a DMN, the candidate top-1 and its twin of an aligned model; its
end-to-end stage's in ``OUT/curve_filter.png``).
"""
import csv
import logging
import math
import time
from pathlib import Path

import numpy as np

from dmn_localizer.evaluation.intervals import percent_with_interval
from dmn_localizer.training.logs import UNBOUNDED_STEPS
from dmn_localizer.util.errors import UserError
from dmn_localizer.util.atomic import write_bytes, write_json, write_text

log = logging.getLogger(__name__)

EVAL_KEYS = ('success@5', 'success@5_shuffled_query', 'rmse@5', 'rmse@5_shuffled_query')
ARCHITECTURES = ('dmn', 'aligned')
# the view-pair recipe's settings for fine-tuning an aligned model (the second stage of
# config/train_mazes_aligned_attention.yaml: fine kernel, low learning rate; no true depths)
ALIGNED_FINETUNE = dict(kernel_start=(0.5, 8.0), kernel_end=(0.5, 8.0), curriculum_steps=1,
                        lr=3e-4, lr_end=3e-5, true_depth_steps=0, eval_every=0,
                        eval_episodes=0, val_every=250, threads=1)
# the end-to-end stage that follows it for ``filter_share`` of the budget (the recipe of
# config/train_mazes_aligned_filter.yaml: the filter's dense loss through rollouts on random
# query views, and the match term; contexts summed); validated by the protocol as well
ALIGNED_FILTER = dict(pair_weight=0.0, depth_weight=0.0, rollout_weight=1.0,
                      rollout_match_weight=3.0, rollout_queries='random', lr=2e-4, lr_end=1e-5,
                      eval_queries='random')
RUNS = ('run', 'run_filter')   # OUT/ folders of the view-pair and the end-to-end stage


def split_groups(groups, val_share, seed=0):
    """(train groups, validation groups): ``val_share`` of the places (at least one, at most
    all but one), drawn with ``seed``; UserError for fewer than two places."""
    names = sorted(groups)
    if len(names) < 2:
        raise UserError('finetune keeps whole places apart for validation: record at least two '
                        'places (give each its own BAG folder or --group)')
    n_val = min(len(names) - 1, max(1, int(round(val_share * len(names)))))
    val = set(np.random.default_rng(seed).choice(names, n_val, replace=False).tolist())
    return ({n: groups[n] for n in names if n not in val},
            {n: groups[n] for n in names if n in val})


def _dataset(groups, which, out, image_topic, pose_topic, image_size, data_kw):
    from dmn_localizer.data.from_bags import build_from_bags
    try:
        return build_from_bags(groups, image_topic, pose_topic, str(out), image_size=image_size,
                               split='train' if which == 'training' else 'val', **data_kw)
    except UserError as exc:
        raise UserError(f'the {which} places ({", ".join(groups)}) cannot be used: {exc}; '
                        'record longer runs through each place (each 40 m x 40 m area needs '
                        'its context views plus runs of consecutive pose-paired frames)') from None


def _evaluate(model, data, episodes, seed, particles=None):
    from dmn_localizer.data.dataset import open_dataset
    from dmn_localizer.evaluation.protocol import EvalConfig, evaluate, load_episodes
    cfg = EvalConfig(seed=seed, **({} if particles is None else
                                   dict(k_global=particles[0], k_tracking=particles[1])))
    eps = load_episodes(open_dataset(data), episodes, cfg.contexts, cfg.steps, seed)
    method = model.config.architecture
    r = evaluate({method: model}, eps, [method], cfg)[method]
    return dict({k: r[k] for k in EVAL_KEYS}, episodes=len(eps))


def _view_pair_config(model, model_path, train_data, val_data, minutes, seed, max_steps,
                      val_every, threads, pool):
    """The view-pair recipe that fine-tunes the aligned ``model`` (:data:`ALIGNED_FINETUNE`)."""
    import dataclasses
    from dmn_localizer.training.view_pairs import ViewPairConfig
    net = {k: v for k, v in dataclasses.asdict(model.config).items()
           if k not in ('architecture', 'hfov_deg')}
    over = dict(ALIGNED_FINETUNE, train_data=str(train_data), val_data=str(val_data),
                model=net, init_from=str(model_path), seed=seed, max_minutes=float(minutes),
                max_steps=int(max_steps if max_steps is not None else UNBOUNDED_STEPS),
                contexts=min(4, int(pool)))
    if val_every:
        over['val_every'] = int(val_every)
    if threads:
        over['threads'] = int(threads)
    return ViewPairConfig(**over)


def _filter_config(pairs, init_from, minutes, episodes):
    """The end-to-end stage (:data:`ALIGNED_FILTER`) after the view-pair stage ``pairs``,
    from the model ``init_from``, for ``minutes``."""
    import dataclasses
    from dmn_localizer.training.view_pairs import ViewPairConfig
    over = dict(dataclasses.asdict(pairs), **ALIGNED_FILTER)
    over.update(model=dict(pairs.model, context_pooling='sum'), init_from=str(init_from),
                max_minutes=float(minutes), eval_every=pairs.val_every,
                eval_episodes=int(episodes))
    return ViewPairConfig(**over)


def _ranking_queries(model, data, cfg):
    """The view-pair recipe's validation queries of ``data``, as its training picks and logs
    them (overlaps judged on ``model``'s predicted depths): (worlds, query set). Both the
    starting and the fine-tuned model are ranked on these same queries."""
    import torch
    from dmn_localizer.training.view_pairs import validation_set
    from dmn_localizer.training.view_pairs.worlds import load_view_worlds, predict_overlap_depth
    worlds = load_view_worlds(str(data), model.config.image_size // 2, progress=False)
    predict_overlap_depth(worlds, model, torch.device('cpu'))
    return worlds, validation_set(worlds, cfg.val_queries, cfg.seed + 1, cfg.min_overlap)


def _pose_ranking(model, queries):
    """Tie-safe top-1 of the true pose among candidates, and its wrong-image twin, on
    ``queries`` (:func:`_ranking_queries`)."""
    import torch
    from dmn_localizer.training.view_pairs import pose_ranking
    device = torch.device('cpu')
    worlds, vset = queries
    top1, err_m, err_deg = pose_ranking(model, worlds, vset, device)
    wrong, _, _ = pose_ranking(model, worlds, vset, device, wrong_query=True)
    return dict(pose_top1=top1, pose_top1_wrong=wrong, pose_queries=len(vset['world']),
                top_error_m=round(err_m, 3), top_error_deg=round(err_deg, 2))


def _depth_error(model, queries, batch=256):
    """Median |log error| of ``model``'s predicted column depths on the held-out views where
    a depth camera measured them (the worlds of :func:`_ranking_queries`), and the number of
    such columns; None without measured depths."""
    import torch
    from dmn_localizer.model.preprocess import images_to_tensor
    worlds = queries[0]
    true = worlds.depth.reshape(-1, worlds.depth.shape[-1])
    known = np.isfinite(true)
    if not known.any():
        return None
    images = worlds.images.reshape((-1,) + worlds.images.shape[2:])
    rows = np.flatnonzero(known.any(1))
    errors = []
    with torch.no_grad():
        for i in range(0, len(rows), batch):
            r = rows[i:i + batch]
            _, depth, _ = model.encode_columns(images_to_tensor(images[r], torch.device('cpu')))
            ok = known[r]
            errors.append(np.abs(np.log(depth.numpy()[ok]) - np.log(true[r][ok])))
    errors = np.concatenate(errors)
    return dict(depth_error=round(float(np.median(errors)), 4), depth_columns=int(errors.size))


def _copy_model(src, dst):
    """Copy a saved model (weights + card) atomically."""
    from dmn_localizer.model.io import model_paths
    for a, b in zip(model_paths(src), model_paths(dst)):
        write_bytes(b, Path(a).read_bytes())


def _validation_rows(run, name='val_log.csv'):
    path = Path(run) / name
    if not path.exists():
        return []
    with open(path, newline='') as f:
        return list(csv.DictReader(f))


def _curve(rows, path):
    from dmn_localizer.util.figures import figure, save_png
    fig = figure(figsize=(6, 3.5))
    ax = fig.add_subplot(111)
    steps = [int(r['step']) for r in rows]
    ax.plot(steps, [float(r['val_mse']) for r in rows], 'o-', label='validation loss')
    ax.set_xlabel('training step')
    ax.set_ylabel('validation MSE (held-out places)')
    ax.legend()
    return save_png(fig, path)


STAGE_NAMES = {'view_pairs': 'view pairs', 'filter': 'end to end through the filter'}


def _stages_text(stages):
    """' (view pairs: N steps in M min, then ...)' for the stages an aligned model trained."""
    if not stages:
        return ''
    return ' (' + ', then '.join(   # in training order, also for a card read back from JSON
        f"{STAGE_NAMES[k]}: {stages[k]['steps']} steps in {stages[k]['minutes']:.1f} min"
        for k in STAGE_NAMES if k in stages) + ')'


def _chosen_checkpoint_text(card):
    """['', 'The model: ...'] saying which checkpoint of an aligned model's last stage became
    OUT/model (its best validation row: step, minutes, held-out success@5), or []."""
    if card.get('architecture') != 'aligned':
        return []
    for stage, run, key in (('filter', RUNS[1], 'validation_filter'),
                            ('view_pairs', RUNS[0], 'validation')):
        row = (card.get(key) or {}).get('best')
        if not row or 'minutes' not in row:
            continue
        success = row.get('val_success')
        by = (f"held-out global success@5 ({float(success):.1%})" if success not in (None, '')
              else f"held-out candidate top-1 ({float(row['pose_top1']):.1%})")
        total = (card.get('stages') or {}).get(stage, {}).get('minutes')
        return ['', f"The model: the checkpoint of the last stage ({STAGE_NAMES[stage]}) with "
                    f"the best {by}: step {int(float(row['step']))}, after "
                    f"{float(row['minutes']):.1f}"
                    + (f" of {float(total):.1f}" if total is not None else '')
                    + f" min (that stage's last checkpoint: `{run}/last`)."]
    return []


def _card_markdown(card):
    z, f = card['zero_shot'], card.get('fine_tuned') or {}
    lines = ['# Fine-tuned model', '',
             f"From `{card['from_model']}` on {card['data']['train']['pairs']} pose-paired "
             f"images of {len(card['train_places'])} places; validation on other places "
             f"({', '.join(card['val_places'])}; {z['episodes']} episodes)"
             + (f"; the depth head supervised by the measured depths of "
                f"`{card['depth_topic']}`" if card.get('depth_topic') else '')
             + f". Wall time {card['wall_time_s'] / 60:.1f} min, {card['steps']} steps"
             + _stages_text(card.get('stages'))
             + (' (interrupted)' if card['interrupted'] else '')
             + (f" (after training: {card['failed']})" if card.get('failed') else '') + '.', '',
             '| on the held-out places | zero-shot | fine-tuned |', '|---|---|---|']
    # rates come with their 95% interval over their trials (the top-1's candidate sets, the
    # protocol's episodes); metres and the depth error as they are
    for key, name, trials, plain in (
            ('pose_top1', 'true pose top-1 of 64 candidates (tie-safe)', 'pose_queries', None),
            ('pose_top1_wrong', '... with wrong images', 'pose_queries', None),
            ('success@5', 'global success@5', 'episodes', None),
            ('success@5_shuffled_query', '... with wrong images', 'episodes', None),
            ('rmse@5', 'tracking rmse@5 (m)', None, '{:.2f}'),
            ('rmse@5_shuffled_query', '... with wrong images (m)', None, '{:.2f}'),
            ('depth_error', 'predicted column depth, median absolute log error '
             '(measured columns)', None, '{:.3f}')):
        if key not in z:
            continue
        cells = [('-' if key not in figures else plain.format(figures[key]) if plain else
                  percent_with_interval(figures[key], figures.get(trials)))
                 for figures in (z, f)]
        lines.append(f'| {name} | {cells[0]} | {cells[1]} |')
    trials = [f'{z[k]} {what}' for k, what in (('pose_queries', 'candidate sets'),
                                               ('episodes', 'episodes')) if z.get(k)]
    if trials:
        lines += ['', 'In parentheses: the 95% interval of each rate (Wilson) over its '
                  + ' or '.join(trials) + '.']
    lost = card.get('lost_flag')
    if lost:
        if lost['min_evidence'] is not None:
            text = ('Lost flag: `min_evidence` {:g} written to the model card by this run (a '
                    'later `calibrate-lost` rewrites it there); {}.'.format(
                        lost['min_evidence'], lost['description']))
        else:
            text = (f"Lost flag: no threshold calibrated ({lost['reason']}); the localizer "
                    'flags with its fallback and does not search while lost.')
        lines += ['', text]
        if lost.get('covariance_scale') is not None:
            lines += ['', 'Covariance: `covariance_scale` {:g} written to the model card by '
                      'this run; {}.'.format(lost['covariance_scale'],
                                             lost['covariance_description'])]
        if lost.get('initial_likelihood_scale') is not None:
            lines += ['', "First image: `initial_likelihood_scale` {:g} written to the model "
                      'card by this run; {}.'.format(lost['initial_likelihood_scale'],
                                                     lost['initial_description'])]
        if lost.get('nearest_contexts') is not None and lost['min_evidence'] is not None:
            lines += ['', 'Contexts per particle: `nearest_contexts` {} written to the model '
                      'card by this run; {}.'.format(lost['nearest_contexts'],
                                                     lost['nearest_description'])]
    curves = [f'`{name}` ({what})' for name, what, key in (
        ('curve.png', 'view pairs', 'validation'),
        ('curve_filter.png', 'end to end', 'validation_filter')) if key in card]
    if card.get('architecture') == 'aligned' and curves:
        lines += ['', 'Validation curves against wall time: ' + ', '.join(curves) + '.']
    lines += _chosen_checkpoint_text(card)
    lines += ['', 'Try it:', '', '```', card['replay_command'], '```', '']
    return '\n'.join(lines)


def finetune(groups, image_topic, pose_topic, out, model_path=None, minutes=60.0,
             val_share=0.25, episodes=64, seed=0, max_steps=None, val_every=None,
             threads=None, progress=True, data_kw=None, eval_particles=None,
             calibrate_lost=None, filter_share=0.5, nearest_candidates=None):
    """Fine-tune (see the module docstring); returns the card dict.

    groups: as :func:`~dmn_localizer.data.from_bags.bag_groups`; model_path: the model to
    start from (default: the shipped one); data_kw: options of
    :func:`~dmn_localizer.data.from_bags.build_from_bags`; max_steps, val_every, threads:
    overrides of the model's training config; eval_particles: (K global, K tracking) of the
    evaluations (default the protocol's 2048, 256); calibrate_lost: for an aligned model, the
    lost-flag calibration (:func:`dmn_localizer.replay.lost_threshold.calibrate`, given by the
    caller: replay is a higher layer) run on the validation places after training; its
    ``metadata`` (threshold, covariance scale, the first image's weight) goes into
    ``OUT/model``'s card and its
    figures into the card's ``lost_flag``; filter_share: for an aligned model, the share of
    ``minutes`` given to the end-to-end stage after the view-pair stage (0: none, 1: only it);
    nearest_candidates: counts of contexts per particle the calibration chooses among first
    and writes as ``nearest_contexts`` (one count: written as given; None: none written, the
    localizer's default applies).
    """
    from dmn_localizer.data.from_bags import bag_groups
    from dmn_localizer.model.io import load_model
    from dmn_localizer.util.resources import default_model_path
    if not 0 <= filter_share <= 1:
        raise UserError('--filter-share must be within [0, 1]')
    t0 = time.monotonic()
    out = Path(out)
    model_path = str(model_path or default_model_path())
    model = load_model(model_path, architecture=ARCHITECTURES)
    aligned = model.config.architecture == 'aligned'
    base = dict(_card_metadata(model_path).get('train_config') or {})
    if not base and not aligned:
        raise UserError(f'{model_path}: its card has no training config to fine-tune with')
    train_groups, val_groups = split_groups(bag_groups(groups), val_share, seed)
    size = int(model.config.image_size)
    data_kw = dict(data_kw or {})
    data_kw.setdefault('default_hfov_deg', float(model.config.hfov_deg))
    data = {which: _dataset(g, which, out / 'data' / name, image_topic, pose_topic, size,
                            data_kw)
            for which, name, g in (('training', 'train', train_groups),
                                   ('validation', 'val', val_groups))}
    train_data, val_data = out / 'data' / 'train', out / 'data' / 'val'
    log.info('zero-shot evaluation on the validation places')
    zero = _evaluate(model, val_data, episodes, seed, eval_particles)
    pool = int(data['training']['contexts_per_world'])
    if aligned:
        cfg = _view_pair_config(model, model_path, train_data, val_data, minutes, seed,
                                max_steps, val_every, threads, pool)
        queries = _ranking_queries(model, val_data, cfg)
        zero.update(_pose_ranking(model, queries))
        zero.update(_depth_error(model, queries) or {})
    else:
        cfg = _train_config(base, model_path, train_data, val_data, minutes, seed, max_steps,
                            val_every, threads, episodes, pool)
    depth_topic = data_kw.get('depth_topic')
    card = dict(from_model=model_path, architecture=model.config.architecture,
                depth_topic=depth_topic or None,
                train_places=sorted(train_groups),
                val_places=sorted(val_groups), minutes=float(minutes),
                data={name: dict(data[which]['counts'], areas=data[which]['n_worlds'])
                      for which, name in (('training', 'train'), ('validation', 'val'))},
                zero_shot=zero, fine_tuned=None, steps=0, interrupted=False,
                filter_share=float(filter_share) if aligned else None, stages={},
                eval_particles=list(eval_particles or (2048, 256)),
                replay_command=(f'dmn-localizer replay --model {out / "model.safetensors"} '
                                '--map-bag MAPPING_BAG --bag LOCALIZATION_BAG --out results'
                                + (f' [--depth-topic {depth_topic}]' if depth_topic else '')))
    try:
        if aligned:
            best = _train_aligned(cfg, out, model_path, minutes, filter_share, episodes,
                                  card, progress)
        else:
            from dmn_localizer.training import train
            summary = train(cfg, out / 'run', progress=progress)
            best = summary['best']
            card['steps'] = int(summary['steps'])
    except KeyboardInterrupt:
        card['interrupted'] = True
        _finish(card, out, t0)
        raise
    try:   # Ctrl-C from here on also leaves the model and a card (without what is missing)
        log.info('evaluation of the fine-tuned model on the validation places')
        tuned = load_model(best)
        fine_tuned = _evaluate(tuned, val_data, episodes, seed, eval_particles)
        if aligned:
            fine_tuned.update(_pose_ranking(tuned, queries))
            fine_tuned.update(_depth_error(tuned, queries) or {})
        card['fine_tuned'] = fine_tuned
        if aligned and calibrate_lost is not None:
            log.info('lost-flag calibration on the validation places')
            try:
                card['lost_flag'] = calibrate_lost(
                    tuned, dict(train_groups, **val_groups), image_topic, pose_topic,
                    calibrate_on=sorted(val_groups), seed=seed, progress=progress,
                    nearest_candidates=nearest_candidates)
            except UserError as exc:   # a recording it cannot replay: the model stands
                log.warning('lost-flag calibration failed: %s', exc)
                card['lost_flag'] = dict(min_evidence=None, reason=str(exc))
    except BaseException as exc:   # Ctrl-C, or a failure after training: the model stands
        if isinstance(exc, KeyboardInterrupt):
            card['interrupted'] = True
        else:
            card['failed'] = f'{type(exc).__name__}: {exc}'
        _finish(card, out, t0)
        raise
    return _finish(card, out, t0)


def _train_aligned(cfg, out, model_path, minutes, filter_share, episodes, card, progress):
    """The view-pair stage for ``1 - filter_share`` of ``minutes`` in ``OUT/run``, then the
    end-to-end stage from its best model in ``OUT/run_filter``; returns the path of the model
    to keep (the last stage's best). Fills ``card['stages']`` and ``card['steps']`` as each
    stage ends; KeyboardInterrupt when one was interrupted (its best model so far stands)."""
    import dataclasses
    from dmn_localizer.training.view_pairs import train_view_pairs
    stages = []
    if filter_share < 1:
        stages.append(('view_pairs', RUNS[0], dataclasses.replace(
            cfg, max_minutes=float(minutes) * (1 - filter_share))))
    if filter_share > 0:
        stages.append(('filter', RUNS[1], None))
    best, init = None, model_path
    for name, run, stage_cfg in stages:
        if stage_cfg is None:
            stage_cfg = _filter_config(cfg, init, float(minutes) * filter_share, episodes)
        log.info('fine-tuning stage %s: %.1f min', name, stage_cfg.max_minutes)
        summary = train_view_pairs(stage_cfg, out / run, progress=progress)
        card['stages'][name] = dict(steps=int(summary['steps']),
                                    minutes=float(summary['minutes']))
        card['steps'] = sum(v['steps'] for v in card['stages'].values())
        best = init = out / run / 'best'
        # the view-pair loop writes its model on Ctrl-C and returns: go on as the DMN's loop
        # does (the card of the best model so far, then the interrupt)
        if summary.get('interrupted'):
            raise KeyboardInterrupt
    return best


def _train_config(base, model_path, train_data, val_data, minutes, seed, max_steps, val_every,
                  threads, episodes, pool):
    """The DMN's own recipe (its card's training config) pointed at the user's data."""
    from dmn_localizer.training.config import TrainConfig
    over = dict(train_data=str(train_data), val_data=str(val_data),
                init_from=model_path, max_minutes=float(minutes), seed=seed,
                val_episodes=min(int(base.get('val_episodes', 128)), episodes),
                context_pool=min(int(base.get('context_pool', 16)), pool),
                max_steps=int(max_steps if max_steps is not None else UNBOUNDED_STEPS))
    over['contexts'] = [min(int(c), over['context_pool']) for c in base.get('contexts', (4, 8))]
    over['val_contexts'] = min(int(base.get('val_contexts', 4)), over['context_pool'])
    if val_every:
        over['val_every'] = int(val_every)
    if threads:
        over['threads'] = int(threads)
    try:
        return TrainConfig.from_dict(dict(base, **over))
    except (TypeError, ValueError) as exc:
        raise UserError(f'{model_path}: its training config does not fit ({exc})') from None


def _card_metadata(path):
    import json
    from dmn_localizer.model.io import model_paths
    return json.loads(model_paths(path)[1].read_text()).get('metadata') or {}


def _finish(card, out, t0):
    """Copy the best model so far to OUT/model, write the curve and the card; returns it."""
    from dmn_localizer.model.io import model_paths, update_card_metadata
    from dmn_localizer.training.view_pairs.train import validation_key
    # the last stage's best model (the end-to-end stage's, when it has one)
    best = next((out / run / 'best' for run in reversed(RUNS)
                 if model_paths(out / run / 'best')[0].exists()), None)
    if best is not None:
        _copy_model(best, out / 'model')
        values = (card.get('lost_flag') or {}).get('metadata')
        if values:
            update_card_metadata(out / 'model', **values)
    rows = _validation_rows(out / 'run')
    for run, name, key in ((RUNS[0], 'curve.png', 'validation'),
                           (RUNS[1], 'curve_filter.png', 'validation_filter')):
        stage_rows = _validation_rows(out / run, 'log.csv')
        if stage_rows and (out / run / 'curve.png').exists():
            # the view-pair recipe's own curve: tie-safe top-1 and its twin (and the
            # protocol's validation success) against wall time
            write_bytes(out / name, (out / run / 'curve.png').read_bytes())
            # the last of the equal rows, as the loop keeps it
            card[key] = {'best': max(reversed(stage_rows), key=validation_key),
                         'last': stage_rows[-1]}
    if rows:
        _curve(rows, out / 'curve.png')
        card['validation'] = {'zero_shot': rows[0], 'best': min(
            rows, key=lambda r: float(r['val_mse']))}
        card['steps'] = card['steps'] or int(rows[-1]['step'])
    card['wall_time_s'] = round(time.monotonic() - t0, 1)
    card = {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
            for k, v in card.items()}
    write_text(out / 'card.md', _card_markdown(card))
    write_json(out / 'card.json', card)
    return card
