"""The Wilson interval printed beside the success rates of eval's table and finetune's card."""
import math

import numpy as np
import pytest

from dmn_localizer.evaluation.intervals import (percent_with_interval, rate_interval,
                                                wilson_interval)


def test_known_values_and_edges():
    low, high = wilson_interval(12, 15)            # finetune's 80% on 15 held-out episodes
    assert (round(low, 3), round(high, 3)) == (0.548, 0.930)
    low, high = wilson_interval(0, 10)             # no success: [0, 0.278], not a point
    assert low == 0.0 and abs(high - 0.2775) < 1e-3
    low, high = wilson_interval(10, 10)
    assert abs(high - 1.0) < 1e-12 and abs(low - 0.7225) < 1e-3
    assert all(math.isnan(v) for v in wilson_interval(0, 0))
    with pytest.raises(ValueError):
        wilson_interval(11, 10)
    # a rate is turned back into its count of successes
    assert rate_interval(0.8, 15) == wilson_interval(12, 15)
    # more trials, a narrower interval about the same rate
    (a, b), (c, d) = wilson_interval(136, 200), wilson_interval(34, 50)
    assert a < 0.68 < b and c < a and b < d


def test_symmetric():
    for k in range(0, 16):
        low, high = wilson_interval(k, 15)
        low2, high2 = wilson_interval(15 - k, 15)
        assert abs(low - (1 - high2)) < 1e-12 and abs(high - (1 - low2)) < 1e-12


@pytest.mark.parametrize('p, n', [(0.7, 15), (0.68, 200), (0.95, 40)])
def test_covers_the_true_rate_about_95_percent_of_the_time(p, n):
    """What the interval is for: over repeated measurements of a rate p on n episodes, it
    contains p in about 95% of them (Wilson's coverage wobbles around the nominal level)."""
    draws = np.random.default_rng(0).binomial(n, p, size=4000)
    covered = np.mean([lo <= p <= hi for lo, hi in (wilson_interval(k, n) for k in draws)])
    assert 0.90 <= covered <= 0.99


def test_text():
    assert percent_with_interval(0.8, 15) == '80.0% (55-93%)'
    assert percent_with_interval(0.8, None) == '80.0%'
    assert percent_with_interval(0.8, 0) == '80.0%'
