"""Decomposition: each part of the input's share of every gate, state and logit of an LSTM or GRU
language model, by Shapley values (diagNNose's ShapleyDecomposer), generalised contextual decomposition
(Jumelet, Zuidema & Hupkes 2019) or contextual decomposition (Murdoch, Liu & Yu 2018).

- shapley: the Shapley values of one operation (exact, sampled, and the closed form of a product);
- rules: each method's rules for a nonlinearity, a product, a bias;
- cells: the LSTM and GRU equations over decomposed tensors;
- decompose: the public `decompose` and its `Decomposition`.
"""
from gatescope.analysis.decomposition.decompose import METHODS, Decomposition, decompose, logit_difference_summary

__all__ = ["METHODS", "Decomposition", "decompose", "logit_difference_summary"]
