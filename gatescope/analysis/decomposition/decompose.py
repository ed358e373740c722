"""`decompose`: each part of the input's share of every gate, state and logit of an LSTM or GRU
language model (embedding -> recurrent layers -> decoder), by one of three methods.

- "shapley": diagNNose's ShapleyDecomposer (Jumelet 2020): all parts propagated together, each
  nonlinearity and each product of two decomposed tensors split by the parts' Shapley values;
  exact (2**parts evaluations per nonlinearity, at most `shapley.MAX_EXACT_PARTS` parts) or sampled
  (``num_samples`` orders per operation, in `REPLICAS` independent runs whose spread gives the
  sampling error).
- "gcd": diagNNose's ContextualDecomposer with the GCD rules (Jumelet, Zuidema & Hupkes 2019): one
  pass per part, that part (beta) against the rest (gamma).
- "cd": contextual decomposition as Murdoch, Liu & Yu 2018 define it, one pass per part.

Parts: the constants (biases, and what a nonlinearity gives at 0) first, then each token, or the
spans given (positions no span names form a last part). Shapley parts add up to the actual values;
a gcd or cd pass's beta and gamma do, and the parts' betas need not (what they leave is
`Decomposition.interaction`). The actual values come from the model's own forward, recorded by
gatescope.record; `Decomposition.check` is the largest |sum - actual| over every quantity and the
logits, checked in every call.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from gatescope.analysis.decomposition import shapley
from gatescope.analysis.decomposition.cells import run_layer
from gatescope.analysis.decomposition.rules import CDRules, GCDRules, ShapleyRules
from gatescope.errors import GatescopeError
from gatescope.kinds import GRU, GRU_RESET_BEFORE, LSTM, module_cell_type
from gatescope.recorder.recording import record

METHODS = ("shapley", "gcd", "cd")
REPLICAS = 4  # independent sampled runs, for the sampling error
TOLERANCE = 1e-5  # of |sum of parts - actual|, relative to max(1, |actual|)
Span = int | Sequence[int]


@dataclass
class Decomposition:
    """What `decompose` returns. Tensors are [parts, T, H] (logits [parts, T, V]) for one sequence,
    [parts, B, T, H] for a batch."""

    method: str
    parts: list[tuple[int, ...]]  # the positions of each part; () is the constants
    quantities: dict[str, Tensor]  # recorded name -> each part's contribution
    logits: Tensor
    actual: dict[str, Tensor] = field(repr=False)  # name (and "logits") -> the model's own values
    check: float = 0.0  # largest |sum of parts (gcd, cd: beta + gamma of each pass) - actual|
    tokens: list[str] | None = None  # the tokens of a one-sequence input, where the model has a vocabulary
    replicas: Tensor | None = None  # sampled Shapley: the logit contributions of each independent run [parts, R, ...]
    num_samples: int | None = None

    @property
    def sampling_error(self) -> Tensor | None:
        """Sampled Shapley: the standard error of each part's logit contribution (shaped like ``logits``)."""
        return None if self.replicas is None else self.replicas.std(1) / self.replicas.shape[1] ** 0.5

    @property
    def interaction(self) -> Tensor:
        """The logits' part that no single part's contribution holds: actual - sum of parts (0 for shapley)."""
        return self.actual["logits"] - self.logits.sum(0)

    def labels(self, tokens: Sequence[str]) -> list[str]:
        """Each part named by its tokens ("constants" for the first)."""
        return [" ".join(tokens[t] for t in positions) if positions else "constants" for positions in self.parts]

    def logit_difference(self, position: int, correct: int, wrong: int) -> Tensor:
        """Each part's contribution to logit[correct] - logit[wrong] at ``position``: [parts] (or [parts, B])."""
        return _difference(self.logits, position, correct, wrong)

    def logit_difference_error(self, position: int, correct: int, wrong: int) -> Tensor | None:
        """Sampled Shapley: the standard error of each part's `logit_difference` (None when exact)."""
        if self.replicas is None:
            return None
        runs = _difference(self.replicas, position, correct, wrong)  # (P, R, ...)
        return runs.std(1) / runs.shape[1] ** 0.5


def _difference(logits: Tensor, position: int, correct: int, wrong: int) -> Tensor:
    at = logits[..., position, :]  # (..., V)
    return at[..., correct] - at[..., wrong]


@dataclass
class _Chain:
    embedding: nn.Embedding
    projection: nn.Linear | None
    recurrent: list[tuple[str, nn.Module]]
    decoder: nn.Linear


