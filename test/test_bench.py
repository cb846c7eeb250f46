"""The benchmark: what it times computes the same log-likelihoods on every path, its
FLOP model matches torch's counter, its memory probe sees torch allocations, extrapolated rows
are labelled, and ``dmn-localizer bench`` writes the documented JSON. Never timing."""
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from dmn_localizer.bench import (add_ratios, BenchConfig, FlopModel, format_table, make_inputs,
                                 make_plan, measure)
from dmn_localizer.bench.measure import _Update
from dmn_localizer.cli import main
from dmn_localizer.config import LocalizerConfig
from dmn_localizer.localization.localizer import Localizer, PAIRS_PER_CHUNK
from dmn_localizer.mapping.view_map import ViewMap
from dmn_localizer.model.config import DMNConfig
from dmn_localizer.model.dmn import DMN
from dmn_localizer.model.preprocess import images_to_tensor

torch.set_num_threads(1)
CPU = torch.device('cpu')


@pytest.fixture(scope='module')
def model():
    torch.manual_seed(3)
    m = DMN(DMNConfig(image_size=16)).eval()
    with torch.no_grad():  # a larger last layer so differences would show
        m.fc1b.weight.mul_(10.0)
        m.fc1b.bias.fill_(0.3)
    return m


def _localizer(model, ctx_images, ctx_poses, m, chunk=1024):
    """A localizer whose model scoring path (model_log_likelihood, as the bench times it) the
    tests compare; its outside-the-map rule is test_outside_map.py's."""
    loc = Localizer(model, LocalizerConfig(nearest_contexts=m), 'cpu', chunk=chunk)
    loc.set_map(ViewMap(images=ctx_images, poses=ctx_poses))
    return loc


@torch.inference_mode()
def test_nearest_m_equals_all_contexts_when_m_covers_the_map(model):
    ci, cp, q, p = make_inputs(16, 5, 9, seed=1)
    query = model.encode_query(images_to_tensor(q[None]))
    cam = torch.as_tensor(p)[None]
    full = _localizer(model, ci, cp, 0).model_log_likelihood(query, cam)
    for m in (5, 8):
        near = _localizer(model, ci, cp, m, chunk=4).model_log_likelihood(query, cam)
        assert (near - full).abs().max().item() < 1e-5


@torch.inference_mode()
def test_nearest_m_equals_reference_on_the_selected_contexts(model):
    nc, k, m = 12, 7, 3
    ci, cp, q, p = make_inputs(16, nc, k, seed=2)
    loc = _localizer(model, ci, cp, m, chunk=6)     # 2 particles per chunk: chunk edges too
    query = model.encode_query(images_to_tensor(q[None]))
    cam = torch.as_tensor(p)[None]
    near = loc.model_log_likelihood(query, cam)[0]
    qi = images_to_tensor(q[None])
    for j in range(k):
        d = np.hypot(cp[:, 0] - p[j, 0], cp[:, 1] - p[j, 1])
        sel = np.argsort(d)[:m]
        assert len(set(sel)) == m and np.sort(d)[m] > np.sort(d)[m - 1]  # no ties
        ref = model.reference_log_likelihood(
            images_to_tensor(ci[sel][None]), torch.as_tensor(cp[sel], dtype=torch.float32)[None],
            qi, cam[:, j:j + 1])
        assert abs(near[j].item() - ref.item()) < 1e-4
    # and they differ from attending to all contexts (the selection matters)
    full = _localizer(model, ci, cp, 0).model_log_likelihood(query, cam)[0]
    assert (near - full).abs().max().item() > 1e-3


@torch.inference_mode()
def test_every_benchmarked_path_gives_the_same_log_likelihoods(model):
    """The bench's chunked reference, chunked all-contexts and nearest-M (M >= Nc) updates."""
    k, nc = 11, 4
    inputs = make_inputs(16, nc, k, seed=4)
    outs = {}
    for path, variant, m in (('reference', 'literal', 0), ('fast', 'all_contexts', 0),
                             ('fast', 'nearest_m', 8)):
        cfg = BenchConfig(path, variant, k, nc, M=m, ref_pairs=12, fast_pairs=8)
        up = _Update(cfg, model, inputs, CPU)
        assert up.chunk == {'literal': 3, 'all_contexts': 2, 'nearest_m': PAIRS_PER_CHUNK}[variant]
        outs[variant] = up.full()
        assert outs[variant].shape == (1, k)
    assert (outs['literal'] - outs['all_contexts']).abs().max().item() < 1e-4
    assert (outs['nearest_m'] - outs['all_contexts']).abs().max().item() < 1e-5


def baddbmm_flops(inp, a, b, *args, out_shape=None, **kwargs):
    """FLOPs of baddbmm_ as torch's counter counts baddbmm: 2 b m k n (the add free)."""
    return 2 * a[0] * a[1] * a[2] * b[2]


