"""``dmn-localizer eval``: the paper's evaluation protocol on held-out worlds.

Thin wrapper over :func:`dmn_localizer.evaluation.run.run_evaluation`.
"""
import logging
from pathlib import Path

from dmn_localizer.util.errors import UserError

HELP = 'Evaluate a DMN and baselines on held-out worlds (paper protocol).'
log = logging.getLogger(__name__)


def add_arguments(parser):
    parser.add_argument('--model', help='model NAME(.safetensors) with NAME.json beside it')
    parser.add_argument('--domain', default='mazes', choices=('mazes', 'rooms', 'bags'))
    parser.add_argument('--data', help='test dataset folder (default: data/DOMAIN/test)')
    parser.add_argument('--episodes', type=int, default=200, help='test episodes (one/world)')
    parser.add_argument('--methods', default='dmn,closest_context,uninformed',
                        help='comma-separated: dmn, closest_context, uninformed, '
                        'dmn_no_attention, dmn_no_egocentric, dmn_no_attention_no_egocentric, '
                        "latent_image, latent_vector, regression; or 'all'")
    parser.add_argument('--method-model', action='append', default=[], metavar='METHOD=MODEL',
                        help='the model of an ablation or baseline method (repeatable), '
                        'e.g. dmn_no_attention=runs/no_att/best, latent_image=runs/li/best')
    parser.add_argument('--json', help='write {method: {success@1, success@5, rmse@5}} here')
    parser.add_argument('--contexts', type=int, default=4, help='Nc')
    parser.add_argument('--nearest-contexts', type=int, default=0, metavar='M',
                        help='DMN methods: each particle attends only to its M nearest '
                        'contexts, as the localizer does on large maps (default 0: to all '
                        'Nc, the paper\'s protocol)')
    parser.add_argument('--steps', type=int, default=5, help='T')
    parser.add_argument('--queries', default='trajectory', choices=('trajectory', 'random'),
                        help="the T query views: 'trajectory' (consecutive steps of a driven "
                             "trajectory) or 'random' (random views of the world in random "
                             "order, as the paper samples them)")
    parser.add_argument('--context-pooling', default='model',
                        choices=('model', 'sum', 'overlap_attention'),
                        help="how aligned models combine a particle's contexts: 'model' (as "
                             "the model card says), 'sum' or 'overlap_attention'")
    parser.add_argument('--k-global', type=int, default=2048)
    parser.add_argument('--k-tracking', type=int, default=256)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--plots', help='PNG folder (default: JSON path without .json + '
                        '_plots; none without --json)')
    parser.add_argument('--no-plots', action='store_true')
    parser.add_argument('--no-diagnostic', action='store_true',
                        help='skip the shuffled-image runs of the DMN')
    parser.add_argument('--sweep-episodes', type=int, default=50,
                        help='episodes for the K and Nc sweeps')
    parser.add_argument('--heatmaps', type=int, default=3, help='likelihood maps to plot')
    parser.add_argument('--device', default='auto')
    parser.add_argument('--threads', type=int, default=2, help='torch CPU threads')


def run(args):
    import torch
    from dmn_localizer.evaluation.protocol import EvalConfig
    from dmn_localizer.evaluation.run import run_evaluation
    from dmn_localizer.util.device import select_device
    for name in ('episodes', 'contexts', 'steps', 'k_global', 'k_tracking'):
        if getattr(args, name) < 1:
            raise UserError(f'--{name.replace("_", "-")} must be >= 1')
    if args.nearest_contexts < 0:
        raise UserError('--nearest-contexts must be >= 0 (0: all contexts)')
    try:
        device = select_device(args.device)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    if args.threads:
        torch.set_num_threads(args.threads)
    from dmn_localizer.evaluation.protocol import METHODS
    methods = [m.strip() for m in args.methods.split(',') if m.strip()]
    if methods == ['all']:
        methods = list(METHODS)
    method_models = {}
    for item in args.method_model:
        name, sep, path = item.partition('=')
        if not sep or not name or not path:
            raise UserError(f'--method-model expects METHOD=MODEL, got {item!r}')
        method_models[name] = path
    data = args.data or str(Path('data') / args.domain / 'test')
    plots_dir = None
    if not args.no_plots and 'dmn' in methods:
        plots_dir = args.plots or (str(Path(args.json).with_suffix('')) + '_plots'
                                   if args.json else None)
    cfg = EvalConfig(contexts=args.contexts, steps=args.steps, k_global=args.k_global,
                     k_tracking=args.k_tracking, seed=args.seed,
                     diagnostic=not args.no_diagnostic,
                     nearest_contexts=args.nearest_contexts, queries=args.queries)
    results, table = run_evaluation(model_path=args.model, data=data, episodes=args.episodes,
                                    methods=methods, json_out=args.json, cfg=cfg,
                                    plots_dir=plots_dir, sweep_episodes=args.sweep_episodes,
                                    heatmaps=args.heatmaps, device=device,
                                    method_models=method_models,
                                    context_pooling=None if args.context_pooling == 'model'
                                    else args.context_pooling)
    print(table)
    if args.json:
        print(f'wrote {args.json}')
    return 0
