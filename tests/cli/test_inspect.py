"""`gatescope inspect`: the report's figures against numpy / a hand loop, its output modes, bad input."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from tests.checkpoint_fixtures import (
    WORDS,
    gru_reference,
    language_model,
    lstm_reference,
    save,
    word_metadata,
)
from tests.cli_helpers import cli
from safetensors.torch import save_file
from torch import nn

from gatescope.cli import inspect as inspect_cli
from gatescope.cli import main


def inspect_json(capsys, *argv) -> dict:
    main(["inspect", *(str(a) for a in argv), "--json"])
    captured = capsys.readouterr()
    assert captured.err == ""
    return json.loads(captured.out)


def timescale(bias: np.ndarray) -> dict:
    t = 1 / (1 - 1 / (1 + np.exp(-bias)))
    return {"min": t.min(), "median": np.median(t), "max": t.max()}


def test_json_report_of_an_lstm_language_model(tmp_path, capsys):
    reference, path = language_model(tmp_path, num_layers=2)
    report = inspect_json(capsys, path)
    rnn = reference.rnn
    assert report["modules"][0] | {"layers": None, "parameters": None} == {
        "name": "rnn", "cell": "LSTM", "input_size": 6, "hidden_size": 8, "num_layers": 2,
        "bidirectional": False, "proj_size": 0, "bias": True, "layers": None, "parameters": None,
    }
    assert report["embedding"] == {"name": "encoder", "num_embeddings": len(WORDS), "embedding_dim": 6}
    assert report["decoder"] == {"name": "decoder", "in_features": 8, "out_features": len(WORDS), "bias": True}
    assert report["modules"][0]["parameters"] == sum(p.numel() for p in rnn.parameters())
    assert report["parameters"] == sum(p.numel() for p in reference.parameters())
    assert report["trace"] is None and report["saturation"] is None and report["vocab"] is None
    for layer in (0, 1):
        entry = report["modules"][0]["layers"][layer]
        w_ih = getattr(rnn, f"weight_ih_l{layer}").detach().double().numpy()
        w_hh = getattr(rnn, f"weight_hh_l{layer}").detach().double().numpy()
        bias = (getattr(rnn, f"bias_ih_l{layer}") + getattr(rnn, f"bias_hh_l{layer}")).detach().double().numpy()
        assert entry["parameters"] == w_ih.size + w_hh.size + 2 * bias.size
        for g, gate in enumerate("ifgo"):
            rows = slice(8 * g, 8 * (g + 1))
            stats = entry["gates"][gate]
            assert stats["weight_ih_norm"] == pytest.approx(np.linalg.norm(w_ih[rows]))
            assert stats["weight_hh_norm"] == pytest.approx(np.linalg.norm(w_hh[rows]))
            assert stats["bias_mean"] == pytest.approx(bias[rows].mean())
            assert stats["bias_std"] == pytest.approx(bias[rows].std())
            assert (stats["bias_min"], stats["bias_max"]) == pytest.approx((bias[rows].min(), bias[rows].max()))
            assert stats["spectral_radius"] == pytest.approx(np.abs(np.linalg.eigvals(w_hh[rows])).max())
        assert entry["timescale"] == pytest.approx({"gate": "f", **timescale(bias[8:16])})


def test_gru_timescale_comes_from_the_update_gate_and_proj_radius_from_w_hh_w_hr(tmp_path, capsys):
    torch.manual_seed(8)
    gru = nn.GRU(3, 5, bidirectional=True)
    report = inspect_json(capsys, save(tmp_path / "gru.safetensors", {"gru": gru}))
    bwd = report["modules"][0]["layers"][1]
    assert (bwd["layer"], bwd["direction"]) == (0, "bwd")
    bias = (gru.bias_ih_l0_reverse + gru.bias_hh_l0_reverse).detach().double().numpy()
    assert bwd["timescale"] == pytest.approx({"gate": "z", **timescale(bias[5:10])})
    assert list(bwd["gates"]) == ["r", "z", "n"]

    lstm = nn.LSTM(3, 6, proj_size=2, bias=False)
    report = inspect_json(capsys, save(tmp_path / "proj.safetensors", {"": lstm}))
    layer = report["modules"][0]["layers"][0]
    effective = (lstm.weight_hh_l0[6:12] @ lstm.weight_hr_l0).detach().double().numpy()  # f gate: h_{t-1} -> f
    assert layer["gates"]["f"]["spectral_radius"] == pytest.approx(np.abs(np.linalg.eigvals(effective)).max())
    assert layer["timescale"] == pytest.approx({"gate": "f", "min": 2.0, "median": 2.0, "max": 2.0})  # no bias
    assert report["modules"][0]["proj_size"] == 2 and report["modules"][0]["bias"] is False


def test_cells_report_one_layer_with_their_gates(tmp_path, capsys):
    torch.manual_seed(12)
    cell = nn.LSTMCell(3, 4)
    report = inspect_json(capsys, save(tmp_path / "cell.safetensors", {"step": cell}))
    module = report["modules"][0]
    assert (module["name"], module["cell"], module["parameters"]) == ("step", "LSTMCell", 4 * 4 * (3 + 4 + 2))
    [layer] = module["layers"]
    bias = (cell.bias_ih + cell.bias_hh).detach().double().numpy()
    assert list(layer["gates"]) == ["i", "f", "g", "o"]
    assert layer["timescale"] == pytest.approx({"gate": "f", **timescale(bias[4:8])})
    w_hh = cell.weight_hh.detach().double().numpy()
    assert layer["gates"]["o"]["spectral_radius"] == pytest.approx(np.abs(np.linalg.eigvals(w_hh[12:16])).max())


def test_warnings_for_non_finite_weights_and_a_large_spectral_radius(tmp_path, capsys):
    rnn = nn.GRU(2, 4)
    tensors = {k: v.detach().clone() for k, v in rnn.state_dict().items()}
    tensors["weight_hh_l0"][8:12] = torch.eye(4) * 20  # the n gate's recurrence: radius 20
    tensors["bias_ih_l0"][0] = float("nan")
    tensors["weight_ih_l0"][1, 1] = float("inf")
    save_file(tensors, str(tmp_path / "bad.safetensors"))
    report = inspect_json(capsys, tmp_path / "bad.safetensors")
    assert report["warnings"] == [
        "gru l0 fwd: the recurrent matrix of gate n has spectral radius 20.00 (far above 1)",
        "gru.weight_ih_l0 holds 0 NaN and 1 infinite values",
        "gru.bias_ih_l0 holds 1 NaN and 0 infinite values",
    ]
    gates = report["modules"][0]["layers"][0]["gates"]
    assert gates["r"]["bias_mean"] is None and gates["r"]["weight_ih_norm"] is None
    assert gates["z"]["bias_mean"] is not None


def test_the_text_report_of_a_model_whose_gates_are_nan_says_n_a_instead_of_crashing(tmp_path, capsys):
    """NaN biases make every gate NaN over the sample text: its saturation cannot be measured (None in the
    JSON), and the text report, which printed half its tables and then a traceback, shows n/a."""
    from safetensors import safe_open

    from gatescope import sample_models

    source = sample_models.path("agreement_lstm.safetensors")
    with safe_open(str(source), "pt") as f:
        tensors, metadata = {k: f.get_tensor(k) for k in f.keys()}, f.metadata()
    tensors["rnn.bias_ih_l0"][:] = float("nan")
    save_file(tensors, str(tmp_path / "nan.safetensors"), metadata=metadata)
    printed = cli(capsys, "inspect", tmp_path / "nan.safetensors", "--no-tui")
    assert "Gate saturation" in printed.out and "n/a" in printed.out and "Traceback" not in printed.err
    assert "rnn.bias_ih_l0 holds 512 NaN and 0 infinite values" in printed.out + printed.err


def test_saturation_from_the_metadata_sample_text_matches_a_hand_loop(tmp_path, capsys):
    sample = ["the boy near the cars greets", "the boys greet"]
    reference, path = language_model(tmp_path, metadata=word_metadata(sample_text=sample))
    report = inspect_json(capsys, path)
    assert report["trace"] == {"sequences": 2, "tokens": 9}
    assert report["vocab"] == {"size": len(WORDS), "tokenizer": "word"}
    with torch.no_grad():
        gates = [lstm_reference(reference.rnn, reference.encoder(torch.tensor([WORDS.index(w) for w in s.split()])))
                 for s in sample]
    assert list(report["saturation"]) == ["rnn.l0.fwd.i", "rnn.l0.fwd.f", "rnn.l0.fwd.o"]
    for kind in "ifo":
        values = torch.cat([g[kind] for g in gates]).numpy()  # (9, 8)
        left, right = (values < 0.1).mean(0), (values > 0.9).mean(0)
        assert report["saturation"][f"rnn.l0.fwd.{kind}"] == pytest.approx({
            "left": left.mean(), "right": right.mean(), "units": 8,
            "units_mostly_left": int((left > 0.5).sum()), "units_mostly_right": int((right > 0.5).sum()),
        })


def test_default_words_ids_and_float_inputs_are_traced(tmp_path, capsys):
    _, path = language_model(tmp_path, metadata=word_metadata(), cell="GRU")
    report = inspect_json(capsys, path)  # no sample_text: the first words of the vocabulary, no <unk>/<eos>
    assert report["trace"] == {"sequences": 1, "tokens": 8}
    assert list(report["saturation"]) == ["rnn.l0.fwd.r", "rnn.l0.fwd.z"]
    report = inspect_json(capsys, path, "--ids", "2 3", "--text", "the cars")
    assert report["trace"] == {"sequences": 2, "tokens": 4}

    torch.manual_seed(9)
    gru = nn.GRU(3, 4)
    bare = save(tmp_path / "bare.safetensors", {"": gru})
    x = torch.randn(2, 5, 3)
    save_file({"x": x}, str(tmp_path / "x.safetensors"))
    report = inspect_json(capsys, bare, "--input", tmp_path / "x.safetensors")
    with torch.no_grad():
        z = torch.cat([gru_reference(gru.weight_ih_l0, gru.weight_hh_l0, gru.bias_ih_l0, gru.bias_hh_l0, x[s])["z"]
                       for s in range(2)])
    assert report["saturation"]["gru.l0.fwd.z"]["left"] == pytest.approx(float((z < 0.1).float().mean()))


def test_encoder_decoder_report_lists_both_modules(tmp_path, capsys):
    torch.manual_seed(10)
    first, second = nn.LSTM(4, 6), nn.GRU(6, 3)
    report = inspect_json(capsys, save(tmp_path / "ed.safetensors", {"encoder.rnn": first, "decoder.rnn": second}))
    assert [m["name"] for m in report["modules"]] == ["decoder.rnn", "encoder.rnn"]
    assert report["recurrent"] == ["encoder.rnn", "decoder.rnn"] and report["embedding"] is None


def test_default_model_is_the_bundled_sample(capsys, monkeypatch, tmp_path):
    from gatescope import sample_models

    if sample_models.path().is_file():
        report = inspect_json(capsys)
        assert report["file"] == str(sample_models.path())
        assert report["modules"][0]["cell"] == "LSTM" and report["saturation"]
    monkeypatch.setattr(sample_models, "path", lambda name=sample_models.DEFAULT: tmp_path / name)
    with pytest.raises(SystemExit):
        main(["inspect", "--json"])
    err = capsys.readouterr().err
    assert "the bundled default model agreement_lstm.safetensors is not there" in err and err.count("\n") == 1


# -- printed report and the browser --------------------------------------------------------------
@pytest.fixture
def browsed(monkeypatch):
    calls = []
    monkeypatch.setattr(inspect_cli, "open_browser", calls.append)
    return calls


def test_tables_are_printed_and_the_browser_opens_only_on_a_terminal(tmp_path, capsys, monkeypatch, browsed):
    _, path = language_model(tmp_path, metadata=word_metadata(sample_text=["the boy greets"]))
    main(["inspect", str(path)])
    out = capsys.readouterr().out
    for heading in ("Recurrent modules", "Gates", "Gate saturation over 1 sequence, 3 tokens", "rnn.l0.fwd.f"):
        assert heading in out
    assert browsed == []  # stdout is not a terminal here
    monkeypatch.setattr("sys.stdout.isatty", lambda: True)
    main(["inspect", str(path), "--no-tui"])
    main(["inspect", str(path), "--json"])
    assert browsed == []
    main(["inspect", str(path)])
    assert len(browsed) == 1 and browsed[0].num_tokens == 3 and browsed[0].tokens() == ["the", "boy", "greets"]


def test_weights_only_report_does_not_open_the_browser(tmp_path, capsys, monkeypatch, browsed):
    monkeypatch.setattr("sys.stdout.isatty", lambda: True)
    main(["inspect", str(save(tmp_path / "m.safetensors", {"rnn": nn.LSTM(2, 3)}))])
    assert "Gate saturation" not in capsys.readouterr().out
    assert browsed == []


# -- bad input -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("make", "args", "match"),
    [
        (lambda p: p / "none.safetensors", [], "no such file"),
        (lambda p: (p / "junk.st").write_bytes(b"junk" * 10) and p / "junk.st", [], "is not a checkpoint: gatescope reads"),
        (lambda p: save(p / "lin.st", {"fc": nn.Linear(2, 2)}), [], "no recurrent weights"),
        (lambda p: language_model(p)[1], ["--text", "the boy"], "no vocabulary"),
        (lambda p: language_model(p, metadata=word_metadata(unk=None))[1], ["--text", "a dog"],
         "tokens not in the vocabulary (which has no unknown token): 'a', 'dog'"),
        (lambda p: language_model(p)[1], ["--ids", "99"], "token id 99 is outside the vocabulary 0..9"),
        (lambda p: language_model(p, metadata=word_metadata(sample_text="the boy"))[1], [],
         "'sample_text' must be a non-empty list of strings"),
    ],
)
def test_bad_input_is_a_one_line_error(tmp_path, capsys, make, args, match):
    with pytest.raises(SystemExit) as exit_info:
        main(["inspect", str(make(tmp_path)), *args, "--json"])
    captured = capsys.readouterr()
    assert exit_info.value.code == 1 and captured.out == ""
    assert captured.err.startswith("gatescope: error: ") and captured.err.count("\n") == 1
    assert match in captured.err


def test_a_file_that_is_no_checkpoint_says_so_and_what_is_read(tmp_path, capsys):
    from tests.cli_helpers import fails

    readme = tmp_path / "README.md"
    readme.write_text("# gatescope\n\nGate introspection for LSTM and GRU networks.\n")
    line = fails(capsys, "inspect", readme, "--no-tui", match=f"{readme} is not a checkpoint: gatescope reads")
    assert "header claims" not in line and all(s in line for s in (".pt", ".keras", ".onnx", "safetensors"))
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    fails(capsys, "inspect", empty, "--no-tui", match="is not a checkpoint")


def test_the_help_of_commands_taking_a_checkpoint_lists_the_formats_read(capsys):
    from gatescope.checkpoints.formats import READABLE

    for command in ("trace", "inspect", "convert"):
        main([command, "--help"])
        assert " ".join(READABLE.split()) in " ".join(capsys.readouterr().out.split()), command


def test_the_convert_command_names_every_format_read():
    from gatescope.checkpoints.formats import FORMATS
    from gatescope.cli import COMMANDS
    from gatescope.cli import convert

    for text in (COMMANDS["convert"][2], convert.__doc__):
        assert [name for name, _, _ in FORMATS if name not in text] == []


def test_a_report_written_to_a_pipe_is_not_wrapped_mid_sentence(capsys):
    main(["inspect", "--no-tui"])  # capsys: stdout is not a terminal
    out = capsys.readouterr().out
    chain = next(line for line in out.splitlines() if "-> rnn ->" in line)
    assert len(chain) > 80 and chain.endswith("word tokens")  # one line, not cut at 80 columns
    assert any(line.startswith("Gates (bias = b_ih + b_hh; radius =") and line.endswith("matrix)")
               for line in out.splitlines())


def test_a_plain_rnn_has_no_timescale_and_no_gate_to_saturate(capsys):
    """The seed's plain tanh RNN (the bundled agreement_rnn): no forget or update gate, so no timescale
    and no saturation table, and the report still prints."""
    from gatescope import sample_models

    path = sample_models.path("agreement_rnn.safetensors")
    report = inspect_json(capsys, path, "--text", "the boy near the cars greets")
    layer = report["modules"][0]["layers"][0]
    assert report["modules"][0]["cell"] == "RNN" and layer["timescale"] is None and list(layer["gates"]) == ["h"]
    assert report["trace"] == {"sequences": 1, "tokens": 6} and report["saturation"] == {}
    main(["inspect", str(path), "--text", "the boy near the cars greets", "--no-tui"])
    out = capsys.readouterr().out
    assert "rnn l0 fwd  RNN" in out and "Gate saturation" not in out
