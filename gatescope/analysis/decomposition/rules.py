"""The rules of each decomposition method: how a nonlinearity, a product of two decomposed tensors and a
constant (a bias) split into parts. The cells (gatescope.analysis.decomposition.cells) are written once
against these rules.

A decomposed tensor is ``(K, N, H)``: K slots that add up to the value, N rows. For "shapley" the slots
are the parts; for "gcd" and "cd" each row is one pass of one part of interest (beta, slot 0) against
the rest (gamma, slot 1), the passes stacked along the rows; "cd" keeps a third slot for the pure bias
terms until a state takes them.

- `ShapleyRules` (diagNNose's ShapleyTensor, Jumelet 2020): a nonlinearity and a product get the parts'
  exact Shapley values (or sampled ones); a constant goes to the constants part, as does f(0).
- `GCDRules` (diagNNose's GCDTensor, the generalised CD of Jumelet, Zuidema & Hupkes 2019): a
  nonlinearity gets the Shapley values of beta and gamma with f(0) to the *baseline* slot (beta in the
  constants pass, gamma in every other); a product ``gate * source`` multiplies each slot of the source
  by the whole gate.
- `CDRules` (Murdoch, Liu & Yu 2018, their ``decomp_three``, ``decomp_tanh_two`` and product rules): a
  nonlinearity of beta + gamma + bias is split with the bias always present: beta gets
  ``(f(b+beta) - f(b) + f(b+beta+gamma) - f(b+gamma)) / 2``, gamma likewise, f(b) stays in the bias slot;
  a product gives beta*beta, beta*bias and bias*beta to beta, every term with gamma to gamma, and keeps
  bias*bias as bias; when a state (c, h) is formed its bias terms go to beta at the steps inside the part
  of interest (every step for the constants pass) and to gamma elsewhere; the output gate multiplies
  tanh(c)'s slots whole (h = o * tanh(c)).
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from gatescope.analysis.decomposition import shapley

Fn = Callable[[Tensor], Tensor]


class ShapleyRules:
    """Exact Shapley values per operation, or sampled ones (``samples``) with a seeded generator."""

    def __init__(self, base: Tensor, samples: int | None = None, seed: int = 0) -> None:
        self.base = base  # (K, N, 1) one-hot: the slot that takes constants in each row
        self.samples = samples
        self.generator = torch.Generator().manual_seed(seed)
        self.step = 0  # the position being computed (read by CDRules)

    def constant(self, value: Tensor) -> Tensor:
        """A constant (bias) as a decomposed tensor: all of it in each row's baseline slot."""
        return self.base * value  # (K, N, H)

    def nonlinear(self, fn: Fn, x: Tensor) -> Tensor:
        if self.samples is None:
            return shapley.exact(fn, x, self.base)
        return shapley.sampled(fn, x, self.base, self.samples, self.generator)

    def product(self, gate: Tensor, source: Tensor) -> Tensor:
        return shapley.product(gate, source)

    def output(self, gate: Tensor, source: Tensor) -> Tensor:
        """h = o * tanh(c)."""
        return self.product(gate, source)

    def settle(self, state: Tensor) -> Tensor:
        """A state (c, h) as it is carried to the next step."""
        return state

    def resolve(self, x: Tensor) -> Tensor:
        """A value as it is reported (gates, logits)."""
        return x


class GCDRules(ShapleyRules):
    """Two slots (beta, gamma) per pass; nonlinearities by exact Shapley of the two, gates whole."""

    def nonlinear(self, fn: Fn, x: Tensor) -> Tensor:
        return shapley.exact(fn, x, self.base)

    def product(self, gate: Tensor, source: Tensor) -> Tensor:
        return gate.sum(0) * source  # (K, N, H)


class CDRules(ShapleyRules):
    """Three slots (beta, gamma, bias) per pass; ``in_span`` (N, T): the steps inside each row's part."""

    def __init__(self, base: Tensor, in_span: Tensor) -> None:
        super().__init__(base)
        self.in_span = in_span

    def constant(self, value: Tensor) -> Tensor:
        out = torch.zeros(3, *self.base.shape[1:2], value.shape[-1], dtype=value.dtype)  # (3, N, H)
        out[2] = value
        return out

    def nonlinear(self, fn: Fn, x: Tensor) -> Tensor:
        beta, gamma, bias = x
        fb, fbb, fbg, fall = fn(bias), fn(bias + beta), fn(bias + gamma), fn(bias + beta + gamma)
        return torch.stack([(fbb - fb + fall - fbg) / 2, (fbg - fb + fall - fbb) / 2, fb])

    def product(self, gate: Tensor, source: Tensor) -> Tensor:
        (gb, gg, g0), (sb, sg, s0) = gate, source
        return torch.stack([gb * sb + gb * s0 + g0 * sb, gg * source.sum(0) + (gb + g0) * sg, g0 * s0])

    def output(self, gate: Tensor, source: Tensor) -> Tensor:
        return gate.sum(0) * source

    def settle(self, state: Tensor) -> Tensor:
        inside = self.in_span[:, self.step].to(state.dtype).unsqueeze(-1)  # (N, 1)
        beta, gamma, bias = state
        return torch.stack([beta + inside * bias, gamma + (1 - inside) * bias, torch.zeros_like(bias)])

    def resolve(self, x: Tensor) -> Tensor:
        out = x[:2] + self.base[:2] * x[2]
        return torch.cat([out, torch.zeros_like(x[2:])])
