"""Calibrating the rerank's per-query stop on prepared calibration queries (issue 22).

The backend owns the stop (``backends/faiss_rerank.py``: :class:`RerankStop`, the score model, the blockwise
rerank); :func:`matryoshka_index.calibration.calibrate_rerank_stop` owns the search over its settings. This module
joins them for :meth:`MatryoshkaIndex.calibrate_rerank_stop <matryoshka_index.MatryoshkaIndex.calibrate_rerank_stop>`:
find the fewest plain candidates whose recall's lower bound reaches the target on these queries (the baseline, as
``calibrate`` would), fit the score model on the queries' candidates, measure recall and the mean candidates
reranked at each stop setting tried (caps of 1-2x the baseline), and keep the stop only where it reranks fewer
candidates on average than the baseline while its recall's lower bound still reaches the target. The stop's cap
is stored relative to the index's default ``candidates`` (``factor``), so a search's scaling of them for k > 10
scales the cap alike.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from ..backends.faiss_rerank import RerankStop
from ..calibration import MAX_CANDIDATES, calibrate_rerank_stop, candidate_ladder, recall_with_lower_bound, smallest
from ..errors import CalibrationError, InputError

__all__ = ["calibrate_stop"]


def calibrate_stop(
    backend: Any,
    coarse_q: np.ndarray,
    full_q: np.ndarray,
    truth: np.ndarray,
    *,
    k: int,
    target: float,
    candidates: int,
) -> dict[str, Any]:
    """Choose, set and describe the backend's per-query stop for ``candidates`` at ``target`` (see the module)."""
    if not callable(getattr(backend, "set_rerank_stop", None)) or not callable(getattr(backend, "score_model", None)):
        raise InputError(
            f"calibrate_rerank_stop: the {backend.kind!r} backend has no per-query rerank stop (faiss has)"
        )
    t0 = time.perf_counter()
    before = backend.rerank_stop
    nq = len(coarse_q)

    def plain_at(c: int) -> tuple[float, float, float]:
        backend.set_rerank_stop(None)
        return run_at(c)

    def run_at(c: int) -> tuple[float, float, float]:
        timings: dict[str, float] = {}
        _, found = backend.search(coarse_q, full_q, k, c, timings=timings)
        recall, lower = recall_with_lower_bound(found, truth)
        return recall, lower, timings["reranked"] / max(1, nq)

    try:
        # the baseline: the fewest plain candidates reaching the target on these queries (as calibrate would)
        measured: dict[int, tuple[float, float, float]] = {}
        ladder = candidate_ladder(k, min(len(backend), max(MAX_CANDIDATES, candidates)))
        base = smallest(ladder, lambda c: measured.setdefault(c, plain_at(c))[1] >= target - 1e-12)
        base = base if base is not None else ladder[-1]
        plain = measured.get(base) or plain_at(base)
        # the model is fitted on the largest cap tried: the candidates a stop may skip
        slope, intercept, sigma = backend.score_model(coarse_q, full_q, k, 2 * base)

        def with_stop(f: float, z: float) -> tuple[float, float, float]:
            backend.set_rerank_stop(RerankStop(slope, intercept, sigma, z, f * base / candidates))
            return run_at(candidates)

        choice = calibrate_rerank_stop(with_stop, target)
    except BaseException:
        backend.set_rerank_stop(before)
        raise
    record: dict[str, Any] = {
        "k": k,
        "target_recall": target,
        "queries": nq,
        "candidates": int(candidates),
        "plain": {
            "candidates": int(base),
            "recall": round(plain[0], 5),
            "recall_lower_bound": round(plain[1], 5),
            "mean_reranked": plain[2],
            "steps": [[c, round(r, 5), round(lb, 5)] for c, (r, lb, _) in sorted(measured.items())],
        },
        "score_model": {"slope": slope, "intercept": intercept, "sigma": sigma},
        "steps": choice.steps,
        "method": "smallest margin z (bisection) reaching the target per cap factor, then the fewest mean reranked",
    }
    if choice.factor is None:
        backend.set_rerank_stop(before)
        record["seconds"] = round(time.perf_counter() - t0, 3)
        raise CalibrationError(
            f"calibrate_rerank_stop: no per-query stop reaches target_recall {target} within "
            f"{int(2 * base)} candidates (the plain search's lower bound at {base}: {plain[1]:.4f}); the stop stays "
            f"{'as it was' if before is not None else 'off'}: lower the target or rebuild with a larger coarse_dim",
            record,
        )
    stop = RerankStop(slope, intercept, sigma, float(choice.z), float(choice.factor) * base / candidates)
    used = choice.mean_candidates < plain[2]
    backend.set_rerank_stop(stop if used else None)
    record.update(
        stop=stop.to_params(),
        recall=round(choice.recall, 5),
        recall_lower_bound=round(choice.lower_bound, 5),
        mean_reranked=choice.mean_candidates,
        used=used,
        seconds=round(time.perf_counter() - t0, 3),
    )
    if not used:
        record["note"] = "the stop reranked no fewer candidates than the plain search: left off"
    return record
