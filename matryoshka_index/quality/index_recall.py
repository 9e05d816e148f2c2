"""Recall of a built index against exact search, its queries/s and memory (``mindex eval`` without labels).

Formerly ``matryoshka_index.evaluation`` (still importable there until 0.2), a name that collided with
the labelled evaluation beside it (:mod:`matryoshka_index.quality.evaluate`).

``recall@k`` here is the share of the exact full-dimension top-k that a search returns in its own
top-k, averaged over queries (the usual ANN recall, "k@k"). Exact search means brute-force inner
product over the same full vectors the rerank uses, so with ``rerank="original"`` the truth is the
exact full-dim search over the original embeddings. The measure itself is
:func:`matryoshka_index.metrics.ann_recall` (``recall_at_k`` here is its former name); exact search
over a plain array is :func:`matryoshka_index.exact.exact_topk`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import InputError
from ..exact import exact_topk
from ..metrics import ann_recall
from ..validation import best_time, check_embeddings, check_positive_int

if TYPE_CHECKING:
    from ..index import MatryoshkaIndex

__all__ = ["ann_recall", "evaluate_recall", "exact_topk", "recall_at_k"]


recall_at_k = ann_recall
"""The former name of :func:`matryoshka_index.metrics.ann_recall` (recall against exact search);
kept working. The labelled recall is :func:`matryoshka_index.metrics.recall_at_k`."""


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
    if index.rerank is None:
        return _evaluate_prefix_only(index, queries, k, candidates, repeats)
    used = index.resolve_candidates(k, candidates)

    t_two, (_, found) = best_time(lambda: index.search(queries, k=k, candidates=used), repeats)
    t_exact, (_, truth) = best_time(lambda: index.exact_search(queries, k=k), repeats)
    info = index.info()
    n = len(queries)
    return {
        "queries": n,
        "k": k,
        "candidates": used,
        f"recall@{k}": round(ann_recall(found, truth), 5),
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


def _evaluate_prefix_only(
    index: MatryoshkaIndex, queries: np.ndarray, k: int, candidates: int | None, repeats: int
) -> dict[str, Any]:
    """What a prefix-only index (``rerank=None``) can be measured on: queries/s and memory. It keeps no
    full vectors, so there is no exact search to measure recall against here; the recall@10 the build
    measured against exact full-dim search (on held-out corpus rows, before they were added) is shown."""
    if candidates is not None:
        raise InputError("candidates: a prefix-only index (rerank=None) has no rerank candidates; drop --candidates")
    t, _ = best_time(lambda: index.search(queries, k=k), repeats)
    info, record = index.info(), index.calibration or {}
    return {
        "queries": len(queries),
        "k": k,
        "candidates": None,
        f"recall@{k}": None,
        "prefix_only": True,
        "recall_note": "not measured here: a prefix-only index keeps no full vectors to search exactly; "
        "build_recall@10 is the prefix's recall@10 against exact full-dim search measured at build time",
        "build_recall@10": record.get("recall"),
        "build_recall_queries": record.get("queries"),
        "queries_per_second": round(len(queries) / max(t, 1e-9), 1),
        "device": info["device"],
        "memory": {
            "ram_bytes_per_vector": info["memory"]["ram_bytes_per_vector"],
            "disk_bytes_per_vector": info["memory"]["disk_bytes_per_vector"],
            "bytes_saved_per_vector": info["memory"].get("bytes_saved_per_vector"),
        },
    }
