"""Hostile inputs that once escaped as tracebacks or as messages of several lines: each is now handled, or
refused in one line ``gatescope: error: ...`` with exit status 1. The checkpoints are built by
tests/fuzz_corpus.py (`hostile_checkpoints`), which the fuzz tests' command-line cases use too."""
from __future__ import annotations

import json

import pytest
import torch
from tests.cli_helpers import cli, fails
from tests.fuzz_corpus import hostile_checkpoints

import gatescope


@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> dict:
    return hostile_checkpoints(tmp_path_factory.mktemp("hostile"))


@pytest.mark.parametrize("name", ["module named forward.training", "module named training",
                                  "module named initial_states"])
def test_modules_named_like_attributes_of_nn_module_load_and_keep_their_names(hostile, name, capsys):
    path, _ = hostile[name]
    prefix = name.removeprefix("module named ")
    model = gatescope.load(path)
    assert model.training is False and model.recurrent_names == [prefix]
    with torch.no_grad(), gatescope.record(model) as rec:
        model(torch.tensor([[2, 3, 5]]))
    assert f"{prefix}.l0.fwd.f" in rec.trace
    report = json.loads(cli(capsys, "inspect", path, "--json").out)
    assert report["modules"][0]["name"] == prefix and report["saturation"] is not None


def test_a_projection_as_wide_as_the_hidden_state_is_refused(hostile, capsys):
    path, words = hostile["projection as wide as the hidden state"]
    fails(capsys, "inspect", path, "--no-tui", match=f"rnn.weight_hr_l0 has shape [8, 8]; {words}")


@pytest.mark.parametrize("name", ["embedding narrower than the input", "vocabulary wider than the input, no embedding"])
def test_a_vocabulary_no_embedding_can_feed_is_refused_at_load_in_one_line(hostile, name, capsys):
    path, words = hostile[name]
    with pytest.raises(gatescope.GatescopeError, match="no embedding feeds rnn with input size 6"):
        gatescope.load(path)
    for argv in (["inspect", path, "--no-tui"], ["agreement", path],
                 ["analyze", "ablate", path, "--units", "rnn.l0.fwd.h:1", "--draws", "1"]):
        fails(capsys, *argv, match=words)


def test_a_model_without_a_fitting_decoder_is_refused_in_one_line_that_names_what_was_not_used(hostile, capsys):
    path, _ = hostile["decoder narrower than the hidden state"]
    words = "no decoder (an output Linear [10, 8] after rnn), so it does not score the next word; 2 tensors are not " \
            "used by the runnable model: decoder.bias [10], decoder.weight [10, 5]"
    for argv in (["agreement", path], ["analyze", "ablate", path, "--units", "rnn.l0.fwd.h:1", "--draws", "1"],
                 ["analyze", "attribute", path, "--text", "the boy", "--correct", "greets", "--wrong", "greet"]):
        fails(capsys, *argv, match=words)


def test_a_device_that_holds_no_data_is_refused_in_one_line(toy_lm, tmp_path, capsys):
    _, path = toy_lm
    out = tmp_path / "out.safetensors"
    fails(capsys, "inspect", path, "--device", "meta", "--no-tui", match="device meta holds no data")
    fails(capsys, "trace", path, "--text", "the boy", "--device", "meta", "-o", out, match="device meta holds no data")
    assert not out.exists()


def test_a_checkpoint_that_is_a_symlink_loop_is_refused_in_one_line(hostile, toy_lm, tmp_path, capsys):
    loop, words = hostile["a symlink loop"]
    out = tmp_path / "out.safetensors"
    fails(capsys, "trace", loop, "--text", "the boy", "-o", out, match=words)
    fails(capsys, "trace", toy_lm[1], "--text", "the boy", "--feature", f"x={loop}", "-o", out, match=words)
    fails(capsys, "convert", loop, "-o", out, match=loop.name)
    assert not out.exists()


@pytest.mark.parametrize("command", ["inspect", "trace"])
def test_token_ids_typed_with_a_superscript_digit_are_refused_in_one_line(toy_lm, command, tmp_path, capsys):
    options = ["--no-tui"] if command == "inspect" else ["-o", tmp_path / "out.safetensors"]
    fails(capsys, command, toy_lm[1], "--ids", "1 \u00b2", *options, match="'\u00b2' is not a token id (an integer)")
    assert not (tmp_path / "out.safetensors").exists()


@pytest.fixture
def toy_trace(toy_lm, tmp_path, capsys) -> str:
    path = tmp_path / "toy.trace.safetensors"
    cli(capsys, "trace", toy_lm[1], "--text", "the boy greets the car", "--text", "the boys greet", "-o", path)
    return str(path)


@pytest.mark.parametrize("units, words", [("-1", "unit(s) -1 out of range; rnn.l0.fwd.h has 8 units (0..7)"),
                                          ("1,8,-2", "unit(s) 8, -2 out of range")])
def test_match_refuses_negative_and_out_of_range_units_in_one_line(toy_trace, units, words, capsys):
    fails(capsys, "analyze", "match", toy_trace, "--name", "rnn.l0.fwd.h", "--start", 0, "--stop", 2,
          "--units", units, match=words)


def test_saturation_of_an_unbounded_kind_is_refused_naming_the_kinds_it_measures(toy_trace, capsys):
    fails(capsys, "analyze", "saturation", toy_trace, "--kinds", "c",
          match="saturation is defined on kinds of bounded range (a gate near 0 or 1), and c lies in -inf..inf: "
                "give kinds among i,f,g,o,h")
