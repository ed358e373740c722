"""Shapley values of one operation whose arguments are sums of parts (Shapley 1953), as diagNNose's
ShapleyTensor computes them at every nonlinearity and product (Jumelet 2020, diagnnose/attribute/utils.py).

A decomposed tensor is a tensor with a leading *parts* dimension, ``x = sum(parts)``: ``(P, N, H)``.
For f applied to x, part j's Shapley value is
``phi_j = sum over coalitions S without j of |S|! (n - |S| - 1)! / n! * (f(x_S + x_j) - f(x_S))``,
with x_S the sum of the parts in S; the values add up to f(x) - f(0), and f(0) (the baseline) goes to
one *baseline* part, as diagNNose adds it to its first (bias) partition.

- `exact`: every coalition, 2**n evaluations of f for n parts (only the parts that are not all zero take
  part: a part that is zero throughout is a null player, whose value is 0 and which changes no other
  part's value, so leaving it out is exact);
- `sampled`: Castro et al. 2009's permutation sampling (diagNNose's ``num_samples``), each row its own
  permutations;
- `product`: the Shapley values of the product of two decomposed tensors, f(a, b) = a * b. It is bilinear,
  so the sum over coalitions has a closed form, ``phi_j = (a_j * sum(b) + sum(a) * b_j) / 2``, equal to
  the 2**n-term sum and exact at any number of parts; the baseline 0 * 0 adds nothing.
"""
from __future__ import annotations

import itertools
from collections.abc import Callable
from functools import lru_cache
from math import factorial

import torch
from torch import Tensor

Fn = Callable[[Tensor], Tensor]
MAX_EXACT_PARTS = 12  # 2**12 = 4096 evaluations of each nonlinearity; more parts need sampling


@lru_cache(maxsize=None)
def _weights(n: int) -> tuple[Tensor, Tensor]:
    """(members [2**n, n] 0/1 coalition masks, weights [n, 2**n]): phi = weights @ f(members @ x)."""
    members = torch.tensor(list(itertools.product((0.0, 1.0), repeat=n)), dtype=torch.float64)  # (2**n, n)
    size = members.sum(1).long()  # (2**n,)
    w = torch.tensor([factorial(k) * factorial(n - k - 1) / factorial(n) for k in range(n)] + [0.0],
                     dtype=torch.float64)
    # a coalition S holding j counts +w(|S|-1) for j (f(S) = f(S-j + j)); one without j counts -w(|S|)
    weights = torch.where(members.T.bool(), w[(size - 1).clamp(min=0)], -w[size])  # (n, 2**n)
    return members, weights


def active(x: Tensor) -> Tensor:
    """Indices of the parts of x (P, ...) that are not zero everywhere."""
    return x.flatten(1).ne(0).any(1).nonzero().flatten()


def exact(fn: Fn, x: Tensor, base: Tensor) -> Tensor:
    """Exact Shapley values of fn over the parts of x (P, N, H); ``base`` (P, N, 1) one-hot: the part that
    takes f(0) in each row."""
    players = active(x)
    out = base * fn(torch.zeros_like(x[0]))  # (P, N, H)
    n = len(players)
    if n == 0:
        return out
    members, weights = _weights(n)
    sums = torch.einsum("sj,jnh->snh", members.to(x.dtype), x[players])  # (2**n, N, H)
    phi = torch.einsum("js,snh->jnh", weights.to(x.dtype), fn(sums))  # (n, N, H)
    return out.index_add(0, players, phi)


def sampled(fn: Fn, x: Tensor, base: Tensor, samples: int, generator: torch.Generator) -> Tensor:
    """Shapley values of fn over the parts of x (P, N, H) estimated from ``samples`` random orders of the
    parts, drawn for each row: the values of each order add up to f(x) - f(0), so their mean does too."""
    players = active(x)
    out = base * fn(torch.zeros_like(x[0]))  # (P, N, H)
    n, rows = len(players), x.shape[1]
    if n == 0:
        return out
    order = torch.rand(samples, rows, n, generator=generator).argsort(-1)  # (S, N, n): the parts in order
    rank = order.argsort(-1)  # (S, N, n): each part's place in its order
    steps = torch.arange(n + 1)
    prefix = (rank.unsqueeze(2) < steps.view(1, 1, -1, 1)).to(x.dtype)  # (S, N, n+1, n): first k parts
    values = fn(torch.einsum("snkj,jnh->sknh", prefix, x[players]))  # (S, n+1, N, H)
    joined = prefix[:, :, 1:] - prefix[:, :, :-1]  # (S, N, n, n): the part that joins at step k
    phi = torch.einsum("snkj,sknh->jnh", joined, values[:, 1:] - values[:, :-1]) / samples  # (n, N, H)
    return out.index_add(0, players, phi)


def product(a: Tensor, b: Tensor) -> Tensor:
    """Exact Shapley values of a * b over the parts of a and b (P, N, H) (closed form, see above)."""
    return (a * b.sum(0) + a.sum(0) * b) / 2
