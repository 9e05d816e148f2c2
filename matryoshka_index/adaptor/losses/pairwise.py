"""Pairwise similarity loss (Matryoshka-Adaptor, Yoon et al. 2024, eq. 1)."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import torch

from ._similarity import cosine_matrix
from .matryoshka import MatryoshkaLoss


def pairwise_similarity_gap(target: torch.Tensor, prefix: torch.Tensor) -> torch.Tensor:
    r"""At one prefix length: mean over :math:`i \neq j` of :math:`|\hat{p}_i \cdot \hat{p}_j - target_{ij}|`.

    ``target`` is the ``B x B`` full-dim cosine matrix of the originals, ``prefix`` the unit-norm
    prefixes of the adapted rows (from :class:`.MatryoshkaLoss`).
    """
    n = target.shape[0]
    gap = (prefix @ prefix.T - target).abs()
    # Sum all, take the diagonal back out: cheaper than boolean-mask indexing of a B x B matrix.
    return (gap.sum() - gap.diagonal().sum()) / (n * (n - 1))


def pairwise_similarity_loss(
    original: torch.Tensor,
    adapted: torch.Tensor,
    dims: Sequence[int],
    dim_weights: Sequence[float] | None = None,
) -> torch.Tensor:
    r"""Mean absolute gap between prefix similarities of the adapted vectors and full similarities of the originals.

    .. math::
        L_{pair} = \frac{1}{|M|} \sum_{m \in M} \frac{1}{B(B-1)} \sum_{i \neq j}
        \left| \cos(f(e_i)_{:m}, f(e_j)_{:m}) - \cos(e_i, e_j) \right|

    The paper sums over i, j and m; we average so the scale does not grow with the batch size or
    with the number of prefix lengths, which keeps the default loss weights meaningful. The mean
    over m is :class:`.MatryoshkaLoss`'s (``dim_weights`` weigh the prefix lengths).

    Args:
        original: ``(B, d)`` original embeddings ``e``.
        adapted: ``(B, d)`` adapted embeddings ``f(e)``.
        dims: the matryoshka prefix lengths ``M``.
    """
    inner = partial(pairwise_similarity_gap, cosine_matrix(original))
    return MatryoshkaLoss(dims, dim_weights)(inner, adapted)
