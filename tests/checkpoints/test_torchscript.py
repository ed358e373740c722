"""TorchScript archives (torch.jit.save) read as weights only: the parameters equal the module's, nothing runs."""
from __future__ import annotations

import pickle
import zipfile

import pytest
import torch
from tests.checkpoint_fixtures import LanguageModel
from tests.cli_helpers import cli, fails

import gatescope
from gatescope.checkpoints.formats import torchscript
from gatescope.errors import GatescopeError


def scripted(tmp_path, **kwargs):
    torch.manual_seed(0)
    model = LanguageModel(**kwargs).eval()
    path = tmp_path / "model.pt"
    torch.jit.save(torch.jit.script(model), str(path))
    return model, path


@pytest.mark.parametrize("cell", ["LSTM", "GRU"])
def test_a_scripted_language_model_reads_and_runs_as_the_module(tmp_path, capsys, cell):
    model, path = scripted(tmp_path, cell=cell, num_layers=2)
    loaded = gatescope.load(path)
    ids = torch.tensor([[1, 2, 3, 4, 5]])
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids), model(ids), atol=1e-6, rtol=0)
    for key, value in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value, atol=0, rtol=0)
    report = cli(capsys, "inspect", path, "--json", "--no-tui").out
    assert "without running its code; recurrent modules by class: rnn (" + cell + ")" in report


def test_records_keep_the_module_tree_and_skip_what_is_not_a_tensor(tmp_path):
    _, path = scripted(tmp_path)
    root = torchscript.read_records(path)
    tensors, classes = torchscript.state_dict(root)
    assert classes[""] == "LanguageModel" and classes["rnn"] == "LSTM"
    assert "rnn.weight_ih_l0" in tensors and not any("_flat_weights" in k for k in tensors)
    assert isinstance(root.attributes["rnn"].attributes["_flat_weights"], list)  # kept as plain data, not read


def test_an_archive_asking_for_any_other_global_is_refused_and_nothing_runs(tmp_path, capsys):
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            import os

            return os.system, (f"touch {marker}",)

    path = tmp_path / "evil.pt"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("evil/data.pkl", pickle.dumps(Payload(), protocol=2))
        archive.writestr("evil/code/__torch__.py", "")
    with pytest.raises(GatescopeError, match="does not admit"):
        torchscript.read_records(path)
    fails(capsys, "inspect", path, "--json", match="weights-only reader does not admit")
    assert not marker.exists()


def test_a_storage_record_shorter_than_its_tensor_is_refused(tmp_path):
    _, path = scripted(tmp_path)
    damaged = tmp_path / "damaged.pt"
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(damaged, "w") as target:
        for item in source.infolist():
            data = source.read(item.filename)
            target.writestr(item, data[:2] if item.filename.endswith("/data/0") else data)
    with pytest.raises(GatescopeError, match="fewer than its"):
        torchscript.read_records(damaged)
