"""diagNNose's decomposers on a gatescope model, run in diagNNose's own environment (its last release
predates Python 3.10 and pins torchtext 0.6; see benchmarks/bench_peers.py): the model's weights are
written as a torch state dict that diagNNose's ForwardLSTM reads (``embedding.*``, ``rnn.*``,
``decoder.*``), the ids as a tensor, and the interpreter named by ``DIAGNNOSE_PYTHON`` runs
ShapleyDecomposer (method "shapley") or ContextualDecomposer (method "gcd") on them and writes each
part's logits back.

`run_diagnnose(python, model, ids, method)` -> (contributions [parts, B, T, V], seconds of the decomposition).
"""
from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

import torch
from torch import nn

SCRIPT = """
import collections, collections.abc, sys, time
collections.MutableMapping = collections.abc.MutableMapping  # diagNNose 1.1 predates Python 3.10
import torch
from transformers import BatchEncoding
from diagnnose.attribute import ContextualDecomposer, ShapleyDecomposer
from diagnnose.models.init_states import set_init_states
from diagnnose.models.wrappers.forward_lstm import ForwardLSTM
state, ids, method, out = sys.argv[1:5]
lm = ForwardLSTM(state, encoder_name="embedding")
set_init_states(lm)
decomposer = {"shapley": ShapleyDecomposer, "gcd": ContextualDecomposer}[method](lm)
batch = BatchEncoding({"input_ids": torch.load(ids).tolist()})
start = time.perf_counter()
result = decomposer.decompose(batch)
seconds = time.perf_counter() - start
torch.save({"contributions": torch.stack(list(result.contributions)), "seconds": seconds}, out)
"""


def run_diagnnose(python: str, model: nn.Module, ids: torch.Tensor, method: str) -> tuple[torch.Tensor, float]:
    """diagNNose's decomposition of ``model`` (embedding -> LSTM ``rnn`` -> decoder) on ids [B, T]."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        state = {k: v.detach().float().contiguous() for k, v in model.state_dict().items()}
        torch.save(state, folder / "lm.pt")
        torch.save(ids, folder / "ids.pt")
        subprocess.run([python, "-c", SCRIPT, str(folder / "lm.pt"), str(folder / "ids.pt"), method,
                        str(folder / "out.pt")], check=True, capture_output=True, text=True)
        result = torch.load(folder / "out.pt")
    return result["contributions"], result["seconds"]
