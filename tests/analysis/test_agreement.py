"""`gatescope agreement` and evaluate_agreement against a hand-written reference computed from the
checkpoint's tensors (torch's LSTM/GRU/RNN equations, a step loop, units zeroed by hand), on the
shipped sample models; the stimuli reader and its errors."""
from __future__ import annotations

import json
import math
import random

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

import gatescope
from gatescope import sample_models
from gatescope.analysis.agreement import ablation_interventions, evaluate_agreement
from gatescope.cli import main
from gatescope.errors import GatescopeError
from gatescope.inputs.stimuli.agreement import (
    CONDITIONS,
    INCONGRUENT_NOUNPP,
    AgreementItem,
    distance,
    generate_stimuli,
    is_incongruent,
    read_stimuli,
    write_stimuli,
)

MODELS = ["agreement_lstm", "agreement_gru", "agreement_rnn"]
NUMBER_UNIT_MODELS = ["agreement_lstm", "agreement_gru"]  # the plain RNN spreads number wider: 4 units cost 6 points


class Reference:
    """The sample LM run by hand from its safetensors tensors: embedding, one recurrent layer (torch's LSTM,
    GRU or tanh RNN), decoder."""

    def __init__(self, name: str):
        path = sample_models.path(f"{name}.safetensors")
        self.w = load_file(path)
        with safe_open(str(path), "pt") as f:
            meta = json.loads(f.metadata()["gatescope"])
        self.words = {w: i for i, w in enumerate(meta["vocab"])}
        self.cell = meta["training"]["cell"]
        self.hidden = self.w["rnn.weight_hh_l0"].shape[1]

    def hidden_states(self, sentences: list[list[str]], zero: list[int] = ()) -> torch.Tensor:
        """h (B, T, H) for equal-length sentences, holding units `zero` of h at 0 after every step."""
        w = self.w
        x = w["embedding.weight"][torch.tensor([[self.words[t] for t in s] for s in sentences])]  # (B, T, E)
        h = torch.zeros(len(sentences), self.hidden)
        c = torch.zeros_like(h)
        out = []
        for t in range(x.shape[1]):
            gi = x[:, t] @ w["rnn.weight_ih_l0"].T + w["rnn.bias_ih_l0"]  # (B, G*H)
            gh = h @ w["rnn.weight_hh_l0"].T + w["rnn.bias_hh_l0"]
            if self.cell == "LSTM":
                i, f, g, o = (gi + gh).chunk(4, dim=1)
                c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
                h = torch.sigmoid(o) * torch.tanh(c)
            elif self.cell == "RNN":  # the seed's plain RNN
                h = torch.tanh(gi + gh)
            else:
                ir, iz, in_ = gi.chunk(3, dim=1)
                hr, hz, hn = gh.chunk(3, dim=1)
                r, z = torch.sigmoid(ir + hr), torch.sigmoid(iz + hz)
                h = (1 - z) * torch.tanh(in_ + r * hn) + z * h
            h = h.clone()
            h[:, list(zero)] = 0.0
            out.append(h)
        return torch.stack(out, dim=1)

    def evaluate(self, items, zero: list[int] = ()) -> dict:
        """Accuracy per condition from log-probabilities after each prefix, one item at a time."""
        right: dict[str, list[bool]] = {}
        diffs: dict[str, list[float]] = {}
        for item in items:
            h = self.hidden_states([item.prefix.split()], zero)[0, -1]  # (H,)
            logp = torch.log_softmax(h @ self.w["decoder.weight"].T + self.w["decoder.bias"], dim=-1)
            p_right, p_wrong = logp[self.words[item.correct]], logp[self.words[item.wrong]]
            right.setdefault(item.condition, []).append(bool(p_right > p_wrong))
            diffs.setdefault(item.condition, []).append(float(p_right - p_wrong))
        return {c: (sum(v) / len(v), len(v), sum(diffs[c]) / len(v)) for c, v in right.items()}


@pytest.fixture(scope="module")
def items():
    """A reduced held-out stimulus set (other draws than the bundled file)."""
    return generate_stimuli(per_condition=24, seed=11)


@pytest.fixture(scope="module")
def stimuli_file(tmp_path_factory, items):
    path = tmp_path_factory.mktemp("stimuli") / "reduced.tsv"
    write_stimuli(items, path)
    return path


def run_json(capsys, *argv) -> dict:
    main(["agreement", *(str(a) for a in argv), "--json"])
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    return json.loads(out)


