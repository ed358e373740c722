"""One decision of a label's kind, shared by the analyses (make_labels) and the browser's tracks (classify)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from gatescope.analysis.labels import make_labels
from gatescope.tui.features import MAX_CATEGORIES, classify
from gatescope.validation.text import MAX_CLASSES, label_kind


@pytest.mark.parametrize("values,kind", [
    ([0, 1, 1, np.nan], "binary"),
    ([-1, 1], "binary"),  # two values of any kind are binary, not only 0 and 1
    ([0, 1, 2, 3], "categorical"),
    ([0.5, 1, 2], "continuous"),
    (list(range(MAX_CLASSES + 1)), "continuous"),
])
def test_the_analyses_and_the_browser_agree_on_the_kind(values, kind):
    values = np.asarray(values, dtype=np.float64)
    assert label_kind(np.unique(values[np.isfinite(values)])) == kind
    assert make_labels(torch.as_tensor(values)).kind == kind
    if len(values) <= MAX_CATEGORIES or kind != "categorical":
        assert classify("f", values).shape == kind


def test_a_binary_track_of_other_values_draws_the_higher_one_filled():
    track = classify("sign", np.array([-1.0, 1.0, np.nan, 1.0]))
    assert track.shape == "binary" and track.categories == (-1.0, 1.0) and track.labels == ("-1", "1")
    assert track.summary([(0, 2)]) == "sign: 50% of matched tokens at 1, 0% of matches wholly (trace 67%)"
