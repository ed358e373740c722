"""`gatescope analyze`: find the units that track a feature, and test them causally.

Subcommands: ``units`` (rank units against a label), ``probe`` (diagnostic classifiers per
layer and kind), ``saturation`` (gate saturation and timescales), ``ablate`` (ablation sweeps
and sets against random baselines), ``match`` (LSTMVis select-and-match), ``profile`` (a unit's
gates along sentences, as a figure), ``attribute`` (integrated gradients to tokens and units), ``decompose``
(each token's share of a logit difference: Shapley, GCD, CD).
The work is done by gatescope.analysis; this module parses options and prints: rich tables on
stdout, or with ``--json`` JSON alone on stdout. A TRACE is a trace file or a sharded trace's folder;
``units``, ``saturation`` and ``probe`` with ``--file CORPUS`` take a MODEL instead and stream it over
the corpus in one pass (gatescope.runs.stream), under torchrun on several processes.
"""
from __future__ import annotations

from typing import Any

import click

from gatescope.cli.output import print_json, print_table
from gatescope.cli.params import DecimalNumber, WholeNumber
from gatescope.errors import GatescopeError, shown
from gatescope.runs import CHUNK_STEPS

TRACE = click.Path()  # a trace file, or a sharded trace's folder
COUNT = WholeNumber(min=0)  # --top, --draws, --permutations: a negative count is a usage error
POSITIVE = WholeNumber(min=1)


def _labels_options(f):
    f = click.option("--labels", "labels_file", type=click.Path(dir_okay=False),
                     help="Labels file: .npy, or text with one value a line, one per token of the trace "
                          "(of the corpus, with --file).")(f)
    f = click.option("--feature", help="A per-token feature stored in the trace (e.g. subject_number); with "
                                       "--file, the feature of --feature-from or --code-features to label by.")(f)
    return f


def _stream_label_options(f):
    """The label sources of the streaming mode besides --labels (one of the three, with --file)."""
    f = click.option("--code-features", is_flag=True,
                     help="With --file: label by a Python source feature of each line (char models; --feature "
                          "in_string, in_comment, bracket_depth or indent_level).")(f)
    f = click.option("--feature-from", metavar="ITEMS.tsv", type=click.Path(dir_okay=False),
                     help="With --file: label by a feature of agreement stimuli (--feature subject_number, "
                          "in_attractor or is_verb); corpus line k must be item k's prefix and correct verb.")(f)
    return f


def _stream_labels(feature, labels_file, feature_from, code_features):
    from gatescope.runs.stream import LabelOptions

    return LabelOptions(labels_file, feature_from, code_features, feature)


def _corpus_options(f):
    """--file and the run options of the streaming mode: the argument is then a MODEL, run over the corpus."""
    f = click.option("--distributed", is_flag=True,
                     help="With --file: split the corpus over torchrun's processes (implied under torchrun).")(f)
    f = click.option("--device", default="cpu", show_default=True, help="With --file: where to run the model.")(f)
    f = click.option("--chunk-steps", type=WholeNumber(min=0), default=CHUNK_STEPS, show_default=True,
                     help="With --file: a longer line runs this many steps at a time, its state carried "
                          "(0: whole).")(f)
    f = click.option("--batch-size", type=POSITIVE, default=64, show_default=True,
                     help="With --file: sequences run together.")(f)
    f = click.option("--file", "corpus", metavar="CORPUS",
                     help="Stream MODEL over this corpus (one sequence a line) and compute in one pass, "
                          "without writing a trace; the argument is then a model.")(f)
    return f


def _run_options(batch_size: int, chunk_steps: int, as_json: bool):
    from gatescope.runs.trace import RunOptions

    return RunOptions(batch_size, progress=not as_json, chunk_steps=chunk_steps)


def _check_mode(ctx: click.Context, corpus: str | None, file_only: tuple[str, ...] = (), **not_streamed: str) -> None:
    """Options a streamed pass cannot honour (``not_streamed``: name -> why), or that only it takes
    (``file_only`` and the run options), given in the other mode: one-line errors, never ignored."""
    from click.core import ParameterSource

    def given(name: str) -> bool:
        return ctx.get_parameter_source(name) not in (ParameterSource.DEFAULT, None)

    for name, why in not_streamed.items():
        if corpus is not None and given(name):
            raise GatescopeError(f"--{name.replace('_', '-')} {why}")
    for name in (*file_only, "batch_size", "chunk_steps", "device", "distributed"):
        if corpus is None and given(name):
            raise GatescopeError(f"--{name.replace('_', '-')} applies with --file (streaming a model over a corpus)")