def assert_matches(result: dict, reference: dict):
    assert set(result) >= {"accuracy", "n", "by_condition"}
    assert list(result["by_condition"]) == list(reference)
    for condition, (accuracy, n, diff) in reference.items():
        row = result["by_condition"][condition]
        assert row["n"] == n and row["accuracy"] == pytest.approx(accuracy, abs=1e-9), condition
        assert row["mean_logit_diff"] == pytest.approx(diff, abs=1e-4), condition
    total = sum(n for _, n, _ in reference.values())
    assert result["n"] == total
    assert result["accuracy"] == pytest.approx(sum(a * n for a, n, _ in reference.values()) / total, abs=1e-6)
    for key, wanted in (("by_distance", lambda c: True), ("by_distance_incongruent", is_incongruent)):
        pooled: dict[int, list[tuple[float, int]]] = {}
        for condition, (accuracy, n, _) in reference.items():
            if wanted(condition):
                pooled.setdefault(distance(condition), []).append((accuracy, n))
        rows = {int(d): row for d, row in result[key].items()}  # JSON keys are strings
        assert sorted(rows) == list(rows) == sorted(pooled), key
        for d, parts in pooled.items():
            n = sum(k for _, k in parts)
            assert rows[d]["n"] == n and rows[d]["accuracy"] == pytest.approx(sum(a * k for a, k in parts) / n), d
    assert result["without_distance"] == 0


@pytest.mark.parametrize("name", MODELS)
def test_shipped_model_meets_its_targets_and_equals_the_reference(name, items, stimuli_file, capsys):
    result = run_json(capsys, sample_models.path(f"{name}.safetensors"), "--stimuli", stimuli_file)
    reference = Reference(name).evaluate(items)
    assert_matches(result, reference)
    for condition in INCONGRUENT_NOUNPP:
        assert result["by_condition"][condition]["accuracy"] >= 0.95, condition
    assert result["accuracy"] >= 0.95
    meta = gatescope.load(sample_models.path(f"{name}.safetensors")).metadata
    for condition in INCONGRUENT_NOUNPP:
        assert meta["metrics"]["agreement_by_condition"][condition] >= 0.95


@pytest.mark.parametrize("name", MODELS)
def test_ablate_equals_zeroing_h_by_hand(name, items, stimuli_file, capsys):
    model_path = sample_models.path(f"{name}.safetensors")
    units = [3, 17, 30]
    result = run_json(capsys, model_path, "--stimuli", stimuli_file,
                      "--ablate", ", ".join(f"rnn.l0.fwd.h:{u}" for u in units))
    assert result["ablated"] == [f"rnn.l0.fwd.h:{u}" for u in units]
    assert_matches(result, Reference(name).evaluate(items, zero=units))
    unablated = run_json(capsys, model_path, "--stimuli", stimuli_file)
    assert result["mean_logit_diff"] != pytest.approx(unablated["mean_logit_diff"], abs=1e-3)


@pytest.mark.parametrize("name", NUMBER_UNIT_MODELS)
def test_few_number_units_carry_agreement_and_random_units_do_not(name, items):
    """The property the analysis issue relies on: the 4 units of h most correlated with subject number
    (ranked here by hand) hold incongruent NounPP up; random sets of 4 barely matter."""
    reference = Reference(name)
    labelled = generate_stimuli(per_condition=20, seed=5)
    hs, labels = [], []
    for item in labelled:
        h = reference.hidden_states([list(item.tokens)])[0]  # (T, H)
        keep = [t for t, v in enumerate(item.subject_number) if not math.isnan(v)]
        hs.append(h[keep])
        labels += [item.subject_number[t] for t in keep]
    h, y = torch.cat(hs), torch.tensor(labels)
    hc, yc = h - h.mean(0), y - y.mean()
    corr = (hc * yc[:, None]).sum(0) / (hc.norm(dim=0) * yc.norm() + 1e-12)
    top = corr.abs().argsort(descending=True)[:4].tolist()
    model = gatescope.load(sample_models.path(f"{name}.safetensors"))
    nounpp = [i for i in items if i.condition in INCONGRUENT_NOUNPP]

    def accuracy(units):
        interventions = ablation_interventions(model, [f"rnn.l0.fwd.h:{u}" for u in units]) if units else None
        return evaluate_agreement(model, nounpp, interventions)["accuracy"]

    base = accuracy([])
    assert base - accuracy(top) >= 0.20
    rng = random.Random(0)
    drops = [base - accuracy(rng.sample(range(reference.hidden), 4)) for _ in range(10)]
    assert sum(drops) / len(drops) < 0.05


def test_bundled_stimuli_by_default_and_a_table_without_json(capsys):
    model_path = sample_models.path("agreement_gru.safetensors")
    result = run_json(capsys, model_path)
    assert result["n"] == len(generate_stimuli()) == 8920 and list(result["by_condition"]) == list(CONDITIONS)
    main(["agreement", str(model_path)])
    out = capsys.readouterr().out
    for condition in CONDITIONS:
        assert condition in out
    assert "8920" in out and "By distance (tokens between subject and verb)" in out
    nounpp3 = result["by_distance"]["9"]  # three attractors: the only items 9 tokens from their subject
    assert nounpp3["n"] == 800 and nounpp3["accuracy"] == pytest.approx(
        sum(result["by_condition"][f"nounpp3_{n}"]["accuracy"] for n in ("SS", "SP", "PS", "PP")) / 4)


