"""Training of the bundled sample models, reproducibly from fixed seeds.

Each sample is a `SampleConfig`; `train_sample` trains one from scratch (torch seeded, a fixed
thread count, a seeded data order) and writes a gatescope checkpoint: safetensors tensors named
``embedding.weight``, ``rnn.*``, ``decoder.*`` and the ``__metadata__["gatescope"]`` JSON of
docs/architecture.md (vocabulary, roles, lexicon, training settings, measured metrics). The
tensors are the same on every run on the same machine; only the recorded training time differs.

Word models follow PyTorch's word_language_model example; the char model is trained with
truncated backpropagation through time over contiguous streams (Karpathy et al. 2015).
"""
from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from gatescope.analysis.agreement import evaluate_agreement
from gatescope.errors import GatescopeError
from gatescope.files import atomic_write, check_writable
from gatescope.inputs.stimuli.agreement import (
    INCONGRUENT_NOUNPP,
    LEXICONS,
    bundled_stimuli_path,
    read_stimuli,
    training_corpus,
)
from gatescope.recorder.variants import cells_metadata
from gatescope.samples import data
from gatescope.samples.model import LanguageModel
from gatescope.validation.safetensors import META_KEY
from gatescope.vocab import Vocabulary

Progress = Callable[[int, int], None]  # (steps done, total steps)

AGREEMENT_SAMPLE_TEXT = [
    "the boy near the cars greets",
    "the boys near the car greet",
    "the boy that the cars see greets",
    "the boys probably greet",
]
PYSOURCE_SAMPLE_TEXT = [
    'def greet(name):\n    """Say hello."""\n    return f"hello, {name}!"  # a greeting\n',
    "for i in range(len(items)):\n    if items[i] > (limit * 2):\n        print('big', i)\n",
    "data = {'key': [1, 2, (3, 4)], \"other\": None}\n",
]


@dataclass(frozen=True)
class SampleConfig:
    """How one sample model is trained."""

    name: str             # file stem in sample_models/
    corpus: str           # "agreement" (word grammar) or "pysource" (stdlib chars)
    cell: str             # "LSTM", "GRU" or "RNN" (tanh)
    embedding_size: int
    hidden_size: int
    num_layers: int
    steps: int
    batch_size: int
    lr: float
    seed: int
    bptt: int = 0         # char models: truncated-BPTT length
    threads: int = 1      # torch.set_num_threads, fixed for bitwise reproducibility
    lexicon: str = "small"  # agreement models: "small" or "large" (gatescope.inputs.stimuli.agreement.LEXICONS)
    cell_options: dict = field(default_factory=dict)  # a variant's keyword arguments (gatescope.recorder.variants)


SAMPLES: dict[str, SampleConfig] = {
    c.name: c
    for c in (
        SampleConfig("agreement_lstm", "agreement", "LSTM", 32, 128, 1, steps=3000, batch_size=64,
                     lr=3e-3, seed=1),
        SampleConfig("agreement_gru", "agreement", "GRU", 32, 64, 1, steps=3000, batch_size=64,
                     lr=3e-3, seed=2),
        # the seed's baseline, a plain tanh RNN: agreement_lstm's units and budget, about agreement_gru's parameters
        SampleConfig("agreement_rnn", "agreement", "RNN", 32, 128, 1, steps=3000, batch_size=64,
                     lr=3e-3, seed=5),
        # two of Greff et al. 2017's LSTM variants, each one change from agreement_lstm: peepholes (their
        # "vanilla" LSTM; Gers & Schmidhuber 2000) and coupled input and forget gates, f = 1 - i (their CIFG)
        SampleConfig("agreement_lstm_peephole", "agreement", "LSTM", 32, 128, 1, steps=3000, batch_size=64,
                     lr=3e-3, seed=6, cell_options={"peepholes": True}),
        SampleConfig("agreement_lstm_coupled", "agreement", "LSTM", 32, 128, 1, steps=3000, batch_size=64,
                     lr=3e-3, seed=7, cell_options={"coupling": "forget_from_input"}),
        # Gulordava et al. 2018's shape (embedding 650, 2 x 650 LSTM) on the large lexicon, sized
        # to train in under 30 minutes on one core (3,700 tokens/s measured: batch 64, ~0.36 s/step)
        SampleConfig("agreement_lstm_2x650", "agreement", "LSTM", 650, 650, 2, steps=3500, batch_size=64,
                     lr=2e-3, seed=4, lexicon="large"),
        SampleConfig("pysource_lstm", "pysource", "LSTM", 32, 192, 1, steps=6000, batch_size=16,
                     lr=3e-3, seed=3, bptt=512),
    )
}


