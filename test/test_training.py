"""Training: losses, a tiny run lowers the loss, exact resume, logs, diagnostics."""
import csv
import math

import numpy as np
import pytest
import torch

from dmn_localizer.util.errors import FileFormatError, UserError
from dmn_localizer.filter import FilterConfig
from dmn_localizer.filter.rollout import (attention_loss, dense_loss, initial_particles,
                                          make_batch, pose_contrast_loss, pose_loss,
                                          PoseContrast, rollout)
from dmn_localizer.model import DMN, DMNConfig, load_model
from dmn_localizer.training import load_train_config, train, TrainConfig
from dmn_localizer.data.dataset import open_dataset

torch.set_num_threads(1)


@pytest.fixture(scope='session')
def tiny_data(tmp_path_factory):
    from dmn_localizer.data.build import build_dataset
    root = tmp_path_factory.mktemp('data')
    # 16 px images keep the tests fast (the model serves any multiple of 4 >= 8)
    build_dataset('mazes', 'train', 4, str(root / 'train'), image_size=16, workers=1,
                  progress=False)
    build_dataset('mazes', 'val', 4, str(root / 'val'), image_size=16, workers=1,
                  progress=False)
    return root


def _cfg(root, **kw):
    base = dict(train_data=str(root / 'train'), val_data=str(root / 'val'), context_pool=6,
                contexts=(2, 3), steps=2, batch_size=2, particles=4, max_steps=4, val_every=2,
                val_episodes=4, val_batch_size=4, val_contexts=2, log_every=1, dense_weight=1.0,
                attention_weight=0.5, pose_contrast_weight=0.5,
                global_prob=0.5, near_truth_fraction=0.25, near_context_prob_start=1.0,
                init_std_start=(1.5, 15.0), curriculum_steps=3, seed=3,
                model={'image_size': 16}, threads=1)
    base.update(kw)
    return TrainConfig(**base)


def test_pose_loss_wraps_and_normalises():
    e = torch.tensor([[20.0, 0.0, math.pi - 0.05]])
    t = torch.tensor([[0.0, 0.0, -math.pi + 0.05]])
    assert torch.allclose(pose_loss(e, t, 20.0, 0.5), torch.tensor([1.0 + 0.5 * 0.01]))


def test_dense_loss_prefers_weight_on_truth():
    p = torch.tensor([[[0.0, 0.0, 0.0], [10.0, 0.0, 0.0]]])
    truth = torch.zeros(1, 3)
    good = dense_loss(p, torch.tensor([[0.0, -10.0]]), truth, 3.0, 0.5)
    bad = dense_loss(p, torch.tensor([[-10.0, 0.0]]), truth, 3.0, 0.5)
    assert good < bad


def test_attention_loss_prefers_overlapping_context():
    ctx = torch.tensor([[[0.0, 0.0, 0.0], [0.0, 0.0, 3.0], [20.0, 0.0, 0.0]]])
    truth = torch.tensor([[1.0, 0.0, 0.1]])
    good = attention_loss(torch.tensor([[0.9, 0.05, 0.05]]), ctx, truth, 4.0, 0.8)
    bad = attention_loss(torch.tensor([[0.05, 0.9, 0.05]]), ctx, truth, 4.0, 0.8)
    assert good < bad


def test_pose_contrast_loss_trains_the_view_keys_on_relative_pose(tiny_data):
    """The pose-contrast loss reaches the coordinate weights of CNN2 (the path that reads
    where a particle is relative to a view), a few Adam steps on one batch lower it, and
    contexts far from the truth contribute nothing."""
    torch.manual_seed(0)
    ds = open_dataset(tiny_data / 'train')
    eps = list(ds.iter_episodes(4, 1, seed=0, loop=False))[:4]
    b = make_batch(eps, 4, np.random.default_rng(0), near_context_prob=1.0)
    model = DMN(DMNConfig(image_size=16))
    spec = PoseContrast()
    truth = b.query_poses[:, 0]

    def loss(context_poses=None):
        m = model.build_map(b.context_images,
                            b.context_poses if context_poses is None else context_poses)
        q = model.encode_query(b.query_images[:, 0])
        value, top1 = pose_contrast_loss(model, m, q, truth, m.poses, spec,
                                         torch.Generator().manual_seed(0))
        assert value.shape == top1.shape == (4,)
        return value.mean()
    first = loss()
    first.backward()
    assert model.cnn2a.weight.grad[:, -4:].abs().sum() > 0
    far = b.context_poses.clone()
    far[..., :2] += 1000.0
    assert loss(far).item() < 1e-6 * first.item()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(15):
        opt.zero_grad()
        loss().backward()
        opt.step()
    assert loss().item() < 0.9 * first.item()
    with pytest.raises(ValueError, match='pose_contrast_weight'):
        TrainConfig(model={'architecture': 'latent_image'}, pose_contrast_weight=1.0)


