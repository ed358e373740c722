"""What the browser reads and computes, against independent references: rows, colours, search, scores, pages.

No Textual app runs here; these are the numbers behind the views.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from tests.tui.test_app import VOCAB, word_trace

from gatescope.analysis.dynamics import saturation as analysis_saturation
from gatescope.errors import GatescopeError
from gatescope.traces.file import read_trace_file
from gatescope.traces.trace import Trace, load_trace
from gatescope.tui import ranking
from gatescope.tui.arrays import trace_file
from gatescope.tui.colors import DIVERGING, NAN_COLOR, SEQUENTIAL, PairStyles, Scale
from gatescope.tui.heatmap import HALF
from gatescope.tui.pages import file_backed, release
from gatescope.tui.source import BLOCK, TraceSource


def big_trace(n: int = 3 * BLOCK + 17, hidden: int = 5, dtype=torch.float16) -> Trace:
    """A trace whose rows cross several cache blocks, sequences of varied length, a NaN."""
    g = torch.Generator().manual_seed(1)
    lengths = [1, 40, 300, 2, 250, n - 593]
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    values = torch.randn(n, hidden, generator=g).to(dtype)
    values[5, 3] = math.nan
    ids = torch.randint(2, len(VOCAB), (n,), generator=g)
    return Trace({"rnn.l0.fwd.h": values, "rnn.l0.fwd.f": torch.sigmoid(values.float()).to(dtype)}, offsets,
                 token_ids=ids, meta={"vocab": VOCAB, "tokenizer": "word"})


def test_windows_and_values_are_the_recorded_rows():
    trace = big_trace()
    source = TraceSource(trace_file(trace))
    for start, stop in [(0, 1), (250, 270), (BLOCK - 3, 2 * BLOCK + 4), (trace.num_tokens - 9, trace.num_tokens + 50)]:
        expected = trace["rnn.l0.fwd.h"][start:stop].float().numpy()
        got = source.window("rnn.l0.fwd.h", start, stop)
        np.testing.assert_array_equal(got, expected)  # float16 -> float32 is exact; NaN == NaN here
        np.testing.assert_array_equal(source.column("rnn.l0.fwd.h", start, stop, 3), expected[:, 3])
    assert source.window("rnn.l0.fwd.h", 10, 10).shape == (0, 5)
    assert math.isnan(source.value("rnn.l0.fwd.h", 5, 3))
    assert source.value("rnn.l0.fwd.f", 700, 2) == float(trace["rnn.l0.fwd.f"][700, 2])


def test_blocks_read_in_workers_fill_the_same_cache():
    trace = big_trace()
    source = TraceSource(trace_file(trace))
    keys = source.missing(["rnn.l0.fwd.h", "rnn.l0.fwd.f"], 200, 600)
    assert keys == [(n, b) for n in ("rnn.l0.fwd.h", "rnn.l0.fwd.f") for b in (0, 1, 2)]
    assert source.read_blocks(keys, lambda: True) is None  # cancelled before the first read
    blocks = source.read_blocks(keys, lambda: False)
    source.store(keys, blocks)
    assert source.missing(["rnn.l0.fwd.h", "rnn.l0.fwd.f"], 200, 600) == []
    expected = trace["rnn.l0.fwd.f"][200:600].float().numpy()
    np.testing.assert_array_equal(source.window("rnn.l0.fwd.f", 200, 600), expected)


def test_sequences_tokens_and_layers():
    trace = word_trace(layers=2, directions=("fwd", "bwd"))
    source = TraceSource(trace_file(trace))
    assert [l.label for l in source.layers] == ["rnn.l0.fwd", "rnn.l0.bwd", "rnn.l1.fwd", "rnn.l1.bwd"]
    assert source.layers[0].kinds == tuple("ifgoch") and source.layers[0].hidden == 9
    for row in range(trace.num_tokens):
        assert source.sequence_of(row) == trace.sequence_of(row)
    assert source.sequence_rows(2) == (trace.sequence(2).start, trace.sequence(2).stop)
    assert source.join(source.tokens(*source.sequence_rows(0))) == "the boy near the car greets <eos>"


def test_search_matches_a_brute_force_scan():
    trace = big_trace()
    source = TraceSource(trace_file(trace))
    tokens = trace.tokens()
    for query in ["boy", "the car", "near the boys", "greet greet"]:
        words = query.split()
        hits = [i for i in range(len(tokens) - len(words) + 1) if tokens[i:i + len(words)] == words]
        for after in [-1, 0, 100, 500, len(tokens)]:
            later = [h for h in hits if h > after]
            expected = later[0] if later else (hits[0] if hits else None)
            assert source.search(query, after) == expected, (query, after)
    with pytest.raises(GatescopeError, match="not in the vocabulary: zebra"):
        source.search("the zebra", 0)


def test_search_without_a_vocabulary_takes_token_ids():
    trace = Trace({"gru.l0.fwd.h": torch.zeros(6, 2)}, [0, 3, 6], token_ids=torch.tensor([5, 7, 5, 7, 5, 9]))
    source = TraceSource(trace_file(trace))
    assert source.search("5 7", -1) == 0 and source.search("5 7", 0) == 2 and source.search("5 9", 0) == 4
    with pytest.raises(GatescopeError, match="token ids"):
        source.search("boy", 0)


def test_char_trace_search_and_text():
    text = "def f(x):\n    return x\n"
    vocab = sorted(set(text))
    trace = Trace({"rnn.l0.fwd.c": torch.zeros(len(text), 3)}, [0, len(text)],
                  token_ids=torch.tensor([vocab.index(c) for c in text]), meta={"vocab": vocab, "tokenizer": "char"})
    source = TraceSource(trace_file(trace))
    assert source.search("return", -1) == text.index("return")
    assert source.join(source.tokens(0, 10)) == "def f(x):↵"


@pytest.mark.parametrize("kind, value, color", [
    ("f", 0.0, SEQUENTIAL[0]), ("f", 0.0624, SEQUENTIAL[0]), ("f", 0.0626, SEQUENTIAL[1]),
    ("f", 0.5, SEQUENTIAL[8]), ("f", 1.0, SEQUENTIAL[15]), ("i", 7.0, SEQUENTIAL[15]), ("o", -3.0, SEQUENTIAL[0]),
    ("h", -1.0, DIVERGING[0]), ("h", 0.0, DIVERGING[8]), ("h", 1.0, DIVERGING[16]), ("g", 0.06, DIVERGING[8]),
    ("g", 0.07, DIVERGING[9]), ("n", -5.0, DIVERGING[0]),
    ("c", 0.0, DIVERGING[8]), ("c", 3.0, DIVERGING[16]), ("c", math.atanh(-0.5), DIVERGING[4]),
    ("f", math.nan, NAN_COLOR), ("h", math.nan, NAN_COLOR),
])
def test_colour_scales(kind, value, color):
    """Gates: 16 equal bins of 0..1 (viridis); g m n h: 17 levels over -1..1, 0 in the middle (RdBu); c: tanh(c)."""
    scale = Scale(kind)
    level = int(scale.levels(np.array([value], dtype=np.float32))[0])
    assert scale.colors[level] == color


def test_heatmap_cells_pair_two_units(monkeypatch):
    """One heatmap line: '▀' cells whose foreground is the upper unit and background the lower unit."""
    values = torch.tensor([[0.0, 1.0, 0.5], [1.0, math.nan, 0.0]])  # rows x units (3 units: odd)
    trace = Trace({"rnn.l0.fwd.f": values}, [0, 2], token_ids=torch.tensor([2, 3]), meta={"vocab": VOCAB})
    from gatescope.tui.heatmap import Heatmap

    heatmap = Heatmap(TraceSource(trace_file(trace)))
    heatmap.unit, heatmap.row = 2, 1  # cursor away from line 0
    strip = heatmap._line(0, 0, 2)  # units 0 (upper) and 1 (lower), rows 0..1
    cells = [(seg.style.color.triplet.hex, seg.style.bgcolor.triplet.hex)
             for seg in strip for _ in range(seg.cell_length)]
    assert {seg.text.strip(HALF) for seg in strip} == {""}
    width = heatmap.cell_width
    assert cells == [(SEQUENTIAL[0], SEQUENTIAL[15])] * width + [(SEQUENTIAL[15], NAN_COLOR)] * width
    last = heatmap._line(1, 0, 2)  # unit 2 alone; the cursor (row 1) is magenta in the upper half
    cells = [(seg.style.color.triplet.hex, seg.style.bgcolor.triplet.hex)
             for seg in last for _ in range(seg.cell_length)]
    assert cells == [(SEQUENTIAL[8], "#000000")] * width + [("#ff00ff", "#000000")] * width


def test_pair_styles_cover_every_level():
    for kind in "fh":
        styles = PairStyles(Scale(kind))
        assert len(styles.table) == styles.size == len(Scale(kind).colors) + 2


def test_correlation_matches_numpy(tmp_path):
    trace = word_trace(hidden=7)
    feature = trace.features["number"].numpy()
    x = trace["rnn.l1.fwd.h"].numpy().astype(np.float64)
    keep = np.isfinite(feature)
    expected = [np.corrcoef(x[keep, u], feature[keep])[0, 1] for u in range(7)]
    np.testing.assert_allclose(ranking.correlation(trace_file(trace), "rnn.l1.fwd.h", feature), expected, rtol=1e-10)
    constant = np.where(keep, 1.0, np.nan)
    assert np.isnan(ranking.correlation(trace_file(trace), "rnn.l1.fwd.h", constant)).all()  # r undefined, not 0


def test_correlation_streams_in_chunks_and_skips_nan_values(monkeypatch):
    monkeypatch.setattr(ranking, "CHUNK", 100)
    trace = big_trace(dtype=torch.float32)
    feature = np.sin(np.arange(trace.num_tokens) / 7.0)
    feature[::11] = np.nan
    x = trace["rnn.l0.fwd.h"].numpy().astype(np.float64)
    r = ranking.correlation(trace_file(trace), "rnn.l0.fwd.h", feature)
    for u in range(5):
        keep = np.isfinite(feature) & np.isfinite(x[:, u])
        np.testing.assert_allclose(r[u], np.corrcoef(x[keep, u], feature[keep])[0, 1], rtol=1e-9)
    calls = []
    ranking.correlation(trace_file(trace), "rnn.l0.fwd.h", feature, lambda done: calls.append(done) or len(calls) < 3)
    assert calls == [0.0, 100 / trace.num_tokens, 200 / trace.num_tokens]  # stopped when asked


@pytest.mark.parametrize("kind", ["i", "f", "z", "h", "g"])
def test_saturation_agrees_with_the_analysis_layer(kind):
    g = torch.Generator().manual_seed(2)
    x = torch.randn(500, 6, generator=g) * 3
    values = torch.sigmoid(x) if kind in "ifz" else torch.tanh(x)
    trace = Trace({f"rnn.l0.fwd.{kind}": values}, [0, 200, 500])
    table = analysis_saturation(trace, kinds=[kind])
    expected = np.array([row["left"] + row["right"] for row in table.rows])
    np.testing.assert_allclose(ranking.saturation(trace_file(trace), f"rnn.l0.fwd.{kind}"), expected)


def test_saturation_of_the_cell_state_uses_tanh():
    c = torch.tensor([[0.0, 3.0], [-3.0, 0.5], [2.0, math.nan]])
    trace = Trace({"rnn.l0.fwd.c": c}, [0, 3])
    # (tanh(c) + 1) / 2 outside 0.1..0.9 <=> |c| > atanh(0.8) = 1.0986
    np.testing.assert_allclose(ranking.saturation(trace_file(trace), "rnn.l0.fwd.c"), [2 / 3, 1 / 2])


def test_released_pages_read_back_the_same(tmp_path):
    trace = big_trace(n=4000, hidden=300)
    path = tmp_path / "t.safetensors"
    trace.save(path)
    data = read_trace_file(path)
    array = data.arrays["rnn.l0.fwd.h"]  # a numpy memory map of the file
    assert file_backed(array) and file_backed(trace_file(load_trace(path)).arrays["rnn.l0.fwd.h"])
    assert not file_backed(trace_file(trace).arrays["rnn.l0.fwd.h"])  # in memory: never released
    before = array[1000:3000].astype(np.float32)
    release(array[1000:3000])
    np.testing.assert_array_equal(array[1000:3000].astype(np.float32), before)  # NaN == NaN here
    source = TraceSource(data)
    expected = trace["rnn.l0.fwd.h"].float().numpy()
    np.testing.assert_array_equal(source.window("rnn.l0.fwd.h", 0, 4000), expected)
    np.testing.assert_array_equal(source.window("rnn.l0.fwd.h", 0, 4000), expected)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_a_file_and_the_trace_in_memory_show_the_same_values(tmp_path, dtype):
    """Read without torch or wrapped from a Trace, rows are the recorded values widened exactly to float32."""
    trace = big_trace(dtype=dtype)
    trace.save(tmp_path / "t.safetensors")
    expected = trace["rnn.l0.fwd.f"].float().numpy()
    path = tmp_path / "t.safetensors"
    for data in (read_trace_file(path), trace_file(trace), trace_file(path)):
        source = TraceSource(data)
        np.testing.assert_array_equal(source.window("rnn.l0.fwd.f", 0, trace.num_tokens), expected)
        assert source.tokens(0, trace.num_tokens) == trace.tokens()
        assert [l.label for l in source.layers] == ["rnn.l0.fwd"] and source.layers[0].kinds == ("f", "h")
    assert trace_file(data) is data


def test_token_positions_stand_in_for_missing_token_ids():
    trace = Trace({"gru.l0.fwd.h": torch.zeros(7, 2)}, [0, 3, 3, 7])  # an empty sequence in the middle
    source = TraceSource(trace_file(trace))
    assert source.tokens(-5, 50) == trace.tokens() == ["0", "1", "2", "0", "1", "2", "3"]
    assert source.tokens(2, 5) == ["2", "0", "1"] and source.tokens(4, 4) == []


def test_unusable_traces_are_refused():
    with pytest.raises(GatescopeError, match="no tokens"):
        TraceSource(trace_file(Trace({"rnn.l0.fwd.h": torch.zeros(0, 3)}, [0])))
    with pytest.raises(GatescopeError, match="no quantities"):
        TraceSource(trace_file(Trace({}, [0, 2])))
    with pytest.raises(GatescopeError, match="rnn.l0.fwd.h has dtype torch.int8, which the browser cannot show"):
        trace_file(Trace({"rnn.l0.fwd.h": torch.zeros(2, 3, dtype=torch.int8)}, [0, 2]))


@pytest.mark.parametrize("kind", ["f", "h", "c"])
def test_png_figure_draws_the_values_on_the_browser_scale(kind):
    from gatescope.tui.export import HeatmapFigure, heatmap_figure

    values = np.array([[0.1, -0.5, 2.0], [0.9, 0.0, -3.0]], dtype=np.float32)  # (T=2, U=3)
    shown = HeatmapFigure(f"rnn.l0.fwd.{kind}", kind, [10, 11, 12], 40, ["the", "boy"], [1], 11, 41)
    fig = heatmap_figure(values, shown)
    ax = fig.axes[0]
    image = ax.images[0]
    expected = np.tanh(values.T) if kind == "c" else values.T  # (U, T): units down, tokens across
    np.testing.assert_allclose(np.asarray(image.get_array()), expected, rtol=1e-6)
    assert image.get_clim() == ((0.0, 1.0) if kind == "f" else (-1.0, 1.0))
    assert image.get_cmap().name == ("viridis" if kind == "f" else "RdBu_r")
    assert [t.get_text() for t in ax.get_xticklabels()] == ["the", "boy"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["10", "11", "12"]  # units 10..12, top to bottom
    assert image.get_extent() == [-0.5, 1.5, 2.5, -0.5]
    # file name and title count the same inclusive ranges; the cursor's unit is boxed, a sequence start is a line
    assert shown.file_name == f"gatescope-rnn.l0.fwd.{kind}-u10-12-r40-41.png"
    assert ax.get_title() == f"rnn.l0.fwd.{kind}, units 10-12, rows 40-41 (cursor: unit 11, row 41)"
    (box,) = ax.patches
    assert (box.get_y(), box.get_height()) == (0.5, 1)  # around the row of unit 11
    assert 0.5 in [line.get_xdata()[0] for line in ax.lines]  # the boundary before column 1
    with pytest.raises(GatescopeError, match="empty"):
        heatmap_figure(np.empty((0, 3)), shown)


def test_png_title_stays_inside_a_figure_narrower_than_it():
    """Six tokens make a figure four inches wide, narrower than its title: the title wraps instead of
    running off the image's left edge."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from gatescope.tui.export import HeatmapFigure, heatmap_figure

    tokens = ["the", "boys", "near", "the", "car", "greet"]
    shown = HeatmapFigure("rnn.l0.fwd.c", "c", list(range(56)), 0, tokens, [0], 12, 4)
    fig = heatmap_figure(np.zeros((6, 56), dtype=np.float32), shown)
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    title = fig.axes[0].title.get_window_extent(canvas.get_renderer())
    assert 0 <= title.x0 < title.x1 <= fig.bbox.x1 and title.y1 <= fig.bbox.y1, (title, fig.bbox)


