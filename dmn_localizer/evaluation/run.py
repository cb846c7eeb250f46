"""``run_evaluation``: the importable stage behind ``dmn-localizer eval``."""
import logging
from pathlib import Path

from dmn_localizer.util.errors import UserError
from dmn_localizer.evaluation import plots
from dmn_localizer.evaluation.protocol import (EvalConfig, evaluate,
                                               likelihood_map, load_episodes, markdown_table,
                                               METHODS, MODEL_METHODS, model_mismatch,
                                               sweep)
from dmn_localizer.model.io import atomic_write_json

logger = logging.getLogger(__name__)

SWEEP_NCS = (1, 2, 4, 8, 16)   # the Nc sweep's context counts (and the episodes' pool)


def protocol_episodes(ds, episodes, cfg: EvalConfig, sweep_ncs=SWEEP_NCS):
    """The episodes ``eval`` runs on dataset ``ds`` and their context pool: each episode
    draws its Nc contexts from a pool big enough for the Nc sweep, with or without plots, so
    the table does not depend on --no-plots."""
    pool = max([cfg.contexts] + list(sweep_ncs))
    views = int(ds.manifest['contexts_per_world'])
    if cfg.queries == 'random':   # the query views come from the same pool
        views -= cfg.steps
        if views < cfg.contexts:
            raise UserError(f'{ds.path}: {views + cfg.steps} views per world, too few for '
                            f'{cfg.contexts} contexts and {cfg.steps} random query views')
    pool = min(pool, views)
    eps = load_episodes(ds, episodes, pool, cfg.steps, cfg.seed, queries=cfg.queries)
    if not eps:
        raise UserError(f'{ds.path}: no episodes')
    return eps, pool


def run_evaluation(*, model_path, data, episodes, methods=METHODS, json_out=None,
                   cfg: EvalConfig = None, plots_dir=None, sweep_episodes=50,
                   sweep_ks=(64, 256, 1024, 2048), sweep_ncs=SWEEP_NCS, heatmaps=3,
                   device='cpu', method_models=None, context_pooling=None):
    """Evaluate; writes ``json_out`` and PNGs in ``plots_dir`` (when given); returns
    ``(results, table)``. ``results`` maps method -> metrics; sweeps under ``"sweeps"`` are
    written to ``plots_dir/sweeps.json``, not into the results.

    ``json_out`` is removed first and written last: when it exists, the run completed (an
    interrupted run leaves none). ``method_models`` maps the ablation and baseline methods
    (``dmn_no_attention``, ``latent_image``, ...) to their model files; ``dmn`` uses
    ``model_path``. ``context_pooling`` (``'sum'`` | ``'overlap_attention'``): how the aligned
    models combine a particle's contexts, instead of their cards' choice."""
    from dmn_localizer.data.dataset import open_dataset
    from dmn_localizer.model.io import load_model
    cfg = cfg or EvalConfig()
    methods = list(methods)
    bad = [m for m in methods if m not in METHODS]
    if bad:
        raise UserError(f'unknown methods {", ".join(bad)}; valid: {", ".join(METHODS)}')
    unused = set(method_models or {}) - set(methods)
    if unused:
        raise UserError(f'models given for methods not evaluated: {", ".join(sorted(unused))}')
    models = {}
    for method in [m for m in methods if m in MODEL_METHODS]:
        path = model_path if method == 'dmn' else (method_models or {}).get(method)
        if path is None:
            raise UserError('--model is required to evaluate dmn' if method == 'dmn' else
                            f'{method} needs its model: --method-model {method}=PATH')
        models[method] = load_model(path, device=device)
        reason = model_mismatch(method, models[method].config)
        if reason:
            raise UserError(f'{path}: {reason}')
        if context_pooling and hasattr(models[method], 'set_context_pooling'):
            models[method].set_context_pooling(context_pooling)
    model = models.get('dmn')
    if plots_dir and model is None and model_path is not None:
        model = load_model(model_path, device=device, architecture='dmn')
    ds = open_dataset(data)
    eps, pool = protocol_episodes(ds, episodes, cfg, sweep_ncs)
    if json_out:
        Path(json_out).unlink(missing_ok=True)
    results = evaluate(models, eps, methods, cfg, device=device)
    table = markdown_table(results, cfg)
    if plots_dir and model is not None:
        plots_dir = Path(plots_dir)
        plots.plot_success_vs_t(results, plots_dir / 'success_vs_t.png')
        sub = eps[:sweep_episodes]
        s = sweep(model, sub, cfg, ks=sweep_ks,
                  ncs=[n for n in sweep_ncs if n <= pool], device=device)
        atomic_write_json(plots_dir / 'sweeps.json', s)
        if s['k']:
            plots.plot_sweep(s['k'], 'particles K (Nc = %d)' % cfg.contexts,
                             plots_dir / 'success_vs_k.png', logx=True)
        if s['nc']:
            plots.plot_sweep(s['nc'], 'contexts Nc (K = %d)' % cfg.k_global,
                             plots_dir / 'success_vs_nc.png', logx=True)
        for i, ep in enumerate(eps[:heatmaps]):
            grid, extent = likelihood_map(model, ep, cfg.contexts, device=device)
            try:
                layout, res, _ = ds.layout(ep.world_seed)
            except (KeyError, AttributeError):
                layout, res = None, 1.0
            plots.plot_likelihood_map(grid, extent, ep, cfg.contexts,
                                      plots_dir / f'likelihood_{i}.png', layout, res)
    if json_out:
        atomic_write_json(json_out, results)
    return results, table
