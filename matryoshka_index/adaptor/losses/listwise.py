"""Listwise neighbour-distribution loss (our addition; not in the paper)."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import torch
import torch.nn.functional as F

from ._similarity import cosine_matrix
from .matryoshka import MatryoshkaLoss


def listwise_divergence(target: torch.Tensor, temperature: float, prefix: torch.Tensor) -> torch.Tensor:
    """At one prefix length: the batch-mean KL of ``target`` (each row's full-dim softmax over the other
    rows) from the softmax of the unit-norm prefixes' cosines (the diagonal left out of both)."""
    n = prefix.shape[0]
    diag = torch.eye(n, dtype=torch.bool, device=prefix.device)
    logits = (prefix @ prefix.T / temperature).masked_fill(diag, float("-inf"))
    log_q = F.log_softmax(logits, dim=1).masked_fill(diag, 0.0)
    return F.kl_div(log_q, target, reduction="batchmean")


def listwise_loss(
    original: torch.Tensor,
    adapted: torch.Tensor,
    dims: Sequence[int],
    temperature: float = 0.05,
    dim_weights: Sequence[float] | None = None,
) -> torch.Tensor:
    r"""KL divergence between each item's softmax over the batch at full dimension and at prefix m.

    .. math::
        L_{list} = \frac{1}{|M|} \sum_{m \in M} \frac{1}{B} \sum_i
        \mathrm{KL}\left( \mathrm{softmax}_j\!\left(\frac{\cos(e_i, e_j)}{\tau}\right) \,\middle\|\,
        \mathrm{softmax}_j\!\left(\frac{\cos(f(e_i)_{:m}, f(e_j)_{:m})}{\tau}\right) \right), \quad j \neq i

    The absolute-gap losses of the paper treat every pair alike; coarse-then-rerank search only needs
    the *order* of each item's nearest neighbours kept at m dims. A low temperature puts the weight of
    this term on those neighbours, so a prefix may shift all similarities as long as it ranks the same.
    The mean over m is :class:`.MatryoshkaLoss`'s.
    """
    n = original.shape[0]
    diag = torch.eye(n, dtype=torch.bool, device=original.device)
    target = F.softmax((cosine_matrix(original) / temperature).masked_fill(diag, float("-inf")), dim=1)
    return MatryoshkaLoss(dims, dim_weights)(partial(listwise_divergence, target, temperature), adapted)
