"""Reproduce the findings of issue 4 on the sample models: ``python -m gatescope.analysis.findings``.

1. Agreement LSTM and GRU (Lakretz et al. 2019's experiment, on gatescope's grammar): record a
   trace over agreement stimuli with per-token ``subject_number``; rank the h units by AUC (with
   permutation p-values); hold the top k <= 4 at zero and measure the drop in incongruent NounPP
   accuracy (SP, PS) on the bundled held-out stimuli, against random sets of k (mean over draws);
   probes per kind (how many units carry number: the top-k curve and k95); the gate profile of the
   strongest number unit across "the boy(s) near the car(s) greet(s)" (docs/number_unit.png).
   Units are ranked on a different draw of stimuli (seed 1) from the one ablations are scored on.
2. Char LSTM on Python source (Karpathy et al. 2015's quote cell): rank c and h units for
   ``in_string`` on training files, report the best unit's AUC on the held-out stdlib files.

Prints a Markdown report; ``--json FILE`` also writes every figure as JSON.
"""
from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

import gatescope
from gatescope.analysis import causal
from gatescope.analysis.agreement import agreement_metric, read_stimuli
from gatescope.analysis.dynamics import (
    plot_gate_profile,
    saturation,
    saturation_summary,
)
from gatescope.analysis.probes import probe_units
from gatescope.analysis.ranking import rank_units
from gatescope.analysis.table import jsonable
from gatescope.errors import GatescopeError
from gatescope.files import atomic_write, check_writable
from gatescope.trace import Trace

LAKRETZ = ("the boy near the car greets", "the boy near the cars greets",
           "the boys near the car greet", "the boys near the cars greet")
STIMULUS_FEATURES = ("subject_number", "in_attractor", "is_verb")


def agreement_trace(model: torch.nn.Module, stimuli: Sequence[Any]) -> Trace:
    """Record ``model`` over stimuli (gatescope.stimuli.agreement.Stimulus: prefix + correct verb),
    with their per-token features; sequences in the order of ``stimuli``."""
    ids = [model.encode(" ".join(s.tokens)) for s in stimuli]
    with torch.no_grad(), gatescope.record(model) as rec:
        for seq in ids:
            model(torch.tensor([seq]))
    trace = rec.trace
    for name in STIMULUS_FEATURES:
        trace.add_feature(name, np.concatenate([np.asarray(getattr(s, name), np.float32) for s in stimuli]))
    return trace


def sentences_trace(model: torch.nn.Module, sentences: Sequence[str]) -> Trace:
    """Record ``model`` over a few sentences, one sequence each."""
    with torch.no_grad(), gatescope.record(model) as rec:
        for text in sentences:
            model(torch.tensor([model.encode(text)]))
    return rec.trace


def code_trace(model: torch.nn.Module, paths: Sequence[Path], chunk: int = 4000,
               kinds: Sequence[str] = ("c", "h")) -> Trace:
    """Record a char model over source files, in sequences of ``chunk`` characters (each from a
    zero state), with the code features of gatescope.stimuli.code_features."""
    from gatescope.stimuli.code_features import code_features

    feats: dict[str, list[np.ndarray]] = {}
    with torch.no_grad(), gatescope.record(model, kinds=list(kinds)) as rec:
        for path in paths:
            source = path.read_text(encoding="utf-8")
            for name, values in code_features(source, str(path)).items():
                feats.setdefault(name, []).append(values)
            ids = model.encode(source)
            if len(ids) != len(source):
                raise GatescopeError(f"{path}: the model's tokenizer is not one token per character")
            for start in range(0, len(ids), chunk):
                model(torch.tensor([ids[start : start + chunk]]))
    trace = rec.trace
    for name, parts in feats.items():
        trace.add_feature(name, np.concatenate(parts))
    return trace


