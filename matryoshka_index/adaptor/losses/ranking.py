"""Supervised ranking loss (Matryoshka-Adaptor, Yoon et al. 2024, eq. 5)."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import torch
import torch.nn.functional as F

from .matryoshka import MatryoshkaLoss


def ranking_terms(temperature: float, query_prefix: torch.Tensor, document_prefix: torch.Tensor) -> torch.Tensor:
    """At one prefix length: the mean softplus of (negative - positive) cosine / temperature over every
    query and every document but its positive (``document_prefix[i]``); unit-norm prefixes."""
    n, total = query_prefix.shape[0], document_prefix.shape[0]
    rows = torch.arange(n, device=query_prefix.device)
    sim = query_prefix @ document_prefix.T / temperature
    terms = F.softplus(sim - sim[rows, rows].unsqueeze(1))
    return (terms.sum() - terms[rows, rows].sum()) / (n * (total - 1))


def ranking_loss(
    queries: torch.Tensor,
    documents: torch.Tensor,
    dims: Sequence[int],
    temperature: float = 0.05,
    dim_weights: Sequence[float] | None = None,
) -> torch.Tensor:
    r"""Pairwise logistic ranking loss over (query, relevant document) pairs with in-batch negatives.

    The paper's loss, for relevance labels :math:`y`:

    .. math::
        L_{rank} = \sum_{m \in M} \sum_i \sum_{j,k} \mathbb{1}[y_{ij} > y_{ik}] (y_{ij} - y_{ik})
        \log\left(1 + \exp\left(\frac{s_{ik}^{(m)} - s_{ij}^{(m)}}{\tau}\right)\right)

    with :math:`s_{ij}^{(m)} = \cos(f(q_i)_{:m}, f(d_j)_{:m})`. Here ``documents[i]`` is relevant to
    ``queries[i]`` (:math:`y_{ii} = 1`) for the first ``n = len(queries)`` documents, and every other
    document is a negative (:math:`y_{ik} = 0`): the other pairs' documents (in-batch negatives) and
    any rows after the first n (e.g. mined hard negatives). The sum runs over :math:`j = i, k \neq i`,
    averaged over the terms and over m (:class:`.MatryoshkaLoss`'s mean). The temperature
    :math:`\tau` scales cosines to useful logits.
    """
    n, total = queries.shape[0], documents.shape[0]
    if total < n:
        raise ValueError(f"documents: {total} rows for {n} queries; the first len(queries) rows are the positives")
    return MatryoshkaLoss(dims, dim_weights)(partial(ranking_terms, temperature), queries, documents)