def test_pose_contrast_top1_tells_view_agreement_from_proximity():
    """Synthetic attention logits (stand-ins for a model, which the loss only asks for its
    ``attention_logits``): logits that peak at the true pose score top-1 everywhere and a
    lower loss than flat ones, which never score (ties lose); logits that rise towards the
    context's viewpoint (the proximity score the model card measured) never put the truth
    first."""
    g = torch.Generator().manual_seed(0)
    B, N = 8, 3
    truth = torch.rand(B, 3, generator=g) * torch.tensor([40.0, 40.0, 1.0])
    ctx = truth[:, None, :].repeat(1, N, 1)
    ctx[:, 1:, :2] += 30.0                                       # one overlapping context
    ctx[:, 0, 0] += 3.0                                          # 3 m ahead of the truth

    class Logits:
        def __init__(self, fn):
            self.fn = fn

        def attention_logits(self, map_state, query, poses):     # (B, n, N)
            return self.fn(poses)[..., None].expand(-1, -1, N)

    def run(fn):
        return pose_contrast_loss(Logits(fn), None, None, truth, ctx, PoseContrast(),
                                  torch.Generator().manual_seed(1))

    def log_kernel(p):   # the target's own log-kernel (0.75 m, 10 deg): the ideal logits
        dyaw = torch.remainder(p[..., 2] - truth[:, None, 2] + math.pi, 2 * math.pi) - math.pi
        return -0.5 * ((p[..., :2] - truth[:, None, :2]).square().sum(-1) / 0.75 ** 2
                       + dyaw.square() / math.radians(10.0) ** 2)
    agree, top_agree = run(log_kernel)
    flat, top_flat = run(lambda p: torch.zeros(p.shape[:2]))
    near, top_near = run(lambda p: -(p[..., :2] - ctx[:, None, 0, :2]).norm(dim=-1))
    assert top_agree.tolist() == [1.0] * B and top_near.sum() == 0
    assert top_flat.sum() == 0     # the truth first among equal logits is a tie, not a win
    assert (agree < flat - 0.5).all() and (near > agree).all()  # the ideal is the minimum
    # flat logits: log(16) nats, times the overlapping context's weight exp(-0.5 (3/4)^2)
    torch.testing.assert_close(flat, torch.full((B,), math.log(16.0) * math.exp(-0.5 * 0.75 ** 2)))


def test_initial_particles(tiny_data):
    ds = open_dataset(tiny_data / 'train')
    eps = list(ds.iter_episodes(6, 2, seed=0, loop=False))[:4]
    rng = np.random.default_rng(0)
    b = make_batch(eps, 3, rng, near_context_prob=1.0)
    for ep, cp in zip(eps, b.context_poses):
        d = np.linalg.norm(ep.context_poses[:, :2] - ep.query_poses[0, :2], axis=1)
        assert np.isclose(np.linalg.norm(cp[:, :2].numpy() - ep.query_poses[0, :2], axis=1)
                          .min(), d.min(), atol=1e-4)
    g = torch.Generator().manual_seed(0)
    p = initial_particles(b, 400, g, global_prob=0.0, init_std=(2.0, 10.0), perturb_mean=False,
                          near_truth_fraction=0.5, near_truth_std=(0.1, 1.0))
    assert p.shape == (4, 400, 3)
    near = (p[:, :200, :2] - b.query_poses[:, None, 0, :2]).norm(dim=-1)
    assert near.max() < 1.0
    far = (p[:, 200:, :2] - b.query_poses[:, None, 0, :2]).std()
    assert 1.5 < far < 2.5
    # perturbed tracking belief: the cloud's mean is off the truth by ~ the std
    offs = torch.stack([(initial_particles(b, 2000, g, init_std=(6.0, 30.0)).mean(1)[:, :2]
                         - b.query_poses[:, 0, :2]) for _ in range(20)])
    assert 4.0 < offs.std() < 8.0
    pg = initial_particles(b, 400, g, global_prob=1.0)
    assert pg[..., :2].min() >= 0 and pg[..., :2].max() <= 40 and pg[..., :2].std() > 8


