"""Evaluation protocol, baselines, table/JSON and plots on a tiny dataset."""
import json
import math

import numpy as np
import pytest
import torch

from dmn_localizer.util.errors import UserError
from dmn_localizer.evaluation.intervals import percent_with_interval
from dmn_localizer.evaluation import (EvalConfig, evaluate, likelihood_map, load_episodes,
                                      markdown_table, METHODS, run_method, summarise)
from dmn_localizer.model import build_model, DMN, DMNConfig, save_model

torch.set_num_threads(1)

SMALL = dict(k_global=64, k_tracking=32, contexts=3)


@pytest.fixture(scope='module')
def test_data(tmp_path_factory):
    from dmn_localizer.data.build import build_dataset
    root = tmp_path_factory.mktemp('evaldata')
    build_dataset('mazes', 'test', 5, str(root / 'test'), image_size=16, workers=1,
                  progress=False)
    return root / 'test'


@pytest.fixture(scope='module')
def episodes(test_data):
    from dmn_localizer.data.dataset import open_dataset
    return load_episodes(open_dataset(test_data), 4, 4, 5, 0)


def test_summarise():
    cfg = EvalConfig()
    g = np.array([[1.0, 20, 20, 20, 1], [20, 20, 20, 20, 20]])
    t = np.array([[0, 0, 0, 0, 3.0], [0, 0, 0, 0, 4.0]])
    s = summarise(g, t, cfg)
    assert s['success@1'] == 0.5 and s['success@5'] == 0.5
    assert math.isclose(s['rmse@5'], math.sqrt(12.5))
    assert s['success_by_t'] == [0.5, 0, 0, 0, 0.5]


def test_baselines(episodes):
    cfg = EvalConfig(**SMALL)
    cc = run_method('closest_context', None, episodes, 'global', 64, cfg)
    assert cc.shape == (4, 5)
    # closest context error is the distance to the nearest of the chosen contexts (the
    # protocol's own draw of Nc contexts: the same generator, batches of 4 // (64 * 3) -> 1)
    from dmn_localizer.filter.rollout import make_batch
    rng = np.random.default_rng(cfg.seed)
    for i, ep in enumerate(episodes):
        batch = make_batch([ep], cfg.contexts, rng, 0.0, cfg.steps, 'cpu')
        d = (batch.context_poses[0, None, :, :2] - batch.query_poses[0, :, None, :2]).norm(dim=-1)
        np.testing.assert_allclose(cc[i], d.min(-1).values.numpy(), rtol=1e-5)
    unin_t = run_method('uninformed', None, episodes, 'tracking', 2000, cfg)
    unin_g = run_method('uninformed', None, episodes, 'global', 2000, cfg)
    # a uniform belief's mean sits near the world centre
    centre = np.array([[np.linalg.norm(ep.query_poses[t, :2] - 20.0) for t in range(5)]
                       for ep in episodes])
    assert np.abs(unin_g[:, 0] - centre[:, 0]).max() < 2.0
    # the perturbed tracking belief is off by a few metres, not 0 and not the world scale
    assert 0.5 < unin_t[:, 0].mean() < 15.0
    again = run_method('uninformed', None, episodes, 'tracking', 2000, cfg)
    assert np.array_equal(again, unin_t)   # seeded


def test_evaluate_dmn_and_table(episodes):
    cfg = EvalConfig(**SMALL, steps=2)
    res = evaluate(_model(), episodes, ['dmn', 'closest_context', 'uninformed'], cfg)
    for m in ('dmn', 'closest_context', 'uninformed'):
        assert {'success@1', 'success@2', 'rmse@2'} <= set(res[m])
    assert 'success@1_shuffled_query' in res['dmn']
    table = markdown_table(res, cfg)
    assert table.count('\n') == 8 and '| dmn |' in table
    # each success rate with its 95% interval over the episodes
    n = len(episodes)
    assert res['dmn']['episodes'] == n
    assert percent_with_interval(res['dmn']['success@2'], n) in table and '(Wilson)' in table
    with pytest.raises(ValueError, match='valid'):
        evaluate(None, episodes, ['bogus'], cfg)


