"""Top-k similarity loss (Matryoshka-Adaptor, Yoon et al. 2024, eq. 2)."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import torch

from ._similarity import cosine_matrix
from .matryoshka import MatryoshkaLoss


def topk_neighbours(original: torch.Tensor, k: int) -> torch.Tensor:
    """Indices ``(B, k)`` of each row's k most similar other rows, by full-dim cosine."""
    sim = cosine_matrix(original)
    sim.fill_diagonal_(float("-inf"))
    return sim.topk(min(k, sim.shape[0] - 1), dim=1).indices


def topk_similarity_gap(neighbours: torch.Tensor, target_nn: torch.Tensor, prefix: torch.Tensor) -> torch.Tensor:
    """At one prefix length: mean absolute gap over each row's full-dim neighbours ``neighbours`` ``(B, k)``,
    whose full-dim cosines are ``target_nn``; ``prefix`` holds the unit-norm prefixes of the adapted rows."""
    return ((prefix @ prefix.T).gather(1, neighbours) - target_nn).abs().mean()


def topk_similarity_loss(
    original: torch.Tensor,
    adapted: torch.Tensor,
    dims: Sequence[int],
    k: int = 10,
    dim_weights: Sequence[float] | None = None,
) -> torch.Tensor:
    r"""The pairwise loss restricted to each item's k nearest neighbours by the original similarity.

    .. math::
        L_{topk} = \frac{1}{|M|} \sum_{m \in M} \frac{1}{Bk} \sum_{i} \sum_{j \in NN_k(i)}
        \left| \cos(f(e_i)_{:m}, f(e_j)_{:m}) - \cos(e_i, e_j) \right|

    where :math:`NN_k(i)` are the k rows of the batch most similar to row i at full dimension.
    Local structure is what retrieval needs, so this term matters more than the all-pairs one.
    The mean over m is :class:`.MatryoshkaLoss`'s.
    """
    nn_idx = topk_neighbours(original, k)
    inner = partial(topk_similarity_gap, nn_idx, cosine_matrix(original).gather(1, nn_idx))
    return MatryoshkaLoss(dims, dim_weights)(inner, adapted)
