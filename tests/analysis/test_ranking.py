"""Unit ranking: metrics against brute-force references, planted units, significance, bad input."""
import json

import numpy as np
import pytest
import torch

from gatescope.analysis import selection
from gatescope.analysis.labels import make_labels, read_labels_file, resolve_labels
from gatescope.analysis.ranking import rank_units
from gatescope.analysis.stats import benjamini_hochberg, midranks
from gatescope.analysis.table import Table
from gatescope.errors import GatescopeError
from gatescope.traces.trace import Trace, load_trace

N, H, LEN = 600, 8, 12


def planted(seed=0, n=N):
    """Binary label; h:3 tracks it, c:5 tracks it weakly, the rest is noise."""
    g = torch.Generator().manual_seed(seed)
    y = (torch.rand(n, generator=g) > 0.4).float()
    h = torch.randn(n, H, generator=g)
    c = torch.randn(n, H, generator=g)
    h[:, 3] = 2 * y + 0.5 * torch.randn(n, generator=g)
    c[:, 5] = 0.3 * y + torch.randn(n, generator=g)
    trace = Trace({"rnn.l0.fwd.h": h, "rnn.l0.fwd.c": c}, torch.arange(0, n + 1, LEN),
                  features={"label": y.numpy()})
    return trace, y, h, c


def ref_midranks(x):
    return np.array([(x < v).sum() + ((x == v).sum() + 1) / 2 for v in x])


def ref_auc(x, y):
    pos, neg = x[y == 1], x[y == 0]
    wins = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return wins / (len(pos) * len(neg))


def ref_mi(x, y, bins):
    xb = np.clip(np.floor((ref_midranks(x) - 0.5) * bins / len(x)), 0, bins - 1).astype(int)
    joint = np.zeros((bins, int(y.max()) + 1))
    np.add.at(joint, (xb, y.astype(int)), 1)
    joint /= joint.sum()
    px, py = joint.sum(1, keepdims=True), joint.sum(0, keepdims=True)
    nz = joint > 0
    return float((joint[nz] * np.log2(joint[nz] / (px @ py)[nz])).sum())


def test_planted_unit_ranks_first_and_is_significant():
    trace, *_ = planted()
    table = rank_units(trace, feature="label", permutations=200)
    assert table[0]["unit"] == "rnn.l0.fwd.h:3"
    assert table[0]["metric"] == "auc" and table[0]["score"] > 0.95
    assert table[0]["p_fwer"] < 0.01 and table[0]["p_adjusted"] < 0.05
    noise = next(r for r in table if r["unit"] == "rnn.l0.fwd.c:2")
    assert noise["p_fwer"] > 0.05 and noise["p_adjusted"] > 0.05
    assert len(table) == 2 * H


def test_metrics_match_brute_force_references():
    trace, y, _, _ = planted()
    table = rank_units(trace, feature="label", permutations=50, bins=8)
    yn = y.numpy()
    for row in table:
        x = trace[row["name"]][:, row["index"]].double().numpy()
        assert row["corr"] == pytest.approx(np.corrcoef(x, yn)[0, 1], abs=1e-10)
        assert row["auc"] == pytest.approx(ref_auc(x, yn), abs=1e-12)
        assert row["mi"] == pytest.approx(ref_mi(x, yn, 8), abs=1e-10)


def test_permutation_p_values_match_a_reference_loop():
    trace, y, *_ = planted(n=120)
    p = 40
    table = rank_units(trace, feature="label", metric="corr", permutations=p, seed=3)
    gen = torch.Generator().manual_seed(3)
    perms = [torch.randperm(120, generator=gen).numpy() for _ in range(p)]  # the documented shuffles
    yn = y.numpy()
    stats = {}
    for row in table:
        x = trace[row["name"]][:, row["index"]].double().numpy()
        obs = abs(np.corrcoef(x, yn)[0, 1])
        null = np.array([abs(np.corrcoef(x, yn[q])[0, 1]) for q in perms])
        stats[row["unit"]] = null
        assert row["p_value"] == pytest.approx((1 + (null >= obs - 1e-12).sum()) / (1 + p))
    max_null = np.max(np.stack(list(stats.values())), 0)
    for row in table:
        assert row["p_fwer"] == pytest.approx((1 + (max_null >= row["score"] - 1e-12).sum()) / (1 + p))


def test_benjamini_hochberg_against_reference():
    p = torch.tensor([0.01, 0.04, 0.03, 0.2, 0.5, 0.001], dtype=torch.float64)
    m = len(p)
    order = np.argsort(p.numpy())
    ref = np.empty(m)
    running = 1.0
    for rank in range(m, 0, -1):
        i = order[rank - 1]
        running = min(running, p[i].item() * m / rank)
        ref[i] = running
    assert benjamini_hochberg(p).numpy() == pytest.approx(ref)