def _kinds_option(default: str | None, help_: str):
    return click.option("--kinds", default=default, show_default=default is not None, help=help_)


def _labels(feature: str | None, labels_file: str | None) -> dict[str, Any]:
    if (feature is None) == (labels_file is None):
        raise GatescopeError("give exactly one of --feature NAME or --labels FILE")
    return {"feature": feature} if feature is not None else {"labels": labels_file}


def _numbers(text: str, option: str, what: str) -> list[int]:
    """A comma-separated list of integers; anything else is a one-line error naming the option."""
    from gatescope.numbers import whole_numbers

    numbers = whole_numbers(text)
    if numbers is None:
        raise GatescopeError(f"{option} takes {what}; got {shown(text)}")
    return numbers


def _token_id(vocab, word: str) -> int:
    """The id of ``word`` as the model's tokenizer reads it (lower-cased where the vocabulary is)."""
    tokens = vocab.split(word)
    if len(tokens) != 1:
        raise GatescopeError(f"{word!r} is {len(tokens)} tokens for this model; give one")
    if tokens[0] not in vocab.index:
        raise GatescopeError(f"{word!r} is not in the model's vocabulary")
    return vocab.index[tokens[0]]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def analyze() -> None:
    """Find and test the units that track a feature."""


@analyze.command(short_help="Rank units by association with a per-token label.")
@click.argument("trace", type=TRACE)
@_labels_options
@_kinds_option(None, "Comma-separated kinds to rank (h,c,i,f,g,o / r,z,n); default all recorded.")
@click.option("--metric", type=click.Choice(["auto", "corr", "auc", "mi", "probe"]), default="auto", show_default=True,
              help="Ranking metric; auto = auc (binary labels), mi (categorical), corr (continuous).")
@click.option("--top", type=COUNT, default=20, show_default=True, help="Units to report (0 = all).")
@click.option("--permutations", type=COUNT, default=1000, show_default=True, help="Label shuffles for p-values.")
@click.option("--seed", type=WholeNumber(), default=0, show_default=True, help="Random seed (shuffles, splits, draws).")
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False), help="Also write the full ranking as CSV.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list, best first.")
@click.option("--grid-bins", type=WholeNumber(min=2), default=2048, show_default=True,
              help="With --file: histogram bins per unit over its kind's range (AUC and MI; see auc_bound).")
@_stream_label_options
@_corpus_options
@click.pass_context
def units(ctx, trace, feature, labels_file, kinds, metric, top, permutations, seed, csv_path, as_json, grid_bins,
          feature_from, code_features, corpus, batch_size, chunk_steps, device, distributed):
    """Rank every unit of TRACE by its association with a per-token label.

    \b
    With --file, TRACE is a model, streamed over the corpus in one pass (no trace written), labelled
    by exactly one of:
      --labels FILE                     one value a token of the corpus, in order
      --feature-from ITEMS.tsv --feature NAME
                                        agreement stimuli: line k = item k's prefix + correct verb
      --code-features --feature NAME    Python source features of each line (char models)
    e.g. gatescope analyze units model.safetensors --file corpus.txt --labels labels.txt
    """
    from gatescope.analysis.ranking import rank_units
    from gatescope.files import check_writable
    from gatescope.traces.trace import load_trace

    _check_mode(ctx, corpus, ("grid_bins", "feature_from", "code_features"),
                permutations="needs the whole trace at once; a streamed ranking has no p-values",
                seed="applies to the permutations, which a streamed ranking does not draw")
    if csv_path:  # before the work, not after
        check_writable(csv_path, [("TRACE" if corpus is None else "MODEL", trace), ("--labels", labels_file),
                                  ("--feature-from", feature_from), ("--file", corpus)])
    if corpus is not None:
        from gatescope.runs.stream import stream_units

        table = stream_units(trace, corpus, _stream_labels(feature, labels_file, feature_from, code_features),
                             kinds=kinds, metric=metric, grid_bins=grid_bins,
                             run=_run_options(batch_size, chunk_steps, as_json), device=device, distributed=distributed)
        if table is None:  # another process of a torchrun: rank 0 reports
            return
        click.echo(f"streamed {table[0]['n']} labelled tokens in one pass: no permutation p-values; "
                   f"each AUC is within its auc_bound of the exact one", err=True)
    else:
        table = rank_units(load_trace(trace), kinds=kinds, metric=metric, permutations=permutations, seed=seed,
                           progress=not as_json, **_labels(feature, labels_file))
    if csv_path:
        table.to_csv(csv_path)
    shown = table if top == 0 else table.head(top)
    if as_json:
        print_json(shown.to_records())
        return
    value_cols = [c for c in ("corr", "eta2", "auc", "auc_bound") if c in table.columns]
    extra = [c for c in ("probe", "p_value", "p_fwer") if c in table.columns]
    print_table(shown.rows, ["unit", "score", *value_cols, "mi", *extra],
          f"units by {table[0]['metric']} ({table[0]['n']} labelled tokens)")


