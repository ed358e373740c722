"""`gatescope trace`: recorded values against a hand-written gate loop, input order, and bad input."""
from __future__ import annotations

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
from safetensors.torch import save_file
from torch import nn

from gatescope.cli import main
from gatescope.traces.trace import load_trace


def run_cli(*argv):
    main(["trace", *(str(a) for a in argv)])


def fails(capsys, *argv, match):
    with pytest.raises(SystemExit) as exit_info:
        run_cli(*argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 1
    assert err.startswith("gatescope: error: ") and err.count("\n") == 1, err
    assert match in err, err
    return err


SENTENCES = ["the boy greets", "the boys near the cars greet", "", "the car", "the boy near the car greets"]


def test_corpus_is_streamed_in_batches_and_keeps_the_file_order(tmp_path, capsys):
    reference, model = language_model(tmp_path, metadata=word_metadata())
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(SENTENCES) + "\n   \n")
    out = tmp_path / "run.safetensors"
    run_cli(model, "--file", corpus, "--batch-size", 2, "-o", out)
    assert "4 sequences, 17 tokens, 6 quantities" in capsys.readouterr().out
    trace = load_trace(out)
    sentences = [s for s in SENTENCES if s]
    assert trace.offsets.tolist() == [0, 3, 9, 11, 17]
    assert trace.tokens() == " ".join(sentences).split()
    assert trace.meta["vocab"] == WORDS and trace.meta["modules"][0]["name"] == "rnn"
    with torch.no_grad():
        for s, sentence in enumerate(sentences):
            ids = torch.tensor([WORDS.index(w) for w in sentence.split()])
            assert trace.token_ids[trace.sequence(s)].tolist() == ids.tolist()
            expected = lstm_reference(reference.rnn, reference.encoder(ids))
            for kind, values in expected.items():
                torch.testing.assert_close(trace[f"rnn.l0.fwd.{kind}"][trace.sequence(s)], values, rtol=0, atol=1e-5)


def test_ids_texts_modules_kinds_and_storage_dtype(tmp_path, capsys):
    reference, model = language_model(tmp_path, metadata=word_metadata(), cell="GRU", num_layers=2)
    out = tmp_path / "run.safetensors"
    run_cli(model, "--text", "The boy GREETS", "--ids", "2, 4 6", "--ids", "9", "--kinds", "z,h",
            "--modules", "rnn", "--dtype", "bfloat16", "-o", out)
    trace = load_trace(out)
    assert sorted(trace.names) == sorted(f"rnn.l{k}.fwd.{q}" for k in (0, 1) for q in "zh")
    assert trace["rnn.l0.fwd.h"].dtype == torch.bfloat16
    assert trace.token_ids.tolist() == [2, 3, 5, 2, 4, 6, 9]
    rnn = reference.rnn
    with torch.no_grad():
        x = reference.encoder(torch.tensor([2, 4, 6]))
        expected = gru_reference(rnn.weight_ih_l0, rnn.weight_hh_l0, rnn.bias_ih_l0, rnn.bias_hh_l0, x)
    torch.testing.assert_close(trace["rnn.l0.fwd.z"][3:6].float(), expected["z"], rtol=0, atol=1e-2)


def test_float_inputs_on_a_bare_state_dict(tmp_path):
    torch.manual_seed(6)
    rnn = nn.LSTM(3, 4)
    model = save(tmp_path / "bare.safetensors", {"": rnn})
    x = torch.randn(2, 5, 3)
    save_file({"x": x}, str(tmp_path / "x.safetensors"))
    out = tmp_path / "run.safetensors"
    run_cli(model, "--input", tmp_path / "x.safetensors", "-o", out)
    trace = load_trace(out)
    assert trace.token_ids is None and trace.offsets.tolist() == [0, 5, 10]
    with torch.no_grad():
        for s in range(2):
            for kind, values in lstm_reference(rnn, x[s]).items():
                torch.testing.assert_close(trace[f"lstm.l0.fwd.{kind}"][trace.sequence(s)], values, rtol=0, atol=1e-5)
    save_file({"x": x[0]}, str(tmp_path / "one.safetensors"))  # [T, I]: one sequence
    run_cli(model, "--input", tmp_path / "one.safetensors", "-o", out)
    torch.testing.assert_close(load_trace(out)["lstm.l0.fwd.c"], trace["lstm.l0.fwd.c"][:5], rtol=0, atol=1e-6)


