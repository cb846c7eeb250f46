"""The benchmark's rows and report: a row per configuration (FLOPs from
:class:`~dmn_localizer.bench.flops.FlopModel`, ``gflops`` = FLOPs / latency, ``pct_of_peak``
against the peak estimate), the speed-up ratios between rows, the printed table and the CPU
targets checked against the rows."""
from dmn_localizer.bench.plan import NEAREST_M


def _row(cfg, meas, flops_model, peak):
    """A JSON row from a configuration and its child's measurements."""
    row = {'path': cfg.path, 'variant': cfg.variant, 'K': cfg.K, 'Nc': cfg.Nc,
           'M': cfg.M if cfg.path == 'fast' and cfg.variant in ('nearest_m', 'aligned')
           else None, 'option': cfg.option}
    if cfg.variant == 'aligned':   # another network: the DMN's FLOP model does not apply
        row['contexts_attended'] = min(cfg.Nc, cfg.M)
        row.update(meas)
        row.update(gflop_per_update=None, gflops=None, pct_of_peak=None, ok=True)
        return row
    if cfg.path == 'reference':
        chunk = min(cfg.K, max(1, cfg.ref_pairs // cfg.Nc))
        flops = flops_model.reference_update(cfg.K, cfg.Nc, chunk)
        row['reembed_flop_share'] = flops_model.reference_reembed(cfg.K, cfg.Nc, chunk) / flops
    else:
        flops = flops_model.fast_update(cfg.K, cfg.Nc, row['M'] or 0)
        row['contexts_attended'] = min(cfg.Nc, cfg.M) if row['M'] else cfg.Nc
    row['gflop_per_update'] = flops / 1e9
    row.update(meas)
    row['gflops'] = flops / (row['latency_ms'] / 1e3) / 1e9
    row['pct_of_peak'] = 100.0 * row['gflops'] / peak if peak else None
    row['ok'] = True
    return row


def _failed_row(cfg, error):
    return {'path': cfg.path, 'variant': cfg.variant, 'K': cfg.K, 'Nc': cfg.Nc,
            'M': cfg.M or None, 'option': cfg.option, 'hz': 0.0, 'latency_ms': 0.0,
            'gflops': 0.0, 'peak_mem_mb': 0.0, 'ok': False, 'error': error,
            'extrapolated': False}


def add_ratios(runs):
    """Fast rows get ``speedup_vs_reference`` (reference latency / fast latency at the same K
    and Nc); option rows get ``speedup_vs_fp32`` against the plain fast row."""
    ref = {(r['K'], r['Nc']): r for r in runs if r['path'] == 'reference' and r['ok']}
    plain = {(r['K'], r['Nc'], r['variant']): r for r in runs
             if r['path'] == 'fast' and r['ok'] and not r['option']}
    for r in runs:
        if r['path'] != 'fast' or not r['ok']:
            continue
        if r['variant'] == 'aligned':   # against the DMN on the same localizer path
            dmn = plain.get((r['K'], r['Nc'], 'nearest_m'))
            if dmn and dmn['M'] == r['M']:
                r['speedup_vs_dmn'] = dmn['latency_ms'] / r['latency_ms']
            continue
        base = ref.get((r['K'], r['Nc']))
        if base:
            r['speedup_vs_reference'] = base['latency_ms'] / r['latency_ms']
        fp32 = plain.get((r['K'], r['Nc'], r['variant']))
        if r['option'] and fp32:
            r['speedup_vs_fp32'] = fp32['latency_ms'] / r['latency_ms']
    return runs


def format_table(result):
    """The human summary printed on stdout."""
    lines = [f"device: {result['device']}",
             f"estimated fp32 peak (best of a large matmul and a 3x3 convolution): "
             f"{result['peak_gflops']:.1f} GFLOP/s",
             f"{'path':9} {'variant':12} {'option':13} {'K':>6} {'Nc':>5} {'M':>3} "
             f"{'lat_ms':>10} {'hz':>8} {'GFLOP/s':>8} {'%peak':>6} {'mem_MB':>7} "
             f"{'x_ref':>6}  note"]
    for r in result['runs']:
        if not r['ok']:
            lines.append(f"{r['path']:9} {r['variant']:12} {r['option'] or '-':13} "
                         f"{r['K']:>6} {r['Nc']:>5}  FAILED: {r['error']}")
            continue
        notes = []
        if r['extrapolated']:
            notes.append(f"EXTRAPOLATED from {r['measured_particles']} particles")
        if r.get('build_ms') is not None:
            notes.append(f"build {r['build_ms']:.0f} ms")
        if 'max_abs_err' in r:
            notes.append(f"max|dll| {r['max_abs_err']:.2e} TV {r['weights_tv']:.1e} "
                         f"x_fp32 {r.get('speedup_vs_fp32', float('nan')):.2f}")
        if 'compile_s' in r:
            notes.append(f"compile {r['compile_s']:.0f} s")
        if 'speedup_vs_dmn' in r:
            notes.append(f"x_dmn {r['speedup_vs_dmn']:.2f}")
        x_ref = r.get('speedup_vs_reference')
        lines.append(
            f"{r['path']:9} {r['variant']:12} {r['option'] or '-':13} {r['K']:>6} "
            f"{r['Nc']:>5} {r['M'] or '-':>3} {r['latency_ms']:>10.1f} {r['hz']:>8.2f} "
            f"{_num(r['gflops']):>8} {_num(r['pct_of_peak']):>6} {r['peak_mem_mb']:>7.1f} "
            f"{f'{x_ref:.1f}' if x_ref else '-':>6}  {'; '.join(notes)}")
    # (fp32 rows only: the peak estimate is fp32; bf16 runs on faster units)
    best = max((r['gflops'] for r in result['runs'] if r['ok'] and not r['option']
                and r['gflops'] is not None), default=0.0)
    if best > result['peak_gflops']:
        lines.append(f"warning: a row reached {best:.1f} GFLOP/s, above the peak estimate: "
                     "the machine was probably busy while it was measured")
    lines += target_lines(result['runs'])
    return '\n'.join(lines)


def _num(x):
    return '-' if x is None else f'{x:.1f}'


def target_lines(runs):
    """Issue 6's CPU targets, checked against the rows present (fp32, nearest_m fast path)."""
    fast = {(r['K'], r['Nc']): r for r in runs if r['path'] == 'fast' and r['ok']
            and r['variant'] == 'nearest_m' and not r['option']}
    out = []

    def check(name, value, ok):
        out.append(f"target {name}: {value} -> {'met' if ok else 'NOT met'}")
    for k, hz in ((256, 30.0), (2048, 5.0)):
        if (k, 4) in fast:
            check(f'K={k} Nc=4 >= {hz:g} Hz', f"{fast[(k, 4)]['hz']:.1f} Hz",
                  fast[(k, 4)]['hz'] >= hz)
    for (k, nc), r in sorted(fast.items()):
        if nc == 4 and 'speedup_vs_reference' in r:
            s = r['speedup_vs_reference']
            check(f'fast/reference >= 3.5x at K={k} Nc=4', f'{s:.1f}x', s >= 3.5)
    aligned = {(r['K'], r['Nc']): r for r in runs if r['path'] == 'fast' and r['ok']
               and r['variant'] == 'aligned' and not r['option'] and r['M'] == NEAREST_M}
    if (2048, 4) in aligned:
        hz = aligned[(2048, 4)]['hz']
        check('aligned K=2048 Nc=4 >= 15 Hz', f'{hz:.1f} Hz', hz >= 15.0)
    if (2048, 1024) in fast and (2048, 4) in fast:
        ratio = fast[(2048, 1024)]['latency_ms'] / fast[(2048, 4)]['latency_ms']
        check('update time Nc=1024 <= 1.5x Nc=4 (K=2048)', f'{ratio:.2f}x', ratio <= 1.5)
    return out
