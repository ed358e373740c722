"""`gatescope analyze decompose MODEL --text ... --correct W --wrong W'`: each part of the text's share of
the logit difference of a word pair at the next position (gatescope.analysis.decomposition).

Prints a table (part, contribution) with the actual difference and the completeness check, or with
``--json``: ``{"method", "tokens", "parts", "contributions", "total", "check"}`` (and ``"interaction"``
for gcd and cd, whose parts need not add up; ``"sampling_error"`` per part with ``--samples``).
"""
from __future__ import annotations

import click


def decomposition_report(model, text: str, correct: str, wrong: str, method: str, samples: int | None) -> dict:
    """The command's JSON for ``model`` (a gatescope.load model with a vocabulary)."""
    import torch

    from gatescope.analysis.decomposition import decompose
    from gatescope.cli.analyze import _token_id

    ids = torch.tensor(model.encode(text))  # (T,); empty text or no vocabulary: a GatescopeError
    vocab = model.vocab
    correct_id, wrong_id = _token_id(vocab, correct), _token_id(vocab, wrong)
    result = decompose(model, ids, method, num_samples=samples)
    tokens = vocab.decode(ids.tolist())
    parts = result.logit_difference(-1, correct_id, wrong_id)  # (P,)
    actual = result.actual["logits"][-1]
    report = {
        "method": method, "tokens": tokens, "parts": result.labels(tokens),
        "contributions": [float(v) for v in parts],
        "total": float(actual[correct_id] - actual[wrong_id]), "check": result.check,
    }
    if method != "shapley":
        report["interaction"] = report["total"] - float(parts.sum())
    error = result.logit_difference_error(-1, correct_id, wrong_id)  # (P,) or None
    if error is not None:
        report["sampling_error"] = [float(e) for e in error]
    return report


@click.command("decompose", short_help="Each token's share of a logit difference (Shapley, GCD, CD).")
@click.argument("model_path", metavar="MODEL", type=click.Path(dir_okay=False))
@click.option("--text", required=True, help="The prefix, e.g. 'the boys near the car'.")
@click.option("--correct", required=True, help="The token the model should predict next (e.g. greet).")
@click.option("--wrong", required=True, help="The competing token (e.g. greets).")
@click.option("--method", type=click.Choice(["shapley", "gcd", "cd"]), default="shapley", show_default=True,
              help="shapley: exact Shapley values per operation (diagNNose's ShapleyDecomposer); gcd: generalised "
                   "contextual decomposition (Jumelet et al. 2019); cd: Murdoch et al. 2018.")
@click.option("--samples", type=click.IntRange(min=1), help="shapley: sampled values from this many orders per "
                                                            "operation (long texts), with their sampling error.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON: method, tokens, parts, contributions, total, check.")
def decompose(model_path, text, correct, wrong, method, samples, as_json):
    """Split logit(CORRECT) - logit(WRONG) after TEXT into the constants' and each token's contribution."""
    from gatescope.cli.analyze import _emit_json, _show
    from gatescope.cli.trace import load_to_edit
    from gatescope.errors import GatescopeError

    if samples is not None and method != "shapley":
        raise GatescopeError("--samples is for --method shapley")
    report = decomposition_report(load_to_edit(model_path), text, correct, wrong, method, samples)
    if as_json:
        _emit_json(report)
        return
    errors = report.get("sampling_error")
    rows = [{"part": p, "contribution": c} | ({"sampling error": errors[k]} if errors else {})
            for k, (p, c) in enumerate(zip(report["parts"], report["contributions"]))]
    if "interaction" in report:
        rows.append({"part": "(interaction)", "contribution": report["interaction"]})
    columns = ["part", "contribution"] + (["sampling error"] if errors else [])
    click.echo(f"{method}: logit({correct}) - logit({wrong}) after {text!r} = {report['total']:.3f}")
    _show(rows, columns, f"parts add up to within {report['check']:.1e}")