def patching_flips(model: torch.nn.Module, items: Sequence[Any], sets: dict[str, list[str]]) -> dict[str, float]:
    """Activation patching: copy each unit set's values from the run on the counterfactual prefix
    (the subject noun in the other number: "the boys near the car") into the run on the original
    prefix; the fraction of items whose verb preference flips, per named set."""
    from gatescope.stimuli.agreement import NOUN_PL, NOUN_SG

    other = dict(zip(NOUN_SG, NOUN_PL)) | dict(zip(NOUN_PL, NOUN_SG))
    vocab = model.vocab
    by_length: dict[int, list[Any]] = {}
    for item in items:
        by_length.setdefault(len(vocab.split(item.prefix)), []).append(item)
    flips = dict.fromkeys(sets, 0)
    for group in by_length.values():
        words = [vocab.split(item.prefix) for item in group]
        ids = torch.tensor([model.encode(" ".join(w)) for w in words])  # (B, T)
        source = torch.tensor([model.encode(" ".join([w[0], other[w[1]], *w[2:]])) for w in words])
        correct = torch.tensor([vocab.index[item.correct] for item in group])
        wrong = torch.tensor([vocab.index[item.wrong] for item in group])
        before = causal.logit_difference(model, ids, correct, wrong) > 0
        for name, units in sets.items():
            after = causal.logit_difference(model, ids, correct, wrong, causal.patch(model, units, source)) > 0
            flips[name] += int((before & ~after).sum())
    return {name: count / len(items) for name, count in flips.items()}


def agreement_findings(model_path: Path, figure: Path | None, ks: Sequence[int] = (1, 2, 3, 4), draws: int = 20,
                       permutations: int = 1000, seed: int = 0, save_trace: Path | None = None) -> dict[str, Any]:
    """Ranking, top-k ablations vs random sets, probes, saturation and the number unit's profile."""
    from gatescope.stimuli.agreement import (
        INCONGRUENT_NOUNPP,
        bundled_stimuli_path,
        generate_stimuli,
    )

    model = gatescope.load(model_path).eval()
    trace = agreement_trace(model, generate_stimuli(seed=1))
    if save_trace is not None:
        trace.save(save_trace)
    ranking = rank_units(trace, feature="subject_number", kinds="h", metric="auc", permutations=permutations,
                         seed=seed)
    items = read_stimuli(bundled_stimuli_path())
    metric = agreement_metric(model, items, INCONGRUENT_NOUNPP)
    per_condition = {c: agreement_metric(model, items, [c]) for c in INCONGRUENT_NOUNPP}
    baseline = metric([])
    ablations = []
    for k in ks:
        units = causal.top_k(ranking, k)
        effect = causal.set_effect(metric, units, model=model, draws=draws, seed=seed, baseline=baseline)
        ablations.append({
            "k": k, "units": units, "accuracy": effect.value, "drop": effect.harm,
            "random_drop_mean": effect.random_mean, "random_drop_std": effect.random_std,
            "by_condition": {c: m(causal.ablate(units)) for c, m in per_condition.items()},
        })
    k = ks[-1]
    nounpp = [it for it in items if it.condition in INCONGRUENT_NOUNPP]
    patch_sets = {"top": causal.top_k(ranking, k), "all": causal.units_of(model, ["h"])}
    pool = causal.pool_of(model, patch_sets["top"])
    patch_sets |= {f"random{i}": s for i, s in enumerate(causal.random_sets(pool, k, draws, seed))}
    flipped = patching_flips(model, nounpp, patch_sets)
    random_flips = [v for name, v in flipped.items() if name.startswith("random")]
    patching = {"k": k, "units": patch_sets["top"], "flipped": flipped["top"], "all_h_flipped": flipped["all"],
                "random_flipped_mean": float(np.mean(random_flips)),
                "random_flipped_std": float(np.std(random_flips, ddof=1))}
    probes = probe_units(trace, feature="subject_number", kinds="h,c", seed=seed)
    sat = saturation_summary(saturation(trace), "kind")
    top = ranking[0]
    if figure is not None:
        plot_gate_profile(sentences_trace(model, LAKRETZ), top["unit"], range(len(LAKRETZ)), figure,
                          title=f"{model_path.stem}: number unit {top['unit']} (AUC {top['score']:.3f})")
    return {
        "model": model_path.name,
        "hidden_size": model.modules_info[0]["hidden_size"],
        "cell": model.modules_info[0]["cell"],
        "ranking_top": [{k: r[k] for k in ("unit", "score", "corr", "probe", "p_fwer")} for r in ranking.head(8)],
        "significant_units": sum(r["p_fwer"] < 0.01 for r in ranking),
        "units_auc_90": sum(r["score"] >= 0.9 for r in ranking),
        "units_ranked": len(ranking),
        "baseline_incongruent_nounpp": baseline,
        "baseline_by_condition": {c: m([]) for c, m in per_condition.items()},
        "ablations": ablations,
        "patching": patching,
        "probes": [{k: r[k] for k in ("name", "baseline", "score", "control", "selectivity", "k95", "curve")}
                   for r in probes],
        "saturation": {r["kind"]: {"left": r["left"], "right": r["right"]} for r in sat},
        "figure": str(figure) if figure else None,
    }


