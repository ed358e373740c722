"""The findings on the sample models, as figures a newcomer can reproduce: ``gatescope findings``.

1. Number units in the agreement LSTM and GRU (Lakretz et al. 2019's experiment, on gatescope's
   grammar): record a trace over agreement stimuli with per-token ``subject_number``; rank the h
   units by AUC (with permutation p-values); hold the top k <= 4 at zero and measure the drop in
   incongruent NounPP accuracy (SP, PS) on the bundled held-out stimuli, against random sets of k
   (mean over draws); patch them from the run with the subject in the other number; probes per
   kind with their control task (Hewitt & Liang 2019: selectivity = accuracy - control accuracy);
   the gate profile of the strongest unit across "the boy(s) near the car(s) greet(s)".
2. Robust number units: rank on NounPP items drawn from one half of the lexicon and ablate the top
   k = 1..8 on items drawn from the other half (no noun, verb or preposition in common;
   `gatescope.inputs.stimuli.agreement.split_lexicon`), against random sets of k.
3. Sparse number units in a Lakretz-sized model (`agreement_lstm_2x650`, 2 x 650 units; Lakretz et al.
   2019 found two, 776 and 988, in layer 2 of Gulordava et al.'s LM): per layer, how many h units
   separate singular from plural (AUC >= 0.9), every unit of layer 2 (and the layer-1 units ranked
   highest) ablated alone on incongruent NounPP (a unit "carries number" when that costs >= 5 points,
   re-measured on all items), sets of the top k against random sets, and the gate profile (i f g o c h)
   of the unit whose ablation costs most. Skipped, in one line, when the model is not there.
4. The cells compared (the seed's claim that a plain RNN loses what an LSTM keeps; Greff et al. 2017's
   finding that the LSTM's variants perform about alike): the plain tanh RNN, the peephole and the
   coupled-gate LSTM beside the LSTM and GRU, by accuracy per construction and distance on the bundled
   stimuli and on NounPP chains of up to 18 PPs (`gatescope.inputs.stimuli.agreement.chain_items`), far
   past the subject-verb spans of the training grammar.
5. The char LSTM on Python source (Karpathy et al. 2015's quote, comment, bracket and indent cells):
   gatescope.findings.code.

The results are one JSON document; gatescope.findings.report renders it as Markdown.
Each stage runs inside ``stage(description)``, a context manager the caller may use to show progress.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ContextManager

import numpy as np
import torch

import gatescope
from gatescope.analysis import Metric, agreement_metric, causal
from gatescope.analysis.agreement import ablation_effect, evaluate_agreement
from gatescope.inputs.stimuli.agreement import read_stimuli
from gatescope.analysis.dynamics import (
    plot_gate_profile,
    saturation,
    saturation_summary,
)
from gatescope.analysis.probes import probe_units
from gatescope.analysis.ranking import rank_units
from gatescope.analysis.table import Table
from gatescope.errors import GatescopeError
from gatescope.findings.code import CODE_MODEL, PROBE_KEYS, code_findings
from gatescope.findings.default_reasoning import default_reasoning
from gatescope.inputs.stimuli.agreement import CONDITIONS
from gatescope.traces.trace import Trace

LAKRETZ = ("the boy near the car greets", "the boy near the cars greets",
           "the boys near the car greet", "the boys near the cars greet")
STIMULUS_FEATURES = ("subject_number", "in_attractor", "is_verb")
AGREEMENT_MODELS = ("agreement_lstm", "agreement_gru")
# the cell comparison (accuracy only): the seed's plain RNN and two of Greff et al. 2017's LSTM variants
CELL_MODELS = ("agreement_rnn", "agreement_lstm_peephole", "agreement_lstm_coupled")
CHAIN_PPS = (1, 2, 3, 4, 6, 9, 12, 18)  # NounPP chains: distance 3 to 54, the grammar's spans end at 12
LARGE_MODEL = "agreement_lstm_2x650"
# the ranking trace holds Lakretz et al.'s conditions and ObjRC (2,520 items; the docs' sequence
# numbers refer to it: NounPP SS starts at 920), not every construction: it stays a few hundred MB
RANKING_CONDITIONS = tuple(c for c in CONDITIONS if c.rpartition("_")[0] in ("simple", "adv", "namepp", "nounpp",
                                                                          "objrc"))
CARRIES_NUMBER = 0.05  # a single-unit ablation that costs this much incongruent NounPP accuracy
Stage = Callable[[str], ContextManager[Any]]


def no_stage(description: str) -> ContextManager[Any]:
    """A stage that shows nothing."""
    return contextlib.nullcontext()


def agreement_trace(model: torch.nn.Module, stimuli: Sequence[Any], kinds: Sequence[str] | None = None) -> Trace:
    """Record ``model`` over stimuli (gatescope.inputs.stimuli.agreement.Stimulus: prefix + correct verb),
    with their per-token features; sequences in the order of ``stimuli``; ``kinds`` (default all)."""
    ids = [model.encode(" ".join(s.tokens)) for s in stimuli]
    with torch.no_grad(), gatescope.record(model, kinds=None if kinds is None else list(kinds)) as rec:
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


def patching_flips(model: torch.nn.Module, items: Sequence[Any], sets: dict[str, list[str]]) -> dict[str, float]:
    """Activation patching: copy each unit set's values from the run on the counterfactual prefix
    (the subject noun in the other number: "the boys near the car") into the run on the original
    prefix; the fraction of items whose verb preference flips, per named set."""
    from gatescope.inputs.stimuli.agreement import NOUN_PL, NOUN_SG

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




def _ablation_rows(metric: Metric, model: torch.nn.Module, ranking: Any, ks: Sequence[int], draws: int,
                   seed: int) -> list[dict[str, Any]]:
    """Top-k ablations of ``ranking`` under ``metric``, each against ``draws`` random sets of k."""
    baseline = metric([])
    rows = []
    for k in ks:
        units = causal.top_k(ranking, k)
        effect = causal.set_effect(metric, units, model=model, draws=draws, seed=seed, baseline=baseline)
        rows.append({"k": k, "units": units, "accuracy": effect.value, "drop": effect.harm,
                     "random_drop_mean": effect.random_mean, "random_drop_std": effect.random_std})
    return rows


def independent_findings(model: torch.nn.Module, ks: Sequence[int] = tuple(range(1, 9)), draws: int = 20,
                         per_condition: int = 200, seed: int = 0) -> dict[str, Any]:
    """Rank h units on NounPP items from one half of the lexicon, ablate on the other half's.

    The ranking set has all four NounPP conditions (seed 1), the independent set the incongruent
    ones (SP, PS; seed 2), with no noun, verb or preposition in common (`split_lexicon`). The top 4
    are also ablated on the ranking set's own incongruent items, for comparison."""
    from gatescope.inputs.stimuli.agreement import CONDITIONS, INCONGRUENT_NOUNPP, generate_stimuli, split_lexicon

    rank_part, test_part = split_lexicon(seed)
    nounpp = tuple(c for c in CONDITIONS if c.startswith("nounpp_"))
    ranked_items = generate_stimuli(per_condition, seed=1, conditions=nounpp, lexicon=rank_part)
    test_items = generate_stimuli(per_condition, seed=2, conditions=INCONGRUENT_NOUNPP, lexicon=test_part)
    trace = agreement_trace(model, ranked_items, kinds=["h"])
    ranking = rank_units(trace, feature="subject_number", kinds="h", metric="auc", permutations=0)
    del trace
    in_sample = agreement_metric(model, ranked_items, INCONGRUENT_NOUNPP)
    independent = agreement_metric(model, test_items)
    top4 = ablation_effect(model, test_items, causal.ablate(causal.top_k(ranking, 4)))
    return {
        "rank_lexicon": rank_part.words(), "test_lexicon": test_part.words(),
        "rank_items": len(ranked_items), "test_items": len(test_items),
        "units_auc_90": sum(r["score"] >= 0.9 for r in ranking), "units_ranked": len(ranking),
        "ranking_top": [{"unit": r["unit"], "score": r["score"]} for r in ranking.head(8)],
        "ranking_set": {"baseline": in_sample([]), "ablations": _ablation_rows(in_sample, model, ranking, [4], draws,
                                                                              seed)},
        "independent_set": {"baseline": independent([]),
                            "ablations": _ablation_rows(independent, model, ranking, ks, draws, seed),
                            "top4_effect": top4},
    }


