"""Rich display: every figure and table is parsed (xml.etree, html.parser) and its tokens, colours and numbers
compared with the trace; a million-token trace is drawn from the rows asked for only."""
from __future__ import annotations

import math
import subprocess
import sys
import xml.etree.ElementTree as ET
from html.parser import HTMLParser

import numpy as np
import pytest
import torch

import gatescope
from gatescope import Trace
from gatescope.display import Heatmap, UnitText, show
from gatescope.display.colorscale import DIVERGING, NAN_COLOR, SEQUENTIAL, ColorScale
from gatescope.errors import GatescopeError
from gatescope.kinds import KINDS, RNN_RELU

SVG = "{http://www.w3.org/2000/svg}"
VOCAB = ["<unk>", "the", "boy", "boys", "near", "car", "cars", "greets", "greet", "a\tb", "x\ny", "<i>&"]


def small_trace(nan: bool = True) -> Trace:
    """Two sequences (4 and 3 tokens) of an LSTM layer of 5 units, every kind, values in their ranges."""
    gen = torch.Generator().manual_seed(0)
    tensors = {}
    for kind in "ifgoch":
        raw = torch.randn(7, 5, generator=gen)
        value = torch.sigmoid(raw) if KINDS[kind].is_gate else raw * 2 if kind == "c" else torch.tanh(raw)
        tensors[f"rnn.l0.fwd.{kind}"] = value
    if nan:
        tensors["rnn.l0.fwd.c"][2, 3] = math.nan
    meta = {"vocab": VOCAB, "tokenizer": "word",
            "modules": [{"name": "rnn", "cell": "LSTM", "hidden_size": 5, "num_layers": 1}]}
    return Trace(tensors, [0, 4, 7], token_ids=[1, 2, 4, 7, 11, 9, 10], meta=meta,
                 features={"subject_number": [0, 0, math.nan, 0, 1, 1, 1]})


def parse(svg: str) -> ET.Element:
    root = ET.fromstring(svg)
    assert root.tag == SVG + "svg"
    return root


def texts(root: ET.Element) -> list[str]:
    return ["".join(t.itertext()) for t in root.iter(SVG + "text")]


def title_value(title: str, label: str) -> float:
    """The number after ``label = `` on a line of a hover title, read as the float32 it was written from."""
    (line,) = [ln for ln in title.splitlines() if ln.startswith(label + " = ")]
    return float32(line.split(" = ")[1])


def float32(text: str) -> float:
    """Shown text read back as float32 (the shortest text that round-trips a float32), widened to a float."""
    return float(np.float32(text))


# -- the colour scales ------------------------------------------------------------------------------------
def test_scales_follow_the_kind_registry():
    for symbol, kind in KINDS.items():
        scale = ColorScale(symbol)
        assert scale.sequential == (kind.range.low >= 0)  # a gate, a normaliser: from 0 up
        assert (scale.low, scale.high) == (kind.range.shown.low, kind.range.shown.high)  # unbounded: through tanh
    assert ColorScale("f").hex_colors(np.array([0.0, 0.5, 1.0, np.nan])) == [
        SEQUENTIAL[0], SEQUENTIAL[8], SEQUENTIAL[15], NAN_COLOR]
    assert ColorScale("c").hex_colors(np.array([math.atanh(-0.5), 0.0, 30.0])) == [
        DIVERGING[4], DIVERGING[8], DIVERGING[16]]
    with pytest.raises(GatescopeError, match="no colour scale for kind 'q'"):
        ColorScale("q")


def test_scales_follow_a_kinds_range_in_its_cell_type():
    relu_h = ColorScale("h", RNN_RELU.range_of("h"))  # 0..inf: sequential, read through tanh
    assert relu_h.sequential and (relu_h.low, relu_h.high) == (0.0, 1.0) and relu_h.label == "tanh(h)"
    assert relu_h.hex_colors(np.array([0.0, math.atanh(0.5), 50.0])) == [SEQUENTIAL[0], SEQUENTIAL[8], SEQUENTIAL[15]]
    assert ColorScale("h").hex_colors(np.array([-1.0, 0.0, 1.0])) == [DIVERGING[0], DIVERGING[8], DIVERGING[16]]


