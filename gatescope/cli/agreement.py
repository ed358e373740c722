"""`gatescope agreement MODEL`: subject-verb agreement accuracy of a language model checkpoint.

Overall, per condition and per distance between subject and verb, on the bundled held-out stimuli or a user's TSV file
(``prefix<TAB>correct verb<TAB>wrong verb<TAB>condition``); ``--ablate`` holds units at zero at
every step (Lakretz et al. 2019's ablation) through `gatescope.record`'s interventions. A model that cannot
score the next word (not one runnable chain, no vocabulary, no decoder over the vocabulary) is refused.
"""
from __future__ import annotations

from pathlib import Path

import click

from gatescope.cli.params import WholeNumber


@click.command("agreement")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--stimuli", "stimuli_path", type=click.Path(dir_okay=False), default=None,
              help="Stimuli TSV: prefix<TAB>correct verb<TAB>wrong verb<TAB>condition; further columns (for --by) "
                   "need a first line naming every column: prefix, correct, wrong, condition, ... (default: the "
                   "bundled held-out stimuli).")
@click.option("--ablate", default=None, metavar="UNIT[,UNIT...]",
              help="Hold these units at zero at every step, e.g. rnn.l0.fwd.h:37,rnn.l0.fwd.h:12.")
@click.option("--by", "by", multiple=True, metavar="FIELD",
              help="Break accuracy (and, with --ablate, the drop) down by a field, with 95% intervals: condition, "
                   "structure, distance, subject, attractor, preposition, verb, pair (held-out or training subject-"
                   "verb pair), or a column of the stimuli file (repeatable, comma-separated).")
@click.option("--batch-size", default=256, show_default=True, type=WholeNumber(min=1),
              help="Items run through the model at once.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")
def agreement(model: str, stimuli_path: str | None, ablate: str | None, by: tuple[str, ...], batch_size: int,
              as_json: bool) -> None:
    """Agreement accuracy of MODEL: the fraction of items where the correct verb form is more
    probable than the wrong one after the prefix, overall, per condition, and per distance (tokens
    between the subject and the verb: all items, and those whose attractor has the other number), each with its
    Wilson 95% interval. With --ablate, also the drop the ablation costs on the same items, with a paired
    bootstrap 95% interval."""
    import gatescope
    from gatescope.analysis.agreement import ablation_effect, ablation_interventions, evaluate_agreement
    from gatescope.cli.trace import load_language_model
    from gatescope.inputs.stimuli.agreement import bundled_stimuli_path, read_stimuli

    items = read_stimuli(stimuli_path or bundled_stimuli_path())
    lm = load_language_model(model)
    units = [u.strip() for u in (ablate or "").split(",") if u.strip()]
    if ablate is not None and not units:
        raise gatescope.GatescopeError("--ablate needs at least one unit, e.g. rnn.l0.fwd.h:37")
    interventions = ablation_interventions(lm, units) if units else None
    fields = [f for value in by for f in value.replace(",", " ").split()]
    result = evaluate_agreement(lm, items, interventions, batch_size=batch_size, by=fields)
    if units:
        result["ablated"] = units
        result["effect"] = ablation_effect(lm, items, interventions, batch_size=batch_size, by=fields)
    if result["without_distance"]:
        click.echo(f"gatescope: warning: {result['without_distance']} of {result['n']} items have a condition "
                   "gatescope does not know, so no distance between subject and verb: they are left out of "
                   "the per-distance accuracy", err=True)
    if as_json:
        from gatescope.cli.output import print_json

        print_json(result)
    else:
        _print_table(result, model)
        _print_breakdown(result, fields)


def _print_table(result: dict, model: str) -> None:
    from rich.table import Table

    from gatescope.cli import report_console

    title = f"Agreement accuracy of {Path(model).name}"
    if "ablated" in result:
        title += f" (ablated: {', '.join(result['ablated'])})"
    table = Table(title=title)
    table.add_column("condition")
    table.add_column("n", justify="right")
    table.add_column("accuracy", justify="right")
    table.add_column("95% interval", justify="right")
    table.add_column("mean logit diff", justify="right")
    for condition, row in result["by_condition"].items():
        table.add_row(condition, str(row["n"]), f"{row['accuracy']:.3f}", _interval(row["ci95"]),
                      f"{row['mean_logit_diff']:+.2f}")
    table.add_section()
    table.add_row("all", str(result["n"]), f"{result['accuracy']:.3f}", _interval(result["ci95"]),
                  f"{result['mean_logit_diff']:+.2f}", style="bold")
    console = report_console()
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


def _interval(bounds, scale: float = 1.0, digits: int = 3) -> str:
    low, high = bounds
    return f"{low * scale:.{digits}f}..{high * scale:.{digits}f}"


def _print_breakdown(result: dict, fields: list[str]) -> None:
    """One table per --by field: accuracy and its interval per value; with --ablate, the drop in points."""
    from rich.table import Table

    from gatescope.cli import report_console

    console = report_console()
    effect = result.get("effect")
    if effect is not None:
        console.print(f"ablation costs {100 * effect['drop']:.1f} points "
                      f"(95% interval {_interval(effect['drop_ci95'], 100, 1)}; paired bootstrap over "
                      f"{effect['baseline']['n']} items): {effect['baseline']['accuracy']:.3f} -> "
                      f"{effect['ablated']['accuracy']:.3f}")
    for field in fields:
        table = Table(title=f"By {field}")
        columns = ("baseline", "ablated", "drop (points)", "95% interval") if effect else ("accuracy", "95% interval")
        for column in ("value", "n", *columns):
            table.add_column(column, justify="left" if column == "value" else "right")
        for value, row in result["by"][field].items():
            if effect:
                change = effect["by"][field][value]
                cells = [f"{change['baseline']['accuracy']:.3f}", f"{row['accuracy']:.3f}",
                         f"{100 * change['drop']:+.1f}", _interval(change["drop_ci95"], 100, 1)]
            else:
                cells = [f"{row['accuracy']:.3f}", _interval(row["ci95"])]
            table.add_row(value, str(row["n"]), *cells)
        console.print(table)