def test_tiny_training_lowers_loss(tiny_data):
    """A few Adam steps through the filter (soft resampling, T=2, both losses) on one batch."""
    torch.manual_seed(0)
    ds = open_dataset(tiny_data / 'train')
    eps = list(ds.iter_episodes(4, 2, seed=0, loop=False))[:4]
    b = make_batch(eps, 4, np.random.default_rng(0))
    g = torch.Generator().manual_seed(0)
    p0 = initial_particles(b, 8, g, init_std=(6.0, 30.0))
    model = DMN(DMNConfig(image_size=16))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    fcfg = FilterConfig(resample='soft', soft_alpha=0.5, resample_ess_ratio=1.0)

    def loss_at(seed):
        r = rollout(model, b, p0, fcfg, torch.Generator().manual_seed(seed),
                    dense_kernel=(3.0, 0.5))
        return r['mse'].mean() + r['dense'].mean()
    first = loss_at(0).item()
    for _ in range(12):
        opt.zero_grad()
        loss_at(0).backward()
        opt.step()
    assert loss_at(0).item() < first - 0.05


def test_train_writes_logs_and_resume_is_exact(tiny_data, tmp_path):
    straight = train(_cfg(tiny_data), tmp_path / 'a', progress=False)
    assert straight['steps'] == 4
    train(_cfg(tiny_data, max_steps=2), tmp_path / 'b', progress=False)
    resumed = train(_cfg(tiny_data), tmp_path / 'b', resume=True, progress=False)
    assert resumed['steps'] == 4
    a = load_model(tmp_path / 'a' / 'final').state_dict()
    b = load_model(tmp_path / 'b' / 'final').state_dict()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    for name in ('train_log.csv', 'val_log.csv'):
        with open(tmp_path / 'a' / name) as fa, open(tmp_path / 'b' / name) as fb:
            ra, rb = list(csv.DictReader(fa)), list(csv.DictReader(fb))
        assert [r['step'] for r in ra] == [r['step'] for r in rb]
        key = 'loss' if name == 'train_log.csv' else 'val_mse'
        assert [r[key] for r in ra] == [r[key] for r in rb]
    with open(tmp_path / 'a' / 'val_log.csv') as f:
        row = next(csv.DictReader(f))
    for k in ('val_mse_gap_query', 'val_mse_gap_context', 'near_dense_gap_query',
              'near_pose_contrast', 'near_pose_top1'):
        assert k in row
    assert 0.0 <= float(row['near_pose_top1']) <= 1.0
    with open(tmp_path / 'a' / 'train_log.csv') as f:
        assert all(float(r['pose_contrast']) > 0 for r in csv.DictReader(f))
    assert (tmp_path / 'a' / 'best.safetensors').exists()


def test_paper_recipe_branch_and_early_stop(tiny_data, tmp_path):
    cfg = _cfg(tiny_data, steps=1, dense_weight=0.0, global_prob=0.0, near_truth_fraction=0.0,
               near_context_prob_start=0.0, contexts=(2, 2), max_steps=6, val_every=1,
               patience=1, lr=0.0)
    out = train(cfg, tmp_path / 'p', progress=False)
    assert out['stopped_early'] and out['steps'] == 1


def test_resume_errors(tiny_data, tmp_path):
    with pytest.raises(UserError, match='no checkpoint'):
        train(_cfg(tiny_data), tmp_path / 'none', resume=True, progress=False)
    train(_cfg(tiny_data, max_steps=0), tmp_path / 'c', progress=False)
    (tmp_path / 'c' / 'checkpoint' / 'state.pt').write_bytes(b'garbage')
    with pytest.raises(FileFormatError, match='state.pt'):
        train(_cfg(tiny_data), tmp_path / 'c', resume=True, progress=False)


def test_warm_start_from_the_command_line(tiny_data, tmp_path, capsys):
    """``train --init-from MODEL`` starts from that model's weights (here: 0 steps, so the
    result is those weights), whatever the seed; a model of another architecture is refused
    with a one-line error."""
    import yaml
    from dmn_localizer.cli import main
    train(_cfg(tiny_data, max_steps=0), tmp_path / 'a', progress=False)
    cfg = yaml.safe_load((tmp_path / 'a' / 'config.yaml').read_text())
    cfg['seed'] = 11                       # a fresh start would differ from run a's weights
    (tmp_path / 'b.yaml').write_text(yaml.safe_dump(cfg))
    argv = ['train', '--config', str(tmp_path / 'b.yaml'), '--max-steps', '0',
            '--no-progress']
    assert main(argv + ['--out', str(tmp_path / 'fresh')]) == 0
    assert main(argv + ['--out', str(tmp_path / 'b'),
                        '--init-from', str(tmp_path / 'a' / 'final')]) == 0
    a, b, fresh = (load_model(tmp_path / n / 'final').state_dict() for n in ('a', 'b', 'fresh'))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], fresh[k]) for k in a)
    cfg.update(model=dict(cfg['model'], architecture='latent_image'), attention_weight=0.0,
               pose_contrast_weight=0.0)
    (tmp_path / 'c.yaml').write_text(yaml.safe_dump(cfg))
    capsys.readouterr()
    assert main(['train', '--config', str(tmp_path / 'c.yaml'), '--max-steps', '0',
                 '--no-progress', '--out', str(tmp_path / 'c'),
                 '--init-from', str(tmp_path / 'a' / 'final')]) == 2
    err = capsys.readouterr().err.strip()
    assert 'init_from model config differs' in err and len(err.splitlines()) == 1


