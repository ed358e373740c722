"""gatescope.load and Vocabulary: discovery, runnable outputs against the original torch modules,
and a one-line GatescopeError for every bad checkpoint."""
from __future__ import annotations

import json

import pytest
import torch
from tests.checkpoint_fixtures import WORDS, LanguageModel, language_model, save, word_metadata
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file
from torch import nn

from gatescope.checkpoints.loader import load
from gatescope.errors import GatescopeError
from gatescope.vocab import Vocabulary


def info(name, cell, input_size, hidden_size, num_layers=1, bidirectional=False, proj_size=0, bias=True):
    return dict(name=name, cell=cell, input_size=input_size, hidden_size=hidden_size, num_layers=num_layers,
                bidirectional=bidirectional, proj_size=proj_size, bias=bias)


# -- vocabulary --------------------------------------------------------------------------------
def test_word_vocabulary_encodes_lowercased_words_and_maps_unknowns_to_unk():
    vocab = Vocabulary(WORDS, "word", unk="<unk>", eos="<eos>")
    assert vocab.encode("The boy  near\tthe cars") == [2, 3, 7, 2, 9]
    assert vocab.encode("the dog greets", add_eos=True) == [2, 0, 5, 1]
    assert vocab.decode([2, 4, 6]) == ["the", "boys", "greet"]
    assert len(vocab) == len(WORDS)


def test_vocabulary_keeps_case_when_entries_are_mixed_case():
    vocab = Vocabulary(["The", "the"], "word")
    assert vocab.encode("The the") == [0, 1]
    with pytest.raises(GatescopeError, match="'THE'"):
        vocab.encode("THE")


def test_char_vocabulary_and_unknown_tokens_without_unk_are_named():
    vocab = Vocabulary(list("ab c"), "char", eos=" ")
    assert vocab.encode("ab ca", add_eos=True) == [0, 1, 2, 3, 0, 2]
    with pytest.raises(GatescopeError, match=r"'x', 'y'"):
        vocab.encode("axby")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (([],), "empty"),
        ((["a", "b", "a"],), "'a' twice"),
        ((["a"], "bpe"), "unknown tokenizer"),
        ((["a"], "word", "<unk>"), "unk token '<unk>' is not in the vocabulary"),
    ],
)
def test_bad_vocabularies_are_one_line_errors(args, message):
    with pytest.raises(GatescopeError, match=message):
        Vocabulary(*args)


def test_vocabulary_rejects_empty_text_and_ids_outside_it():
    vocab = Vocabulary(WORDS, unk="<unk>")
    with pytest.raises(GatescopeError, match="no tokens"):
        vocab.encode("   ")
    with pytest.raises(GatescopeError, match="outside the vocabulary"):
        vocab.decode([3, 10])
    assert Vocabulary.from_metadata({}) is None
    assert Vocabulary.from_metadata(vocab.to_metadata()).tokens == WORDS


# -- discovery and runnable outputs --------------------------------------------------------------
def test_word_language_model_layout_is_found_and_runs_like_the_original(tmp_path):
    reference, path = language_model(tmp_path, num_layers=2)
    model = load(path)
    assert model.modules_info == [info("rnn", "LSTM", 6, 8, num_layers=2)]
    assert model.embedding_name == "encoder" and model.decoder_name == "decoder"
    assert model.get_submodule("rnn") is model.rnn and isinstance(model.rnn, nn.LSTM)
    assert model.vocab is None and model.metadata == {}
    ids = torch.randint(0, len(WORDS), (3, 7))
    with torch.no_grad():
        torch.testing.assert_close(model(ids), reference(ids), rtol=0, atol=1e-6)
        hidden = reference.rnn(reference.encoder(ids))[0]  # (B, T, H): what a trace reads, without the logits
        torch.testing.assert_close(model(ids, decode=False), hidden, rtol=0, atol=1e-6)


