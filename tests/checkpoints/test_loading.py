"""Honest loading, through the command line: every tensor used or listed as unused, architectures that
are not one chain described but refused, the input projection run, selections that match nothing refused."""
from __future__ import annotations

import functools
import json

from tests import cli_helpers
import pytest
import torch
from tests.checkpoint_fixtures import WORDS, language_model, lstm_reference, save, word_metadata
from tests.cli_helpers import cli
from safetensors.torch import save_file
from torch import nn

import gatescope
from gatescope.errors import GatescopeError, GatescopeWarning
from gatescope.traces.trace import load_trace

fails = functools.partial(cli_helpers.fails, after_warnings=True)  # loading warns before some refusals


class Seq2Seq(nn.Module):
    """Two embeddings, an encoder GRU and a decoder GRU, an output projection (a translation model)."""

    def __init__(self):
        super().__init__()
        self.src_emb, self.tgt_emb = nn.Embedding(len(WORDS), 4), nn.Embedding(12, 4)
        self.encoder, self.decoder = nn.GRU(4, 6, batch_first=True), nn.GRU(4, 6, batch_first=True)
        self.proj = nn.Linear(6, 12)


class Series(nn.Module):
    """A time-series model: Linear(5 -> 16) -> LSTM(16, 8) -> Linear(8 -> 1)."""

    def __init__(self):
        super().__init__()
        self.inp, self.lstm, self.head = nn.Linear(5, 16), nn.LSTM(16, 8, batch_first=True), nn.Linear(8, 1)


@pytest.fixture
def seq2seq(tmp_path):
    torch.manual_seed(1)
    return save(tmp_path / "s2s.safetensors", {"": Seq2Seq()}, word_metadata())


def test_seq2seq_is_described_from_its_weights_with_every_tensor_accounted_for(tmp_path, capsys, seq2seq):
    out = cli(capsys, "inspect", seq2seq, "--json")
    report = json.loads(out.out)
    assert [m["name"] for m in report["modules"]] == ["decoder", "encoder"]
    assert report["runnable"] is False and report["trace"] is None
    found = set(report["unused"])
    assert {"encoder.weight_ih_l0", "encoder.bias_hh_l0", "tgt_emb.weight"} <= found
    assert "decoder.weight_ih_l0" not in found and "proj.weight" not in found
    used = {"src_emb.weight", "proj.weight", "proj.bias"} | {f"decoder.{k}" for k in nn.GRU(4, 6).state_dict()}
    assert found | used == set(Seq2Seq().state_dict())  # every tensor is used or listed
    assert any("not one chain" in w and "encoder (GRU 4->6)" in w for w in report["warnings"])
    assert "not one chain" in out.out and out.err == ""  # said in the report, not again as a warning


@pytest.mark.parametrize("extra", [[], ["--modules", "encoder"], ["--kinds", "h"]])
def test_seq2seq_trace_is_refused_saying_what_was_found_and_how_to_run_it(tmp_path, capsys, seq2seq, extra):
    out = tmp_path / "out.safetensors"
    line = fails(capsys, "trace", seq2seq, "--text", "the boy", *extra, "-o", out, match="cannot run this model")
    assert "decoder (GRU 4->6), encoder (GRU 4->6) are not one chain" in line
    assert "gatescope.record()" in line and "metadata" in line and "roles" in line
    assert not out.exists()
    line = fails(capsys, "agreement", seq2seq, match="cannot run this model")
    model = gatescope.load(seq2seq)
    assert not model.runnable and "not one chain" in model.refusal
    with pytest.raises(GatescopeError, match="cannot run this model"):
        model(torch.tensor([[2, 3]]))


def test_roles_naming_the_chain_run_it_and_list_the_rest_as_unused(tmp_path, capsys):
    torch.manual_seed(2)
    reference = Seq2Seq().eval()
    roles = {"embedding": "tgt_emb", "recurrent": ["decoder"], "decoder": "proj"}
    path = save(tmp_path / "dec.safetensors", {"": reference}, {"roles": roles})
    out = tmp_path / "run.safetensors"
    result = cli(capsys, "trace", path, "--ids", "3 11 0", "-o", out)
    assert "src_emb.weight [10, 4]" in result.err and "tensors are not used" in result.err
    trace = load_trace(out)
    with torch.no_grad():
        expected = reference.decoder(reference.tgt_emb(torch.tensor([[3, 11, 0]])))[0][0]
    torch.testing.assert_close(trace["decoder.l0.fwd.h"], expected, rtol=0, atol=1e-5)
    assert [n for n in trace.names if n.startswith("encoder")] == []


