"""qdrant-edge backend: Qdrant's own engine (segments, HNSW, quantization) in this process.

``qdrant-edge-py`` (the optional extra ``matryoshka-index[edge]``) runs Qdrant's shard code
in-process: no server, no network, and a real engine, unlike qdrant-client's local mode (a
pure-Python emulation meant for tests). One shard holds two named vectors::

    coarse   adapted prefix, coarse_dim, HNSW (index="hnsw") or none (index="flat": a scan),
             optionally quantized (``code=``: sq8, binary 1 / 1.5 / 2 bits, TurboQuant 4 / 2 / 1 bits),
             searched without the engine's rescoring (the rerank on ``full`` is the rescoring)
    full     full vector, HNSW off (m=0): only read to rerank the prefetched candidates
    payload  kept as given (filters on it pass through to both stages)

A search is one ``QueryRequest`` per query with a nested ``Prefetch`` on ``coarse``
(``limit=candidates``) and the final ``Nearest`` on ``full`` (``limit=k``), sent as one
``query_batch``: both stages run inside the engine. A prefix-only shard (``full_dim=0``, what
``MatryoshkaIndex.build(..., rerank=None)`` creates) holds ``coarse`` alone, and a search is the
``Nearest`` on ``coarse`` itself (``limit=k``). Both vectors use the Dot distance: the index
hands over vectors already normalised for cosine, so scores are plain inner products, as the
protocol asks, and stored vectors are never re-normalised.

Indexes are built only by ``EdgeShard.optimize()`` (the engine has no background optimizer): the
backend runs it before the first search, exact search or save that follows an ``add`` or
``remove`` (:meth:`QdrantEdgeBackend.optimize` runs it explicitly). Points not yet optimized are
still found (brute force over the unindexed segment), so this only affects speed.

Files
-----
The live shard is a *working copy* in a directory of its own: ``path=`` when given (it must be
absent or empty), else a fresh temporary directory. Either way the working copy is deleted by
:meth:`~QdrantEdgeBackend.close` (or when the backend is garbage-collected): what persists is what
:meth:`~QdrantEdgeBackend.save` wrote. ``save`` flushes the shard and copies it into
``<index>/qdrant_edge/`` inside the index's temporary directory (which the index renames into
place atomically and checksums); :meth:`~QdrantEdgeBackend.open` copies that saved shard into a new
working copy and opens it there. The saved index is therefore never written to after its save (the
engine rewrites ``edge_config.json`` whenever it opens a shard, which would break the checksums and
the atomic save of an index opened in place), at the cost of one copy of the shard per open.

One process per shard directory: the engine keeps no lock of its own when its write-ahead log is
off (the default here, see ``wal``), so the backend holds an exclusive ``flock`` on
``<path>/.mindex-edge.lock`` while the shard is open. A second open of the same directory, from this
process or another, fails with one line saying so.

Backends never import torch; this module imports ``qdrant_edge`` at import time, and without it
raises a one-line :class:`~matryoshka_index.errors.InputError` naming the extra to install.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import threading
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any, ClassVar, TypeVar

import numpy as np

from ...errors import BackendError, FormatError, InputError, MatryoshkaError
from ...progress import progress
from ...storage import allocated_bytes, owned_temp_dir, release_temp_dir
from ...validation import check_positive_int
from ..base import EMPTY_ID, METRICS, Payloads, Results, empty_results
from .common import (
    COARSE,
    FULL,
    LEGACY_CODES,
    Closing,
    add_inputs,
    coarse_memory,
    first_line,
    membership,
    qdrant_code_bytes,
    quantization_family,
    query_pairs,
    renamed_option,
    resolve_code,
)

try:
    import qdrant_edge as qe
except ImportError:
    raise InputError(
        'backend "qdrant-edge": the qdrant-edge-py package is not installed; pip install "matryoshka-index[edge]"'
    ) from None

T = TypeVar("T")

SHARD_DIR = "qdrant_edge"
LOCK_FILE = ".mindex-edge.lock"
SECTION_FORMAT = "matryoshka-index-qdrant-edge"
SECTION_VERSION = 1
INDEX_TYPES = ("flat", "hnsw")
_CONFIG_FILE = "edge_config.json"
_QUERY_BATCH = 256
_ID_BATCH = 4096
_FULL_SCAN_KB = 10_000  # Qdrant's default: filtered searches below this many KB of vectors scan
# the engine quantizes a segment only when it optimizes (indexes) it, and it leaves segments below the
# indexing threshold as they are: with a code, every segment is optimized, so the codes are what is searched
_CODE_INDEXING_KB = 1


def edge_version() -> str | None:
    """The installed qdrant-edge-py version (None when unknown)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("qdrant-edge-py")
    except PackageNotFoundError:  # pragma: no cover - imported from a source build
        return None