def test_train_on_several_folders(tiny_data, tmp_path):
    """``train --train-data A --train-data B`` trains on both folders (no hand-written merge):
    the resolved config lists them and the run finishes."""
    import yaml
    from dmn_localizer.cli import main
    train(_cfg(tiny_data, max_steps=0), tmp_path / 'a', progress=False)
    cfg = tmp_path / 'a' / 'config.yaml'
    second = str(tmp_path / 'second')
    from dmn_localizer.data.build import build_dataset
    build_dataset('mazes', 'train', 2, second, image_size=16, seed=50, workers=1,
                  progress=False)
    folders = [str(tiny_data / 'train'), second]
    assert main(['train', '--config', str(cfg), '--max-steps', '3', '--no-progress', '--out',
                 str(tmp_path / 'b'), '--train-data', folders[0], '--train-data',
                 folders[1]]) == 0
    assert yaml.safe_load((tmp_path / 'b' / 'config.yaml').read_text())['train_data'] == folders
    assert open_dataset(folders).n_worlds == 6
    assert (tmp_path / 'b' / 'final.safetensors').exists()


def test_time_budget_ends_the_run_with_a_validation(tiny_data, tmp_path):
    """max_minutes stops training (well before max_steps) with a last validation, and the
    best and final models are written."""
    import csv
    s = train(_cfg(tiny_data, max_steps=10**6, val_every=10**6, max_minutes=0.002),
              tmp_path / 'a', progress=False)
    assert 0 < s['steps'] < 10**6
    with open(tmp_path / 'a' / 'val_log.csv', newline='') as f:
        rows = list(csv.DictReader(f))
    assert [int(r['step']) for r in rows] == [0, s['steps']]
    assert (tmp_path / 'a' / 'final.safetensors').exists()


def test_config_files(tmp_path):
    from pathlib import Path
    repo = Path(__file__).resolve().parents[1]
    for name in ('train_mazes.yaml', 'train_mazes_paper.yaml'):
        cfg = load_train_config(repo / 'config' / name)
        assert cfg.model_config().image_size == 32
        assert cfg.context_pool >= cfg.contexts[1]
    bad = tmp_path / 'bad.yaml'
    bad.write_text('particles: 4\nbogus: 1\n')
    with pytest.raises(FileFormatError, match='bogus'):
        load_train_config(bad)
    with pytest.raises(ValueError):
        TrainConfig(contexts=(4, 40))


def test_decoys_sit_where_the_truth_sits_relative_to_other_contexts():
    """Each decoy has the truth's offset from its nearest context, w.r.t. some context."""
    import math

    from dmn_localizer.geometry import relative
    from dmn_localizer.filter.rollout import Batch, decoy_particles
    g = torch.Generator().manual_seed(0)
    B, N = 3, 5
    ctx = torch.rand(B, N, 3, generator=g) * 40
    ctx[..., 2] = (ctx[..., 2] / 40 * 2 - 1) * math.pi
    truth = ctx[:, 2:3].clone()
    truth[..., :2] += 1.0  # nearest context: index 2
    batch = Batch(torch.zeros(B, N, 3, 8, 8), ctx, torch.zeros(B, 1, 3, 8, 8), truth,
                  torch.zeros(B, 1, 3), torch.full((B,), 40.0))
    decoys = decoy_particles(batch, 50, (0.0, 0.0), g)
    offset = relative(ctx[:, 2], truth[:, 0])                          # (B, 3)
    for b in range(B):
        rel = relative(ctx[b][None, :, :], decoys[b][:, None, :].expand(50, N, 3))  # (50,N,3)
        err = (rel - offset[b]).abs()
        err[..., 2] = torch.remainder(err[..., 2] + math.pi, 2 * math.pi) - math.pi
        assert (err.abs().amax(-1).amin(-1) < 1e-3).all()  # every decoy matches some context


