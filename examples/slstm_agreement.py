"""A small sLSTM or mLSTM (Beck et al. 2024) trained on gatescope's agreement grammar, and its number units.

The study the README runs on ``agreement_lstm`` (Lakretz et al. 2019's experiment), on an xLSTM cell: train a
word LM (embedding -> the xlstm package's sLSTMLayer on the vanilla backend, or its mLSTMLayer -> linear
decoder) on the same grammar and schedule as the sample models (gatescope.samples.train), then

1. agreement accuracy per condition and per distance between subject and verb (bundled stimuli);
2. rank the sLSTM's h units by how well they separate singular from plural subjects (AUC);
3. hold the top k units of h at zero (gatescope's interventions flow through the package's own pointwise
   step) and measure incongruent NounPP accuracy, against random sets of k; the same with units ranked on one
   half of the lexicon and ablated on items of the other half (`independent_findings`).

Run ``python examples/slstm_agreement.py [--cell slstm|mlstm] [--steps 1500] [--out results.json]`` (needs
``gatescope[modern]``; about 8 minutes on one CPU core). Prints one JSON document.
"""
from __future__ import annotations

import argparse
import json
import time

import torch
from torch import nn

from gatescope.analysis import agreement_metric, causal
from gatescope.analysis.ranking import rank_units
from gatescope.findings.study import RANKING_CONDITIONS, accuracy_findings, agreement_trace, independent_findings
from gatescope.inputs.stimuli.agreement import (
    INCONGRUENT_NOUNPP,
    LEXICONS,
    bundled_stimuli_path,
    generate_stimuli,
    read_stimuli,
)
from gatescope.samples import data
from gatescope.samples.train import SampleConfig, _optimise
from gatescope.vocab import Vocabulary


class XLSTMLanguageModel(nn.Module):
    """ids (B, T) -> logits (B, T, V) through one sLSTMLayer (no convolution) or mLSTMLayer, with its vocabulary."""

    def __init__(self, vocab: Vocabulary, cell: str, size: int, heads: int) -> None:
        super().__init__()
        self.vocab = vocab
        self.embedding = nn.Embedding(len(vocab), size)
        if cell == "slstm":
            from xlstm.blocks.slstm.layer import sLSTMLayer, sLSTMLayerConfig

            self.rnn = sLSTMLayer(sLSTMLayerConfig(embedding_dim=size, num_heads=heads, backend="vanilla",
                                                   conv1d_kernel_size=0))
        else:
            from xlstm.blocks.mlstm.layer import mLSTMLayer, mLSTMLayerConfig

            self.rnn = mLSTMLayer(mLSTMLayerConfig(embedding_dim=size, num_heads=heads, context_length=64))
        self.decoder = nn.Linear(size, len(vocab))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.rnn(self.embedding(ids)))

    def encode(self, text: str) -> list[int]:
        return self.vocab.encode(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cell", choices=("slstm", "mlstm"), default="slstm")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--heads", type=int, default=2)
    parser.add_argument("--draws", type=int, default=20)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    torch.set_num_threads(1)
    config = SampleConfig(f"agreement_{args.cell}", "agreement", args.cell, args.size, args.size, 1, steps=args.steps,
                          batch_size=64, lr=3e-3, seed=1)
    torch.manual_seed(config.seed)
    lexicon = LEXICONS[config.lexicon]
    vocab = data.word_vocabulary(lexicon)
    model = XLSTMLanguageModel(vocab, args.cell, args.size, args.heads)
    stream = data.word_batches(vocab, config.batch_size, config.seed, lexicon)

    def losses():
        while True:
            inputs, targets = next(stream)
            yield lambda x=inputs, y=targets: nn.functional.cross_entropy(model(x).flatten(0, 1), y.flatten())

    began = time.perf_counter()
    _optimise(model, config, losses(), None)
    trained = time.perf_counter() - began

    items = read_stimuli(bundled_stimuli_path())
    accuracy = accuracy_findings(model, items)
    trace = agreement_trace(model, generate_stimuli(seed=1, conditions=RANKING_CONDITIONS), kinds=["h"])
    ranking = rank_units(trace, feature="subject_number", kinds="h", metric="auc", permutations=0)
    metric = agreement_metric(model, items, INCONGRUENT_NOUNPP)
    baseline = metric([])
    ablations = []
    for k in (1, 2, 4, 8):
        units = causal.top_k(ranking, k)
        effect = causal.set_effect(metric, units, model=model, draws=args.draws, seed=0, baseline=baseline)
        ablations.append({"k": k, "units": units, "accuracy": effect.value, "drop": effect.harm,
                          "random_drop_mean": effect.random_mean, "random_drop_std": effect.random_std})
    result = {
        "model": f"embedding {args.size} -> {model.rnn.__class__.__name__}({args.heads} heads) -> decoder",
        "steps": args.steps, "train_seconds": round(trained, 1),
        **accuracy,
        "ranking_top": [{"unit": r["unit"], "score": r["score"]} for r in ranking.head(8)],
        "units_auc_90": sum(r["score"] >= 0.9 for r in ranking), "units_ranked": len(ranking),
        "baseline_incongruent_nounpp": baseline,
        "ablations": ablations,
        "independent": independent_findings(model, ks=(1, 2, 4, 8), draws=args.draws),
    }
    text = json.dumps(result, indent=1, default=float)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