def test_midranks_share_ties():
    x = torch.tensor([[3.0], [1.0], [3.0], [2.0], [1.0]], dtype=torch.float64)
    assert midranks(x)[:, 0].tolist() == ref_midranks(x[:, 0].numpy()).tolist() == [4.5, 1.5, 4.5, 3.0, 1.5]


def test_single_unit_probe_is_the_held_out_threshold_rule():
    # separable on training rows with a margin: the only best rule is x > (largest negative)
    trace, y, h, _ = planted()
    h[:, 3] = torch.where(y == 1, 5 + torch.rand(N), -torch.rand(N))
    held = selection.heldout_rows(trace)
    table = rank_units(trace, feature="label", metric="probe", permutations=0)
    row = next(r for r in table if r["unit"] == "rnn.l0.fwd.h:3")
    x = h[:, 3]
    t = x[~held & (y == 0)].max()
    assert row["probe"] == pytest.approx(float(((x[held] > t).float() == y[held]).float().mean()))
    assert table[0]["unit"] == "rnn.l0.fwd.h:3"


def test_categorical_and_continuous_labels():
    g = torch.Generator().manual_seed(1)
    y = torch.randint(0, 3, (N,), generator=g).float()
    h = torch.randn(N, H, generator=g)
    h[:, 6] = torch.tensor([-2.0, 0.0, 2.0])[y.long()] + 0.3 * torch.randn(N, generator=g)
    trace = Trace({"rnn.l0.fwd.h": h}, [0, N])
    table = rank_units(trace, y.numpy(), permutations=50)
    assert table[0]["unit"] == "rnn.l0.fwd.h:6" and table[0]["metric"] == "mi"
    x, yn = h[:, 6].double().numpy(), y.numpy()
    means = np.array([x[yn == k].mean() for k in range(3)])
    counts = np.array([(yn == k).sum() for k in range(3)])
    eta2 = (counts * (means - x.mean()) ** 2).sum() / ((x - x.mean()) ** 2).sum()
    assert table[0]["eta2"] == pytest.approx(eta2, abs=1e-10)
    assert table[0]["probe"] > 0.9  # majority class per bin, held out
    cont = (h[:, 1] * 2 + 0.1 * torch.randn(N, generator=g)).numpy()
    ctable = rank_units(trace, cont, permutations=20)
    assert ctable[0]["unit"] == "rnn.l0.fwd.h:1" and ctable[0]["metric"] == "corr"
    assert ctable[0]["probe"] > 0.95  # held-out R² of the 1-D fit


def test_nan_rows_are_dropped():
    trace, y, _, c = planted()
    labels = y.clone()
    labels[::3] = float("nan")
    table = rank_units(trace, labels.numpy(), permutations=10)
    keep = ~torch.isnan(labels)
    assert table[0]["n"] == int(keep.sum())
    row = next(r for r in table if r["unit"] == "rnn.l0.fwd.c:5")
    assert row["corr"] == pytest.approx(np.corrcoef(c[keep, 5].double().numpy(), y[keep].numpy())[0, 1], abs=1e-10)


def test_kinds_filter_and_streaming_memory_mapped_trace(tmp_path, monkeypatch):
    trace, *_ = planted()
    full = rank_units(trace, feature="label", permutations=30)
    trace.save(tmp_path / "t.safetensors")
    loaded = load_trace(tmp_path / "t.safetensors")
    monkeypatch.setattr(selection, "CHUNK_ROWS", 37)  # many row chunks
    monkeypatch.setattr(selection, "BUDGET", 5 * N)  # column blocks of 5 units, permutation blocks of 8
    streamed = rank_units(loaded, feature="label", permutations=30)
    assert [r["unit"] for r in streamed] == [r["unit"] for r in full]
    for a, b in zip(streamed, full):
        assert a["auc"] == pytest.approx(b["auc"]) and a["p_value"] == pytest.approx(b["p_value"])
        assert a["p_fwer"] == pytest.approx(b["p_fwer"])
    only_c = rank_units(trace, feature="label", kinds="c", permutations=0)
    assert {r["kind"] for r in only_c} == {"c"} and len(only_c) == H


def test_table_outputs(tmp_path):
    trace, *_ = planted()
    table = rank_units(trace, feature="label", permutations=10)
    records = json.loads(table.to_json(tmp_path / "r.json"))
    assert records == json.loads((tmp_path / "r.json").read_text())
    assert {"unit", "score", "metric", "p_value"} <= set(records[0])
    assert records[0]["unit"] == "rnn.l0.fwd.h:3"
    csv_text = table.to_csv(tmp_path / "r.csv")
    assert csv_text.splitlines()[0].startswith("unit,score,metric")
    assert len(csv_text.splitlines()) == len(table) + 1
    assert table["unit"][0] == "rnn.l0.fwd.h:3" and table.to_records()[0]["unit"] == "rnn.l0.fwd.h:3"
    nested = Table([{"a": float("nan"), "b": {1: float("inf")}, "c": [1.0, float("-inf")]}])
    assert nested.to_json() == '[{"a": null, "b": {"1": null}, "c": [1.0, null]}]'  # strict JSON at any depth