@settings(max_examples=20, deadline=None)
@given(
    cell=st.sampled_from(["LSTM", "GRU"]),
    num_layers=st.integers(1, 3),
    bidirectional=st.booleans(),
    bias=st.booleans(),
    proj=st.sampled_from([0, 0, 3]),
    prefix=st.sampled_from(["", "rnn", "model.encoder.lstm"]),
)
def test_every_layered_configuration_is_inferred_from_shapes(tmp_path_factory, cell, num_layers, bidirectional,
                                                              bias, proj, prefix):
    proj = proj if cell == "LSTM" else 0
    kwargs = dict(num_layers=num_layers, bidirectional=bidirectional, bias=bias, batch_first=True)
    torch.manual_seed(1)
    reference = (nn.LSTM(5, 4, proj_size=proj, **kwargs) if cell == "LSTM" else nn.GRU(5, 4, **kwargs)).eval()
    path = save(tmp_path_factory.mktemp("ckpt") / "m.safetensors", {prefix: reference})
    model = load(path)
    name = prefix or cell.lower()
    assert model.modules_info == [info(name, cell, 5, 4, num_layers, bidirectional, proj, bias)]
    assert model.embedding is None and model.decoder is None
    x = torch.randn(2, 6, 5)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x)[0], rtol=0, atol=1e-6)


def test_lengths_pack_the_batch_so_each_sequence_runs_alone(tmp_path):
    reference, path = language_model(tmp_path, cell="GRU", bidirectional=True)
    model = load(path)
    ids = torch.randint(0, len(WORDS), (3, 6))
    lengths = torch.tensor([4, 6, 2])
    with torch.no_grad():
        out = model(ids, lengths)
        for b, n in enumerate(lengths.tolist()):
            torch.testing.assert_close(out[b, :n], reference(ids[b:b + 1, :n])[0], rtol=0, atol=1e-6)


@pytest.mark.parametrize("cell", ["LSTMCell", "GRUCell"])
@pytest.mark.parametrize("bias", [True, False])
def test_cells_are_stepped_over_time_like_a_hand_loop(tmp_path, cell, bias):
    torch.manual_seed(2)
    reference = getattr(nn, cell)(5, 7, bias=bias)
    model = load(save(tmp_path / "cell.safetensors", {"cell": reference}))
    assert model.modules_info == [info("cell", cell, 5, 7, bias=bias)]
    x = torch.randn(3, 4, 5)
    lengths = torch.tensor([2, 4, 1])
    with torch.no_grad():
        full, packed = model(x), model(x, lengths)
        for b in range(3):
            state, steps = None, []
            for t in range(4):
                state = reference(x[b:b + 1, t], state)
                steps.append(state[0] if isinstance(state, tuple) else state)
            expected = torch.cat(steps)  # (T, H)
            torch.testing.assert_close(full[b], expected, rtol=0, atol=1e-6)
            n = int(lengths[b])
            torch.testing.assert_close(packed[b, :n], expected[:n], rtol=0, atol=1e-6)
            assert not packed[b, n:].any()


def test_bare_cell_state_dict_is_named_after_its_cell(tmp_path):
    model = load(save(tmp_path / "c.safetensors", {"": nn.GRUCell(3, 2)}))
    assert model.modules_info == [info("grucell", "GRUCell", 3, 2)]
    assert isinstance(model.get_submodule("grucell"), nn.GRUCell)


class EncoderDecoder(nn.Module):
    """Two recurrent modules chained: encoder.rnn (LSTM 6->8) feeds decoder.rnn (GRU 8->5)."""

    def __init__(self):
        super().__init__()
        self.embedding = nn.Embedding(len(WORDS), 6)
        self.encoder = nn.Module()
        self.encoder.rnn = nn.LSTM(6, 8, batch_first=True)
        self.decoder = nn.Module()
        self.decoder.rnn = nn.GRU(8, 5, batch_first=True)
        self.decoder.out = nn.Linear(5, len(WORDS))

    def forward(self, ids):
        return self.decoder.out(self.decoder.rnn(self.encoder.rnn(self.embedding(ids))[0])[0])


