"""`gatescope agreement MODEL`: subject-verb agreement accuracy of a language model checkpoint.

Overall, per condition and per distance between subject and verb, on the bundled held-out stimuli or a user's TSV file
(``prefix<TAB>correct verb<TAB>wrong verb<TAB>condition``); ``--ablate`` holds units at zero at
every step (Lakretz et al. 2019's ablation) through `gatescope.record`'s interventions. A model that cannot
score the next word (not one runnable chain, no vocabulary, no decoder over the vocabulary) is refused.
"""
from __future__ import annotations

import json
from pathlib import Path

import click


@click.command("agreement")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--stimuli", "stimuli_path", type=click.Path(dir_okay=False), default=None,
              help="Stimuli TSV: prefix<TAB>correct verb<TAB>wrong verb<TAB>condition, no header "
                   "(default: the bundled held-out stimuli).")
@click.option("--ablate", default=None, metavar="UNIT[,UNIT...]",
              help="Hold these units at zero at every step, e.g. rnn.l0.fwd.h:37,rnn.l0.fwd.h:12.")
@click.option("--batch-size", default=256, show_default=True, type=click.IntRange(min=1),
              help="Items run through the model at once.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")
def agreement(model: str, stimuli_path: str | None, ablate: str | None, batch_size: int, as_json: bool) -> None:
    """Agreement accuracy of MODEL: the fraction of items where the correct verb form is more
    probable than the wrong one after the prefix, overall, per condition, and per distance (tokens
    between the subject and the verb: all items, and those whose attractor has the other number)."""
    import gatescope
    from gatescope.analysis.agreement import ablation_interventions, evaluate_agreement
    from gatescope.cli.trace import load_to_edit
    from gatescope.inputs.stimuli.agreement import bundled_stimuli_path, read_stimuli

    items = read_stimuli(stimuli_path or bundled_stimuli_path())
    lm = load_to_edit(model)
    lm.check_language_model()
    units = [u.strip() for u in (ablate or "").split(",") if u.strip()]
    if ablate is not None and not units:
        raise gatescope.GatescopeError("--ablate needs at least one unit, e.g. rnn.l0.fwd.h:37")
    interventions = ablation_interventions(lm, units) if units else None
    result = evaluate_agreement(lm, items, interventions, batch_size=batch_size)
    if units:
        result["ablated"] = units
    if result["without_distance"]:
        click.echo(f"gatescope: warning: {result['without_distance']} of {result['n']} items have a condition "
                   "gatescope does not know, so no distance between subject and verb: they are left out of "
                   "the per-distance accuracy", err=True)
    if as_json:
        click.echo(json.dumps(result))
    else:
        _print_table(result, model)


def _print_table(result: dict, model: str) -> None:
    from rich.console import Console
    from rich.table import Table

    title = f"Agreement accuracy of {Path(model).name}"
    if "ablated" in result:
        title += f" (ablated: {', '.join(result['ablated'])})"
    table = Table(title=title)
    table.add_column("condition")
    table.add_column("n", justify="right")
    table.add_column("accuracy", justify="right")
    table.add_column("mean logit diff", justify="right")
    for condition, row in result["by_condition"].items():
        table.add_row(condition, str(row["n"]), f"{row['accuracy']:.3f}", f"{row['mean_logit_diff']:+.2f}")
    table.add_section()
    table.add_row("all", str(result["n"]), f"{result['accuracy']:.3f}", f"{result['mean_logit_diff']:+.2f}",
                  style="bold")
    console = Console()
    console.print(table)
    if not result["by_distance"]:
        return
    by_distance = Table(title="By distance (tokens between subject and verb)")
    for column in ("distance", "n", "accuracy", "incongruent n", "incongruent accuracy"):
        by_distance.add_column(column, justify="right")
    for d, row in result["by_distance"].items():
        inc = result["by_distance_incongruent"].get(d)
        by_distance.add_row(str(d), str(row["n"]), f"{row['accuracy']:.3f}", str(inc["n"]) if inc else "-",
                            f"{inc['accuracy']:.3f}" if inc else "-")
    console.print(by_distance)
