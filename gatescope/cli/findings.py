"""`gatescope findings`: reproduce, on the bundled sample models, every figure of the docs' Findings page.

Runs gatescope.findings.study (about 3 minutes of CPU time), writes its traces, figures, JSON and
Markdown report under one folder (default ./findings; an existing non-empty folder is refused unless
--force) all or nothing: into a temporary folder beside it, moved into place once complete, so an
interrupted run leaves nothing and a second run on the same folder at once is refused (gatescope.folders);
and it can re-render the findings blocks of Markdown files (docs/findings.md) from a JSON document,
so the docs quote exactly one run.
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from gatescope.cli.params import WholeNumber
from gatescope.errors import GatescopeError
from gatescope.progress import Stage, stages
from gatescope.validation.text import read_json

OUTPUTS = ("findings.json", "findings.md")


def _check_out(out: Path, force: bool) -> None:
    """Refuse a file, or a folder that holds anything, unless ``force``."""
    if out.exists() and not out.is_dir():
        raise GatescopeError(f"--out {out} is a file, not a folder")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise GatescopeError(f"--out {out} exists and is not empty: choose a new folder, or --force to "
                             "overwrite the files findings writes there")


def _publish(tmp: Path, out: Path, force: bool) -> None:
    """Move the complete results into place: the folder itself when ``out`` is new or empty, else (--force) file
    by file over the files there."""
    from gatescope.folders import publish

    if not (out.is_dir() and any(out.iterdir())):
        publish(tmp, out)
    elif not force:
        raise GatescopeError(f"--out {out} was written by another command while this one ran; these results are "
                             "not kept (run again with a new folder)")
    else:
        for path in tmp.iterdir():
            os.replace(path, out / path.name)


def _release_freed_memory(first: bool = False) -> None:
    """Hand freed memory back to the system (glibc only; elsewhere nothing happens).

    glibc raises its mmap threshold after the first large block is freed, so later large temporaries
    (a recording's per-chunk gates, a ranking's column blocks) stay in its heap, fragmented, and the
    process keeps the peak of every stage at once; a fixed 1 MiB threshold and a trim after each stage
    keep it at the peak of one stage."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        if libc is not None and first:
            libc.mallopt(-3, 1 << 20)  # M_MMAP_THRESHOLD
        if libc is not None:
            libc.malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


@contextlib.contextmanager
def _stages(enabled: bool) -> Iterator[Stage]:
    """The study's stages shown on stderr, one line each (gatescope.progress.stages), freed memory handed back
    after each."""
    _release_freed_memory(first=True)
    with stages("gatescope findings", enabled) as shown:

        @contextlib.contextmanager
        def stage(description: str) -> Iterator[None]:
            with shown(description):
                yield
            _release_freed_memory()

        yield stage


def _document(results: dict[str, Any]) -> str:
    """The text of a findings JSON document, findings.json and --json alike: strict JSON, one space an indent."""
    from gatescope.analysis.table import json_text

    return json_text(results, indent=1) + "\n"


def _read_results(path: Path) -> dict[str, Any]:
    results = read_json(path, "findings JSON document", 64 << 20, "a findings JSON document")  # the door
    if not isinstance(results, dict) or not ({"agreement", "code"} & results.keys()):
        raise GatescopeError(f"{path}: not a findings JSON document (no 'agreement' or 'code' entry)")
    return results


@click.command("findings")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=Path("findings"), show_default=True,
              help="Folder for the traces, figures, findings.json and findings.md (created; must be new or empty).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the figures as JSON to this file.")
@click.option("--force", is_flag=True, help="Write into a non-empty --out folder, replacing the files it writes.")
@click.option("--draws", type=WholeNumber(2, 1000), default=20, show_default=True,
              help="Random unit sets per set size, the baseline every ablation is compared with.")
@click.option("--only", type=click.Choice(["agreement", "code"]), help="Run one part only.")
@click.option("--no-traces", is_flag=True, help="Do not keep the traces (about 230 MB).")
@click.option("--update", "update", multiple=True, type=click.Path(dir_okay=False, exists=True, path_type=Path),
              metavar="FILE.md", help="Rewrite the findings blocks of this Markdown file from the results "
              "(repeatable).")
