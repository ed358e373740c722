"""`gatescope findings`: the lexicon halves it tests on, the Markdown it renders, and its command line.

The docs test is the one source of the documentation's figures: every findings block of docs/findings.md and
sample_models/README.md must equal what docs/findings.json renders to.
"""
import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import gatescope
from gatescope.cli import main
from gatescope.errors import GatescopeError
from gatescope.findings import code as code_findings
from gatescope.findings import report as findings_report
from gatescope.findings import study as findings
from gatescope.inputs.stimuli.agreement import (
    INCONGRUENT_NOUNPP,
    NOUN_PL,
    NOUN_SG,
    PREP,
    VERB_PL,
    VERB_SG,
    generate_stimuli,
    is_heldout_pair,
    split_lexicon,
)
from gatescope.traces.trace import Trace

ROOT = Path(__file__).resolve().parents[2]
DOCS_JSON = ROOT / "docs" / "findings.json"


def run(args):
    """The exit status of `gatescope ARGS` (0 when it returns)."""
    try:
        main(args)
    except SystemExit as exc:
        return exc.code or 0
    return 0


@pytest.fixture(scope="module")
def results():
    return json.loads(DOCS_JSON.read_text())


def test_lexicon_halves_are_disjoint_deterministic_and_usable():
    a, b = split_lexicon(0)
    assert (a, b) == split_lexicon(0) and split_lexicon(1) != (a, b)
    assert not set(a.nouns) & set(b.nouns) and set(a.nouns) | set(b.nouns) == set(range(len(NOUN_SG)))
    assert not set(a.verbs) & set(b.verbs) and set(a.verbs) | set(b.verbs) == set(range(len(VERB_SG)))
    assert not set(a.preps) & set(b.preps) and set(a.preps) | set(b.preps) == set(PREP)
    for part in (a, b):
        assert sum(is_heldout_pair(n, v) for n in part.nouns for v in part.verbs) == 16


def test_items_from_one_half_use_only_its_words():
    a, b = split_lexicon(0)
    items = generate_stimuli(50, seed=2, conditions=INCONGRUENT_NOUNPP, lexicon=b)
    assert len(items) == 100
    words = b.words()
    other = set(a.words()["nouns"]) | set(a.words()["verbs"]) | set(a.preps)
    for item in items:
        _, subject, prep, _, attractor, verb = item.tokens
        assert subject in words["nouns"] and attractor in words["nouns"] and prep in b.preps
        assert verb in words["verbs"] and item.wrong in words["verbs"]
        assert not set(item.tokens) & other
    assert {w for it in items for w in it.tokens} & set(NOUN_PL) and {it.tokens[-1] for it in items} & set(VERB_PL)


@pytest.mark.parametrize("doc", ["docs/findings.md", "sample_models/README.md"])
def test_docs_quote_the_findings_json(doc, results):
    text = (ROOT / doc).read_text()
    assert "<!-- findings:" in text
    assert findings_report.stale_blocks(ROOT / doc, results) == []
    assert "issue" not in findings_report.report(results).lower()


def test_every_probe_accuracy_comes_with_its_selectivity(results):
    text = findings_report.report(results)
    probes = [p for res in results["agreement"] for p in res["probes"]] + results["code"]["probes"]
    for p in probes:
        assert f"| {p['score']:.3f} | {p['control']:.3f} | {p['selectivity']:+.3f} |" in text


def test_a_missed_goal_is_explained_with_the_figures(results):
    missed = copy.deepcopy(results)
    rows = missed["agreement"][1]["independent"]["independent_set"]["ablations"]
    rows[3]["drop"] = 0.3
    rows[3]["random_drop_mean"] = 0.08
    text = findings_report.report(missed)
    assert "30.0 points on the independent set (goal 50; random sets 8.0, not under 5). Below the goal" in text
    assert f"k = 8: {100 * rows[-1]['drop']:.1f}" in text


def test_update_rewrites_blocks_and_refuses_a_file_without_any(tmp_path, results, capsys):
    doc = tmp_path / "doc.md"
    doc.write_text("intro\n<!-- findings:string-unit -->\nold\n<!-- /findings:string-unit -->\nend\n")
    assert run(["findings", "--from-json", str(DOCS_JSON), "--update", str(doc)]) == 0
    assert findings_report.stale_blocks(doc, results) == [] and "old" not in doc.read_text()
    assert doc.read_text().startswith("intro\n") and doc.read_text().endswith("end\n")
    plain = tmp_path / "plain.md"
    plain.write_text("nothing here\n")
    code = run(["findings", "--from-json", str(DOCS_JSON), "--update", str(plain)])
    assert code == 1 and "has no findings block" in capsys.readouterr().err
    assert plain.read_text() == "nothing here\n"


