"""``dmn-localizer bench``: observation-update speed, FLOP rate and memory, reference vs fast.

Thin wrapper over :func:`dmn_localizer.bench.run_benchmark` (see that module for what is
timed, how FLOPs and memory are counted and when a row is extrapolated).
"""
import logging
import os
from pathlib import Path

from dmn_localizer.util.errors import UserError

HELP = 'Benchmark observation-update speed, FLOP rate and memory (reference vs fast path).'

# the node's latency target (image in -> pose out): p95 at K = 256 particles
NODE_TARGET_K = 256
NODE_TARGET_P95_MS = 50.0
log = logging.getLogger(__name__)


def add_arguments(parser):
    parser.add_argument('--json', required=True, metavar='OUT',
                        help='write {device, peak_gflops, runs: [...]} here (atomically)')
    parser.add_argument('--device', default='auto', help="'cpu', 'cuda' or 'auto'")
    parser.add_argument('--quick', action='store_true',
                        help='a tiny grid (K=32, Nc 4 and 16, one repeat) for tests and CI')
    parser.add_argument('--repeats', type=int, default=10,
                        help='timed updates per configuration (median reported)')
    parser.add_argument('--max-seconds', type=float, default=60.0,
                        help='time cap of one configuration: fewer repeats, and a reference '
                        'update longer than this is timed on one chunk and extrapolated')
    parser.add_argument('--model', help='model NAME(.safetensors) (default: the shipped '
                        'models/dmn_mazes, else a randomly initialised DMN with --seed)')
    parser.add_argument('--aligned-model', metavar='MODEL',
                        help='also measure this aligned observation model (architecture '
                             'aligned) at every K and Nc: rows of variant "aligned"')
    parser.add_argument('--seed', type=int, default=0, help='inputs and random-init seed')
    parser.add_argument('--threads', type=int, default=0,
                        help='torch CPU threads (default 0: all cores available)')
    parser.add_argument('--options', action='store_true',
                        help='also measure bf16 autocast and torch.compile on the fast path')
    parser.add_argument('--ref-pairs', type=int, default=16384,
                        help='reference chunk = this many (particle, context) pairs')
    parser.add_argument('--fast-pairs', type=int, default=8192,
                        help='all-contexts fast path chunk = this many pairs')
    parser.add_argument('--no-progress', action='store_true', help='no progress bar')
    parser.add_argument('--node-latency', action='store_true',
                        help='also time image-in to pose-out through a running localizer node '
                        "(K = 256 and 2048, with --model, else the nodes' default model "
                        'models/aligned_mazes_e2e; needs the ROS 2 Python packages)')
    parser.add_argument('--node-frames', type=int, default=40,
                        help='images per node-latency measurement')


def _resolve_model(name):
    """The model path to load, or None for a random init (the shipped model is absent)."""
    from dmn_localizer.model.io import model_paths
    from dmn_localizer.util.resources import dmn_model_path
    if name:
        weights, card = model_paths(name)
        for p in (weights, card):
            if not p.is_file():
                raise UserError(f'{p}: no such file (a model is NAME.safetensors + NAME.json)')
        return str(weights)
    return _shipped(dmn_model_path())


def _shipped(path):
    """The weights path of the shipped model ``path`` if its weights and card are there, else
    None."""
    from dmn_localizer.model.io import model_paths
    weights, card = model_paths(path)
    return str(weights) if weights.is_file() and card.is_file() else None


def _node_model(fallback):
    """The model the nodes run by default (its path), else ``fallback``."""
    from dmn_localizer.util.resources import default_model_path
    return _shipped(default_model_path()) or fallback


