"""The lost-flag calibration (``calibrate-lost``, and ``finetune``'s last step): the flag is
counted as the localizer counts it, the threshold separates own-map from foreign-map evidence,
and on real bags of three test mazes the shipped aligned model's runs show more evidence on
their own maps than on foreign ones, and the chosen threshold reaches the model card."""
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
from dmn_localizer.replay.lost_threshold import choose_threshold, flagged_share, split_place

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
                        '--pose-topic', POSE, '--model', model, '--no-progress'],
                       cwd=REPO, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout[:r.stdout.rindex('}') + 1])
    runs = result['runs']
    assert [x['kind'] for x in runs] == ['own', 'foreign'] * 3
    for own, foreign in zip(runs[::2], runs[1::2]):
        assert own['run'] == foreign['run'] and own['map_place'] != foreign['map_place']
        assert own['median_evidence'] > foreign['median_evidence'] + 1.0, (own, foreign)
    after = read_card(model)
    assert after['metadata']['min_evidence'] == result['min_evidence'] > 0
    assert 'calibrate-lost' in after['metadata']['min_evidence_calibration']
    assert after['model_id'] == before['model_id'] and after['config'] == before['config']
    # one place: the one-line refusal, the card untouched
    r = subprocess.run([sys.executable, '-m', 'dmn_localizer', 'calibrate-lost',
                        places / 'maze1', '--image-topic', IMAGE, '--pose-topic', POSE,
                        '--model', model], cwd=REPO, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert 'at least two places' in r.stderr and read_card(model) == after