@analyze.command(short_help="Linear probes per layer and kind; top-k curves.")
@click.argument("trace", type=TRACE)
@_labels_options
@_kinds_option(None, "Comma-separated kinds to probe; default all recorded.")
@click.option("--epochs", type=POSITIVE, default=10, show_default=True)
@click.option("--l1", type=DecimalNumber(), default=1e-3, show_default=True, help="L1 penalty (elastic net with --l2).")
@click.option("--l2", type=DecimalNumber(), default=1e-4, show_default=True)
@click.option("--control/--no-control", default=True, show_default=True,
              help="Train on a control task (random label per token type) and report selectivity.")
@click.option("--seed", type=WholeNumber(), default=0, show_default=True, help="Random seed (shuffles, splits, draws).")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list, one entry per layer and kind.")
@_stream_label_options
@_corpus_options
@click.pass_context
def probe(ctx, trace, feature, labels_file, kinds, epochs, l1, l2, control, seed, as_json, feature_from,
          code_features, corpus, batch_size, chunk_steps, device, distributed):
    """Train a linear probe per layer and kind of TRACE; rank units by weight; top-k curves.

    With --file, TRACE is a model, streamed over the corpus (epochs + 2 passes, no trace written),
    labelled as for `analyze units --file` (--labels, --feature-from or --code-features); the probe
    on the control task trains in the same passes; the top-k curve is not computed.
    """
    from gatescope.analysis.probes import probe_units
    from gatescope.traces.trace import load_trace

    _check_mode(ctx, corpus, ("feature_from", "code_features"))
    if corpus is not None:
        from gatescope.runs.stream import stream_probes

        table = stream_probes(trace, corpus, _stream_labels(feature, labels_file, feature_from, code_features),
                              kinds=kinds, epochs=epochs, l1=l1, l2=l2, seed=seed, control=control,
                              run=_run_options(batch_size, chunk_steps, as_json), device=device, distributed=distributed)
        click.echo("streamed probes: no top-k curve", err=True)
        if as_json:
            print_json(table.to_records())
            return
        print_table(table.rows, ["name", "baseline", "score", "control", "selectivity", "n_train", "n_test"],
              "probes (held-out accuracy, or R² for continuous labels)")
        for r in table.rows:
            click.echo(f"{r['name']}: top units {', '.join(r['top_units'][:3])}")
        return
    table = probe_units(load_trace(trace), kinds=kinds, epochs=epochs, l1=l1, l2=l2, control=control, seed=seed,
                        progress=not as_json, **_labels(feature, labels_file))
    if as_json:
        print_json(table.to_records())
        return
    rows = [r | {"curve": " ".join(f"{k}:{v:.2f}" for k, v in r["curve"].items()), "top_units": r["top_units"][:3]}
            for r in table.rows]
    print_table(rows, ["name", "baseline", "score", "control", "selectivity", "k95"],
          "probes (held-out accuracy, or R² for continuous labels)")
    for r in rows:
        click.echo(f"{r['name']}: top-k curve {r['curve']}; top units {', '.join(r['top_units'])}")


