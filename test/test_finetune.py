"""``dmn-localizer finetune`` on tiny real bags of three test mazes: a model and a card whose
figures come from the held-out place, Ctrl-C leaves a loadable model, unusable data gets a
one-line refusal."""
import csv
import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
import yaml

from dmn_localizer.bags.simulate import simulate_bag
from dmn_localizer.data.dataset import open_dataset, SPLIT_SEEDS
from dmn_localizer.evaluation.intervals import percent_with_interval
from dmn_localizer.model.io import load_model
from dmn_localizer.replay.lost_threshold import calibrate
from dmn_localizer.training.finetune import finetune
from dmn_localizer.util.errors import UserError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOPICS = ('/camera/image_raw', '/ground_truth/pose')
SMALL = dict(minutes=2.0, max_steps=2, val_every=1, episodes=3, threads=1, progress=False,
             eval_particles=(64, 32),
             data_kw=dict(contexts=16, trajectories=2, trajectory_length=6))


@pytest.fixture(scope='module')
def places(tmp_path_factory):
    root = tmp_path_factory.mktemp('places')
    for i in (1, 2, 3):
        # an RGB-D camera with a 3 m range: the depth topic test sees both measured and
        # unread columns; the other tests ignore the topic
        simulate_bag('mazes', SPLIT_SEEDS['test'][0] + i, root / f'place{i}', image_size=32,
                     mapping_frames=200, localization_frames=40, depth=True, depth_range=3.0)
    return root


def test_finetune_end_to_end(places, tmp_path):
    """The paper's DMN (``--from models/dmn_mazes``) fine-tunes by its card's recipe."""
    out = tmp_path / 'ft'
    card = finetune([places / f'place{i}' for i in (1, 2, 3)], *TOPICS, out,
                    model_path=os.path.join(REPO, 'models', 'dmn_mazes'), **SMALL)
    assert len(card['val_places']) == 1 and len(card['train_places']) == 2
    val = open_dataset(out / 'data' / 'val')
    train = open_dataset(out / 'data' / 'train')
    held_out = card['val_places'][0]
    # the validation data is the held-out place's, the training data the others'
    assert {g['name'] for g in val.manifest['groups']} == {held_out}
    assert held_out not in {g['name'] for g in train.manifest['groups']}
    assert all(held_out not in s for s in train.manifest['sources'])
    for key in ('zero_shot', 'fine_tuned'):
        figures = card[key]
        assert figures['episodes'] == min(3, val.n_worlds)
        assert 0 <= figures['success@5'] <= 1 and figures['rmse@5'] > 0
        assert 'success@5_shuffled_query' in figures
    assert card['steps'] == 2 and not card['interrupted']
    assert card['data']['train']['pairs'] > card['data']['val']['pairs'] > 0
    model = load_model(out / 'model')
    assert model.config.image_size == 32
    written = json.loads((out / 'card.json').read_text())
    assert written['zero_shot'] == card['zero_shot']
    text = (out / 'card.md').read_text()
    assert 'zero-shot' in text and 'fine-tuned' in text and 'dmn-localizer replay' in text
    # the held-out success rates with their 95% interval over the episodes
    n = card['fine_tuned']['episodes']
    assert percent_with_interval(card['fine_tuned']['success@5'], n) in text
    assert f'over its {n} episodes' in text
    assert (out / 'curve.png').stat().st_size > 0


@pytest.mark.parametrize('start, trained, val_every', [
    ('aligned_mazes', 'run/best.safetensors', 1),         # aligned: the view-pair stage
    ('aligned_mazes', 'run_filter/best.safetensors', 1),  # ... the end-to-end stage
    ('dmn_mazes', 'run/checkpoint/state.pt', 10**6)])     # the paper's DMN: its own loop
