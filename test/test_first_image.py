"""The weight of a new belief's first image (``initial_likelihood_scale``): the proper score
picks the factor that calibrates a single image's posterior, and on real bags of two test
mazes the shipped model's single images are flatter than their errors."""
import numpy as np
import pytest
import torch

from dmn_localizer.bags.simulate import simulate_bag
from dmn_localizer.config import LocalizerConfig
from dmn_localizer.data.dataset import SPLIT_SEEDS
from dmn_localizer.replay.first_image import (choose_initial_scale, FLOOR,
                                              first_image_samples, near_mass_score)


def synthetic_images(flatness, n=400, k=500, seed=0):
    """Images whose calibrated log-likelihoods over k poses are a few random bumps, the true
    pose drawn from that posterior, and the model's scores those divided by ``flatness``; the
    true pose is the one near pose."""
    rng = np.random.default_rng(seed)
    x = np.arange(k)
    samples = []
    for _ in range(n):
        centres = rng.integers(0, k, 3)
        calibrated = np.log(sum(np.exp(-0.5 * ((x - c) / 8.0) ** 2) * rng.uniform(0.2, 1.0)
                                for c in centres) + 1e-3) * 2.0
        p = np.exp(calibrated - calibrated.max())
        truth = rng.choice(k, p=p / p.sum())
        samples.append((calibrated / flatness, x == truth))
    return samples


@pytest.mark.parametrize('flatness,expected', [(1.0, (1.0,)), (3.0, (2.5, 3.0, 3.5)),
                                               (0.5, (0.5,))])
def test_the_score_picks_the_factor_that_calibrates_the_posterior(flatness, expected):
    """Scores 3 times flatter than calibrated get about 3; calibrated ones 1; twice too
    sharp ones 0.5 (the log score, not the mass near the truth, which grows with any
    sharpening)."""
    result = choose_initial_scale(synthetic_images(flatness))
    assert result['initial_likelihood_scale'] in expected, result
    assert result['images'] == 400 and set(result['scores']) >= {1.0, 3.0}


def test_near_mass_score_floors_and_skips_non_finite_scores():
    ll = np.array([0.0, 0.0, -np.inf, np.nan])
    assert near_mass_score(ll, [True, False, True, True], 1.0) == pytest.approx(np.log(0.5))
    assert near_mass_score(np.array([0.0, 50.0]), [True, False], 1.0) == pytest.approx(
        np.log(FLOOR))
    assert near_mass_score(np.array([-np.inf, np.nan]), [True, True], 1.0) is None
    assert choose_initial_scale([])['initial_likelihood_scale'] is None
    # equal scores at every factor (no pose near the truth anywhere): 1
    assert choose_initial_scale([(np.zeros(4), np.zeros(4, bool))])[
        'initial_likelihood_scale'] == 1.0


@pytest.fixture(scope='module')
def places(tmp_path_factory):
    root = tmp_path_factory.mktemp('places')
    for i in (1, 2):
        simulate_bag('mazes', SPLIT_SEEDS['test'][0] + i, root / f'maze{i}', image_size=32,
                     localization_frames=40)
    return root


def test_the_shipped_model_is_flatter_than_its_errors_on_real_bags(places):
    """Real bags (simulate-bag) of two test mazes and the shipped aligned model: images
    scored as a global localization's first sample; the truth is near some poses in most
    images, and the chosen factor is above 1 with a better score than at 1."""
    from dmn_localizer.model.io import load_model, LOCALIZER_ARCHITECTURES
    from dmn_localizer.replay import offline as core
    from dmn_localizer.util.resources import default_model_path
    torch.manual_seed(0)
    model = load_model(default_model_path(), architecture=LOCALIZER_ARCHITECTURES)
    topics = core.Topics('/camera/image_raw', '/ground_truth/pose', '/ground_truth/pose')
    samples = []
    for name in ('maze1', 'maze2'):
        view_map = core.build_map(str(places / name / 'mapping'), topics, 32)
        stream = core.read_stream(str(places / name / 'localization'), topics, 32)
        loc = core.localizer_for(model, LocalizerConfig(global_initial_particles=4096),
                                 torch.device('cpu'), 0, stream, view_map)
        got = first_image_samples(loc, stream, every=4)
        assert got and all(ll.shape == near.shape == (4096,) for ll, near in got)
        samples += got
    assert np.mean([near.any() for _, near in samples]) > 0.5
    result = choose_initial_scale(samples)
    assert result['initial_likelihood_scale'] > 1.0, result
    assert result['scores'][result['initial_likelihood_scale']] > result['scores'][1.0]
