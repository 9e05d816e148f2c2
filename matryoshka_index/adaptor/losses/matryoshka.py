"""The Matryoshka wrapper: one loop over prefix lengths around any loss computed at one prefix length.

In the spirit of sentence-transformers' ``MatryoshkaLoss`` (Kusupati et al., "Matryoshka
Representation Learning", NeurIPS 2022): the inner loss never sees a dimension; the wrapper owns
truncating, normalising and weighting, so every loss of :mod:`..losses` states its formula once, at
one prefix length.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

__all__ = ["MatryoshkaLoss", "PrefixLoss"]

PrefixLoss = Callable[..., torch.Tensor]  # unit-norm m-dim prefixes of the adapted tensors -> a scalar loss


class MatryoshkaLoss:
    r"""The weighted mean over prefix lengths of an inner loss on the adapted tensors' normalised prefixes.

    .. math::
        L = \frac{\sum_{m \in M} w_m \, L_{inner}\left(\hat{x}^{(1)}_{:m}, \dots, \hat{x}^{(k)}_{:m}\right)}
                 {\sum_{m \in M} w_m},
        \qquad \hat{x}_{:m} = \frac{x_{:m}}{\lVert x_{:m} \rVert_2} \text{ row by row}

    with :math:`M` the prefix lengths and :math:`w_m` their weights (default all 1: the plain mean,
    the seed's behaviour). The inner loss gets unit-norm prefixes, so an inner product of two of them
    is the prefix cosine of the formulas in each loss's docstring; full-dim targets are computed once
    per batch by the caller and bound into the inner loss (e.g. with ``functools.partial``).

    Args:
        dims: the prefix lengths ``M``.
        weights: one weight ``w_m >= 0`` per prefix length, in the order of ``dims`` (``None``: all 1).
    """

    def __init__(self, dims: Sequence[int], weights: Sequence[float] | None = None) -> None:
        self.dims = tuple(int(m) for m in dims)
        if not self.dims:
            raise ValueError("dims: give at least one prefix length")
        if weights is not None:
            weights = tuple(float(w) for w in weights)
            if len(weights) != len(self.dims):
                raise ValueError(f"weights: {len(weights)} weights for {len(self.dims)} prefix lengths")
            if any(w < 0 for w in weights) or sum(weights) <= 0:
                raise ValueError(f"weights: must be >= 0 with a positive sum, got {weights}")
        self.weights = weights

    def __call__(self, inner: PrefixLoss, *adapted: torch.Tensor) -> torch.Tensor:
        """``inner`` applied at each prefix length to the normalised prefixes of ``adapted``, weighted."""
        losses = torch.stack([inner(*(F.normalize(x[:, :m], dim=-1) for x in adapted)) for m in self.dims])
        if self.weights is None or len(set(self.weights)) == 1:
            return losses.mean()  # uniform weights: exactly the plain mean (same floats as before the wrapper)
        w = torch.tensor(self.weights, dtype=losses.dtype, device=losses.device)
        return (losses * w).sum() / w.sum()