def test_encoder_decoder_lists_both_modules_and_chains_them_by_size(tmp_path):
    torch.manual_seed(3)
    reference = EncoderDecoder().eval()
    model = load(save(tmp_path / "ed.safetensors", {"": reference}))
    assert model.modules_info == [info("decoder.rnn", "GRU", 8, 5), info("encoder.rnn", "LSTM", 6, 8)]
    assert model.recurrent_names == ["encoder.rnn", "decoder.rnn"]
    assert model.embedding_name == "embedding" and model.decoder_name == "decoder.out"
    assert isinstance(model.get_submodule("decoder.rnn"), nn.GRU)
    assert isinstance(model.decoder, nn.Linear)
    ids = torch.randint(0, len(WORDS), (2, 5))
    with torch.no_grad():
        torch.testing.assert_close(model(ids), reference(ids), rtol=0, atol=1e-6)


def test_recorded_names_carry_the_checkpoint_prefixes(tmp_path):
    import gatescope

    torch.manual_seed(3)
    model = load(save(tmp_path / "ed.safetensors", {"": EncoderDecoder()}))
    with torch.no_grad(), gatescope.record(model, kinds=["h"]) as rec:
        out = model(torch.randint(0, len(WORDS), (2, 5)), torch.tensor([5, 3]))
    assert out.shape == (2, 5, len(WORDS))
    assert sorted(rec.trace.names) == ["decoder.rnn.l0.fwd.h", "encoder.rnn.l0.fwd.h"]
    assert rec.trace.offsets.tolist() == [0, 5, 8]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_weights_load_as_float32_on_the_cpu(tmp_path, dtype):
    torch.manual_seed(4)
    reference = LanguageModel(cell="LSTM").eval()
    path = save(tmp_path / "half.safetensors", {"encoder": reference.encoder, "rnn": reference.rnn,
                                                "decoder": reference.decoder}, dtype=dtype)
    reference.to(dtype).float()  # the reference holds the same rounded weights
    model = load(path)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    ids = torch.randint(0, len(WORDS), (2, 5))
    with torch.no_grad():
        torch.testing.assert_close(model(ids), reference(ids), rtol=0, atol=1e-6)
    assert load(path, dtype=torch.float64).rnn.weight_hh_l0.dtype == torch.float64


def test_metadata_gives_vocabulary_and_roles_override_guesses(tmp_path):
    torch.manual_seed(5)
    table, other, rnn = nn.Embedding(len(WORDS), 4), nn.Embedding(3, 4), nn.GRU(4, 4, batch_first=True)
    head = nn.Linear(4, len(WORDS))
    meta = word_metadata(roles={"embedding": "table.weight", "recurrent": ["rnn"], "decoder": None})
    path = save(tmp_path / "roles.safetensors", {"emb_aux": other, "table": table, "rnn": rnn, "head": head}, meta)
    model = load(path)
    assert model.embedding_name == "table" and model.decoder is None
    assert model.vocab.tokens == WORDS and model.metadata["unk"] == "<unk>"
    ids = torch.tensor([model.encode("the boys near the car greet")])
    with torch.no_grad():
        torch.testing.assert_close(model(ids, decode=False), rnn(table(ids))[0], rtol=0, atol=1e-6)
    # without roles the name "emb" wins, and the Linear with a bias is taken as the decoder
    guessed = load(save(tmp_path / "guess.safetensors", {"emb_aux": other, "rnn": rnn, "head": head}))
    assert guessed.embedding_name == "emb_aux" and guessed.decoder_name == "head"