def test_nearest_contexts_in_the_protocol(episodes):
    """``nearest_contexts`` M runs the DMN as the localizer does on large maps: with M >= Nc
    every particle still sees every context (the same errors as the paper's protocol); with
    M < Nc it sees fewer (other errors); methods without a DMN are unaffected."""
    cfg = EvalConfig(**SMALL, steps=2)
    model = _model()
    with torch.no_grad():   # a larger last layer so that the likelihoods matter
        model.fc1b.weight.mul_(30.0)
    full = run_method('dmn', model, episodes, 'global', 64, cfg)
    same = run_method('dmn', model, episodes, 'global', 64,
                      EvalConfig(**SMALL, steps=2, nearest_contexts=3))
    fewer = run_method('dmn', model, episodes, 'global', 64,
                       EvalConfig(**SMALL, steps=2, nearest_contexts=1))
    assert np.allclose(same, full, atol=1e-4)
    assert np.abs(fewer - full).max() > 0.1
    cc = EvalConfig(**SMALL, steps=2, nearest_contexts=1)
    assert np.array_equal(run_method('closest_context', None, episodes, 'global', 64, cc),
                          run_method('closest_context', None, episodes, 'global', 64, cfg))


def test_likelihood_map(episodes):
    grid, extent = likelihood_map(_model(), episodes[0], 3, resolution_m=4.0, n_yaw=4)
    assert grid.shape == (10, 10) and extent == (0.0, 40.0, 0.0, 40.0)
    assert np.isfinite(grid).all()


def test_eval_cli_writes_json_and_plots(test_data, tmp_path, capsys):
    from dmn_localizer.cli import main
    save_model(_model(), tmp_path / 'm')
    out = tmp_path / 'res.json'
    rc = main(['eval', '--model', str(tmp_path / 'm'), '--domain', 'mazes', '--data',
               str(test_data), '--episodes', '3', '--json', str(out), '--k-global', '32',
               '--k-tracking', '16', '--steps', '2', '--sweep-episodes', '2', '--heatmaps',
               '1', '--no-diagnostic', '--threads', '1'])
    assert rc == 0
    res = json.loads(out.read_text())
    assert set(res) == {'dmn', 'closest_context', 'uninformed'}
    assert '| closest_context |' in capsys.readouterr().out
    plots = tmp_path / 'res_plots'
    for name in ('success_vs_t.png', 'success_vs_k.png', 'success_vs_nc.png',
                 'likelihood_0.png'):
        assert (plots / name).stat().st_size > 1000
    # the same table without plots: the episodes (and their contexts) do not depend on them
    out2 = tmp_path / 'res_no_plots.json'
    rc = main(['eval', '--model', str(tmp_path / 'm'), '--domain', 'mazes', '--data',
               str(test_data), '--episodes', '3', '--json', str(out2), '--k-global', '32',
               '--k-tracking', '16', '--steps', '2', '--no-plots', '--no-diagnostic',
               '--threads', '1'])
    assert rc == 0
    assert json.loads(out2.read_text()) == res
    # baselines need no model
    rc = main(['eval', '--domain', 'mazes', '--data', str(test_data), '--episodes', '2',
               '--methods', 'uninformed,closest_context', '--k-global', '16', '--steps', '2',
               '--threads', '1'])
    assert rc == 0
    # the paper's query sampling: other query views, so other closest contexts
    out3 = tmp_path / 'res_random.json'
    rc = main(['eval', '--domain', 'mazes', '--data', str(test_data), '--episodes', '3',
               '--methods', 'closest_context', '--steps', '2', '--queries', 'random',
               '--json', str(out3), '--threads', '1'])
    assert rc == 0
    assert json.loads(out3.read_text())['closest_context']['rmse@2'] != pytest.approx(
        res['closest_context']['rmse@2'])
    views = json.loads((test_data / 'manifest.json').read_text())['contexts_per_world']
    assert main(['eval', '--domain', 'mazes', '--data', str(test_data), '--episodes', '1',
                 '--methods', 'uninformed', '--queries', 'random', '--steps', '5',
                 '--contexts', str(views - 2), '--threads', '1']) == 2
    assert 'too few for' in capsys.readouterr().err
    assert main(['eval', '--data', str(test_data), '--methods', 'dmn', '--episodes', '1',
                 '--threads', '1']) == 2


