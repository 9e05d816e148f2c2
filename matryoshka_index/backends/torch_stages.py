"""A FAISS flat index whose two stages run in torch: :class:`TorchStages`, over the engines of :mod:`.torch_engine`.

When the index's device is a CUDA GPU that faiss cannot use (faiss-cpu installed) and the coarse index
is flat, ``index/device_stage.py`` wraps the FAISS backend in :class:`TorchStages`: the coarse stage
runs on the device with :class:`~.torch_engine.TorchCoarseEngine` (float32: the same top-k as FAISS)
and the rerank with :class:`~.torch_engine.TorchReranker` (full vectors copied onto the device when
they fit in half its free memory, else gathered from the memory map, batch-pipelined).

Everything but the search is the FAISS backend's own (``inner``, through its public names), so the
index's files (and what ``save`` writes) are FAISS's: an index saved from a GPU loads on a CPU-only
machine and the other way round. The torch mirror is built from the backend's
:meth:`~.faiss_backend.FaissBackend.device_arrays` on first search and rebuilt lazily after ``add`` /
``remove`` (a full copy: fine for batch updates, costly for many small ones).
"""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np

from ..errors import InputError
from .base import EMPTY_ID, Results, add_timings, empty_results, reject_query_filter
from .faiss_backend import FaissBackend


def can_mirror(backend: Any) -> bool:
    """Whether the torch stages can serve ``backend``: a FAISS index with float prefixes in a flat index."""
    return isinstance(backend, FaissBackend) and backend.mirrorable


class TorchStages:
    """A FAISS backend whose flat coarse stage and rerank run in torch on ``torch_device`` (the files stay FAISS's).

    ``torch_device``: a torch device string (``"cuda:0"``; ``"cpu"`` works too: that is how it is tested
    without a GPU). Every public attribute but ``search``, ``coarse_search``, ``rerank_rows``, ``add``,
    ``remove`` and ``info`` is the wrapped backend's (``inner``); private ones are not handed on.
    """

    def __init__(self, inner: Any, torch_device: str) -> None:
        if not can_mirror(inner):
            raise InputError("device: the torch engine serves FAISS flat coarse indexes only")
        self.inner = inner
        self.torch_device = torch_device
        self._mirror: tuple[Any, Any, np.ndarray] | None = None
        self._mirror_lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:  # only called for what this class does not define
        if name == "inner" or name.startswith("_"):  # the backend's own state stays its own
            raise AttributeError(name)
        return getattr(self.inner, name)

    def __len__(self) -> int:
        return len(self.inner)

    # ------------------------------------------------------------------ the mirror
    def _engines(self) -> tuple[Any, Any, np.ndarray]:
        """``(coarse engine, reranker, row -> id)``, built from the backend's arrays when stale."""
        with self._mirror_lock:
            if self._mirror is None:
                from .torch_engine import TorchCoarseEngine, TorchReranker

                rows, vectors, segments, row_ids = self.inner.device_arrays()
                coarse = TorchCoarseEngine(self.inner.coarse_dim, device=self.torch_device)
                coarse.add(rows, vectors)
                rerank = TorchReranker(segments, device=self.torch_device)
                self._mirror = (coarse, rerank, row_ids)
            return self._mirror

    def _stale(self) -> None:
        with self._mirror_lock:
            self._mirror = None

    def add(self, ids: np.ndarray, coarse: np.ndarray, full: np.ndarray, payloads: Any = None) -> None:
        self.inner.add(ids, coarse, full, payloads)
        self._stale()

    def remove(self, ids: np.ndarray) -> int:
        removed = self.inner.remove(ids)
        self._stale()
        return removed

    # ------------------------------------------------------------------ search
    @staticmethod
    def _to_ids(row_ids: np.ndarray, scores: np.ndarray, rows: np.ndarray) -> Results:
        valid = rows >= 0
        ids = np.where(valid, row_ids[np.where(valid, rows, 0)], EMPTY_ID)
        return np.where(valid, scores, -np.inf).astype(np.float32, copy=False), ids

    def search(  # the backends' two-stage search signature (base.SearchBackend.search)
        self, coarse_queries: np.ndarray, full_queries: np.ndarray, k: int, candidates: int,
        query_filter: Any | None = None, *, timings: dict[str, float] | None = None,
    ) -> Results:  # fmt: skip
        """The FAISS backend's two-stage search, both stages in torch; ``timings`` as FAISS's."""
        if self.inner.prefix_only:  # no full vectors to rerank: the FAISS coarse stage alone
            return self.inner.search(coarse_queries, full_queries, k, candidates, query_filter, timings=timings)
        reject_query_filter(query_filter, "faiss")
        nq = len(coarse_queries)
        if not len(self.inner) or not nq:
            return empty_results(nq, k)
        coarse, rerank, row_ids = self._engines()
        coarse_queries = np.ascontiguousarray(coarse_queries, dtype=np.float32)
        full_queries = np.ascontiguousarray(full_queries, dtype=np.float32)
        t0 = time.perf_counter()
        rows = coarse.search(coarse_queries, max(candidates, k))[1]
        t1 = time.perf_counter()
        scores, rows = rerank.rerank(full_queries, rows, k)
        add_timings(timings, coarse=t1 - t0, rerank=time.perf_counter() - t1)
        return self._to_ids(row_ids, scores, rows)

    def rerank_rows(self, full_queries: np.ndarray, rows: np.ndarray, k: int) -> Results:
        """Best ``k`` of the candidate ``rows`` by full inner product, in torch: ``(scores, rows)``."""
        return self._engines()[1].rerank(full_queries, rows, k)

    def coarse_search(self, coarse_queries: np.ndarray, k: int) -> Results:
        coarse, _, row_ids = self._engines()
        return self._to_ids(row_ids, *coarse.search(coarse_queries, k))

    def info(self) -> dict[str, Any]:
        """The FAISS backend's facts, with where the torch stages run (without building the mirror to say so)."""
        out = dict(self.inner.info())
        where = self.torch_device
        mirror = self._mirror
        full = (
            mirror[1].info()["full_vectors"]
            if mirror is not None
            else "on the device when they fit in half its free memory, else gathered on the CPU (batch-pipelined)"
        )
        out.update(
            device=where,
            coarse_engine=f"torch float32 on {where} (faiss-gpu not usable here)",
            rerank_device=where,
            rerank_engine=f"torch, full vectors {full}",
        )
        return out


__all__ = ["TorchStages", "can_mirror"]
