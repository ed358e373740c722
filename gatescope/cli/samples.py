"""`gatescope samples train|list|stimuli`: retrain the bundled sample models, list them with their metrics, or
write agreement stimuli drawn from their lexicon.

Training is reproducible (fixed seeds, thread count and data order; see gatescope.samples.train):
retraining writes the same tensors, only the recorded training time differs.
"""
from __future__ import annotations

from pathlib import Path

import click

from gatescope.cli.params import WholeNumber


def _default_dir() -> Path:
    from gatescope import sample_models

    return sample_models.path().parent  # the folder holding the default model


@click.group("samples")
def samples() -> None:
    """Train or list the bundled sample models."""


@samples.command("train")
@click.option("--only", "only", multiple=True, metavar="NAME",
              help="Train only this model (repeatable): agreement_lstm, agreement_gru, agreement_rnn, "
                   "agreement_lstm_peephole, agreement_lstm_coupled, agreement_lstm_2x650 (not bundled: about 25 "
                   "minutes on one core), pysource_lstm.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Folder to write the checkpoints to (default: the bundled sample_models folder).")
def train(only: tuple[str, ...], out_dir: str | None) -> None:
    """Retrain sample models from scratch, reproducibly.

    Seeds, thread count and data order are fixed; the full set took 11 minutes on a 2-core CPU (the char model 10.6),
    plus 4.5 for the plain RNN and the peephole and coupled LSTMs (shared CPU) and about 21 minutes for
    agreement_lstm_2x650 on a free core (39.5 on a shared one)."""
    from rich.console import Console

    from gatescope.progress import task_bars
    from gatescope.samples.train import train_all

    out = Path(out_dir) if out_dir else _default_dir()
    names = [n.strip() for name in only for n in name.split(",") if n.strip()]
    with task_bars() as start:
        paths = train_all(out, names or None, progress=start)
    console = Console(stderr=True)
    for path in paths:
        console.print(f"wrote {path}")


@samples.command("stimuli")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The stimuli TSV to write (its folder is made).")
@click.option("--draw", type=click.Choice(["held-out", "random"]), default="held-out", show_default=True,
              help="held-out: every (subject, verb) lemma pair one the training grammar never joins (the bundled "
                   "stimuli's draw); random: every pair of the lexicon equally likely, training pairs included.")
@click.option("--per-condition", type=WholeNumber(min=1), default=200, show_default=True,
              help="Items per condition (held-out: at most as many distinct items as the pairs allow).")
@click.option("--conditions", default="nounpp_SS,nounpp_SP,nounpp_PS,nounpp_PP", show_default=True,
              help="Comma-separated conditions (e.g. nounpp_SP; `all` for every one).")
@click.option("--seed", type=WholeNumber(min=0), default=0, show_default=True, help="The draw's seed.")
def stimuli(output: Path, draw: str, per_condition: int, conditions: str, seed: int) -> None:
    """Write agreement stimuli (prefix, correct verb, wrong verb, condition) drawn from the sample models' lexicon.

    The bundled stimuli are the held-out draw: their subject and verb are never joined in training, which is
    where the number units are needed (a random draw is about three quarters training pairs; break results
    down with `gatescope agreement --by pair`)."""
    from gatescope.inputs.stimuli.agreement import CONDITIONS, generate_stimuli, random_draw, write_stimuli

    chosen = CONDITIONS if conditions.strip() == "all" else tuple(c.strip() for c in conditions.split(",") if c.strip())
    draw_items = generate_stimuli if draw == "held-out" else random_draw
    items = draw_items(per_condition, seed=seed, conditions=chosen)
    output.parent.mkdir(parents=True, exist_ok=True)
    write_stimuli(items, output)
    click.echo(f"wrote {output}: {len(items)} items ({draw} draw, seed {seed})", err=True)


@samples.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the models' metadata summaries as JSON.")
def list_(as_json: bool) -> None:
    """Show the bundled sample models and their metrics."""
    from gatescope.checkpoints.loader import read_header
    from gatescope.kinds import cell_type_of

    rows = []
    for path in sorted(_default_dir().glob("*.safetensors")):
        _, meta = read_header(path)
        training = meta.get("training", {})
        variant = next(iter(meta.get("cells", {}).values()), None)  # a variant cell: "LSTM (peepholes)"
        rows.append({
            "name": path.stem, "file": str(path), "size_bytes": path.stat().st_size,
            "tokenizer": meta.get("tokenizer"),
            "cell": cell_type_of(variant).describe() if variant else training.get("cell"),
            "hidden_size": training.get("hidden_size"), "num_layers": training.get("num_layers"),
            "train_time_s": training.get("time_s"), "metrics": meta.get("metrics", {}),
        })
    if as_json:
        from gatescope.cli.output import print_json

        print_json(rows)
        return
    from rich.table import Table

    from gatescope.cli import report_console

    table = Table(title="Bundled sample models")
    for column in ("model", "cell", "tokenizer", "size", "train time"):
        table.add_column(column, no_wrap=True)
    table.add_column("metrics")
    for row in rows:
        table.add_row(row["name"], f"{row['cell']} {row['num_layers']}x{row['hidden_size']}", row["tokenizer"],
                      f"{row['size_bytes'] / 1024:.0f} KiB", f"{row['train_time_s']} s", _headline(row["metrics"]))
    report_console().print(table)
    from gatescope.samples.train import SAMPLES

    for name in SAMPLES:  # the ones that are reproduced, not shipped
        if name not in {row["name"] for row in rows}:
            click.echo(f"{name}: not bundled; gatescope samples train --only {name} writes it here")
    from gatescope.inputs.stimuli.agreement import bundled_stimuli_path

    click.echo(f"agreement stimuli: {bundled_stimuli_path()} (200 items per condition, 60 for simple; every "
               "subject-verb lemma pair one the training grammar never joins; gatescope samples stimuli --draw "
               "random writes a draw with training pairs)")


HEADLINE = {  # metric key -> short label
    "agreement_accuracy": "agreement",
    "nounpp_incongruent_accuracy": "NounPP SP/PS",
    "heldout_loss": "held-out loss",
    "heldout_loss_bits_per_char": "held-out bits/char",
}


def _headline(metrics: dict) -> str:
    """The metrics worth a glance: agreement accuracies, or held-out loss."""
    return ", ".join(f"{label} {metrics[key]}" for key, label in HEADLINE.items() if key in metrics)
