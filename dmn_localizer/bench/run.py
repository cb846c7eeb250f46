""":func:`run_benchmark`: the whole benchmark, what ``dmn-localizer bench`` runs."""
import logging
import os
import sys

from dmn_localizer.bench.flops import FlopModel
from dmn_localizer.bench.measure import describe_device, estimate_peak_gflops
from dmn_localizer.bench.plan import make_plan
from dmn_localizer.bench.report import _failed_row, _row, add_ratios
from dmn_localizer.bench.workers import _Child

logger = logging.getLogger(__name__)


def run_benchmark(device='cpu', quick=False, options=False, threads=None, model=None,
                  seed=0, repeats=10, max_seconds=60.0, ref_pairs=16384, fast_pairs=8192,
                  progress=True, aligned_model=None):
    """Measure every configuration of :func:`make_plan`, each in a fresh child process
    (``quick``: all in one child, for speed; memory is then measured after the earlier ones).

    Returns ``{'device', 'peak_gflops', 'runs'}`` (the keys: see :mod:`dmn_localizer.bench`).
    ``model`` is a model path or None (random init with ``seed``); ``aligned_model`` adds the
    rows of that aligned model (variant ``aligned``).
    """
    from tqdm import tqdm
    threads = threads or len(os.sched_getaffinity(0))
    plan = make_plan(device, quick, options, threads, model, seed, repeats, max_seconds,
                     ref_pairs, fast_pairs, aligned_model)
    peak = estimate_peak_gflops(device, plan.peak_matmul_n, threads=threads)
    image_size = _image_size(model)
    flops_model = FlopModel(image_size)
    runs, child = [], None
    bar = tqdm(plan.configs, desc='bench', unit='config', disable=not progress, file=sys.stderr)
    for cfg in bar:
        bar.set_postfix_str(f'{cfg.path} {cfg.variant} K={cfg.K} Nc={cfg.Nc}'
                            + (f' {cfg.option}' if cfg.option else ''))
        if child is None or not child.alive():
            child = _Child()
        try:
            meas, err = child.measure(cfg)
        finally:
            if not quick or not child.alive():  # a fresh process per configuration
                child.close()
                child = None
        if err:
            logger.warning('%s %s K=%d Nc=%d %s failed: %s', cfg.path, cfg.variant, cfg.K,
                           cfg.Nc, cfg.option or '', err)
            runs.append(_failed_row(cfg, err))
        else:
            runs.append(_row(cfg, meas, flops_model, peak))
    bar.close()
    if child is not None:
        child.close()
    return {'device': describe_device(device, threads), 'peak_gflops': peak,
            'runs': add_ratios(runs)}


def _image_size(model):
    if not model:
        from dmn_localizer.model.config import DMNConfig
        return DMNConfig().image_size
    from dmn_localizer.model.io import read_card
    return int(read_card(model)['config'].get('image_size', 32))
