"""faiss-gpu helpers for the coarse stage: GPU flat / IVF-Flat / IVF-PQ / CAGRA indexes, and the trip back to the CPU.

Small functions in the spirit of ``faiss.contrib``. The index's GPU path is this module: the FAISS
backend mirrors its float flat / IVF coarse index on the GPU with :func:`to_gpu` (and its shared
:func:`resources`), and ``benchmarks/gpu_check.py`` measures through the same helpers. Importing
this module is safe on faiss-cpu (and without any GPU): nothing GPU-specific is touched until a
function is called, and then
:func:`require_gpu` raises one clear :class:`~matryoshka_index.errors.BackendError` when faiss-gpu or a
visible GPU is missing. :func:`gpu_available` and :func:`has_cagra` answer without raising.

* :func:`flat_ip`, :func:`ivf_flat`, :func:`ivf_pq`: empty GPU indexes (inner product), built by
  cloning the CPU index with ``faiss.index_cpu_to_gpu`` (so their CPU twins and their files are
  ordinary FAISS indexes); IVF ones still need ``train``.
* :func:`cagra`: a CAGRA graph (cuVS builds of faiss only; :func:`has_cagra` tells) built from the
  vectors in one call; its labels are the vectors' positions. :func:`to_cpu` turns it into an
  ``IndexHNSWCagra`` that a CPU-only faiss can load and search.
* :func:`to_gpu` / :func:`to_cpu`: ``index_cpu_to_gpu`` / ``index_gpu_to_cpu`` (``to_cpu`` of a CPU
  index returns it unchanged). :func:`write_index` always writes the CPU form, so an index saved
  from a GPU loads on a machine without one.
"""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from ..errors import BackendError, InputError

MAX_K = 2048  # FAISS's GPU k-selection limit (GPU_MAX_SELECTION_K): larger k, or IVF nprobe, raise on a GPU
_RESOURCES: dict[int, Any] = {}
_LOCK = threading.Lock()


def gpu_count() -> int:
    """GPUs faiss sees (0 with faiss-cpu or a broken CUDA set-up; never raises)."""
    if not hasattr(faiss, "StandardGpuResources"):
        return 0
    with contextlib.suppress(Exception):
        return int(faiss.get_num_gpus())
    return 0


def gpu_available(gpu: int = 0) -> bool:
    """Whether faiss-gpu is installed and GPU ``gpu`` is visible to it."""
    return 0 <= gpu < gpu_count()


def has_cagra() -> bool:
    """Whether the installed faiss has the CAGRA GPU index (cuVS builds)."""
    return hasattr(faiss, "GpuIndexCagra") and hasattr(faiss, "GpuIndexCagraConfig")


def require_gpu(gpu: int = 0) -> None:
    """Raise a one-line :class:`BackendError` unless faiss-gpu can use GPU ``gpu``."""
    if not hasattr(faiss, "StandardGpuResources"):
        raise BackendError(
            f"faiss {faiss.__version__} has no GPU support (faiss-cpu is installed); "
            "install faiss-gpu (pip install 'matryoshka-index[gpu]') or use the torch engine / the CPU"
        )
    n = gpu_count()
    if not 0 <= gpu < n:
        raise BackendError(
            f"faiss-gpu sees {n} GPU(s), so GPU {gpu} cannot be used; check CUDA_VISIBLE_DEVICES and the driver, "
            "or use device='cpu'"
        )


def resources(gpu: int = 0) -> Any:
    """One shared ``StandardGpuResources`` per GPU (its temporary memory is reused across indexes)."""
    require_gpu(gpu)
    with _LOCK:
        if gpu not in _RESOURCES:
            _RESOURCES[gpu] = faiss.StandardGpuResources()
        return _RESOURCES[gpu]


def to_gpu(index: faiss.Index, gpu: int = 0, *, float16: bool = False) -> faiss.Index:
    """A GPU copy of a CPU index (``faiss.index_cpu_to_gpu``); ``float16`` stores vectors / lookup tables in half."""
    require_gpu(gpu)
    options = faiss.GpuClonerOptions()
    options.useFloat16 = bool(float16)
    try:
        return faiss.index_cpu_to_gpu(resources(gpu), gpu, index, options)
    except RuntimeError as exc:
        raise BackendError(f"faiss-gpu could not copy the {type(index).__name__} to GPU {gpu}: {exc}") from None