# ------------------------------------------------------------------------------------------ errors


def _in_use(path: Path) -> BackendError:
    return BackendError(
        f"{path}: this qdrant-edge shard directory is already open in another process or index "
        "(one process per shard directory); close that index first or choose another path"
    )


def _call(fn: Callable[[], T], what: str, path: Path | None = None) -> T:
    """Run one qdrant-edge call; its errors (plain ``Exception`` with the engine's text) become one line."""
    try:
        return fn()
    except MatryoshkaError:
        raise
    except Exception as exc:
        text = first_line(exc)
        if path is not None and "WouldBlock" in text:  # the engine's own WAL lock
            raise _in_use(path) from None
        raise BackendError(f"qdrant-edge refused {what}: {text}") from None


# -------------------------------------------------------------------------------- lock, working dir


def _lock(fh: IO[str]) -> None:
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        import msvcrt

        msvcrt.locking(fh.fileno(), msvcrt.LK_NBLCK, 1)
        return
    fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)


class _Live:
    """The open shard, its lock and its working directory; ``close`` releases all three (idempotent)."""

    def __init__(self, path: Path, created_dir: bool, lock_fh: IO[str]) -> None:
        self.path = path
        self.created_dir = created_dir
        self.lock_fh: IO[str] | None = lock_fh
        self.shard: Any = None

    def close(self) -> None:
        shard, self.shard = self.shard, None
        if shard is not None:
            with contextlib.suppress(Exception):
                shard.close()
        if self.lock_fh is None:
            return
        # the working copy is ours (we required an empty directory): delete it, then unlock
        if self.created_dir:
            shutil.rmtree(self.path, ignore_errors=True)
            release_temp_dir(self.path)  # drops its owner lock when it was an owned temporary
        else:
            for child in self.path.iterdir():
                if child.name == LOCK_FILE:
                    continue
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child, ignore_errors=True)
                else:
                    with contextlib.suppress(OSError):
                        child.unlink()
            with contextlib.suppress(OSError):
                (self.path / LOCK_FILE).unlink()
        fh, self.lock_fh = self.lock_fh, None
        with contextlib.suppress(OSError):
            fh.close()


def _claim(path: str | os.PathLike[str] | None) -> _Live:
    """Lock a working directory for one shard: ``path`` (absent or empty) or a fresh temporary one."""
    if path is None:
        work = owned_temp_dir("mindex-edge-")  # pid-locked: a killed process's is swept by the next run
        created = True
    else:
        work = Path(path).absolute()
        if work.exists() and not work.is_dir():
            raise InputError(f"path: {work} exists and is not a directory; give a directory for the qdrant-edge shard")
        created = not work.exists()
        try:
            work.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InputError(f"path: cannot create {work} ({exc.strerror or exc})") from None
    lock_existed = (work / LOCK_FILE).exists()
    fh = open(work / LOCK_FILE, "a+")  # held open (and locked) for the shard's lifetime
    try:
        _lock(fh)
    except OSError:
        fh.close()
        raise _in_use(work) from None
    live = _Live(work, created, fh)
    others = sorted(p.name for p in work.iterdir() if p.name != LOCK_FILE)
    if others:
        fh.close()
        live.lock_fh = None  # not ours: leave every file where it is
        if not lock_existed:
            with contextlib.suppress(OSError):
                (work / LOCK_FILE).unlink()
        shown = ", ".join(others[:5]) + (" ..." if len(others) > 5 else "")
        raise InputError(
            f"path: {work} is not empty ({shown}); the qdrant-edge backend keeps its working shard in an empty "
            "or new directory (a shard left by a process that did not close can be deleted)"
        )
    return live


# ------------------------------------------------------------------------------------------- copy


def _copy_sparse(src: str, dst: str) -> None:
    """Copy one file keeping its holes: the engine preallocates its mmap files (32 MiB chunks, mostly
    holes in a small shard), and a plain copy would write every hole out as zeros."""
    with open(src, "rb") as fi, open(dst, "wb") as fo:
        size = os.fstat(fi.fileno()).st_size
        regions: list[tuple[int, int]] = []
        try:
            pos = 0
            while pos < size:
                try:
                    start = os.lseek(fi.fileno(), pos, os.SEEK_DATA)
                except OSError:  # ENXIO: only a hole is left
                    break
                end = os.lseek(fi.fileno(), start, os.SEEK_HOLE)
                regions.append((start, end))
                pos = end
        except (AttributeError, OSError):  # no SEEK_DATA here (or the filesystem refuses): copy it all
            regions = [(0, size)]
        for start, end in regions:
            fi.seek(start)
            fo.seek(start)
            remaining = end - start
            while remaining > 0:
                block = fi.read(min(remaining, 1 << 22))
                if not block:
                    break
                fo.write(block)
                remaining -= len(block)
        fo.truncate(size)
    shutil.copystat(src, dst)


