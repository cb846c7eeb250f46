"""The paper's learned baselines (latent image map, latent vector map, regression): shapes,
exactness of the factorised forms, image use, model files, training and evaluation plumbing.

Tiny real models (16 px) and a tiny generated dataset; nothing is mocked.
"""
import json

import numpy as np
import pytest
import torch

from dmn_localizer.util.errors import FileFormatError, UserError
from dmn_localizer.evaluation import EvalConfig, run_method
from dmn_localizer.evaluation.protocol import model_mismatch
from dmn_localizer.filter import FilterConfig
from dmn_localizer.model import (build_model, count_parameters, DMN, DMNConfig,
                                 LatentImageMap, LatentVectorMap, load_model, PoseRegression,
                                 save_model)
from dmn_localizer.training import load_train_config, train, TrainConfig
from dmn_localizer.filter.rollout import initial_particles, make_batch, rollout
from dmn_localizer.data.dataset import open_dataset

torch.set_num_threads(1)

S = 16
LATENT = ('latent_image', 'latent_vector')
BASELINES = LATENT + ('regression',)


def _model(architecture, seed=0, **options):
    torch.manual_seed(seed)
    return build_model(DMNConfig(image_size=S, architecture=architecture, **options))


def _inputs(B=2, N=3, K=5, seed=1):
    g = torch.Generator().manual_seed(seed)
    ci = torch.rand(B, N, 3, S, S, generator=g) * 2 - 1
    cp = torch.rand(B, N, 3, generator=g) * torch.tensor([40.0, 40.0, 6.28]) \
        - torch.tensor([0.0, 0.0, 3.14])
    qi = torch.rand(B, 3, S, S, generator=g) * 2 - 1
    p = torch.rand(B, K, 3, generator=g) * torch.tensor([40.0, 40.0, 6.28]) \
        - torch.tensor([0.0, 0.0, 3.14])
    return ci, cp, qi, p


def _randomise_biases(model):
    """Non-zero biases (they start at zero), so the exactness tests cover them."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
                m.bias.normal_(0.0, 0.1)


def _outputs(model, ci, cp, qi, p):
    """What the filter reads from the model: log-likelihoods (B, K), or the regressed
    offsets (B, 3) at the particles' first pose for a regression model."""
    m, q = model.build_map(ci, cp), model.encode_query(qi)
    if model.regresses_pose:
        return model.regress(m, q, p[:, 0])
    return model.log_likelihood(m, q, p)


# ------------------------------------------------------------------ networks
@pytest.mark.parametrize('architecture', LATENT)
def test_latent_maps_any_k_and_nc_and_exact_factorisation(architecture):
    model = _model(architecture)
    _randomise_biases(model)
    for N, K in ((1, 1), (4, 7), (2, 33)):
        ci, cp, qi, p = _inputs(N=N, K=K)
        out = model(ci, cp, qi, p)
        assert out.shape == (2, K) and torch.isfinite(out).all()
        ref = model.reference_log_likelihood(ci, cp, qi, p)
        assert torch.allclose(out, ref, atol=1e-5, rtol=1e-4), (out - ref).abs().max()
        chunked = model.log_likelihood(model.build_map(ci, cp), model.encode_query(qi), p,
                                       chunk=3)
        assert torch.allclose(chunked, out, atol=1e-6)
    # one map per batch element: the second world's likelihoods do not see the first's
    ci, cp, qi, p = _inputs(N=3, K=4)
    both = model(ci, cp, qi, p)
    alone = model(ci[1:], cp[1:], qi[1:], p[1:])
    assert torch.allclose(both[1:], alone, atol=1e-6)
    # the particle pose enters (in the map frame)
    moved = p.clone()
    moved[..., 0] += 10.0
    assert not torch.allclose(model(ci, cp, qi, moved), both)
    with pytest.raises(ValueError, match='no attention'):
        model.log_likelihood(model.build_map(ci, cp), model.encode_query(qi), p,
                             return_attention=True)