@pytest.mark.parametrize("label, message", [
    ("rows", r"rnn.l0.fwd.h has shape \(30, 9\); expected \[31, hidden\]"),
    ("name", "rnn.layer0.h"),
    ("ids", "token_ids has 3 entries for 31 tokens"),
    ("offsets", "offsets must start at 0 and never decrease"),
    ("2-D offsets", "offsets must start at 0 and never decrease"),
])
def test_malformed_trace_files_are_refused_in_one_line(tmp_path, label, message):
    """A TraceFile edited by hand after reading is checked again before the browser shows it."""
    word_trace(layers=1).save(tmp_path / "t.safetensors")
    data = read_trace_file(tmp_path / "t.safetensors")
    if label == "rows":
        data.arrays["rnn.l0.fwd.h"] = data.arrays["rnn.l0.fwd.h"][:-1]
    elif label == "name":
        data.arrays["rnn.layer0.h"] = data.arrays.pop("rnn.l0.fwd.h")
    elif label == "ids":
        data.token_ids = data.token_ids[:3]
    elif label == "offsets":
        data.offsets = np.array([0, 20, 10, 31])
    else:
        data.offsets = np.array([[0, 31]])
    with pytest.raises(GatescopeError, match=message):
        TraceSource(data)


def test_a_layer_whose_kinds_differ_in_width_is_one_layer_per_width():
    """An mLSTM records its gates per head (2) and its states per unit (8): the browser shows each width."""
    g = torch.Generator().manual_seed(3)
    trace = Trace({"m.l0.fwd.i": torch.rand(6, 2, generator=g), "m.l0.fwd.f": torch.rand(6, 2, generator=g),
                   "m.l0.fwd.o": torch.rand(6, 8, generator=g), "m.l0.fwd.h": torch.randn(6, 8, generator=g)},
                  np.array([0, 6]))
    source = TraceSource(trace_file(trace))
    assert [(layer.label, layer.kinds, layer.hidden) for layer in source.layers] == [
        ("m.l0.fwd", ("i", "f"), 2), ("m.l0.fwd", ("o", "h"), 8)]