@analyze.command(short_help="Gate saturation per unit and forget-gate timescales.")
@click.argument("trace", type=TRACE)
@_kinds_option(None, "Comma-separated kinds; default the sigmoid gates (i,f,o / r,z).")
@click.option("--low", type=DecimalNumber(), default=0.1, show_default=True, help="Left-saturated below this.")
@click.option("--high", type=DecimalNumber(), default=0.9, show_default=True, help="Right-saturated above this.")
@click.option("--top", type=COUNT, default=20, show_default=True, help="Most saturated units to list (0 = all).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON: per-unit rows and forget-gate timescales.")
@_corpus_options
@click.pass_context
def saturation(ctx, trace, kinds, low, high, top, as_json, corpus, batch_size, chunk_steps, device, distributed):
    """Gate saturation per unit (fraction of steps < LOW and > HIGH) and forget-gate timescales.

    With --file, TRACE is a model, streamed over the corpus in one pass (no trace written).
    """
    from gatescope.analysis.dynamics import (
        TIMESCALE_KINDS,
        saturation_summary,
        timescales,
    )
    from gatescope.analysis.dynamics import saturation as saturation_table
    from gatescope.names import parse_name
    from gatescope.traces.trace import load_trace

    _check_mode(ctx, corpus)
    if corpus is not None:
        from gatescope.runs.stream import stream_saturation

        result = stream_saturation(trace, corpus, kinds=kinds, low=low, high=high,
                                   run=_run_options(batch_size, chunk_steps, as_json), device=device, distributed=distributed)
        if result is None:  # another process of a torchrun: rank 0 reports
            return
        table, scales = result
    else:
        tr = load_trace(trace)
        table = saturation_table(tr, kinds=kinds, low=low, high=high)
        has_timescales = any(parse_name(n).kind in TIMESCALE_KINDS for n in tr.names)
        scales = timescales(tr) if has_timescales else None
    rows = sorted(table.rows, key=lambda r: -(r["left"] + r["right"]))
    rows = rows if top == 0 else rows[:top]
    if as_json:
        print_json({"saturation": rows, "timescales": scales.to_records() if scales is not None else []})
        return
    summary = saturation_summary(table, "name")
    print_table(summary.rows, summary.columns, f"mean saturation (< {low}, > {high})")
    print_table(rows, ["unit", "left", "right", "mean"], "most saturated units")
    if scales is not None:
        longest = sorted(scales.rows, key=lambda r: -r["timescale"])[: top or None]
        print_table(longest, ["unit", "mean", "timescale"], "longest timescales 1/(1 - mean gate), in steps")


@analyze.command(short_help="Ablate units; agreement accuracy vs random sets.")
@click.argument("model_path", metavar="MODEL", type=click.Path(dir_okay=False))
@click.option("--stimuli", type=click.Path(dir_okay=False),
              help="Agreement stimuli TSV (default: 200 items per condition drawn at random from the sample models' "
                   "lexicon with --seed, every subject-verb pair equally likely; the bundled stimuli hold out every "
                   "pair from training, where number units matter most: see `gatescope agreement --by pair`).")
@click.option("--conditions", default="nounpp_SP,nounpp_PS", show_default=True,
              help="Conditions whose accuracy is the metric ('all' for every item).")
@click.option("--units", "unit_list", help="Comma-separated units to test as a set, e.g. rnn.l0.fwd.h:3,rnn.l0.fwd.h:9")
@click.option("--top-from", "top_from", type=TRACE, help="Test the top --k units of a ranking over this trace.")
@click.option("--feature", help="The trace feature to rank by (with --top-from).")
@_kinds_option("h", "Kinds to rank (--top-from) or sweep.")
@click.option("--k", type=POSITIVE, default=4, show_default=True, help="Set size for --top-from and --greedy.")
@click.option("--value", default="zero", show_default=True,
              help="Hold units at: zero, mean (means over the --top-from trace) or a number.")
