"""`gatescope explain MODEL --text ... --unit NAME:INDEX --at STEP`: one unit's step, term by term.

Prints the cell drawn in text with the step's values and each gate's pre-activation split into W x_t, U h_{t-1}
and the bias, with the upstream units that moved it most (gatescope.analysis.explain); ``--json`` prints every
term by name; ``--svg FILE`` also writes the seed's cell diagram with the values.
"""
from __future__ import annotations

from pathlib import Path

import click

from gatescope.cli.output import print_json
from gatescope.cli.params import WholeNumber
from gatescope.cli.trace import input_options, one_input


@click.command("explain")
@click.argument("model", type=click.Path(path_type=Path))
@input_options
@click.option("--unit", required=True, metavar="NAME:INDEX",
              help="The unit, by any of its quantities, e.g. rnn.l0.fwd.c:69 (the cell's unit 69 at every gate).")
@click.option("--at", "at", required=True, type=WholeNumber(min=0), metavar="STEP",
              help="The step to explain: the 0-based position of the token in the sequence.")
@click.option("--top", type=WholeNumber(min=0), default=5, show_default=True,
              help="How many upstream units each term lists.")
@click.option("--json", "as_json", is_flag=True, help="Print every term as JSON instead of the drawing.")
@click.option("--svg", "svg_path", type=click.Path(path_type=Path), metavar="FILE",
              help="Also write the cell diagram with the step's values (.svg or .html; its folder is made).")
@click.option("--device", default="cpu", show_default=True, help="Where to run the model: cpu, cuda, ...")
def explain(model: Path, texts, files, whole, ids, ids_files, input_paths, strict, unit: str, at: int, top: int,
            as_json: bool, svg_path: Path | None, device: str) -> None:
    """Explain one unit at one step of MODEL (a checkpoint gatescope reads: .safetensors, .pt, .keras, .onnx):
    the step's computation with its own numbers, in the order of the cell's equations.

    The input is one sequence: one --text (or --ids, or a --file holding one line). Example:
    gatescope explain sample_models/agreement_lstm.safetensors --text "the boys near the car" --unit
    rnn.l0.fwd.c:69 --at 4
    """
    import torch

    from gatescope.analysis.explain import explain as explain_step
    from gatescope.checkpoints.loader import load
    from gatescope.errors import GatescopeError
    from gatescope.files import check_writable
    from gatescope.inputs import corpus as corpora

    if svg_path is not None and svg_path.parent.is_dir():  # a folder still to be made holds no input
        check_writable(svg_path, [("model", model), ("--input", one_input(input_paths))]
                       + [("--file", f) for f in files] + [("--ids-file", f) for f in ids_files])
    lm = load(model, device=device)
    lm.check_runnable()
    inputs = corpora.gather(lm, texts, ids, files, whole, ids_files, one_input(input_paths), strict)
    if inputs is None or inputs.num_sequences != 1:
        given = "no input" if inputs is None else f"{inputs.num_sequences} sequences"
        raise GatescopeError(f"explain runs one sequence: give one --text (or --ids); got {given}")
    x = inputs.sequence(0)[None].to(next(lm.parameters()).device)  # (1, T) or (1, T, F)
    with torch.no_grad():
        result = explain_step(lm, x, unit, at, top=top)
    if svg_path is not None:
        svg_path.parent.mkdir(parents=True, exist_ok=True)  # the folder it names is made, as a newcomer expects
        result.figure().save(svg_path)
    if as_json:
        print_json(result.to_dict(), indent=2)
    else:
        click.echo(result.render())
