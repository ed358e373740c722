"""gatescope.analysis: find the units of an LSTM or GRU that track a feature, and test them.

Re-exports only; each concept lives in its own module:

- ranking (`rank_units`): every unit scored against a per-token label, with permutation p-values;
- probes (`probe_units`, `fit_probe`): diagnostic classifiers, control tasks, top-k curves;
- dynamics (`saturation`, `timescales`, `weight_timescales`, `plot_gate_profile`);
- causal (`ablate`, `patch`, `set_effect`, `sweep`, `greedy_search`, metrics);
- logits (`logit_diff`): the logit difference every metric and target reads;
- attribution (`token_attributions`, `unit_attributions`, `gradient_x_activation`; captum);
- patterns (`select`, `match`): LSTMVis's select-and-match;
- agreement (`read_stimuli`, `evaluate_agreement`, `ablation_interventions`, `agreement_metric`): agreement
  accuracy;
- streaming, stream_analyses (`StreamingRanking`, `StreamingSaturation`, `StreamingProbes`): the
  same analyses in one pass over a corpus, from mergeable accumulators.

Nothing here imports matplotlib or captum until a function that needs it runs.
"""
from gatescope.analysis.agreement import ablation_interventions, agreement_metric, evaluate_agreement
from gatescope.analysis.attribution import (
    gradient_x_activation,
    logit_difference_target,
    token_attributions,
    unit_attributions,
)
from gatescope.analysis.causal import (
    Metric,
    SetEffect,
    ablate,
    greedy_search,
    loss_metric,
    patch,
    set_effect,
    sweep,
    top_k,
)
from gatescope.analysis.dynamics import (
    gate_profile,
    plot_gate_profile,
    saturation,
    timescales,
    weight_timescales,
)
from gatescope.analysis.labels import Labels, read_labels_file, resolve_labels
from gatescope.analysis.patterns import Selection, match, select
from gatescope.analysis.probes import (
    Probe,
    control_labels,
    evaluate_probe,
    fit_probe,
    probe_units,
)
from gatescope.analysis.ranking import rank_units
from gatescope.analysis.streaming.analyses import StreamingProbes, StreamingRanking, StreamingSaturation
from gatescope.analysis.table import Table
from gatescope.inputs.stimuli.agreement import read_stimuli

__all__ = [
    "Labels", "Metric", "Probe", "Selection", "SetEffect", "StreamingProbes", "StreamingRanking",
    "StreamingSaturation", "Table", "ablate", "ablation_interventions", "agreement_metric",
    "control_labels", "evaluate_agreement", "evaluate_probe", "fit_probe", "gate_profile", "gradient_x_activation",
    "greedy_search", "logit_difference_target", "loss_metric", "match", "patch", "plot_gate_profile", "probe_units",
    "rank_units", "read_labels_file", "read_stimuli", "resolve_labels", "saturation", "select", "set_effect",
    "sweep", "timescales", "token_attributions", "top_k", "unit_attributions", "weight_timescales",
]