def _chain(model: nn.Module) -> _Chain:
    """The model as embedding -> (input projection) -> recurrent modules -> decoder: a gatescope.load
    model, or a module with ``embedding``, one nn.LSTM / nn.GRU and ``decoder`` (the sample models)."""
    if hasattr(model, "recurrent_names"):
        model.check_language_model()
        recurrent = [(name, model.get_submodule(name)) for name in model.recurrent_names]
        embedding, projection, decoder = model.embedding, model.input_projection, model.decoder
    else:
        recurrent = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.RNNBase)]
        embedding, projection, decoder = getattr(model, "embedding", None), None, getattr(model, "decoder", None)
    if not isinstance(embedding, nn.Embedding) or not isinstance(decoder, nn.Linear) or not recurrent:
        raise GatescopeError("decompose needs a language model: an nn.Embedding 'embedding', LSTM or GRU "
                             "modules and an nn.Linear 'decoder'")
    for name, module in recurrent:
        cell = module_cell_type(module)
        if cell not in (LSTM, GRU, GRU_RESET_BEFORE) or not isinstance(module, (nn.LSTM, nn.GRU)):
            raise GatescopeError(f"decompose handles LSTM and GRU layers; {name or 'the module'} is {cell.describe()}")
        if getattr(module, "proj_size", 0):
            raise GatescopeError(f"decompose does not handle an LSTM with a projection (proj_size="
                                 f"{module.proj_size} in {name or 'the module'})")
    return _Chain(embedding, projection, recurrent, decoder)


def _parts(steps: int, spans: Sequence[Span] | None) -> list[tuple[int, ...]]:
    if spans is None:
        return [(), *((t,) for t in range(steps))]
    parts, seen = [()], set()
    for span in spans:
        positions = (span,) if isinstance(span, int) else tuple(int(p) for p in span)
        if not positions or any(not 0 <= p < steps or p in seen for p in positions):
            raise GatescopeError(f"part {list(positions)}: parts are non-empty, non-overlapping positions in "
                                 f"0..{steps - 1}")
        seen.update(positions)
        parts.append(positions)
    rest = tuple(t for t in range(steps) if t not in seen)
    return parts + [rest] if rest else parts


def _actual(model: nn.Module, chain: _Chain, ids: Tensor) -> dict[str, Tensor]:
    """The model's own values: every recorded quantity [B, T, H] and the logits [B, T, V]."""
    with torch.no_grad(), record(model) as rec:
        logits = model(ids)
    trace = rec.trace
    return {name: trace.padded(name) for name in trace.names} | {"logits": logits}


def decompose(model: nn.Module, ids: Tensor, method: str = "shapley", parts: Sequence[Span] | None = None,
              num_samples: int | None = None, seed: int = 0) -> Decomposition:
    """Each part's contribution to every gate, state and logit of ``model`` on ``ids`` ([T], or [B, T]
    sequences of one length). ``parts``: spans of positions (an int or a list of them each); by default
    each token. The constants part always comes first.

    Every part carries its own copy of the whole run (float64), so memory grows with parts x tokens: by
    default with the square of the length. A run the machine cannot hold is a one-line GatescopeError."""
    try:
        return _decompose(model, ids, method, parts, num_samples, seed)
    except RuntimeError as exc:  # torch's allocators: the CPU's "can't allocate memory", CUDA's OutOfMemoryError
        if not (isinstance(exc, torch.OutOfMemoryError) or "can't allocate memory" in str(exc)):
            raise
        raise GatescopeError(f"decomposing {ids.shape[-1]} tokens needs more memory than there is: every part "
                             "carries its own copy of the run, so memory grows with parts x tokens; give fewer "
                             "parts (spans) or a shorter input") from None


