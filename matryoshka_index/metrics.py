"""Retrieval metrics, computed by our own code (no index, no training).

Two families:

* ANN view, ids a search returned against the exact top-k (``-1`` = no result):
  :func:`ann_recall` (the share of each query's exact neighbours found, what calibration and
  ``mindex eval`` report; :func:`per_query_recall` gives it per query) and
  :func:`neighbour_recall` (hits in the first k of both, over ``k`` per query).
* Labelled retrieval (BEIR/TREC style), with qrels ``{query_id: {doc_id: relevance}}``:
  :func:`ndcg_at_k`, :func:`mrr_at_k`, :func:`recall_at_k` (the share of the *relevant* documents in
  the top k: the labelled recall; the ANN one is :func:`ann_recall`). Gains are linear in relevance and
  discounts ``log2(rank + 1)``, as in ``trec_eval``'s ``ndcg_cut``; queries without any positive
  judgement are skipped (also as ``trec_eval`` does), and each function returns the mean over the
  remaining queries.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

Qrels = Mapping[str, Mapping[str, float]]


def per_query_recall(found: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """``|found_i ∩ truth_i| / |truth_i|`` for each query whose truth is not empty (``-1`` never counts).

    ``found`` and ``truth`` are ``(n_queries, k)`` id arrays (any k each).
    """
    found = np.asarray(found)
    truth = np.asarray(truth)
    if found.shape[0] != truth.shape[0]:
        raise ValueError(f"found has {found.shape[0]} rows but truth {truth.shape[0]}")
    valid = truth >= 0
    # a truth slot counts once it is valid (>= 0) and found: a -1 in found can only equal a -1 truth slot
    hits = ((found[:, :, None] == truth[:, None, :]) & valid[:, None, :]).any(axis=1)
    sizes = valid.sum(axis=1)
    keep = sizes > 0
    return hits.sum(axis=1)[keep] / sizes[keep]


def ann_recall(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean over queries of ``|found_i ∩ truth_i| / |truth_i|``; ``-1`` entries (no result) never count.

    Recall of an approximate search (``found``) against exact search (``truth``), "k@k" when both
    have k columns. Queries whose truth is empty are skipped; with no such query at all the recall
    is 1.0 (nothing to find). Formerly ``matryoshka_index.evaluation.recall_at_k`` (now ``matryoshka_index.quality.index_recall.recall_at_k``).
    """
    per_query = per_query_recall(found, truth)
    return float(np.mean(per_query)) if len(per_query) else 1.0


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