@pytest.mark.parametrize('path,variant,k,nc,m', [
    ('fast', 'nearest_m', 5, 4, 8), ('fast', 'nearest_m', 5, 12, 3),
    ('fast', 'all_contexts', 5, 12, 0), ('reference', 'literal', 5, 3, 0)])
def test_flop_model_matches_torch_flop_counter(model, path, variant, k, nc, m):
    cfg = BenchConfig(path, variant, k, nc, M=m, ref_pairs=8, fast_pairs=24)
    up = _Update(cfg, model, make_inputs(16, nc, k), CPU)
    # the counter does not know the in-place baddbmm_ of the nearest-M attention: same FLOPs
    # as baddbmm
    in_place = {torch.ops.aten.baddbmm_: baddbmm_flops}
    with torch.inference_mode(), FlopCounterMode(display=False,
                                                 custom_mapping=in_place) as counter:
        up.full()
    fm = FlopModel(16)
    expected = (fm.reference_update(k, nc, up.chunk) if path == 'reference'
                else fm.fast_update(k, nc, m))
    assert counter.get_total_flops() == expected
    if path == 'reference':   # chunks of 2 particles: 3 calls, 2 of them repeat the embedding
        assert fm.reference_reembed(k, nc, up.chunk) == 2 * (fm.cnn3() + fm.cnn5() + nc * (
            fm.cnn1() + fm.cnn4()))


MEMORY_PROBE = '''
import builtins, json, sys
import torch
from dmn_localizer.bench.measure import MemoryProbe
if sys.argv[1] == 'maxrss':      # a kernel without /proc/self/clear_refs (a stand-in: this one
    real_open = builtins.open    # has it, and the fallback must be measured too)
    def no_clear_refs(path, *a, **k):
        if str(path) == '/proc/self/clear_refs':
            raise PermissionError(path)
        return real_open(path, *a, **k)
    builtins.open = no_clear_refs
with MemoryProbe('cpu') as mem:
    x = torch.ones(int(sys.argv[2]) * 2 ** 18)  # MB, written
    del x
print(json.dumps([mem.method, mem.peak_mb]))
'''