def test_all_methods_with_ablation_models(test_data, tmp_path, capsys):
    """--methods all: every method of the paper's table, the ablations and the learned
    baselines each from its own model file (tiny untrained models: this checks the plumbing,
    not quality)."""
    from dmn_localizer.cli import main
    ablations = {'dmn_no_attention': {'attention': 'uniform'},
                 'dmn_no_egocentric': {'egocentric': False},
                 'dmn_no_attention_no_egocentric': {'attention': 'uniform',
                                                    'egocentric': False},
                 'latent_image': {'architecture': 'latent_image'},
                 'latent_vector': {'architecture': 'latent_vector'},
                 'regression': {'architecture': 'regression'},
                 'aligned': {'architecture': 'aligned'},
                 'aligned_no_warp': {'architecture': 'aligned', 'warp': False}}
    save_model(_model(), tmp_path / 'dmn')
    argv = ['eval', '--model', str(tmp_path / 'dmn'), '--domain', 'mazes', '--data',
            str(test_data), '--episodes', '2', '--k-global', '16', '--k-tracking', '8',
            '--steps', '5', '--no-plots', '--no-diagnostic', '--threads', '1',
            '--methods', 'all']
    paths = {}
    for name, options in ablations.items():
        paths[name] = tmp_path / name
        save_model(build_model(DMNConfig(image_size=16, **options)), paths[name])

    def with_models(models):
        return argv + [a for n, p in models.items() for a in ('--method-model', f'{n}={p}')]

    out = tmp_path / 'all.json'
    assert main(with_models(paths) + ['--json', str(out)]) == 0
    res = json.loads(out.read_text())
    assert set(res) == set(METHODS) and all(0.0 <= r['success@1'] <= 1.0 for r in res.values())
    assert {'latent_image', 'latent_vector', 'regression'} <= set(res)
    for r in res.values():
        assert 0.0 <= r['success@5'] <= 1.0 and math.isfinite(r['rmse@5']) and r['rmse@5'] > 0
    table = capsys.readouterr().out
    for name in ('dmn_no_attention_no_egocentric', 'latent_image', 'latent_vector',
                 'regression', 'aligned', 'aligned_no_warp'):
        assert f'| {name} |' in table
    # the aligned methods need an aligned model with (or without) the warp
    assert main(with_models(dict(paths, aligned_no_warp=paths['aligned']))) == 2
    assert 'aligned_no_warp needs a model with warp False' in capsys.readouterr().err
    # a model that lacks what the method ablates, or a missing one: one line, exit 2
    assert main(with_models(dict(paths, dmn_no_attention=tmp_path / 'dmn'))) == 2
    assert 'dmn_no_attention needs a model with attention' in capsys.readouterr().err
    assert main(with_models({'dmn_no_attention': paths['dmn_no_attention']})) == 2
    assert '--method-model dmn_no_egocentric=PATH' in capsys.readouterr().err
    # a model of another architecture: one line naming the file and both architectures
    for method, wrong in (('latent_image', 'dmn'), ('regression', 'latent_vector'),
                          ('dmn_no_egocentric', 'regression')):
        assert main(with_models(dict(paths, **{method: paths.get(wrong, tmp_path / wrong)}))) == 2
        err = capsys.readouterr().err.strip()
        needed = method if method in ablations and 'architecture' in ablations[method] \
            else 'dmn'
        assert f"{method} needs a model with architecture '{needed}'" in err, err
        assert str(tmp_path / wrong) in err and len(err.splitlines()) == 1, err


def test_aligned_method_has_its_image_use_twins(episodes):
    torch.manual_seed(0)
    model = build_model(DMNConfig(architecture='aligned', image_size=16)).eval()
    cfg = EvalConfig(**SMALL)
    res = evaluate({'aligned': model}, episodes, ['aligned', 'uninformed'], cfg)
    for what in ('query', 'context'):
        assert 0.0 <= res['aligned'][f'success@5_shuffled_{what}'] <= 1.0
        assert f'rmse@5_shuffled_{what}' in res['aligned']
    assert 'success@1_shuffled_query' not in res['uninformed']
    assert '| aligned, query images shuffled |' in markdown_table(res, cfg)


def test_unknown_method_is_user_error(test_data):
    from dmn_localizer.evaluation.run import run_evaluation
    with pytest.raises(UserError, match='bogus'):
        run_evaluation(model_path=None, data=test_data, episodes=1, methods=['bogus'])


def _model():
    return DMN(DMNConfig(image_size=16))


def test_eval_context_pooling_overrides_the_card(test_data, tmp_path):
    """--context-pooling decides how aligned models combine contexts, whatever their card
    says; 'model' keeps the card's."""
    from dmn_localizer.cli import main
    torch.manual_seed(1)
    save_model(build_model(DMNConfig(architecture='aligned', image_size=16,
                                     context_pooling='sum')), tmp_path / 'al')
    results = {}
    for pooling in ('model', 'sum', 'overlap_attention'):
        out = tmp_path / f'{pooling}.json'
        assert main(['eval', '--domain', 'mazes', '--data', str(test_data), '--episodes', '3',
                     '--methods', 'aligned', '--method-model', f'aligned={tmp_path / "al"}',
                     '--k-global', '64', '--k-tracking', '32', '--steps', '2', '--no-plots',
                     '--no-diagnostic', '--threads', '1', '--context-pooling', pooling,
                     '--json', str(out)]) == 0
        results[pooling] = json.loads(out.read_text())['aligned']
    assert results['model'] == results['sum']
    assert results['overlap_attention']['rmse@2'] != pytest.approx(results['sum']['rmse@2'])


