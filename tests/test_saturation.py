"""gatescope.saturation is the one saturation: its rules (ranges, tanh(c), NaN), and its three users agree (the
analysis on the kinds of bounded range it measures)."""
import subprocess
import sys

import numpy as np
import pytest
import torch

from gatescope.analysis.dynamics import saturation as analysis_saturation
from gatescope.analysis.weights import saturation_report
from gatescope.errors import GatescopeError
from gatescope.saturation import Saturation, on_unit_interval, saturation
from gatescope.traces.trace import Trace
from gatescope.tui import ranking
from gatescope.tui.arrays import trace_file


def test_each_kind_is_read_on_0_to_1_through_its_range():
    x = np.array([[-2.0, 0.0, 0.5]])
    np.testing.assert_allclose(on_unit_interval(x, "f"), x)  # a sigmoid gate as it is
    np.testing.assert_allclose(on_unit_interval(x, "g"), (x + 1) / 2)  # tanh range
    np.testing.assert_allclose(on_unit_interval(x, "c"), (np.tanh(x) + 1) / 2)  # the cell through tanh


def test_nan_is_never_counted_and_an_all_nan_unit_has_no_fraction():
    z = np.array([[0.05, np.nan], [0.95, np.nan], [np.nan, np.nan], [0.5, np.nan]])  # (4, 2)
    counts = saturation([z[:2], z[2:]], "z", hidden=2)
    np.testing.assert_array_equal(counts.counted, [3, 0])
    np.testing.assert_allclose(counts.left_fraction, [1 / 3, np.nan])
    np.testing.assert_allclose(counts.right_fraction, [1 / 3, np.nan])
    np.testing.assert_allclose(counts.fraction, [2 / 3, np.nan])
    c = Saturation.of(np.array([[np.inf], [-np.inf], [0.0]]), "c")
    assert (c.left.tolist(), c.right.tolist(), c.counted.tolist()) == ([1], [1], [3])  # tanh(±inf) = ±1
    assert np.isnan(saturation([], "i", hidden=1).fraction).all()  # no rows: no answer, not 0


@pytest.mark.parametrize("kind", ["f", "g", "c"])
def test_analysis_inspect_and_browser_agree_with_nan_rows(kind):
    torch.manual_seed(0)
    x = torch.randn(12, 3) * 3
    if kind == "f":
        x = x.sigmoid()
    elif kind == "g":
        x = x.tanh()
    x[2, 0] = x[7, 1] = float("nan")
    x[:, 2] = float("nan")  # a unit that never has a value
    trace = Trace({f"rnn.l0.fwd.{kind}": x}, [0, 12])
    unit = on_unit_interval(x.numpy(), kind)
    valid = ~np.isnan(unit)
    with np.errstate(invalid="ignore"):
        left = np.where(valid.any(0), ((unit < 0.1) & valid).sum(0) / valid.sum(0), np.nan)
        right = np.where(valid.any(0), ((unit > 0.9) & valid).sum(0) / valid.sum(0), np.nan)
    np.testing.assert_allclose(ranking.saturation(trace_file(trace), f"rnn.l0.fwd.{kind}"), left + right)
    if kind == "c":  # the browser ranks the cell state through tanh; the analysis measures bounded kinds only
        with pytest.raises(GatescopeError, match="c lies in -inf..inf"):
            analysis_saturation(trace, kinds=kind)
        return
    table = analysis_saturation(trace, kinds=kind)
    np.testing.assert_allclose(table["left"], left)
    np.testing.assert_allclose(table["right"], right)
    with np.errstate(invalid="ignore"):
        mean = np.where(valid.any(0), np.nansum(x.numpy(), 0) / valid.sum(0), np.nan)
    np.testing.assert_allclose(table["mean"], mean, rtol=1e-6)
    if kind == "f":  # inspect reports sigmoid gates: means over the units that have a value
        report = saturation_report(trace)["rnn.l0.fwd.f"]
        assert report["left"] == pytest.approx(np.nanmean(left)) and report["right"] == pytest.approx(np.nanmean(right))
        assert report["units"] == 3



def test_the_browser_side_needs_no_torch():
    code = ("import sys, gatescope.saturation, gatescope.tui.ranking; "
            "sys.exit('torch' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_a_relu_rnns_h_is_read_through_tanh_from_zero():
    import gatescope

    torch.manual_seed(0)
    rnn = torch.nn.RNN(3, 4, nonlinearity="relu")
    with torch.no_grad(), gatescope.record(rnn) as rec:
        rnn(torch.randn(50, 2, 3) * 3)
    h = rec.trace["rnn.l0.fwd.h"].numpy().astype(np.float64)
    sat = ranking.saturation(trace_file(rec.trace), "rnn.l0.fwd.h")  # the browser's ranking
    left, right = (np.tanh(h) < 0.1).mean(0), (np.tanh(h) > 0.9).mean(0)  # not (h + 1) / 2: h is never negative
    np.testing.assert_allclose(sat, left + right)
    assert max(left) > 0
    with pytest.raises(GatescopeError, match="h lies in 0..inf"):  # unbounded: no saturation to analyse
        analysis_saturation(rec.trace, kinds="h")