def _copy_shard(src: Path, dst: Path) -> None:
    shutil.copytree(src, dst, dirs_exist_ok=True, ignore=shutil.ignore_patterns(LOCK_FILE), copy_function=_copy_sparse)


def copy_shard(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
    """Copy a shard directory keeping its holes (what a migration opens instead of a source shard)."""
    _copy_shard(Path(src), Path(dst))


# ------------------------------------------------------------------------------------------ config


def _check_choice(name: str, value: Any, choices: Sequence[Any]) -> Any:
    if value not in choices:
        shown = ", ".join(repr(c) for c in choices)
        raise InputError(f"{name}: the qdrant-edge backend supports {shown}, got {value!r}")
    return value


_ENCODINGS = {"binary1.5": "OneAndHalfBits", "binary2": "TwoBits"}
_TURBO = {"turbo4": "Bits4", "turbo2": "Bits2", "turbo1": "Bits1"}


def _quantization(code: str) -> Any:
    """The engine's quantization config of a code (codes kept in RAM: ``Memory.Pinned``); None for float."""
    if code == "sq8":
        return qe.ScalarQuantizationConfig(type=qe.ScalarType.Int8, quantile=0.99, memory=qe.Memory.Pinned)
    if code == "binary":
        return qe.BinaryQuantizationConfig(memory=qe.Memory.Pinned)
    if code in _ENCODINGS:
        encoding = getattr(qe.BinaryQuantizationEncoding, _ENCODINGS[code])
        return qe.BinaryQuantizationConfig(encoding=encoding, memory=qe.Memory.Pinned)
    if code in _TURBO:
        bits = getattr(qe.TurboQuantBitSize, _TURBO[code])
        return qe.TurboQuantQuantizationConfig(bits=bits, memory=qe.Memory.Pinned)
    return None


def _code_of(p: dict[str, Any]) -> str:
    """The code of saved parameters (sections written before codes name only ``coarse_quantization``)."""
    return str(p.get("code") or LEGACY_CODES.get(p.get("coarse_quantization"), "float"))


def _edge_config(p: dict[str, Any], max_search_threads: int | None) -> Any:
    """The EdgeConfig of a shard with the backend's parameters ``p`` (as kept in the manifest section)."""
    coarse_hnsw = qe.HnswIndexConfig(
        m=0 if p["index"] == "flat" else int(p["hnsw_m"]),
        ef_construct=int(p["hnsw_ef_construct"]),
        full_scan_threshold=_FULL_SCAN_KB,
    )
    vectors = {
        COARSE: qe.EdgeVectorParams(
            size=int(p["coarse_dim"]),
            distance=qe.Distance.Dot,
            hnsw_config=coarse_hnsw,
            quantization_config=_quantization(_code_of(p)),
            # with a code the search reads only the codes (pinned in RAM): the floats may stay on disk
            memory=qe.Memory.Cold if p.get("coarse_on_disk") else None,
        ),
    }
    if int(p["full_dim"]):  # 0: prefix only, the shard keeps `coarse` alone
        # m=0: no graph for `full`, it is only read to rerank the prefetched candidates
        vectors[FULL] = qe.EdgeVectorParams(
            size=int(p["full_dim"]),
            distance=qe.Distance.Dot,
            hnsw_config=qe.HnswIndexConfig(
                m=0, ef_construct=int(p["hnsw_ef_construct"]), full_scan_threshold=_FULL_SCAN_KB
            ),
            memory=qe.Memory.Cold if p["on_disk"] else None,
        )
    threshold = p.get("indexing_threshold_kb")
    if threshold is None and _code_of(p) != "float":
        threshold = _CODE_INDEXING_KB
    return qe.EdgeConfig(
        vectors=vectors,
        optimizers=qe.EdgeOptimizersConfig(indexing_threshold=int(threshold)) if threshold is not None else None,
        max_search_threads=max_search_threads,
        wal_enabled=bool(p["wal"]),
    )


class QdrantEdgeBackend(Closing):
    """Coarse + full named vectors in an in-process qdrant-edge shard; both stages run inside the engine.

    Create one with :meth:`create` (a new, empty shard) or :meth:`open` (a copy of a saved one).
    """

    kind: ClassVar[str] = "qdrant-edge"
    supports_prefix_only: ClassVar[bool] = True  # full_dim=0: a shard with `coarse` alone

    def __init__(self, live: _Live, params: dict[str, Any], *, upload_batch_size: int = 1024, quiet: bool = False):
        self._live = live
        self._params = dict(params)
        self.coarse_dim = int(params["coarse_dim"])
        self.full_dim = int(params["full_dim"])
        self.metric = params["metric"]
        self.index = params["index"]
        self.code = _code_of(params)
        """The coarse code (one of ``CODES``); ``coarse_quantization`` is its family (int8 / binary / turbo)."""
        self.coarse_quantization = quantization_family(self.code)
        self.coarse_on_disk = bool(params.get("coarse_on_disk", False))
        self.on_disk = bool(params["on_disk"])
        self.rescore = bool(params["rescore"])
        self.oversampling = params["oversampling"]
        self.ef_search = params["hnsw_ef"]
        self.upload_batch_size = check_positive_int(upload_batch_size, "upload_batch_size")
        self.quiet = quiet
        self._dirty = False
        self._optimize_lock = threading.Lock()
        self._finalizer = weakref.finalize(self, live.close)

    # ---------------------------------------------------------------------------- construction
    @classmethod
    def create(
        cls,
        *,
        coarse_dim: int,
        full_dim: int,
        metric: str = "cosine",
        index: str = "hnsw",
        path: str | os.PathLike[str] | None = None,
        on_disk: bool = False,
        coarse_quantization: str | None = None,
        code: str | None = None,
        coarse_on_disk: bool | None = None,
        rescore: bool | None = None,
        oversampling: float | None = None,
        hnsw_m: int = 16,
        ef_construction: int | None = None,
        ef_search: int | None = None,
        indexing_threshold_kb: int | None = None,
        max_search_threads: int | None = None,
        wal: bool = False,
        upload_batch_size: int = 1024,
        quiet: bool = False,
        hnsw_ef_construct: int | None = None,
        hnsw_ef: int | None = None,
    ) -> QdrantEdgeBackend:
        """A new, empty shard with the ``coarse`` + ``full`` layout.

        ``index``: ``"hnsw"`` (an HNSW graph on ``coarse``, built by the engine's optimizer) or
        ``"flat"`` (no graph: exact coarse stage, the same results as FAISS ``flat``).
        ``path``: directory of the working shard (absent or empty; default a temporary directory);
        deleted on close, see the module docstring. ``on_disk``: keep ``full`` on disk (memory-mapped,
        not cached; it is only read to rerank). ``code``: how ``coarse`` is stored: ``"float"``
        (default), ``"sq8"``, ``"binary"``, ``"binary1.5"``, ``"binary2"``, ``"turbo4"``, ``"turbo2"``
        or ``"turbo1"`` (the engine has them all), pinned in RAM and searched with the engine's
        rescoring off (``rescore=True`` turns it on, with optional ``oversampling``); the float
        coarse vectors then stay on disk unless ``coarse_on_disk=False``, and every segment is
        quantized on optimize (``indexing_threshold_kb`` defaults to 1). ``coarse_quantization``
        (None, ``"int8"``, ``"binary"``) is the older name of ``code`` (deprecated until 0.2).
        ``hnsw_m``, ``ef_construction`` (default 100): the coarse graph; ``ef_search``: search breadth
        (at least ``candidates`` is always used); ``hnsw_ef_construct`` and ``hnsw_ef``, their former
        names, still work until 0.2, with a warning. ``indexing_threshold_kb``: segments larger
        than this get their HNSW graph on optimize (default: the engine's own, about 10 MB of vectors;
        smaller segments are scanned, which is as fast at that size). ``max_search_threads``: the
        engine's search pool (default: one per CPU). ``wal``: keep a write-ahead log (off by default:
        the index is made durable by ``save``, and the working copy is deleted on close anyway).
        """
        _check_choice("metric", metric, METRICS)
        _check_choice("index", index, INDEX_TYPES)
        code = resolve_code(code, coarse_quantization, "qdrant-edge")
        ef_construction = renamed_option("ef_construction", ef_construction, hnsw_ef_construct)
        ef_search = renamed_option("ef_search", ef_search, hnsw_ef)
        coarse_dim = check_positive_int(coarse_dim, "coarse_dim")
        full_dim = check_positive_int(full_dim, "full_dim", minimum=0)  # 0: prefix only, `coarse` alone
        if full_dim and coarse_dim > full_dim:
            raise InputError(f"coarse_dim: {coarse_dim} exceeds full_dim {full_dim}")
        params: dict[str, Any] = {
            "coarse_dim": coarse_dim,
            "full_dim": full_dim,
            "metric": metric,
            "index": index,
            "coarse_quantization": quantization_family(code),
            "code": code,
            "coarse_on_disk": code != "float" if coarse_on_disk is None else bool(coarse_on_disk),
            "on_disk": bool(on_disk),
            "rescore": bool(rescore),
            "oversampling": None if oversampling is None else float(oversampling),
            "hnsw_m": check_positive_int(hnsw_m, "hnsw_m", minimum=2),
            # saved under Qdrant's own names: the manifest section's keys are the file format
            "hnsw_ef_construct": check_positive_int(
                100 if ef_construction is None else ef_construction, "ef_construction", minimum=4
            ),
            "hnsw_ef": None if ef_search is None else check_positive_int(ef_search, "ef_search"),
            "indexing_threshold_kb": (
                None
                if indexing_threshold_kb is None
                else check_positive_int(indexing_threshold_kb, "indexing_threshold_kb")
            ),
            "wal": bool(wal),
        }
        if oversampling is not None and params["oversampling"] < 1:
            raise InputError(f"oversampling: must be >= 1, got {oversampling!r}")
        if max_search_threads is not None:
            max_search_threads = check_positive_int(max_search_threads, "max_search_threads")
        live = _claim(path)
        try:
            config = _edge_config(params, max_search_threads)
            live.shard = _call(lambda: qe.EdgeShard.create(str(live.path), config), "creating the shard", live.path)
        except BaseException:
            live.close()
            raise
        return cls(live, params, upload_batch_size=upload_batch_size, quiet=quiet)

    @classmethod
    def open(
        cls,
        directory: Path,
        section: dict[str, Any],
        *,
        path: str | os.PathLike[str] | None = None,
        max_search_threads: int | None = None,
        ef_search: int | None = None,
        rescore: bool | None = None,
        oversampling: float | None = None,
        upload_batch_size: int = 1024,
        quiet: bool = False,
        hnsw_ef: int | None = None,
    ) -> QdrantEdgeBackend:
        """Open a copy of the shard :meth:`save` wrote into ``directory`` (the saved files are never modified).

        ``path``: where the working copy goes (absent or empty; default a temporary directory).
        ``max_search_threads``, ``ef_search`` (``hnsw_ef``, its former name, until 0.2), ``rescore``,
        ``oversampling`` override the saved values.
        """
        ef_search = renamed_option("ef_search", ef_search, hnsw_ef)
        directory = Path(directory)
        if section.get("format") != SECTION_FORMAT or section.get("format_version") != SECTION_VERSION:
            raise FormatError(
                f"{directory}: qdrant-edge backend section of format {section.get('format')!r} version "
                f"{section.get('format_version')!r} is not supported by this version of matryoshka-index"
            )
        try:
            params = {k: section[k] for k in ("coarse_dim", "full_dim", "metric", "index", "coarse_quantization")}
            params.update(
                code=_code_of(section),
                coarse_on_disk=bool(section.get("coarse_on_disk", False)),
                on_disk=bool(section.get("on_disk", False)),
                rescore=bool(section.get("rescore", True)),
                oversampling=section.get("oversampling"),
                hnsw_m=int(section.get("hnsw_m", 16)),
                hnsw_ef_construct=int(section.get("hnsw_ef_construct", 100)),
                hnsw_ef=section.get("hnsw_ef"),
                indexing_threshold_kb=section.get("indexing_threshold_kb"),
                wal=bool(section.get("wal", False)),
            )
            saved = directory / str(section.get("shard", SHARD_DIR))
        except (KeyError, TypeError, ValueError):
            raise FormatError(f"{directory}: the qdrant-edge backend section of the manifest is incomplete") from None
        if ef_search is not None:
            params["hnsw_ef"] = check_positive_int(ef_search, "ef_search")
        if rescore is not None:
            params["rescore"] = bool(rescore)
        if oversampling is not None:
            params["oversampling"] = float(oversampling)
        if max_search_threads is not None:
            max_search_threads = check_positive_int(max_search_threads, "max_search_threads")
        _check_saved_shard(saved, params)
        live = _claim(path)
        try:
            _copy_shard(saved, live.path)
            config = _edge_config(params, max_search_threads)
            live.shard = _call(lambda: qe.EdgeShard.load(str(live.path), config), "opening the shard", live.path)
        except BaseException:
            live.close()
            raise
        backend = cls(live, params, upload_batch_size=upload_batch_size, quiet=quiet)
        if "points" in section and len(backend) != int(section["points"]):
            backend.close()
            raise FormatError(
                f"{saved}: the shard holds a different number of points than the manifest says; the index is corrupt"
            )
        return backend

    # ---------------------------------------------------------------------------- lifecycle
    @property
    def path(self) -> Path:
        """The directory of the live (working) shard."""
        return self._live.path

    @property
    def shard(self) -> Any:
        """The open ``qdrant_edge.EdgeShard`` (for advanced use: payload indexes, facets, ...)."""
        if self._live.shard is None:
            raise InputError("qdrant-edge backend: the shard is closed")
        return self._live.shard

    def _call(self, fn: Callable[[Any], T], what: str) -> T:
        shard = self.shard
        return _call(lambda: fn(shard), what, self.path)

    def optimize(self) -> bool:
        """Run the engine's optimizers now (build HNSW graphs and quantized vectors, merge and vacuum
        segments); returns whether anything changed. Searches run it themselves after changes."""
        with self._optimize_lock:
            changed = bool(self._call(lambda s: s.optimize(), "optimizing the shard"))
            self._dirty = False
            return changed

    def _ensure_optimized(self) -> None:
        if self._dirty:
            with self._optimize_lock:
                if self._dirty:  # another thread may have just done it
                    self._call(lambda s: s.optimize(), "optimizing the shard")
                    self._dirty = False

    # ---------------------------------------------------------------------------- protocol
    def __len__(self) -> int:
        return int(self._call(lambda s: s.count(qe.CountRequest(exact=True)), "counting points"))

    def ids(self) -> np.ndarray:
        out: list[int] = []
        offset = None
        while True:
            records, offset = self._call(
                lambda s, o=offset: s.scroll(qe.ScrollRequest(offset=o, limit=_ID_BATCH, with_payload=False)),
                "listing point ids",
            )
            out.extend(int(r.id) for r in records)
            if offset is None:
                return np.asarray(out, dtype=np.int64)

    def contains(self, ids: np.ndarray) -> np.ndarray:
        ids = np.asarray(ids, dtype=np.int64).ravel()
        present: set[int] = set()
        valid = [int(i) for i in ids if i >= 0]
        for start in range(0, len(valid), _ID_BATCH):
            chunk = valid[start : start + _ID_BATCH]
            got = self._call(lambda s, c=chunk: s.retrieve(c, False, False), "looking up ids")
            present.update(int(r.id) for r in got)
        return membership(ids, present)

    def add(self, ids: np.ndarray, coarse: np.ndarray, full: np.ndarray, payloads: Payloads = None) -> None:
        ids, coarse, full = add_inputs(ids, coarse, full, payloads, self.coarse_dim, self.full_dim)
        if len(ids) and int(ids.min()) < 0:
            raise InputError("ids: the qdrant-edge backend stores ids >= 0")
        n, bs = len(ids), self.upload_batch_size
        starts = range(0, n, bs)
        with progress(total=n, desc="adding to qdrant-edge", unit="pt", quiet=self.quiet or len(starts) < 4) as bar:
            for start in starts:
                stop = min(start + bs, n)
                points = [
                    qe.Point(
                        int(ids[r]),
                        {COARSE: coarse[r], FULL: full[r]} if self.full_dim else {COARSE: coarse[r]},
                        None if payloads is None else (payloads[r] or None),
                    )
                    for r in range(start, stop)
                ]
                self._dirty = True
                self._call(lambda s, p=points: s.update(qe.UpdateOperation.upsert_points(p)), "adding points")
                bar.update(stop - start)

    def remove(self, ids: np.ndarray) -> int:
        ids = np.asarray(ids, dtype=np.int64).ravel()
        present = sorted({int(i) for i in ids[self.contains(ids)]})
        for start in range(0, len(present), _ID_BATCH):
            chunk = present[start : start + _ID_BATCH]
            self._dirty = True
            self._call(lambda s, c=chunk: s.update(qe.UpdateOperation.delete_points(c)), "deleting points")
        return len(present)

    # ---------------------------------------------------------------------------- search
    def _quant_params(self) -> Any:
        if self.code == "float":
            return None
        return qe.QuantizationSearchParams(rescore=self.rescore, oversampling=self.oversampling)

    def _coarse_params(self, candidates: int) -> Any:
        if self.index == "flat":
            # the engine's exact search reads the floats and ignores the codes; a graph-less (m=0) plain
            # search scans the codes, which is what a code without rescoring asks for
            exact = self.code == "float" or self.rescore
            return qe.SearchParams(exact=exact, quantization=self._quant_params())
        return qe.SearchParams(
            hnsw_ef=max(int(candidates), int(self.ef_search or 0)), quantization=self._quant_params()
        )

    def _run(self, requests: list[Any], k: int, what: str) -> tuple[np.ndarray, np.ndarray]:
        self._ensure_optimized()
        scores, ids = empty_results(len(requests), k)
        for start in range(0, len(requests), _QUERY_BATCH):
            chunk = requests[start : start + _QUERY_BATCH]
            hits = self._call(lambda s, c=chunk: s.query_batch(qe.QueryBatchRequest(c)), what)
            for row, points in enumerate(hits, start=start):
                for col, p in enumerate(points[:k]):
                    scores[row, col] = p.score
                    ids[row, col] = p.id
        return scores, ids

    def search(
        self, coarse_queries: np.ndarray, full_queries: np.ndarray, k: int, candidates: int, query_filter: Any = None
    ) -> Results:
        """Prefetch ``candidates`` on ``coarse``, rerank them on ``full``; ``(scores, ids)`` best first.

        ``query_filter`` (a :class:`qdrant_edge.Filter`, or a :class:`qdrant_client.models.Filter` or
        its dict form, translated) applies to both stages, so the candidates are drawn from matching
        points only.
        """
        coarse_queries, full_queries = query_pairs(coarse_queries, full_queries)
        k = int(k)
        candidates = max(int(candidates), k)
        from .edge_filters import to_edge_filter  # needs qdrant_edge, imported above

        flt = to_edge_filter(query_filter)
        params = self._coarse_params(candidates)
        if not self.full_dim:  # prefix only: the coarse query itself, searched as broadly as the candidates
            requests = [
                qe.QueryRequest(
                    limit=k, query=qe.Query.Nearest(cq, using=COARSE), params=params, filter=flt, with_payload=False
                )
                for cq in coarse_queries
            ]
            return self._run(requests, k, "a search")
        requests = [
            qe.QueryRequest(
                limit=k,
                query=qe.Query.Nearest(fq, using=FULL),
                prefetches=[
                    qe.Prefetch(limit=candidates, query=qe.Query.Nearest(cq, using=COARSE), params=params, filter=flt)
                ],
                filter=flt,
                with_payload=False,
            )
            for cq, fq in zip(coarse_queries, full_queries, strict=True)
        ]
        return self._run(requests, k, "a search")

    def coarse_search(self, coarse_queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        k = int(k)
        params = self._coarse_params(k)
        requests = [
            qe.QueryRequest(limit=k, query=qe.Query.Nearest(q, using=COARSE), params=params, with_payload=False)
            for q in np.asarray(coarse_queries, dtype=np.float32)
        ]
        return self._run(requests, k, "a coarse search")

    def exact_search(self, full_queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Brute force over ``full`` (exact, unquantized): the ground truth."""
        if not self.full_dim:
            raise InputError(
                "exact_search: this qdrant-edge index keeps no full vectors (prefix only); exact full-dimension "
                "search needs the original vectors"
            )
        k = int(k)
        params = qe.SearchParams(exact=True, quantization=qe.QuantizationSearchParams(ignore=True))
        requests = [
            qe.QueryRequest(limit=k, query=qe.Query.Nearest(q, using=FULL), params=params, with_payload=False)
            for q in np.asarray(full_queries, dtype=np.float32)
        ]
        return self._run(requests, k, "an exact search")

    def external_ids(self, handles: np.ndarray | Sequence[int]) -> list[int | str | None]:
        """The point id of each handle as stored (the shard stores int64 ids >= 0 as they are); -1 -> None."""
        return [None if i == EMPTY_ID else int(i) for i in np.asarray(handles, dtype=np.int64).ravel().tolist()]

    def payloads(self, ids: np.ndarray | Sequence[int]) -> list[dict[str, Any] | None]:
        """The stored payload of each id (None where the id is -1, absent, or has no payload)."""
        arr = [int(i) for i in np.asarray(ids, dtype=np.int64).ravel()]
        got = {}
        for start in range(0, len(arr), _ID_BATCH):
            chunk = [i for i in arr[start : start + _ID_BATCH] if i >= 0]
            for r in self._call(lambda s, c=chunk: s.retrieve(c, True, False), "reading payloads"):
                got[int(r.id)] = r.payload or None
        return [got.get(i) for i in arr]

    # ---------------------------------------------------------------------------- persistence
    def save(self, directory: Path) -> dict[str, Any]:
        """Build pending indexes, flush, and copy the shard into ``directory/qdrant_edge``.

        The copy is taken with the shard open (concurrent searches go on): the engine has no
        background threads and searches write nothing, so after ``flush`` the files are quiescent.
        """
        self._ensure_optimized()
        self._call(lambda s: s.flush(), "flushing the shard")
        dest = Path(directory) / SHARD_DIR
        try:
            _copy_shard(self.path, dest)
        except OSError as exc:
            raise BackendError(f"{dest}: cannot copy the qdrant-edge shard ({exc.strerror or exc})") from None
        return {
            "format": SECTION_FORMAT,
            "format_version": SECTION_VERSION,
            "kind": self.kind,
            "shard": SHARD_DIR,
            "points": len(self),
            "qdrant_edge_version": edge_version(),
            **self._params,
        }

    def coarse_memory(self) -> dict[str, Any]:
        """Resident bytes a vector of the coarse stage, measured from the shard's files where they exist.

        The engine writes the codes (``quantized.data``, pinned in RAM), the HNSW links and the id
        tracker as files it reads whole: their sizes over the point count are what a vector keeps
        resident (after a flush, so that replaced segments are gone). The float coarse vectors count
        unless they are on disk (a code without rescoring never reads them). ``coarse_code_coverage``:
        the share of points whose codes exist now; ``coarse_code_applied``: whether a search scans
        codes for every point (it optimizes pending changes first, and with the default
        ``indexing_threshold_kb`` every segment then gets its codes). With an optimize pending the
        code bytes are the engine's layout (:func:`~.common.qdrant_code_bytes`), not yet the files'.
        """
        self._call(lambda s: s.flush(), "flushing the shard")
        n = int(self._call(lambda s: s.info(), "reading shard info").points_count)
        estimate = coarse_memory(self.code, self.coarse_dim, self.index, self._params["hnsw_m"], self.coarse_on_disk)
        segments = self.path / "segments"

        def total(pattern: str) -> int:
            return sum(f.stat().st_size for f in segments.glob(pattern) if f.is_file())

        codes = total(f"*/vector_storage-{COARSE}/quantized.data")
        links = total(f"*/vector_index-{COARSE}/*.bin")
        ids = total("*/id_tracker.*")
        if not n:
            return {**estimate, "coarse_code_applied": self.code == "float"}
        per_point = qdrant_code_bytes(self.code, self.coarse_dim)
        coverage = 1.0 if self.code == "float" else min(1.0, codes / (n * per_point))
        pending = self._dirty and self._params.get("indexing_threshold_kb") is None
        applied = coverage >= 1.0 or pending
        code_b = 0.0 if self.code == "float" else per_point if coverage < 1.0 and pending else round(codes / n, 2)
        floats = estimate["coarse_float_bytes_per_vector_resident"] if applied else 4 * self.coarse_dim
        out = {
            "coarse_code_coverage": round(coverage, 4),
            "coarse_code_bytes_per_vector": code_b,
            "coarse_float_bytes_per_vector_resident": floats,
            "coarse_links_bytes_per_vector": round(links / n, 2),
            "id_bytes_per_vector": round(ids / n, 2) if ids else estimate["id_bytes_per_vector"],
            "coarse_code_applied": applied,
            "coarse_resident_measured_as": "measured: sizes of the shard's code, link and id-tracker files",
        }
        parts = ("coarse_code_bytes_per_vector", "coarse_float_bytes_per_vector_resident")
        resident = sum(out[k] for k in (*parts, "coarse_links_bytes_per_vector", "id_bytes_per_vector"))
        out["coarse_resident_bytes_per_vector"] = round(resident, 2)
        return out

    def info(self) -> dict[str, Any]:
        """Facts for ``mindex info``; disk bytes are what the working shard occupies now (segments an
        optimize replaced are deleted at the next flush or save)."""
        memory = self.coarse_memory()
        si = self._call(lambda s: s.info(), "reading shard info")
        n = int(si.points_count)
        rows = max(1, n)
        full_bytes = self.full_dim * 4
        ram = memory["coarse_resident_bytes_per_vector"] + (0 if self.on_disk else full_bytes)
        disk = allocated_bytes(self.path)
        return {
            "backend": self.kind,
            "qdrant_edge_version": edge_version(),
            "device": "cpu (qdrant-edge, in process)",
            "path": str(self.path),
            "count": n,
            "segments": int(si.segments_count),
            "indexed_vectors": int(si.indexed_vectors_count),
            "optimize_pending": self._dirty,
            "coarse_index": self.index,
            "coarse_quantization": self.coarse_quantization,
            "code": self.code,
            "coarse_code": self.code,
            "coarse_rescore": self.rescore,
            "coarse_on_disk": self.coarse_on_disk,
            **memory,
            "metric": self.metric,
            "coarse_dim": self.coarse_dim,
            "full_dim": self.full_dim,
            # the coarse stage (codes, links, ids; floats unless on disk) + full unless on disk; payloads on top
            "ram_bytes_per_vector": float(ram),
            "disk_bytes_per_vector": round(disk / rows, 1),
            "full_vectors": "none (prefix only: rerank=None)"
            if not self.full_dim
            else "disk (memory-mapped, not cached)"
            if self.on_disk
            else "memory-mapped, cached in RAM",
            "params": dict(self._params),
        }


def _check_saved_shard(saved: Path, params: dict[str, Any]) -> None:
    """The saved shard exists and its vector sizes are the manifest's (one FormatError line otherwise)."""
    config_path = saved / _CONFIG_FILE
    if not config_path.is_file():
        raise FormatError(f"{saved}: no qdrant-edge shard here ({_CONFIG_FILE} missing); the index is incomplete")
    try:
        vectors = json.loads(config_path.read_text()).get("vectors") or {}
        sizes = {name: int(v["size"]) for name, v in vectors.items()}
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        raise FormatError(f"{config_path}: not a readable qdrant-edge shard configuration") from None
    expected = {COARSE: int(params["coarse_dim"])}
    if int(params["full_dim"]):  # 0: prefix only
        expected[FULL] = int(params["full_dim"])
    if sizes != expected:
        raise FormatError(
            f"{saved}: the shard stores vectors {sizes} but the manifest says {expected}; the index is corrupt"
        )


__all__ = ["QdrantEdgeBackend", "copy_shard", "edge_version"]