def test_regression_is_a_dmn_with_one_particle():
    """regress() is exactly the DMN's network at one particle (the DMN's output layer made
    one of the three regression outputs), any number of contexts."""
    reg = _model('regression', egocentric=True)
    _randomise_biases(reg)
    dmn = DMN(DMNConfig(image_size=S))
    state = {k: v for k, v in reg.state_dict().items() if not k.startswith('fc1b')}
    dmn.load_state_dict(state, strict=False)
    with torch.no_grad():
        dmn.fc1b.weight.copy_(reg.fc1b.weight[:1])
        dmn.fc1b.bias.copy_(reg.fc1b.bias[:1])
    for N in (1, 4):
        ci, cp, qi, p = _inputs(N=N, K=1)
        out = reg.regress(reg.build_map(ci, cp), reg.encode_query(qi), p[:, 0])
        assert out.shape == (2, 3)
        ll = dmn.log_likelihood(dmn.build_map(ci, cp), dmn.encode_query(qi), p)[:, 0]
        assert torch.allclose(out[:, 0], ll * reg.config.coord_scale_m, atol=1e-4)
    with pytest.raises(ValueError, match='no particle log-likelihood'):
        reg.log_likelihood(reg.build_map(ci, cp), reg.encode_query(qi), p)
    # the ablation options of the DMN apply to it too
    ablated = _model('regression', attention='uniform', egocentric=False)
    out = ablated.regress(ablated.build_map(ci, cp), ablated.encode_query(qi), p[:, 0])
    assert out.shape == (2, 3) and torch.isfinite(out).all()


@pytest.mark.parametrize('architecture', BASELINES)
def test_gradients_reach_the_image_encoders(architecture):
    model = _model(architecture)
    ci, cp, qi, p = _inputs(N=3, K=6)
    ci.requires_grad_(True)
    qi.requires_grad_(True)
    _outputs(model, ci, cp, qi, p).square().sum().backward()
    assert ci.grad.abs().sum() > 0 and qi.grad.abs().sum() > 0
    trunks = ('context_trunk', 'query_trunk')
    if architecture == 'regression':
        trunks += ('key_trunk',)
    for name in trunks:
        g = sum(q.grad.abs().sum() for q in getattr(model, name).parameters())
        assert g > 0, name
    # a different context or query image changes the output (the image paths are used)
    with torch.no_grad():
        base = _outputs(model, ci, cp, qi, p)
        assert not torch.allclose(_outputs(model, ci.roll(1, 1), cp, qi, p), base)
        assert not torch.allclose(_outputs(model, ci, cp, qi.flip(0), p), base)


def test_parameter_counts_are_documented_and_comparable():
    dmn = count_parameters(DMN(DMNConfig()))
    counts = {'dmn': dmn}
    for a in BASELINES:
        counts[a] = count_parameters(build_model(DMNConfig(architecture=a)))
        assert 0.5 * dmn <= counts[a] <= 2.0 * dmn, (a, counts[a], dmn)
    assert counts == {'dmn': 2782369, 'latent_image': 2713057, 'latent_vector': 2922113,
                      'regression': 2783395}   # the numbers in model/baselines.py
    from dmn_localizer.model import baselines
    for a, n in counts.items():
        assert f'{n:,}' in baselines.__doc__ or a == 'dmn', a


def test_configs_reject_what_an_architecture_lacks():
    with pytest.raises(ValueError, match='architecture must be one of'):
        DMNConfig(architecture='latent_graph')
    with pytest.raises(ValueError, match='attention'):
        DMNConfig(architecture='latent_image', attention='uniform')
    with pytest.raises(ValueError, match='egocentric'):
        DMNConfig(architecture='latent_vector', egocentric=False)
    with pytest.raises(ValueError, match='final_relu'):
        DMNConfig(architecture='regression', final_relu=True)
    with pytest.raises(ValueError, match='architecture'):
        LatentImageMap(DMNConfig(architecture='latent_vector'))
    with pytest.raises(ValueError, match='architecture'):
        PoseRegression(DMNConfig())
    assert LatentVectorMap().config.architecture == 'latent_vector'   # its default config
    with pytest.raises(ValueError, match='attention_weight'):
        TrainConfig(model={'architecture': 'latent_image'}, attention_weight=0.5)
    with pytest.raises(ValueError, match='dense_weight'):
        TrainConfig(model={'architecture': 'regression'}, dense_weight=1.0)


