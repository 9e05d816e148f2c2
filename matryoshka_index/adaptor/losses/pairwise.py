"""Pairwise similarity loss (Matryoshka-Adaptor, Yoon et al. 2024, eq. 1)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ._similarity import cosine_matrix


def pairwise_similarity_loss(original: torch.Tensor, adapted: torch.Tensor, dims: Sequence[int]) -> torch.Tensor:
    r"""Mean absolute gap between prefix similarities of the adapted vectors and full similarities of the originals.

    .. math::
        L_{pair} = \frac{1}{|M|} \sum_{m \in M} \frac{1}{B(B-1)} \sum_{i \neq j}
        \left| \cos(f(e_i)_{:m}, f(e_j)_{:m}) - \cos(e_i, e_j) \right|

    The paper sums over i, j and m; we average so the scale does not grow with the batch size or
    with the number of prefix lengths, which keeps the default loss weights meaningful.

    Args:
        original: ``(B, d)`` original embeddings ``e``.
        adapted: ``(B, d)`` adapted embeddings ``f(e)``.
        dims: the matryoshka prefix lengths ``M``.
    """
    target = cosine_matrix(original)
    n = target.shape[0]
    losses = []
    for m in dims:
        gap = (cosine_matrix(adapted[:, :m]) - target).abs()
        # Sum all, take the diagonal back out: cheaper than boolean-mask indexing of a B x B matrix.
        losses.append((gap.sum() - gap.diagonal().sum()) / (n * (n - 1)))
    return torch.stack(losses).mean()