SCOPE_DRAW = {"per_condition": 300, "seed": 7}  # the random draw beside the bundled (held-out) items


def scope_findings(model: torch.nn.Module, units: Sequence[str], bundled: Sequence[Any]) -> dict[str, Any]:
    """What ablating ``units`` costs on incongruent NounPP items, by how the items were drawn: the bundled items
    (every subject-verb lemma pair held out of training), and a random draw from the same lexicon (every pair
    equally likely, training pairs included, nothing filtered), broken down by pair, subject and attractor;
    each drop with a paired bootstrap 95% interval."""
    from gatescope.inputs.stimuli.agreement import INCONGRUENT_NOUNPP, AgreementItem, random_draw

    interventions = causal.ablate(list(units))
    drawn = [AgreementItem(s.prefix, s.correct, s.wrong, s.condition)
             for s in random_draw(SCOPE_DRAW["per_condition"], SCOPE_DRAW["seed"], INCONGRUENT_NOUNPP)]
    nounpp = [item for item in bundled if item.condition in INCONGRUENT_NOUNPP]
    return {"units": list(units), "bundled": ablation_effect(model, nounpp, interventions, by=("pair",)),
            "random": {**SCOPE_DRAW, **ablation_effect(model, drawn, interventions,
                                                       by=("pair", "subject", "attractor"))}}