def test_labels_files(tmp_path):
    np.save(tmp_path / "l.npy", np.array([0, 1, 1, np.nan]))
    assert np.allclose(read_labels_file(tmp_path / "l.npy"), [0, 1, 1, np.nan], equal_nan=True)
    (tmp_path / "l.txt").write_text("1.5\n\nnan\n2\n")
    assert np.allclose(read_labels_file(tmp_path / "l.txt"), [1.5, np.nan, np.nan, 2], equal_nan=True)
    (tmp_path / "w.txt").write_text("sg\npl\n\nsg\n")
    assert np.allclose(read_labels_file(tmp_path / "w.txt"), [1, 0, np.nan, 1], equal_nan=True)
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(GatescopeError, match="not a readable .npy"):
        read_labels_file(tmp_path / "obj.npy")
    (tmp_path / "bad.npy").write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(GatescopeError, match="not a readable .npy"):
        read_labels_file(tmp_path / "bad.npy")
    (tmp_path / "latin1.txt").write_bytes(b"\xff\xfe\n")
    with pytest.raises(GatescopeError, match="not UTF-8 text"):
        read_labels_file(tmp_path / "latin1.txt")
    for missing in ("none.npy", "none.txt"):
        with pytest.raises(GatescopeError, match=f"no such file: .*{missing}"):
            read_labels_file(tmp_path / missing)
    with pytest.raises(GatescopeError, match="is a folder"):
        read_labels_file(tmp_path)


def test_bad_input_is_a_clear_error():
    trace, y, *_ = planted()
    with pytest.raises(GatescopeError, match=f"has {N - 1} values but the trace has {N} tokens"):
        rank_units(trace, y[:-1].numpy())
    with pytest.raises(GatescopeError, match="no feature 'nope'"):
        rank_units(trace, feature="nope")
    with pytest.raises(GatescopeError, match="no quantity of kind f"):
        rank_units(trace, feature="label", kinds="f")
    with pytest.raises(GatescopeError, match="unknown kind"):
        rank_units(trace, feature="label", kinds="h,q")  # q is never a kind (a browser key)
    with pytest.raises(GatescopeError, match="exactly one"):
        rank_units(trace)
    with pytest.raises(GatescopeError, match="same value"):
        rank_units(trace, np.ones(N))
    with pytest.raises(GatescopeError, match=r"1-D array; got shape \(2, 300\)"):
        rank_units(trace, y.numpy().reshape(2, N // 2))  # as many values as tokens, but not one a token
    with pytest.raises(GatescopeError, match="labels must be numbers"):
        rank_units(trace, ["sg"] * N)
    with pytest.raises(GatescopeError, match="all NaN"):
        resolve_labels(trace, np.full(N, np.nan))
    with pytest.raises(GatescopeError, match="bins must be at least 2"):
        rank_units(trace, feature="label", bins=0)
    with pytest.raises(GatescopeError, match="auc needs binary"):
        rank_units(trace, np.arange(N) % 3, metric="auc")
    with pytest.raises(GatescopeError, match="binary labels need exactly two"):
        make_labels(torch.tensor([0.0, 1.0, 2.0]), kind="binary")


def test_make_labels_takes_numpy_arrays_and_lists_as_rank_units_does():
    as_tensor = make_labels(torch.tensor([0.0, 1.0, 1.0, float("nan")]))
    for values in (np.array([0, 1, 1, np.nan]), [0.0, 1.0, 1.0, float("nan")]):
        labels = make_labels(values)
        assert labels.kind == "binary" and labels.codes.tolist() == as_tensor.codes.tolist() == [0, 1, 1, -1]
    with pytest.raises(GatescopeError, match=r"one number per token, shape \[N\]; got shape \(2, 2\)"):
        make_labels(np.zeros((2, 2)))


def test_printing_a_table_shows_its_rows_and_its_repr_stays_short():
    table = Table([{"unit": f"rnn.l0.fwd.h:{u}", "score": s, "p": p}
                   for u, s, p in [(3, 0.912345, 0.001), (12, -0.5, float("nan")), (7, 0.1, 0.2), (1, 0.0, 1.0)]])
    lines = str(table.head(3)).splitlines()
    assert lines[0].split() == ["unit", "score", "p"] and len(lines) == 4
    assert lines[1].split() == ["rnn.l0.fwd.h:3", "0.9123", "0.001"] and lines[2].split()[-1] == "nan"
    assert len({len(line) for line in lines[1:]}) == 1  # aligned: numbers right-justified
    assert repr(table.head(3)) == "Table(3 rows: unit, score, p)"
    long = Table([{"unit": i} for i in range(60)])
    assert str(long).splitlines()[-1] == "… 10 more rows (to_pandas() has them all)"