def is_gpu_index(index: faiss.Index) -> bool:
    """Whether ``index`` lives on a GPU (a ``GpuIndex*``)."""
    return type(index).__name__.startswith("GpuIndex")


def to_cpu(index: faiss.Index) -> faiss.Index:
    """The CPU form of ``index`` (``faiss.index_gpu_to_cpu``); a CPU index is returned as is."""
    if not is_gpu_index(index):
        return index
    return faiss.index_gpu_to_cpu(index)


def write_index(index: faiss.Index, path: str | Path) -> None:
    """``faiss.write_index`` of the CPU form: a file saved from a GPU loads where there is none."""
    faiss.write_index(to_cpu(index), str(path))


def _check_dim(dim: int) -> int:
    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 1:
        raise InputError(f"dim: must be a positive integer, got {dim!r}")
    return int(dim)


def flat_ip(dim: int, gpu: int = 0, *, float16: bool = False) -> faiss.Index:
    """An empty exact inner-product index on GPU ``gpu`` (``GpuIndexFlatIP``)."""
    return to_gpu(faiss.IndexFlatIP(_check_dim(dim)), gpu, float16=float16)


def ivf_flat(dim: int, nlist: int, gpu: int = 0) -> faiss.Index:
    """An untrained IVF-Flat inner-product index on the GPU (``GpuIndexIVFFlat``); ``train`` it, then ``add``."""
    dim = _check_dim(dim)
    quantizer = faiss.IndexFlatIP(dim)
    cpu = faiss.IndexIVFFlat(quantizer, dim, int(nlist), faiss.METRIC_INNER_PRODUCT)
    return to_gpu(cpu, gpu)


def ivf_pq(dim: int, nlist: int, m: int, nbits: int = 8, gpu: int = 0, *, float16: bool = True) -> faiss.Index:
    """An untrained IVF-PQ inner-product index on the GPU (``GpuIndexIVFPQ``, ``m`` sub-quantizers of ``nbits``)."""
    dim = _check_dim(dim)
    if dim % m:
        raise InputError(f"m: must divide dim {dim}, got {m}")
    quantizer = faiss.IndexFlatIP(dim)
    cpu = faiss.IndexIVFPQ(quantizer, dim, int(nlist), int(m), int(nbits), faiss.METRIC_INNER_PRODUCT)
    return to_gpu(cpu, gpu, float16=float16)


def cagra(vectors: np.ndarray, gpu: int = 0, *, graph_degree: int = 32, intermediate_graph_degree: int = 64) -> Any:
    """A CAGRA graph over ``vectors`` on the GPU (inner product); labels are row positions.

    Needs a cuVS build of faiss (:func:`has_cagra`); raises a one-line :class:`BackendError` otherwise.
    """
    require_gpu(gpu)
    if not has_cagra():
        raise BackendError(
            f"faiss {faiss.__version__} was built without cuVS, so it has no CAGRA index; "
            "use flat_ip / ivf_flat, or a faiss-gpu build with cuVS"
        )
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    config = faiss.GpuIndexCagraConfig()
    config.graph_degree = int(graph_degree)
    config.intermediate_graph_degree = int(intermediate_graph_degree)
    config.device = int(gpu)
    index = faiss.GpuIndexCagra(resources(gpu), x.shape[1], faiss.METRIC_INNER_PRODUCT, config)
    index.train(x)  # CAGRA builds its graph from the vectors it is trained on
    return index


def search(index: faiss.Index, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``index.search`` with float32 C-contiguous queries; ``(scores, labels)``, ``-1`` labels mean none."""
    q = np.ascontiguousarray(queries, dtype=np.float32)
    scores, labels = index.search(q, int(k))
    return np.where(labels >= 0, scores, -np.inf).astype(np.float32), labels


__all__ = [
    "MAX_K",
    "cagra",
    "flat_ip",
    "gpu_available",
    "gpu_count",
    "has_cagra",
    "is_gpu_index",
    "ivf_flat",
    "ivf_pq",
    "require_gpu",
    "resources",
    "search",
    "to_cpu",
    "to_gpu",
    "write_index",
]