def test_ctrl_c_leaves_a_loadable_model(places, tmp_path, start, trained, val_every):
    """Ctrl-C during training: KeyboardInterrupt goes on, OUT/model is the best model so far
    (of the stage that was interrupted) and the card says the run was interrupted (both
    training loops, both stages of an aligned model)."""
    out = tmp_path / 'ft'
    done = threading.Event()

    def interrupt_when_training():
        while not done.is_set():
            if (out / trained).exists():   # training (of that stage) has started
                time.sleep(0.5)
                os.kill(os.getpid(), signal.SIGINT)
                return
            time.sleep(0.05)
    watcher = threading.Thread(target=interrupt_when_training, daemon=True)
    watcher.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            finetune([places / f'place{i}' for i in (1, 2, 3)], *TOPICS, out,
                     model_path=os.path.join(REPO, 'models', start),
                     **dict(SMALL, max_steps=10**6, val_every=val_every,
                            # a short first stage when the second is interrupted
                            **(dict(minutes=2.0, filter_share=0.9)
                               if trained.startswith('run_filter') else dict(minutes=10.0))))
    finally:
        done.set()
        watcher.join()
    model = load_model(out / 'model')
    assert model.config.image_size == 32
    card = json.loads((out / 'card.json').read_text())
    assert card['interrupted'] is True
    if trained.startswith('run_filter'):   # the end-to-end stage's model, not the first's
        assert model.config.context_pooling == 'sum'
        assert set(card['stages']) == {'view_pairs', 'filter'}
        assert card['steps'] == sum(v['steps'] for v in card['stages'].values())


@pytest.mark.parametrize('error', [KeyboardInterrupt, AttributeError])
def test_ctrl_c_after_training_leaves_the_model_and_the_card(places, tmp_path, error):
    """Ctrl-C during the last step (the lost-flag calibration, minutes on real recordings), or
    a bug there: OUT/model and a card with the fine-tuned figures are written, the card says
    interrupted (or what failed), and the exception goes on."""
    def broken_calibration(*args, **kwargs):
        raise error('calibration broke')   # KeyboardInterrupt: what Ctrl-C raises
    out = tmp_path / 'ft'
    with pytest.raises(error):
        finetune([places / f'place{i}' for i in (1, 2, 3)], *TOPICS, out,
                 model_path=os.path.join(REPO, 'models', 'aligned_mazes'),
                 calibrate_lost=broken_calibration, **SMALL)
    card = json.loads((out / 'card.json').read_text())
    assert card['fine_tuned']['pose_queries'] > 0 and 'lost_flag' not in card
    if error is KeyboardInterrupt:
        assert card['interrupted'] is True and 'failed' not in card
    else:
        assert card['failed'] == 'AttributeError: calibration broke'
        assert 'after training: AttributeError' in (out / 'card.md').read_text()
    assert load_model(out / 'model').config.architecture == 'aligned'


def test_a_calibration_that_fails_leaves_the_model_and_says_why(places, tmp_path):
    """A recording the calibration cannot replay (its UserError) costs the threshold, not the
    fine-tuned model: the card gives the reason and the model card has no min_evidence."""
    def failing_calibration(*args, **kwargs):
        # a stand-in for a calibration that fails with its UserError, so the test does not
        # depend on which recordings make the real one fail (a refusal: test_lost_threshold)
        raise UserError('place2/localization: no topic /camera/image_raw')
    out = tmp_path / 'ft'
    card = finetune([places / f'place{i}' for i in (1, 2, 3)], *TOPICS, out,
                    model_path=os.path.join(REPO, 'models', 'aligned_mazes'),
                    calibrate_lost=failing_calibration, **SMALL)
    assert card['lost_flag'] == {'min_evidence': None,
                                 'reason': 'place2/localization: no topic /camera/image_raw'}
    assert 'no threshold calibrated (place2/localization' in (out / 'card.md').read_text()
    assert 'min_evidence' not in load_model(out / 'model').card['metadata']


