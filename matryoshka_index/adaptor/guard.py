"""The held-out guard: a trained adaptor is kept only where its prefixes find neighbours better than its start.

Training optimises losses on batches; what a coarse-then-rerank index needs is that each prefix finds
the full-dim nearest neighbours. The guard measures exactly that on rows training never saw (held-out
queries when ``fit`` got queries, else held-out corpus rows): recall@k of prefix-m search among the
training rows against exact full-dim search over the original vectors (what an index reranking with
them needs its coarse stage to find), for the adaptor and for its starting point (the PCA rotation, or
the identity; with a query head each side centred), at each of the adaptor's prefix lengths. Measured
against the start's own full-dim neighbours instead, on the multilingual dev set a trained query-head
adaptor lost (0.596 vs 0.618 mean) while its prefix nDCG@10 was far above the start's (0.817 vs 0.735
at 64 dims), so the original neighbours are the reference. numpy only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ..validation import iter_row_chunks, l2_normalize

__all__ = ["GuardResult", "positive_hit_rate", "positive_ndcg", "prefix_recall"]

Transform = Callable[[np.ndarray], np.ndarray]
Sides = tuple[Transform, Transform]  # (for the queries, for the rows): a query head may differ from the rows'


def _top_k(queries: np.ndarray, rows: np.ndarray, k: int) -> np.ndarray:
    """Row indices of each query's k highest cosines (unordered within the k)."""
    q = l2_normalize(np.asarray(queries, dtype=np.float32))
    out = np.empty((len(q), k), dtype=np.int64)
    x = l2_normalize(np.asarray(rows, dtype=np.float32))
    for sl in iter_row_chunks(len(q), 256):  # 256 x rows scores at a time
        s = q[sl] @ x.T
        out[sl] = np.argpartition(-s, k - 1, axis=1)[:, :k]
    return out


def prefix_recall(
    queries: np.ndarray,
    rows: np.ndarray,
    transform: Transform | Sides,
    dims: Sequence[int],
    k: int = 10,
    *,
    reference: Sides | None = None,
) -> dict[int, float]:
    """recall@k of prefix-m search over ``transform(rows)`` against exact full-dim search over ``rows``
    (over ``reference``'s full-dim vectors when given: an adaptor's start, whose geometry it keeps).

    ``transform`` is one function for both, or ``(query transform, row transform)``.
    """
    k = min(k, len(rows))
    truth = _top_k(reference[0](queries), reference[1](rows), k) if reference else _top_k(queries, rows, k)
    for_queries, for_rows = _sides(transform)
    tq, tx = for_queries(queries), for_rows(rows)
    out = {}
    for m in dims:
        found = _top_k(tq[:, :m], tx[:, :m], k)
        hits = sum(len(np.intersect1d(a, b, assume_unique=True)) for a, b in zip(found, truth, strict=True))
        out[int(m)] = hits / truth.size
    return out


def _sides(transform: Transform | Sides) -> Sides:
    return transform if isinstance(transform, tuple) else (transform, transform)


def _pooled(
    queries: np.ndarray, positives: np.ndarray, rows: np.ndarray, transform: Transform | Sides
) -> tuple[np.ndarray, np.ndarray]:
    """``(transformed queries, transformed pool)``: the pool both pair measures search is ``rows`` then the
    positives, so query i's positive is pool row ``len(rows) + i``."""
    for_queries, for_rows = _sides(transform)
    return for_queries(queries), for_rows(np.concatenate([rows, positives]))


def positive_hit_rate(
    queries: np.ndarray,
    positives: np.ndarray,
    rows: np.ndarray,
    transform: Transform | Sides,
    dims: Sequence[int],
    k: int = 10,
) -> dict[int, float]:
    """Share of held-out (query, positive) pairs whose positive is among the top k of prefix-m search
    over ``rows`` plus the positives (the supervised guard: labels, not neighbours, are the target)."""
    tq, tx = _pooled(queries, positives, rows, transform)
    label = len(rows) + np.arange(len(queries))
    k = min(k, len(rows) + len(positives))
    return {int(m): float(np.mean(np.any(_top_k(tq[:, :m], tx[:, :m], k) == label[:, None], axis=1))) for m in dims}


