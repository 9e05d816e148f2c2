"""FAISS backend: a coarse FAISS index in RAM, full vectors memory-mapped from disk, rerank in C++.

Storage model
-------------
Every stored vector has an internal *row*: its position in the full-vector store, assigned in
insertion order and never reused. The coarse FAISS index labels each vector with its row, so a
coarse hit indexes the full store directly; ``ids[row]`` is the external int64 id.

* **Coarse index** (``coarse.faiss``, always in RAM): ``flat`` (exact, ``IndexIDMap`` over
  ``IndexFlatIP``), ``hnsw`` (``IndexHNSWFlat``), ``ivf`` (``IndexIVFFlat``, trained on a sample) or
  ``pq`` (an exhaustive scan of 4-bit product-quantized codes, ``IndexIDMap`` over
  ``IndexPQFastScan``, trained on a sample: every vector is still scored, as with ``flat``, but from
  ``coarse_dim / 2`` bytes with SIMD lookup tables instead of ``4 * coarse_dim`` bytes with BLAS;
  approximate, so it needs more candidates, which the calibration finds).
* **Full vectors** (``full.npy``): float32 rows, memory-mapped read-only after :meth:`FaissBackend.open`,
  so only the coarse index must fit in RAM. Rows added since (and every row of an index being built)
  go to an append-only spill file in a temporary directory, also memory-mapped: a build never holds
  the whole corpus in RAM.
* **Removal**: tombstones. A removed row keeps its slot in the full store (``ids.npy`` holds -1 for
  it) and is dropped from flat and IVF coarse indexes (``remove_ids``); HNSW cannot delete, so its
  removed rows stay in the graph (keeping it connected) and are excluded during the search by a
  bitmap ``IDSelector``. Removed rows are never returned.

Search: stage one asks the coarse index for the top ``candidates`` rows; stage two computes the
inner products of each query with its candidates' full vectors and keeps the best ``k``, in one
C++ call (``faiss.knn_inner_products_by_idx``: gather + dot + heap, GIL released, OpenMP over
queries; measured 0.19 s for 1,000 queries x 2,000 candidates x 384 dims on 2 cores, against
about 2 s for a NumPy gather from the memory map plus a batched matmul).

GPU: with ``device="auto"`` (default), when ``faiss.get_num_gpus() > 0`` and the installed FAISS has
GPU support, flat and IVF coarse indexes are mirrored on GPU 0 for stage one (HNSW and PQ fast-scan have no FAISS GPU
implementation and stay on the CPU). Any failure to use the GPU falls back to the CPU silently;
:meth:`FaissBackend.info` says which device ran. The rerank stays on the CPU: it is bounded by
gathering rows from the memory-mapped file, which a GPU would not speed up (and backends never
import torch).

Concurrency: searches may run concurrently (FAISS CPU searches are read-only and release the GIL;
GPU searches are serialised by a lock). Mutations (``add``, ``remove``) must not run concurrently
with anything else; :class:`~matryoshka_index.index.MatryoshkaIndex` guarantees that with a
readers-writer lock.
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
import time
import weakref
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import faiss
import numpy as np

from ..errors import BackendError, FormatError, InputError, StorageError
from ..storage import advise_random, owned_temp_dir, preallocate, remove_temp_dir
from .base import EMPTY_ID, empty_results

INDEX_TYPES = ("flat", "hnsw", "ivf", "pq")
METRICS = ("cosine", "ip")
DEVICES = ("auto", "cpu", "gpu")
COARSE_FILE = "coarse.faiss"
FULL_FILE = "full.npy"
IDS_FILE = "ids.npy"
SECTION_VERSION = 1

_CHUNK_ROWS = 65536
_NO_ROW = np.iinfo(np.int64).max  # sorts last; knn_inner_products_by_idx stops at the first id >= ny
_BOOKKEEPING_BYTES = 8 + 1 + 16  # ids[row], alive[row], sorted id -> row lookup (two int64 arrays)
_BLAS_THRESHOLD = 20 * 64


def _tune_faiss_flat_search() -> None:
    """Let FAISS's exhaustive search use BLAS from about 20 queries of 64 dimensions on.

    FAISS takes its sequential (non-BLAS) kernel while ``n_queries * dim < 128000``: for a 64-dim
    coarse index that is every batch under 2,000 queries, and a batch of 1,000 then runs about 6x
    slower than with BLAS (measured on 49k x 64, 2 cores). The global is only ever lowered, and
    only from FAISS's own default, so a value the user set is kept.
    """
    if faiss.cvar.distance_compute_blas_threshold == 128000:
        faiss.cvar.distance_compute_blas_threshold = _BLAS_THRESHOLD


def _default_pq_m(coarse_dim: int) -> int:
    """One 4-bit sub-quantizer per dimension (``coarse_dim / 2`` bytes a vector, 8x less than float32).

    Two dimensions per sub-quantizer halve the bytes again, but on a 32-dim PCA prefix they needed
    about 5x the candidates for the same recall (761 against 160; flat needed 17), which the rerank
    pays for.
    """
    return coarse_dim


def default_nlist(n: int) -> int:
    """IVF list count for ``n`` vectors: about 4 sqrt(n), and at least 39 training points per list."""
    return int(max(1, min(round(4 * math.sqrt(max(n, 1))), n // 39)))


def _nprobe_ladder(nlist: int) -> list[int]:
    ladder = [1]
    while ladder[-1] * 2 < nlist:
        ladder.append(ladder[-1] * 2)
    if ladder[-1] != nlist:
        ladder.append(nlist)
    return ladder


class _SpillFile:
    """An append-only float32 matrix in a raw temporary file, memory-mapped; capacity doubles as it grows.

    The directory is owned (:func:`~matryoshka_index.storage.owned_temp_dir`: a later run sweeps it if
    this process is killed) and lives in ``directory``, else ``$MINDEX_TMPDIR``, else the system temp
    folder. Each growth reserves its blocks with ``posix_fallocate`` before the map is written, so a
    full disk raises a one-line StorageError here instead of SIGBUS at a write through the map.
    The map is advised random-access (``MADV_RANDOM``).
    """

    def __init__(self, dim: int, directory: str | None) -> None:
        self.dim = dim
        self.dir = str(owned_temp_dir("mindex-spill-", directory))
        self.path = os.path.join(self.dir, "full.f32")
        self.n = 0
        self._cap = 0
        self._mm: np.ndarray | None = None
        open(self.path, "wb").close()
        # The directory goes away with this object (or at interpreter exit), never left in /tmp.
        self._finalizer = weakref.finalize(self, remove_temp_dir, self.dir)

    def append(self, x: np.ndarray) -> None:
        need = self.n + len(x)
        if need > self._cap:
            cap = max(need, 2 * self._cap, 1024)
            fd = os.open(self.path, os.O_RDWR)
            try:
                try:
                    preallocate(fd, cap * self.dim * 4, self.path)
                except StorageError:  # the doubling does not fit: the rows themselves may still
                    cap = need
                    preallocate(fd, cap * self.dim * 4, self.path)
                os.ftruncate(fd, cap * self.dim * 4)  # no-op where fallocate worked; sizes it where not
            finally:
                os.close(fd)
            self._mm = np.memmap(self.path, dtype=np.float32, mode="r+", shape=(cap, self.dim))
            # Read back at random rows (the rerank's gathers, the calibration's): no read-ahead, so a
            # spill file larger than the memory left does not thrash (benchmarks/results/memory_limit.md).
            advise_random(self._mm)
            self._cap = cap
        assert self._mm is not None
        self._mm[self.n : need] = x
        self.n = need

    @property
    def array(self) -> np.ndarray:
        if self._mm is None:
            return np.empty((0, self.dim), dtype=np.float32)
        return self._mm[: self.n]

    def close(self) -> None:
        self._mm = None
        self._finalizer()


class _FullStore:
    """Full vectors by row: a read-only base (a loaded index's ``full.npy``) then a spill file for later rows."""

    def __init__(self, dim: int, base: np.ndarray | None, base_path: Path | None, spill_dir: str | None) -> None:
        self.dim = dim
        self.base = base if base is not None else np.empty((0, dim), dtype=np.float32)
        self.base_path = base_path
        self.spill_dir = spill_dir
        self.spill: _SpillFile | None = None

    def __len__(self) -> int:
        return len(self.base) + (self.spill.n if self.spill is not None else 0)

    def append(self, x: np.ndarray) -> None:
        if self.spill is None:
            self.spill = _SpillFile(self.dim, self.spill_dir)
        self.spill.append(x)

    def segments(self) -> list[tuple[int, np.ndarray]]:
        """``(first row, array)`` for each non-empty part, in row order."""
        out = []
        if len(self.base):
            out.append((0, self.base))
        if self.spill is not None and self.spill.n:
            out.append((len(self.base), self.spill.array))
        return out

    def iter_chunks(self, chunk_rows: int = _CHUNK_ROWS) -> Iterator[tuple[int, np.ndarray]]:
        for start, arr in self.segments():
            for s in range(0, len(arr), chunk_rows):
                yield start + s, arr[s : s + chunk_rows]

    @property
    def location(self) -> str:
        parts = []
        if len(self.base):
            if isinstance(self.base, np.memmap) and self.base_path is not None:
                parts.append(f"memory-mapped from {self.base_path}")
            else:
                parts.append("in RAM")
        if self.spill is not None and self.spill.n:
            parts.append(f"memory-mapped spill file {self.spill.path} (rows added since load or build)")
        return "; ".join(parts) or "empty"

    @property
    def ram_bytes(self) -> int:
        return 0 if isinstance(self.base, np.memmap) or not len(self.base) else self.base.nbytes


class FaissBackend:
    """Coarse FAISS index (flat / HNSW / IVF; GPU when present) + rerank over memory-mapped full vectors.

    Create with :meth:`create`, reopen a saved one with :meth:`open`. See the module docstring for the
    storage model. ``metric`` is recorded for the manifest; both metrics search by inner product (the
    index normalises vectors for cosine before they arrive here).
    """

    kind: ClassVar[str] = "faiss"
    supports_timings: ClassVar[bool] = True

    def __init__(
        self,
        *,
        coarse_dim: int,
        full_dim: int,
        metric: str,
        index_type: str,
        coarse: faiss.Index | None,
        full: _FullStore,
        ids: np.ndarray,
        params: dict[str, Any],
        device: str,
    ) -> None:
        self.coarse_dim = coarse_dim
        self.full_dim = full_dim
        self.metric = metric
        self.index_type = index_type
        self._coarse = coarse
        self._full = full
        self._ids = ids  # row -> external id, -1 for removed rows
        self._alive = ids >= 0
        self._n_alive = int(self._alive.sum())
        self._params = dict(params)
        self._requested_device = device
        self._lookup: tuple[np.ndarray, np.ndarray] | None = None
        self._alive_bitmap: np.ndarray | None = None
        self._gpu_index: Any = None
        self._gpu_res: Any = None
        self._gpu_failed = False
        self._gpu_lock = threading.Lock()
        self._pending_train: list[np.ndarray] = []

    # ------------------------------------------------------------------ construction
    @classmethod
    def create(
        cls,
        *,
        coarse_dim: int,
        full_dim: int,
        metric: str = "cosine",
        index: str = "flat",
        hnsw_m: int = 32,
        ef_construction: int = 80,
        ef_search: int = 32,
        nlist: int | None = None,
        nprobe: int | None = None,
        pq_m: int | None = None,
        device: str = "auto",
        spill_dir: str | None = None,
    ) -> FaissBackend:
        """An empty backend.

        ``index``: ``"flat"`` (exact coarse search), ``"hnsw"`` (graph; ``hnsw_m`` links per node,
        ``ef_construction``; searches use ``efSearch = max(ef_search, candidates)``) or ``"ivf"``
        (``nlist`` lists, default about 4 sqrt(n) chosen at :meth:`train`; ``nprobe`` lists probed,
        default calibrated by the index) or ``"pq"`` (exhaustive 4-bit PQ fast-scan with ``pq_m``
        sub-quantizers, default ``coarse_dim``; trained at :meth:`train`). ``device``: ``"auto"`` (GPU when FAISS has one, else CPU),
        ``"cpu"`` or ``"gpu"`` (still falls back to the CPU when no GPU works). ``spill_dir``: where
        the temporary full-vector file of a build goes (default: the system temp directory).
        """
        if index not in INDEX_TYPES:
            raise InputError(f"index: unknown coarse index type {index!r}; choose one of {', '.join(INDEX_TYPES)}")
        if metric not in METRICS:
            raise InputError(f"metric: unknown metric {metric!r}; choose one of {', '.join(METRICS)}")
        if device not in DEVICES:
            raise InputError(f"device: unknown device {device!r}; choose one of {', '.join(DEVICES)}")
        for name, value in (("coarse_dim", coarse_dim), ("full_dim", full_dim), ("hnsw_m", hnsw_m)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise InputError(f"{name}: must be a positive integer, got {value!r}")
        for name, value in (("ef_construction", ef_construction), ("ef_search", ef_search)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise InputError(f"{name}: must be a positive integer, got {value!r}")
        for name, value in (("nlist", nlist), ("nprobe", nprobe), ("pq_m", pq_m)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1):
                raise InputError(f"{name}: must be a positive integer or None, got {value!r}")
        params: dict[str, Any] = {}
        coarse: faiss.Index | None
        _tune_faiss_flat_search()
        if index == "flat":
            coarse = faiss.IndexIDMap(faiss.IndexFlatIP(int(coarse_dim)))
        elif index == "hnsw":
            coarse = faiss.IndexHNSWFlat(int(coarse_dim), int(hnsw_m), faiss.METRIC_INNER_PRODUCT)
            coarse.hnsw.efConstruction = int(ef_construction)
            params.update(hnsw_m=int(hnsw_m), ef_construction=int(ef_construction), ef_search=int(ef_search))
        elif index == "pq":
            m = int(pq_m) if pq_m is not None else _default_pq_m(int(coarse_dim))
            if coarse_dim % m:
                raise InputError(f"pq_m: must divide coarse_dim {coarse_dim}, got {m}")
            coarse = None  # trained by train() on the build sample
            params.update(pq_m=m)
        else:
            coarse = None  # built by train() once the list count can be chosen from the corpus size
            params.update(nlist=None if nlist is None else int(nlist), nprobe=None if nprobe is None else int(nprobe))
        return cls(
            coarse_dim=int(coarse_dim),
            full_dim=int(full_dim),
            metric=metric,
            index_type=index,
            coarse=coarse,
            full=_FullStore(int(full_dim), None, None, spill_dir),
            ids=np.empty(0, dtype=np.int64),
            params=params,
            device=device,
        )

    @classmethod
    def open(
        cls, directory: Path, section: dict, *, mmap: bool = True, device: str = "auto", spill_dir: str | None = None
    ) -> FaissBackend:
        """Reopen a backend written by :meth:`save` into ``directory``; ``section`` is what save returned.

        ``mmap=True`` (default) memory-maps the full vectors; ``False`` reads them into RAM.
        """
        directory = Path(directory)
        if device not in DEVICES:
            raise InputError(f"device: unknown device {device!r}; choose one of {', '.join(DEVICES)}")
        try:
            if section.get("kind") != cls.kind or section.get("section_version") != SECTION_VERSION:
                raise FormatError(
                    f"{directory}: backend section is not a FAISS section of version {SECTION_VERSION} "
                    f"(kind={section.get('kind')!r}, section_version={section.get('section_version')!r})"
                )
            index_type = section["index"]
            coarse_dim, full_dim = int(section["coarse_dim"]), int(section["full_dim"])
            metric = section["metric"]
            rows = int(section["rows"])
            params = dict(section.get("params", {}))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise FormatError(f"{directory}: backend section of the manifest is incomplete ({exc})") from None
        if index_type not in INDEX_TYPES or metric not in METRICS:
            raise FormatError(f"{directory}: unknown coarse index type {index_type!r} or metric {metric!r}")
        for name in (COARSE_FILE, FULL_FILE, IDS_FILE):
            if not (directory / name).is_file():
                raise FormatError(f"{directory / name}: missing; the index directory is incomplete")
        try:
            ids = np.load(directory / IDS_FILE, allow_pickle=False)
            full = np.load(directory / FULL_FILE, mmap_mode="r" if mmap else None, allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise FormatError(f"{directory}: cannot read {IDS_FILE} or {FULL_FILE} ({exc})") from None
        if ids.dtype != np.int64 or ids.shape != (rows,):
            raise FormatError(f"{directory / IDS_FILE}: expected {rows} int64 ids, found {ids.dtype} {ids.shape}")
        if full.dtype != np.float32 or full.shape != (rows, full_dim):
            raise FormatError(
                f"{directory / FULL_FILE}: expected float32 ({rows}, {full_dim}), found {full.dtype} {full.shape}"
            )
        try:
            coarse = faiss.read_index(str(directory / COARSE_FILE))
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[-1] if str(exc).strip() else "unreadable"
            raise FormatError(f"{directory / COARSE_FILE}: not a readable FAISS index ({first})") from None
        if coarse.d != coarse_dim:
            raise FormatError(f"{directory / COARSE_FILE}: has dimension {coarse.d}, manifest says {coarse_dim}")
        expected_ntotal = rows if index_type == "hnsw" else int((ids >= 0).sum())
        if coarse.ntotal != expected_ntotal:
            raise FormatError(
                f"{directory / COARSE_FILE}: holds {coarse.ntotal} vectors, manifest and ids say {expected_ntotal}"
            )
        _tune_faiss_flat_search()
        if index_type == "hnsw":
            coarse.hnsw.efConstruction = int(params.get("ef_construction", coarse.hnsw.efConstruction))
        return cls(
            coarse_dim=coarse_dim,
            full_dim=full_dim,
            metric=metric,
            index_type=index_type,
            coarse=coarse,
            full=_FullStore(full_dim, full, (directory / FULL_FILE).absolute() if mmap else None, spill_dir),
            ids=ids,
            params=params,
            device=device,
        )

    # ------------------------------------------------------------------ ids
    def __len__(self) -> int:
        return self._n_alive

    @property
    def rows(self) -> int:
        """Rows in the full store, removed ones included."""
        return len(self._ids)

    def ids(self) -> np.ndarray:
        return self._ids[self._alive]

    def _sorted_lookup(self) -> tuple[np.ndarray, np.ndarray]:
        lookup = self._lookup
        if lookup is None:
            rows = np.flatnonzero(self._alive)
            order = np.argsort(self._ids[rows], kind="stable")
            lookup = (self._ids[rows][order], rows[order])
            self._lookup = lookup
        return lookup

    def rows_of(self, ids: np.ndarray) -> np.ndarray:
        """Row of each id, -1 where absent."""
        ids = np.asarray(ids, dtype=np.int64)
        sorted_ids, rows = self._sorted_lookup()
        if not len(sorted_ids):
            return np.full(len(ids), -1, dtype=np.int64)
        pos = np.minimum(np.searchsorted(sorted_ids, ids), len(sorted_ids) - 1)
        return np.where(sorted_ids[pos] == ids, rows[pos], -1)

    def contains(self, ids: np.ndarray) -> np.ndarray:
        return self.rows_of(ids) >= 0

    # ------------------------------------------------------------------ mutation
    def train(self, coarse_sample: np.ndarray, n_total: int) -> None:
        """Prepare for ``n_total`` vectors: IVF chooses its list count and trains its quantizer on the sample.

        PQ trains its codebooks on the sample. A no-op for flat and HNSW. Called by the index before
        the first :meth:`add` of a build.
        """
        if self.index_type not in ("ivf", "pq") or self._coarse is not None:
            return
        sample = np.ascontiguousarray(coarse_sample, dtype=np.float32)
        if self.index_type == "pq":
            pq = faiss.IndexPQFastScan(self.coarse_dim, int(self._params["pq_m"]), 4, faiss.METRIC_INNER_PRODUCT)
            # 16 centroids per sub-quantizer: 64k rows train them as well as the whole corpus would
            rows = np.random.default_rng(1234).permutation(len(sample))[:65536]
            pq.train(sample[np.sort(rows)])
            wrapped = faiss.IndexIDMap(pq)
            wrapped.own_fields = True
            pq.this.disown()  # the id map owns (and frees) the PQ index
            self._coarse = wrapped
            return
        nlist = self._params.get("nlist") or default_nlist(n_total)
        # k-means wants at least 39 training points per list (FAISS warns below that): a 100k-row
        # sample caps nlist at 2,564 (4 sqrt(n) passes that at n = 410k; pass a larger sample_size
        # to the index build for more lists on larger corpora).
        nlist = int(max(1, min(nlist, len(sample) // 39 or 1)))
        quantizer = faiss.IndexFlatIP(self.coarse_dim)
        ivf = faiss.IndexIVFFlat(quantizer, self.coarse_dim, nlist, faiss.METRIC_INNER_PRODUCT)
        ivf.own_fields = True
        quantizer.this.disown()  # the IVF index owns (and frees) its quantizer
        ivf.cp.seed = 1234
        ivf.cp.max_points_per_centroid = 64  # train on at most 64 points per list: time, not quality, is the limit
        ivf.train(sample)
        self._params["nlist"] = nlist
        if self._params.get("nprobe") is None:
            self._params["nprobe"] = min(nlist, max(1, nlist // 32))
        self._coarse = ivf

    def add(
        self,
        ids: np.ndarray,
        coarse: np.ndarray,
        full: np.ndarray,
        payloads: Sequence[dict[str, Any] | None] | None = None,
    ) -> None:
        if payloads is not None and any(p is not None for p in payloads):
            raise InputError("payloads: the faiss backend stores no payloads; use backend='qdrant' for payloads")
        ids = np.asarray(ids, dtype=np.int64)
        coarse = np.ascontiguousarray(coarse, dtype=np.float32)
        full = np.ascontiguousarray(full, dtype=np.float32)
        if coarse.shape != (len(ids), self.coarse_dim) or full.shape != (len(ids), self.full_dim):
            raise InputError(
                f"add: expected coarse ({len(ids)}, {self.coarse_dim}) and full ({len(ids)}, {self.full_dim}), "
                f"got {coarse.shape} and {full.shape}"
            )
        if not len(ids):
            return
        if self._coarse is None:  # IVF added to without an explicit train(): train on this first batch
            self.train(coarse, max(len(ids), self._n_alive))
        start = len(self._full)
        rows = np.arange(start, start + len(ids), dtype=np.int64)
        if self.index_type == "hnsw":
            if self._coarse.ntotal != start:  # HNSW labels are insertion positions, which must equal rows
                raise BackendError(f"HNSW index holds {self._coarse.ntotal} vectors but the store {start} rows")
            self._coarse.add(coarse)
        else:
            self._coarse.add_with_ids(coarse, rows)
        self._full.append(full)
        self._ids = np.concatenate([self._ids, ids])
        self._alive = np.concatenate([self._alive, np.ones(len(ids), dtype=bool)])
        self._n_alive += len(ids)
        self._lookup = None
        self._alive_bitmap = None
        self._gpu_index = None  # the GPU mirror is rebuilt at the next search

    def remove(self, ids: np.ndarray) -> int:
        rows = self.rows_of(np.asarray(ids, dtype=np.int64))
        rows = np.unique(rows[rows >= 0])
        if not len(rows):
            return 0
        if self.index_type != "hnsw":
            self._coarse.remove_ids(rows)
        alive = self._alive.copy()
        alive[rows] = False
        id_arr = self._ids.copy()
        id_arr[rows] = EMPTY_ID
        self._alive, self._ids = alive, id_arr
        self._n_alive -= len(rows)
        self._lookup = None
        self._alive_bitmap = None
        self._gpu_index = None
        return len(rows)

    # ------------------------------------------------------------------ search knobs (used by calibration)
    def search_knob(self) -> tuple[str, list[int]] | None:
        """The search-time parameter the index calibrates together with candidates: IVF's ``nprobe``.

        Returns ``(name, ladder)`` with the ladder ascending, its last value exhaustive; ``None`` for
        flat (exact) and HNSW (whose ``efSearch`` follows ``candidates``).
        """
        if self.index_type != "ivf" or self._coarse is None:
            return None
        return "nprobe", _nprobe_ladder(int(self._params["nlist"]))

    def set_search_knob(self, value: int) -> None:
        if self.index_type == "ivf":
            self._params["nprobe"] = int(value)

    def get_search_knob(self) -> int | None:
        return int(self._params["nprobe"]) if self.index_type == "ivf" and self._params.get("nprobe") else None

    def search_cost(self, candidates: int, knob: int | None = None) -> float:
        """Rough relative cost of one query, used to pick the cheapest (nprobe, candidates) pair.

        Stage one scans ``nprobe`` lists of ``n / nlist`` coarse vectors plus the ``nlist``
        centroids, costed per coordinate; stage two costs ``0.75 * full_dim`` per candidate. The
        weight is measured, not guessed: on 2 cores an IVF scan took about 27 ns per 64-dim coarse
        vector and the rerank about 115 ns per 384-dim candidate (1,000 queries, 49k-1M vectors).
        """
        coarse = float(self._n_alive * self.coarse_dim)
        if self.index_type == "ivf" and self._params.get("nlist"):
            nlist = int(self._params["nlist"])
            probe = knob if knob is not None else int(self._params.get("nprobe") or 1)
            coarse = (probe * self._n_alive / nlist + nlist) * self.coarse_dim
        return coarse + 0.75 * candidates * self.full_dim

    # ------------------------------------------------------------------ search
    def _search_params(self, k: int) -> Any:
        if self.index_type == "hnsw":
            ef = max(int(self._params.get("ef_search", 32)), k)
            if self._n_alive < len(self._ids):  # tombstones: keep them out of the results
                if self._alive_bitmap is None:
                    self._alive_bitmap = np.packbits(self._alive, bitorder="little")
                bitmap = self._alive_bitmap
                sel = faiss.IDSelectorBitmap(len(self._alive), faiss.swig_ptr(bitmap))
                params = faiss.SearchParametersHNSW(efSearch=ef, sel=sel)
                params._keep = (sel, bitmap)  # the selector points into these; keep them alive
                return params
            return faiss.SearchParametersHNSW(efSearch=ef)
        if self.index_type == "ivf":
            return faiss.SearchParametersIVF(nprobe=int(self._params.get("nprobe") or 1))
        return None

    def _gpu(self) -> Any:
        """The GPU mirror of the coarse index, or None (CPU). Never raises: any failure means CPU."""
        if self._requested_device == "cpu" or self.index_type in ("hnsw", "pq") or self._gpu_failed:
            return None
        if self._gpu_index is not None:
            return self._gpu_index
        try:
            if faiss.get_num_gpus() < 1 or not hasattr(faiss, "StandardGpuResources"):
                self._gpu_failed = True
                return None
            with self._gpu_lock:
                if self._gpu_res is None:
                    self._gpu_res = faiss.StandardGpuResources()
                self._gpu_index = faiss.index_cpu_to_gpu(self._gpu_res, 0, self._coarse)
        except Exception:  # a broken CUDA setup must not break search: fall back to the CPU
            self._gpu_failed = True
            self._gpu_index = None
        return self._gpu_index

    @property
    def device(self) -> str:
        """Where stage one runs (or will run at the next search): ``"gpu:0"`` or ``"cpu"``."""
        return "gpu:0" if self._gpu() is not None else "cpu"

    def _coarse_rows(self, coarse_queries: np.ndarray, n: int) -> np.ndarray:
        """Top-``n`` rows from the coarse index (``-1`` where fewer exist)."""
        n = int(min(n, self._n_alive))
        gpu = self._gpu() if len(coarse_queries) else None
        if gpu is not None:
            with self._gpu_lock:
                if self.index_type == "ivf":
                    gpu.nprobe = int(self._params.get("nprobe") or 1)
                _, rows = gpu.search(coarse_queries, n)
            return rows
        if self.index_type == "ivf" and int(self._params.get("nprobe") or 1) >= int(self._params.get("nlist") or 1):
            return self._ivf_exhaustive_rows(coarse_queries, n)
        params = self._search_params(n)
        if params is None:
            _, rows = self._coarse.search(coarse_queries, n)
        else:
            _, rows = self._coarse.search(coarse_queries, n, params=params)
        return rows

    def _ivf_exhaustive_rows(self, coarse_queries: np.ndarray, n: int) -> np.ndarray:
        """Probing every IVF list is an exact coarse search: run it as one BLAS flat search over the
        lists' vectors instead (the same rows up to float rounding, ~10x faster at 1M vectors; the
        calibration asks for it to find how many candidates an exact coarse stage needs)."""
        invlists = faiss.extract_index_ivf(self._coarse).invlists
        vecs, labels = [], []
        for lst in range(invlists.nlist):
            size = invlists.list_size(lst)
            if size:
                codes = faiss.rev_swig_ptr(invlists.get_codes(lst), size * invlists.code_size)
                vecs.append(np.frombuffer(codes, dtype=np.float32).reshape(size, self.coarse_dim).copy())
                labels.append(faiss.rev_swig_ptr(invlists.get_ids(lst), size).copy())
        if not vecs:
            return np.full((len(coarse_queries), n), -1, dtype=np.int64)
        _, pos = faiss.knn(coarse_queries, np.concatenate(vecs), n, metric=faiss.METRIC_INNER_PRODUCT)
        all_labels = np.concatenate(labels)
        return np.where(pos >= 0, all_labels[np.maximum(pos, 0)], -1)

    def coarse_search(self, coarse_queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        coarse_queries = np.ascontiguousarray(coarse_queries, dtype=np.float32)
        if not self._n_alive or not len(coarse_queries):
            return empty_results(len(coarse_queries), k)
        scores, rows = empty_results(len(coarse_queries), k)
        n = min(k, self._n_alive)
        gpu = self._gpu()
        if gpu is not None:
            with self._gpu_lock:
                if self.index_type == "ivf":
                    gpu.nprobe = int(self._params.get("nprobe") or 1)
                d, r = gpu.search(coarse_queries, n)
        else:
            params = self._search_params(n)
            d, r = (
                self._coarse.search(coarse_queries, n)
                if params is None
                else self._coarse.search(coarse_queries, n, params=params)
            )
        scores[:, :n], rows[:, :n] = d, r
        return self._to_ids(scores, rows)

    def _to_ids(self, scores: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        valid = rows >= 0
        ids = np.where(valid, self._ids[np.where(valid, rows, 0)], EMPTY_ID)
        scores = np.where(valid, scores, -np.inf).astype(np.float32, copy=False)
        return scores, ids

    def rerank_rows(self, full_queries: np.ndarray, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Best ``k`` of the candidate ``rows`` (``-1`` = none) by full inner product: ``(scores, rows)``."""
        nq = len(full_queries)
        rows = np.where(rows >= 0, rows, _NO_ROW)
        segments = self._full.segments()
        parts = []
        for start, arr in segments:
            if len(segments) == 1:
                local = rows
            else:
                inside = (rows >= start) & (rows < start + len(arr))
                local = np.where(inside, rows - start, _NO_ROW)
            valid = local != _NO_ROW
            if (valid[:, 1:] & ~valid[:, :-1]).any():
                # the C++ loop stops at the first invalid row: move every row's valid entries first
                local = np.sort(local, axis=1)
            local = np.ascontiguousarray(local)
            kk = min(k, local.shape[1])
            vals = np.empty((nq, kk), dtype=np.float32)
            out = np.empty((nq, kk), dtype=np.int64)
            faiss.knn_inner_products_by_idx(
                faiss.swig_ptr(full_queries),
                faiss.swig_ptr(arr),
                faiss.swig_ptr(local),
                self.full_dim,
                nq,
                len(arr),
                local.shape[1],
                kk,
                faiss.swig_ptr(vals),
                faiss.swig_ptr(out),
                local.shape[1],
            )
            out = np.where(out >= 0, out + start, -1)
            parts.append((vals, out))
        vals = np.concatenate([p[0] for p in parts], axis=1)
        out = np.concatenate([p[1] for p in parts], axis=1)
        vals = np.where(out >= 0, vals, -np.inf).astype(np.float32)
        if len(parts) > 1 or vals.shape[1] != k:
            order = np.argsort(-vals, axis=1, kind="stable")[:, :k]
            vals = np.take_along_axis(vals, order, axis=1)
            out = np.take_along_axis(out, order, axis=1)
            if vals.shape[1] < k:
                pad = k - vals.shape[1]
                vals = np.pad(vals, ((0, 0), (0, pad)), constant_values=-np.inf)
                out = np.pad(out, ((0, 0), (0, pad)), constant_values=-1)
        return vals, out

    def search(
        self,
        coarse_queries: np.ndarray,
        full_queries: np.ndarray,
        k: int,
        candidates: int,
        query_filter: Any | None = None,
        *,
        timings: dict[str, float] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Two-stage search; ``timings`` (optional) accumulates seconds under ``"coarse"`` and ``"rerank"``."""
        if query_filter is not None:
            raise InputError("query_filter: the faiss backend has no payload filters; use backend='qdrant'")
        nq = len(coarse_queries)
        if not self._n_alive or not nq:
            return empty_results(nq, k)
        coarse_queries = np.ascontiguousarray(coarse_queries, dtype=np.float32)
        full_queries = np.ascontiguousarray(full_queries, dtype=np.float32)
        t0 = time.perf_counter()
        rows = self._coarse_rows(coarse_queries, max(candidates, k))
        t1 = time.perf_counter()
        scores, rows = self.rerank_rows(full_queries, rows, k)
        t2 = time.perf_counter()
        if timings is not None:
            timings["coarse"] = timings.get("coarse", 0.0) + (t1 - t0)
            timings["rerank"] = timings.get("rerank", 0.0) + (t2 - t1)
        return self._to_ids(scores, rows)

    def exact_search(self, full_queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Brute force over every live full vector (streamed in chunks from the memory map)."""
        full_queries = np.ascontiguousarray(full_queries, dtype=np.float32)
        nq = len(full_queries)
        best_s, best_r = empty_results(nq, k)
        if not self._n_alive or not nq:
            return best_s, best_r
        for start, chunk in self._full.iter_chunks():
            alive = self._alive[start : start + len(chunk)]
            n_dead = len(chunk) - int(alive.sum())
            if n_dead == len(chunk):
                continue
            kk = min(len(chunk), k + n_dead)  # ask for more so that k live rows survive the filter
            s, r = faiss.knn(full_queries, np.ascontiguousarray(chunk), kk, metric=faiss.METRIC_INNER_PRODUCT)
            if n_dead:
                dead = ~alive[np.maximum(r, 0)] | (r < 0)
                s = np.where(dead, -np.inf, s)
                r = np.where(dead, -1, r)
            r = np.where(r >= 0, r + start, -1)
            s = np.where(r >= 0, s, -np.inf).astype(np.float32)
            all_s = np.concatenate([best_s, s], axis=1)
            all_r = np.concatenate([best_r, r], axis=1)
            order = np.argsort(-all_s, axis=1, kind="stable")[:, :k]
            best_s = np.take_along_axis(all_s, order, axis=1)
            best_r = np.take_along_axis(all_r, order, axis=1)
        return self._to_ids(best_s, best_r)

    # ------------------------------------------------------------------ persistence
    def save(self, directory: Path) -> dict[str, Any]:
        """Write ``coarse.faiss``, ``full.npy`` and ``ids.npy`` into ``directory``; returns the manifest section."""
        directory = Path(directory)
        if self._coarse is None:  # an IVF index that never received vectors: train on nothing is impossible
            raise InputError("save: this IVF index holds no vectors yet; add vectors before saving")
        faiss.write_index(self._coarse, str(directory / COARSE_FILE))
        self._write_full(directory / FULL_FILE)
        np.save(directory / IDS_FILE, self._ids, allow_pickle=False)
        return {
            "kind": self.kind,
            "section_version": SECTION_VERSION,
            "index": self.index_type,
            "coarse_dim": self.coarse_dim,
            "full_dim": self.full_dim,
            "metric": self.metric,
            "rows": len(self._ids),
            "count": int(self._n_alive),
            "params": dict(self._params),
            "files": [COARSE_FILE, FULL_FILE, IDS_FILE],
        }

    def _write_full(self, path: Path) -> None:
        segments = self._full.segments()
        base = self._full.base
        if len(segments) == 1 and segments[0][1] is base and self._full.base_path is not None:
            # Unchanged since load: the saved file is immutable (opened read-only), so a hard link
            # to it is a complete, instant copy. Falls back to copying across file systems.
            with contextlib.suppress(OSError):
                os.link(self._full.base_path, path)
                return
        out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(len(self._full), self.full_dim))
        for start, chunk in self._full.iter_chunks():
            out[start : start + len(chunk)] = chunk
        out.flush()
        del out

    # ------------------------------------------------------------------ facts
    def _coarse_bytes(self) -> int:
        """Bytes of the coarse index in RAM (vectors, graph links or inverted lists, id maps)."""
        idx = self._coarse
        if idx is None:
            return 0
        n = idx.ntotal
        if self.index_type == "flat":
            return n * (self.coarse_dim * 4 + 8)
        if self.index_type == "hnsw":
            h = idx.hnsw
            return n * self.coarse_dim * 4 + h.neighbors.size() * 4 + h.levels.size() * 4 + h.offsets.size() * 8
        if self.index_type == "pq":
            m = int(self._params["pq_m"])
            blocks = -(-n // 32)  # fast-scan packs codes in blocks of 32 vectors
            return blocks * 32 * m // 2 + n * 8 + m * 16 * (self.coarse_dim // m) * 4
        nlist = int(self._params.get("nlist") or 0)
        return n * (self.coarse_dim * 4 + 8) + nlist * self.coarse_dim * 4

    def info(self) -> dict[str, Any]:
        rows = max(1, len(self._ids))
        ram = self._coarse_bytes() + rows * _BOOKKEEPING_BYTES + self._full.ram_bytes
        disk = rows * (self.full_dim * 4 + 8) + self._coarse_bytes()
        gpu_count = 0
        with contextlib.suppress(Exception):
            gpu_count = int(faiss.get_num_gpus())
        out: dict[str, Any] = {
            "backend": self.kind,
            "faiss_version": faiss.__version__,
            "coarse_index": self.index_type,
            "device": self.device,
            "gpus_visible_to_faiss": gpu_count,
            "count": int(self._n_alive),
            "removed_rows": int(len(self._ids) - self._n_alive),
            "ram_bytes_per_vector": round(ram / rows, 1),
            "disk_bytes_per_vector": round(disk / rows, 1),
            "full_vectors": self._full.location,
            "params": dict(self._params),
        }
        if self.device == "cpu" and self.index_type == "hnsw" and gpu_count:
            out["device_note"] = "HNSW has no FAISS GPU implementation; its coarse stage runs on the CPU"
        return out
