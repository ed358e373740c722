"""Attribution with captum: credit a prediction to input tokens and to recurrent units and gates.

- `token_attributions`: integrated gradients (Sundararajan et al. 2017) on the embedding layer
  (captum's LayerIntegratedGradients), tokens vs a baseline token.
- `unit_attributions`: integrated gradients over a multiplicative scale on every unit and step of
  a recorded quantity (1 = the model as is, 0 = the unit held at zero), applied through a
  gatescope.record hook. Attributions sum to f(model) - f(quantity zeroed) (completeness).
- `gradient_x_activation`: the gradient of the prediction with respect to each recorded value
  at each step, times the value (Shrikumar et al. 2016), in one backward pass.

Stock nn.LSTM breaks captum: its layer output is a tuple (captum #1220, #745: "'tuple' object has
no attribute 'clone'"), layer conductance fails on it (#815), and cuDNN's RNN backward refuses
eval mode (#564). Here every forward runs inside gatescope.record, so the recurrent modules go
through gatescope's step engine: differentiable in eval mode on CPU and CUDA, and every gate and
state is a plain tensor that captum can scale. captum is imported only here.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from gatescope.analysis.logits import logit_diff
from gatescope.errors import GatescopeError
from gatescope.recorder.recordable import quantities
from gatescope.recorder.recording import record, run

Target = Callable[[Tensor], Tensor]  # logits (B, T, V) -> one score per sequence (B,)


def logit_difference_target(position: int, correct: Tensor | Sequence[int], wrong: Tensor | Sequence[int]) -> Target:
    """Target: logit of ``correct[b]`` minus logit of ``wrong[b]`` at ``position`` (e.g. the verb's)."""
    correct_t, wrong_t = torch.as_tensor(correct), torch.as_tensor(wrong)

    def target(logits: Tensor) -> Tensor:
        b = logits.shape[0]
        # captum tiles the batch n_steps times (step-major); the labels tile with it
        return logit_diff(logits[:, position], correct_t.repeat(b // correct_t.numel()),
                          wrong_t.repeat(b // wrong_t.numel()))

    return target


def token_attributions(model: nn.Module, ids: Tensor, target: Target, baseline_id: int = 0,
                       n_steps: int = 50) -> tuple[Tensor, Tensor]:
    """Integrated gradients of ``target`` on the embedding, summed over its dimensions.

    ids: [B, T]. Returns (attributions [B, T], convergence delta [B]): the attributions of a
    sequence sum to target(ids) - target(all tokens = baseline_id), up to delta.
    """
    from captum.attr import LayerIntegratedGradients

    embedding = getattr(model, "embedding", None)
    if not isinstance(embedding, nn.Embedding):
        raise GatescopeError("token attribution needs a model with an nn.Embedding named 'embedding'")
    model.eval()
    lig = LayerIntegratedGradients(lambda x: target(run(model, x)), embedding)
    attr, delta = lig.attribute(ids, baselines=torch.full_like(ids, baseline_id), n_steps=n_steps,
                                return_convergence_delta=True)
    return attr.sum(-1).detach(), delta.detach()  # (B, T), (B,)


def unit_attributions(model: nn.Module, ids: Tensor, target: Target, name: str,
                      n_steps: int = 50) -> tuple[Tensor, Tensor]:
    """Integrated gradients of ``target`` over a scale on each unit and step of quantity ``name``.

    ids: [B, T]. Returns (attributions [B, T, H], convergence delta [B]), H the quantity's units;
    ``attributions.sum((1, 2))`` = target(model) - target(name zeroed).
    """
    from captum.attr import IntegratedGradients

    widths = quantities(model)
    if name not in widths:
        raise GatescopeError(f"the model has no quantity {name}; it has: {', '.join(widths)}")
    model.eval()

    def forward(scale: Tensor, x: Tensor) -> Tensor:
        def hook(value: Tensor, step: int) -> Tensor:  # value (B', width)
            return value * scale[:, step]

        return target(run(model, x, hooks={name: hook}))

    ones = torch.ones(ids.shape[0], ids.shape[1], widths[name], device=ids.device)  # (B, T, H)
    ig = IntegratedGradients(forward)
    attr, delta = ig.attribute(ones, baselines=torch.zeros_like(ones), additional_forward_args=(ids,),
                               n_steps=n_steps, return_convergence_delta=True)
    return attr.detach(), delta.detach()


def gradient_x_activation(model: nn.Module, ids: Tensor, target: Target, names: Sequence[str]) -> dict[str, Tensor]:
    """{name: gradient of sum(target) w.r.t. each value of ``name`` times the value, [B, T, H]}."""
    model.eval()
    with torch.enable_grad(), record(model, names=list(names)) as rec:
        out = target(model(ids)).sum()
    grads = rec.gradients(out, list(names))  # name -> (N, H), rows like the trace's
    trace = rec.trace
    return {name: trace.padded(grads[name] * trace[name].to(grads[name].dtype), fill=0.0)  # (B, T, H)
            for name in names}