def test_a_vocabulary_as_wide_as_the_input_without_embedding_means_one_hot_inputs(tmp_path):
    torch.manual_seed(11)
    rnn, head = nn.LSTM(len(WORDS), 5, batch_first=True), nn.Linear(5, len(WORDS))
    model = load(save(tmp_path / "charrnn.safetensors", {"rnn": rnn, "head": head}, word_metadata()))
    assert model.embedding is None and model.takes_ids
    ids = torch.tensor([model.encode("the boys greet"), model.encode("near the car")])
    with torch.no_grad():
        expected = head(rnn(nn.functional.one_hot(ids, len(WORDS)).float())[0])
        torch.testing.assert_close(model(ids), expected, rtol=0, atol=1e-6)
    with pytest.raises(GatescopeError, match=r"token ids must lie in 0\.\.9"):
        model.check_input(torch.tensor([[10]]))


def test_linear_with_bias_is_not_mistaken_for_an_embedding(tmp_path):
    rnn, head = nn.LSTM(4, 4, batch_first=True), nn.Linear(4, 3)
    model = load(save(tmp_path / "m.safetensors", {"rnn": rnn, "head": head}))
    assert model.embedding is None and model.decoder_name == "head"


# -- bad checkpoints -----------------------------------------------------------------------------
def one_line_error(path, match):
    with pytest.raises(GatescopeError, match=match) as info:
        load(path)
    assert "\n" not in str(info.value)


def test_missing_file_and_folder(tmp_path):
    one_line_error(tmp_path / "nope.safetensors", "no such file")
    one_line_error(tmp_path, "is a folder")


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all, just text", b"\x10\x00\x00\x00\x00\x00\x00\x00{"])
def test_not_safetensors(tmp_path, content):
    path = tmp_path / "junk.safetensors"
    path.write_bytes(content)
    one_line_error(path, "not a readable safetensors file")


def test_truncated_file(tmp_path):
    _, path = language_model(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[:-100])
    one_line_error(path, "not a readable safetensors file")
    path.write_bytes(data[:40])
    one_line_error(path, "not a readable safetensors file")


def test_no_recurrent_weights_lists_the_keys_found(tmp_path):
    path = save(tmp_path / "linear.safetensors", {"fc": nn.Linear(3, 2)})
    one_line_error(path, r"no recurrent weights .*found: fc\.bias \[2\], fc\.weight \[2, 3\]")
    save_file({}, str(tmp_path / "empty.safetensors"))
    one_line_error(tmp_path / "empty.safetensors", "found: no tensors")


def tensors_of(module, prefix="rnn"):
    return {f"{prefix}.{k}": v.detach().clone().contiguous() for k, v in module.state_dict().items()}


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda t: t.update({"rnn.weight_hh_l0": torch.zeros(20, 4)}), r"weight_hh_l0 has 20 rows"),
        (lambda t: t.update({"rnn.weight_ih_l1": torch.zeros(16, 3)}), r"rnn\.weight_ih_l1 has shape \[16, 3\]"),
        (lambda t: t.pop("rnn.bias_hh_l1"), r"rnn has no rnn\.bias_hh_l1"),
        (lambda t: t.pop("rnn.weight_ih_l0_reverse"), r"no rnn\.weight_ih_l0_reverse"),
        (lambda t: t.update({"rnn.weight_ih_l3": torch.zeros(16, 8)}), r"rnn has no rnn\.weight_ih_l2"),
        (lambda t: t.update({"rnn.weight_hr_l1": torch.zeros(2, 4)}), r"rnn has unexpected keys rnn\.weight_hr_l1"),
        (lambda t: t.update({"rnn.bias_ih_l0": torch.zeros(16, 1)}), r"bias_ih_l0 has shape \[16, 1\]"),
        (lambda t: t.update({"emb.weight": torch.zeros(9, 5)}) or t.update({"rnn.weight_ih_l0": torch.zeros(16, 5)}),
         r"rnn\.weight_ih_l0_reverse has shape \[16, 3\]; expected \[16, 5\] for LSTM with input 5"),
    ],
)
def test_inconsistent_shapes_name_the_tensor(tmp_path, edit, match):
    tensors = tensors_of(nn.LSTM(3, 4, num_layers=2, bidirectional=True))
    edit(tensors)
    save_file(tensors, str(tmp_path / "bad.safetensors"))
    one_line_error(tmp_path / "bad.safetensors", match)


