"""Poses outside the map (farther than max_context_distance from every context) score as the
no-evidence floor, with the shipped model on a real rendered maze: they no longer outscore
the mapped poses (the model's own scores there beat about 68% of them with the default
models/aligned_mazes_e2e, about 65% with models/aligned_mazes and about 70% with
models/dmn_mazes)."""
import math

import numpy as np
import pytest
import torch

from dmn_localizer.bags.simulate import simulate_bag
from dmn_localizer.config import LocalizerConfig
from dmn_localizer.data.dataset import SPLIT_SEEDS
from dmn_localizer.localization.localizer import Localizer
from dmn_localizer.model.preprocess import images_to_tensor
from dmn_localizer.model.io import load_model
from dmn_localizer.replay.offline import build_map, read_stream, Topics
from dmn_localizer.util.resources import default_model_path


@pytest.fixture(scope='module')
def scene(tmp_path_factory):
    """The shipped model, a map of a test maze, query images with their true poses and
    camera poses inside the map (within 1.5 m of a context) and outside (> 6 m from all)."""
    root = tmp_path_factory.mktemp('outside')
    runs = simulate_bag('mazes', SPLIT_SEEDS['test'][0] + 3, root, image_size=32,
                        mapping_frames=800, localization_frames=8)
    view_map = build_map(runs['mapping'][0], Topics(), 32)
    stream = read_stream(runs['localization'][0], Topics(), 32)
    model = load_model(default_model_path())
    rng = np.random.default_rng(0)
    lo, hi = view_map.poses[:, :2].min(0), view_map.poses[:, :2].max(0)

    def poses(margin, keep):
        p = np.column_stack([rng.uniform(lo[0] - margin, hi[0] + margin, 6000),
                             rng.uniform(lo[1] - margin, hi[1] + margin, 6000),
                             rng.uniform(-math.pi, math.pi, 6000)])
        d = np.hypot(*(p[:, None, :2] - view_map.poses[None, :, :2]).T).min(0)
        return p[keep(d)][:200]
    inside = poses(0.0, lambda d: d < 1.5)
    outside = poses(25.0, lambda d: d > 6.0)
    assert len(inside) == len(outside) == 200
    return model, view_map, stream, inside, outside


def _scores(loc, model, image, cams):
    cam = torch.as_tensor(np.asarray(cams), dtype=torch.float32)[None]
    with torch.no_grad():
        q = model.encode_query(images_to_tensor(image[None]))
        return (loc.log_likelihood(q, cam)[0].numpy(), loc.model_log_likelihood(q, cam)[0].numpy(),
                loc.no_evidence_floor(q))


def test_outside_poses_score_the_floor(scene):
    model, view_map, stream, inside, outside = scene
    loc = Localizer(model, LocalizerConfig(), 'cpu')
    loc.set_map(view_map)
    assert LocalizerConfig().max_context_distance == 5.0
    beat_raw, beat = [], []
    for i in range(0, len(stream.images), 2):
        truth = stream.truth[i]
        cams = np.vstack([truth[None], inside, outside])
        ll, raw, floor = _scores(loc, model, stream.images[i], cams)
        t, ins, out = slice(0, 1), slice(1, 1 + len(inside)), slice(1 + len(inside), None)
        np.testing.assert_array_equal(ll[out], floor)            # every outside pose
        np.testing.assert_allclose(ll[t], raw[t], rtol=1e-5, atol=1e-4)   # the model's own
        np.testing.assert_allclose(ll[ins], raw[ins], rtol=1e-5, atol=1e-4)
        assert ll[out].max() < ll[t].min()           # never above the truth
        beat_raw.append(np.mean(raw[out][:, None] > raw[ins][None]))
        beat.append(np.mean(ll[out][:, None] > ll[ins][None]))
    print(f'outside poses beating mapped ones: {np.mean(beat_raw):.3f} -> {np.mean(beat):.3f}')
    assert np.mean(beat_raw) > 0.3                    # the defect: the model alone
    assert np.mean(beat) < 0.05
    off = Localizer(model, LocalizerConfig(max_context_distance=0.0), 'cpu')
    off.set_map(view_map)
    ll, raw, _ = _scores(off, model, stream.images[0], outside)
    np.testing.assert_array_equal(ll, raw)            # 0: the test is off


def test_a_belief_all_outside_keeps_its_weights(scene):
    """When every particle is outside, the image says nothing about them: the update leaves
    the weights as they were (no evidence)."""
    model, view_map, stream, _, outside = scene
    loc = Localizer(model, LocalizerConfig(force_update_when_still=True), 'cpu')
    loc.set_map(view_map)
    loc.init_gaussian(outside[0], (0.01, 0.01, 0.01), k=64)
    before = loc.log_weights.clone()
    report = loc.update(stream.images[0])
    assert report.updated
    torch.testing.assert_close(loc.log_weights, before)