def _cli(*args):
    return subprocess.run([sys.executable, '-m', 'dmn_localizer', 'finetune', *map(str, args)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)


def test_unusable_data_is_refused_in_one_line(places, tmp_path):
    tiny = tmp_path / 'tiny'
    for i in (1, 2):
        simulate_bag('mazes', SPLIT_SEEDS['test'][0] + i, tiny / f'p{i}', image_size=16,
                     mapping_frames=8, localization_frames=2)
    base = ['--image-topic', TOPICS[0], '--pose-topic', TOPICS[1], '--no-progress']
    for expected, args in (
            ('record at least two places', [places / 'place1', '--out', tmp_path / 'a']),
            ('cannot be used', [tiny / 'p1', tiny / 'p2', '--out', tmp_path / 'b']),
            ('--minutes must be > 0', [tiny / 'p1', '--minutes', '0', '--out', tmp_path / 'c']),
            ('--filter-share must be within [0, 1]',
             [tiny / 'p1', '--filter-share', '1.5', '--out', tmp_path / 'd']),
            ('--nearest-contexts takes counts >= 0',
             [tiny / 'p1', '--nearest-contexts', '8,-1', '--out', tmp_path / 'e'])):
        r = _cli(*args, *base)
        assert r.returncode == 2, (expected, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1 and expected in r.stderr, r.stderr


def test_the_count_of_contexts_is_chosen_by_default():
    """`finetune` without --nearest-contexts has its last step choose among 8, 16 and 32
    contexts per particle (the choice itself: test_finetune_aligned_model_reports_pose_ranking
    and test_lost_threshold.py)."""
    from dmn_localizer.cli import build_parser
    from dmn_localizer.commands.calibrate_lost import parse_counts
    args = build_parser().parse_args(['finetune', 'bag', '--image-topic', '/i', '--pose-topic',
                                      '/p', '--out', 'out'])
    assert parse_counts(args.nearest_contexts) == [8, 16, 32]


def test_the_card_lists_the_stages_in_training_order():
    """card.json keeps its keys sorted: a card rebuilt from it still says view pairs first."""
    from dmn_localizer.training.finetune import _stages_text
    stages = json.loads(json.dumps({'view_pairs': dict(steps=5, minutes=30.0),
                                    'filter': dict(steps=7, minutes=30.0)}, sort_keys=True))
    assert list(stages) == ['filter', 'view_pairs']
    assert _stages_text(stages) == (' (view pairs: 5 steps in 30.0 min, then end to end '
                                    'through the filter: 7 steps in 30.0 min)')
    assert _stages_text({}) == ''


def test_finetune_aligned_model_reports_pose_ranking(places, tmp_path):
    """An aligned model fine-tunes by the view-pair recipe on bags (no true depths: overlaps
    from its predicted ones); the card adds the tie-safe candidate top-1 and its twin, and
    the lost-flag calibration on the held-out place (its run on its own map and on another
    place's), whose threshold and covariance scale reach the model card."""
    out = tmp_path / 'ft_aligned'
    card = finetune([places / f'place{i}' for i in (1, 2, 3)], *TOPICS, out,
                    model_path=os.path.join(REPO, 'models', 'aligned_mazes'),
                    calibrate_lost=calibrate, nearest_candidates=(8, 1), **SMALL)
    # both stages: view pairs, then end to end through the filter from the first's best
    assert card['architecture'] == 'aligned' and card['steps'] == 4
    assert {k: v['steps'] for k, v in card['stages'].items()} == {'view_pairs': 2, 'filter': 2}
    with open(out / 'run_filter' / 'log.csv', newline='') as f:
        rows = list(csv.DictReader(f))
    assert rows and all(r['rollout_loss'] != '' and r['val_success'] != '' for r in rows)
    assert yaml.safe_load((out / 'run_filter' / 'config.yaml').read_text())['init_from'] == \
        str(out / 'run' / 'best')
    val = open_dataset(out / 'data' / 'val')
    # the bags' camera_info reached the dataset
    assert abs(val.manifest['camera']['hfov_deg'] - 90.0) < 0.5
    for key in ('zero_shot', 'fine_tuned'):
        figures = card[key]
        assert 0 <= figures['pose_top1'] <= 1 and 0 <= figures['pose_top1_wrong'] <= 1
        assert figures['pose_queries'] > 0 and 'success@5' in figures
    assert (f"over its {card['zero_shot']['pose_queries']} candidate sets or "
            f"{card['zero_shot']['episodes']} episodes") in (out / 'card.md').read_text()
    model = load_model(out / 'model')
    assert model.config.architecture == 'aligned' and model.config.context_pooling == 'sum'
    text = (out / 'card.md').read_text()
    assert 'top-1 of 64 candidates' in text and (out / 'curve.png').stat().st_size > 0
    assert (out / 'curve_filter.png').stat().st_size > 0 and 'end to end' in text
    # the card says which checkpoint of the last stage it hands on (as its best model says)
    step = load_model(out / 'run_filter' / 'best').card['metadata']['validation']['step']
    assert ('The model: the checkpoint of the last stage (end to end through the filter) '
            'with the best held-out global success@5') in text
    assert f': step {step}, after ' in text and '`run_filter/last`' in text
    lost = card['lost_flag']
    held_out = card['val_places'][0]
    assert [(r['kind'], r['map_place'] == held_out) for r in lost['runs']] == [
        ('own', True), ('foreign', False)]
    threshold = model.card['metadata'].get('min_evidence')
    assert threshold == lost['min_evidence'] and 'Lost flag' in text
    assert threshold is not None and threshold > 0   # these places give one (2.0)
    assert lost['own_flagged'][0] < lost['foreign_flagged'][0]
    # the covariance scale of the held-out own-map run reaches the model card
    scale = model.card['metadata'].get('covariance_scale')
    assert scale == lost['covariance_scale'] > 0 and 'Covariance' in text
    # and the first image's weight, fitted on its images
    initial = model.card['metadata'].get('initial_likelihood_scale')
    assert initial == lost['initial_likelihood_scale'] > 0 and 'First image' in text
    # and the count of contexts per particle its held-out run localized best with
    count = model.card['metadata'].get('nearest_contexts')
    rmse = lost['mean_rmse']
    assert count == lost['nearest_contexts'] == next(   # the smaller one within 5% wins
        m for m in (1, 8) if rmse[m] <= 1.05 * min(rmse.values())), rmse
    assert f'`nearest_contexts` {count}' in text


def test_finetune_with_a_depth_topic_supervises_the_depth_head(places, tmp_path):
    """finetune --depth-topic: the datasets keep the measured column depths, the depth head
    is trained against them (the training log's depth error is nonzero; without the topic
    there is nothing to supervise it) and the card gives the predicted depths' error on the
    held-out views before and after."""
    out = tmp_path / 'ft_depth'
    topic = '/camera/depth/image_raw'
    small = dict(SMALL, data_kw=dict(SMALL['data_kw'], depth_topic=topic))
    card = finetune([places / f'place{i}' for i in (1, 2, 3)], *TOPICS, out,
                    model_path=os.path.join(REPO, 'models', 'aligned_mazes'), **small)
    assert card['depth_topic'] == topic and card['stages']['view_pairs']['steps'] == 2
    counts = card['data']['train']
    assert counts['depth_images'] > 0 and counts['pairs_without_depth'] == 0
    assert open_dataset(out / 'data' / 'val').manifest['depth']['topic'] == topic
    for key in ('zero_shot', 'fine_tuned'):
        assert 0 < card[key]['depth_error'] < 2 and card[key]['depth_columns'] > 0
    with open(out / 'run' / 'log.csv', newline='') as f:
        rows = list(csv.DictReader(f))
    assert rows and all(float(r['depth_error']) > 0 for r in rows)
    text = (out / 'card.md').read_text()
    assert topic in text and 'median absolute log error' in text
    assert f'--depth-topic {topic}' in card['replay_command']
    # without the topic (and with the view pairs only: --filter-share 0)
    plain = finetune([places / f'place{i}' for i in (1, 2, 3)], *TOPICS, tmp_path / 'plain',
                     model_path=os.path.join(REPO, 'models', 'aligned_mazes'),
                     **dict(SMALL, filter_share=0.0))
    assert 'depth_error' not in plain['zero_shot']
    assert list(plain['stages']) == ['view_pairs'] and plain['steps'] == 2
    assert not (tmp_path / 'plain' / 'run_filter').exists()
    assert not (tmp_path / 'plain' / 'curve_filter.png').exists()
    with open(tmp_path / 'plain' / 'run' / 'log.csv', newline='') as f:
        rows = list(csv.DictReader(f))
    assert rows and all(float(r['depth_error']) == 0 for r in rows)
