"""torch state dicts (.pt), fastai's AWD-LSTM, the reset-before GRU, and `gatescope convert`."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from tests.checkpoint_fixtures import WORDS, LanguageModel
from tests.format_fixtures import (
    assert_loads_or_one_line,
    cli_trace,
    convert_round_trip,
    each_truncation,
    fails,
    inspect_json,
    modules,
)
from tests.reference import reference_run
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

import gatescope
from gatescope.cli import main
from gatescope.kinds import GRU_RESET_BEFORE, module_cell_type
from gatescope.recorder.rnn import ResetBeforeGRU

IDS = [2, 3, 5, 7, 4, 9]
TOL = dict(atol=1e-5, rtol=0)


# -- the reset-before GRU ------------------------------------------------------------------------
@pytest.mark.parametrize("route", ["auto", "replay"])
def test_reset_before_gru_records_the_reference_equations(route):
    torch.manual_seed(0)
    gru = ResetBeforeGRU(3, 4, num_layers=2, bidirectional=True)
    x = torch.randn(5, 3)
    expected, out = reference_run(gru, x, path="gru")
    with gatescope.record(gru, route=route) as rec:
        got, _ = gru(x)
    torch.testing.assert_close(got, out, **TOL)
    assert sorted(rec.trace.names) == sorted(expected)
    for name, values in expected.items():
        torch.testing.assert_close(rec.trace[name], values, **TOL, msg=name)
    plain = nn.GRU(3, 4, num_layers=2, bidirectional=True)
    plain.load_state_dict(gru.state_dict())
    assert not torch.allclose(plain(x)[0], out, atol=1e-3)  # the variant is not torch's GRU


def test_the_registry_says_which_gru_a_module_is():
    assert module_cell_type(ResetBeforeGRU(2, 2)) is GRU_RESET_BEFORE
    assert module_cell_type(nn.GRU(2, 2)).reset_after and module_cell_type(gatescope.GRU(2, 2)).reset_after
    assert module_cell_type(nn.LSTMCell(2, 2)).name == "LSTM"


def test_interventions_reach_the_reset_before_gru():
    torch.manual_seed(1)
    gru = ResetBeforeGRU(3, 4)
    x = torch.randn(6, 3)
    name = "gru.l0.fwd.z"
    expected, _ = reference_run(gru, x, path="gru", edit=lambda n, t, v: v * 0 if n == name else v)
    with gatescope.record(gru, interventions=[gatescope.Intervention(name, op="set", value=0.0)]) as rec:
        gru(x)
    torch.testing.assert_close(rec.trace["gru.l0.fwd.h"], expected["gru.l0.fwd.h"], **TOL)


# -- torch state dicts ---------------------------------------------------------------------------
def tied_model() -> LanguageModel:
    torch.manual_seed(0)
    model = LanguageModel(emb=8, hidden=8).eval()
    model.decoder.weight = model.encoder.weight  # Press & Wolf 2017
    return model


def reference_h(model: LanguageModel) -> torch.Tensor:
    with torch.no_grad():
        return reference_run(model.rnn, model.encoder(torch.tensor(IDS)))[0]["rnn.l0.fwd.h"]


@pytest.mark.parametrize("prefix", ["", "module.", "_orig_mod.", "module._orig_mod."])
def test_pt_state_dict_is_read_directly_and_converted(tmp_path, capsys, prefix):
    model = tied_model()
    path = tmp_path / "lm.pt"
    torch.save({prefix + k: v for k, v in model.state_dict().items()}, path)
    ids = " ".join(map(str, IDS))
    trace = cli_trace(tmp_path, path, "--ids", ids)
    torch.testing.assert_close(trace["rnn.l0.fwd.h"], reference_h(model), **TOL)
    out, direct, converted = convert_round_trip(tmp_path, capsys, path)
    assert modules(direct) == modules(converted) == [
        {"name": "rnn", "cell": "LSTM", "input_size": 8, "hidden_size": 8, "num_layers": 1, "bidirectional": False,
         "proj_size": 0, "bias": True}
    ]
    assert direct["embedding"]["name"] == converted["embedding"]["name"] == "encoder"
    assert direct["decoder"]["name"] == converted["decoder"]["name"] == "decoder"
    notes = direct["converted"].pop("notes")
    assert direct["converted"] == {"from": "torch state dict", "file": "lm.pt"}
    assert bool(notes) == bool(prefix) and all(part in " ".join(notes) for part in prefix.split(".") if part)
    main(["inspect", str(path), "--no-tui"])  # the notes are printed, not only in the JSON
    printed = capsys.readouterr().out
    assert "converted from torch state dict (lm.pt)" in printed and all(note in printed for note in notes)
    with safe_open(out, framework="pt") as f:  # the tied weight is stored twice, as torch names it
        torch.testing.assert_close(f.get_tensor("decoder.weight"), f.get_tensor("encoder.weight"))
    torch.testing.assert_close(cli_trace(tmp_path, out, "--ids", ids)["rnn.l0.fwd.h"], reference_h(model), **TOL)


def test_a_lightning_style_checkpoint_is_read_from_its_state_dict_entry(tmp_path, capsys):
    model = tied_model()
    path = tmp_path / "epoch=3.ckpt"
    torch.save({"epoch": 3, "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}}, path)
    assert [m["name"] for m in inspect_json(capsys, path)["modules"]] == ["model.rnn"]


def test_a_whole_pickled_model_is_refused_with_the_two_lines_that_convert_it(tmp_path, capsys):
    path = tmp_path / "model.pt"
    torch.save(tied_model(), path)  # the module itself, as the Gulordava et al. LM is distributed
    err = fails(capsys, "inspect", path, "--json")
    first, *code = err.strip().splitlines()
    assert "holds a pickled tests.checkpoint_fixtures.LanguageModel" in first and "does not unpickle" in first
    assert "weights_only" not in err and "torch.load" not in err  # never advice to unpickle the file
    assert code == [
        "  import safetensors.torch",
        "  safetensors.torch.save_file({k: v.clone().contiguous() for k, v in model.state_dict().items()}, "
        f"{str(path.with_suffix('.safetensors'))!r})",
    ]
    with pytest.raises(gatescope.GatescopeError) as error:  # from Python: the one line, and the fix as code
        gatescope.load(path)
    assert "\n" not in str(error.value) and [f"  {line}" for line in error.value.fix] == code
    namespace = {"model": tied_model()}  # the two lines work where the model is built
    exec("\n".join(line.strip() for line in code), namespace)
    assert modules(inspect_json(capsys, path.with_suffix(".safetensors")))[0]["name"] == "rnn"


def test_a_file_that_is_not_a_torch_checkpoint_is_one_line(tmp_path, capsys):
    path = tmp_path / "lm.pt"
    path.write_bytes(b"not a checkpoint")
    assert "is not a readable torch checkpoint" in fails(capsys, "inspect", path, "--json")
    torch.save([1, 2], path)
    assert "holds a list, not a state dict" in fails(capsys, "inspect", path, "--json")


# -- fastai's AWD-LSTM ---------------------------------------------------------------------------
def test_fastai_awd_lstm_state_dict(tmp_path, capsys):
    awdlstm = pytest.importorskip("fastai.text.models.awdlstm", reason="fastai is not installed (see the README)")
    from fastai.text.models.core import LinearDecoder, SequentialRNN

    torch.manual_seed(0)
    encoder = awdlstm.AWD_LSTM(len(WORDS), 6, 10, 3, pad_token=1)
    model = SequentialRNN(encoder, LinearDecoder(len(WORDS), 6, tie_encoder=encoder.encoder)).eval()
    outputs = {}
    for k, rnn in enumerate(encoder.rnns):
        rnn.register_forward_hook(lambda m, i, out, k=k: outputs.__setitem__(k, out[0].detach()))
    model.reset()
    with torch.no_grad():
        logits = model(torch.tensor([IDS]))[0][0]  # SequentialRNN gives (logits, raw outputs, outputs)
    path = tmp_path / "awd.pth"
    torch.save(model.state_dict(), path)
    report = inspect_json(capsys, path)
    assert [(m["name"], m["input_size"], m["hidden_size"]) for m in report["modules"]] == [
        ("0.rnns.0", 6, 10), ("0.rnns.1", 10, 10), ("0.rnns.2", 10, 6)]
    assert report["recurrent"] == ["0.rnns.0", "0.rnns.1", "0.rnns.2"]
    assert report["embedding"]["name"] == "0.encoder" and report["decoder"]["name"] == "1.decoder"
    trace = cli_trace(tmp_path, path, "--ids", " ".join(map(str, IDS)))
    for k in range(3):
        torch.testing.assert_close(trace[f"0.rnns.{k}.l0.fwd.h"], outputs[k][0], **TOL)
        final_c = encoder.hidden[k][1][0, 0]  # AWD_LSTM keeps each layer's last (h, c)
        torch.testing.assert_close(trace[f"0.rnns.{k}.l0.fwd.c"][-1], final_c, **TOL)
    loaded = gatescope.load(path)
    with torch.no_grad():
        torch.testing.assert_close(loaded(torch.tensor([IDS]))[0], logits, **TOL)
    _, direct, converted = convert_round_trip(tmp_path, capsys, path)
    assert modules(direct) == modules(converted) and converted["recurrent"] == report["recurrent"]


# -- gatescope convert ---------------------------------------------------------------------------
def test_convert_writes_the_vocabulary_tokenizer_and_roles(tmp_path, capsys):
    model = tied_model()
    path = tmp_path / "lm.pt"
    torch.save(model.state_dict(), path)
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(WORDS) + "\n")
    out, _, report = convert_round_trip(
        tmp_path, capsys, path, "--vocab", str(vocab), "--tokenizer", "word", "--roles", "decoder=decoder",
    )
    with safe_open(out, framework="pt") as f:
        meta = json.loads(f.metadata()["gatescope"])
    assert meta | {"converted": None} == {
        "format": "gatescope.model", "version": 1, "vocab": WORDS, "tokenizer": "word", "unk": "<unk>",
        "eos": "<eos>", "roles": {"decoder": "decoder"}, "converted": None,
    }
    assert meta["converted"] == {"from": "torch state dict", "file": "lm.pt", "notes": []}
    assert report["vocab"] == {"size": len(WORDS), "tokenizer": "word"}
    trace = cli_trace(tmp_path, out, "--text", "the boy greets")
    torch.testing.assert_close(trace["rnn.l0.fwd.h"], reference_run(
        model.rnn, model.encoder(torch.tensor([2, 3, 5])).detach())[0]["rnn.l0.fwd.h"], **TOL)


def test_convert_refuses_bad_options_and_writes_nothing(tmp_path, capsys):
    path = tmp_path / "lm.pt"
    torch.save(tied_model().state_dict(), path)
    out = tmp_path / "out.safetensors"
    assert "expected ROLE=NAME" in fails(capsys, "convert", path, "-o", out, "--roles", "encoder=x")
    assert "must be a .safetensors file" in fails(capsys, "convert", path, "-o", tmp_path / "out.pt")
    assert "give --vocab FILE" in fails(capsys, "convert", path, "-o", out, "--tokenizer", "char")
    err = fails(capsys, "convert", path, "-o", out, "--roles", "recurrent=nope")
    assert "would not load" in err and "nope" in err
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("a\nb\n")  # 2 tokens for a 10-row embedding
    assert "2 tokens but the embedding has 10 rows" in fails(capsys, "convert", path, "-o", out, "--vocab", vocab)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lm.pt", "vocab.txt"]


def test_a_damaged_pt_file_is_a_one_line_error(tmp_path):
    path = tmp_path / "lm.pt"
    torch.save(tied_model().state_dict(), path)
    for damaged in each_truncation(path, tmp_path):
        assert_loads_or_one_line(damaged)


def test_convert_adds_metadata_to_a_safetensors_file(tmp_path, capsys):
    model = tied_model()
    bare = tmp_path / "bare.safetensors"
    save_file({k: v.clone().contiguous() for k, v in model.state_dict().items()}, bare)
    vocab = tmp_path / "vocab.json"
    vocab.write_text(json.dumps(WORDS))
    out, direct, converted = convert_round_trip(tmp_path, capsys, bare, "--vocab", str(vocab), "--unk", "car")
    assert modules(direct) == modules(converted) and direct["vocab"] is None
    with safe_open(out, framework="pt") as f:
        meta = json.loads(f.metadata()["gatescope"])
    assert (meta["vocab"], meta["unk"], meta["eos"], meta["tokenizer"]) == (WORDS, "car", "<eos>", "word")
    assert "converted" not in meta  # nothing was converted: the tensors are the file's own


def test_models_loaded_from_one_file_do_not_share_weights(tmp_path):
    path = tmp_path / "lm.pt"
    torch.save(tied_model().state_dict(), path)
    first = gatescope.load(path)
    with torch.no_grad():
        first.get_submodule("rnn").weight_hh_l0.zero_()
    second = gatescope.load(path)  # read once and cached: the cache must not be the first model's weights
    torch.testing.assert_close(second.get_submodule("rnn").weight_hh_l0, tied_model().rnn.weight_hh_l0)


def test_torchs_own_warnings_and_advice_are_not_passed_on(tmp_path):
    import pickle
    import warnings

    path = tmp_path / "arrays.pt"
    with open(path, "wb") as f:
        pickle.dump({"rnn.weight_ih_l0": np.zeros(3)}, f, protocol=4)  # torch warns of the protocol, then refuses
    with warnings.catch_warnings(record=True) as seen, pytest.raises(gatescope.GatescopeError) as error:
        warnings.simplefilter("always")
        gatescope.load(path)
    assert not seen, [str(w.message) for w in seen]
    assert "weights_only=False" not in str(error.value)


def test_convert_reads_a_token_to_id_json_vocabulary_and_says_what_is_wrong_with_one(tmp_path, capsys):
    path = tmp_path / "lm.pt"
    torch.save(tied_model().state_dict(), path)
    out = tmp_path / "out.safetensors"
    vocab = tmp_path / "vocab.json"
    shuffled = dict(sorted({w: i for i, w in enumerate(WORDS)}.items()))  # keys in another order than the ids
    vocab.write_text(json.dumps(shuffled))
    main(["convert", str(path), "-o", str(out), "--vocab", str(vocab)])
    assert gatescope.load(out).vocab.tokens == WORDS
    out.unlink()
    for ids, said in [({"a": 0, "b": 2}, "'b' has id 2, but 2 tokens take ids 0..1 (no token has id 1)"),
                      ({"a": 0, "b": 0}, "'a' and 'b' both have id 0"),
                      ({"a": 0, "b": "1"}, "the id of 'b' is \"1\", not an integer")]:
        vocab.write_text(json.dumps(ids))
        assert said in fails(capsys, "convert", path, "-o", out, "--vocab", vocab)
    assert not out.exists()


def test_convert_warnings_name_the_output_not_its_temporary_file(tmp_path, capsys):
    state = tied_model().state_dict()
    state["extra.weight"] = torch.zeros(3)  # a tensor the loader does not use: a warning
    path = tmp_path / "lm.pt"
    torch.save(state, path)
    out = tmp_path / "ln.safetensors"
    capsys.readouterr()
    main(["convert", str(path), "-o", str(out)])
    err = capsys.readouterr().err
    warning = next(line for line in err.splitlines() if line.startswith("gatescope: warning:"))
    assert f"{out}:" in warning and ".tmp" not in err and "extra.weight" in warning