def test_relative_pose_probe_script_runs(tiny_data, tmp_path):
    """``scripts/probe_relative_pose.py`` (the model card's proximity-vs-view-agreement
    table) runs on a real model and dataset and prints its three figures."""
    import re
    import subprocess
    import sys
    from pathlib import Path
    from dmn_localizer.model import save_model
    torch.manual_seed(0)
    save_model(DMN(DMNConfig(image_size=16)), tmp_path / 'm')
    script = Path(__file__).resolve().parents[1] / 'scripts' / 'probe_relative_pose.py'
    out = subprocess.run([sys.executable, str(script), str(tmp_path / 'm'),
                          str(tiny_data / 'val'), '--episodes', '8'],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    m = re.search(r'(\d+) episodes; truth scores highest of 64 candidates in ([\d.]+)%.*'
                  r'distance to the view ([+-][\d.]+|nan), with the yaw difference '
                  r'([+-][\d.]+|nan)', out.stdout)
    assert m and int(m.group(1)) >= 2, out.stdout
    assert 0.0 <= float(m.group(2)) <= 100.0
    assert -1.0 <= float(m.group(3)) <= 1.0


def test_pose_contrast_fit_probe_script_runs(tiny_data, tmp_path):
    """``scripts/probe_pose_contrast_fit.py`` (the model card's fit-vs-carry-over probe)
    trains a real tiny model for a few steps and reports both sets."""
    import json
    import subprocess
    import sys
    from pathlib import Path
    import yaml
    from dmn_localizer.model import save_model
    torch.manual_seed(0)
    save_model(DMN(DMNConfig(image_size=16)), tmp_path / 'm')
    cfg = json.loads(json.dumps(_cfg(tiny_data).to_dict()))   # tuples -> lists for YAML
    (tmp_path / 'c.yaml').write_text(yaml.safe_dump(cfg))
    script = Path(__file__).resolve().parents[1] / 'scripts' / 'probe_pose_contrast_fit.py'
    out = subprocess.run([sys.executable, str(script), str(tmp_path / 'm'), '--config',
                          str(tmp_path / 'c.yaml'), '--episodes', '4', '--steps', '2',
                          '--every', '1', '--threads', '1'],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith('step ')]
    assert [ln.split()[1] for ln in lines] == ['0', '1', '2']
    assert all('trained episodes loss' in ln and 'validation loss' in ln for ln in lines)


def test_log_truncation_drops_a_torn_last_row(tmp_path):
    """A crash during an append leaves a torn last row in train_log.csv: resuming drops it
    (and the rows after the checkpoint) instead of failing on it."""
    from dmn_localizer.training.logs import CsvLog
    path = tmp_path / 'train_log.csv'
    log = CsvLog(path)
    for step in (10, 20, 30):
        log.append({'step': step, 'loss': 1.0 / step})
    path.write_text(path.read_text() + '4')          # the torn start of step 40's row
    CsvLog(path).truncate_after(20)
    assert path.read_text().splitlines() == ['step,loss', '10,0.1', '20,0.05']


def test_pose_ranking_top1_is_tie_safe():
    """The view-pair recipe's and finetune's candidate top-1 (a stand-in model that only
    answers log_likelihood: the metric is under test, not a model): scores that ignore the
    pose win nothing, scores that peak at the truth win everything, wherever the truth sits."""
    from types import SimpleNamespace
    from dmn_localizer.training.view_pairs import pose_ranking
    n = 6
    rng = np.random.default_rng(0)
    worlds = SimpleNamespace(images=np.zeros((1, 2, 8, 8, 3), np.uint8),
                             poses=np.zeros((1, 2, 3), np.float32))
    vset = dict(world=np.zeros(n, int), query=np.ones(n, int), context=np.zeros(n, int),
                candidates=rng.normal(size=(n, 64, 3)).astype(np.float32),
                truth_index=rng.integers(0, 64, n), wrong=np.roll(np.arange(n), 1))

    class Scores:
        def __init__(self, fn):
            self.fn = fn

        def build_map(self, images, poses):
            return None

        def encode_query(self, images):
            return None

        def log_likelihood(self, map_state, query, candidates):
            return self.fn(candidates)

    truth = torch.as_tensor(vset['candidates'][np.arange(n), vset['truth_index']])
    flat = Scores(lambda c: torch.zeros(c.shape[:2]))
    peaked = Scores(lambda c: -(c - truth[:, None]).norm(dim=-1))
    assert pose_ranking(flat, worlds, vset, 'cpu')[0] == 0.0
    top1, err_m, err_deg = pose_ranking(peaked, worlds, vset, 'cpu')
    assert top1 == 1.0 and err_m == 0.0 and err_deg == 0.0