def test_colorscale_and_display_import_neither_textual_nor_torch():
    code = ("import sys, gatescope, gatescope.display.colorscale, gatescope.display; gatescope.show; "
            "bad = [m for m in ('torch', 'textual', 'rich', 'matplotlib', 'gatescope.tui') if m in sys.modules]; "
            "sys.exit(str(bad) if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_browser_scale_is_the_shared_scale():
    pytest.importorskip("textual", reason="the browser's styles need Textual")
    from gatescope.tui.colors import Scale

    values = np.linspace(-3, 3, 41, dtype=np.float32)
    for kind in KINDS:
        np.testing.assert_array_equal(Scale(kind).levels(values), ColorScale(kind).levels(values))


# -- one unit over text ---------------------------------------------------------------------------------
def test_unit_text_tokens_colours_and_exact_values():
    trace = small_trace()
    fig = show(trace, unit="rnn.l0.fwd.c:3", sequences=[0, 1], kinds="i,f,c")
    assert isinstance(fig, UnitText) and not fig.cut
    root = parse(fig.svg)
    tokens = [g for g in root.iter(SVG + "g") if g.get("class") == "token"]
    assert len(tokens) == 7
    rows = list(range(7))
    scale = ColorScale("c")
    for g, row in zip(tokens, rows):
        title = g.find(SVG + "title").text
        token = trace.tokens(row, row + 1)[0]
        assert title.startswith(f"{token!r}:") and f"(row {row})" in title
        shown = "".join(g.find(SVG + "text").itertext())
        assert shown == token.replace("\t", "⇥").replace("\n", "↵")
        expected = float(trace["rnn.l0.fwd.c"][row, 3])
        got = title_value(title, "rnn.l0.fwd.c:3")
        assert (math.isnan(got) and math.isnan(expected)) or got == expected  # float32, exactly
        assert g.find(SVG + "rect").get("fill") == scale.hex_colors(np.array([expected]))[0]
        for kind in "if":
            assert title_value(title, kind) == float(trace[f"rnn.l0.fwd.{kind}"][row, 3])
    assert math.isnan(title_value(tokens[2].find(SVG + "title").text, "rnn.l0.fwd.c:3"))
    assert tokens[2].find(SVG + "rect").get("fill") == NAN_COLOR
    # hover columns over the line plots: one per token, every plotted kind
    columns = [r for r in root.iter(SVG + "rect") if r.get("class") == "column"]
    assert len(columns) == 7
    assert title_value(columns[5].find(SVG + "title").text, "f") == float(trace["rnn.l0.fwd.f"][5, 3])
    # the NaN at position 2 breaks c's line in sequence 0: positions 0-1 a line, 3 a dot
    assert len(list(root.iter(SVG + "polyline"))) == 3 * 2 and len(list(root.iter(SVG + "circle"))) == 1
    assert "sequence 1, positions 0-2 of 3" in texts(root)


def test_unit_text_of_a_recorded_model_matches_the_trace():
    from gatescope import sample_models

    model = gatescope.load(sample_models.path("agreement_lstm.safetensors")).eval()
    with torch.no_grad(), gatescope.record(model) as rec:
        model(torch.tensor([model.encode("the boy near the cars greets")]))
    fig = show(rec.trace, unit="rnn.l0.fwd.h:96")
    tokens = [g for g in parse(fig.svg).iter(SVG + "g") if g.get("class") == "token"]
    assert ["".join(g.find(SVG + "text").itertext()) for g in tokens] == "the boy near the cars greets".split()
    h = rec.trace["rnn.l0.fwd.h"][:, 96]
    assert [title_value(g.find(SVG + "title").text, "rnn.l0.fwd.h:96") for g in tokens] == h.tolist()
    assert fig.kinds == list("ifgoch")  # every recorded kind by default


# -- the heatmap ----------------------------------------------------------------------------------------
def test_heatmap_cells_are_the_trace_values():
    trace = small_trace()
    units = ["rnn.l0.fwd.h:4", "rnn.l0.fwd.f:0", "rnn.l0.fwd.c:3"]
    fig = show(trace, units=units, sequences=[1, 0])
    assert isinstance(fig, Heatmap)
    cells = [r for r in parse(fig.svg).iter(SVG + "rect") if r.get("class") == "cell"]
    assert len(cells) == 3 * 7
    order = [4, 5, 6, 0, 1, 2, 3]  # sequence 1, then 0
    for k, cell in enumerate(cells):
        row, unit = order[k // 3], units[k % 3]
        name, index = unit.split(":")
        title = cell.find(SVG + "title").text
        expected = float(trace[name][row, int(index)])
        assert title.startswith(f"{unit} at {trace.tokens(row, row + 1)[0]!r}") and f"row {row})" in title
        value = float32(title.rsplit(" = ", 1)[1])
        assert (math.isnan(value) and math.isnan(expected)) or value == expected
        assert cell.get("fill") == ColorScale(name[-1]).hex_colors(np.array([expected]))[0]


def test_heatmap_from_a_ranking_and_kinds():
    trace = small_trace()
    ranking = [{"unit": "rnn.l0.fwd.h:2", "score": 0.9}, {"unit": "rnn.l0.fwd.h:1", "score": 0.8}]
    fig = show(trace, units=ranking, kinds="i,c")
    assert fig.units == ["rnn.l0.fwd.i:2", "rnn.l0.fwd.c:2", "rnn.l0.fwd.i:1", "rnn.l0.fwd.c:1"]
    np.testing.assert_array_equal(fig.values[0][1], trace["rnn.l0.fwd.c"][0:4, 2].numpy())


# -- large traces: only what was asked is read, and a cut is said ----------------------------------------
class RowSpy:
    """A quantity that logs which rows are read."""

    def __init__(self, tensor: torch.Tensor, log: list) -> None:
        self.tensor, self.log, self.shape, self.dtype = tensor, log, tensor.shape, tensor.dtype

    def __getitem__(self, key):
        rows = key[0] if isinstance(key, tuple) else key
        assert isinstance(rows, slice), f"a display read rows by {key!r}, not a slice"
        self.log.append(range(*rows.indices(self.shape[0])))
        return self.tensor[key]


class TraceSpy:
    """A trace whose quantities log the rows read."""

    def __init__(self, trace: Trace) -> None:
        self.trace, self.log = trace, []

    def __getitem__(self, name):
        return RowSpy(self.trace[name], self.log)

    def __len__(self):
        return len(self.trace)

    def __getattr__(self, name):
        return getattr(self.trace, name)


@pytest.fixture(scope="module")
def million(tmp_path_factory) -> Trace:
    """A memory-mapped trace of 1,000,000 tokens in one sequence, then 3 short ones (h and f, 4 units)."""
    n = 1_000_000
    rng = np.random.default_rng(0)
    values = torch.from_numpy(rng.random((n + 9, 4), dtype=np.float32).astype(np.float16))
    path = tmp_path_factory.mktemp("big") / "big.safetensors"
    Trace({"rnn.l0.fwd.f": values, "rnn.l0.fwd.h": values * 2 - 1}, [0, n, n + 3, n + 6, n + 9],
          token_ids=torch.from_numpy(rng.integers(0, len(VOCAB), n + 9)), meta={"vocab": VOCAB}).save(path)
    return gatescope.load_trace(path)


def test_a_million_token_sequence_is_cut_to_a_window_and_says_so(million):
    spy = TraceSpy(million)
    fig = show(spy, unit="rnn.l0.fwd.h:1")
    assert fig.cut and len(fig.spans) == 1 and fig.spans[0][1:3] == (0, 2000)
    note = "cut: sequence 0 positions 0-999999 asked for; showing 0-1999"
    assert any(t.startswith(note) for t in texts(parse(fig.svg)))
    assert spy.log and all(r.start >= 0 and r.stop <= 2000 for r in spy.log)
    spy.log.clear()
    fig = show(spy, units=["rnn.l0.fwd.f:0", "rnn.l0.fwd.h:3"], window=(500_000, 500_050))
    assert not fig.cut and fig.values[0].shape == (2, 50)
    assert {(r.start, r.stop) for r in spy.log} == {(500_000, 500_050)}
    np.testing.assert_array_equal(fig.values[0][0], million["rnn.l0.fwd.f"][500_000:500_050, 0].float().numpy())


def test_sequences_past_max_tokens_are_left_out_and_said(million):
    spy = TraceSpy(million)
    fig = show(spy, unit="rnn.l0.fwd.f:2", sequences=[1, 2, 3], max_tokens=5)
    assert [s.sequence for s in fig.spans] == [1, 2] and fig.spans[1].stop - fig.spans[1].start == 2
    assert fig.notes == ["cut: sequence 2 positions 0-2 asked for; showing 0-1 (max_tokens=5; window=(start, stop) "
                         "shows others)", "cut: 1 of the 3 sequences asked for are not shown (max_tokens=5 reached)"]
    assert all(r.start >= 1_000_000 for r in spy.log)


def test_trace_summary_of_a_million_tokens_reads_only_its_heatmap(million):
    from gatescope.display.summary import trace_html

    spy = TraceSpy(million)
    html = trace_html(spy)
    assert "4 sequences, 1000009 tokens, 2 quantities" in html
    assert "cut: sequence 0 positions 0-999999 asked for; showing 0-47" in html
    assert spy.log and all(r.stop <= 48 for r in spy.log)


# -- saving, and errors -----------------------------------------------------------------------------------
def test_figures_save_as_html_and_svg(tmp_path):
    fig = show(small_trace(), unit="rnn.l0.fwd.f:1")
    fig.save(tmp_path / "unit.svg")
    fig.save(tmp_path / "unit.html")
    svg = (tmp_path / "unit.svg").read_text(encoding="utf-8")
    assert ET.fromstring(svg.split("\n", 1)[1]).tag == SVG + "svg"
    page = (tmp_path / "unit.html").read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and fig.svg in page and "<script" not in page
    with pytest.raises(GatescopeError, match="must end in .html or .svg"):
        fig.save(tmp_path / "unit.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["unit.html", "unit.svg"]  # no temporary files left


def test_show_opens_a_trace_file(tmp_path):
    trace = small_trace()
    trace.save(tmp_path / "t.safetensors")
    fig = show(str(tmp_path / "t.safetensors"), units=["rnn.l0.fwd.g:2"], sequences=torch.tensor(1))
    np.testing.assert_array_equal(fig.values[0][0], trace["rnn.l0.fwd.g"][4:7, 2].numpy())
    with pytest.raises(GatescopeError, match="no such file"):
        show(tmp_path / "missing.safetensors", unit="rnn.l0.fwd.h:0")


@pytest.mark.parametrize("kwargs, message", [
    ({}, "give unit="),
    ({"unit": "rnn.l0.fwd.h:1", "units": ["rnn.l0.fwd.h:1"]}, "give unit="),
    ({"unit": "rnn.l0.fwd.h:5"}, "index 5 is out of range"),
    ({"unit": "rnn.l1.fwd.h:0"}, "no quantity 'rnn.l1.fwd.h'"),
    ({"unit": "h:3"}, "not a quantity name"),
    ({"unit": "rnn.l0.fwd.h:1", "kinds": "f,z"}, "kinds z not recorded for rnn.l0.fwd; it has: i,f,g,o,c,h"),
    ({"unit": "rnn.l0.fwd.h:1", "sequences": [2]}, "no sequence 2: the trace has 2"),
    ({"unit": "rnn.l0.fwd.h:1", "sequences": []}, "no sequence chosen"),
    ({"unit": "rnn.l0.fwd.h:1", "sequences": [True]}, "expected sequence numbers, got True"),
    ({"unit": "rnn.l0.fwd.h:1", "window": (5, 9)}, r"window \(5, 9\) is empty in sequence 0"),
    ({"unit": "rnn.l0.fwd.h:1", "max_tokens": 0}, "max_tokens must be at least 1"),
    ({"unit": "rnn.l0.fwd.h:1", "window": (0, 2, 1)}, r"window must be \(start, stop\)"),
    ({"units": ["rnn.l0.fwd.h:1"], "window": ("a", 2)}, r"window must be \(start, stop\)"),
    ({"units": []}, "names no unit"),
    ({"units": [3]}, "expected a unit name"),
])
def test_bad_requests_are_one_line_errors(kwargs, message):
    with pytest.raises(GatescopeError, match=message):
        show(small_trace(), **kwargs)


def test_too_many_heatmap_units_are_cut_and_said():
    fig = show(small_trace(), units=[f"rnn.l0.fwd.h:{i}" for i in range(5)], max_units=2)
    assert fig.units == ["rnn.l0.fwd.h:0", "rnn.l0.fwd.h:1"]
    assert fig.notes == ["cut: 5 units asked for; showing the first 2 (max_units=2)"]
    assert fig.notes[0] in texts(parse(fig.svg))


# -- tables -----------------------------------------------------------------------------------------------
class Cells(HTMLParser):
    """The rows of an HTML table: (text, title) per cell; headers and the caption."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.rows, self.headers, self.captions, self._cell, self._in = [], [], [], None, None
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        if tag == "tr":
            self.rows.append([])
        if tag in ("td", "th", "caption"):
            self._in, self._cell = tag, ["", dict(attrs).get("title")]

    def handle_data(self, data):
        if self._in:
            self._cell[0] += data

    def handle_endtag(self, tag):
        if tag == self._in:
            target = {"td": self.rows[-1] if self.rows else [], "th": self.headers, "caption": self.captions}[tag]
            target.append(tuple(self._cell) if tag == "td" else self._cell[0])
            self._in = None


def test_ranking_table_html_carries_its_rows():
    from gatescope.analysis import rank_units

    ranking = rank_units(small_trace(nan=False), feature="subject_number", kinds="h,c", permutations=0)
    parsed = Cells(ranking._repr_html_())
    assert parsed.headers == ranking.columns
    body = [r for r in parsed.rows if r]
    assert len(body) == len(ranking) == 10
    for cells, row in zip(body, ranking):
        assert cells[0][0] == row["unit"]
        score = cells[ranking.columns.index("score")]
        assert float(score[1]) == row["score"] and score[0] == f"{row['score']:.4g}"
    assert hasattr(ranking, "to_pandas")


def test_long_tables_say_they_were_cut():
    from gatescope.analysis.table import Table

    table = Table([{"unit": f"u{i}", "score": i / 7} for i in range(120)])
    parsed = Cells(table._repr_html_())
    assert len([r for r in parsed.rows if r]) == 50
    assert parsed.captions == ["Table: 120 rows (cut: the first 50 of 120 rows shown; to_pandas() has them all)"]


def test_agreement_result_is_a_dict_and_an_html_table():
    from gatescope import sample_models
    from gatescope.analysis import evaluate_agreement
    from gatescope.inputs.stimuli.agreement import AgreementItem

    model = gatescope.load(sample_models.path("agreement_gru.safetensors")).eval()
    items = [AgreementItem("the boy near the cars", "greets", "greet", "nounpp_SP"),
             AgreementItem("the boys", "greet", "greets", "simple_P")]
    result = evaluate_agreement(model, items)
    assert isinstance(result, dict) and set(result) == {"accuracy", "n", "mean_logit_diff", "ci95",
                                                        "by_condition", "by_distance", "by_distance_incongruent",
                                                        "without_distance"}
    rows = [r for r in Cells(result._repr_html_()).rows if r]
    assert [r[0][0] for r in rows] == ["all", "nounpp_SP", "simple_P"]
    assert float(rows[0][3][1]) == result["mean_logit_diff"]
    assert float(rows[1][1][1]) == result["by_condition"]["nounpp_SP"]["accuracy"]
    assert rows[2][2][0] == "1"
    low, high = result["by_condition"]["simple_P"]["ci95"]
    assert rows[2][4][0] == f"{low:.3f}..{high:.3f}"  # the accuracy's Wilson interval


def test_trace_repr_html_summarises_the_trace():
    trace = small_trace()
    html = trace._repr_html_()
    assert "2 sequences, 7 tokens, 6 quantities, vocabulary of 12 (word)" in html
    parsed = Cells(html)
    layer = [r for r in parsed.rows if r and r[0][0] == "rnn.l0.fwd"]
    assert [c[0] for c in layer[0]] == ["rnn.l0.fwd", "LSTM", "5", "ifgoch", "float32"]
    assert [c[0] for r in parsed.rows if r and r[0][0] == "subject_number" for c in r] == ["subject_number", "6"]
    svg = html[html.index("<svg"):html.index("</svg>") + 6]
    cells = [r for r in parse(svg).iter(SVG + "rect") if r.get("class") == "cell"]
    assert len(cells) == 5 * 4  # every unit of h over sequence 0
    assert float32(cells[0].find(SVG + "title").text.rsplit(" = ", 1)[1]) == float(trace["rnn.l0.fwd.h"][0, 0])


def test_a_short_sentence_spreads_over_the_plots_and_a_long_one_sets_the_width():
    """6 tokens: each token sits over its share of the plot, so the line covers the plot, not a quarter of it."""
    g = torch.Generator().manual_seed(0)
    words = "the boy near the cars greets".split()
    vocab = sorted(set(words))
    trace = Trace({"rnn.l0.fwd.h": torch.tanh(torch.randn(6, 4, generator=g)),
                   "rnn.l0.fwd.f": torch.sigmoid(torch.randn(6, 4, generator=g))}, [0, 6],
                  token_ids=torch.tensor([vocab.index(w) for w in words]), meta={"vocab": vocab, "tokenizer": "word"})
    root = parse(show(trace, unit="rnn.l0.fwd.h:1").svg)
    plot = next(r for r in root.iter(SVG + "rect") if r.get("fill") == "#f6f6f6")
    x0, plot_width = float(plot.get("x")), float(plot.get("width"))
    xs = [float(p.split(",")[0]) for p in next(root.iter(SVG + "polyline")).get("points").split()]
    assert len(xs) == 6 and xs[-1] - xs[0] > 0.8 * plot_width  # the line spans the plot
    token_xs = [float(g.find(SVG + "rect").get("x")) for g in root.iter(SVG + "g") if g.get("class") == "token"]
    assert token_xs[-1] > x0 + 0.75 * plot_width  # the last token is over the right end
    long_trace = Trace({"rnn.l0.fwd.h": torch.zeros(60, 4)}, [0, 60], token_ids=torch.zeros(60, dtype=torch.long),
                       meta={"vocab": ["greets"], "tokenizer": "word"})
    assert float(parse(show(long_trace, unit="rnn.l0.fwd.h:1").svg).get("width")) > float(root.get("width"))


def test_a_decomposition_is_shown_as_tokens_coloured_by_their_contribution():
    import torch

    from gatescope.analysis.decomposition import decompose

    model = gatescope.load("sample_models/agreement_lstm.safetensors")
    result = decompose(model, torch.tensor(model.encode("the boys near the car")), "gcd")
    greet, greets = model.vocab.index["greet"], model.vocab.index["greets"]
    figure = gatescope.show(result, correct=greet, wrong=greets)
    html = figure._repr_html_()
    parts = result.logit_difference(-1, greet, greets)
    assert ">boys</text>" in html and f"boys: {float(parts[2]):+.4f}" in html and "interaction" in html
    assert "#67001f" in html or "#053061" in html  # the largest |contribution| takes an end of the scale
    unit = gatescope.show(result, "rnn.l0.fwd.h:69", at=3)
    assert "rnn.l0.fwd.h:69 at step 3" in unit._repr_html_()
    with pytest.raises(gatescope.GatescopeError, match="give correct= and wrong="):
        gatescope.show(result)
