"""Agreement broken down by a field of the items (derived from gatescope's grammar, or the stimuli file's own
columns), with intervals; an ablation's drop per field with a paired bootstrap interval."""
from __future__ import annotations

import json

import pytest


from gatescope.analysis.agreement import ablation_effect, ablation_interventions, evaluate_agreement
from gatescope.errors import GatescopeError
from gatescope.inputs.stimuli.agreement import (
    AgreementItem,
    generate_stimuli,
    is_heldout_pair,
    item_fields,
    random_draw,
    read_stimuli,
    write_stimuli,
)
from tests.checkpoint_fixtures import language_model, word_metadata
from tests.cli_helpers import cli, fails


def test_item_fields_of_a_nounpp_item():
    item = AgreementItem("the boy near the cars", "greets", "greet", "nounpp_SP")
    assert item_fields(item) == {"condition": "nounpp_SP", "verb": "greet/greets", "structure": "nounpp",
                                 "distance": "3", "subject": "boy", "attractor": "cars", "preposition": "near",
                                 "pair": "held-out" if is_heldout_pair(0, 0) else "training"}


def test_the_held_out_draw_has_only_held_out_pairs_and_a_random_draw_mostly_training_pairs():
    held = generate_stimuli(50, seed=0, conditions=("nounpp_SP",))
    assert {item_fields(AgreementItem(s.prefix, s.correct, s.wrong, s.condition))["pair"] for s in held} == {"held-out"}
    drawn = [item_fields(AgreementItem(s.prefix, s.correct, s.wrong, s.condition))["pair"]
             for s in random_draw(400, seed=0, conditions=("nounpp_SP",))]
    assert 0.68 < drawn.count("training") / len(drawn) < 0.82  # 3 pairs in 4 are training pairs


def test_a_stimuli_files_own_columns_are_fields(tmp_path):
    path = tmp_path / "items.tsv"
    path.write_text("prefix\tcorrect\twrong\tcondition\tsource\n"
                    "the boy near the cars\tgreets\tgreet\tnounpp_SP\tmine\n"
                    "the boys\tgreet\tgreets\tsimple_P\ttheirs\n")
    items = read_stimuli(path)
    assert [item_fields(i)["source"] for i in items] == ["mine", "theirs"]
    path.write_text("prefix\tcorrect\twrong\tcondition\tsource\nthe boy\tgreets\tgreet\tsimple_S\tx\n"
                    "the boys\tgreet\tgreets\tsimple_P\n")
    with pytest.raises(GatescopeError, match=r"items.tsv:3: expected 5 tab-separated fields"):
        read_stimuli(path)
    path.write_text("the boy\tgreets\tgreet\tsimple_S\tx\n")
    with pytest.raises(GatescopeError, match=r"items.tsv:1: expected 4 .* further columns need a header line"):
        read_stimuli(path)


@pytest.fixture
def lm(tmp_path):
    import gatescope

    _, path = language_model(tmp_path, word_metadata())
    return gatescope.load(path), path


ITEMS = [AgreementItem("the boy near the cars", "greets", "greet", "nounpp_SP"),
         AgreementItem("the boys near the car", "greet", "greets", "nounpp_PS"),
         AgreementItem("the boy", "greets", "greet", "simple_S"),
         AgreementItem("the boys", "greet", "greets", "simple_P")]


def test_the_breakdown_adds_up_and_carries_intervals(lm):
    model, _ = lm
    result = evaluate_agreement(model, ITEMS, by=["structure", "subject"])
    for field in ("structure", "subject"):
        groups = result["by"][field]
        assert sum(g["n"] for g in groups.values()) == len(ITEMS)
        assert sum(g["accuracy"] * g["n"] for g in groups.values()) == pytest.approx(result["accuracy"] * len(ITEMS))
        assert all(g["ci95"][0] <= g["accuracy"] <= g["ci95"][1] for g in groups.values())
    assert set(result["by"]["structure"]) == {"nounpp", "simple"}
    with pytest.raises(GatescopeError, match="no field 'colour'.*they have: condition"):
        evaluate_agreement(model, ITEMS, by=["colour"])


def test_the_ablation_effect_is_the_difference_of_the_two_accuracies(lm):
    model, _ = lm
    units = [f"rnn.l0.fwd.h:{i}" for i in range(8)]
    effect = ablation_effect(model, ITEMS, ablation_interventions(model, units), by=["condition"])
    base = evaluate_agreement(model, ITEMS)["accuracy"]
    after = evaluate_agreement(model, ITEMS, ablation_interventions(model, units))["accuracy"]
    assert effect["baseline"]["accuracy"] == base and effect["ablated"]["accuracy"] == after
    assert effect["drop"] == pytest.approx(base - after)
    assert effect["drop_ci95"][0] <= effect["drop"] <= effect["drop_ci95"][1]
    for value, row in effect["by"]["condition"].items():
        assert row["drop"] == pytest.approx(row["baseline"]["accuracy"] - row["ablated"]["accuracy"])


def test_the_command_breaks_down_by_field(tmp_path, capsys):
    from gatescope import sample_models

    path = sample_models.path("agreement_gru.safetensors")
    stimuli = tmp_path / "items.tsv"
    write_stimuli([*generate_stimuli(3, seed=0, conditions=("nounpp_SP",))], stimuli)
    data = json.loads(cli(capsys, "agreement", path, "--stimuli", stimuli, "--by", "pair,subject", "--ablate",
                          "rnn.l0.fwd.h:1", "--json").out)
    assert set(data["by"]) == {"pair", "subject"} and set(data["by"]["pair"]) == {"held-out"}
    assert set(data["effect"]["by"]["subject"]) == set(data["by"]["subject"])
    out = cli(capsys, "agreement", path, "--stimuli", stimuli, "--by", "pair").out
    assert "By pair" in out and "held-out" in out and "95% interval" in out
    fails(capsys, "agreement", path, "--stimuli", stimuli, "--by", "colour", match="no field 'colour'")


def test_samples_stimuli_writes_either_draw(tmp_path, capsys):
    for draw in ("held-out", "random"):
        out = tmp_path / draw / "items.tsv"
        cli(capsys, "samples", "stimuli", "-o", out, "--draw", draw, "--per-condition", "40", "--conditions",
            "nounpp_SP", "--seed", "3")
        pairs = {item_fields(item)["pair"] for item in read_stimuli(out)}
        assert pairs == ({"held-out"} if draw == "held-out" else {"held-out", "training"})


def test_analyze_ablate_says_which_items_it_scored(capsys):
    from gatescope import sample_models

    path = sample_models.path("agreement_gru.safetensors")
    data = json.loads(cli(capsys, "analyze", "ablate", path, "--units", "rnn.l0.fwd.h:36", "--no-sweep",
                          "--draws", "2", "--seed", "4", "--json").out)
    assert data["items"] == "400 items drawn at random from the lexicon (seed 4)"
    out = cli(capsys, "samples", "list").out
    assert "every subject-verb lemma pair one the training grammar never joins" in out