def _lr_factor(step: int, steps: int) -> float:
    """Cosine decay from 1 to 0.1 over the run."""
    return 0.1 + 0.45 * (1 + math.cos(math.pi * step / max(1, steps)))


def _optimise(model: nn.Module, config: SampleConfig, losses, progress: Progress | None) -> None:
    """`config.steps` steps of Adam (cosine decay, gradients clipped at norm 1); `losses` yields
    functions of no argument, each computing the loss of the next batch."""
    optimiser = torch.optim.Adam(model.parameters(), lr=config.lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda s: _lr_factor(s, config.steps))
    model.train()
    for step in range(config.steps):
        loss = next(losses)()
        optimiser.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimiser.step()
        schedule.step()
        if progress is not None:
            progress(step + 1, config.steps)
    model.eval()


def _train_agreement(config: SampleConfig, progress: Progress | None) -> tuple[LanguageModel, dict, dict]:
    """A word LM on the agreement grammar; metrics on held-out grammar sentences and bundled stimuli."""
    lexicon = LEXICONS[config.lexicon]
    vocab = data.word_vocabulary(lexicon)
    model = LanguageModel(config.cell, len(vocab), config.embedding_size, config.hidden_size, config.num_layers,
                          config.cell_options)
    stream = data.word_batches(vocab, config.batch_size, config.seed, lexicon)

    def closures():
        while True:
            inputs, targets = next(stream)
            yield lambda x=inputs, y=targets: nn.functional.cross_entropy(model(x).flatten(0, 1), y.flatten())

    _optimise(model, config, closures(), progress)
    heldout = data.pad_sentences(vocab, training_corpus(2000, seed=config.seed + 1000, lexicon=lexicon))
    with torch.no_grad():
        loss = nn.functional.cross_entropy(model(heldout[0]).flatten(0, 1), heldout[1].flatten())
    result = evaluate_agreement(model, read_stimuli(bundled_stimuli_path()), vocab=vocab)
    metrics = {
        "heldout_loss": round(float(loss), 4),
        "agreement_accuracy": round(result["accuracy"], 4),
        "agreement_by_condition": {c: round(r["accuracy"], 4) for c, r in result["by_condition"].items()},
        "nounpp_incongruent_accuracy": round(
            sum(result["by_condition"][c]["accuracy"] for c in INCONGRUENT_NOUNPP) / len(INCONGRUENT_NOUNPP), 4),
        "agreement_by_distance": {str(d): round(r["accuracy"], 4) for d, r in result["by_distance"].items()},
        "agreement_by_distance_incongruent": {str(d): round(r["accuracy"], 4)
                                              for d, r in result["by_distance_incongruent"].items()},
        "stimuli": "gatescope/inputs/stimuli/agreement_stimuli.tsv",
    }
    extra = {"lexicon": {k: list(v) for k, v in lexicon.items()}, "sample_text": AGREEMENT_SAMPLE_TEXT}
    return model, metrics, {**vocab.to_metadata(), **extra}