def test_update_refuses_a_partial_run(tmp_path, capsys):
    doc = tmp_path / "doc.md"
    doc.write_text("<!-- findings:string-unit -->\nold\n<!-- /findings:string-unit -->\n")
    assert run(["findings", "--out", str(tmp_path / "out"), "--only", "code", "--update", str(doc)]) == 1
    assert "drop --only" in capsys.readouterr().err and not (tmp_path / "out").exists()


def test_help_says_what_it_reproduces(capsys):
    assert run(["findings", "--help"]) == 0
    out = capsys.readouterr().out
    assert "issue" not in out.lower() and "number units" in out.lower() and "--out" in out


def test_refuses_a_non_empty_out_folder_and_a_bad_json(tmp_path, capsys):
    (tmp_path / "keep.txt").write_text("mine")
    code = run(["findings", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 1 and "is not empty" in err and "--force" in err and len(err.splitlines()) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    code = run(["findings", "--from-json", str(bad)])
    assert code == 1 and "not a findings JSON document" in capsys.readouterr().err


def test_from_json_prints_the_report_and_writes_json(tmp_path, results, capsys):
    copy_path = tmp_path / "copy.json"
    assert run(["findings", "--from-json", str(DOCS_JSON), "--json", str(copy_path)]) == 0
    assert capsys.readouterr().out == findings_report.report(results)
    assert json.loads(copy_path.read_text()) == results


def test_the_2x650_section_without_the_model_is_one_line(tmp_path, results):
    from gatescope.findings.study import LARGE_MODEL, large_model_path

    said = []
    if not (ROOT / "sample_models" / f"{LARGE_MODEL}.safetensors").exists():
        assert large_model_path(None, said.append) is None
        assert len(said) == 1 and "is not bundled" in said[0] and "skipped" in said[0] and "\n" not in said[0]
    with pytest.raises(GatescopeError, match=r"^--model .*missing\.safetensors: no such file$"):
        large_model_path(tmp_path / "missing.safetensors", said.append)
    without = {k: v for k, v in results.items() if k != "agreement_large"}
    block = findings_report.BLOCKS["number-units-2x650"](without)
    assert block.count("\n") == 0 and f"`{LARGE_MODEL}` was not analysed in this run" in block
    assert f"`{LARGE_MODEL}` was not analysed" in findings_report.report(without)


def test_accuracy_tables_show_every_model_per_construction_and_distance(results):
    text = findings_report.BLOCKS["agreement-accuracy"](results)
    models = results["agreement"] + ([results["agreement_large"]] if "agreement_large" in results else [])
    models += [m for m in results["agreement_cells"] if m["model"] not in {r["model"] for r in models}]
    header = next(line for line in text.splitlines() if line.startswith("| distance |"))
    assert header.split(" | ")[1:4] == ["agreement_lstm", "agreement_gru", "agreement_rnn"]  # the cells compared
    assert len(models) == header.count(" | ")
    for res in models:
        gru = res["accuracy_by_condition"]
        cells = "/".join(f"{gru[f'nested_{n}']:.3f}" for n in ("SS", "SP", "PS", "PP"))
        assert cells in text
        nine = f"{res['accuracy_by_distance']['9']:.3f} / {res['accuracy_by_distance_incongruent']['9']:.3f}"
        assert "| 9 | " in text and nine in text
    assert "| nounpp3: the boy" in text and "| 9 | SS/SP/PS/PP |" in text


def test_the_cell_comparison_shows_every_cell_on_the_bundled_items_and_the_chains(results):
    text = findings_report.BLOCKS["cell-comparison"](results)
    cells = results["agreement_cells"]
    assert [m["model"] for m in cells] == [f"{n}.safetensors" for n in (*findings.AGREEMENT_MODELS,
                                                                       *findings.CELL_MODELS)]
    for m in cells:
        assert f"| {m['model'].removesuffix('.safetensors')} | {m['cell']} | {m['hidden_size']} | " in text
        assert list(m["chains"]) == [str(3 * k) for k in findings.CHAIN_PPS]
    chain_rows = [line for line in text.splitlines() if line.startswith("| 54 |")]
    assert len(chain_rows) == 1 and chain_rows[0].count("(") == len(cells)
    broken = {**cells[2], "chains": {**cells[2]["chains"], "27": {"accuracy": 0.5, "mean_logit_diff": 0.0}}}
    lines = findings_report.cell_comparison({"agreement_cells": [broken]})
    assert lines[-1] == "- agreement_rnn (RNN): falls below 0.95 at distance 27."


def test_cell_findings_run_on_a_tiny_rnn(tmp_path):
    from gatescope.samples import train

    path = train.train_all(tmp_path, only=["agreement_rnn"], steps=2, hidden_size=6, embedding_size=4)[0]
    res = findings.cell_findings(path)
    assert res["cell"] == "RNN" and res["hidden_size"] == 6
    assert res["parameters"] == 6 * (4 + 6 + 2)  # W, U and two biases
    assert res["training"]["steps"] == 2 and set(res["chains"]) == {str(3 * k) for k in findings.CHAIN_PPS}
    assert all(0 <= c["accuracy"] <= 1 for c in res["chains"].values()) and "nested_SP" in res["accuracy_by_condition"]


@pytest.mark.slow
def test_large_model_findings_run_on_a_tiny_two_layer_model(tmp_path):
    """The 2x650 section's code on a 2 x 12 LSTM trained for a few steps: every figure is there and
    consistent (the carriers are the single ablations that cost >= the criterion, re-measured)."""
    from gatescope.findings.study import large_findings
    from gatescope.samples import train

    path = train.train_all(tmp_path, only=["agreement_lstm_2x650"], steps=30, hidden_size=12, embedding_size=8)[0]
    res = large_findings(path, tmp_path / "profile.png", draws=2, screen_items=10, layer1_screened=4)
    assert res["num_layers"] == 2 and res["hidden_size"] == 12 and res["screened"] == 12 + 4
    assert set(res["units_auc_90"]) == {"rnn.l0.fwd.h", "rnn.l1.fwd.h"} and (tmp_path / "profile.png").is_file()
    assert all(c["drop"] >= res["criterion"] for c in res["carriers"])
    assert [a["k"] for a in res["set_ablations"]] == [1, 2, 4]
    assert set(res["profile"]) == set("ifgoch") and len(res["profile"]["c"]) == 4
    assert [len(v) for v in res["profile"]["h"]] == [len(s.split()) for s in res["profile_sentences"]]
    text = findings_report.BLOCKS["number-units-2x650"]({"agreement_large": res})
    assert "**Sparse number units in a Lakretz-sized LSTM.**" in text and res["best_unit"] in text


def _pairwise_auc(x: np.ndarray, y: np.ndarray) -> float:
    """ROC AUC as the fraction of (positive, negative) pairs ordered right, ties counting half."""
    pos, neg = x[y == 1], x[y == 0]
    diff = pos[:, None] - neg[None, :]
    return float(((diff > 0).sum() + 0.5 * (diff == 0).sum()) / diff.size)


def test_code_units_are_scored_per_file_against_an_independent_computation():
    rng = np.random.default_rng(0)
    lengths = [40, 30, 20]
    n = sum(lengths)
    string = (rng.random(n) < 0.3).astype(np.float32)
    string[70:] = 0.0  # the third "file" has no string: its AUC is undefined
    depth = rng.integers(0, 4, n).astype(np.float32)
    c = torch.from_numpy(rng.normal(size=(n, 3)).astype(np.float32))  # (N, 3)
    c[:, 1] = torch.from_numpy(-depth + rng.normal(scale=0.5, size=n).astype(np.float32))  # low where deep
    c[:45, 2] = torch.from_numpy(np.round(string[:45] + rng.normal(scale=0.6, size=45), 1))  # ties included
    trace = Trace({"rnn.l0.fwd.c": c}, [0, 40, 70, n], features={"in_string": string, "bracket_depth": depth})
    aucs = code_findings._per_file_scores(trace, "rnn.l0.fwd.c:2", "in_string", "auc", lengths)
    assert aucs[2] is None
    for got, (start, stop) in zip(aucs[:2], [(0, 40), (40, 70)]):
        assert got == pytest.approx(_pairwise_auc(c[start:stop, 2].numpy(), string[start:stop]), abs=1e-12)
    corrs = code_findings._per_file_scores(trace, "rnn.l0.fwd.c:1", "bracket_depth", "corr", lengths)
    for got, (start, stop) in zip(corrs, [(0, 40), (40, 70), (70, n)]):
        assert got == pytest.approx(np.corrcoef(c[start:stop, 1].numpy(), depth[start:stop])[0, 1], abs=1e-6)
    # a depth has 4 integer values, so ranking would treat it as categorical: the code features rank it by r
    ranked = code_findings._rank_feature(trace, "bracket_depth", permutations=0)
    assert ranked[0]["unit"] == "rnn.l0.fwd.c:1" and ranked[0]["metric"] == "corr" and ranked[0]["corr"] < -0.8
    assert code_findings._oriented(ranked[0]["corr"], False, "corr") == -ranked[0]["corr"]
    assert code_findings._oriented(0.2, False, "auc") == pytest.approx(0.8)


def test_a_code_unit_is_scored_against_each_kind_of_character_outside_its_feature():
    rng = np.random.default_rng(1)
    n = 120
    kind = rng.integers(0, 3, n)  # 0 code, 1 string, 2 comment
    string, comment = (kind == 1).astype(np.float32), (kind == 2).astype(np.float32)
    prose = torch.from_numpy((kind > 0) + rng.normal(scale=0.8, size=n).astype(np.float32))  # strings and comments
    c = torch.stack([prose, -prose], 1).float()  # (N, 2): the second unit is low inside prose
    trace = Trace({"rnn.l0.fwd.c": c}, [0, n], features={"in_string": string, "in_comment": comment})
    got = code_findings._against(trace, "rnn.l0.fwd.c:0", "in_string", True)
    x = c[:, 0].numpy()
    assert got["code"] == pytest.approx(_pairwise_auc(x[kind != 2], string[kind != 2]), abs=1e-12)
    assert got["in_comment"] == pytest.approx(_pairwise_auc(x[kind != 0], string[kind != 0]), abs=1e-12)
    assert got["code"] > 0.7 and 0.3 < got["in_comment"] < 0.7  # a prose unit: strings apart from code only
    low = code_findings._against(trace, "rnn.l0.fwd.c:1", "in_comment", False)  # oriented like the chosen unit
    assert low["code"] == pytest.approx(_pairwise_auc(x[kind != 1], comment[kind != 1]), abs=1e-12)
    no_comment = Trace({"rnn.l0.fwd.c": c}, [0, n], features={"in_string": string, "in_comment": 0 * comment})
    assert code_findings._against(no_comment, "rnn.l0.fwd.c:0", "in_string", True)["in_comment"] is None


@pytest.mark.slow  # 2 s of CPU: scores the char model on its held-out files
def test_bits_per_char_agrees_with_the_metric_training_recorded():
    """Measured by another route (the loaded model, each whole file at once) than the trainer's (the
    training module, 1024-character pieces carrying the state)."""
    from gatescope import sample_models
    from gatescope.samples.data import stdlib_files

    model = gatescope.load(sample_models.path(f"{code_findings.CODE_MODEL}.safetensors")).eval()
    bits = code_findings.bits_per_char(model, stdlib_files(heldout=True))
    assert list(bits) == [*model.metadata["heldout_files"], "pooled"]
    assert bits["pooled"] == pytest.approx(model.metadata["metrics"]["heldout_loss_bits_per_char"], abs=1e-3)
    assert min(bits.values()) < bits["pooled"] < max(bits.values())


def test_the_char_report_shows_every_feature_on_every_heldout_file(results):
    code = results["code"]
    text = findings_report.report(results)
    assert set(code["units"]) == set(code_findings.CODE_FEATURES)
    assert f"at {code['bits_per_char']:.3f} bits per character" in text
    for feature, res in code["units"].items():
        best = res["top"][0]
        cells = " | ".join(f"{best['heldout_by_file'][name]:.3f}" for name in code["heldout_files"])
        assert f"`{best['unit']}` ({best['direction']}) | {best['train_score']:.3f} | " \
               f"{best['heldout_score']:.3f} | {cells} |" in text, feature
    missing = copy.deepcopy(results)
    missing["code"]["units"]["in_comment"]["top"][0]["heldout_by_file"]["netrc.py"] = None
    text = findings_report.report(missing)
    assert "| n/a |" in text and "netrc.py has no comment: the score is undefined there" in text
    string = code["units"]["in_string"]["top"][0]
    assert f"in_string `{string['unit']}`: {string['heldout_against']['code']:.3f} against code, " \
           f"{string['heldout_against']['in_comment']:.3f} against comments" in text


def test_default_reasoning_section_is_what_the_pipeline_computes():
    """The default-reasoning numbers in docs/findings.json are those of the function the pipeline runs,
    on the agreement LSTM (the GRU's take as long again), and their block renders the verdict."""
    import gatescope
    from gatescope.findings.default_reasoning import default_reasoning
    from gatescope.inputs.stimuli.agreement import bundled_stimuli_path, read_stimuli

    results = json.loads((ROOT / "docs" / "findings.json").read_text())
    stored = results["agreement"][0]["default_reasoning"]
    model = gatescope.load(ROOT / "sample_models" / "agreement_lstm.safetensors")
    items = [it for it in read_stimuli(bundled_stimuli_path()) if it.condition == "nounpp_SS"]
    fresh = default_reasoning(model, items, conditions=("nounpp_SS",))
    got, want = fresh["by_condition"]["nounpp_SS"], stored["by_condition"]["nounpp_SS"]
    assert got["total"] == pytest.approx(want["total"], abs=1e-4)
    for method in ("gcd", "shapley"):
        assert got[method] == pytest.approx(want[method], abs=1e-4)
    block = findings_report.BLOCKS["default-reasoning"](results)
    assert "| agreement_gru | plural | gcd |" in block and "singular works as a default" in block