def test_two_embeddings_and_an_unknown_layer_between_two_lstms_are_refused(tmp_path, capsys):
    two = save(tmp_path / "two.safetensors", {"emb": nn.Embedding(10, 4), "pos_emb": nn.Embedding(20, 4),
                                              "rnn": nn.LSTM(4, 5), "decoder": nn.Linear(5, 10)})
    fails(capsys, "trace", two, "--ids", "1 2", "-o", tmp_path / "o.st",
          match="it has 2 embeddings (emb.weight [10, 4], pos_emb.weight [20, 4]); the loader runs one")
    between = save(tmp_path / "mid.safetensors", {"emb": nn.Embedding(10, 4), "lstm1": nn.LSTM(4, 6),
                                                  "mid": nn.Linear(6, 3), "lstm2": nn.LSTM(3, 6),
                                                  "decoder": nn.Linear(6, 10)})
    report = json.loads(cli(capsys, "inspect", between, "--json").out)
    assert report["runnable"] is False and {"mid.weight", "mid.bias", "lstm2.weight_hh_l0"} <= set(report["unused"])
    fails(capsys, "trace", between, "--ids", "1 2", "-o", tmp_path / "o.st",
          match="lstm1 (LSTM 4->6), lstm2 (LSTM 3->6) are not one chain (the loader would run only lstm1)")


def test_an_unused_tensor_is_listed_and_warned_about(tmp_path, capsys):
    _, path = language_model(tmp_path, metadata=word_metadata())
    from safetensors import safe_open

    with safe_open(path, framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
        meta = f.metadata()
    tensors["aux_head.weight"] = torch.zeros(3, 8)
    save_file(tensors, str(tmp_path / "aux.safetensors"), metadata=meta)
    result = cli(capsys, "inspect", tmp_path / "aux.safetensors", "--json")
    report = json.loads(result.out)
    assert report["unused"] == ["aux_head.weight"] and report["runnable"] is True
    assert "1 tensor is not used by the runnable model: aux_head.weight [3, 8]" in result.err
    assert report["trace"] is not None  # the runnable model still runs
    with pytest.warns(GatescopeWarning, match="aux_head.weight"):
        assert gatescope.load(tmp_path / "aux.safetensors").unused == ["aux_head.weight"]


def test_a_second_head_the_decoder_guess_cannot_tell_apart_is_named_with_the_fix(tmp_path, capsys):
    _, path = language_model(tmp_path, metadata=word_metadata())
    from safetensors import safe_open

    with safe_open(path, framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
        meta = f.metadata()
    tensors["aux_decoder.weight"] = torch.zeros_like(tensors["decoder.weight"])  # a second head, as wide
    tensors["aux_decoder.bias"] = torch.zeros_like(tensors["decoder.bias"])
    save_file(tensors, str(tmp_path / "heads.safetensors"), metadata=meta)
    with pytest.warns(GatescopeWarning) as caught:
        model = gatescope.load(tmp_path / "heads.safetensors")
    said = " | ".join(str(w.message) for w in caught)
    assert sorted(model.unused) == ["aux_decoder.bias", "aux_decoder.weight"]  # the shorter name is taken
    assert ("decoder is taken as the decoder; aux_decoder fits as well: name the one the model uses "
            "(gatescope convert --roles decoder=NAME)") in said, said


def test_time_series_input_projection_is_run_and_shapes_are_reported(tmp_path, capsys):
    torch.manual_seed(3)
    reference = Series().eval()
    path = save(tmp_path / "series.safetensors", {"": reference})
    report = json.loads(cli(capsys, "inspect", path, "--json").out)
    assert report["input_projection"] == {"name": "inp", "in_features": 5, "out_features": 16, "bias": True}
    assert report["decoder"]["name"] == "head" and report["unused"] == []
    x = torch.randn(2, 7, 5)
    save_file({"x": x}, str(tmp_path / "x.safetensors"))
    out = tmp_path / "run.safetensors"
    result = cli(capsys, "trace", path, "--input", tmp_path / "x.safetensors", "-o", out)
    assert "inp is taken as a Linear applied straight before lstm" in result.err
    trace = load_trace(out)
    with torch.no_grad():
        for s in range(2):
            expected = lstm_reference(reference.lstm, reference.inp(x[s]))
            for kind, values in expected.items():
                torch.testing.assert_close(trace[f"lstm.l0.fwd.{kind}"][trace.sequence(s)], values, rtol=0, atol=1e-5)
    save_file({"x": torch.randn(2, 7, 16)}, str(tmp_path / "wide.safetensors"))
    fails(capsys, "trace", path, "--input", tmp_path / "wide.safetensors", "-o", out,
          match="(float32 [2, 7, 16]) has 16 features a step; this model takes 5 "
                "(input projection inp (5 -> 16) -> lstm with input size 16)")


@pytest.mark.parametrize(
    ("cell", "kwargs", "kinds", "match"),
    [
        ("GRU", {}, "c", "--kinds c: not computed by the selected module; rnn (GRU: r z n h)"),
        ("LSTM", {}, "r,z", "--kinds r, z: not computed by the selected module; rnn (LSTM: i f g o c h)"),
        ("LSTM", {}, "m", "--kinds m: not computed by the selected module; rnn (LSTM: i f g o c h)"),
        ("LSTM", {"proj_size": 3}, "r", "rnn (LSTM: i f g o c m h)"),
    ],
)
def test_a_selection_that_matches_nothing_is_an_error_naming_what_exists(tmp_path, capsys, cell, kwargs, kinds, match):
    _, path = language_model(tmp_path, metadata=word_metadata(), cell=cell, **kwargs)
    out = tmp_path / "out.safetensors"
    fails(capsys, "trace", path, "--text", "the boy", "--kinds", kinds, "-o", out, match=match)
    assert not out.exists()


def test_proj_lstm_records_m_when_asked(tmp_path, capsys):
    _, path = language_model(tmp_path, metadata=word_metadata(), proj_size=3)
    cli(capsys, "trace", path, "--text", "the boy", "--kinds", "m", "-o", tmp_path / "m.safetensors")
    assert load_trace(tmp_path / "m.safetensors").names == ["rnn.l0.fwd.m"]


def test_agreement_refuses_models_that_cannot_score_the_next_word(tmp_path, capsys):
    bare = save(tmp_path / "nodec.safetensors", {"emb": nn.Embedding(len(WORDS), 4), "rnn": nn.LSTM(4, 5)},
                word_metadata())
    fails(capsys, "agreement", bare, match="this model has no decoder (an output Linear [10, 5] after rnn)")
    small = save(tmp_path / "small.safetensors", {"emb": nn.Embedding(len(WORDS), 4), "rnn": nn.LSTM(4, 5),
                                                  "decoder": nn.Linear(5, 3)}, word_metadata())
    fails(capsys, "agreement", small, match="decoder decoder has weight [3, 5]; scoring the next word needs [10, 5]")
    roles = word_metadata(roles={"decoder": "out"})
    wrong = save(tmp_path / "wrong.safetensors", {"emb": nn.Embedding(len(WORDS), 4), "rnn": nn.LSTM(4, 5),
                                                  "out": nn.Linear(7, 10)}, roles)
    fails(capsys, "agreement", wrong, match="decoder out.weight has shape [10, 7]; expected [vocabulary, 5] after rnn")


def test_the_docs_seq2seq_example_records_the_encoder_and_decoder_exactly(tmp_path, monkeypatch):
    from pathlib import Path

    page = (Path(__file__).parents[2] / "docs" / "recording.md").read_text()
    section = page[page.index("## Models the loader cannot run"):]
    code = section[section.index("```python\n") + 10:section.index("\n```", section.index("```python"))]
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code, "docs/recording.md", "exec"), namespace)
    model, src, tgt = namespace["model"], namespace["src"], namespace["tgt"]
    with torch.no_grad():
        encoded, state = model.encoder(model.src_emb(src))
        decoded = model.decoder(model.tgt_emb(tgt), state)[0]
    saved = load_trace("encoder.trace.safetensors")
    torch.testing.assert_close(saved["encoder.l0.fwd.h"], encoded[0], rtol=0, atol=1e-5)
    torch.testing.assert_close(namespace["dec"].trace["decoder.l0.fwd.h"], decoded[0], rtol=0, atol=1e-5)