def _train_pysource(config: SampleConfig, progress: Progress | None) -> tuple[LanguageModel, dict, dict]:
    """A char LM on the stdlib's source; metrics on the held-out files."""
    text = "".join(data.read_source(p) for p in data.stdlib_files())
    vocab = data.char_vocabulary(text)
    streams = data.char_streams(data.encode_chars(vocab, text), config.batch_size)  # (B, L)
    model = LanguageModel(config.cell, len(vocab), config.embedding_size, config.hidden_size, config.num_layers)
    chunks = (streams.shape[1] - 1) // config.bptt

    def closures():
        state, chunk = None, 0
        while True:
            if chunk == chunks:
                state, chunk = None, 0
            start = chunk * config.bptt
            inputs = streams[:, start:start + config.bptt]
            targets = streams[:, start + 1:start + config.bptt + 1]

            def loss_fn(inputs=inputs, targets=targets):
                nonlocal state
                logits, new_state = model.forward_with_state(inputs, state)
                state = tuple(s.detach() for s in new_state) if isinstance(new_state, tuple) else new_state.detach()
                return nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten())

            yield loss_fn
            chunk += 1

    _optimise(model, config, closures(), progress)
    nats = _heldout_char_loss(model, vocab)
    metrics = {
        "heldout_loss_nats_per_char": round(nats, 4),
        "heldout_loss_bits_per_char": round(nats / math.log(2), 4),
        "train_chars": len(text),
        "chars_seen": config.steps * config.batch_size * config.bptt,
    }
    extra = {"heldout_files": list(data.HELDOUT_FILES), "sample_text": PYSOURCE_SAMPLE_TEXT}
    return model, metrics, {**vocab.to_metadata(), **extra}


def _heldout_char_loss(model: LanguageModel, vocab: Vocabulary, chunk: int = 1024) -> float:
    """Mean cross-entropy (nats per char) over the held-out files, each read from a zero state."""
    total, count = 0.0, 0
    with torch.no_grad():
        for path in data.stdlib_files(heldout=True):
            ids = data.encode_chars(vocab, data.read_source(path))[None]  # (1, N)
            state = None
            for start in range(0, ids.shape[1] - 1, chunk):
                inputs = ids[:, start:start + chunk]
                targets = ids[:, start + 1:start + chunk + 1]
                logits, state = model.forward_with_state(inputs[:, :targets.shape[1]], state)
                total += float(nn.functional.cross_entropy(logits[0], targets[0], reduction="sum"))
                count += targets.shape[1]
    return total / count


TRAINERS = {"agreement": _train_agreement, "pysource": _train_pysource}


def train_sample(config: SampleConfig, out_dir: str | Path, progress: Progress | None = None) -> Path:
    """Train `config` from scratch and write ``{out_dir}/{name}.safetensors`` atomically."""
    torch.manual_seed(config.seed)
    threads = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    try:
        started = time.perf_counter()
        model, metrics, meta = TRAINERS[config.corpus](config, progress)
        seconds = time.perf_counter() - started
    finally:
        torch.set_num_threads(threads)
    metadata = {
        "format": "gatescope.model", "version": 1,
        **meta,
        **cells_metadata(model),  # what a variant cell computes, beyond what its tensor names say
        "roles": {"embedding": "embedding.weight", "recurrent": ["rnn"], "decoder": "decoder"},
        "training": {**asdict(config), "torch": torch.__version__, "time_s": round(seconds, 1)},
        "metrics": metrics,
    }
    out = Path(out_dir) / f"{config.name}.safetensors"
    save_checkpoint(model, out, metadata)
    return out


def save_checkpoint(model: nn.Module, path: Path, metadata: dict) -> None:
    """Write the model's tensors and metadata to `path`, all or nothing."""
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata={META_KEY: json.dumps(metadata)}))


def train_all(out_dir: str | Path, only: list[str] | None = None,
              progress: Callable[[str], Progress | None] | None = None,
              **overrides) -> list[Path]:
    """Retrain the sample models (all, or those named in `only`) into `out_dir`.

    `progress(name)` may return a per-model progress callback; `overrides` replace config fields
    (e.g. ``steps=5, hidden_size=8`` for a smoke run)."""
    names = list(SAMPLES) if not only else only
    unknown = [n for n in names if n not in SAMPLES]
    if unknown:
        raise GatescopeError(f"unknown sample model {unknown[0]!r} (known: {', '.join(SAMPLES)})")
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise GatescopeError(f"cannot create the folder {out}: {exc.strerror or exc}") from None
    for n in names:  # fail before minutes of training, not after
        check_writable(out / f"{n}.safetensors")
    return [train_sample(replace(SAMPLES[n], **overrides), out, progress(n) if progress else None)
            for n in names]
