"""The lost-flag and covariance calibration (``calibrate-lost``, and ``finetune``'s last step):
the flag is counted as the localizer counts it, the threshold separates own-map from
foreign-map evidence, the covariance scale puts the median own-map run's NEES at 2 (confident
misses left out), and on real bags of three test mazes the shipped aligned model's runs show
more evidence on their own maps than on foreign ones, and the first image's weight (its rule:
test_first_image.py), the chosen threshold and scale reach the model card and the localizer's
published covariance."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from dmn_localizer.bags.simulate import simulate_bag
from dmn_localizer.data.dataset import SPLIT_SEEDS
from dmn_localizer.model.io import model_paths, read_card
from dmn_localizer.replay.context_count import choose_nearest_contexts
from dmn_localizer.replay.lost_threshold import (choose_covariance_scale, choose_max_std,
                                                 choose_threshold, flagged_share, split_place)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IMAGE, POSE = '/camera/image_raw', '/ground_truth/pose'


def test_the_flag_counts_as_the_localizer_does():
    """+1 per weak update, -1 per matching one, flagged from collapse_updates on."""
    trace = [0.0, 0.0, 0.0, 0.0, 5.0, 5.0, 5.0, 5.0]
    # counts 1 2 3 4 3 2 1 0 -> flagged at 3, 4, 3 (three of eight updates)
    assert flagged_share(trace, 1.0, collapse_updates=3) == pytest.approx(3 / 8)
    assert flagged_share(trace, 6.0, collapse_updates=3) == pytest.approx(6 / 8)
    assert flagged_share([-np.inf] * 4, 1.0, collapse_updates=3) == pytest.approx(2 / 4)


def test_the_threshold_separates_own_from_foreign_maps():
    rng = np.random.default_rng(0)
    own = [rng.normal(5.0, 0.7, 150) for _ in range(3)]
    foreign = [rng.normal(0.5, 0.7, 150) for _ in range(3)]
    r = choose_threshold(own, foreign, collapse_updates=3)
    assert 2.0 < r['min_evidence'] < 3.5, r
    assert max(r['own_flagged']) == 0 and min(r['foreign_flagged']) > 0.95
    # the same distribution on both: nothing to separate, no threshold
    same = choose_threshold(own, [t + 0.1 for t in own], collapse_updates=3)
    assert same['min_evidence'] is None and same['score'] < 0.5


def test_the_covariance_scale_puts_the_median_run_at_nees_2():
    """Runs whose mean NEES is 0.4, 0.5 and 3.0 at scale 1: the median (0.5) becomes 2 at
    scale 0.25; updates flagged lost (their covariance covers the map) count 0."""
    evidence = [np.full(10, 5.0)] * 3
    nees = [np.full(10, 0.4), np.full(10, 0.5), np.full(10, 3.0)]
    r = choose_covariance_scale(evidence, nees, 1.0, collapse_updates=3)
    assert r['covariance_scale'] == pytest.approx(0.25)
    assert r['own_nees_scaled'] == pytest.approx([1.6, 2.0, 12.0])
    # a run flagged lost from its third update on: those updates count 0
    weak = np.array([5.0, 5.0] + [0.0] * 8)
    r = choose_covariance_scale([weak], [np.full(10, 100.0)], 1.0, collapse_updates=1)
    assert r['own_nees'] == [pytest.approx(20.0)] and r['covariance_scale'] == 10.0
    assert choose_covariance_scale([], [], 1.0, 3)['covariance_scale'] is None


def test_the_count_of_contexts_with_the_lowest_mean_rmse_is_chosen():
    """Per count, the mean over the runs of each run's x-y RMSE; a smaller count within 5% of
    the best wins (it costs less); 0 (all contexts) counts as the largest."""
    runs = {8: [[1.0, 1.0], [3.0, 3.0]],      # mean RMSE 2.0
            16: [[1.0, 1.0], [1.0, 1.0]],     # 1.0: the best
            32: [[0.97, 0.97], [0.97, 0.97]],  # 0.97: within 5% of 1.0 (so 16, cheaper)
            0: [[0.5, 0.5], [4.0, 4.0]]}       # 2.25
    asked = []

    def run_errors(m):
        asked.append(m)
        return [np.array(e) for e in runs[m]]
    result = choose_nearest_contexts([32, 0, 8, 16], run_errors)
    assert result['nearest_contexts'] == 16 and asked == [8, 16, 32, 0]
    assert result['mean_rmse'] == {8: 2.0, 16: 1.0, 32: 0.97, 0: 2.25}
    assert result['rmse'][8] == [1.0, 3.0]
    runs[32] = [[0.5, 0.5], [0.5, 0.5]]                    # clearly better: chosen
    assert choose_nearest_contexts([8, 16, 32], run_errors)['nearest_contexts'] == 32
    runs[8] = [[np.nan, 9.0], [np.nan, np.nan]]            # a run without errors is skipped
    assert choose_nearest_contexts([8], run_errors)['mean_rmse'] == {8: 9.0}
    with pytest.raises(ValueError):
        choose_nearest_contexts([8, -1], run_errors)


def test_confident_misses_are_left_out_of_the_scale():
    """Two places, as a fine-tune holds out: one run tracks at NEES 0.5 throughout, the other
    as well but for six updates on a look-alike place 5 m away (NEES 300). Fitted to the runs'
    mean NEES, that run sets the scale (the median of two is their mean: the cap, 20, every
    tracking cloud published 40 times too wide); with the errors, the misses are left out
    and the tracking sets it (0.25). An update as far off inside its own 2-sigma (a wide,
    honest cloud) is no miss."""
    evidence = [np.full(20, 5.0)] * 2
    nees = [np.full(20, 0.5), np.r_[np.full(14, 0.5), np.full(6, 300.0)]]
    errors = [np.full(20, 0.2), np.r_[np.full(14, 0.2), np.full(6, 5.0)]]
    blind = choose_covariance_scale(evidence, nees, 1.0, collapse_updates=3)
    assert blind['covariance_scale'] == 20.0
    r = choose_covariance_scale(evidence, nees, 1.0, collapse_updates=3, errors=errors)
    assert r['covariance_scale'] == pytest.approx(0.25)
    assert r['confident_misses'] == [0, 6]
    assert r['own_nees'] == pytest.approx([0.5, 90.35])   # what replays report: all updates
    wide = [np.full(20, 0.5), np.r_[np.full(14, 0.5), np.full(6, 1.0)]]
    r = choose_covariance_scale(evidence, wide, 1.0, collapse_updates=3, errors=errors)
    assert r['confident_misses'] == [0, 0]


@pytest.fixture(scope='module')
def places(tmp_path_factory):
    root = tmp_path_factory.mktemp('places')
    for i in (1, 2, 3):
        # the covering mapping run (a map of the whole maze, as a user records one)
        simulate_bag('mazes', SPLIT_SEEDS['test'][0] + i, root / f'maze{i}', image_size=32,
                     localization_frames=40)
    return root


def test_calibrate_lost_on_real_bags_writes_the_card(places, tmp_path):
    """The map is a place's longest bag; the shipped model's evidence is higher on its own
    map than on a foreign one in every run, and the threshold reaches the card (the weights
    and their id unchanged)."""
    mapping, runs = split_place([str(places / 'maze1' / 'localization'),
                                 str(places / 'maze1' / 'mapping')], IMAGE)
    assert mapping.endswith('mapping') and runs[0].endswith('localization')
    model = tmp_path / 'model'
    for src, dst in zip(model_paths(os.path.join(REPO, 'models', 'aligned_mazes')),
                        model_paths(model)):
        shutil.copyfile(src, dst)
    before = read_card(model)
    r = subprocess.run([sys.executable, '-m', 'dmn_localizer', 'calibrate-lost',
                        *[places / f'maze{i}' for i in (1, 2, 3)], '--image-topic', IMAGE,
                        '--pose-topic', POSE, '--model', model, '--no-progress',
                        '--likelihood-scale', '1.0', '--pose-estimate', 'mean',
                        '--nearest-contexts', '8,1'],
                       cwd=REPO, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout[:r.stdout.rindex('}') + 1])
    runs = result['runs']
    assert [x['kind'] for x in runs] == ['own', 'foreign'] * 3
    for own, foreign in zip(runs[::2], runs[1::2]):
        assert own['run'] == foreign['run'] and own['map_place'] != foreign['map_place']
        assert own['median_evidence'] > foreign['median_evidence'] + 1.0, (own, foreign)
    after = read_card(model)
    assert after['metadata']['likelihood_scale'] == 1.0      # --likelihood-scale, written
    assert after['metadata']['pose_estimate'] == 'mean'       # --pose-estimate, written
    assert 'pose_estimate mean' in r.stdout
    # --nearest-contexts 8,1: the count whose own-map runs localize best, chosen first
    # (one context per particle jumps between views a step apart), written with its figures
    rmse = result['mean_rmse']
    assert set(rmse) == {'1', '8'} and rmse['8'] < rmse['1'], rmse
    assert after['metadata']['nearest_contexts'] == result['nearest_contexts'] == 8
    assert 'nearest_contexts 8' in r.stdout
    assert f"8: {rmse['8']:.2f} m" in after['metadata']['nearest_contexts_calibration']
    assert after['metadata']['min_evidence'] == result['min_evidence'] > 0
    # the first image's weight, fitted first (the shipped model's single images are flatter
    # than their errors) and written with its calibration
    initial = after['metadata']['initial_likelihood_scale']
    assert initial == result['initial_likelihood_scale'] > 1.0, result['scores']
    assert 'first image of a global localization' in \
        after['metadata']['initial_likelihood_scale_calibration']
    assert f'initial_likelihood_scale {initial:g}' in r.stdout
    assert 'calibrate-lost' in after['metadata']['min_evidence_calibration']
    # the shipped model's cloud overstates its error on these maps: a scale below 1, which
    # the localizer applies to the covariance it publishes
    scale = after['metadata']['covariance_scale']
    assert scale == result['covariance_scale'] and 0.05 <= scale < 1.0, result
    fitted = [m for m in result['own_nees_fitted'] if m is not None]
    assert fitted and np.median(fitted) == pytest.approx(2.0, rel=0.05)
    assert after['metadata']['covariance_scale_hfov_deg'] == 90.0   # the bags' camera
    # the cloud spread below which it applies, chosen of the default candidates with it
    assert set(result['max_std_candidates']) == {'0.5', '0.75', '1'}
    max_std = after['metadata']['covariance_scale_max_std']
    assert max_std == result['covariance_scale_max_std'] in (0.5, 0.75, 1.0)
    assert f'applied to clouds under {max_std:g} m' in \
        after['metadata']['covariance_scale_calibration']
    assert 'over the updates it applies to' in after['metadata']['covariance_scale_calibration']
    from dmn_localizer.config import LocalizerConfig
    from dmn_localizer.localization.localizer import Localizer
    from dmn_localizer.mapping.view_map import ViewMap
    from dmn_localizer.model import load_model
    vm = ViewMap()
    for x in (0.0, 4.0):
        vm.add(np.zeros((32, 32, 3), np.uint8), [x, 0.0, 0.0])
    covs = {}
    for given in (-1.0, 1.0):
        loc = Localizer(load_model(model), LocalizerConfig(
            covariance_scale=given, covariance_scale_min_updates=0), seed=0)
        loc.set_map(vm)
        loc.init_gaussian([2.0, 0.0, 0.0], [0.3, 0.3, 0.2])   # a tight cloud
        covs[given] = loc.estimate()[1]
    np.testing.assert_allclose(covs[-1.0], scale * covs[1.0], rtol=1e-6)
    assert after['model_id'] == before['model_id'] and after['config'] == before['config']
    # one place: the one-line refusal, the card untouched
    r = subprocess.run([sys.executable, '-m', 'dmn_localizer', 'calibrate-lost',
                        places / 'maze1', '--image-topic', IMAGE, '--pose-topic', POSE,
                        '--model', model], cwd=REPO, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert 'at least two places' in r.stderr and read_card(model) == after
    r = subprocess.run([sys.executable, '-m', 'dmn_localizer', 'calibrate-lost',
                        *[places / f'maze{i}' for i in (1, 2)], '--image-topic', IMAGE,
                        '--pose-topic', POSE, '--model', model, '--likelihood-scale', '0'],
                       cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert '--likelihood-scale' in r.stderr and read_card(model) == after
    r = subprocess.run([sys.executable, '-m', 'dmn_localizer', 'calibrate-lost',
                        *[places / f'maze{i}' for i in (1, 2)], '--image-topic', IMAGE,
                        '--pose-topic', POSE, '--model', model,
                        '--initial-likelihood-scale', '-2'],
                       cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert '--initial-likelihood-scale' in r.stderr and read_card(model) == after
    r = subprocess.run([sys.executable, '-m', 'dmn_localizer', 'calibrate-lost',
                        *[places / f'maze{i}' for i in (1, 2)], '--image-topic', IMAGE,
                        '--pose-topic', POSE, '--model', model, '--pose-estimate', 'median'],
                       cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert '--pose-estimate' in r.stderr and read_card(model) == after
    r = subprocess.run([sys.executable, '-m', 'dmn_localizer', 'calibrate-lost',
                        *[places / f'maze{i}' for i in (1, 2)], '--image-topic', IMAGE,
                        '--pose-topic', POSE, '--model', model, '--nearest-contexts', '8,-3'],
                       cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert '--nearest-contexts' in r.stderr and read_card(model) == after
    r = subprocess.run([sys.executable, '-m', 'dmn_localizer', 'calibrate-lost',
                        *[places / f'maze{i}' for i in (1, 2)], '--image-topic', IMAGE,
                        '--pose-topic', POSE, '--model', model, '--covariance-max-std', '0.5,x'],
                       cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert '--covariance-max-std' in r.stderr and read_card(model) == after


def test_the_covariance_scale_is_chosen_as_the_localizer_applies_it():
    """With the cloud's spread per update, a scale below 1 is fitted to the updates it applies
    to (the localizer publishes a wider cloud, and one not yet tight for min_updates updates,
    unscaled): a run whose first half is wide (std 2 m, NEES 1) and second half tight (0.2 m,
    NEES 0.5, 0.5, 0.25, 0.25, 0.25). The tight half's mean NEES 0.35 is 2 at 0.175; from
    the 3rd tight update on, 0.25 at 0.125; scaling every update, the run's 0.675 at 0.34."""
    ev = [np.full(10, 5.0)]
    ne = [np.r_[np.full(5, 1.0), 0.5, 0.5, 0.25, 0.25, 0.25]]
    std = [np.r_[np.full(5, 2.0), np.full(5, 0.2)]]
    gated = choose_covariance_scale(ev, ne, 1.0, 3, std, max_std=0.5)
    assert gated['covariance_scale'] == pytest.approx(0.175, abs=0.006)
    # what replays report: the whole run, (5 x 1 + 1.75 / 0.175) / 10 = 1.5
    assert gated['own_nees_scaled'] == [pytest.approx(1.5, rel=0.04)]
    late = choose_covariance_scale(ev, ne, 1.0, 3, std, 0.5, min_updates=3)
    assert late['covariance_scale'] == pytest.approx(0.125, abs=0.006)
    assert choose_covariance_scale(ev, ne, 1.0, 3, std, 0.0)['covariance_scale'] == 0.34
    # no run tight for long enough: nothing to fit a shrinking scale to, so none below 1
    short = choose_covariance_scale(ev, ne, 1.0, 3, std, 0.5, min_updates=6)
    assert short['covariance_scale'] == 1.0 and short['own_nees_scaled'] == [0.68]