def test_items_of_other_conditions_count_but_have_no_distance(tmp_path, capsys):
    path = tmp_path / "mixed.tsv"
    path.write_text("the boy near the cars\tgreets\tgreet\tnounpp_SP\nthe boys\tgreet\tgreets\tmine\n")
    result = run_json(capsys, sample_models.path("agreement_lstm.safetensors"), "--stimuli", path)
    assert result["n"] == 2 and list(result["by_condition"]) == ["nounpp_SP", "mine"]
    assert result["without_distance"] == 1 and {d: r["n"] for d, r in result["by_distance"].items()} == {"3": 1}
    main(["agreement", str(sample_models.path("agreement_lstm.safetensors")), "--stimuli", str(path)])
    err = capsys.readouterr().err
    assert err.startswith("gatescope: warning: 1 of 2 items have a condition gatescope does not know")
    assert err.count("\n") == 1


# --- bad input -------------------------------------------------------------------------------------

def fails(capsys, *argv, match: str):
    with pytest.raises(SystemExit) as info:
        main(["agreement", *(str(a) for a in argv)])
    err = capsys.readouterr().err
    assert info.value.code == 1
    assert err.startswith("gatescope: error: ") and err.count("\n") == 1, err
    assert match in err, err


@pytest.mark.parametrize("content, match", [
    ("", "has no items"),
    ("\n  \n", "has no items"),
    ("the boy\tgreets\tgreet\tsimple_S\nthe boys\tgreet\tgreets\n", ":2: expected 4 tab-separated fields"),
    ("the boy\tgreets\tgreet\tsimple_S\textra\n", ":1: expected 4 tab-separated fields"),
    ("\tgreets\tgreet\tsimple_S\n", ":1: the prefix and the condition must not be empty"),
    ("the boy\tgreets now\tgreet\tsimple_S\n", ":1: a verb must be one word"),
    ("the boy\tgreets\tgreets\tsimple_S\n", ":1: the correct and the wrong verb are both"),
])
def test_malformed_stimuli_files(tmp_path, capsys, content, match):
    path = tmp_path / "bad.tsv"
    path.write_text(content)
    fails(capsys, sample_models.path("agreement_lstm.safetensors"), "--stimuli", path, match=match)


def test_unreadable_and_missing_stimuli_files(tmp_path, capsys):
    model = sample_models.path("agreement_lstm.safetensors")
    fails(capsys, model, "--stimuli", tmp_path / "nope.tsv", match=f"no such file: {tmp_path / 'nope.tsv'}")
    binary = tmp_path / "binary.tsv"
    binary.write_bytes(b"\xff\xfe\x00bad")
    fails(capsys, model, "--stimuli", binary, match="binary.tsv is not UTF-8 text")


def test_words_outside_the_vocabulary_are_named(tmp_path, capsys):
    path = tmp_path / "oov.tsv"
    path.write_text("the zebra near the boys\tgreets\tgreet\tnounpp_SP\nthe boy\tsmiles\tsmile\tsimple_S\n")
    fails(capsys, sample_models.path("agreement_lstm.safetensors"), "--stimuli", path,
          match="words not in the model's vocabulary: 'zebra', 'smiles', 'smile'")


@pytest.mark.parametrize("units, match", [
    ("rnn.l0.fwd.h:128", "index 128 is out of range (rnn.l0.fwd.h has 128 units)"),
    ("rnn.l1.fwd.h:3", "rnn has 1 layer(s)"),
    ("decoder.l0.fwd.h:3", "no recurrent module 'decoder'"),
    ("rnn.l0.fwd.z:3", "LSTM has no kind 'z'"),
    ("rnn.l0.fwd.h", "not a unit name"),
    (",", "--ablate needs at least one unit"),
])
def test_bad_units_to_ablate(capsys, units, match):
    fails(capsys, sample_models.path("agreement_lstm.safetensors"), "--ablate", units, match=match)


def test_evaluate_agreement_needs_items_and_a_vocabulary():
    model = gatescope.load(sample_models.path("agreement_lstm.safetensors"))
    with pytest.raises(GatescopeError, match="no agreement items"):
        evaluate_agreement(model, [])
    model.vocab = None
    with pytest.raises(GatescopeError, match="no vocabulary"):
        evaluate_agreement(model, [AgreementItem("the boy", "greets", "greet", "simple_S")])


def test_read_stimuli_keeps_order_and_fields(tmp_path):
    path = tmp_path / "s.tsv"
    path.write_text("the boy near the cars\tgreets\tgreet\tnounpp_SP\n\nthe boys\tgreet\tgreets\tsimple_P\n")
    assert read_stimuli(path) == [
        AgreementItem("the boy near the cars", "greets", "greet", "nounpp_SP"),
        AgreementItem("the boys", "greet", "greets", "simple_P"),
    ]
