"""The findings JSON (gatescope.findings.study) as Markdown: the full report, and the blocks that
docs/findings.md and sample_models/README.md embed, so that no figure is written down twice.

An embedded block sits between ``<!-- findings:NAME -->`` and ``<!-- /findings:NAME -->`` lines;
`update_markdown` rewrites every block of a file from a findings document and `stale_blocks` names
the blocks that disagree with it (the docs test). Probe accuracies always come with their control
task and selectivity (Hewitt & Liang 2019).
"""
from __future__ import annotations

import random
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gatescope.errors import GatescopeError
from gatescope.files import atomic_write, read_limited, reading
from gatescope.validation.limits import MAX_WHOLE_BYTES

GOAL_POINTS = 50.0  # the top-4 drop on the independent set that counts as a robust number-unit effect
RANDOM_POINTS = 5.0  # what random sets of 4 may cost at most


def _pts(x: float) -> str:
    return f"{100 * x:.1f}"


def _short(units: list[str]) -> str:
    """rnn.l0.fwd.h:96, rnn.l0.fwd.h:22 -> h:96, 22"""
    names = [u.rsplit(".", 1)[-1] for u in units]
    return ", ".join([names[0], *(n.split(":")[1] for n in names[1:])]) if names else ""


def _stem(res: dict[str, Any]) -> str:
    return res["model"].removesuffix(".safetensors")