def agreement_findings(model_path: Path, figure: Path | None, ks: Sequence[int] = (1, 2, 3, 4), draws: int = 20,
                       permutations: int = 1000, seed: int = 0, save_trace: Path | None = None,
                       stage: Stage = no_stage) -> dict[str, Any]:
    """Ranking, top-k ablations vs random sets, patching, probes, saturation, the number unit's profile,
    and the rank-on-one-set / ablate-on-another experiment (`independent_findings`)."""
    from gatescope.inputs.stimuli.agreement import INCONGRUENT_NOUNPP, bundled_stimuli_path, generate_stimuli

    name = model_path.stem
    model = gatescope.load(model_path).eval()
    items = read_stimuli(bundled_stimuli_path())
    with stage(f"{name}: accuracy on the bundled stimuli"):
        accuracy = accuracy_findings(model, items)
    with stage(f"{name}: recording the ranking stimuli"):
        trace = agreement_trace(model, generate_stimuli(seed=1, conditions=RANKING_CONDITIONS))
        if save_trace is not None:
            trace.save(save_trace)
    with stage(f"{name}: ranking h units ({permutations} permutations)"):
        ranking = rank_units(trace, feature="subject_number", kinds="h", metric="auc", permutations=permutations,
                             seed=seed)
    with stage(f"{name}: ablating the top units and {draws} random sets"):
        metric = agreement_metric(model, items, INCONGRUENT_NOUNPP)
        per_condition = {c: agreement_metric(model, items, [c]) for c in INCONGRUENT_NOUNPP}
        ablations = _ablation_rows(metric, model, ranking, ks, draws, seed)
        for row in ablations:
            row["by_condition"] = {c: m(causal.ablate(row["units"])) for c, m in per_condition.items()}
    with stage(f"{name}: patching from the other number"):
        k = ks[-1]
        nounpp = [it for it in items if it.condition in INCONGRUENT_NOUNPP]
        patch_sets = {"top": causal.top_k(ranking, k), "all": causal.units_of(model, ["h"])}
        pool = causal.pool_of(model, patch_sets["top"])
        patch_sets |= {f"random{i}": s for i, s in enumerate(causal.random_sets(pool, k, draws, seed))}
        flipped = patching_flips(model, nounpp, patch_sets)
        random_flips = [v for key, v in flipped.items() if key.startswith("random")]
        patching = {"k": k, "units": patch_sets["top"], "flipped": flipped["top"], "all_h_flipped": flipped["all"],
                    "random_flipped_mean": float(np.mean(random_flips)),
                    "random_flipped_std": float(np.std(random_flips, ddof=1))}
    with stage(f"{name}: probes with a control task"):
        probes = probe_units(trace, feature="subject_number", kinds="h,c", seed=seed)
        sat = saturation_summary(saturation(trace), "kind")
    del trace
    top = ranking[0]
    if figure is not None:
        with stage(f"{name}: gate profile of {top['unit']}"):
            plot_gate_profile(sentences_trace(model, LAKRETZ), top["unit"], range(len(LAKRETZ)), figure,
                              title=f"{name}: number unit {top['unit']} (AUC {top['score']:.3f})")
    with stage(f"{name}: ranking on one half of the lexicon, ablating on the other"):
        independent = independent_findings(model, draws=draws, seed=seed)
    with stage(f"{name}: the top {k} on the bundled items and on a random draw from the lexicon"):
        scope = scope_findings(model, ablations[-1]["units"], items)
    with stage(f"{name}: decomposing the NounPP verbs (default reasoning)"):
        reasoning = default_reasoning(model, items)
    return {
        "model": model_path.name,
        "hidden_size": model.modules_info[0]["hidden_size"],
        "cell": model.modules_info[0]["cell"],
        **accuracy,
        "draws": draws,
        "ranking_top": [{k: r[k] for k in ("unit", "score", "corr", "probe", "p_fwer")} for r in ranking.head(8)],
        "significant_units": sum(r["p_fwer"] < 0.01 for r in ranking),
        "units_auc_90": sum(r["score"] >= 0.9 for r in ranking),
        "units_ranked": len(ranking),
        "baseline_incongruent_nounpp": metric([]),
        "baseline_by_condition": {c: m([]) for c, m in per_condition.items()},
        "ablations": ablations,
        "patching": patching,
        "probes": [{k: r[k] for k in PROBE_KEYS} for r in probes],
        "saturation": {r["kind"]: {"left": r["left"], "right": r["right"]} for r in sat},
        "figure": figure.name if figure else None,
        "independent": independent,
        "scope": scope,
        "default_reasoning": reasoning,
    }