def test_a_cell_model_with_uneven_lengths_records_no_padding(tmp_path):
    torch.manual_seed(7)
    emb, cell = nn.Embedding(len(WORDS), 3), nn.GRUCell(3, 4)
    model = save(tmp_path / "cell.safetensors", {"emb": emb, "cell": cell}, word_metadata())
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(SENTENCES))
    out = tmp_path / "run.safetensors"
    run_cli(model, "--file", corpus, "-o", out)
    trace = load_trace(out)
    assert trace.offsets.tolist() == [0, 3, 9, 11, 17]
    with torch.no_grad():
        for s, sentence in enumerate(s for s in SENTENCES if s):
            x = emb(torch.tensor([WORDS.index(w) for w in sentence.split()]))
            expected = gru_reference(cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh, x)
            for kind, values in expected.items():
                torch.testing.assert_close(trace[f"cell.l0.fwd.{kind}"][trace.sequence(s)], values, rtol=0, atol=1e-5)


# -- bad input: one line, exit 1, no output file -------------------------------------------------
@pytest.fixture
def lm(tmp_path):
    return language_model(tmp_path, metadata=word_metadata(unk=None))[1]


def no_output_left(tmp_path):
    return not [p for p in tmp_path.iterdir() if p.name.startswith(("out", ".out"))]


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["--text", "the dog and the cat greet"],
         "tokens not in the vocabulary (which has no unknown token): 'dog', 'and', 'cat'"),
        ([], "empty input: give --text, --file, --ids, --ids-file, --input or --stimuli"),
        (["--text", "  "], "no tokens in the input text"),
        (["--ids", ""], "empty input: --ids '' needs at least one token id"),
        (["--ids", "1 x"], "--ids '1 x': 'x' is not a token id (an integer)"),
        (["--ids", "3 10"], "--ids '3 10': token id 10 is outside the vocabulary 0..9"),
        (["--ids", "3", "--kinds", "q"], "--kinds q: unknown kind(s); rnn (LSTM: i f g o c h)"),
        (["--ids", "3", "--kinds", ""], "--kinds '' names nothing; leave the option out for all"),  # not "all"
        (["--ids", "3", "--modules", " , "], "--modules ' , ' names nothing"),
        (["--ids", "3", "--modules", "lstm"], "--modules lstm: no such recurrent module in the chain; "
                                              "the model has: rnn (LSTM: i f g o c h)"),
        (["--ids", "3", "--device", "gpu0"], "unknown device 'gpu0'"),
        (["--input", "x.safetensors"], "no such file: x.safetensors"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys, lm, args, match):
    fails(capsys, lm, *args, "-o", tmp_path / "out.safetensors", match=match)
    assert no_output_left(tmp_path)


def test_bad_corpus_files(tmp_path, capsys, lm):
    blank = tmp_path / "blank.txt"
    blank.write_text("\n  \n\n")
    fails(capsys, lm, "--file", blank, "-o", tmp_path / "out.st", match="has no non-blank lines")
    bad = tmp_path / "bad.txt"
    bad.write_text("the boy\n\nthe cat greets\n")
    fails(capsys, lm, "--file", bad, "-o", tmp_path / "out.st", match="bad.txt line 3: tokens not in the vocabulary")
    binary = tmp_path / "binary.txt"
    binary.write_bytes(b"\xff\xfe\x00")
    fails(capsys, lm, "--file", binary, "-o", tmp_path / "out.st", match="is not UTF-8 text")
    fails(capsys, lm, "--file", tmp_path / "none.txt", "-o", tmp_path / "out.st", match="no such file")
    assert no_output_left(tmp_path)


