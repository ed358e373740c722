"""fastai's AWD-LSTM (Merity et al. 2018, fastai.text.models.awdlstm) as torch-named tensors.

fastai stacks single-layer nn.LSTMs of different sizes in ``rnns`` (``rnns.0``: emb -> hidden,
..., the last: hidden -> emb), each wrapped in WeightDropout, which keeps the recurrent weight as
``rnns.k.weight_hh_l0_raw`` and the LSTM itself under ``rnns.k.module.`` (DropConnect on the
hidden-to-hidden weights; at inference the raw weight is the weight). The embedding is stored
twice, as ``encoder.weight`` and, through EmbeddingDropout, ``encoder_dp.emb.weight``. A language
model (SequentialRNN) puts the AWD_LSTM under ``0.`` and its LinearDecoder under ``1.``.
Renamed here: ``P.weight_hh_l0_raw`` -> ``P.weight_hh_l0``, ``P.module.K`` -> ``P.K``; the
duplicate embedding is dropped; the roles name the embedding, the stack in order, the decoder.
"""
from __future__ import annotations

import re
from typing import Any

from gatescope.errors import GatescopeError

_RAW = re.compile(r"^(?P<prefix>(?:.*\.)?rnns\.(?P<index>\d+)\.)(?P<param>weight_hh_l\d+(?:_reverse)?)_raw$")
_DUPLICATE_EMBEDDING = "encoder_dp.emb.weight"


def matches(state: dict[str, Any]) -> bool:
    """True for a state dict with WeightDropout's ``rnns.k.weight_hh_l0_raw`` keys."""
    return any(_RAW.match(k) for k in state)


def convert(state: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
    """(torch-named tensors, metadata with the roles, notes)."""
    raw = {k: m for k in state if (m := _RAW.match(k))}
    prefixes = {m["prefix"]: int(m["index"]) for m in raw.values()}
    tensors: dict[str, Any] = {}
    notes = []
    for key, value in state.items():
        if key in raw:
            new = raw[key]["prefix"] + raw[key]["param"]
        else:
            prefix = next((p for p in prefixes if key.startswith(f"{p}module.")), None)
            new = key if prefix is None else prefix + key[len(prefix) + len("module."):]
        if new in tensors:
            continue  # WeightDropout may keep a copy of the raw weight under module.: the raw one wins
        tensors[new] = value
    for key in [k for k in tensors if k.endswith(_DUPLICATE_EMBEDDING)]:
        main = key[: -len(_DUPLICATE_EMBEDDING)] + "encoder.weight"
        same = main in tensors and tensors[main].shape == tensors[key].shape
        if same and bool((tensors[main] == tensors[key]).all()):
            del tensors[key]
            notes.append(f"dropped {key}, the copy of {main} that fastai's EmbeddingDropout keeps")
    stack = [p.removesuffix(".") for p, _ in sorted(prefixes.items(), key=lambda item: item[1])]
    if sorted(prefixes.values()) != list(range(len(prefixes))):
        raise GatescopeError(f"AWD-LSTM layers are not numbered 0..{len(prefixes) - 1}: {', '.join(stack)}")
    roles: dict[str, Any] = {"recurrent": stack}
    base = stack[0][: -len("rnns.0")]
    if f"{base}encoder.weight" in tensors:
        roles["embedding"] = f"{base}encoder.weight"
    decoders = [k.removesuffix(".weight") for k in tensors if k.endswith("decoder.weight")]
    if len(decoders) == 1:
        roles["decoder"] = decoders[0]
    notes.append(f"fastai AWD-LSTM: {len(stack)} stacked LSTMs ({', '.join(stack)}), WeightDropout's raw weights used")
    return tensors, {"roles": roles}, notes