@click.option("--draws", type=COUNT, default=20, show_default=True, help="Random sets for the baseline.")
@click.option("--sweep/--no-sweep", default=True, show_default=True, help="Also ablate units one at a time.")
@click.option("--greedy", is_flag=True, help="Also grow the most harmful set of --k units greedily.")
@click.option("--top", type=COUNT, default=10, show_default=True, help="Sweep results to report (0 = all).")
@click.option("--seed", type=WholeNumber(), default=0, show_default=True, help="Random seed (shuffles, splits, draws).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON: baseline, set, sweep, greedy.")
def ablate(model_path, stimuli, conditions, unit_list, top_from, feature, kinds, k, value, draws, sweep, greedy,
           top, seed, as_json):
    """Ablate units of MODEL and measure agreement accuracy, against random sets of the same size."""
    import functools

    from gatescope.analysis import causal
    from gatescope.analysis.agreement import agreement_metric
    from gatescope.analysis.selection import parse_kinds
    from gatescope.cli.trace import load_language_model
    from gatescope.inputs.stimuli.agreement import CONDITIONS, AgreementItem, random_draw, read_stimuli
    from gatescope.numbers import decimal_number

    if unit_list is not None and top_from:
        raise GatescopeError("give --units or --top-from, not both")
    if top_from and not feature:
        raise GatescopeError("--top-from needs --feature NAME (the label to rank units by)")
    if value not in ("zero", "mean"):
        number = decimal_number(value)
        if number is None:
            raise GatescopeError(f"--value must be zero, mean or a finite number, not {shown(value)}")
        value = number
    if value == "mean" and not top_from:
        raise GatescopeError("--value mean takes the means from the --top-from trace; give one")
    model = load_language_model(model_path)
    wanted = None if conditions == "all" else [c for c in conditions.split(",") if c]
    if stimuli is not None:
        items, drawn = read_stimuli(stimuli), stimuli
    else:
        items = [AgreementItem(s.prefix, s.correct, s.wrong, s.condition)
                 for s in random_draw(200, seed, tuple(wanted or CONDITIONS))]
        drawn = f"{len(items)} items drawn at random from the lexicon (seed {seed})"
    metric = agreement_metric(model, items, wanted)
    trace = None
    if top_from:
        from gatescope.analysis.ranking import rank_units
        from gatescope.traces.trace import load_trace

        trace = load_trace(top_from)
        ranking = rank_units(trace, feature=feature, kinds=kinds, permutations=0)
        chosen = causal.top_k(ranking, k)
    else:
        chosen = [u.strip() for u in unit_list.split(",") if u.strip()] if unit_list is not None else []
    if unit_list is not None or top_from:
        causal.check_units(model, chosen)  # before the work; an empty --units is "no units given"
    every = causal.units_of(model, parse_kinds(kinds))
    candidates = chosen or every
    if not candidates or (greedy and not every):
        raise GatescopeError(f"the model has no units of kind {kinds}")
    if greedy and k > len(every):
        raise GatescopeError(f"--k {k} is more than the model's {len(every)} units of kind {kinds}")
    edit = functools.partial(causal.ablate, value=value, trace=trace)
    baseline = metric([])
    result: dict[str, Any] = {"metric": metric.name, "items": drawn, "conditions": wanted or "all", "baseline": baseline,
                              "set": None, "sweep": [], "greedy": None}
    if chosen:
        result["set"] = causal.set_effect(metric, chosen, model=model, draws=draws, seed=seed, edit=edit,
                                          baseline=baseline).to_dict()
    if sweep:
        table = causal.sweep(metric, candidates, edit=edit, baseline=baseline, progress=not as_json)
        result["sweep"] = (table if top == 0 else table.head(top)).to_records()
    if greedy:
        result["greedy"] = causal.greedy_search(metric, every, k, edit=edit, baseline=baseline,
                                                progress=not as_json).to_records()
    if as_json:
        print_json(result)
        return
    click.echo(f"{metric.name} on {', '.join(wanted) if wanted else 'all items'} of {drawn}: {baseline:.3f} unablated")
    if result["set"]:
        s = result["set"]
        draws = len(s["random_harms"])
        against = (f"{draws} random set{'s' if draws != 1 else ''} of {len(s['units'])}: drop "
                   f"{s['random_mean']:+.3f} ± {s['random_std']:.3f}" if draws else "no random sets (--draws 0)")
        click.echo(f"set {', '.join(s['units'])}: {s['value']:.3f} (drop {s['harm']:+.3f}); {against}")
    if result["sweep"]:
        print_table(result["sweep"], ["unit", "value", "harm"], "single units, most harmful first")
    if result["greedy"]:
        print_table(result["greedy"], ["size", "added", "value", "harm"], "greedy set search")


@analyze.command(short_help="Find spans where selected units are on (LSTMVis).")
@click.argument("trace", type=TRACE)
@click.option("--name", "quantity", required=True, help="The quantity to select in, e.g. rnn.l0.fwd.h.")
@click.option("--start", type=WholeNumber(), required=True, help="First row of the selected span.")
@click.option("--stop", type=WholeNumber(), required=True, help="Row after the span's last.")
@click.option("--sequence", type=WholeNumber(),
              help="Count --start/--stop within this sequence instead of the whole trace.")