def code_findings(model_path: Path, train_chars: int = 60000, permutations: int = 200,
                  save_trace: Path | None = None) -> dict[str, Any]:
    """The best in_string unit chosen on training files, its AUC on the held-out stdlib files."""
    from gatescope.samples.data import stdlib_files

    model = gatescope.load(model_path).eval()
    train_paths, total = [], 0
    for path in stdlib_files():  # sorted training files, until train_chars characters
        if total >= train_chars:
            break
        train_paths.append(path)
        total += len(path.read_text(encoding="utf-8"))
    chosen = rank_units(code_trace(model, train_paths), feature="in_string", metric="auc", permutations=0)
    held = code_trace(model, stdlib_files(heldout=True))
    if save_trace is not None:
        held.save(save_trace)
    scored = {r["unit"]: r for r in rank_units(held, feature="in_string", metric="auc", permutations=permutations)}
    best_held = max(scored.values(), key=lambda r: r["score"])
    # a unit that is low inside strings separates them as well: AUCs are oriented by the training files
    top = [{"unit": r["unit"], "direction": "high" if r["auc"] >= 0.5 else "low", "train_auc": r["score"],
            "heldout_auc": _oriented(scored[r["unit"]]["auc"], r["auc"] >= 0.5),
            "heldout_p_fwer": scored[r["unit"]]["p_fwer"]} for r in chosen.head(5)]
    probes = probe_units(held, feature="in_string", kinds="c", ks=(1, 4, 16, 64), epochs=3)
    return {"model": model_path.name, "train_files": [p.name for p in train_paths],
            "probes": [{k: r[k] for k in ("name", "baseline", "score", "control", "selectivity", "k95", "curve")}
                       for r in probes],
            "heldout_files": [p.name for p in stdlib_files(heldout=True)], "heldout_tokens": held.num_tokens,
            "top_units": top, "best_heldout_unit": {"unit": best_held["unit"], "auc": best_held["score"]}}


def _oriented(auc: float, high: bool) -> float:
    return auc if high else 1 - auc


