"""One device for an index's stages: where the adaptor, the coarse search and the rerank run.

``MatryoshkaIndex.build/load(..., device=...)`` resolve the device once
(:func:`matryoshka_index.device.resolve_device`) and use it three ways:

* the **adaptor** trains and transforms on its torch device (``adaptor="train"`` or a loaded adaptor);
* the **FAISS coarse stage** runs on the GPU through faiss-gpu when it sees that GPU (the backend's own
  ``device`` option); when the device is a CUDA GPU that faiss cannot use (faiss-cpu installed) and
  the coarse index is flat, :class:`TorchStages` runs the coarse stage on it with the torch engine
  (float32: the same top-k as FAISS) and the **rerank** there too (full vectors copied onto the GPU
  when they fit in half its free memory, else gathered from the memory map, batch-pipelined);
* everything else stays on the CPU, silently; ``info()["stages"]`` says where each stage runs.

:class:`TorchStages` wraps the FAISS backend and hands everything but the search to it, so the
index's files (and what ``save`` writes) are the FAISS backend's own: an index saved from a GPU
loads on a CPU-only machine and the other way round. Its torch mirror of the coarse vectors and
the reranker are rebuilt lazily after ``add`` / ``remove`` (a full copy: fine for batch updates,
costly for many small ones).
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from ..backends.base import Results
from ..backends.faiss_backend import FaissBackend
from ..device import CPU, Device, resolve_device
from ..errors import InputError

ENGINES = ("auto", "faiss", "torch")
LEGACY_FAISS_DEVICES = ("gpu",)  # FaissBackend's own spelling: "GPU when one works, else the CPU"


def resolve_index_device(device: str | Device) -> tuple[Device, str, str]:
    """``(device, FAISS backend device option, adaptor device)`` for an index's ``device`` argument.

    ``"auto"`` does not import torch to look for a GPU (a loaded adaptor applies without torch where
    it can; the torch engine then serves only a process that has torch loaded already), and hands
    the adaptor its own ``"auto"``. The FAISS backend's older ``"gpu"`` means "the GPU when one works".
    """
    text = device.strip().lower() if isinstance(device, str) else None
    if text in LEGACY_FAISS_DEVICES or text == "auto":
        return resolve_device("auto", import_torch=False), ("gpu" if text == "gpu" else "auto"), "auto"
    dev = resolve_device(device)
    return dev, ("gpu" if dev.faiss_gpu else "cpu"), dev.torch_device


class TorchStages:
    """A FAISS backend whose flat coarse stage and rerank run in torch on ``device`` (the files stay FAISS's).

    ``device``: a resolved :class:`~matryoshka_index.device.Device` (CPU tensors work too: that is how
    it is tested without a GPU). Every attribute but ``search``, ``coarse_search``, ``add``,
    ``remove`` and ``info`` is the wrapped backend's (``inner``).
    """

    def __init__(self, inner: Any, device: Device) -> None:
        if getattr(inner, "kind", None) != "faiss" or not getattr(inner, "mirrorable", False):
            raise InputError("device: the torch engine serves FAISS flat coarse indexes only")
        self.inner = inner
        self.device = device
        self._mirror: tuple[Any, Any] | None = None
        self._mirror_lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:  # only called for what this class does not define
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    def __len__(self) -> int:
        return len(self.inner)

    # ------------------------------------------------------------------ the mirror
    def _engines(self) -> tuple[Any, Any]:
        with self._mirror_lock:
            if self._mirror is None:
                from ..backends.torch_engine import TorchCoarseEngine, TorchReranker

                rows, vectors, segments, _ = self.inner.device_arrays()
                coarse = TorchCoarseEngine(self.inner.coarse_dim, device=self.device.torch_device)
                coarse.add(rows, vectors)
                rerank = TorchReranker(segments, device=self.device.torch_device)
                self._mirror = (coarse, rerank)
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
    # FaissBackend's own two-stage search (filter check, empty index, timings, rows -> ids), over the
    # two stage methods below: the torch engines return the FAISS backend's row numbers.
    search = FaissBackend.search

    def _coarse_rows(self, coarse_queries: np.ndarray, n: int) -> np.ndarray:
        return self._engines()[0].search(coarse_queries, n)[1]

    def rerank_rows(self, full_queries: np.ndarray, rows: np.ndarray, k: int) -> Results:
        """Best ``k`` of the candidate ``rows`` by full inner product, in torch: ``(scores, rows)``."""
        return self._engines()[1].rerank(full_queries, rows, k)

    def coarse_search(self, coarse_queries: np.ndarray, k: int) -> Results:
        return self._to_ids(*self._engines()[0].search(coarse_queries, k))

    def info(self) -> dict[str, Any]:
        """The FAISS backend's facts, with where the torch stages run (without building the mirror to say so)."""
        out = dict(self.inner.info())
        where = self.device.torch_device
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


def attach_device(backend: Any, device: Device, *, engine: str = "auto") -> Any:
    """``backend`` as the index should use it on ``device``: wrapped in :class:`TorchStages` when the torch
    engine is to serve it, else unchanged.

    ``engine="auto"``: the torch engine for a FAISS flat index on a CUDA device that faiss-gpu cannot
    use; ``"torch"``: whenever the backend is FAISS flat (on any device, the CPU included: how the
    torch path is tested here); ``"faiss"``: never.
    """
    if engine not in ENGINES:
        raise InputError(f"engine: unknown coarse engine {engine!r}; choose one of {', '.join(ENGINES)}")
    if isinstance(backend, TorchStages):
        backend = backend.inner
    flat_faiss = getattr(backend, "kind", None) == "faiss" and getattr(backend, "mirrorable", False)
    if engine == "faiss" or not flat_faiss:
        if engine == "torch" and not flat_faiss:
            raise InputError("engine: the torch engine serves FAISS flat coarse indexes only; use index='flat'")
        return backend
    if engine == "torch" or (device.torch_device.startswith("cuda") and not device.faiss_gpu):
        return TorchStages(backend, device)
    return backend


def stages(index: Any, backend_info: dict[str, Any], adaptor_facts: dict[str, Any]) -> dict[str, Any]:
    """Where each stage of ``index`` runs (``info()["stages"]``), and where its adaptor was trained."""
    kind = backend_info.get("backend")
    out: dict[str, Any] = {}
    if adaptor_facts.get("kind") == "matryoshka-adaptor":
        meta = getattr(index.adaptor, "metadata_", {}) or {}
        out["adaptor_training"] = meta.get("training", {}).get("device")
    if adaptor_facts.get("kind") != "none":
        out["adaptor"] = adaptor_facts.get("device", "cpu")
    out["coarse"] = backend_info.get("device")
    if getattr(index, "rerank", "original") is None:
        out["rerank"] = "none (prefix only: rerank=None)"
    elif kind == "faiss":
        out["rerank"] = backend_info.get("rerank_device", "cpu")
    else:
        out["rerank"] = "the Qdrant engine (server side or embedded)"
    return out


__all__ = ["CPU", "ENGINES", "TorchStages", "attach_device", "resolve_index_device", "stages"]