def test_an_embedding_then_a_projection_then_an_lstm_is_run_exactly(tmp_path, capsys):
    torch.manual_seed(9)
    emb, proj, rnn, dec = nn.Embedding(len(WORDS), 8), nn.Linear(8, 6), nn.LSTM(6, 5), nn.Linear(5, len(WORDS))
    path = save(tmp_path / "p.safetensors", {"emb": emb, "proj_in": proj, "rnn": rnn, "decoder": dec},
                word_metadata())
    out = tmp_path / "run.safetensors"
    cli(capsys, "trace", path, "--text", "the boys near the car greet", "-o", out)
    ids = torch.tensor([WORDS.index(w) for w in "the boys near the car greet".split()])
    with torch.no_grad():
        expected = lstm_reference(rnn, proj(emb(ids)))
    trace = load_trace(out)
    for kind, values in expected.items():
        torch.testing.assert_close(trace[f"rnn.l0.fwd.{kind}"], values, rtol=0, atol=1e-5)
    with pytest.warns(GatescopeWarning, match="proj_in is taken as a Linear"):
        model = gatescope.load(path)
    assert model.unused == [] and model.input_projection_name == "proj_in" and model.embedding_name == "emb"


def test_the_list_of_formats_names_every_reader_module_and_its_docstring_each():
    from pathlib import Path

    from gatescope.checkpoints import formats

    helpers = {"__init__", "converted", "onnx_graph", "onnx_zeros"}  # the readers' record, ONNX's nodes and zeros
    readers = {path.stem for path in Path(formats.__file__).parent.glob("*.py")} - helpers
    listed = [module for _, modules, _ in formats.FORMATS for module in modules]
    assert sorted(listed) == sorted(readers)
    assert [m for m in listed if f"`{m}`" not in formats.__doc__] == []
