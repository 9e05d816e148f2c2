"""Query-to-document listwise term for unlabelled queries (our addition; not in the paper)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ._similarity import cosine_matrix


def query_listwise_loss(
    queries: torch.Tensor,
    adapted_queries: torch.Tensor,
    documents: torch.Tensor,
    adapted_documents: torch.Tensor,
    dims: Sequence[int],
    temperature: float = 0.05,
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
    target. ``adapted_queries`` may come from a query head of their own (``f_q``).
    """
    target = F.softmax(cosine_matrix(queries, documents) / temperature, dim=1)
    losses = []
    for m in dims:
        logits = cosine_matrix(adapted_queries[:, :m], adapted_documents[:, :m]) / temperature
        losses.append(F.kl_div(F.log_softmax(logits, dim=1), target, reduction="batchmean"))
    return torch.stack(losses).mean()
