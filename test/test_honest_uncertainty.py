"""Never confidently wrong: localizing against the map of another world (the images match no
view), the shipped aligned model's scores stay below min_evidence, the localizer flags the
estimate unreliable and its covariance covers the map; against the right map it does not."""
from pathlib import Path

import numpy as np
import pytest

import dmn_localizer.replay.offline as core
from dmn_localizer.bags.simulate import simulate_bag
from dmn_localizer.config import LocalizerConfig
from dmn_localizer.localization.localizer import Localizer
from dmn_localizer.model import load_model

MODEL = Path(__file__).resolve().parents[1] / 'models' / 'aligned_mazes'


@pytest.fixture(scope='module')
def worlds(tmp_path_factory):
    root = tmp_path_factory.mktemp('worlds')
    return [simulate_bag('mazes', 1_100_000 + seed, root / str(seed), image_size=32,
                         mapping_frames=300, localization_frames=40) for seed in (3, 7)]


def _run(query, mapping):
    """(share of updates flagged unreliable, share with the truth inside the x-y 2-sigma
    ellipse, the localizer) for the localization run of ``query`` on the map of ``mapping``."""
    loc = Localizer(load_model(MODEL), LocalizerConfig(global_num_particles=1024), 'cpu', seed=0)
    loc.set_map(core.build_map(mapping['mapping'][0], core.Topics(), 32))
    flags, update = [], loc.update

    def recording_update(*args, **kwargs):
        report = update(*args, **kwargs)
        if report.updated:
            flags.append(report.unreliable)
        return report
    loc.update = recording_update
    track = core.localize(loc, core.read_stream(query['localization'][0], core.Topics(), 32))
    inside = [float(d @ np.linalg.solve(c[:2, :2], d)) <= 6.18     # chi2(2) at 95.4%
              for d, c in ((e[:2] - t[:2], c) for e, t, c in
                           zip(track.estimates, track.truth, track.covariances))]
    return np.mean(flags), np.mean(inside), loc


def test_a_foreign_map_is_flagged_and_covered(worlds):
    flagged, inside, loc = _run(worlds[0], worlds[1])
    assert flagged > 0.5 and inside > 0.6, (flagged, inside)
    assert loc.estimate()[1][0, 0] >= loc.bounds[2] ** 2 / 12   # covers the map
    flagged, _, _ = _run(worlds[0], worlds[0])
    assert flagged < 0.2, flagged
