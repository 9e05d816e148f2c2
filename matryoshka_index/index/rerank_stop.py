"""Calibrating the rerank's per-query stop on prepared calibration queries (issue 22).

The backend owns the stop (``backends/faiss_rerank.py``: :class:`RerankStop`, the score model, the blockwise
rerank); :func:`matryoshka_index.calibration.calibrate_rerank_stop` owns the search over its settings. This module
joins them for :meth:`MatryoshkaIndex.calibrate_rerank_stop <matryoshka_index.MatryoshkaIndex.calibrate_rerank_stop>`:
fit the score model on the queries' candidates, measure recall and the mean candidates reranked at each setting
tried, keep the stop only where it reranks fewer candidates on average than the plain search at the same
candidates while its recall's lower bound still reaches the target.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from ..backends.faiss_rerank import RerankStop
from ..calibration import calibrate_rerank_stop, recall_with_lower_bound
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

    def run(stop: RerankStop | None) -> tuple[float, float, float]:
        backend.set_rerank_stop(stop)
        timings: dict[str, float] = {}
        _, found = backend.search(coarse_q, full_q, k, candidates, timings=timings)
        recall, lower = recall_with_lower_bound(found, truth)
        return recall, lower, timings["reranked"] / max(1, nq)

    try:
        plain = run(None)
        # the model is fitted on the largest cap tried: the candidates a stop may skip
        slope, intercept, sigma = backend.score_model(coarse_q, full_q, k, 2 * candidates)
        choice = calibrate_rerank_stop(lambda f, z: run(RerankStop(slope, intercept, sigma, z, f)), target)
    except BaseException:
        backend.set_rerank_stop(before)
        raise
    record: dict[str, Any] = {
        "k": k,
        "target_recall": target,
        "queries": nq,
        "candidates": int(candidates),
        "plain": {"recall": round(plain[0], 5), "recall_lower_bound": round(plain[1], 5), "mean_reranked": plain[2]},
        "score_model": {"slope": slope, "intercept": intercept, "sigma": sigma},
        "steps": choice.steps,
        "method": "smallest margin z (bisection) reaching the target per cap factor, then the fewest mean reranked",
    }
    if choice.factor is None:
        backend.set_rerank_stop(before)
        record["seconds"] = round(time.perf_counter() - t0, 3)
        raise CalibrationError(
            f"calibrate_rerank_stop: no per-query stop reaches target_recall {target} at {candidates} candidates "
            f"(the plain search has lower bound {plain[1]:.4f}); the stop stays "
            f"{'as it was' if before is not None else 'off'}: calibrate the candidates first or lower the target",
            record,
        )
    stop = RerankStop(slope, intercept, sigma, float(choice.z), float(choice.factor))
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