def _decompose(model: nn.Module, ids: Tensor, method: str, parts: Sequence[Span] | None, num_samples: int | None,
               seed: int) -> Decomposition:
    if method not in METHODS:
        raise GatescopeError(f"unknown decomposition method {method!r}; choose one of: {', '.join(METHODS)}")
    if num_samples is not None and (method != "shapley" or num_samples < 1):
        raise GatescopeError("num_samples is for method 'shapley', a positive number of orders")
    chain = _chain(model)
    single = ids.dim() == 1
    ids = ids.unsqueeze(0) if single else ids
    if ids.dim() != 2 or ids.shape[1] == 0 or ids.dtype.is_floating_point:
        raise GatescopeError(f"decompose takes token ids [T] or [B, T]; got {ids.dtype} {list(ids.shape)}")
    batch, steps = ids.shape
    spans = _parts(steps, parts)
    count = len(spans)
    if method == "shapley" and num_samples is None and count > shapley.MAX_EXACT_PARTS:
        raise GatescopeError(f"exact Shapley values over {count} parts take 2**{count} evaluations of every "
                             f"nonlinearity; at most {shapley.MAX_EXACT_PARTS} parts: pass num_samples= (on the command "
                             "line, --samples) for sampled values, or fewer parts")
    actual = _actual(model, chain, ids)
    dtype = torch.float64
    embedded = chain.embedding(ids).detach().to(dtype)  # (B, T, E)
    owner = torch.zeros(steps, dtype=torch.long)  # (T,): the part each position belongs to
    for p, positions in enumerate(spans):
        owner[list(positions)] = p
    mine = nn.functional.one_hot(owner, count).T.to(dtype)  # (P, T): 1 where position t is part p's

    if method == "shapley":
        replicas = 1 if num_samples is None else REPLICAS
        x = (mine[:, None, :, None] * embedded).repeat(1, replicas, 1, 1)  # (P, R*B, T, E)
        base = torch.zeros(count, replicas * batch, 1, dtype=dtype)
        base[0] = 1
        rules = ShapleyRules(base, num_samples, seed)
    else:
        beta = mine[:, None, :, None] * embedded  # (P, B, T, E): each pass's part of interest
        slots = [beta, embedded - beta] + ([torch.zeros_like(beta)] if method == "cd" else [])
        x = torch.stack(slots).flatten(1, 2)  # (K, P*B, T, E): rows pass-major
        base = torch.zeros(len(slots), count * batch, 1, dtype=dtype)
        base[0, :batch] = 1  # the constants pass keeps the constants in beta
        base[1, batch:] = 1  # every other pass in gamma
        if method == "gcd":
            rules = GCDRules(base)
        else:
            in_span = (mine.bool() | (torch.arange(count) == 0)[:, None]).repeat_interleave(batch, 0)  # (P*B, T)
            rules = CDRules(base, in_span)

    if chain.projection is not None:
        w = chain.projection
        x = x @ w.weight.detach().to(dtype).T
        if w.bias is not None:
            x = x + rules.resolve(rules.constant(w.bias.detach().to(dtype)))[:, :, None]
    quantities = {}
    for name, module in chain.recurrent:
        for layer in range(module.num_layers):
            recorded, x = run_layer(rules, module, layer, x)
            quantities |= {f"{name}.l{layer}.{key}": value for key, value in recorded.items()}
    decoder = chain.decoder
    logits = x @ decoder.weight.detach().to(dtype).T  # (K, N, T, V)
    if decoder.bias is not None:
        logits = logits + rules.resolve(rules.constant(decoder.bias.detach().to(dtype)))[:, :, None]
    quantities["logits"] = logits
    result = _result(method, spans, quantities, actual, batch, single, num_samples)
    vocab = getattr(model, "vocab", None)
    if single and vocab is not None:
        result.tokens = vocab.decode(ids[0].tolist())
    return result


def _result(method: str, spans: list[tuple[int, ...]], values: dict[str, Tensor], actual: dict[str, Tensor],
            batch: int, single: bool, num_samples: int | None) -> Decomposition:
    """Parts from the propagated slots, the completeness check, the sampling error."""
    count = len(spans)
    check, parts, replicas = 0.0, {}, None
    for name, value in values.items():  # value (K, N, T, H)
        truth = actual[name].to(value.dtype)  # (B, T, H)
        scale = max(1.0, float(truth.abs().max()))
        if method == "shapley":
            runs = value.unflatten(1, (-1, batch))  # (P, R, B, T, H)
            gap = (runs.sum(0) - truth).abs().max()
            part = runs.mean(1)
            if name == "logits" and runs.shape[1] > 1:
                replicas = runs.float()[:, :, 0] if single else runs.float()  # (P, R, [B,] T, V)
        else:
            passes = value.unflatten(1, (count, batch))  # (K, P, B, T, H)
            gap = (passes.sum(0) - truth).abs().max()
            part = passes[0]
        check = max(check, float(gap))
        if float(gap) > TOLERANCE * scale:
            raise GatescopeError(f"decompose: the parts of {name} are {float(gap):.2e} from its actual values "
                                 f"(tolerance {TOLERANCE * scale:.1e}); this is a bug in gatescope")
        parts[name] = part.float()[:, 0] if single else part.float()
    logits = parts.pop("logits")
    first = lambda t: t[0] if single else t  # noqa: E731
    actual = {name: first(value) for name, value in actual.items()}
    return Decomposition(method, spans, parts, logits, actual, check, replicas=replicas, num_samples=num_samples)


def logit_difference_summary(model: nn.Module, ids: Tensor, correct: int, wrong: int, method: str = "shapley",
                             num_samples: int | None = None) -> dict:
    """Each part's contribution to logit[correct] - logit[wrong] after ids [T], as `gatescope analyze decompose
    --json` prints it: {"method", "tokens", "parts", "contributions", "total", "check"}, with "interaction"
    (gcd, cd) and "sampling_error" (sampled Shapley)."""
    result = decompose(model, ids, method, num_samples=num_samples)
    tokens = result.tokens or [str(int(i)) for i in ids]
    parts = result.logit_difference(-1, correct, wrong)  # (P,)
    actual = result.actual["logits"][-1]  # (V,)
    summary = {"method": method, "tokens": tokens, "parts": result.labels(tokens),
               "contributions": [float(v) for v in parts], "total": float(actual[correct] - actual[wrong]),
               "check": result.check}
    if method != "shapley":
        summary["interaction"] = summary["total"] - float(parts.sum())
    error = result.logit_difference_error(-1, correct, wrong)  # (P,) or None
    if error is not None:
        summary["sampling_error"] = [float(e) for e in error]
    return summary