@click.option("--threshold", type=DecimalNumber(), default=0.3, show_default=True, help="A unit is on above this.")
@click.option("--units", "unit_list", help="Comma-separated unit indices to match (default: those on over the span).")
@click.option("--top", type=POSITIVE, default=20, show_default=True, help="Matches to report.")
@click.option("--include-self", is_flag=True, help="Allow matches overlapping the selection.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON: the selection and the matches, best first.")
def match(trace, quantity, start, stop, sequence, threshold, unit_list, top, include_self, as_json):
    """Select units that are on over a span of TRACE; find where else they are on (LSTMVis)."""
    from gatescope.analysis.patterns import match as match_spans
    from gatescope.analysis.patterns import select
    from gatescope.traces.trace import load_trace

    tr = load_trace(trace)
    if sequence is not None:
        rows = tr.sequence(sequence)
        start, stop = rows.start + start, rows.start + stop
    units_given = _numbers(unit_list, "--units", "unit indices such as 3,17") if unit_list else None
    selection = select(tr, quantity, start, stop, threshold, units_given)
    table = match_spans(tr, selection, top=top, include_self=include_self)
    if as_json:
        print_json({"selection": {"name": selection.name, "units": list(selection.units), "start": selection.start,
                                  "stop": selection.stop, "threshold": selection.threshold},
                    "matches": table.to_records()})
        return
    span = f"{selection.start}:{selection.stop}"
    click.echo(f"selected {len(selection.units)} unit(s) of {quantity} on over rows {span}: "
               f"{', '.join(map(str, selection.units))}")
    print_table(table.rows, ["rank", "start", "sequence", "position", "matched", "score", "text"], "matches")


@analyze.command(short_help="Draw a unit's gates along sentences (PNG/SVG).")
@click.argument("trace", type=TRACE)
@click.option("--unit", required=True, help="Unit whose gates to draw, e.g. rnn.l0.fwd.h:96 (its index in every kind).")
@click.option("--sequences", default="0", show_default=True, help="Comma-separated sequence numbers, one line each.")
@click.option("--kinds", help="Kinds to draw, one panel each (default g,i,f,c,o,h for an LSTM; r,z,n,h for a GRU).")
@click.option("--title", help="Figure title (default: the unit).")
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False), help="Output figure: .png, .svg or .pdf.")
def profile(trace, unit, sequences, kinds, title, out):
    """Draw a unit's gates and states along chosen sentences (Lakretz et al. 2019, Fig. 1)."""
    from gatescope.analysis.dynamics import plot_gate_profile
    from gatescope.analysis.selection import parse_kinds
    from gatescope.files import check_writable
    from gatescope.traces.trace import load_trace

    check_writable(out, [("TRACE", trace)])
    seqs = _numbers(sequences, "--sequences", "sequence numbers such as 0,1,2")
    if any(s < 0 for s in seqs):  # as a unit index: never counted from the end
        raise GatescopeError(f"--sequences takes sequence numbers 0 or more; got {shown(sequences)}")
    path = plot_gate_profile(load_trace(trace), unit, seqs, out, kinds=parse_kinds(kinds) if kinds else None,
                             title=title)
    click.echo(f"wrote {path}", err=True)


