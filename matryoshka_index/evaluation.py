"""Recall against exact search: the measure behind candidate calibration and ``mindex eval``.

``recall@k`` here is the share of the exact full-dimension top-k that a search returns in its own
top-k, averaged over queries (the usual ANN recall, "k@k"). Exact search means brute-force inner
product over the same full vectors the rerank uses, so with ``rerank="original"`` the truth is the
exact full-dim search over the original embeddings.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import numpy as np

from .exact import exact_topk
from .validation import check_embeddings, check_positive_int

if TYPE_CHECKING:
    from .index import MatryoshkaIndex

__all__ = ["evaluate_recall", "exact_topk", "recall_at_k"]


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean over queries of ``|found_i ∩ truth_i| / |truth_i|``; ``-1`` entries (no result) never count.

    ``found`` and ``truth`` are ``(n_queries, k)`` id arrays (any k each). Queries whose truth is
    empty are skipped; with no such query at all the recall is 1.0 (nothing to find).
    """
    found = np.asarray(found)
    truth = np.asarray(truth)
    if found.shape[0] != truth.shape[0]:
        raise ValueError(f"found has {found.shape[0]} rows but truth {truth.shape[0]}")
    valid = truth >= 0
    hits = ((found[:, :, None] == truth[:, None, :]) & valid[:, None, :]).any(axis=1).sum(axis=1)
    sizes = valid.sum(axis=1)
    keep = sizes > 0
    if not keep.any():
        return 1.0
    return float(np.mean(hits[keep] / sizes[keep]))


def evaluate_recall(
    index: MatryoshkaIndex,
    queries: np.ndarray,
    k: int = 10,
    candidates: int | None = None,
    *,
    repeats: int = 1,
) -> dict[str, Any]:
    """Recall@k of ``index.search`` against exact full-dim search, queries/s of both, memory per vector.

    Both searches run on the same queries as one batch; queries/s is the best of ``repeats`` runs
    (the first run also pays for reading memory-mapped pages from disk).
    """
    queries = check_embeddings(queries, "queries", dim=index.input_dim, allow_zero_rows=index.metric == "ip")
    k = check_positive_int(k, "k")
    repeats = check_positive_int(repeats, "repeats")
    used = index.resolve_candidates(k, candidates)

    def best_time(fn: Any) -> tuple[float, Any]:
        best, out = float("inf"), None
        for _ in range(repeats):
            t0 = time.perf_counter()
            out = fn()
            best = min(best, time.perf_counter() - t0)
        return best, out

    t_two, (_, found) = best_time(lambda: index.search(queries, k=k, candidates=used))
    t_exact, (_, truth) = best_time(lambda: index.exact_search(queries, k=k))
    info = index.info()
    n = len(queries)
    return {
        "queries": n,
        "k": k,
        "candidates": used,
        f"recall@{k}": round(recall_at_k(found, truth), 5),
        "queries_per_second": round(n / max(t_two, 1e-9), 1),
        "exact_queries_per_second": round(n / max(t_exact, 1e-9), 1),
        "speedup_vs_exact": round(t_exact / max(t_two, 1e-9), 2),
        "truth": "exact inner-product search over the index's full vectors (the rerank vectors)",
        "device": info["device"],
        "memory": {
            "ram_bytes_per_vector": info["memory"]["ram_bytes_per_vector"],
            "disk_bytes_per_vector": info["memory"]["disk_bytes_per_vector"],
            "exact_search_ram_bytes_per_vector": index.full_dim * 4,
        },
    }