@click.option("--from-json", "from_json", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="Do not run anything: render (and --update) from this findings JSON.")
@click.option("--model", "large_model", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="The 2x650 agreement LSTM to look for sparse number units in (default: "
                   "sample_models/agreement_lstm_2x650.safetensors, skipped in one line when it is not there).")
@click.option("--traces", "legacy_traces", type=click.Path(path_type=Path), hidden=True)
@click.option("--figures", "legacy_figures", type=click.Path(path_type=Path), hidden=True)
def findings(out_dir: Path, json_path: Path | None, force: bool, draws: int, only: str | None, no_traces: bool,
             update: tuple[Path, ...], from_json: Path | None, large_model: Path | None,
             legacy_traces: Path | None, legacy_figures: Path | None) -> None:
    """Reproduce the docs' findings on the bundled sample models.

    \b
    - Number units in the agreement LSTM and GRU: which hidden units track whether the subject is
      singular or plural, what holding the top 1-4 at zero does to agreement across an attractor
      ("the boy near the cars greets") compared with random units, patching, probes with their
      control task, and the gate profile of the strongest unit.
    - Whether those units still matter on new sentences: rank on items from one half of the
      vocabulary, ablate on items from the other half (no shared noun, verb or preposition),
      for sets of 1 to 8 units.
    - Sparse number units in a Lakretz-sized LSTM (2 layers of 650 units, agreement_lstm_2x650, when
      it has been trained or is given with --model): how many units carry number in each layer,
      what ablating each one alone does, sets of them, and the gate profile of the strongest.
    - The units of the Python character model: which cells track "inside a string literal", "inside
      a comment", bracket depth and indentation, chosen on training files and scored on each
      standard-library file the model never saw, and its bits per character on those files.

    Takes about 3 minutes of CPU time (measured: 110 s user + 71 s system, one torch thread, without
    the 2x650 model; half of it scoring the char model's units on held-out files) and under 1 GB of
    memory (695 MB peak); the wall time is that or less on an idle two-core machine, much longer on a busy
    one. On a terminal a live display shows the stages; otherwise each stage is one line on stderr with
    its wall and CPU time. Writes the traces (ready for `gatescope analyze` and `gatescope browse`),
    figures, findings.json and findings.md under --out, all at once when the run completes (an
    interrupted run leaves nothing; a second run on the same --out at once is refused), and prints the report.
    """
    from gatescope.analysis.table import jsonable
    from gatescope.files import atomic_write, check_writable
    from gatescope.findings import report as findings_report
    from gatescope.folders import temporary_folder

    for legacy in (legacy_traces, legacy_figures):  # the options of the first findings script
        if legacy is not None:
            if out_dir != Path("findings") and legacy != out_dir:
                raise GatescopeError("--traces/--figures name the output folder: give --out only")
            out_dir = legacy
    if update and only is not None and from_json is None:
        raise GatescopeError("--update needs every finding: drop --only (the blocks of the other part would be lost)")
    if json_path is not None:
        # before minutes of work, not after
        check_writable(json_path, [("--from-json", from_json), ("--model", large_model)]
                       + [("--update", u) for u in update])
    if from_json is not None:
        results = _read_results(from_json)
    else:
        from gatescope.findings.study import run_findings

        _check_out(out_dir, force)
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        with temporary_folder(out_dir, exclusive=True) as tmp:  # all or nothing; a second run at once is refused
            with _stages(enabled=True) as stage:
                results = run_findings(tmp, draws=draws, only=only, stage=stage, save_traces=not no_traces,
                                       large_model=large_model,
                                       say=lambda line: click.echo(f"gatescope: warning: {line}", err=True))
            results = jsonable(results)  # the report reads null where findings.json has it, not NaN
            (tmp / "findings.json").write_text(_document(results))
            (tmp / "findings.md").write_text(findings_report.report(results))
            _publish(tmp, out_dir, force)
    if json_path is not None:
        text = _document(results)
        atomic_write(json_path, lambda tmp: Path(tmp).write_text(text))
    for path in update:
        names = findings_report.update_markdown(path, results)
        click.echo(f"updated {path}: {', '.join(names)}", err=True)
    click.echo(findings_report.report(results), nl=False)