@analyze.command(short_help="Integrated gradients to tokens and units.")
@click.argument("model_path", metavar="MODEL", type=click.Path(dir_okay=False))
@click.option("--text", required=True, help="The prefix, e.g. 'the boys near the car'.")
@click.option("--correct", required=True, help="The token the model should predict next (e.g. greet).")
@click.option("--wrong", required=True, help="The competing token (e.g. greets).")
@click.option("--name", "quantity", help="Quantity whose units to attribute to (default: h of the last layer).")
@click.option("--steps", type=POSITIVE, default=50, show_default=True, help="Integration steps.")
@click.option("--top", type=POSITIVE, default=10, show_default=True, help="Units to report.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON: target, tokens, units.")
def attribute(model_path, text, correct, wrong, quantity, steps, top, as_json):
    """Attribute logit(CORRECT) - logit(WRONG) after TEXT to its tokens and to units (integrated gradients)."""
    import torch

    from gatescope.analysis.attribution import (
        logit_difference_target,
        token_attributions,
        unit_attributions,
    )
    from gatescope.cli.trace import load_language_model
    from gatescope.names import format_name

    model = load_language_model(model_path)
    ids = torch.tensor([model.encode(text)])  # (1, T); empty text or no vocabulary: a GatescopeError
    vocab = model.vocab
    correct_id, wrong_id = _token_id(vocab, correct), _token_id(vocab, wrong)
    if quantity is None:
        info = model.modules_info[-1]
        quantity = format_name(info["name"], info["num_layers"] - 1, "fwd", "h")
    target = logit_difference_target(-1, [correct_id], [wrong_id])
    units_attr, unit_delta = unit_attributions(model, ids, target, quantity, n_steps=steps)  # checks --name first
    tokens, token_delta = token_attributions(model, ids, target, n_steps=steps)
    with torch.no_grad():
        value = float(target(model(ids))[0])
    per_unit = units_attr[0].sum(0)  # (H,)
    order = torch.argsort(per_unit.abs(), descending=True)[:top].tolist()
    result = {
        "target": value,
        "tokens": [{"token": t, "attribution": float(a)} for t, a in zip(vocab.split(text), tokens[0])],
        "token_delta": float(token_delta[0]), "name": quantity,
        "units": [{"unit": f"{quantity}:{i}", "attribution": float(per_unit[i])} for i in order],
        "unit_total": float(per_unit.sum()), "unit_delta": float(unit_delta[0]),
    }
    if as_json:
        print_json(result)
        return
    click.echo(f"logit({correct}) - logit({wrong}) after {text!r}: {value:.3f}")
    print_table(result["tokens"], ["token", "attribution"], f"tokens vs token id 0 (sum {float(tokens[0].sum()):.3f})")
    print_table(result["units"], ["unit", "attribution"], f"units of {quantity} (all: {result['unit_total']:.3f})")


@analyze.command(short_help="Each token's share of a logit difference (Shapley, GCD, CD).")
@click.argument("model_path", metavar="MODEL", type=click.Path(dir_okay=False))
@click.option("--text", required=True, help="The prefix, e.g. 'the boys near the car'.")
@click.option("--correct", required=True, help="The token the model should predict next (e.g. greet).")
@click.option("--wrong", required=True, help="The competing token (e.g. greets).")
@click.option("--method", type=click.Choice(["shapley", "gcd", "cd"]), default="shapley", show_default=True,
              help="shapley: exact Shapley values per operation (diagNNose's ShapleyDecomposer); gcd: generalised "
                   "contextual decomposition (Jumelet et al. 2019); cd: Murdoch et al. 2018.")
@click.option("--samples", type=POSITIVE, help="shapley: sampled values from this many orders per operation "
                                               "(long texts), with their sampling error.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON: method, tokens, parts, contributions, total, check.")
def decompose(model_path, text, correct, wrong, method, samples, as_json):
    """Split logit(CORRECT) - logit(WRONG) after TEXT into the constants' and each token's contribution
    (gatescope.analysis.decomposition; gcd and cd parts need not add up: the rest is the interaction)."""
    import torch

    from gatescope.analysis.decomposition import logit_difference_summary
    from gatescope.cli.trace import load_language_model

    if samples is not None and method != "shapley":
        raise GatescopeError("--samples is for --method shapley")
    model = load_language_model(model_path)
    ids = torch.tensor(model.encode(text))  # (T,); empty text or no vocabulary: a GatescopeError
    report = logit_difference_summary(model, ids, _token_id(model.vocab, correct), _token_id(model.vocab, wrong),
                                      method, samples)
    if as_json:
        print_json(report)
        return
    errors = report.get("sampling_error")
    rows = [{"part": p, "contribution": c} | ({"sampling error": errors[k]} if errors else {})
            for k, (p, c) in enumerate(zip(report["parts"], report["contributions"]))]
    if "interaction" in report:
        rows.append({"part": "(interaction)", "contribution": report["interaction"]})
    click.echo(f"{method}: logit({correct}) - logit({wrong}) after {text!r} = {report['total']:.3f}")
    print_table(rows, ["part", "contribution"] + (["sampling error"] if errors else []),
          f"parts add up to within {report['check']:.1e}")
