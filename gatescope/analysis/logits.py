"""The logit difference: the score of subject-verb agreement (Linzen et al. 2016) and of patching.

logit(correct) - logit(wrong) of one softmax compares the two forms' probabilities without the
softmax; positive means the model prefers the correct form. Agreement accuracy, the causal tests'
logit-difference metric and the attribution target all read it from here.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from gatescope.errors import GatescopeError


def logit_diff(logits: Tensor, correct: Tensor | Sequence[int], wrong: Tensor | Sequence[int]) -> Tensor:
    """logits [B, V] -> logit(correct[b]) - logit(wrong[b]) per row [B], in float32 or wider, on their device."""
    correct = torch.as_tensor(correct, device=logits.device)
    wrong = torch.as_tensor(wrong, device=logits.device)
    if logits.dim() != 2:
        raise GatescopeError(f"a logit difference takes logits [batch, vocabulary], got shape {list(logits.shape)}")
    if correct.numel() and logits.shape[-1] <= int(torch.maximum(correct, wrong).max()):
        raise GatescopeError("the model's output is not a distribution over its vocabulary "
                             "(is it a language model with a decoder?)")
    rows = torch.arange(logits.shape[0], device=logits.device)
    scores = logits if logits.dtype in (torch.float32, torch.float64) else logits.float()
    return scores[rows, correct] - scores[rows, wrong]