def node_latency(model, args):
    """Image-in to pose-out latency through the real localizer node at K = 256 and 2048."""
    import tempfile

    from dmn_localizer.nodes.tools.latency_probe import measure
    if args.node_frames < 1:
        raise UserError('--node-frames must be >= 1')
    with tempfile.TemporaryDirectory() as tmp:
        if model is None:  # the node needs a model file: save the random-init one
            import torch

            from dmn_localizer.model import DMN, DMNConfig, save_model
            torch.manual_seed(args.seed)
            model = str(Path(tmp) / 'random_init.safetensors')
            save_model(DMN(DMNConfig()), model)
        runs = [(32, 'fp32')] if args.quick else [(256, 'fp32'), (2048, 'fp32')]
        if args.options:
            runs.append((runs[0][0], 'bf16'))
        rows = [measure(model, k, frames=min(args.node_frames, 5) if args.quick
                        else args.node_frames, precision=precision) for k, precision in runs]
    for row in rows:
        row['model'] = Path(model).stem
    return rows


def node_latency_line(row):
    """One line of stdout for a node-latency row, with the latency target checked at K=256."""
    line = (f"node latency ({row.get('model', '?')}) K={row['K']:5d} Nc={row['Nc']} "
            f"{row['precision']}: "
            f"p50 {row['p50_ms']:.1f} ms, p95 {row['p95_ms']:.1f} ms "
            f"({row['received']}/{row['frames']} poses)")
    if row['K'] == NODE_TARGET_K:
        met = row['received'] == row['frames'] and row['p95_ms'] <= NODE_TARGET_P95_MS
        line += (f'; target p95 <= {NODE_TARGET_P95_MS:.0f} ms at K={NODE_TARGET_K}: '
                 + ('met' if met else 'NOT met'))
    return line


def run(args):
    import torch
    from dmn_localizer.bench import format_table, run_benchmark
    from dmn_localizer.util.atomic import write_json
    for name in ('repeats', 'ref_pairs', 'fast_pairs'):
        if getattr(args, name) < 1:
            raise UserError(f'--{name.replace("_", "-")} must be >= 1')
    if args.threads < 0:
        raise UserError('--threads must be >= 0')
    if not args.max_seconds > 0:
        raise UserError('--max-seconds must be > 0')
    if args.device not in ('auto', 'cpu', 'cuda'):
        raise UserError(f"--device must be 'auto', 'cpu' or 'cuda', not {args.device!r}")
    device = args.device
    if device == 'auto':
        device = 'cuda' if torch.cuda.is_available() else 'cpu'
    elif device == 'cuda' and not torch.cuda.is_available():
        raise UserError('--device cuda: torch sees no CUDA device')
    out = Path(args.json)
    if out.is_dir():
        raise UserError(f'--json {out}: is a directory')
    model = _resolve_model(args.model)
    if model is None:
        print('note: models/dmn_mazes.safetensors not found: benchmarking a randomly '
              f'initialised DMN (seed {args.seed}); speed does not depend on the weights, '
              'the bf16 error does')
    aligned = None
    if args.aligned_model:
        from dmn_localizer.model.io import read_card
        aligned = _resolve_model(args.aligned_model)
        arch = read_card(aligned)['config'].get('architecture')
        if arch != 'aligned':
            raise UserError(f'--aligned-model {args.aligned_model}: a {arch} model')
    threads = args.threads or len(os.sched_getaffinity(0))
    result = run_benchmark(device=device, quick=args.quick, options=args.options,
                           aligned_model=aligned, threads=threads, model=model, seed=args.seed,
                           repeats=1 if args.quick else args.repeats,
                           max_seconds=min(args.max_seconds, 10.0) if args.quick
                           else args.max_seconds,
                           ref_pairs=args.ref_pairs, fast_pairs=args.fast_pairs,
                           progress=not args.no_progress)
    if args.node_latency:
        result['node_latency'] = node_latency(model if args.model else _node_model(model),
                                              args)
    write_json(out, result)
    print(format_table(result))
    for row in result.get('node_latency', []):
        print(node_latency_line(row))
    print(f'wrote {out}')
    failed = [r for r in result['runs'] if not r['ok'] and not r['option']]
    return 1 if failed else 0