# ---------------------------------------------------------------- model files
@pytest.mark.parametrize('architecture', BASELINES)
def test_model_file_round_trip(architecture, tmp_path):
    model = _model(architecture).eval()
    _randomise_biases(model)
    mid = save_model(model, tmp_path / 'm')
    card = json.loads((tmp_path / 'm.json').read_text())
    assert card['config']['architecture'] == architecture
    loaded = load_model(tmp_path / 'm')
    assert type(loaded) is type(model) and loaded.model_id == mid
    ci, cp, qi, p = _inputs(N=2, K=4)
    with torch.no_grad():
        assert torch.equal(_outputs(loaded, ci, cp, qi, p), _outputs(model, ci, cp, qi, p))
    with pytest.raises(UserError, match=f'a {architecture} model, dmn needed'):
        load_model(tmp_path / 'm', architecture='dmn')


def test_bad_or_foreign_architecture_in_a_model_file(tmp_path):
    save_model(_model('latent_image'), tmp_path / 'm')
    card = tmp_path / 'm.json'
    good = json.loads(card.read_text())
    card.write_text(json.dumps(dict(good, config=dict(good['config'], architecture='bogus'))))
    with pytest.raises(FileFormatError, match="m.json.*architecture must be one of") as e:
        load_model(tmp_path / 'm')
    assert '\n' not in str(e.value)
    # a card that claims another architecture than its weights
    card.write_text(json.dumps(dict(good, config=dict(good['config'],
                                                      architecture='latent_vector'))))
    with pytest.raises(FileFormatError, match='do not match') as e:
        load_model(tmp_path / 'm')
    assert '\n' not in str(e.value)
    # cards written before the field existed are DMNs
    save_model(DMN(DMNConfig(image_size=S)), tmp_path / 'old')
    old = json.loads((tmp_path / 'old.json').read_text())
    del old['config']['architecture']
    (tmp_path / 'old.json').write_text(json.dumps(old))
    assert type(load_model(tmp_path / 'old')) is DMN


def test_model_mismatch_names_the_architecture():
    for method in BASELINES:
        assert model_mismatch(method, DMNConfig(architecture=method)) == ''
        msg = model_mismatch(method, DMNConfig())
        assert msg == f"{method} needs a model with architecture '{method}', got 'dmn'"
    msg = model_mismatch('dmn_no_attention', DMNConfig(architecture='regression'))
    assert msg == "dmn_no_attention needs a model with architecture 'dmn', got 'regression'"
    assert model_mismatch('regression', DMNConfig(architecture='latent_image')) != ''


# ------------------------------------------------------------------ training
@pytest.fixture(scope='module')
def tiny_data(tmp_path_factory):
    from dmn_localizer.data.build import build_dataset
    root = tmp_path_factory.mktemp('data')
    for split in ('train', 'val'):
        build_dataset('mazes', split, 4, str(root / split), image_size=S, workers=1,
                      progress=False)
    return root


def _train_cfg(root, architecture, **kw):
    base = dict(train_data=str(root / 'train'), val_data=str(root / 'val'), context_pool=6,
                contexts=(2, 3), steps=2, batch_size=2, particles=4, max_steps=3, val_every=2,
                val_episodes=4, val_batch_size=4, val_contexts=2, log_every=1,
                dense_weight=0.0 if architecture == 'regression' else 1.0,
                attention_weight=0.0, global_prob=0.5, near_truth_fraction=0.25,
                mse_on_global=architecture == 'regression', seed=3,
                model={'image_size': S, 'architecture': architecture}, threads=1)
    base.update(kw)
    return TrainConfig(**base)


