"""Retrieval metrics, computed by our own code (no index, no training).

Two families:

* ANN view: :func:`neighbour_recall` compares what a search returned with the exact top-k.
* Labelled retrieval (BEIR/TREC style), with qrels ``{query_id: {doc_id: relevance}}``:
  :func:`ndcg_at_k`, :func:`mrr_at_k`, :func:`recall_at_k`. Gains are linear in relevance and
  discounts ``log2(rank + 1)``, as in ``trec_eval``'s ``ndcg_cut``; queries without any positive
  judgement are skipped (also as ``trec_eval`` does), and each function returns the mean over the
  remaining queries.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

Qrels = Mapping[str, Mapping[str, float]]


def neighbour_recall(found: np.ndarray, truth: np.ndarray, k: int | None = None) -> float:
    """Mean over queries of ``|found[:k] ∩ truth[:k]| / k`` (ids; ``-1`` slots never match)."""
    found = np.asarray(found)
    truth = np.asarray(truth)
    if found.ndim != 2 or truth.ndim != 2 or len(found) != len(truth):
        raise ValueError(f"found {found.shape} and truth {truth.shape} must be 2-D with one row per query")
    k = truth.shape[1] if k is None else k
    if k < 1 or k > truth.shape[1]:
        raise ValueError(f"k must be in 1..{truth.shape[1]}, got {k}")
    hits = 0
    for f, t in zip(found[:, :k], truth[:, :k], strict=True):
        t = t[t >= 0]
        hits += len(np.intersect1d(f[f >= 0], t, assume_unique=False))
    return hits / (k * len(truth)) if len(truth) else float("nan")


def _judged(qrels: Qrels, query_ids: Sequence[str]) -> list[tuple[int, dict[str, float]]]:
    out = []
    for i, q in enumerate(query_ids):
        rels = {d: float(r) for d, r in qrels.get(q, {}).items() if float(r) > 0}
        if rels:
            out.append((i, rels))
    return out


def ndcg_at_k(ranked: Sequence[Sequence[str]], query_ids: Sequence[str], qrels: Qrels, k: int = 10) -> float:
    """Mean nDCG@k: ``DCG = Σ_{r=1..k} rel(d_r) / log2(r + 1)``, divided by the ideal DCG of the judgements."""
    scores = []
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    for i, rels in _judged(qrels, query_ids):
        gains = np.array([rels.get(str(d), 0.0) for d in list(ranked[i])[:k]])
        dcg = float((gains * discounts[: len(gains)]).sum())
        ideal = np.sort(np.array(list(rels.values())))[::-1][:k]
        idcg = float((ideal * discounts[: len(ideal)]).sum())
        scores.append(dcg / idcg)
    return float(np.mean(scores)) if scores else float("nan")


def mrr_at_k(ranked: Sequence[Sequence[str]], query_ids: Sequence[str], qrels: Qrels, k: int = 10) -> float:
    """Mean reciprocal rank of the first relevant document within the top k (0 when none)."""
    scores = []
    for i, rels in _judged(qrels, query_ids):
        rr = 0.0
        for rank, d in enumerate(list(ranked[i])[:k], start=1):
            if rels.get(str(d), 0.0) > 0:
                rr = 1.0 / rank
                break
        scores.append(rr)
    return float(np.mean(scores)) if scores else float("nan")


def recall_at_k(ranked: Sequence[Sequence[str]], query_ids: Sequence[str], qrels: Qrels, k: int = 100) -> float:
    """Mean share of each query's relevant documents found in its top k."""
    scores = []
    for i, rels in _judged(qrels, query_ids):
        top = {str(d) for d in list(ranked[i])[:k]}
        scores.append(len(top & set(rels)) / len(rels))
    return float(np.mean(scores)) if scores else float("nan")
