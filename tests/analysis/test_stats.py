"""The shared intervals: Wilson's for an accuracy, a paired bootstrap's for an intervention's effect."""
from __future__ import annotations

import math

import numpy as np
import pytest

from gatescope.analysis.stats import paired_bootstrap_interval, wilson_interval


@pytest.mark.parametrize("k,n,expected", [
    (0, 10, (0.0, 0.2775)),  # Brown, Cai & DasGupta 2001 / any statistics package's Wilson interval
    (5, 10, (0.2366, 0.7634)),
    (10, 10, (0.7225, 1.0)),
    (81, 263, (0.2553, 0.3662)),
])
def test_wilson_interval_matches_published_values(k, n, expected):
    assert wilson_interval(k, n) == pytest.approx(expected, abs=1e-4)


def test_wilson_interval_of_nothing_is_nan():
    assert all(math.isnan(x) for x in wilson_interval(0, 0))


def test_the_paired_bootstrap_is_centred_on_the_effect_and_narrows_with_items():
    rng = np.random.default_rng(0)
    before = np.ones(400, dtype=bool)
    after = rng.random(400) > 0.3  # about 30 points lost
    low, high = paired_bootstrap_interval(before, after)
    drop = before.mean() - after.mean()
    assert low < drop < high and high - low < 0.1
    wide = paired_bootstrap_interval(before[:40], after[:40])
    assert wide[1] - wide[0] > high - low
    assert paired_bootstrap_interval(before, before) == (0.0, 0.0)  # no change, no interval
    assert paired_bootstrap_interval(before, after) == (low, high)  # seeded: the same every time