def test_the_cloud_spread_bound_that_puts_most_runs_in_the_nees_band_is_chosen():
    """A model whose tracking cloud hovers about 0.5 m (0.45 / 0.55 m in turn, NEES 0.5: wider
    than its errors) after 20 wide updates (NEES 0.05): under a 0.5 m bound it is never tight
    for 20 updates in a row, so no scale below 1 applies and every run stays below NEES 1;
    under 0.75 m the tracking updates from the 20th on are scaled to NEES 2 (scale 0.25) and
    each run's mean is (20 x 0.05 + 19 x 0.5 + 61 x 2) / 100 = 1.325, in the band; 1 m does
    the same, and the smaller bound wins the tie."""
    ev = [np.full(100, 5.0)] * 5
    ne = [np.r_[np.full(20, 0.05), np.full(80, 0.5)]] * 5
    std = [np.r_[np.full(20, 3.0), np.tile([0.45, 0.55], 40)]] * 5

    def fit(max_std):
        return choose_covariance_scale(ev, ne, 1.0, 3, std, max_std, min_updates=20)
    r = choose_max_std([1.0, 0.5, 0.75], fit)
    assert r['covariance_scale_max_std'] == 0.75
    assert r['covariance_scale'] == pytest.approx(0.25, abs=0.006)
    assert r['own_nees_scaled'] == [pytest.approx(1.325, abs=0.01)] * 5
    assert r['max_std_candidates'] == {
        '0.5': dict(covariance_scale=1.0, runs_in_band=0),
        '0.75': dict(covariance_scale=r['covariance_scale'], runs_in_band=5),
        '1': dict(covariance_scale=r['covariance_scale'], runs_in_band=5)}
    assert choose_max_std([0.5], fit)['covariance_scale_max_std'] == 0.5   # one: as given