def report(results: dict[str, Any]) -> str:
    """The findings as Markdown."""
    lines = []
    for res in results.get("agreement", []):
        by_condition = ", ".join(f"{c} {v:.3f}" for c, v in res["baseline_by_condition"].items())
        summary = (f"Unablated incongruent NounPP accuracy (SP, PS): {res['baseline_incongruent_nounpp']:.3f} "
                   f"({by_condition}). {res['significant_units']} of {res['units_ranked']} h units track subject "
                   f"number (max-statistic permutation p < 0.01); {res['units_auc_90']} separate singular from "
                   f"plural with AUC >= 0.9 on their own.")
        lines += [f"### {res['model']} ({res['cell']}, {res['hidden_size']} units)", "", summary, "",
                  "| k | ablated units (top by AUC) | accuracy | drop | random k units: drop (mean ± sd) |",
                  "| --- | --- | --- | --- | --- |"]
        for a in res["ablations"]:
            lines.append(f"| {a['k']} | {', '.join(a['units'])} | {a['accuracy']:.3f} | {100 * a['drop']:.1f} pts | "
                         f"{100 * a['random_drop_mean']:.1f} ± {100 * a['random_drop_std']:.1f} pts |")
        pt = res["patching"]
        patched = (f"Patching the top {pt['k']} units' h from the run on the prefix with the subject in the other "
                   f"number flips the verb preference on {100 * pt['flipped']:.1f}% of incongruent NounPP items "
                   f"(random sets of {pt['k']}: {100 * pt['random_flipped_mean']:.1f} ± "
                   f"{100 * pt['random_flipped_std']:.1f}%; all h units: {100 * pt['all_h_flipped']:.1f}%).")
        lines += ["", patched]
        lines += ["", "| probe | majority | accuracy | control task | selectivity | units for 95% |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for p in res["probes"]:
            lines.append(f"| {p['name']} | {p['baseline']:.3f} | {p['score']:.3f} | {p['control']:.3f} | "
                         f"{p['selectivity']:.3f} | {p['k95']} |")
        top = res["ranking_top"][0]
        lines += ["", f"Strongest number unit: {top['unit']} (AUC {top['score']:.3f}, r = {top['corr']:.3f}).", ""]
    code = results.get("code")
    if code:
        b = code["top_units"][0]
        summary = (f"Best in_string unit on training files: {b['unit']} ({b['direction']} inside strings, "
                   f"AUC {b['train_auc']:.3f}); on the held-out files ({', '.join(code['heldout_files'])}; "
                   f"{code['heldout_tokens']} characters): AUC {b['heldout_auc']:.3f}. Best unit chosen on the "
                   f"held-out files themselves: {code['best_heldout_unit']['unit']} "
                   f"(AUC {code['best_heldout_unit']['auc']:.3f}).")
        lines += [f"### {code['model']}", "", summary, ""]
        for p in code["probes"]:
            lines.append(f"Linear probe on all of {p['name']} (held-out chunks): accuracy {p['score']:.3f} "
                         f"(majority {p['baseline']:.3f}, control task {p['control']:.3f}); top-k curve "
                         + ", ".join(f"{k}: {v:.3f}" for k, v in p["curve"].items()) + ".")
        lines.append("")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    from gatescope import sample_models

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--figures", type=Path, default=Path("docs"), help="folder for number_unit*.png")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON here")
    parser.add_argument("--draws", type=int, default=20, help="random sets per k")
    parser.add_argument("--only", choices=["agreement", "code"], help="run one part")
    parser.add_argument("--traces", type=Path, help="also save the traces analysed (with their features) here")
    args = parser.parse_args(argv)
    for folder in (args.figures, args.traces):
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)
    if args.json:
        check_writable(args.json)  # before minutes of work, not after
    results: dict[str, Any] = {}
    if args.only in (None, "agreement"):
        results["agreement"] = []
        for stem, fig in (("agreement_lstm", "number_unit.png"), ("agreement_gru", "number_unit_gru.png")):
            path = sample_models.path(f"{stem}.safetensors")
            if path.exists():
                save = args.traces / f"{stem}.trace.safetensors" if args.traces else None
                results["agreement"].append(agreement_findings(path, args.figures / fig, draws=args.draws,
                                                               save_trace=save))
    code_model = sample_models.path("pysource_lstm.safetensors")
    if args.only in (None, "code") and code_model.exists():
        save = args.traces / "pysource_heldout.trace.safetensors" if args.traces else None
        results["code"] = code_findings(code_model, save_trace=save)
    if args.json:
        text = json.dumps(jsonable(results), indent=1, allow_nan=False)
        atomic_write(args.json, lambda tmp: Path(tmp).write_text(text))
    print(report(results))


if __name__ == "__main__":
    try:
        main()
    except GatescopeError as exc:  # bad input: one line, as the gatescope command prints it
        raise SystemExit(f"findings: error: {exc}") from None
