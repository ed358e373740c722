"""`gatescope findings` with stderr going to a file (CI, a log): one plain line per stage, with its time,
instead of a live display that a file never shows; its --out folder written all or nothing, by one run at a time."""
import json
import re
from pathlib import Path

from gatescope.cli import main
from gatescope.cli.findings import _stages


def test_each_stage_is_one_line_with_its_time_when_stderr_is_not_a_terminal(capsys):
    with _stages(enabled=True) as stage:
        with stage("agreement_lstm: accuracy on the bundled stimuli"):
            sum(range(1000))
        with stage("agreement_lstm: ranking h units"):
            pass
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2
    pattern = r"gatescope findings: agreement_lstm: {}: \d+\.\d s \(CPU \d+\.\d s\)"
    assert re.fullmatch(pattern.format("accuracy on the bundled stimuli"), lines[0])
    assert re.fullmatch(pattern.format("ranking h units"), lines[1])


DOCS_JSON = Path(__file__).resolve().parents[2] / "docs" / "findings.json"


def run(args):
    try:
        main([str(a) for a in args])
    except SystemExit as exc:
        return exc.code or 0
    return 0


def fake_study(monkeypatch, during=None):
    """Stand in for the three-minute study: write one trace under ``out``, call ``during(out)``, return the docs'
    results."""
    from gatescope.findings import study

    def run_findings(out, **kwargs):
        (Path(out) / "agreement_lstm.trace.safetensors").write_bytes(b"a trace")
        if during is not None:
            during(out)
        return json.loads(DOCS_JSON.read_text())

    monkeypatch.setattr(study, "run_findings", run_findings)


def test_a_run_interrupted_after_its_first_trace_leaves_nothing_and_the_rerun_runs(tmp_path, monkeypatch, capsys):
    def interrupt(out):
        raise KeyboardInterrupt

    fake_study(monkeypatch, interrupt)
    assert run(["findings", "--out", tmp_path / "f"]) == 130
    assert list(tmp_path.iterdir()) == []  # no half-written folder, no temporary one
    fake_study(monkeypatch)
    assert run(["findings", "--out", tmp_path / "f"]) == 0
    assert sorted(p.name for p in (tmp_path / "f").iterdir()) == [
        "agreement_lstm.trace.safetensors", "findings.json", "findings.md"]
    assert [p.name for p in tmp_path.iterdir()] == ["f"]


def test_a_second_run_on_the_same_folder_at_once_is_refused_in_one_line(tmp_path, monkeypatch, capsys):
    second = []

    def run_again(out):
        capsys.readouterr()
        second.append((run(["findings", "--out", tmp_path / "f"]), capsys.readouterr().err))

    fake_study(monkeypatch, run_again)
    assert run(["findings", "--out", tmp_path / "f"]) == 0
    code, err = second[0]
    assert code == 1 and len(err.splitlines()) == 1 and "another gatescope command is writing" in err
    assert (tmp_path / "f" / "findings.json").exists()


def test_force_replaces_the_files_it_writes_and_keeps_the_others_once_complete(tmp_path, monkeypatch, capsys):
    out = tmp_path / "f"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    (out / "findings.md").write_text("old")

    def interrupt(out):
        raise KeyboardInterrupt

    fake_study(monkeypatch, interrupt)
    assert run(["findings", "--out", out, "--force"]) == 130
    assert sorted(p.name for p in out.iterdir()) == ["findings.md", "keep.txt"]  # as it was
    fake_study(monkeypatch)
    assert run(["findings", "--out", out, "--force"]) == 0
    assert (out / "keep.txt").read_text() == "mine" and (out / "findings.md").read_text() != "old"
    assert (out / "agreement_lstm.trace.safetensors").exists()