def accuracy_findings(model: torch.nn.Module, items: Sequence[Any]) -> dict[str, Any]:
    """Agreement accuracy per condition, per distance, and per distance on the incongruent items."""
    result = evaluate_agreement(model, items)
    return {"accuracy_by_condition": {c: r["accuracy"] for c, r in result["by_condition"].items()},
            "accuracy_by_distance": {str(d): r["accuracy"] for d, r in result["by_distance"].items()},
            "accuracy_by_distance_incongruent": {str(d): r["accuracy"]
                                                 for d, r in result["by_distance_incongruent"].items()}}


def chain_findings(model: torch.nn.Module, pps: Sequence[int] = CHAIN_PPS) -> dict[str, dict[str, float]]:
    """Accuracy and mean logit difference (correct - wrong verb) on incongruent NounPP chains of each length
    in ``pps`` (200 SP and 200 PS items each): ``{"3": {"accuracy", "mean_logit_diff"}, ...}`` by distance."""
    from gatescope.inputs.stimuli.agreement import chain_items

    out = {}
    for k in pps:
        result = evaluate_agreement(model, chain_items(k))
        out[str(3 * k)] = {"accuracy": result["accuracy"], "mean_logit_diff": result["mean_logit_diff"]}
    return out


def cell_findings(model_path: Path, stage: Stage = no_stage) -> dict[str, Any]:
    """One model of the cell comparison: its cell, size, training and held-out loss, accuracy on the bundled
    stimuli (`accuracy_findings`) and on NounPP chains (`chain_findings`)."""
    from gatescope.inputs.stimuli.agreement import bundled_stimuli_path
    from gatescope.kinds import cell_type_of

    name = model_path.stem
    model = gatescope.load(model_path).eval()
    info = model.modules_info[0]
    with stage(f"{name}: accuracy on the bundled stimuli and on NounPP chains"):
        accuracy = accuracy_findings(model, read_stimuli(bundled_stimuli_path()))
        chains = chain_findings(model)
    training = model.metadata["training"]
    return {"model": model_path.name, "cell": cell_type_of(info).describe(), "hidden_size": info["hidden_size"],
            "parameters": sum(p.numel() for n, p in model.named_parameters() if n.startswith("rnn.")),
            "training": {k: training.get(k) for k in ("steps", "batch_size", "lr", "time_s")},
            "heldout_loss": model.metadata["metrics"].get("heldout_loss"), **accuracy, "chains": chains}


def _profile(trace: Trace, unit: str) -> dict[str, list[list[float]]]:
    """{kind: [values at each token of each sequence]} of ``unit`` (gate_profile, as plain numbers)."""
    from gatescope.analysis.dynamics import gate_profile

    return {kind: [[round(float(v), 4) for v in seq] for seq in values]
            for kind, values in gate_profile(trace, unit, range(trace.num_sequences)).items()}