def test_memory_probe_sees_torch_allocations():
    """The high-water-mark method sees a 40 MB tensor, in a fresh process (a long test run's
    earlier peaks do not matter to it, but a fresh process keeps the check independent of
    them); the fallback where /proc/self/clear_refs cannot be written is labelled and reads a
    lower bound: maxrss only rises above the process's earlier peak (here 0-41 MB of a 40 MB
    tensor, 0 under a full test run), which the module docstring says."""
    import json
    import subprocess
    import sys

    def probe(method, mb):
        r = subprocess.run([sys.executable, '-c', MEMORY_PROBE, method, str(mb)],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr[-2000:]
        return json.loads(r.stdout.strip().splitlines()[-1])
    got, peak_mb = probe('rss_hwm', 40)
    assert got == 'rss_hwm' and 35.0 < peak_mb < 200.0, (got, peak_mb)
    got, peak_mb = probe('maxrss', 40)
    assert got == 'maxrss' and 0.0 <= peak_mb < 60.0, (got, peak_mb)


def test_slow_reference_is_extrapolated_and_labelled():
    cfg = BenchConfig('reference', 'literal', 8, 4, ref_pairs=8, max_seconds=1e-9, repeats=2)
    out = measure(cfg)
    assert out['extrapolated'] is True and out['measured_particles'] == 2
    assert out['hz'] == pytest.approx(1e3 / out['latency_ms'])
    row = dict(out, path='reference', variant='literal', K=8, Nc=4, M=None, option=None,
               ok=True, gflops=1.0, pct_of_peak=1.0)
    table = format_table({'device': 'cpu', 'peak_gflops': 100.0, 'runs': [row]})
    assert 'EXTRAPOLATED from 2 particles' in table


def test_plan_and_ratios():
    plan = make_plan('cpu')
    keys = {(c.path, c.variant, c.K, c.Nc) for c in plan.configs}
    for k in (256, 2048, 8192):
        assert {('reference', 'literal', k, 4), ('fast', 'nearest_m', k, 4)} <= keys
    for nc in (64, 1024):
        assert {('reference', 'literal', 2048, nc), ('fast', 'nearest_m', 2048, nc),
                ('fast', 'all_contexts', 2048, nc)} <= keys
    assert len(keys) == len(plan.configs) == 12
    assert any(c.K == 16384 for c in make_plan('cuda').configs)
    runs = add_ratios([
        {'path': 'reference', 'K': 1, 'Nc': 4, 'variant': 'literal', 'option': None, 'ok': True,
         'latency_ms': 10.0},
        {'path': 'fast', 'K': 1, 'Nc': 4, 'variant': 'nearest_m', 'option': None, 'ok': True,
         'latency_ms': 2.0},
        {'path': 'fast', 'K': 1, 'Nc': 4, 'variant': 'nearest_m', 'option': 'bf16_autocast',
         'ok': True, 'latency_ms': 1.0}])
    assert runs[1]['speedup_vs_reference'] == 5.0 and runs[2]['speedup_vs_fp32'] == 2.0
    # an aligned model: a row at every grid point with M = 8, and the largest map at 16 and 32
    aligned = [(c.K, c.Nc, c.M) for c in make_plan('cpu', aligned_model='m').configs
               if c.variant == 'aligned']
    assert len(aligned) == 5 + 2 and {(2048, 1024, m) for m in (8, 16, 32)} <= set(aligned)
    assert not any(c.M > 8 for c in make_plan('cpu', quick=True, aligned_model='m').configs)
    row = {'path': 'fast', 'K': 1, 'Nc': 4, 'option': None, 'ok': True}
    runs = add_ratios([dict(row, variant='nearest_m', M=8, latency_ms=6.0),
                       dict(row, variant='aligned', M=8, latency_ms=2.0),
                       dict(row, variant='aligned', M=32, latency_ms=3.0)])
    assert runs[1]['speedup_vs_dmn'] == 3.0 and 'speedup_vs_dmn' not in runs[2]   # same M only


def test_node_latency_line_checks_the_target_at_k256_only():
    from dmn_localizer.commands.bench import node_latency_line
    row = {'K': 256, 'Nc': 16, 'precision': 'bf16', 'p50_ms': 30.0, 'p95_ms': 45.0,
           'received': 40, 'frames': 40}
    assert node_latency_line(row).endswith('target p95 <= 50 ms at K=256: met')
    assert node_latency_line({**row, 'p95_ms': 50.5}).endswith('NOT met')
    assert node_latency_line({**row, 'received': 39}).endswith('NOT met')  # a pose lost
    line = node_latency_line({**row, 'K': 2048, 'p95_ms': 270.0})
    assert 'p95 270.0 ms' in line and 'target' not in line


def test_bench_quick_writes_documented_json(tmp_path):
    from dmn_localizer.model import build_model, DMNConfig, save_model
    out = tmp_path / 'sub' / 'bench.json'
    save_model(build_model(DMNConfig(architecture='aligned')), tmp_path / 'aligned')
    r = subprocess.run([sys.executable, '-m', 'dmn_localizer', 'bench', '--quick', '--threads',
                        '1', '--no-progress', '--json', str(out),
                        '--aligned-model', str(tmp_path / 'aligned')],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    data = json.loads(out.read_text())
    assert set(data) == {'device', 'peak_gflops', 'runs'}
    assert isinstance(data['device'], str) and data['device'].startswith('cpu')
    assert isinstance(data['peak_gflops'], float) and data['peak_gflops'] > 0
    seen = set()
    for row in data['runs']:
        assert row['ok'], row
        assert row['path'] in ('reference', 'fast')
        for key, typ in (('K', int), ('Nc', int), ('hz', float), ('latency_ms', float),
                         ('peak_mem_mb', float)):
            assert isinstance(row[key], typ), (key, row)
        assert row['hz'] > 0 and row['peak_mem_mb'] >= 0
        assert isinstance(row['extrapolated'], bool)
        seen.add((row['path'], row['variant'], row['K'], row['Nc']))
        if row['variant'] == 'aligned':   # another network: no FLOP model, compared to dmn
            assert row['gflops'] is None and row['speedup_vs_dmn'] > 0 and row['M'] == 8
        else:
            assert isinstance(row['gflops'], float) and row['gflops'] > 0
        if row['path'] == 'fast' and row['variant'] != 'aligned':
            assert row['speedup_vs_reference'] > 0
    assert seen == {('reference', 'literal', 32, 4), ('fast', 'nearest_m', 32, 4),
                    ('reference', 'literal', 32, 16), ('fast', 'nearest_m', 32, 16),
                    ('fast', 'all_contexts', 32, 16), ('fast', 'aligned', 32, 4),
                    ('fast', 'aligned', 32, 16)}
    assert 'x_dmn' in r.stdout
    assert 'GFLOP/s' in r.stdout and 'nearest_m' in r.stdout and 'wrote' in r.stdout


@pytest.mark.parametrize('argv', [
    ['--json', 'x.json', '--repeats', '0'],
    ['--json', 'x.json', '--device', 'tpu'],
    ['--json', 'x.json', '--max-seconds', '0'],
    ['--json', 'x.json', '--model', 'no/such/model'],
])
def test_bad_arguments_one_line_exit_2(argv, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(['bench', *argv]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith('dmn-localizer bench: error:')
    assert not (tmp_path / 'x.json').exists()


def test_missing_json_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        main(['bench', '--quick'])
    assert exc.value.code == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
