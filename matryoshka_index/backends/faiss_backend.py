"""FAISS backend: a coarse FAISS index in RAM, full vectors memory-mapped from disk, rerank in C++.

Storage model
-------------
Every stored vector has an internal *row*: its position in the full-vector store, assigned in
insertion order and never reused. The coarse FAISS index labels each vector with its row, so a
coarse hit indexes the full store directly; ``ids[row]`` is the external int64 id.

* **Coarse index** (``coarse.faiss``, always in RAM): a structure (``flat``: every prefix scored;
  ``hnsw``: a graph; ``ivf``: inverted lists) times a code (``float``, ``sq8``, ``sq4``, ``pq4``,
  ``rabitq``, ``binary``), each pair FAISS's own index type (table in :mod:`.faiss_codes`);
  ``index="pq"`` is ``flat`` + ``pq4``. Codes are approximate, so they need more candidates, which
  the calibration finds; :meth:`FaissBackend.memory` measures what the coarse index holds.
* **Full vectors** (``full.npy``): float32 rows, memory-mapped read-only after :meth:`FaissBackend.open`,
  so only the coarse index must fit in RAM. Rows added since (and every row of an index being built)
  go to an append-only spill file in a temporary directory, also memory-mapped: a build never holds
  the whole corpus in RAM.
* **Prefix only** (``full_dim=0``, what ``MatryoshkaIndex.build(..., rerank=None)`` creates): no full
  vectors at all, no ``full.npy``; a search is the coarse stage alone and returns the coarse scores.
* **Removal**: tombstones. A removed row keeps its slot in the full store (``ids.npy`` holds -1 for
  it) and is dropped from flat-float and IVF coarse indexes (``remove_ids``); the others cannot
  delete, so removed rows stay there (keeping a graph connected) and are excluded during the search
  (HNSW: a bitmap ``IDSelector``; others: over-fetch and drop). Removed rows are never returned.

Search: stage one asks the coarse index for the top ``candidates`` rows; stage two computes the
inner products of each query with its candidates' full vectors and keeps the best ``k``, in one
C++ call (``faiss.knn_inner_products_by_idx``: gather + dot + heap, GIL released, OpenMP over
queries; measured 0.19 s for 1,000 queries x 2,000 candidates x 384 dims on 2 cores, against
about 2 s for a NumPy gather from the memory map plus a batched matmul).

GPU: with ``device="auto"`` (default) and a FAISS with GPU support, float flat and IVF coarse
indexes are mirrored on GPU 0 for stage one through :mod:`.gpu_faiss` (``to_gpu``, its shared GPU
resources); HNSW and the codes stay on the CPU, and so does a search asking for more candidates (or
IVF probes) than FAISS's GPU selection allows (:data:`.gpu_faiss.MAX_K`). Any failure falls back to
the CPU silently, :meth:`FaissBackend.info` says which device ran. The rerank stays on the CPU: it is
bounded by gathering rows from the memory map, which a GPU would not speed up.

Concurrency: searches may run concurrently (FAISS CPU searches are read-only and release the GIL;
GPU searches are serialised by a lock). Mutations (``add``, ``remove``) must not run concurrently
with anything else; :class:`~matryoshka_index.index.MatryoshkaIndex` guarantees that with a
readers-writer lock.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from pathlib import Path
from typing import Any, ClassVar

import faiss
import numpy as np

from ..errors import BackendError, FormatError, InputError
from ..storage import advise_random, save_npy, write_npy
from . import faiss_codes as codes
from . import gpu_faiss, ivf_lists
from .base import EMPTY_ID, METRICS, Payloads, add_timings, empty_results, reject_query_filter
from .faiss_codes import CODES, PAIRS, STRUCTURES, default_nlist  # noqa: F401  (re-exported)
from .faiss_codes import default_pq_m as _default_pq_m
from .faiss_codes import nprobe_ladder as _nprobe_ladder
from .faiss_rerank import (
    GATHER_ROWS,
    RERANK_FILES,
    RerankStop,
    candidate_scores,
    check_rerank_dtype,
    fit_score_model,
    gather_best_lowp,
    rerank_with_stop,
)
from .faiss_store import CHUNK_ROWS as _CHUNK_ROWS  # noqa: F401  (kept importable)
from .faiss_store import FullStore as _FullStore
from .faiss_store import SpillFile as _SpillFile  # noqa: F401  (kept importable)
from .faiss_store import prefetch_enabled as _prefetch_enabled

INDEX_TYPES = ("flat", "hnsw", "ivf", "pq")
DEVICES = ("auto", "cpu", "gpu")
COARSE_FILE = "coarse.faiss"
FULL_FILE = "full.npy"
IDS_FILE = "ids.npy"
SECTION_VERSION = 2  # 2: coarse codes (``code``, ``labels``); version-1 sections still open

_NO_ROW = np.iinfo(np.int64).max  # sorts last; knn_inner_products_by_idx stops at the first id >= ny


class FaissBackend:
    """Coarse FAISS index (structure flat / HNSW / IVF x code float / sq8 / sq4 / pq4 / rabitq / binary)
    + rerank at full dimension over memory-mapped full vectors.

    Create with :meth:`create`, reopen a saved one with :meth:`open`. See the module docstring for the
    storage model and :mod:`.faiss_codes` for the FAISS index of each pair. ``metric`` is recorded for
    the manifest; both metrics search by inner product (the index normalises vectors for cosine before
    they arrive here).
    """

    kind: ClassVar[str] = "faiss"
    supports_timings: ClassVar[bool] = True
    supports_prefix_only: ClassVar[bool] = True  # full_dim=0: coarse vectors only, no full.npy

    def __init__(
        self,
        *,
        coarse_dim: int,
        full_dim: int,
        metric: str,
        index_type: str,
        coarse: Any,
        full: _FullStore,
        ids: np.ndarray,
        params: dict[str, Any],
        device: str,
        code: str = "float",
        labels: str | None = None,
        coarse_file_bytes: int | None = None,
        balance: str = "none",
        balance_matrix: np.ndarray | None = None,
        rerank_copy: _FullStore | None = None,
    ) -> None:
        self.coarse_dim = coarse_dim
        self.full_dim = full_dim
        self.metric = metric
        self.index_type = index_type  # the name asked for ("pq" stays "pq"); structure + code say what it is
        self.structure = "flat" if index_type == "pq" else index_type
        self.code = code
        # "ids": the coarse index stores each vector's row (IndexIDMap, IVF lists) and deletes;
        # "rows": a vector's label is its insertion position, equal to its row (no id map in RAM).
        if labels is None:
            labels = "ids" if codes.labels_are_rows_given(self.structure, code) else "rows"
        self.labels = labels
        self._coarse = coarse
        self._full = full
        self._ids = ids  # row -> external id, -1 for removed rows (memory-mapped after open)
        n_alive = int((ids >= 0).sum())
        # alive mask only once a row was removed: a served index without removals keeps no byte a row for it
        self._alive: np.ndarray | None = None if n_alive == len(ids) else np.asarray(ids >= 0)
        self._n_alive = n_alive
        self._params = dict(params)
        self._requested_device = device
        self._lookup: tuple[np.ndarray, np.ndarray] | None = None
        self._alive_bitmap: np.ndarray | None = None
        self._gpu_index: Any = None
        self._gpu_failed = False
        self._gpu_lock = threading.Lock()
        self._measured: tuple[int, int] | None = None if coarse_file_bytes is None else (0, coarse_file_bytes)
        self._version = 0  # bumped by every mutation: the measured coarse size is re-measured after one
        self.balance = balance  # "itq": prefixes rotated (and stored ones centred) inside the prefix, see faiss_codes
        self._balance = balance_matrix
        # rerank_dtype float16: the rows again at half precision, what the rerank reads (see faiss_rerank)
        self.rerank_dtype = str(self._params.get("rerank_dtype", "float32"))
        if self.rerank_dtype != "float32" and rerank_copy is None:
            rerank_copy = _FullStore(full_dim, None, None, full.spill_dir, np.dtype(self.rerank_dtype))
        self._rerank_copy = rerank_copy
        stop = self._params.get("rerank_stop")
        self._stop: RerankStop | None = None if stop is None else RerankStop.from_params(stop, "rerank_stop")
        # implicit_ids: where each list's entries are rows (see ivf_lists); set once the IVF index exists
        self._lists: ivf_lists.ImplicitLists | None = None
        if params.get("implicit_ids") and coarse is not None:
            self._lists = ivf_lists.ImplicitLists(coarse)

    @property
    def mirrorable(self) -> bool:  # what a device engine can mirror: float prefixes in IndexIDMap(IndexFlatIP)
        return self.index_type == "flat" and self.code == "float" and self.balance == "none" and self.full_dim > 0

    @property
    def prefix_only(self) -> bool:
        """No full vectors (``full_dim=0``): search is the coarse stage alone."""
        return self.full_dim == 0

    def _alive_mask(self) -> np.ndarray:
        return self._alive if self._alive is not None else np.ones(len(self._ids), dtype=bool)

    # ------------------------------------------------------------------ construction
    @classmethod
    def create(
        cls,
        *,
        coarse_dim: int,
        full_dim: int,
        metric: str = "cosine",
        index: str = "flat",
        code: str = "float",
        hnsw_m: int = 32,
        ef_construction: int = 80,
        ef_search: int = 32,
        nlist: int | None = None,
        nprobe: int | None = None,
        pq_m: int | None = None,
        rabitq_bits: int = 1,
        balance: str = "none",
        device: str = "auto",
        spill_dir: str | None = None,
        rerank_dtype: str = "float32",
        implicit_ids: bool = False,
    ) -> FaissBackend:
        """An empty backend: ``index`` (structure) x ``code``, pairs and options in :mod:`.faiss_codes`.

        ``hnsw``: ``hnsw_m`` links, ``ef_construction``, searches with ``efSearch = max(ef_search,
        candidates)``; ``ivf``: ``nlist`` lists (default about 4 sqrt(n), chosen at :meth:`train`),
        ``nprobe`` (default calibrated by the index); ``"pq"`` = ``index="flat", code="pq4"`` (``pq_m``
        sub-quantizers, default ``coarse_dim``); ``rabitq_bits`` (default 1); ``balance="itq"``: an
        ITQ rotation inside the prefix learned at :meth:`train`. ``device``: ``"auto"`` (GPU when FAISS
        has one; float flat / IVF only), ``"cpu"`` or ``"gpu"`` (falls back to the CPU when no GPU
        works). ``spill_dir``: where a build's temporary full-vector file goes (default: system temp).
        ``implicit_ids=True`` (``ivf`` with float, sq8, sq4 or pq4): no id a vector in memory; a save writes
        the rows in list order and a loaded index finds a hit's row from its place in its list
        (:mod:`.ivf_lists`; pq4 is then FAISS's ordinary 4-bit PQ layout, not fast-scan).
        ``full_dim=0``: keep no full vectors (prefix only; see the module docstring). ``rerank_dtype="float16"``:
        keep a half-precision copy of the full vectors that the rerank reads instead (half the bytes a candidate;
        :mod:`.faiss_rerank`); default ``"float32"``, the exact rerank from ``full.npy``.
        """
        if index not in INDEX_TYPES:
            raise InputError(f"index: unknown coarse index type {index!r}; choose one of {', '.join(INDEX_TYPES)}")
        if index == "pq":
            if code not in ("float", "pq4"):
                raise InputError(f"index='pq' means code='pq4'; for code={code!r} use index='flat'")
            code = "pq4"
        if metric not in METRICS:
            raise InputError(f"metric: unknown metric {metric!r}; choose one of {', '.join(METRICS)}")
        if device not in DEVICES:
            raise InputError(f"device: unknown device {device!r}; choose one of {', '.join(DEVICES)}")
        for name, value in (("coarse_dim", coarse_dim), ("full_dim", full_dim), ("hnsw_m", hnsw_m)):
            lowest = 0 if name == "full_dim" else 1  # full_dim 0: prefix only
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < lowest:
                what = "an integer >= 0" if lowest == 0 else "a positive integer"
                raise InputError(f"{name}: must be {what}, got {value!r}")
        for name, value in (("ef_construction", ef_construction), ("ef_search", ef_search)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise InputError(f"{name}: must be a positive integer, got {value!r}")
        for name, value in (("nlist", nlist), ("nprobe", nprobe), ("pq_m", pq_m)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1):
                raise InputError(f"{name}: must be a positive integer or None, got {value!r}")
        if isinstance(rabitq_bits, bool) or not isinstance(rabitq_bits, (int, np.integer)) or not 1 <= rabitq_bits <= 9:
            raise InputError(f"rabitq_bits: must be an integer from 1 to 9, got {rabitq_bits!r}")
        structure = "flat" if index == "pq" else index
        if balance not in codes.BALANCES:
            raise InputError(f"balance: unknown balance {balance!r}; choose one of {', '.join(codes.BALANCES)}")
        if not isinstance(code, str):
            raise InputError(f"code: expected one of {', '.join(CODES)}, got {code!r}")
        codes.check_pair(structure, code, int(coarse_dim))
        check_rerank_dtype(rerank_dtype)
        if rerank_dtype != "float32" and not full_dim:
            raise InputError(
                f"rerank_dtype={rerank_dtype!r} needs full vectors to rerank with; this index is prefix only"
            )
        if not isinstance(implicit_ids, (bool, np.bool_)):
            raise InputError(f"implicit_ids: must be true or false, got {implicit_ids!r}")
        params: dict[str, Any] = {}
        if rerank_dtype != "float32":  # only then: a default index's section stays byte for byte what it was
            params["rerank_dtype"] = rerank_dtype
        if implicit_ids:
            ivf_lists.check_implicit(structure, code)
            params["implicit_ids"] = True
        if structure == "hnsw":
            params.update(hnsw_m=int(hnsw_m), ef_construction=int(ef_construction), ef_search=int(ef_search))
        if structure == "ivf":
            params.update(nlist=None if nlist is None else int(nlist), nprobe=None if nprobe is None else int(nprobe))
        if code == "pq4":
            m = int(pq_m) if pq_m is not None else _default_pq_m(int(coarse_dim))
            if coarse_dim % m:
                raise InputError(f"pq_m: must divide coarse_dim {coarse_dim}, got {m}")
            params.update(pq_m=m)
        if code == "rabitq":
            params.update(rabitq_bits=int(rabitq_bits))
        coarse = None  # trained (IVF: and sized) by train() on the build sample
        if not codes.needs_training(structure, code):
            coarse = codes.make_index(structure, code, int(coarse_dim), params)
            params["fixed_coarse_bytes"] = codes.serialized_bytes(coarse)
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
            code=code,
            balance=balance,
            labels="rows" if implicit_ids else None,  # ids are FAISS's own numbering: a vector's row
        )

    @classmethod
    def open(
        cls, directory: Path, section: dict, *, mmap: bool = True, device: str = "auto", spill_dir: str | None = None
    ) -> FaissBackend:
        """Reopen a backend written by :meth:`save` into ``directory``; ``section`` is what save returned.

        ``mmap=True`` (default) memory-maps the full vectors and the ids; ``False`` reads them into RAM.
        """
        directory = Path(directory)
        if device not in DEVICES:
            raise InputError(f"device: unknown device {device!r}; choose one of {', '.join(DEVICES)}")
        try:
            if section.get("kind") != cls.kind or section.get("section_version") not in (1, SECTION_VERSION):
                raise FormatError(
                    f"{directory}: backend section is not a FAISS section of version 1 or {SECTION_VERSION} "
                    f"(kind={section.get('kind')!r}, section_version={section.get('section_version')!r})"
                )
            index_type = section["index"]
            coarse_dim, full_dim = int(section["coarse_dim"]), int(section["full_dim"])
            metric = section["metric"]
            rows = int(section["rows"])
            params = dict(section.get("params", {}))
            code = section.get("code", "pq4" if index_type == "pq" else "float")
            labels = section.get("labels", "rows" if index_type == "hnsw" else "ids")
            balance = section.get("balance", "none")
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise FormatError(f"{directory}: backend section of the manifest is incomplete ({exc})") from None
        structure = "flat" if index_type == "pq" else index_type
        if index_type not in INDEX_TYPES or metric not in METRICS or (structure, code) not in PAIRS:
            raise FormatError(
                f"{directory}: unknown coarse index {index_type!r} with code {code!r}, or metric {metric!r}"
            )
        if labels not in ("ids", "rows") or balance not in codes.BALANCES:
            raise FormatError(f"{directory}: unknown coarse labels {labels!r} or balance {balance!r}")
        matrix = codes.read_balance(directory, coarse_dim) if balance != "none" else None
        names = (COARSE_FILE, IDS_FILE) if full_dim == 0 else (COARSE_FILE, FULL_FILE, IDS_FILE)
        for name in names:
            if not (directory / name).is_file():
                raise FormatError(f"{directory / name}: missing; the index directory is incomplete")
        try:
            ids = np.load(directory / IDS_FILE, mmap_mode="r" if mmap else None, allow_pickle=False)
            if full_dim == 0:  # prefix only: no file, rows without vectors
                full = np.empty((rows, 0), dtype=np.float32)
            else:
                full = np.load(directory / FULL_FILE, mmap_mode="r" if mmap else None, allow_pickle=False)
        except EOFError:
            raise FormatError(
                f"{directory}: {IDS_FILE} or {FULL_FILE} is empty or truncated; rebuild the index or restore the file"
            ) from None
        except (ValueError, OSError) as exc:
            raise FormatError(f"{directory}: cannot read {IDS_FILE} or {FULL_FILE} ({exc})") from None
        if mmap and full_dim:
            advise_random(full)  # the rerank gathers candidate rows: no read-ahead of pages nobody asked for
        if ids.dtype != np.int64 or ids.shape != (rows,):
            raise FormatError(f"{directory / IDS_FILE}: expected {rows} int64 ids, found {ids.dtype} {ids.shape}")
        if full.dtype != np.float32 or full.shape != (rows, full_dim):
            raise FormatError(
                f"{directory / FULL_FILE}: expected float32 ({rows}, {full_dim}), found {full.dtype} {full.shape}"
            )
        implicit = bool(params.get("implicit_ids"))
        try:
            coarse = (
                ivf_lists.read(directory / COARSE_FILE, mmap) if implicit else codes.read(directory / COARSE_FILE, code)
            )
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[-1] if str(exc).strip() else "unreadable"
            raise FormatError(f"{directory / COARSE_FILE}: not a readable FAISS index ({first})") from None
        if coarse.d != coarse_dim:
            raise FormatError(f"{directory / COARSE_FILE}: has dimension {coarse.d}, manifest says {coarse_dim}")
        expected_ntotal = rows if labels == "rows" else int((ids >= 0).sum())
        if coarse.ntotal != expected_ntotal:
            raise FormatError(
                f"{directory / COARSE_FILE}: holds {coarse.ntotal} vectors, manifest and ids say {expected_ntotal}"
            )
        if structure == "hnsw":
            coarse.hnsw.efConstruction = int(params.get("ef_construction", coarse.hnsw.efConstruction))
        rerank_copy = cls._open_rerank_copy(directory, params, rows, full_dim, mmap, spill_dir)
        backend = cls(
            coarse_dim=coarse_dim,
            full_dim=full_dim,
            metric=metric,
            index_type=index_type,
            coarse=coarse,
            full=_FullStore(
                full_dim, full, (directory / FULL_FILE).absolute() if mmap and full_dim else None, spill_dir
            ),
            ids=ids,
            params=params,
            device=device,
            code=code,
            labels=labels,
            coarse_file_bytes=(directory / COARSE_FILE).stat().st_size,
            balance=balance,
            balance_matrix=matrix,
            rerank_copy=rerank_copy,
        )
        if implicit:  # saved in list order: every entry's row is its list's first row + its place
            backend._lists = ivf_lists.ImplicitLists.opened(coarse, mapped=mmap)
        return backend

    @staticmethod
    def _open_rerank_copy(
        directory: Path, params: dict[str, Any], rows: int, full_dim: int, mmap: bool, spill_dir: str | None
    ) -> _FullStore | None:
        """The reduced-precision rerank copy a section names (``params["rerank_dtype"]``), checked; None for float32."""
        dtype = params.get("rerank_dtype", "float32")
        if dtype == "float32":
            return None
        if dtype not in RERANK_FILES or not full_dim:
            raise FormatError(f"{directory}: unknown rerank_dtype {dtype!r} in the backend section")
        path = directory / RERANK_FILES[dtype]
        if not path.is_file():
            raise FormatError(f"{path}: missing; the index directory is incomplete")
        try:
            copy = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
        except EOFError:
            raise FormatError(f"{path}: empty or truncated; rebuild the index or restore the file") from None
        except (ValueError, OSError) as exc:
            raise FormatError(f"{path}: cannot read it ({exc})") from None
        if copy.dtype != np.dtype(dtype) or copy.shape != (rows, full_dim):
            raise FormatError(f"{path}: expected {dtype} ({rows}, {full_dim}), found {copy.dtype} {copy.shape}")
        if mmap:
            advise_random(copy)
        return _FullStore(full_dim, copy, path.absolute() if mmap else None, spill_dir, np.dtype(dtype))

    # ------------------------------------------------------------------ ids
    def __len__(self) -> int:
        return self._n_alive

    @property
    def rows(self) -> int:
        """Rows in the full store, removed ones included."""
        return len(self._ids)

    def ids(self) -> np.ndarray:
        return np.array(self._ids[self._alive_mask()])

    def _sorted_lookup(self) -> tuple[np.ndarray, np.ndarray]:
        lookup = self._lookup
        if lookup is None:
            rows = np.flatnonzero(self._alive_mask())
            order = np.argsort(self._ids[rows], kind="stable")
            lookup = (np.asarray(self._ids[rows][order]), rows[order])
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
        """Prepare for ``n_total`` vectors: build and train the coarse index on the sample's prefixes.

        IVF chooses its list count from ``n_total`` and trains its quantizer (and its code) on the
        sample; SQ, PQ and RaBitQ train their code on at most 64k rows of it. A no-op for flat /
        HNSW float and binary. Called by the index before the first :meth:`add` of a build.
        """
        sample = np.ascontiguousarray(coarse_sample, dtype=np.float32)
        if self.balance == "itq" and self._balance is None and len(sample):
            self._balance = codes.itq_balance(sample)
            self._version += 1
        if self._coarse is not None:
            return
        sample = codes.balance_stored(self._balance, sample)
        nlist = 0
        if self.structure == "ivf":
            nlist = self._params.get("nlist") or default_nlist(n_total)
            # k-means wants at least 39 training points per list (FAISS warns below that): a 100k-row
            # sample caps nlist at 2,564 (4 sqrt(n) passes that at n = 410k; pass a larger sample_size
            # to the index build for more lists on larger corpora).
            nlist = int(max(1, min(nlist, len(sample) // 39 or 1)))
        if self._params.get("implicit_ids"):
            index = ivf_lists.make_index(self.code, self.coarse_dim, nlist, int(self._params.get("pq_m") or 1))
        else:
            index = codes.make_index(self.structure, self.code, self.coarse_dim, self._params, nlist)
        codes.train(index, self.code, sample, self.structure)
        self._params["fixed_coarse_bytes"] = codes.serialized_bytes(index)  # trained, still empty: header + parameters
        if self.structure == "ivf":
            self._params["nlist"] = nlist
            if self._params.get("nprobe") is None:
                self._params["nprobe"] = min(nlist, max(1, nlist // 32))
        self._coarse = index
        if self._params.get("implicit_ids"):
            self._lists = ivf_lists.ImplicitLists(index)
        self._version += 1

    def add(self, ids: np.ndarray, coarse: np.ndarray, full: np.ndarray, payloads: Payloads = None) -> None:
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
        if self._coarse is None or (self.balance != "none" and self._balance is None):
            # added to without an explicit train(): train on this first batch
            self.train(coarse, max(len(ids), self._n_alive))
        start = len(self._full)
        rows = np.arange(start, start + len(ids), dtype=np.int64)
        encoded = np.ascontiguousarray(codes.encode(self.code, codes.balance_stored(self._balance, coarse)))
        if self._lists is not None:  # a memory-mapped saved index: its lists copied into memory first
            self._coarse = self._lists.writable()
            self._lists.changed()
        if self.labels == "rows":
            if self._coarse.ntotal != start:  # labels are insertion positions, which must equal rows
                raise BackendError(f"coarse index holds {self._coarse.ntotal} vectors but the store {start} rows")
            self._coarse.add(encoded)
        else:
            self._coarse.add_with_ids(encoded, rows)
        self._full.append(full)
        if self._rerank_copy is not None:
            self._rerank_copy.append(full)
        self._ids = np.concatenate([self._ids, ids])
        if self._alive is not None:
            self._alive = np.concatenate([self._alive, np.ones(len(ids), dtype=bool)])
        self._n_alive += len(ids)
        self._lookup = None
        self._alive_bitmap = None
        self._gpu_index = None  # the GPU mirror is rebuilt at the next search
        self._version += 1

    def remove(self, ids: np.ndarray) -> int:
        rows = self.rows_of(np.asarray(ids, dtype=np.int64))
        rows = np.unique(rows[rows >= 0])
        if not len(rows):
            return 0
        if self.labels == "ids":
            self._coarse.remove_ids(rows)
        alive = self._alive_mask().copy()
        alive[rows] = False
        id_arr = np.array(self._ids)
        id_arr[rows] = EMPTY_ID
        self._alive, self._ids = alive, id_arr
        self._n_alive -= len(rows)
        self._lookup = None
        self._alive_bitmap = None
        self._gpu_index = None
        self._version += 1
        return len(rows)

    # ------------------------------------------------------------------ search knobs (used by calibration)
    def search_knob(self) -> tuple[str, list[int]] | None:
        """The search-time parameter the index calibrates together with candidates: IVF's ``nprobe``.

        Returns ``(name, ladder)`` with the ladder ascending, its last value exhaustive; ``None`` for
        flat and HNSW (whose ``efSearch`` follows ``candidates``).
        """
        if self.structure != "ivf" or self._coarse is None:
            return None
        return "nprobe", _nprobe_ladder(int(self._params["nlist"]))

    def set_search_knob(self, value: int) -> None:
        if self.structure == "ivf":
            self._params["nprobe"] = int(value)

    def get_search_knob(self) -> int | None:
        return int(self._params["nprobe"]) if self.structure == "ivf" and self._params.get("nprobe") else None

    def search_cost(self, candidates: int, knob: int | None = None) -> float:
        """Rough relative cost of one query, used to pick the cheapest (nprobe, candidates) pair.

        Stage one scans ``nprobe`` lists of ``n / nlist`` coarse vectors plus the ``nlist``
        centroids, costed per coordinate; stage two costs ``0.75 * full_dim`` per candidate. The
        weight is measured, not guessed: on 2 cores an IVF scan took about 27 ns per 64-dim coarse
        vector and the rerank about 115 ns per 384-dim candidate (1,000 queries, 49k-1M vectors).
        Codes are costed like float prefixes (they scan faster: this leans to fewer probes).
        """
        coarse = float(self._n_alive * self.coarse_dim)
        if self.structure == "ivf" and self._params.get("nlist"):
            nlist = int(self._params["nlist"])
            probe = knob if knob is not None else int(self._params.get("nprobe") or 1)
            coarse = (probe * self._n_alive / nlist + nlist) * self.coarse_dim
        return coarse + 0.75 * candidates * self.full_dim

    # ------------------------------------------------------------------ search
    def _search_params(self, k: int) -> Any:
        ef = max(int(self._params.get("ef_search", 32)), k)
        sel = None
        if self._alive is not None and self.labels == "rows" and codes.supports_selector(self.structure, self.code):
            if self._alive_bitmap is None:
                self._alive_bitmap = np.packbits(self._alive, bitorder="little")
            bitmap = self._alive_bitmap
            sel = faiss.IDSelectorBitmap(len(self._alive), faiss.swig_ptr(bitmap))
        params = codes.search_params(self.structure, self.code, ef, int(self._params.get("nprobe") or 1), sel)
        if sel is not None:
            params._keep = (sel, self._alive_bitmap)  # the selector points into these; keep them alive
        return params

    def _gpu(self) -> Any:
        """The GPU mirror of the coarse index, or None (CPU). Never raises: any failure means CPU."""
        if self._requested_device == "cpu" or self.code != "float" or self.structure == "hnsw" or self._gpu_failed:
            return None
        if self._gpu_index is not None:
            return self._gpu_index
        if not gpu_faiss.gpu_available(0):
            self._gpu_failed = True
            return None
        with self._gpu_lock:
            try:
                self._gpu_index = gpu_faiss.to_gpu(self._coarse, 0)
            except Exception:  # a broken CUDA setup must not break search: fall back to the CPU
                self._gpu_failed = True
                self._gpu_index = None
        return self._gpu_index

    @property
    def device(self) -> str:
        """Where stage one runs (or will run at the next search): ``"gpu:0"`` or ``"cpu"``."""
        return "gpu:0" if self._gpu() is not None else "cpu"

    @codes.with_flat_search_blas
    def _coarse_hits(self, coarse_queries: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``n`` live rows from the coarse index with their coarse scores (``-1`` rows where fewer exist)."""
        n = int(min(n, self._n_alive))
        coarse_queries = codes.balance_queries(self._balance, coarse_queries)
        nprobe = int(self._params.get("nprobe") or 1)
        fits_gpu = n <= gpu_faiss.MAX_K and (self.structure != "ivf" or nprobe <= gpu_faiss.MAX_K)
        gpu = self._gpu() if len(coarse_queries) and fits_gpu else None
        if gpu is not None:
            with self._gpu_lock:
                if self.structure == "ivf":
                    gpu.nprobe = nprobe
                return gpu.search(np.ascontiguousarray(coarse_queries, dtype=np.float32), n)
        exhaustive = int(self._params.get("nprobe") or 1) >= int(self._params.get("nlist") or 1)
        if self.structure == "ivf" and self.code == "float" and exhaustive:  # one BLAS scan: see faiss_codes
            return codes.ivf_exhaustive_hits(self._coarse, coarse_queries, n)
        # Removed rows that stay in the coarse index and cannot be filtered by a selector: ask for
        # as many more hits as there are removed rows, drop those, keep the first n live ones.
        dead = len(self._ids) - self._n_alive
        overfetch = self.labels == "rows" and dead and not codes.supports_selector(self.structure, self.code)
        want = min(n + dead, self._coarse.ntotal) if overfetch else n
        q = np.ascontiguousarray(codes.encode(self.code, coarse_queries))
        params = self._search_params(want)
        if self._lists is not None:  # implicit ids: (list, place) pairs, no id read
            dist, rows = self._lists.hits(q, want, nprobe)
        else:
            dist, rows = self._coarse.search(q, want) if params is None else self._coarse.search(q, want, params=params)
        scores = codes.scores_from(self.code, dist, self.coarse_dim)
        if overfetch:
            gone = (rows < 0) | ~self._alive_mask()[np.maximum(rows, 0)]
            order = np.argsort(gone, axis=1, kind="stable")[:, :n]
            rows = np.where(np.take_along_axis(gone, order, axis=1), -1, np.take_along_axis(rows, order, axis=1))
            scores = np.take_along_axis(scores, order, axis=1)
        return scores, rows

    def _coarse_rows(self, coarse_queries: np.ndarray, n: int) -> np.ndarray:  # top-n rows, -1 where none
        return self._coarse_hits(coarse_queries, n)[1]

    def _ivf_exhaustive_rows(self, coarse_queries: np.ndarray, n: int) -> np.ndarray:
        return codes.ivf_exhaustive_hits(self._coarse, coarse_queries, n)[1]

    def coarse_search(self, coarse_queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Stage one alone: coarse scores (the code's: +-1 inner products for binary) and ids."""
        coarse_queries = np.ascontiguousarray(coarse_queries, dtype=np.float32)
        if not self._n_alive or not len(coarse_queries):
            return empty_results(len(coarse_queries), k)
        scores, rows = empty_results(len(coarse_queries), k)
        n = min(k, self._n_alive)
        scores[:, :n], rows[:, :n] = self._coarse_hits(coarse_queries, n)
        return self._to_ids(scores, rows)

    def _to_ids(self, scores: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        valid = rows >= 0
        ids = np.where(valid, self._ids[np.where(valid, rows, 0)], EMPTY_ID)
        scores = np.where(valid, scores, -np.inf).astype(np.float32, copy=False)
        return scores, ids

    def device_arrays(self) -> tuple[np.ndarray, np.ndarray, list[tuple[int, np.ndarray]], np.ndarray]:
        """``(live rows, their coarse vectors, full-vector segments, row -> id)`` of a flat index: what a
        device engine (``backends/torch_engine.py``) mirrors to run both stages off this process's CPU."""
        if not self.mirrorable or self._coarse is None:
            raise InputError(f"device_arrays: only a float flat coarse index can be mirrored, not {self.index_type!r}")
        rows = faiss.vector_to_array(self._coarse.id_map).astype(np.int64)
        vectors = self._coarse.index.reconstruct_n(0, self._coarse.index.ntotal)
        return rows, vectors, self._full.segments(), self._ids

    @property
    def _rerank_store(self) -> _FullStore:  # what the rerank reads: the reduced-precision copy, else full.npy
        return self._rerank_copy if self._rerank_copy is not None else self._full

    def _best_of(self, full_queries: np.ndarray, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        if self._rerank_copy is None:
            return self._gather_best(full_queries, rows, k)
        return gather_best_lowp(self._rerank_copy.segments(), self.full_dim, full_queries, rows, k)

    def rerank_rows(self, full_queries: np.ndarray, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Best ``k`` of the candidate ``rows`` (``-1`` = none) by full inner product: ``(scores, rows)``
        (from the reduced-precision copy with ``rerank_dtype="float16"``)."""
        store = self._rerank_store
        step = store.prefetch_queries(rows.shape[1]) if _prefetch_enabled() else 0
        if not step or store.resident(rows):  # warm pages: the prefetch would cost only its system calls
            return self._best_of(full_queries, rows, k)
        # a loaded index: each chunk's reads issued at once (not fault by fault), the next chunk's while this
        # one is gathered; chunks small enough that prefetched pages are not evicted before their gather
        parts = []
        store.prefetch(rows[:step])
        for s in range(0, len(rows), step):
            if s + step < len(rows):
                store.prefetch(rows[s + step : s + 2 * step])
            parts.append(self._best_of(full_queries[s : s + step], rows[s : s + step], k))
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    def _rerank_stopped(
        self, full_queries: np.ndarray, coarse_scores: np.ndarray, rows: np.ndarray, k: int, stop: RerankStop
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:func:`.faiss_rerank.rerank_with_stop` in chunks of queries whose pages fit a prefetch (as
        :meth:`rerank_rows`); ``(scores, rows, candidates reranked a query)``."""
        store = self._rerank_store
        step = store.prefetch_queries(rows.shape[1]) if _prefetch_enabled() else 0
        prefetch = store.prefetch if step and not store.resident(rows) else None
        step = step or len(rows)
        parts = []
        for s in range(0, len(rows), step):
            q = full_queries[s : s + step]
            best_of = lambda idx, r, q=q: self._best_of(np.ascontiguousarray(q[idx]), r, k)  # noqa: E731
            parts.append(rerank_with_stop(best_of, coarse_scores[s : s + step], rows[s : s + step], k, stop, prefetch))
        return tuple(np.concatenate([p[i] for p in parts]) for i in range(3))  # type: ignore[return-value]

    # ------------------------------------------------------------------ the per-query stop (see faiss_rerank)
    @property
    def rerank_stop(self) -> RerankStop | None:
        """The calibrated per-query stop of the rerank, or None (every candidate reranked)."""
        return self._stop

    def set_rerank_stop(self, stop: RerankStop | None) -> None:
        """Turn the per-query stop on (a :class:`.faiss_rerank.RerankStop`, saved with the index) or off (None)."""
        if stop is not None and not isinstance(stop, RerankStop):
            raise InputError(f"rerank_stop: expected a RerankStop or None, got {type(stop).__name__}")
        if stop is not None and self.prefix_only:
            raise InputError("rerank_stop: this index keeps no full vectors (prefix only): there is no rerank to stop")
        self._stop = stop
        if stop is None:
            self._params.pop("rerank_stop", None)
        else:
            self._params["rerank_stop"] = stop.to_params()

    def score_model(
        self, coarse_queries: np.ndarray, full_queries: np.ndarray, k: int, candidates: int
    ) -> tuple[float, float, float]:
        """``(slope, intercept, sigma)`` of the rerank's full scores against the coarse scores of these queries'
        top ``candidates`` (:func:`.faiss_rerank.fit_score_model`): what a :class:`RerankStop` bounds with."""
        coarse_queries = np.ascontiguousarray(coarse_queries, dtype=np.float32)
        full_queries = np.ascontiguousarray(full_queries, dtype=np.float32)
        if self.prefix_only or not self._n_alive or not len(coarse_queries):
            raise InputError("score_model: needs stored full vectors and at least one query")
        hit_scores, hit_rows = self._coarse_hits(coarse_queries, max(candidates, k))
        full = np.concatenate([
            candidate_scores(self._rerank_store.segments(), self.full_dim, full_queries[s : s + step], hit_rows[s : s + step])
            for step in [max(1, GATHER_ROWS // max(1, hit_rows.shape[1]))]
            for s in range(0, len(hit_rows), step)
        ])  # fmt: skip
        coarse = np.where(hit_rows >= 0, hit_scores, np.nan)
        return fit_score_model(coarse, np.where(np.isfinite(full), full, np.nan), k)

    def _gather_best(self, full_queries: np.ndarray, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
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
        reject_query_filter(query_filter, "faiss")
        nq = len(coarse_queries)
        if not self._n_alive or not nq:
            return empty_results(nq, k)
        coarse_queries = np.ascontiguousarray(coarse_queries, dtype=np.float32)
        full_queries = np.ascontiguousarray(full_queries, dtype=np.float32)
        t0 = time.perf_counter()
        if self.prefix_only:  # nothing to rerank with: the best k of the candidates, by coarse score
            scores, rows = empty_results(nq, k)
            hit_scores, hit_rows = self._coarse_hits(coarse_queries, max(candidates, k))
            n = min(k, hit_rows.shape[1])
            scores[:, :n], rows[:, :n] = hit_scores[:, :n], hit_rows[:, :n]
            add_timings(timings, coarse=time.perf_counter() - t0, rerank=0.0)
            return self._to_ids(scores, rows)
        stop = self._stop
        if stop is None:
            rows = self._coarse_rows(coarse_queries, max(candidates, k))
            t1 = time.perf_counter()
            reranked = int((rows >= 0).sum()) if timings is not None else 0
            scores, rows = self.rerank_rows(full_queries, rows, k)
        else:  # the per-query stop: up to the stop's cap, each query until the rest cannot enter its top k
            hit_scores, rows = self._coarse_hits(coarse_queries, stop.cap(max(candidates, k), k))
            t1 = time.perf_counter()
            scores, rows, counts = self._rerank_stopped(full_queries, hit_scores, rows, k, stop)
            reranked = int(counts.sum())
        t2 = time.perf_counter()
        add_timings(timings, coarse=t1 - t0, rerank=t2 - t1)
        if timings is not None:  # a count, not seconds: the candidates whose full vectors were read
            timings["reranked"] = timings.get("reranked", 0.0) + float(reranked)
        return self._to_ids(scores, rows)

    @codes.with_flat_search_blas
    def exact_search(self, full_queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Brute force over every live full vector (streamed in chunks from the memory map)."""
        if self.prefix_only:
            raise InputError(
                "exact_search: this index keeps no full vectors (rerank=None, prefix only); exact full-dimension "
                "search needs the original vectors: use matryoshka_index.exact.exact_topk on them"
            )
        full_queries = np.ascontiguousarray(full_queries, dtype=np.float32)
        nq = len(full_queries)
        best_s, best_r = empty_results(nq, k)
        if not self._n_alive or not nq:
            return best_s, best_r
        alive_rows = self._alive_mask()  # once: without removals it is a fresh all-True array
        for start, chunk in self._full.iter_chunks():
            alive = alive_rows[start : start + len(chunk)]
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
        if self._coarse is None:  # an index that needs training and never received vectors
            raise InputError(
                "save: this index holds no vectors yet and its coarse index is untrained; add vectors first"
            )
        # implicit ids: rows written in list order (None: they already are), so a place in a list is a row
        layout = self._lists.layout() if self._lists is not None else None
        coarse = self._coarse if layout is None else self._lists.relabelled(layout)
        codes.write(coarse, directory / COARSE_FILE)
        self._measured = (self._version, (directory / COARSE_FILE).stat().st_size)
        files = [COARSE_FILE, IDS_FILE]
        if not self.prefix_only:
            self._write_full(directory / FULL_FILE, layout)
            files.insert(1, FULL_FILE)
        if self._rerank_copy is not None:
            self._write_rerank_copy(directory / RERANK_FILES[self.rerank_dtype], layout)
            files.append(RERANK_FILES[self.rerank_dtype])
        save_npy(directory / IDS_FILE, np.asarray(self._ids if layout is None else self._ids[layout]))
        if self._balance is not None:
            np.save(directory / codes.BALANCE_FILE, self._balance, allow_pickle=False)
            files.append(codes.BALANCE_FILE)
        legacy = (("pq4" if self.index_type == "pq" else "float"), ("rows" if self.index_type == "hnsw" else "ids"))
        # version 1 can say it: byte for byte (a prefix-only index is newer than version 1)
        v1 = (self.code, self.labels) == legacy and self._balance is None and not self.prefix_only
        extra = {} if v1 else {"code": self.code, "labels": self.labels, "balance": self.balance}
        return {
            "kind": self.kind,
            "section_version": 1 if v1 else SECTION_VERSION,
            "index": self.index_type,
            **extra,
            "coarse_dim": self.coarse_dim,
            "full_dim": self.full_dim,
            "metric": self.metric,
            "rows": len(self._ids),
            "count": int(self._n_alive),
            "params": dict(self._params),
            "files": files,
        }

    def _write_full(self, path: Path, layout: np.ndarray | None = None) -> None:
        segments = self._full.segments()
        if layout is not None:  # saved row i is row layout[i]
            chunks = ivf_lists.gather_in_order(segments, layout)
            write_npy(path, (len(layout), self.full_dim), np.float32, chunks)
            return
        base = self._full.base
        if len(segments) == 1 and segments[0][1] is base and self._full.base_path is not None:
            # Unchanged since load: the saved file is immutable (opened read-only), so a hard link
            # to it is a complete, instant copy. Falls back to copying across file systems.
            with contextlib.suppress(OSError):
                os.link(self._full.base_path, path)
                return
        # ordinary writes into reserved space, not a writable memory map: a full disk is ENOSPC, not SIGBUS
        write_npy(path, (len(self._full), self.full_dim), np.float32, (c for _, c in self._full.iter_chunks()))

    def _write_rerank_copy(self, path: Path, layout: np.ndarray | None = None) -> None:
        copy = self._rerank_copy
        assert copy is not None
        segments = copy.segments()
        if layout is not None:  # in the same list order as full.npy (implicit ids)
            write_npy(path, (len(layout), self.full_dim), copy.dtype, ivf_lists.gather_in_order(segments, layout))
            return
        if len(segments) == 1 and segments[0][1] is copy.base and copy.base_path is not None:
            with contextlib.suppress(OSError):  # unchanged since load: a hard link, as full.npy
                os.link(copy.base_path, path)
                return
        write_npy(path, (len(copy), self.full_dim), copy.dtype, (c for _, c in copy.iter_chunks()))

    # ------------------------------------------------------------------ facts
    def _coarse_bytes(self) -> int:
        """Bytes of the coarse index, measured: its FAISS serialisation (the saved file's size after a
        save or load; serialised again after a change). FAISS reads that file into RAM as it is:
        codes, graph links, inverted lists with their ids, per-vector factors, trained parameters."""
        if self._coarse is None:
            return 0
        if self._measured is None or self._measured[0] != self._version:
            self._measured = (self._version, codes.serialized_bytes(self._coarse))
        return self._measured[1]

    def memory(self) -> dict[str, Any]:
        """What stays in RAM, measured, and what is left to the page cache. ``resident_bytes``: the coarse
        index (:meth:`_coarse_bytes`) + in-RAM arrays (ids unless memory-mapped, the alive mask once a row
        was removed, the id lookup once built, full vectors read with ``mmap=False``); ``fixed_bytes``: the
        empty trained index (measured at training) + the balance rotation; ``per_vector_bytes``: the rest
        per vector; ``page_cache_bytes_per_vector``: the memory-mapped files a search reads (evictable).
        """
        n = max(1, self._n_alive)
        coarse = self._coarse_bytes()
        arrays = 0
        ids_in_file = 0  # implicit ids, memory-mapped: the lists' id arrays stay in coarse.faiss, never read
        if self._lists is not None:
            ids_in_file = self._lists.untouched_id_bytes()
            coarse -= ids_in_file
            arrays += self._lists.start.nbytes + self._lists.ordered.nbytes + self._lists.tail_bytes()
        ids_mapped = isinstance(self._ids, np.memmap)
        if not ids_mapped:
            arrays += int(self._ids.nbytes)
        for extra in (self._alive, self._alive_bitmap, self._balance):
            arrays += int(extra.nbytes) if extra is not None else 0
        if self._lookup is not None:
            arrays += int(self._lookup[0].nbytes + self._lookup[1].nbytes)
        full_ram = self._full.ram_bytes
        resident = coarse + arrays + full_ram
        mapped = (
            (0 if full_ram else self.full_dim * 4) + (8 if ids_mapped else 0) + ids_in_file / max(1, len(self._ids))
        )
        if self._rerank_copy is not None:  # a search reads the copy, not full.npy (exact search and saves do)
            copy_ram = self._rerank_copy.ram_bytes
            resident += copy_ram
            mapped += (0 if copy_ram else self.full_dim * self._rerank_copy.dtype.itemsize) - (
                0 if full_ram else self.full_dim * 4
            )
        fixed = int(self._params.get("fixed_coarse_bytes", 0)) + (
            self._balance.nbytes if self._balance is not None else 0
        )
        return {
            "resident_bytes": int(resident),
            "resident_bytes_per_vector": round(resident / n, 2),
            "fixed_bytes": fixed,
            "per_vector_bytes": round((resident - fixed) / n, 2),
            "coarse_index_bytes_per_vector": round(coarse / n, 2),
            "bookkeeping_bytes_per_vector": round(arrays / n, 2),
            "full_vectors_in_ram_bytes_per_vector": round(full_ram / n, 2),
            "page_cache_bytes_per_vector": mapped * len(self._ids) / n,
            "measured_as": "serialised FAISS coarse index + nbytes of in-RAM arrays",
        }

    def resident_bytes_per_vector(self) -> float:
        """Bytes a live vector keeps resident in RAM, measured (see :meth:`memory`)."""
        return float(self.memory()["resident_bytes_per_vector"])

    def info(self) -> dict[str, Any]:
        rows = max(1, len(self._ids))
        mem = self.memory()
        copy_bytes = self._rerank_copy.dtype.itemsize if self._rerank_copy is not None else 0
        disk = rows * (self.full_dim * (4 + copy_bytes) + 8) + self._coarse_bytes()
        gpu_count = gpu_faiss.gpu_count()
        out: dict[str, Any] = {
            "backend": self.kind,
            "faiss_version": faiss.__version__,
            "coarse_index": self.index_type,
            "structure": self.structure,
            "code": self.code,
            "balance": self.balance,
            "device": self.device,
            "gpus_visible_to_faiss": gpu_count,
            "count": int(self._n_alive),
            "removed_rows": int(len(self._ids) - self._n_alive),
            "ram_bytes_per_vector": mem["resident_bytes_per_vector"],
            "disk_bytes_per_vector": round(disk / rows, 1),
            "memory": mem,
            "full_vectors": "none (prefix only: rerank=None)" if self.prefix_only else self._full.location,
            "rerank_dtype": self.rerank_dtype,
            "rerank_stop": None if self._stop is None else self._stop.to_params(),
            "params": dict(self._params),
        }
        if self.device == "cpu" and self.structure == "hnsw" and gpu_count:
            out["device_note"] = "HNSW has no FAISS GPU implementation; its coarse stage runs on the CPU"
        return out
