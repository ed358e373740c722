"""The package as users get it: every subpackage ships, the sample models are inside the wheel,
and the core imports neither Textual, matplotlib nor the analysis layer."""
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[1]


def test_every_subpackage_is_listed_in_pyproject():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {
        ".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "gatescope").rglob("__init__.py")
    } | {"gatescope.sample_models"}
    assert found == listed


def run_python(code: str) -> None:
    """Run ``code`` in a fresh interpreter (so imports start from nothing); it must exit 0."""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_imports_stay_light_in_a_fresh_interpreter():
    """One interpreter, the imports in the order a command makes them (each start of torch costs a second):
    `import gatescope` imports no torch and keeps `gatescope.record` the function; the core imports neither
    Textual, matplotlib, captum nor the analysis layer; loading a checkpoint initialises nothing (the modules
    are built on the meta device and filled from the file; torch's initialisers there would import
    torch._dynamo, seconds of every command's start)."""
    code = """
import sys
import gatescope
assert 'torch' not in sys.modules, 'import gatescope imported torch'
import gatescope.checkpoints.loader, gatescope.recorder.recording, gatescope.traces.trace, gatescope.recorder.rnn
assert callable(gatescope.record), gatescope.record
heavy = [m for m in ('textual', 'matplotlib', 'gatescope.analysis', 'gatescope.tui', 'captum') if m in sys.modules]
assert not heavy, f'the core imported {heavy}'
import torch
from gatescope.checkpoints.loader import load
from gatescope.sample_models import path
model = load(path())
assert 'torch._dynamo' not in sys.modules, 'load imported torch._dynamo'
assert all(p.device.type == 'cpu' and torch.isfinite(p).all() for p in model.parameters())
assert sorted(gatescope.__all__) == sorted(n for n in gatescope.__all__ if getattr(gatescope, n, None))  # last: it imports what the lazy names name
"""
    run_python(code)


def test_reading_a_trace_file_needs_no_torch(tmp_path):
    import torch

    from gatescope import Trace

    Trace({"rnn.l0.fwd.h": torch.zeros(3, 2)}, [0, 3]).save(tmp_path / "t.safetensors")
    code = (
        "import sys; from gatescope.traces.file import read_trace_file; "
        f"f = read_trace_file({str(tmp_path / 't.safetensors')!r}); "
        "assert f.rows('rnn.l0.fwd.h', 0, 3).shape == (3, 2); assert 'torch' not in sys.modules"
    )
    run_python(code)


@pytest.mark.slow  # builds the wheel (1.5 s of CPU)
def test_wheel_carries_sample_models_and_data(tmp_path):
    pytest.importorskip("setuptools", reason="building the wheel needs setuptools")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(ROOT)],
        check=True, capture_output=True,
    )
    (wheel,) = tmp_path.glob("gatescope-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for model in (ROOT / "sample_models").glob("*.safetensors"):
        assert f"gatescope/sample_models/{model.name}" in names
    assert "gatescope/tui/app.tcss" in names
    assert "gatescope/inputs/stimuli/agreement_stimuli.tsv" in names


def test_the_sources_pass_pyflakes():
    """Unused imports and names, undefined names, syntax errors: pyproject.toml's ruff selection, over
    the package, the tests, the benchmarks and the example notebook."""
    pytest.importorskip("ruff", reason="ruff is in the test extra")
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "--output-format", "concise", "."],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