def _probe_table(rows: list[tuple[str, dict[str, Any]]]) -> list[str]:
    lines = ["| model | probe on | majority class | accuracy | control task | selectivity | units for 95% |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for model, p in rows:
        lines.append(f"| {model} | {p['name']} | {p['baseline']:.3f} | {p['score']:.3f} | {p['control']:.3f} | "
                     f"{p['selectivity']:+.3f} | {p['k95']} |")
    return lines


def number_units(results: dict[str, Any]) -> list[str]:
    """Top-k ablations on the bundled stimuli, patching, probes."""
    agreement = results.get("agreement", [])
    if not agreement:
        return []
    draws = agreement[0]["draws"]
    lines = ["**Number units.** On the incongruent NounPP items of the bundled stimuli (\"the boy near the cars "
             "greets\": SP, PS; 200 each, every subject-verb pair held out of training, see below), the h units "
             "with the highest subject-number AUC (ranked on other generated items) are held at zero, against "
             f"{draws} random sets of as many other h units (the drop's 95% interval from a paired bootstrap over "
             "the items):", "",
             "| model | top-4 units (by AUC) | accuracy before | NounPP SP / PS after | drop | "
             f"{draws} random sets of 4: drop |", "| --- | --- | --- | --- | --- | --- |"]
    for res in agreement:
        a = res["ablations"][-1]
        sp, ps = (a["by_condition"][c] for c in ("nounpp_SP", "nounpp_PS"))
        drop = _drop(res["scope"]["bundled"]) if "scope" in res else f"{_pts(a['drop'])}"
        lines.append(f"| {_stem(res)} | {_short(a['units'])} | {res['baseline_incongruent_nounpp']:.3f} | "
                     f"{sp:.3f} / {ps:.3f} | {drop} points | {_pts(a['random_drop_mean'])} ± "
                     f"{_pts(a['random_drop_std'])} points |")
    ks = [a["k"] for a in agreement[0]["ablations"]]
    lines += ["", "Drop (points) when the top k are held at zero:", "",
              "| model | " + " | ".join(f"k = {k}" for k in ks) + " |", "| --- |" + " --- |" * len(ks)]
    for res in agreement:
        lines.append(f"| {_stem(res)} | " + " | ".join(_pts(a["drop"]) for a in res["ablations"]) + " |")
    lines.append("")
    for res in agreement:
        pt = res["patching"]
        lines.append(f"- {_stem(res)}: {res['significant_units']} of {res['units_ranked']} h units correlate with "
                     f"number (family-wise p < 0.01), {res['units_auc_90']} reach AUC >= 0.9 alone; patching the "
                     f"top {pt['k']} from the run with the subject in the other number flips "
                     f"{_pts(pt['flipped'])}% of the verb choices (random sets: {_pts(pt['random_flipped_mean'])}%, "
                     f"all h units: {_pts(pt['all_h_flipped'])}%).")
    lines += ["", "Linear probes for subject number on every token from the subject to the verb (held-out "
              "sentences); the control task gives each word type a random label (Hewitt & Liang 2019), "
              "selectivity = accuracy - control:", ""]
    lines += _probe_table([(_stem(res), p) for res in agreement for p in res["probes"]])
    return lines


def _drop(effect: dict[str, Any]) -> str:
    """A drop in points with its 95% interval and the number of items: ``84.0 [80.5, 87.5] (n 400)``."""
    low, high = effect["drop_ci95"]
    return f"{_pts(effect['drop'])} [{_pts(low)}, {_pts(high)}] (n {effect['baseline']['n']})"


def scope(results: dict[str, Any]) -> list[str]:
    """The top-4 drop by how the items were drawn: bundled (held-out pairs) and a random draw, by pair."""
    agreement = [res for res in results.get("agreement", []) if "scope" in res]
    if not agreement:
        return []
    draw = agreement[0]["scope"]["random"]
    lines = ["**Which items need the number units?** Every bundled item joins its subject to its verb with a "
             "lemma pair the training grammar never joins (a held-out pair: `gatescope samples stimuli --draw "
             "held-out`). Beside them, incongruent NounPP items drawn at random from the same lexicon, every "
             f"(subject, verb) pair equally likely and nothing filtered ({draw['per_condition']} per condition, "
             f"seed {draw['seed']}: `gatescope samples stimuli --draw random`; about 3 pairs in 4 are training "
             "pairs). Drop in points when the top 4 are held at zero, with its 95% interval (paired bootstrap "
             "over the items):", "",
             "| model | top 4 | bundled items (held-out pairs) | random draw | random draw, held-out pairs | "
             "random draw, training pairs |", "| --- | --- | --- | --- | --- | --- |"]
    for res in agreement:
        sc = res["scope"]
        pairs = sc["random"]["by"]["pair"]
        lines.append(f"| {_stem(res)} | {_short(sc['units'])} | {_drop(sc['bundled'])} | {_drop(sc['random'])} | "
                     f"{_drop(pairs['held-out'])} | {_drop(pairs['training'])} |")
    lines.append("")
    for res in agreement:
        pairs = res["scope"]["random"]["by"]["pair"]
        subjects = [e["drop"] for e in res["scope"]["random"]["by"]["subject"].values()]
        held, trained = pairs["held-out"], pairs["training"]
        apart = held["drop_ci95"][0] > trained["drop_ci95"][1]
        lines.append(f"- {_stem(res)}: {_pts(held['drop'])} points on held-out pairs, {_pts(trained['drop'])} on "
                     f"training pairs{' (the intervals do not overlap)' if apart else ''}; per subject noun the drop "
                     f"ranges from {_pts(min(subjects))} to {_pts(max(subjects))} points (each noun appears with "
                     "both kinds of pair, so the noun does not explain it).")
    lines += ["", "So the headline effect is a finding about generalisation, not about agreement in general: the "
              "number units carry agreement where the subject and the verb were never seen together; for pairs "
              "seen in training, the models have another route (the verb form learned with that subject), and "
              "holding the units at zero costs little. A random draw mixes the two in proportion to the lexicon, "
              "which is why it shows a fraction of the bundled items' effect. `gatescope agreement MODEL --stimuli "
              "ITEMS --ablate UNITS --by pair` breaks any item set down the same way."]
    return lines


def independent_sets(results: dict[str, Any]) -> list[str]:
    """Rank on one half of the lexicon, ablate on the other: the top-4 figures and the k curve."""
    agreement = [res for res in results.get("agreement", []) if "independent" in res]
    if not agreement:
        return []
    first = agreement[0]["independent"]
    rank_lex, test_lex = first["rank_lexicon"], first["test_lexicon"]
    lines = ["**Do they hold on items nobody ranked on?** Units are ranked on "
             f"{first['rank_items']} NounPP items drawn from one half of the lexicon (prepositions "
             f"{', '.join(rank_lex['preps'])}; {len(rank_lex['nouns']) // 2} nouns, {len(rank_lex['verbs']) // 2} "
             f"verbs) and ablated on {first['test_items']} incongruent NounPP items from the other half "
             f"({', '.join(test_lex['preps'])}; no noun, verb or preposition in common; held-out pairs, as the "
             "bundled items; "
             "`gatescope.inputs.stimuli.agreement.split_lexicon`):", "",
             "| model | top 4 ranked on the first half | drop on the ranking set | drop on the independent set "
             "| random sets of 4 (independent set) |", "| --- | --- | --- | --- | --- |"]
    for res in agreement:
        ind = res["independent"]
        own, other = ind["ranking_set"]["ablations"][0], ind["independent_set"]["ablations"][3]
        top4 = ind["independent_set"].get("top4_effect")
        lines.append(f"| {_stem(res)} | {_short(own['units'])} | {_pts(own['drop'])} points | "
                     f"{_drop(top4) if top4 else _pts(other['drop'])} points | {_pts(other['random_drop_mean'])} ± "
                     f"{_pts(other['random_drop_std'])} points |")
    ks = [a["k"] for a in first["independent_set"]["ablations"]]
    lines += ["", "What set size does on the independent set (drop in points, top k / mean of random sets of k):",
              "", "| model | " + " | ".join(f"k = {k}" for k in ks) + " |", "| --- |" + " --- |" * len(ks)]
    for res in agreement:
        rows = res["independent"]["independent_set"]["ablations"]
        lines.append(f"| {_stem(res)} | " + " | ".join(f"{_pts(a['drop'])} / {_pts(a['random_drop_mean'])}"
                                                    for a in rows) + " |")
    lines.append("")
    for res in agreement:
        lines.append(f"- {_verdict(res)}")
    return lines


def _verdict(res: dict[str, Any]) -> str:
    """Whether the top-4 effect holds on the independent set, and if not what the figures say instead."""
    ind = res["independent"]
    rows = ind["independent_set"]["ablations"]
    four, last = rows[3], rows[-1]
    random_ok = 100 * four["random_drop_mean"] < RANDOM_POINTS
    head = (f"{_stem(res)}: the top 4 cost {_pts(four['drop'])} points on the independent set "
            f"(goal {GOAL_POINTS:.0f}; random sets {_pts(four['random_drop_mean'])}, "
            f"{'under' if random_ok else 'not under'} {RANDOM_POINTS:.0f}).")
    if 100 * four["drop"] >= GOAL_POINTS:
        return head + " The effect holds on items that share no word with the ranking set."
    k95 = {p["name"].rsplit(".", 1)[-1]: p["k95"] for p in res["probes"]}
    best = max(rows, key=lambda a: a["drop"])
    return (head + f" Below the goal: number is coded redundantly and spread over many units. "
            f"{ind['units_auc_90']} of {ind['units_ranked']} h units separate singular from plural with AUC >= 0.9 "
            f"on the ranking set and {res['significant_units']} correlate significantly, so removing 4 leaves "
            f"others that carry it; the drop grows with the set (k = {best['k']}: {_pts(best['drop'])} points, "
            f"k = {last['k']}: {_pts(last['drop'])}), and a probe reaches 95% of its accuracy from "
            f"{k95.get('h', '?')} h unit(s) of any of these sets.")


def gate_profile(results: dict[str, Any]) -> list[str]:
    agreement = results.get("agreement", [])
    if not agreement:
        return []
    top = agreement[0]["ranking_top"][0]
    return [f"The strongest {_stem(agreement[0])} number unit, {top['unit']} (AUC {top['score']:.3f}), across "
            "\"the boy(s) near the car(s) greet(s)\" (the picture of Lakretz et al. Fig. 1; `gatescope findings` "
            f"draws it as {agreement[0]['figure']}):"]


def default_reasoning(results: dict[str, Any]) -> list[str]:
    """Each part's mean contribution to the NounPP verb's logit difference, by subject number and method."""
    models = [m for m in results.get("agreement", []) if "default_reasoning" in m]
    if not models:
        return []
    first = models[0]["default_reasoning"]
    parts = first["parts"]
    lines = ["**Default reasoning** (Jumelet, Zuidema & Hupkes 2019): the verb's logit difference, logit(correct) - "
             "logit(wrong), after the NounPP prefixes of the bundled stimuli (\"the boy(s) near the car(s)\", "
             f"{first['by_subject']['singular']['items']} items a subject number), split by decomposition into the "
             "constants (biases), the subject noun, the attractor noun and the other words (mean over items; gcd "
             "parts need not add up to the total, shapley parts do):", "",
             "| model | subject | method | " + " | ".join(parts) + " | total |",
             "| --- | --- | --- |" + " --- |" * (len(parts) + 1)]
    for m in models:
        for number, row in m["default_reasoning"]["by_subject"].items():
            for method in m["default_reasoning"]["methods"]:
                lines.append(f"| {_stem(m)} | {number} | {method} | "
                             + " | ".join(f"{row[method][p]:.2f}" for p in parts) + f" | {row['total']:.2f} |")
    lines.append("")
    for m in models:
        gcd = m["default_reasoning"]["by_subject"]
        sg, pl = gcd["singular"]["gcd"], gcd["plural"]["gcd"]
        default = sg["constants"] > max(pl["constants"], 0)
        lines.append(f"- {_stem(m)}: by gcd the constants add {sg['constants']:.2f} to a singular verb's lead and "
                     f"{pl['constants']:.2f} to a plural one's, the subject {sg['subject']:.2f} and "
                     f"{pl['subject']:.2f}: " + ("singular works as a default here too, as in Jumelet et al.'s LM" if default
                                                 else "no singular default here, unlike Jumelet et al.'s LM") + ".")
    return lines


def _agreement_models(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Every agreement model with accuracies: the number-unit models, the other cells compared, the 2x650."""
    large = results.get("agreement_large")
    first = results.get("agreement", [])
    cells = [m for m in results.get("agreement_cells", []) if m["model"] not in {f["model"] for f in first}]
    return [*first, *cells, *([large] if large else [])]


def accuracy_tables(results: dict[str, Any]) -> list[str]:
    """Accuracy per construction and number condition, and per distance, for every agreement model."""
    from gatescope.inputs.stimuli.agreement import CONDITIONS, STRUCTURES, distance, make_stimulus

    models = _agreement_models(results)
    if not models:
        return []
    lines = ["Agreement accuracy on the bundled held-out stimuli (200 items a condition, Simple 60; no training "
             "sentence begins with one), per construction (an example item, its distance: tokens between subject "
             "and verb) and number condition: subject, then attractor(s), S singular, P plural; "
             "incongruent SP and PS are the hard ones:", "",
             "| construction | distance | conditions | " + " | ".join(_stem(m) for m in models) + " |",
             "| --- | --- | --- |" + " --- |" * len(models)]
    for structure, n in STRUCTURES.items():
        conditions = [c for c in CONDITIONS if c.rpartition("_")[0] == structure]
        if not all(c in m["accuracy_by_condition"] for m in models for c in conditions):
            continue
        example = make_stimulus(structure, 0, 0, "SP" if n == 2 else "S", random.Random(0))
        cells = ["/".join(f"{m['accuracy_by_condition'][c]:.3f}" for c in conditions) for m in models]
        lines.append(f"| {structure}: {' '.join(example.tokens)} | {distance(conditions[0])} | "
                     f"{'/'.join(c.rpartition('_')[2] for c in conditions)} | " + " | ".join(cells) + " |")
    distances = sorted({int(d) for m in models for d in m.get("accuracy_by_distance", {})})
    if distances:
        lines += ["", "Per distance (all items at that distance / the incongruent ones):", "",
                  "| distance | " + " | ".join(_stem(m) for m in models) + " |", "| --- |" + " --- |" * len(models)]
        for d in distances:
            cells = []
            for m in models:
                all_, inc = m["accuracy_by_distance"].get(str(d)), m["accuracy_by_distance_incongruent"].get(str(d))
                cells.append(("-" if all_ is None else f"{all_:.3f}") + " / " + ("-" if inc is None else f"{inc:.3f}"))
            lines.append(f"| {d} | " + " | ".join(cells) + " |")
    lines.append("")
    for m in models:
        worst = sorted((v, c) for c, v in m["accuracy_by_condition"].items() if v < 0.995)
        where = ("below 0.995 on " + ", ".join(f"{c} {v:.3f}" for v, c in worst[:6]) if worst
                 else "at 0.995 or above in every condition: these stimuli do not find where it breaks")
        lines.append(f"- {_stem(m)} ({m['cell']}, {m['hidden_size']} units): {where}.")
    return lines


def cell_comparison(results: dict[str, Any]) -> list[str]:
    """The cells side by side: size, held-out loss, the bundled stimuli's hardest figures, NounPP chains."""
    cells = results.get("agreement_cells", [])
    if not cells:
        return []
    distances = list(cells[0]["chains"])
    lines = ["**The cells compared.** Each model below is an embedding of 32, one recurrent layer and a decoder, "
             "trained on the same grammar with the same budget (Adam, 3000 steps of 64 sentences; `gatescope samples "
             "train`). The plain RNN is the seed's h = tanh(W x + b + U h + b'); the peephole LSTM (Gers & "
             "Schmidhuber 2000; Greff et al. 2017's \"vanilla\" LSTM) and the coupled one (f = 1 - i, their CIFG) "
             "each differ from agreement_lstm in that one respect. Accuracy on the bundled stimuli (all items; the "
             "incongruent ones; the worst condition) and its lowest per distance:", "",
             "| model | cell | units | parameters | held-out loss | training | bundled: all / incongruent | "
             "worst condition | worst distance |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    from gatescope.inputs.stimuli.agreement import is_incongruent

    for m in cells:
        by = m["accuracy_by_condition"]
        inc = [v for c, v in by.items() if is_incongruent(c)]
        worst_c = min(by, key=lambda c: by[c])
        dist = m["accuracy_by_distance"]
        worst_d = min(dist, key=lambda d: dist[d])
        worst = (f"{worst_c} {by[worst_c]:.3f}" if by[worst_c] < 1 else "none below 1.000",
                 f"{worst_d}: {dist[worst_d]:.3f}" if dist[worst_d] < 1 else "none below 1.000")
        lines.append(f"| {_stem(m)} | {m['cell']} | {m['hidden_size']} | {m['parameters']:,} | "
                     f"{m['heldout_loss']:.4f} | {m['training']['time_s']:.0f} s | {sum(by.values()) / len(by):.3f} / "
                     f"{sum(inc) / len(inc):.3f} | {worst[0]} | {worst[1]} |")
    lines += ["", "Beyond the grammar: incongruent NounPP chains (\"the boy near the cars behind the dogs ... greets\", "
              "every attractor in the other number; 400 items a length, held-out subject-verb pairs; "
              "`gatescope.inputs.stimuli.agreement.chain_items`). The training grammar's longest subject-verb span is "
              "12 tokens; accuracy, then the mean logit difference of the correct over the wrong verb:", "",
              "| distance | " + " | ".join(_stem(m) for m in cells) + " |", "| --- |" + " --- |" * len(cells)]
    for d in distances:
        lines.append(f"| {d} | " + " | ".join(f"{m['chains'][d]['accuracy']:.3f} ({m['chains'][d]['mean_logit_diff']:+.1f})"
                                            for m in cells) + " |")
    lines.append("")
    for m in cells:
        chain = [m["chains"][d]["accuracy"] for d in distances]
        broken = [d for d in distances if m["chains"][d]["accuracy"] < 0.95]
        where = (f"falls below 0.95 at distance {broken[0]}" if broken
                 else f"at {min(chain):.3f} or above up to distance {distances[-1]}")
        lines.append(f"- {_stem(m)} ({m['cell']}): {where}.")
    return lines


def large_model(results: dict[str, Any]) -> list[str]:
    """Sparse number units in the 2x650 LSTM, or one line saying it was not analysed."""
    from gatescope.findings.study import LARGE_MODEL

    res = results.get("agreement_large")
    if not res:
        return [f"`{LARGE_MODEL}` was not analysed in this run: it is not bundled (`gatescope samples train --only "
                f"{LARGE_MODEL}` trains it, then `gatescope findings --model PATH`)."]
    t = res["training"]
    layers = list(res["units_auc_90"])
    top = layers[-1]
    auc = ", ".join(f"layer {i + 1} ({n}): {res['units_auc_90'][n]} of {res['hidden_size']}"
                    for i, n in enumerate(layers))
    carriers = res["carriers"]
    names = ", ".join(f"{c['unit']} ({_pts(c['drop'])} points)" for c in carriers) or "none"
    in_top = sum(c["unit"].startswith(top + ":") for c in carriers)
    lines = [f"**Sparse number units in a Lakretz-sized LSTM.** `{_stem(res)}`: {res['num_layers']} x "
             f"{res['hidden_size']} LSTM with a 650-wide embedding (Gulordava et al. 2018's shape), vocabulary of "
             f"{res['vocab_size']} words (the large lexicon), {t['steps']} steps of {t['batch_size']} sentences in "
             f"{t['time_s'] / 60:.1f} minutes wall with {t['threads']} thread; held-out loss {res['heldout_loss']}. "
             f"Units whose h alone separates singular from plural subjects with AUC >= 0.9 (NounPP items): {auc}. "
             f"Held at zero alone on the incongruent NounPP items (each of the {res['screened']} units screened: "
             f"every unit of the last layer and the first layer's highest-AUC ones, on {res['screen_items']} items, "
             f"then on all items where the screen cost >= {_pts(res['criterion'] / 2)} points), "
             f"{len(carriers)} units carry number by Lakretz et al.'s criterion (ablating one alone costs >= "
             f"{_pts(res['criterion'])} points; {in_top} in the last layer): {names}. Baseline accuracy "
             f"{res['baseline_incongruent_nounpp']:.3f}; the largest single-unit drop on the screen: "
             f"{_pts(res['screen_max_drop'])} points. The units that cost most alone, on all items:", "",
             "| unit | AUC | drop alone | NounPP SP / PS after |", "| --- | --- | --- | --- |"]
    for a in res["single_ablations"]:
        lines.append(f"| {a['unit']} | {a['auc']:.3f} | {_pts(a['drop'])} points | "
                     f"{a['by_condition']['nounpp_SP']:.3f} / {a['by_condition']['nounpp_PS']:.3f} |")
    cs = res["carrier_set"]
    lines += ["", f"Sets in the last layer (the top k by AUC held at zero, against {res['draws']} random sets of k "
              "of its other units; drop in points):", "",
              "| k | " + " | ".join(str(a["k"]) for a in res["set_ablations"]) + " |",
              "| --- |" + " --- |" * len(res["set_ablations"]),
              "| top k | " + " | ".join(_pts(a["drop"]) for a in res["set_ablations"]) + " |",
              "| random k | " + " | ".join(f"{_pts(a['random_drop_mean'])} ± {_pts(a['random_drop_std'])}"
                                          for a in res["set_ablations"]) + " |", ""]
    if cs["units"]:
        lines += [f"The {len(cs['units'])} carriers together cost {_pts(cs['drop'])} points on the bundled "
                  f"incongruent NounPP items and {_pts(cs['independent_drop'])} on 400 from the other half of the "
                  f"lexicon (baseline {cs['independent_baseline']:.3f}).", ""]
    best, prof = res["best_unit"], res["profile"]
    lines += [f"Gate profile of {best} ({res['best_unit_why']}) over the incongruent sentences "
              f"(`gatescope findings` draws all four as {res['figure']}):", ""]
    for s, sentence in enumerate(res["profile_sentences"]):
        if s not in (1, 2):  # the incongruent ones: SP, PS
            continue
        tokens = sentence.split()
        lines += [f"| {sentence} | " + " | ".join(tokens) + " |", "| --- |" + " --- |" * len(tokens)]
        for kind, values in prof.items():
            lines.append(f"| {kind} | " + " | ".join(f"{v:+.2f}" for v in values[s]) + " |")
        lines.append("")
    return lines[:-1]


# what a file lacks when a feature has one value only in it
FEATURE_NOUNS = {"in_string": "string literal", "in_comment": "comment", "bracket_depth": "bracket",
                 "indent_level": "indented block"}
METRIC_TITLES = {"auc": "ROC AUC", "corr": "Pearson r"}
AGAINST_NOUNS = {"code": "code", "in_string": "string literals", "in_comment": "comments"}


def _score(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def code_units(results: dict[str, Any]) -> list[str]:
    """The char model: bits per character, and per code feature the unit chosen on training files with its
    held-out score pooled and per file; the in_string probes with their control task."""
    code = results.get("code")
    if not code:
        return []
    model = code["model"].removesuffix(".safetensors")
    files = code["heldout_files"]
    bits = ", ".join(f"{name} {b:.3f}" for name, b in code["bits_per_char_by_file"].items())
    lines = [f"**Units of the char model.** `{model}` reads the {len(files)} held-out stdlib files (never trained "
             f"on; {code['heldout_tokens']} characters), each from a zero state, at {code['bits_per_char']:.3f} "
             f"bits per character (per file: {bits}). For each feature of Python's `tokenize` the c or h unit "
             f"that scores best on {len(code['train_files'])} training files is chosen there, then scored on "
             "the held-out files in the direction it was chosen in (ROC AUC for the binary features, Pearson r "
             "for the graded ones); the last column is the best unit chosen on the held-out files themselves, "
             "for comparison:", "",
             "| feature | unit (chosen on training files) | training | held-out, pooled | "
             + " | ".join(files) + " | best on held-out |",
             "| --- | --- | --- | --- |" + " --- |" * len(files) + " --- |"]
    missing = []
    for feature, res in code["units"].items():
        b = res["top"][0]
        per_file = [b["heldout_by_file"][name] for name in files]
        missing += [f"{name} has no {FEATURE_NOUNS[feature]}"
                    for name, v in zip(files, per_file) if v is None]
        held = res["best_heldout_unit"]
        lines.append(f"| {feature} ({METRIC_TITLES[res['metric']]}) | `{b['unit']}` ({b['direction']}) | "
                     f"{b['train_score']:.3f} | {b['heldout_score']:.3f} | " + " | ".join(map(_score, per_file))
                     + f" | `{held['unit']}` {held['score']:.3f} |")
    if missing:
        lines += ["", f"(n/a: {'; '.join(missing)}: the score is undefined there.)"]
    against = [(feature, res["top"][0]) for feature, res in code["units"].items() if "heldout_against" in res["top"][0]]
    if against:
        lines += ["", "The same units on the held-out files against each kind of character outside their feature "
                  "(ROC AUC; a unit that codes prose rather than strings or comments separates them from code "
                  "only): " + "; ".join(
                      f"{feature} `{b['unit']}`: " + ", ".join(f"{_score(v)} against {AGAINST_NOUNS[kind]}"
                                                              for kind, v in b["heldout_against"].items())
                      for feature, b in against) + "."]
    lines += ["", "Linear probes for `in_string` on the held-out files (top-k curve: "
              + "; ".join(f"{p['name']}: " + ", ".join(f"{k} units {v:.3f}" for k, v in p["curve"].items())
                          for p in code["probes"]) + "):", ""]
    lines += _probe_table([(model, p) for p in code["probes"]])
    for p in code["probes"]:
        if p["selectivity"] <= 0:
            lines += ["", f"The probe on {p['name']} is not selective: the control task, which sees only which "
                      f"character each token is, scores {p['control']:.3f} against its {p['score']:.3f}, so its "
                      "accuracy says nothing about what the cells add; the single unit's AUC is the figure to read."]
        else:
            lines += ["", f"The probe on {p['name']} beats its control task, which sees only which character each "
                      f"token is, by {p['selectivity']:.3f}: the cells add to what the character alone says."]
    return lines


def _join(*parts: list[str]) -> str:
    return "\n".join(line for part in parts if part for line in [*part, ""]).rstrip("\n")


def _first_table(lines: list[str]) -> list[str]:
    """The lines up to the end of the first table."""
    end = next((i for i, line in enumerate(lines) if i and line == "" and lines[i - 1].startswith("|")), len(lines))
    return lines[:end]


BLOCKS: dict[str, Callable[[dict[str, Any]], str]] = {
    "agreement-accuracy": lambda r: _join(accuracy_tables(r)),
    "number-units-2x650": lambda r: _join(large_model(r)),
    "cell-comparison": lambda r: _join(cell_comparison(r)),
    "number-units": lambda r: _join(number_units(r), scope(r), independent_sets(r), gate_profile(r)),
    "default-reasoning": lambda r: _join(default_reasoning(r)),
    "number-units-summary": lambda r: _join(_first_table(number_units(r)), _first_table(independent_sets(r))),
    "string-unit": lambda r: _join(code_units(r)),
}


def report(results: dict[str, Any]) -> str:
    """The whole findings document as Markdown (what `gatescope findings` prints and writes)."""
    names = (("agreement-accuracy", "cell-comparison", "number-units", "default-reasoning", "number-units-2x650")
             if results.get("agreement") else ())
    body = [BLOCKS[name](results).splitlines() for name in (*names, "string-unit")]
    return _join(["## Findings"], *body) + "\n"


def _pattern(name: str) -> re.Pattern[str]:
    return re.compile(rf"(<!-- findings:{re.escape(name)} -->\n)(.*?)(<!-- /findings:{re.escape(name)} -->)", re.S)


def render_blocks(text: str, results: dict[str, Any]) -> str:
    """``text`` with every findings block rewritten from ``results``."""
    for name, render in BLOCKS.items():
        text = _pattern(name).sub(lambda m, body=render(results): m.group(1) + body + "\n" + m.group(3), text)
    return text


def _read_markdown(path: Path) -> str:
    """A Markdown file of the user's, through the door of gatescope.files (regular, bounded, UTF-8)."""
    raw = read_limited(path, "Markdown file", MAX_WHOLE_BYTES)
    with reading(path, "Markdown file"):
        return raw.decode("utf-8")


def stale_blocks(path: str | Path, results: dict[str, Any]) -> list[str]:
    """The findings blocks of Markdown file ``path`` that differ from ``results`` (empty: all agree)."""
    text = _read_markdown(Path(path))
    return [name for name, render in BLOCKS.items()
            if (m := _pattern(name).search(text)) and m.group(2) != render(results) + "\n"]


def update_markdown(path: str | Path, results: dict[str, Any]) -> list[str]:
    """Rewrite the findings blocks of Markdown file ``path`` (all or nothing); the names of those found."""
    path = Path(path)
    text = _read_markdown(path)
    found = [name for name in BLOCKS if _pattern(name).search(text)]
    if not found:
        raise GatescopeError(f"{path} has no findings block (<!-- findings:NAME --> ... <!-- /findings:NAME -->; "
                             f"names: {', '.join(BLOCKS)})")
    new = render_blocks(text, results)
    atomic_write(path, lambda tmp: Path(tmp).write_text(new, encoding="utf-8"))
    return found