def large_findings(model_path: Path, figure: Path | None, draws: int = 10, screen_items: int = 50,
                   layer1_screened: int = 32, seed: int = 0, stage: Stage = no_stage) -> dict[str, Any]:
    """Sparse number units in a 2-layer LSTM: AUC per layer, single-unit and set ablations, gate profile."""
    from gatescope.inputs.stimuli.agreement import (
        INCONGRUENT_NOUNPP,
        bundled_stimuli_path,
        generate_stimuli,
        split_lexicon,
    )

    name = model_path.stem
    model = gatescope.load(model_path).eval()
    info = model.modules_info[0]
    items = read_stimuli(bundled_stimuli_path())
    with stage(f"{name}: accuracy on the bundled stimuli"):
        accuracy = accuracy_findings(model, items)
    with stage(f"{name}: ranking the h units of both layers"):
        nounpp = ("nounpp_SS", "nounpp_SP", "nounpp_PS", "nounpp_PP")
        trace = agreement_trace(model, generate_stimuli(100, seed=1, conditions=nounpp), kinds=["h"])
        ranking = rank_units(trace, feature="subject_number", kinds="h", metric="auc", permutations=0)
        del trace
        layers = sorted({r["name"] for r in ranking})
        per_layer = {n: [r for r in ranking if r["name"] == n] for n in layers}
    incongruent = [it for it in items if it.condition in INCONGRUENT_NOUNPP]
    full = agreement_metric(model, incongruent)
    screen = agreement_metric(model, [it for c in INCONGRUENT_NOUNPP
                                      for it in [i for i in incongruent if i.condition == c][:screen_items]])
    top_layer = layers[-1]
    screened = [r["unit"] for r in per_layer[top_layer]]
    screened += [r["unit"] for r in per_layer[layers[0]][:layer1_screened]] if len(layers) > 1 else []
    with stage(f"{name}: ablating each of {len(screened)} units alone"):
        base = screen([])
        drops = {u: base - screen(causal.ablate([u])) for u in screened}
        candidates = sorted((u for u, d in drops.items() if d >= CARRIES_NUMBER / 2), key=lambda u: -drops[u])
        base_full = full([])
        strongest = sorted(drops, key=lambda u: -drops[u])[:8]  # shown even when none reaches the criterion
        confirmed = {u: base_full - full(causal.ablate([u])) for u in dict.fromkeys(candidates + strongest)}
        carriers = [u for u in sorted(confirmed, key=lambda u: -confirmed[u]) if confirmed[u] >= CARRIES_NUMBER]
        auc = {r["unit"]: r["score"] for r in ranking}
        by_condition = {c: agreement_metric(model, incongruent, [c]) for c in INCONGRUENT_NOUNPP}
        singles = [{"unit": u, "drop": confirmed[u], "auc": auc[u],
                    "by_condition": {c: m(causal.ablate([u])) for c, m in by_condition.items()}}
                   for u in sorted(confirmed, key=lambda u: -confirmed[u])[:8]]
    with stage(f"{name}: top-k sets of layer {top_layer} against {draws} random sets"):
        top_ranking = Table(per_layer[top_layer], ranking.columns)
        ks = [k for k in (1, 2, 4, 8, 16, 32) if 2 * k <= info["hidden_size"]]  # random sets need a pool
        sets = _ablation_rows(full, model, top_ranking, ks, draws, seed)
        test_part = split_lexicon(seed)[1]
        independent = agreement_metric(model, generate_stimuli(200, seed=2, conditions=INCONGRUENT_NOUNPP,
                                                               lexicon=test_part))
        carrier_sets = {"units": carriers, "drop": full([]) - full(causal.ablate(carriers)) if carriers else 0.0,
                        "independent_baseline": independent([]),
                        "independent_drop": independent([]) - independent(causal.ablate(carriers)) if carriers
                        else 0.0}
    costly = max(confirmed, key=lambda u: confirmed[u])
    if confirmed[costly] > 0:
        best, why = costly, f"its ablation alone costs most: {100 * confirmed[costly]:.1f} points"
    else:  # no single unit matters: show the one that codes number best
        best = per_layer[top_layer][0]["unit"]
        why = f"the highest AUC of layer {len(layers)}, {auc[best]:.3f}: no single ablation costs anything"
    with stage(f"{name}: gate profile of {best}"):
        sentences = sentences_trace(model, LAKRETZ)
        profile = _profile(sentences, best)
        if figure is not None:
            plot_gate_profile(sentences, best, range(len(LAKRETZ)), figure,
                              title=f"{name}: {best} (AUC {auc[best]:.3f})")
    return {
        "model": model_path.name, "cell": info["cell"], "hidden_size": info["hidden_size"],
        "num_layers": len(layers), "training": {k: model.metadata["training"].get(k)
                                               for k in ("steps", "batch_size", "lr", "lexicon", "time_s", "threads")},
        "vocab_size": len(model.vocab), "heldout_loss": model.metadata["metrics"].get("heldout_loss"),
        **accuracy,
        "units_auc_90": {n: sum(r["score"] >= 0.9 for r in rows) for n, rows in per_layer.items()},
        "ranking_top": {n: [{"unit": r["unit"], "score": r["score"]} for r in rows[:5]]
                        for n, rows in per_layer.items()},
        "baseline_incongruent_nounpp": base_full, "screen_items": 2 * screen_items, "screened": len(screened),
        "screen_drops_over_half_criterion": len(candidates), "criterion": CARRIES_NUMBER,
        "carriers": [{"unit": u, "drop": confirmed[u], "auc": auc[u]} for u in carriers],
        "single_ablations": singles, "set_ablations": sets, "carrier_set": carrier_sets, "draws": draws,
        "best_unit": best, "best_unit_why": why, "screen_max_drop": max(drops.values()),
        "profile_sentences": list(LAKRETZ), "profile": profile,
        "figure": figure.name if figure else None,
    }


