"""`gatescope findings` with stderr going to a file (CI, a log): one plain line per stage, with its time,
instead of a live display that a file never shows."""
import re

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
