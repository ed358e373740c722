"""The package as users get it: every subpackage ships, the sample models are inside the wheel,
and the core imports neither Textual, matplotlib nor the analysis layer."""
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_every_subpackage_is_listed_in_pyproject():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {
        ".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "gatescope").rglob("__init__.py")
    } | {"gatescope.sample_models"}
    assert found == listed


def test_core_imports_stay_light():
    code = (
        "import sys, gatescope, gatescope.checkpoint, gatescope.recording, gatescope.trace, gatescope.modules; "
        "heavy = [m for m in ('textual', 'matplotlib', 'gatescope.analysis', 'gatescope.tui', 'captum') if m in sys.modules]; "
        "print(heavy); sys.exit(1 if heavy else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


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
    assert "gatescope/stimuli/agreement_stimuli.tsv" in names