def test_chain_and_decoder_shape_errors(tmp_path):
    tensors = tensors_of(nn.LSTM(3, 4)) | tensors_of(nn.GRU(6, 2), prefix="second")
    save_file(tensors, str(tmp_path / "chain.safetensors"), metadata={"gatescope": json.dumps(
        {"roles": {"recurrent": ["rnn", "second"]}})})
    one_line_error(tmp_path / "chain.safetensors", r"second takes inputs of size 6, but rnn gives 4")
    save_file(tensors_of(nn.LSTM(3, 4)) | {"out.weight": torch.zeros(5, 7)}, str(tmp_path / "dec.safetensors"),
              metadata={"gatescope": json.dumps({"roles": {"decoder": "out"}})})
    one_line_error(tmp_path / "dec.safetensors", r"decoder out\.weight has shape \[5, 7\]; expected \[vocabulary, 4\]")
    save_file(tensors_of(nn.LSTM(3, 4)) | {"out.weight": torch.zeros(5, 4), "out.bias": torch.zeros(3)},
              str(tmp_path / "bias.safetensors"))
    one_line_error(tmp_path / "bias.safetensors", r"out\.bias has shape \[3\]; expected \[5\]")


@pytest.mark.parametrize(
    ("meta", "match"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "must be a JSON object"),
        (json.dumps({"format": "gatescope.trace"}), "is a gatescope.trace file, not a model"),
        (json.dumps({"version": 99}), "version 99"),
        (json.dumps({"roles": {"recurrent": ["lstm"]}}),
         r"recurrent modules \['lstm'\] not in the file \(found: \['rnn'\]\)"),
        (json.dumps({"roles": {"recurrent": [["rnn"]]}}), r"'roles\.recurrent\[0\]' must be a string"),
        (json.dumps({"roles": {"embedding": "missing.weight"}}), "names 'missing.weight', which is not in the file"),
        (json.dumps({"vocab": ["a", "b"]}), "vocabulary has 2 tokens but the embedding has 10 rows"),
        (json.dumps({"vocab": "abc"}), "must be a list"),
    ],
)
def test_bad_metadata(tmp_path, meta, match):
    torch.manual_seed(0)
    reference = LanguageModel()
    tensors = {f"{p}.{k}": v.detach().clone() for p, m in [("encoder", reference.encoder), ("rnn", reference.rnn),
               ("decoder", reference.decoder)] for k, v in m.state_dict().items()}
    save_file(tensors, str(tmp_path / "m.safetensors"), metadata={"gatescope": meta})
    one_line_error(tmp_path / "m.safetensors", match)


def test_integer_weights_and_bad_devices_are_errors(tmp_path):
    tensors = {k: v.to(torch.int32) if "weight_hh" in k else v for k, v in tensors_of(nn.GRU(2, 2)).items()}
    save_file(tensors, str(tmp_path / "int.safetensors"))
    one_line_error(tmp_path / "int.safetensors", "holds torch.int32 values")
    path = save(tmp_path / "ok.safetensors", {"rnn": nn.GRU(2, 2)})
    with pytest.raises(GatescopeError, match="unknown device 'gpu0'"):
        load(path, device="gpu0")


def test_forward_checks_its_input(tmp_path):
    _, path = language_model(tmp_path)
    model = load(path)
    with pytest.raises(GatescopeError, match=r"token ids must lie in 0\.\.9; got 0\.\.10"):
        model.check_input(torch.tensor([[0, 10]]))
    with pytest.raises(GatescopeError, match="takes token ids"):
        model.check_input(torch.zeros(1, 2, 6))
    with pytest.raises(GatescopeError, match="no vocabulary"):
        model.encode("the boy")
    bare = load(save(tmp_path / "bare.safetensors", {"": nn.LSTM(3, 2)}))
    with pytest.raises(GatescopeError, match=r"float inputs \[batch, time, 3\]; got \[1, 4, 2\]"):
        bare.check_input(torch.zeros(1, 4, 2))
