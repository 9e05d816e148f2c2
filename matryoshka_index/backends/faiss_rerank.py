"""The FAISS backend's rerank stage beyond the exact float32 gather: a reduced-precision copy and a per-query stop.

* **A float16 rerank copy** (``rerank_dtype="float16"``): the full vectors once more at half precision
  (``rerank_f16.npy`` beside ``full.npy``, its rows added with them), which the rerank reads instead of
  ``full.npy``: half the bytes a candidate row (768 B instead of 1,536 B at 384 dims), so more candidate pages
  stay in a capped page cache and fewer rows straddle two pages. Exact search, saving and rebuilding still read
  the float32 rows. Scores are float32 inner products of the float32 query with the float16 row converted to
  float32 (:func:`gather_best_lowp`, a NumPy gather in bounded blocks: FAISS's by-index gather takes float32).
* **A per-query stop** (:class:`RerankStop`): the candidates arrive in coarse-score order; they are reranked in
  growing blocks (:func:`block_edges`), and a query stops once no remaining candidate can enter its top ``k``:
  the full score of a candidate is modelled as ``slope * coarse + intercept`` (fitted at calibration on the
  calibration queries' candidates, :func:`fit_score_model`), and the remaining candidates' best coarse score,
  mapped so and raised by ``z`` residual standard deviations, must fall below the query's current k-th full
  score. ``z`` and the candidate cap (``factor`` times the candidates asked for) are calibrated for a recall
  target like ``candidates`` (:func:`matryoshka_index.calibration.calibrate_rerank_stop`), so easy queries read
  fewer rows and hard ones may read more. Off unless calibrated; off, the search is exactly the plain one.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import FormatError, InputError

__all__ = [
    "GATHER_ROWS",
    "RERANK_DTYPES",
    "RERANK_FILES",
    "RerankStop",
    "block_edges",
    "candidate_scores",
    "check_rerank_dtype",
    "fit_score_model",
    "gather_best_lowp",
    "rerank_with_stop",
]

RERANK_DTYPES = ("float32", "float16")
RERANK_FILES = {"float16": "rerank_f16.npy"}  # the copy's file; float32 reranks from full.npy itself
GATHER_ROWS = 16384  # candidate rows converted to float32 at once (24 MiB at 384 dims)
BLOCK_GROWTH = 1.25  # each block of the per-query stop 1.25x the rows reranked so far


def check_rerank_dtype(value: Any) -> str:
    """``value`` if it is a known rerank dtype, else one InputError line."""
    if value not in RERANK_DTYPES:
        raise InputError(f"rerank_dtype: expected one of {', '.join(RERANK_DTYPES)}, got {value!r}")
    return str(value)


@dataclass(frozen=True)
class RerankStop:
    """A calibrated per-query stop: a candidate's full score is taken as at most
    ``slope * coarse + intercept + z * sigma``; the rerank reads up to ``ceil(factor * candidates)`` rows
    (relative to the index's default candidates: below 1 where fewer reach the target on the calibration queries)."""

    slope: float
    intercept: float
    sigma: float
    z: float
    factor: float = 1.0

    def __post_init__(self) -> None:
        for name in ("slope", "intercept", "sigma", "z", "factor"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
                raise InputError(f"rerank_stop: {name} must be a number, got {value!r}")
            if not math.isfinite(float(value)):
                raise InputError(f"rerank_stop: {name} must be finite, got {value!r}")
        if self.sigma < 0 or self.z < 0:
            raise InputError(f"rerank_stop: sigma and z must be >= 0, got sigma={self.sigma!r}, z={self.z!r}")
        if self.factor <= 0:
            raise InputError(
                f"rerank_stop: factor must be > 0 (the cap's multiple of the candidates), got {self.factor!r}"
            )

    def cap(self, candidates: int, k: int = 1) -> int:
        """The most candidates a query reranks when ``candidates`` were asked for (at least ``k``)."""
        return max(int(k), math.ceil(self.factor * candidates - 1e-9))

    def to_params(self) -> dict[str, float]:
        return {
            "slope": float(self.slope),
            "intercept": float(self.intercept),
            "sigma": float(self.sigma),
            "z": float(self.z),
            "factor": float(self.factor),
        }

    @classmethod
    def from_params(cls, params: Any, where: str) -> RerankStop:
        """From a manifest's ``rerank_stop`` parameters; a malformed one is a FormatError naming ``where``."""
        try:
            return cls(**{name: float(params[name]) for name in ("slope", "intercept", "sigma", "z", "factor")})
        except (KeyError, TypeError, ValueError, InputError) as exc:
            raise FormatError(f"{where}: the rerank_stop parameters are malformed ({exc})") from None


def block_edges(k: int, cap: int) -> list[int]:
    """Where the per-query stop checks: after ``2k`` rows, then each block ``BLOCK_GROWTH`` times the rows so
    far (rounded up), the last edge ``cap``."""
    edges, edge = [], max(1, min(cap, 2 * k))
    while True:
        edges.append(edge)
        if edge >= cap:
            return edges
        edge = min(cap, max(edge + 1, math.ceil(edge * BLOCK_GROWTH)))


def gather_best_lowp(
    segments: list[tuple[int, np.ndarray]], dim: int, queries: np.ndarray, rows: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Best ``k`` of the candidate ``rows`` (``-1`` = none) by the inner product of each float32 query with
    the rows of ``segments`` (``(first row, array)``, any float dtype, converted to float32): ``(scores, rows)``,
    ``-inf`` / ``-1`` where fewer; ties keep the candidates' order."""
    nq, c = rows.shape
    best_s = np.full((nq, k), -np.inf, dtype=np.float32)
    best_r = np.full((nq, k), -1, dtype=np.int64)
    step = max(1, GATHER_ROWS // max(1, c))
    for s in range(0, nq, step):
        r = rows[s : s + step]
        scores = candidate_scores(segments, dim, queries[s : s + step], r)
        kk = min(k, c)
        order = np.argsort(-scores, axis=1, kind="stable")[:, :kk]
        top_s = np.take_along_axis(scores, order, axis=1)
        top_r = np.where(np.isfinite(top_s), np.take_along_axis(r, order, axis=1), -1)
        best_s[s : s + step, :kk] = np.where(top_r >= 0, top_s, -np.inf)
        best_r[s : s + step, :kk] = top_r
    return best_s, best_r


def candidate_scores(
    segments: list[tuple[int, np.ndarray]], dim: int, queries: np.ndarray, rows: np.ndarray
) -> np.ndarray:
    """``(nq, c)`` float32 inner products of each query with each of its candidate ``rows`` of ``segments``
    (converted to float32), ``-inf`` where a row is ``-1`` or outside every segment. Gathers ``nq * c`` rows at
    once: callers bound it (:data:`GATHER_ROWS`)."""
    vec = np.zeros((*rows.shape, dim), dtype=np.float32)
    valid = np.zeros(rows.shape, dtype=bool)
    for start, arr in segments:
        inside = (rows >= start) & (rows < start + len(arr))
        if inside.any():
            vec[inside] = arr[rows[inside] - start]  # the gather: one row read a candidate
            valid |= inside
    scores = np.matmul(vec, np.asarray(queries, dtype=np.float32)[:, :, None])[..., 0]
    scores[~valid] = -np.inf
    return scores


def _merge(a_s: np.ndarray, a_r: np.ndarray, b_s: np.ndarray, b_r: np.ndarray, k: int) -> tuple[np.ndarray, ...]:
    """The best ``k`` of two top lists, ties to ``a`` (the earlier candidates)."""
    s = np.concatenate([a_s, b_s], axis=1)
    r = np.concatenate([a_r, b_r], axis=1)
    order = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(s, order, axis=1), np.take_along_axis(r, order, axis=1)


def rerank_with_stop(
    best_of: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]],
    coarse_scores: np.ndarray,
    rows: np.ndarray,
    k: int,
    stop: RerankStop,
    prefetch: Callable[[np.ndarray], object] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rerank ``rows`` (``(nq, cap)`` in coarse-score order, ``-1`` = none) block by block, each query until
    :class:`RerankStop` says no remaining candidate can enter its top ``k``.

    ``best_of(query_indices, block_rows)``: the best ``k`` ``(scores, rows)`` of a block for those queries;
    ``prefetch(rows)``: asks the disk for a block's rows ahead (the next block's while one is reranked).
    Returns ``(scores, rows, reranked)``, ``reranked`` the candidates each query read."""
    nq, cap = rows.shape
    valid = rows >= 0
    # the best coarse score from each position on (codes may not sort exactly), mapped to a full-score bound
    suffix = np.maximum.accumulate(np.where(valid, coarse_scores, -np.inf)[:, ::-1], axis=1)[:, ::-1]
    bound = stop.slope * suffix.astype(np.float64) + stop.intercept + stop.z * stop.sigma
    best_s = np.full((nq, k), -np.inf, dtype=np.float32)
    best_r = np.full((nq, k), -1, dtype=np.int64)
    reranked = np.zeros(nq, dtype=np.int64)
    active = np.arange(nq)
    edges = block_edges(k, cap)
    lo = 0
    if prefetch is not None:
        prefetch(rows[:, : edges[0]])
    for j, hi in enumerate(edges):
        if not len(active):
            break
        if prefetch is not None and j + 1 < len(edges):
            prefetch(rows[active, hi : edges[j + 1]])
        s, r = best_of(active, np.ascontiguousarray(rows[active, lo:hi]))
        best_s[active], best_r[active] = _merge(best_s[active], best_r[active], s, r, k)
        reranked[active] += valid[active, lo:hi].sum(axis=1)
        if hi < cap:
            done = bound[active, hi] < best_s[active, k - 1]  # fewer than k found: -inf, never done
            active = active[~done]
        lo = hi
    return best_s, best_r, reranked


def fit_score_model(coarse_scores: np.ndarray, full_scores: np.ndarray, k: int) -> tuple[float, float, float]:
    """``(slope, intercept, sigma)`` of full scores against coarse scores, least squares over the candidates
    ranked ``k`` and below (the ones a stop skips), ``sigma`` the residuals' standard deviation."""
    c = np.asarray(coarse_scores, dtype=np.float64)[:, k:].ravel()
    f = np.asarray(full_scores, dtype=np.float64)[:, k:].ravel()
    keep = np.isfinite(c) & np.isfinite(f)
    c, f = c[keep], f[keep]
    if len(c) < 2 or float(np.ptp(c)) == 0.0:
        return 1.0, float(np.mean(f - c)) if len(c) else 0.0, float(np.std(f - c)) if len(c) else 0.0
    slope, intercept = np.polyfit(c, f, 1)
    sigma = float(np.std(f - (slope * c + intercept)))
    return float(slope), float(intercept), sigma