@pytest.mark.parametrize('architecture', BASELINES)
def test_tiny_training_lowers_the_loss(tiny_data, architecture):
    """Adam steps through the real rollout (the filter with soft resampling for the latent
    maps, the regression rollout for regression; T = 2) lower the loss on one batch."""
    torch.manual_seed(0)
    eps = list(open_dataset(tiny_data / 'train').iter_episodes(4, 2, seed=0, loop=False))[:4]
    b = make_batch(eps, 4, np.random.default_rng(0))
    p0 = initial_particles(b, 8, torch.Generator().manual_seed(0), init_std=(6.0, 30.0))
    model = _model(architecture)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    fcfg = FilterConfig(resample='soft', soft_alpha=0.5, resample_ess_ratio=1.0)
    dense = None if architecture == 'regression' else (3.0, 0.5)

    def loss():
        r = rollout(model, b, p0, fcfg, torch.Generator().manual_seed(0), dense_kernel=dense)
        assert r['estimates'].shape == (4, 2, 3)
        return r['mse'].mean() + (r['dense'].mean() if dense else 0.0)
    first = loss().item()
    for _ in range(12):
        opt.zero_grad()
        loss().backward()
        opt.step()
    assert loss().item() < first - 0.05


@pytest.mark.parametrize('architecture', BASELINES)
def test_train_writes_a_loadable_model(tiny_data, tmp_path, architecture):
    out = train(_train_cfg(tiny_data, architecture), tmp_path / 'run', progress=False)
    assert out['steps'] == 3
    for name in ('final', 'best', 'checkpoint/model'):
        model = load_model(tmp_path / 'run' / name)
        assert model.config.architecture == architecture
    # resume rebuilds the right network from the checkpoint
    resumed = train(_train_cfg(tiny_data, architecture, max_steps=4), tmp_path / 'run',
                    resume=True, progress=False)
    assert resumed['steps'] == 4
    assert load_model(tmp_path / 'run' / 'final').config.architecture == architecture
    with open(tmp_path / 'run' / 'val_log.csv') as f:
        header = f.readline()
    assert 'val_mse_gap_query' in header


def test_training_config_files():
    from pathlib import Path
    repo = Path(__file__).resolve().parents[1]
    dmn = load_train_config(repo / 'config' / 'train_mazes.yaml')
    for a in BASELINES:
        cfg = load_train_config(repo / 'config' / f'train_mazes_{a}.yaml')
        assert cfg.model_config().architecture == a
        for key in ('contexts', 'steps', 'batch_size', 'particles', 'lr', 'max_steps',
                    'curriculum_steps', 'val_every', 'patience', 'train_data'):
            assert getattr(cfg, key) == getattr(dmn, key), (a, key)


# ---------------------------------------------------------------- evaluation
def test_run_method_regression_starts_from_the_belief_mean(tiny_data):
    """With a zero output layer the regression is the uninformed estimate."""
    from dmn_localizer.data.dataset import open_dataset as open_ds
    from dmn_localizer.evaluation import load_episodes
    eps = load_episodes(open_ds(tiny_data / 'val'), 3, 3, 3, 0)
    # one batch (the uninformed filter's noise draws would shift a later batch's belief)
    cfg = EvalConfig(k_global=64, k_tracking=32, contexts=3, steps=3, particle_budget=4096)
    reg = _model('regression').eval()
    with torch.no_grad():
        reg.fc1b.weight.zero_()
        reg.fc1b.bias.zero_()
    for mode, k in (('global', 64), ('tracking', 32)):
        a = run_method('regression', reg, eps, mode, k, cfg)
        b = run_method('uninformed', None, eps, mode, k, cfg)   # the same initial belief
        assert a.shape == (3, 3) and np.isfinite(a).all()
        assert np.abs(a[:, 0] - b[:, 0]).max() < 1e-3
    for a in LATENT:
        e = run_method(a, _model(a).eval(), eps, 'global', 64, cfg)
        assert e.shape == (3, 3) and np.isfinite(e).all()
