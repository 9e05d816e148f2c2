"""Top-k similarity loss (Matryoshka-Adaptor, Yoon et al. 2024, eq. 2)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ._similarity import cosine_matrix


def topk_neighbours(original: torch.Tensor, k: int) -> torch.Tensor:
    """Indices ``(B, k)`` of each row's k most similar other rows, by full-dim cosine."""
    sim = cosine_matrix(original)
    sim.fill_diagonal_(float("-inf"))
    return sim.topk(min(k, sim.shape[0] - 1), dim=1).indices


def topk_similarity_loss(
    original: torch.Tensor, adapted: torch.Tensor, dims: Sequence[int], k: int = 10
) -> torch.Tensor:
    r"""The pairwise loss restricted to each item's k nearest neighbours by the original similarity.

    .. math::
        L_{topk} = \frac{1}{|M|} \sum_{m \in M} \frac{1}{Bk} \sum_{i} \sum_{j \in NN_k(i)}
        \left| \cos(f(e_i)_{:m}, f(e_j)_{:m}) - \cos(e_i, e_j) \right|

    where :math:`NN_k(i)` are the k rows of the batch most similar to row i at full dimension.
    Local structure is what retrieval needs, so this term matters more than the all-pairs one.
    """
    target = cosine_matrix(original)
    nn_idx = topk_neighbours(original, k)
    target_nn = target.gather(1, nn_idx)
    losses = [(cosine_matrix(adapted[:, :m]).gather(1, nn_idx) - target_nn).abs().mean() for m in dims]
    return torch.stack(losses).mean()