def test_region_oracle_probe(test_data, tmp_path):
    """``scripts/probe_region_oracle.py`` (the aligned_mazes_e2e card's region figures): its
    region lookup puts every view of a real dataset in a free block of the world it was
    rendered in (so x is the column and y the row), the ``grid`` oracle keeps exactly the
    particles of the query's region, a context's own view sees what a context saw, and the
    script runs on eval's episodes: in tracking, a perfect observation of every view
    (``truth``) brings the filter within 3 m, the split by view overlap counts every
    episode once, and the oracles that mix in the learned model run."""
    import importlib.util
    import re
    import subprocess
    import sys
    from argparse import Namespace
    from pathlib import Path
    from dmn_localizer.data.dataset import open_dataset
    from dmn_localizer.sim.mazes import generate_maze
    script = Path(__file__).resolve().parents[1] / 'scripts' / 'probe_region_oracle.py'
    spec = importlib.util.spec_from_file_location('probe_region_oracle', script)
    probe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(probe)
    ds = open_dataset(test_data)
    ep = load_episodes(ds, 1, 16, 5, 0, queries='random')[0]
    world = generate_maze(ep.world_seed)
    regions = probe.Regions(ep.world_seed)
    views = torch.as_tensor(np.concatenate([ep.context_poses, ep.query_poses]))
    res = world.layout_resolution_m
    cells = (views[:, :2] / res).long()
    assert not world.layout[cells[:, 1], cells[:, 0]].any()   # views stand in free blocks
    assert (regions(views[:, :2]) == torch.as_tensor(
        world.params['region'])[cells[:, 1], cells[:, 0]]).all()
    # grid: a context shares the query's region -> the particles of that region are kept
    g = torch.Generator().manual_seed(0)
    particles = torch.rand(4096, 2, generator=g) * 40.0
    query = views[-1, :2]
    anchors = torch.stack([query + 0.1, query + 0.2])
    kept = probe.oracle_ok(Namespace(oracle='grid'), particles, regions, query, anchors)
    assert torch.equal(kept, regions(particles) == regions(query[None])[0])
    assert 0 < kept.float().mean() < 1
    out = subprocess.run([sys.executable, str(script), '--data', str(test_data), '--oracle',
                          'walls', '--episodes', '3'], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    assert re.search(r'walls, global \(3 episodes\): global success@1\.\.5 (\d+\.\d% / ){4}'
                     r'\d+\.\d%', out.stdout), out.stdout
    # what a context saw: every context's own view sees it, from its own pose
    hfov = float(ds.manifest['camera']['hfov_deg'])
    cp = torch.as_tensor(ep.context_poses).double()
    seen = probe.wall_points(ds, ep.world_seed, cp[:4], hfov)
    assert probe.query_overlaps(ds, ep.world_seed, seen, cp[:4], hfov, 0.5, 8).all()
    out = subprocess.run([sys.executable, str(script), '--data', str(test_data), '--oracle',
                          'truth', '--mode', 'tracking', '--episodes', '3', '--overlap-m', '2',
                          '--overlap-columns', '2'], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    rmse = re.search(r'truth, tracking \(3 episodes\): tracking rmse@1\.\.5 .* / (\d+\.\d+) m',
                     out.stdout)
    assert rmse and float(rmse.group(1)) < 3.0, out.stdout
    parts = re.findall(r'(\d+) episodes whose queries', out.stdout)
    assert len(parts) == 2 and sum(map(int, parts)) == 3, out.stdout
    # the oracles that mix in a learned model (a tiny untrained one at the data's 16 px) load
    # it and split the episodes too
    from dmn_localizer.model import build_model, DMNConfig, save_model
    torch.manual_seed(0)
    model = tmp_path / 'tiny'
    save_model(build_model(DMNConfig(architecture='aligned', image_size=16)), model)
    for oracle in ('model+seen', 'seen+model'):
        out = subprocess.run([sys.executable, str(script), '--data', str(test_data),
                              '--oracle', oracle, '--model', str(model), '--episodes', '3',
                              '--overlap-m', '2', '--overlap-columns', '2'],
                             capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr
        assert f'model: {model} (dmn-' in out.stdout, out.stdout
        assert re.search(re.escape(oracle) + r', global \(3 episodes\): global success@1\.\.5 ',
                         out.stdout), out.stdout
        parts = re.findall(r'(\d+) episodes whose queries', out.stdout)
        assert len(parts) == 2 and sum(map(int, parts)) == 3, out.stdout