def positive_ndcg(
    queries: np.ndarray,
    positives: np.ndarray,
    rows: np.ndarray,
    transform: Transform | Sides,
    dims: Sequence[int],
    k: int = 10,
) -> dict[int, float]:
    """Mean nDCG@k of held-out (query, positive) pairs at each prefix length: ``1 / log2(rank + 1)`` of the
    positive's rank among ``rows`` plus the positives when it is in the top k, else 0 (one relevant
    document per query). Finer than :func:`positive_hit_rate` for telling two fits apart."""
    tq, tx = _pooled(queries, positives, rows, transform)
    out = {}
    for m in dims:
        q = l2_normalize(np.asarray(tq[:, :m], dtype=np.float32))
        x = l2_normalize(np.asarray(tx[:, :m], dtype=np.float32))
        gains = np.empty(len(q))
        for sl in iter_row_chunks(len(q), 256):
            s = q[sl] @ x.T
            own = s[np.arange(s.shape[0]), len(rows) + np.arange(sl.start, sl.start + s.shape[0])]
            rank = 1 + np.sum(s > own[:, None], axis=1)
            gains[sl] = np.where(rank <= k, 1.0 / np.log2(rank + 1), 0.0)
        out[int(m)] = float(gains.mean())
    return out


@dataclass(frozen=True)
class GuardResult:
    """The guard's measurement and verdict: the adaptor is kept when its mean recall over the prefix
    lengths is at least its start's (one prefix may lose a little where another gains more: an adaptor
    that trades its longest prefix for its shortest still serves a coarse stage better)."""

    source: str  # "held-out queries" | "held-out corpus rows" | "held-out pairs"
    n_queries: int
    n_rows: int
    k: int
    adaptor_recall: dict[int, float]
    start_recall: dict[int, float]

    @property
    def kept(self) -> bool:
        return float(np.mean(list(self.adaptor_recall.values()))) >= float(np.mean(list(self.start_recall.values())))

    @property
    def metric(self) -> str:
        if self.source == "held-out pairs":
            return f"positives in the top {self.k}"
        return f"recall@{self.k} against exact full-dim search"

    @classmethod
    def measure_pairs(
        cls,
        queries: np.ndarray,
        positives: np.ndarray,
        rows: np.ndarray,
        adaptor: Sides,
        start: Sides,
        dims: Sequence[int],
        k: int = 10,
    ) -> GuardResult:
        return cls(
            source="held-out pairs",
            n_queries=len(queries),
            n_rows=len(rows) + len(positives),
            k=min(k, len(rows) + len(positives)),
            adaptor_recall=positive_hit_rate(queries, positives, rows, adaptor, dims, k),
            start_recall=positive_hit_rate(queries, positives, rows, start, dims, k),
        )

    @classmethod
    def measure(
        cls,
        source: str,
        queries: np.ndarray,
        rows: np.ndarray,
        adaptor: Transform | Sides,
        start: Transform | Sides,
        dims: Sequence[int],
        k: int = 10,
    ) -> GuardResult:
        return cls(
            source=source,
            n_queries=len(queries),
            n_rows=len(rows),
            k=min(k, len(rows)),
            adaptor_recall=prefix_recall(queries, rows, adaptor, dims, k),
            start_recall=prefix_recall(queries, rows, start, dims, k),
        )

    def to_dict(self) -> dict:
        return {
            "source": self.source,
            "queries": self.n_queries,
            "rows": self.n_rows,
            "k": self.k,
            "metric": self.metric,
            "adaptor_recall": {str(m): round(v, 4) for m, v in self.adaptor_recall.items()},
            "start_recall": {str(m): round(v, 4) for m, v in self.start_recall.items()},
            "kept": self.kept,
        }