def large_model_path(given: Path | None, say: Callable[[str], None]) -> Path | None:
    """The 2x650 model to analyse: ``given`` (which must exist), else the bundled one if it is there;
    None, said in one line through ``say``, when there is none."""
    from gatescope import sample_models

    if given is not None:
        if not given.is_file():
            raise GatescopeError(f"--model {given}: no such file")
        return given
    path = sample_models.path(f"{LARGE_MODEL}.safetensors")
    if path.exists():
        return path
    say(f"{LARGE_MODEL} is not bundled (gatescope samples train --only {LARGE_MODEL}, about 30 minutes on one "
        "core, then --model PATH): its section is skipped")
    return None


def run_findings(out: Path, draws: int = 20, only: str | None = None, stage: Stage = no_stage,
                 save_traces: bool = True, large_model: Path | None = None,
                 say: Callable[[str], None] = lambda line: None) -> dict[str, Any]:
    """Every finding on the bundled sample models; traces and figures written under ``out``
    (``{model}.trace.safetensors``, ``number_unit_{model}.png``). Returns the JSON document.

    The 2x650 model is read from ``large_model`` (default: the bundled one, when it is there); when
    there is none, ``say`` gets one line saying so and its section is skipped."""
    from gatescope import sample_models

    # the char model first: its traces are the largest, and what it frees goes back to the system
    # before the agreement models run (`gatescope findings` trims the heap after each stage)
    code = None
    if only in (None, "code"):
        path = sample_models.path(f"{CODE_MODEL}.safetensors")
        if not path.exists():
            raise GatescopeError(f"the sample model {path} is missing: gatescope samples train --only {CODE_MODEL}")
        save = out / "pysource_heldout.trace.safetensors" if save_traces else None
        code = code_findings(path, save_trace=save, stage=stage)
    results: dict[str, Any] = {}
    if only in (None, "agreement"):
        results["agreement"] = []
        for stem in AGREEMENT_MODELS:
            path = sample_models.path(f"{stem}.safetensors")
            if not path.exists():
                raise GatescopeError(f"the sample model {path} is missing: gatescope samples train --only {stem}")
            save = out / f"{stem}.trace.safetensors" if save_traces else None
            results["agreement"].append(agreement_findings(path, out / f"number_unit_{stem}.png", draws=draws,
                                                           save_trace=save, stage=stage))
        results["agreement_cells"] = []
        for stem in (*AGREEMENT_MODELS, *CELL_MODELS):
            path = sample_models.path(f"{stem}.safetensors")
            if not path.exists():
                raise GatescopeError(f"the sample model {path} is missing: gatescope samples train --only {stem}")
            results["agreement_cells"].append(cell_findings(path, stage=stage))
        path = large_model_path(large_model, say)
        if path is not None:
            results["agreement_large"] = large_findings(path, out / f"number_unit_{path.stem}.png",
                                                        draws=min(draws, 10), seed=0, stage=stage)
    if code is not None:
        results["code"] = code
    return results

