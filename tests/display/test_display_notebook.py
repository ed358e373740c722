"""The example notebook (examples/finding_units.ipynb) runs from top to bottom, in a kernel of this interpreter,
and shows what it says: the number units ranked, the ablation's effect, the string unit over source text."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat", reason="the notebook test needs the test extra (nbformat, nbclient)")
nbclient = pytest.importorskip("nbclient", reason="the notebook test needs the test extra (nbformat, nbclient)")
pytest.importorskip("ipykernel", reason="the notebook test needs the test extra (ipykernel)")

NOTEBOOK = Path(__file__).resolve().parents[2] / "examples" / "finding_units.ipynb"


def test_notebook_is_committed_without_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert code and all(cell.outputs == [] and cell.execution_count is None for cell in code)


@pytest.mark.slow  # several seconds; CI runs it with the slow tests
def test_example_notebook_runs_and_shows_the_units(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "1"))
    # ipykernel's own kernel spec runs this interpreter (jupyter_client puts sys.executable for its "python");
    # PYTHONPATH makes it import this checkout's gatescope whatever the working folder
    monkeypatch.setenv("PYTHONPATH", str(NOTEBOOK.parents[1]) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=180, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError, with the cell's traceback, if any cell fails
    outputs = [out for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs]
    html = [out["data"]["text/html"] for out in outputs if "text/html" in out.get("data", {})]
    text = "".join(out.get("text", "") for out in outputs)
    assert html[0].startswith('<div class="gatescope-trace">')  # the trace's summary
    assert "rnn.l0.fwd.h:69" in html[1] and "Table: 6 rows" in html[1]  # the number unit ranks first
    assert "rnn.l0.fwd.h:69 (hidden state), coloured by h" in html[2]
    assert "accuracy 1.000 -> 0.160" in text  # the ablation figure, recomputed on the retrained model
    assert "nounpp_SP" in html[4] and "agreement accuracy over 400 items" in html[4]
    assert "rnn.l0.fwd.c:160" in html[5]
    assert "rnn.l0.fwd.c:160 (cell state), coloured by tanh(c)" in html[6]
    assert (tmp_path / "string_unit.svg").read_text(encoding="utf-8").startswith("<?xml")