def test_bad_model_files_and_output_paths(tmp_path, capsys, lm):
    before = lm.read_bytes()
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"this is not a checkpoint")
    fails(capsys, junk, "--ids", "1", "-o", tmp_path / "out.st", match="not a readable safetensors file")
    fails(capsys, tmp_path / "none.safetensors", "--ids", "1", "-o", tmp_path / "out.st", match="no such file")
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(lm.read_bytes()[:-50])
    fails(capsys, truncated, "--ids", "1", "-o", tmp_path / "out.st", match="not a readable safetensors file")
    fails(capsys, lm, "--ids", "1", "-o", tmp_path / "missing" / "out.st", match="folder")
    fails(capsys, lm, "--ids", "1", "-o", tmp_path, match="it is a folder")
    fails(capsys, lm, "--ids", "1", "-o", lm, match="is the model file; choose another path")
    assert no_output_left(tmp_path) and lm.read_bytes() == before


def test_bad_float_inputs(tmp_path, capsys):
    model = save(tmp_path / "bare.safetensors", {"rnn": nn.GRU(3, 2)})
    out = tmp_path / "out.st"
    save_file({"x": torch.zeros(2, 4, 5)}, str(tmp_path / "wide.safetensors"))
    fails(capsys, model, "--input", tmp_path / "wide.safetensors", "-o", out,
          match="(float32 [2, 4, 5]) has 5 features a step; this model takes 3 (rnn with input size 3)")
    save_file({"x": torch.zeros(2, 4, 3), "y": torch.zeros(1)}, str(tmp_path / "two.safetensors"))
    fails(capsys, model, "--input", tmp_path / "two.safetensors", "-o", out, match="exactly one tensor; it has 2")
    save_file({"x": torch.zeros(2, 4, 3, dtype=torch.int64)}, str(tmp_path / "int.safetensors"))
    fails(capsys, model, "--input", tmp_path / "int.safetensors", "-o", out, match="tensor x is int64 [2, 4, 3]; expected floats")
    fails(capsys, model, "--input", tmp_path / "int.safetensors", "--ids", "1", "-o", out, match="cannot be combined")
    fails(capsys, model, "--ids", "1", "-o", out, match="takes float inputs")
    fails(capsys, model, "--text", "the", "-o", out,  # not "add a vocabulary": no vocabulary would help
          match="this model has no embedding and takes float inputs [time, 3] (--input .safetensors, .npy, .csv or "
                ".tsv), not text or token ids")
    assert not out.exists()


def test_help_documents_the_input_convention():
    from click.testing import CliRunner

    from gatescope.cli import cli

    result = CliRunner().invoke(cli, ["trace", "--help"])
    assert result.exit_code == 0
    assert "[sequences, time, input_size]" in " ".join(result.output.split())


def test_cuda_device_matches_the_cpu_or_is_a_clear_error(tmp_path, capsys, lm):
    cpu, gpu = tmp_path / "cpu.safetensors", tmp_path / "gpu.safetensors"
    if not torch.cuda.is_available():
        fails(capsys, lm, "--ids", "1 2", "--device", "cuda", "-o", gpu, match="CUDA is not available")
        return
    run_cli(lm, "--text", "the boys near the car greet", "--ids", "3 4", "-o", cpu)
    run_cli(lm, "--text", "the boys near the car greet", "--ids", "3 4", "--device", "cuda", "-o", gpu)
    on_cpu, on_gpu = load_trace(cpu), load_trace(gpu)
    assert on_gpu.offsets.tolist() == on_cpu.offsets.tolist()
    for name in on_cpu.names:
        torch.testing.assert_close(on_gpu[name], on_cpu[name], rtol=0, atol=1e-4)


def test_text_for_a_checkpoint_without_a_vocabulary_points_to_convert_vocab(tmp_path, capsys):
    from tests.cli_helpers import fails

    model = nn.Module()
    model.encoder, model.rnn = nn.Embedding(10, 8), nn.LSTM(8, 8, batch_first=True)
    torch.save(model.state_dict(), tmp_path / "lm.pt")
    line = fails(capsys, "trace", tmp_path / "lm.pt", "--text", "the boy", "-o", tmp_path / "run.safetensors",
                 match="gatescope convert MODEL --vocab FILE")
    assert "--ids" in line and not (tmp_path / "run.safetensors").exists()


def test_an_option_of_another_command_is_named_with_the_commands_that_take_it(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["trace", "model.safetensors", "--no-tui", "-o", str(tmp_path / "run.safetensors")])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2  # a usage error: the house's one line, naming the help to read
    assert err == ("gatescope: error: No such option '--no-tui'. It is an option of inspect. "
                   "(see gatescope trace --help)\n")
