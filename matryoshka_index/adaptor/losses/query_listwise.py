"""Query-to-document listwise term for unlabelled queries (our addition; not in the paper)."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import torch
import torch.nn.functional as F

from ._similarity import cosine_matrix
from .matryoshka import MatryoshkaLoss


def query_listwise_divergence(
    target: torch.Tensor, temperature: float, query_prefix: torch.Tensor, document_prefix: torch.Tensor
) -> torch.Tensor:
    """At one prefix length: the query-mean KL of ``target`` (each query's full-dim softmax over the
    documents) from the softmax of the unit-norm prefixes' query-to-document cosines."""
    logits = query_prefix @ document_prefix.T / temperature
    return F.kl_div(F.log_softmax(logits, dim=1), target, reduction="batchmean")


def query_listwise_loss(
    queries: torch.Tensor,
    adapted_queries: torch.Tensor,
    documents: torch.Tensor,
    adapted_documents: torch.Tensor,
    dims: Sequence[int],
    temperature: float = 0.05,
    dim_weights: Sequence[float] | None = None,
) -> torch.Tensor:
    r"""KL divergence between each query's softmax over the documents at full dimension and at prefix m.

    .. math::
        L_{qlist} = \frac{1}{|M|} \sum_{m \in M} \frac{1}{|Q|} \sum_i
        \mathrm{KL}\left( \mathrm{softmax}_j\!\left(\frac{\cos(q_i, d_j)}{\tau}\right) \,\middle\|\,
        \mathrm{softmax}_j\!\left(\frac{\cos(f_q(q_i)_{:m}, f(d_j)_{:m})}{\tau}\right) \right)

    The listwise term of :mod:`.listwise` with the rows split in two: queries (unlabelled, e.g. a
    query log) on one side, corpus rows on the other (each query's full-dim nearest neighbours among
    them). Queries of an asymmetric model or another language lie away from the documents, so the
    documents' own neighbourhoods say little about them; this term keeps, at every prefix, the order
    in which each query sees its documents. No relevance label is needed: the full-dim order is the
    target. ``adapted_queries`` may come from a query head of their own (``f_q``). The mean over m is
    :class:`.MatryoshkaLoss`'s.
    """
    target = F.softmax(cosine_matrix(queries, documents) / temperature, dim=1)
    inner = partial(query_listwise_divergence, target, temperature)
    return MatryoshkaLoss(dims, dim_weights)(inner, adapted_queries, adapted_documents)
