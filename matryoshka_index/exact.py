"""Exact inner-product search over a plain array: the ground truth of recall, below the index and its evaluation.

Used by the index's build-time calibration (when the rerank vectors are not the originals) and by
benchmarks; needs faiss only when called.
"""

from __future__ import annotations

import numpy as np

from .validation import iter_row_chunks, l2_normalize


def exact_topk(
    queries: np.ndarray,
    corpus: np.ndarray,
    k: int,
    *,
    normalize: bool = False,
    include: np.ndarray | None = None,
    chunk_rows: int = 65536,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact inner-product top-``k`` rows of ``corpus`` (any array, memory-mapped is fine) for each query.

    The corpus is streamed in chunks of ``chunk_rows`` rows, each L2-normalised first when
    ``normalize`` (cosine); ``include`` (a boolean mask over the rows) restricts the search to the rows
    it marks. Returns ``(scores, rows)``, ``(n_queries, k)`` each, best first (``-1`` rows when fewer).
    """
    import faiss  # lazily: the adaptor side of the package must not need faiss

    q = np.ascontiguousarray(queries, dtype=np.float32)
    nq = len(q)
    best_s = np.full((nq, k), -np.inf, dtype=np.float32)
    best_r = np.full((nq, k), -1, dtype=np.int64)
    for sl in iter_row_chunks(len(corpus), chunk_rows):
        chunk = np.asarray(corpus[sl], dtype=np.float32)
        chunk = l2_normalize(chunk) if normalize else np.ascontiguousarray(chunk)
        skip = 0 if include is None else int((~include[sl]).sum())
        # ask for k more per excluded row in the chunk, so k included rows survive the filter
        s, r = faiss.knn(q, chunk, min(k + skip, len(chunk)), metric=faiss.METRIC_INNER_PRODUCT)
        if skip:
            out = (r < 0) | ~include[sl][np.maximum(r, 0)]
            s, r = np.where(out, -np.inf, s), np.where(out, -1, r)
        r = np.where(r >= 0, r + sl.start, -1)
        all_s = np.concatenate([best_s, s.astype(np.float32)], axis=1)
        all_r = np.concatenate([best_r, r], axis=1)
        order = np.argsort(-all_s, axis=1, kind="stable")[:, :k]
        best_s = np.take_along_axis(all_s, order, axis=1)
        best_r = np.take_along_axis(all_r, order, axis=1)
    return best_s, best_r
