"""The FAISS backend's full-vector store: a read-only base (a loaded ``full.npy``) then an append-only spill file.

Rows are positions in insertion order (see :mod:`.faiss_backend`); the spill file grows by doubling, its blocks
reserved before ordinary writes fill them (read back through a read-only map), so a full disk is a one-line error,
not SIGBUS.

A rerank first asks the kernel for the pages of a loaded index's candidate rows (:meth:`FullStore.prefetch`:
``MADV_WILLNEED`` on each run of pages of the sorted unique rows, up to 1,024 runs a system call through Linux's
``process_madvise``, else ``posix_fadvise(WILLNEED)`` a run at a time), so a cold disk gets every read of the
batch at once instead of one page fault at a time; ``MINDEX_RERANK_PREFETCH=0`` turns it off.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import sys
import weakref
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ..errors import StorageError
from ..storage import advise_random, disk_error, owned_temp_dir, preallocate, remove_temp_dir, stream_rows, write_all

__all__ = ["CHUNK_ROWS", "PREFETCH_BYTES", "FullStore", "SpillFile", "prefetch_enabled"]

CHUNK_ROWS = 65536
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def prefetch_enabled() -> bool:
    """Whether a rerank prefetches its candidate rows: on unless ``MINDEX_RERANK_PREFETCH`` is 0/false/off/no."""
    return os.environ.get("MINDEX_RERANK_PREFETCH", "1").strip().lower() not in ("0", "false", "off", "no")


# Pages one prefetch asks for at most: under a small memory cap (a container) a whole batch's candidate pages
# would evict each other before their gather and be read twice (benchmarks/results/out_of_ram.md).
PREFETCH_BYTES = 8 * 2**20
RESIDENT_SAMPLE = 8  # candidate rows whose pages are checked before a prefetch (all in memory: no prefetch)
_IOV_MAX = 1024  # UIO_MAXIOV: the most ranges one process_madvise call takes
_SYS_PIDFD_OPEN, _SYS_PROCESS_MADVISE = 434, 440  # one numbering on every Linux architecture since 5.1 (not alpha)


def _libc() -> ctypes.CDLL | None:
    """The C library (Linux), for ``mincore`` and ``syscall``; None elsewhere."""
    global _LIBC
    if _LIBC is None and sys.platform.startswith("linux"):
        try:
            _LIBC = ctypes.CDLL(None, use_errno=True)
            _LIBC.syscall.restype = ctypes.c_long
        except OSError:
            _LIBC = False
    return _LIBC or None


_LIBC: ctypes.CDLL | bool | None = None


class _VectoredAdvice:
    """``process_madvise(MADV_WILLNEED)`` on this process: many address ranges a system call (Linux >= 5.10);
    ``None`` from :meth:`get` where it is missing or refused, and then the caller advises range by range."""

    _instance: _VectoredAdvice | None = None
    _tried = False

    def __init__(self, libc: ctypes.CDLL, pidfd: int) -> None:
        self.libc, self.pidfd, self.pid = libc, pidfd, os.getpid()

    @classmethod
    def get(cls) -> _VectoredAdvice | None:
        if not cls._tried:
            cls._tried = True
            if sys.platform.startswith("linux") and hasattr(mmap, "MADV_WILLNEED"):
                libc = _libc()
                pidfd = libc.syscall(_SYS_PIDFD_OPEN, os.getpid(), 0) if libc is not None else -1
                if pidfd >= 0:
                    cls._instance = cls(libc, int(pidfd))
        if cls._instance is not None and cls._instance.pid != os.getpid():  # a fork: the pidfd is the parent's
            cls._instance, cls._tried = None, False
            return cls.get()
        return cls._instance

    def advise(self, iov: np.ndarray) -> bool:
        """``iov``: (n, 2) uint64 of (address, length), page-aligned; False where the kernel refused."""
        for s in range(0, len(iov), _IOV_MAX):
            part = np.ascontiguousarray(iov[s : s + _IOV_MAX])
            got = self.libc.syscall(
                _SYS_PROCESS_MADVISE, self.pidfd, ctypes.c_void_p(part.ctypes.data), ctypes.c_size_t(len(part)),
                mmap.MADV_WILLNEED, 0,
            )  # fmt: skip
            if got < 0:
                type(self)._instance = None  # refused here (seccomp, an old kernel): range by range from now on
                return False
        return True


def page_runs(offset: int, row_bytes: int, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(first page, page count)`` of each maximal run of file pages that ``rows`` touch (rows of ``row_bytes``
    from byte ``offset``), ascending; each page once, however many rows share it."""
    start = offset + np.unique(rows) * row_bytes
    first, last = start // _PAGE, (start + row_bytes - 1) // _PAGE
    # rows ascend, so first and last ascend: a run ends where the next row's first page is beyond its last plus one
    ends = np.flatnonzero(first[1:] > last[:-1] + 1)
    starts = np.concatenate(([0], ends + 1))
    ends = np.concatenate((ends, [len(start) - 1]))
    return first[starts], last[ends] - first[starts] + 1


class SpillFile:
    """An append-only matrix (float32, or float16 for a reduced-precision rerank copy) in a raw temporary file;
    capacity doubles as it grows.

    The directory is owned (:func:`~matryoshka_index.storage.owned_temp_dir`: a later run sweeps it if
    this process is killed) and lives in ``directory``, else ``$MINDEX_TMPDIR``, else the system temp
    folder. Rows are written like ``full.npy`` (:func:`~matryoshka_index.storage.write_npy`): ordinary
    positional writes into space each growth reserved first (:func:`~matryoshka_index.storage.preallocate`,
    which checks the free space where the file system cannot reserve it), so a full disk is a one-line
    StorageError, never SIGBUS. The rows are read back through a read-only map advised random-access
    (``MADV_RANDOM``): nothing is ever written through a map.
    """

    def __init__(self, dim: int, directory: str | None, dtype: np.dtype | type = np.float32) -> None:
        self.dim = dim
        self.dtype = np.dtype(dtype)
        self.dir = str(owned_temp_dir("mindex-spill-", directory))
        self.path = os.path.join(self.dir, "full.f32" if self.dtype == np.float32 else f"full.{self.dtype.str[1:]}")
        self.n = 0
        self._cap = 0
        self._mm: np.ndarray | None = None
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        # The descriptor and the directory go away with this object (or at interpreter exit), never left in /tmp.
        self._finalizer = weakref.finalize(self, _close_and_remove, self._fd, self.dir)

    def append(self, x: np.ndarray) -> None:
        x = np.ascontiguousarray(x, dtype=self.dtype)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"SpillFile.append: rows of shape (n, {self.dim}) expected, got {x.shape}")
        need = self.n + len(x)
        if need > self._cap:
            self._grow(need)
        try:
            write_all(self._fd, memoryview(x).cast("B"), self.n * self.dim * self.dtype.itemsize)
        except OSError as exc:
            raise (disk_error(exc, self.path) or exc) from None
        self.n = need

    def _grow(self, need: int) -> None:
        cap = max(need, 2 * self._cap, 1024)
        try:
            preallocate(self._fd, cap * self.dim * self.dtype.itemsize, self.path)
        except StorageError:  # the doubling does not fit: the rows themselves may still
            cap = need
            preallocate(self._fd, cap * self.dim * self.dtype.itemsize, self.path)
        try:
            os.ftruncate(
                self._fd, cap * self.dim * self.dtype.itemsize
            )  # no-op where fallocate worked; sizes it where not
        except OSError as exc:
            raise (disk_error(exc, self.path) or exc) from None
        # Read-only: the file only grows, so views of an earlier, shorter map stay valid.
        self._mm = np.memmap(self.path, dtype=self.dtype, mode="r", shape=(cap, self.dim))
        # Read back at random rows (the rerank's gathers, the calibration's): no read-ahead, so a
        # spill file larger than the memory left does not thrash (benchmarks/results/memory_limit.md).
        advise_random(self._mm)
        self._cap = cap

    @property
    def array(self) -> np.ndarray:
        """The rows written so far, read-only (a view of the map)."""
        if self._mm is None:
            return np.empty((0, self.dim), dtype=self.dtype)
        return self._mm[: self.n]

    def close(self) -> None:
        self._mm = None
        self._finalizer()


def _close_and_remove(fd: int, directory: str) -> None:
    try:
        os.close(fd)
    except OSError:
        pass
    remove_temp_dir(directory)


class FullStore:
    """Full vectors by row: a read-only base (a loaded index's ``full.npy``) then a spill file for later rows.

    ``dtype`` float16: the same rows at half precision (the reduced-precision rerank copy, ``rerank_f16.npy``)."""

    def __init__(
        self,
        dim: int,
        base: np.ndarray | None,
        base_path: Path | None,
        spill_dir: str | None,
        dtype: np.dtype | type = np.float32,
    ) -> None:
        self.dim = dim
        self.dtype = np.dtype(dtype)
        self.base = base if base is not None else np.empty((0, dim), dtype=self.dtype)
        self.base_path = base_path
        self.spill_dir = spill_dir
        self.spill: SpillFile | None = None
        self._fd: int | None = None  # base_path opened for the prefetch's advice, on first use
        self._fd_finalizer: weakref.finalize | None = None
        self.vectored = True  # prefetch through process_madvise where the kernel has it (False: one call a run)

    def __len__(self) -> int:
        return len(self.base) + (self.spill.n if self.spill is not None else 0)

    def append(self, x: np.ndarray) -> None:
        if self.dim == 0:  # prefix only: rows without vectors, no file (an (n, 0) array holds no bytes)
            self.base = np.empty((len(self) + len(x), 0), dtype=self.dtype)
            return
        if self.spill is None:
            self.spill = SpillFile(self.dim, self.spill_dir, self.dtype)
        self.spill.append(x)

    @property
    def _prefetchable(self) -> bool:  # a memory-mapped, contiguous base with rows: a loaded index's full.npy
        base = self.base
        mapped = isinstance(base, np.memmap) and base.flags.c_contiguous and self.base_path is not None
        return mapped and bool(self.dim) and bool(len(base)) and hasattr(os, "posix_fadvise")

    def prefetch_queries(self, candidates: int) -> int:
        """How many queries of ``candidates`` rows each one prefetch may cover (their pages within
        :data:`PREFETCH_BYTES`, at least 1); 0 where the base is not memory-mapped (nothing to prefetch)."""
        if not self._prefetchable:
            return 0
        base = self.base
        pages_per_row = 1 + (self.dim * base.itemsize - 1) // _PAGE + 1  # a row may straddle one more page
        return max(1, PREFETCH_BYTES // (max(1, candidates) * pages_per_row * _PAGE))

    def resident(self, rows: np.ndarray, sample: int = RESIDENT_SAMPLE) -> bool:
        """Whether the pages of ``sample`` of the base's ``rows`` (spread evenly) are all in memory already
        (``mincore``): a warm index, where a prefetch would only cost its system calls. False where unknown."""
        if not self._prefetchable:
            return False
        libc = _libc()
        if libc is None:
            return False
        base = self.base
        rows = np.asarray(rows, dtype=np.int64).ravel()
        rows = rows[(rows >= 0) & (rows < len(base))]
        if not len(rows):
            return True
        picked = rows[np.linspace(0, len(rows) - 1, min(sample, len(rows))).astype(np.int64)]
        row_bytes = self.dim * base.itemsize
        start = base.ctypes.data - int(base.offset)  # the address of file byte 0 (see prefetch)
        vec = ctypes.create_string_buffer(1)
        for r in picked.tolist():
            for page in {
                (int(base.offset) + r * row_bytes) // _PAGE,
                (int(base.offset) + (r + 1) * row_bytes - 1) // _PAGE,
            }:
                if libc.mincore(ctypes.c_void_p(start + page * _PAGE), ctypes.c_size_t(_PAGE), vec) != 0:
                    return False
                if not vec.raw[0] & 1:
                    return False
        return True

    def prefetch(self, rows: np.ndarray) -> int:
        """Ask the kernel to read the pages of the base's ``rows`` (any shape; negative and spill rows ignored)
        ahead, all at once (``MADV_WILLNEED``, asynchronous: see the module's docstring); the gather that follows then finds them
        in the page cache instead of faulting them in one at a time. Only for a memory-mapped base (a loaded
        index); returns the number of page runs advised (0: nothing to do, or not possible here)."""
        if not self._prefetchable:
            return 0
        base = self.base
        rows = np.asarray(rows, dtype=np.int64).ravel()
        rows = rows[(rows >= 0) & (rows < len(base))]
        if not len(rows):
            return 0
        if self._fd is None:
            try:
                self._fd = os.open(self.base_path, os.O_RDONLY)
            except OSError:
                return 0
            self._fd_finalizer = weakref.finalize(self, os.close, self._fd)
        firsts, counts = page_runs(int(base.offset), self.dim * base.itemsize, rows)
        vectored = _VectoredAdvice.get() if self.vectored else None
        if vectored is not None:
            # file byte b sits at address (data - offset + b): the map starts at a page-aligned file offset
            iov = np.empty((len(firsts), 2), dtype=np.uint64)
            iov[:, 0] = base.ctypes.data - int(base.offset) + firsts * _PAGE
            iov[:, 1] = counts * _PAGE
            if vectored.advise(iov):
                return len(firsts)
        advise, fd = os.posix_fadvise, self._fd
        for first, count in zip(firsts.tolist(), counts.tolist(), strict=True):
            advise(fd, first * _PAGE, count * _PAGE, os.POSIX_FADV_WILLNEED)
        return len(firsts)

    def segments(self) -> list[tuple[int, np.ndarray]]:
        """``(first row, array)`` for each non-empty part, in row order."""
        out = []
        if len(self.base):
            out.append((0, self.base))
        if self.spill is not None and self.spill.n:
            out.append((len(self.base), self.spill.array))
        return out

    def iter_chunks(self, chunk_rows: int = CHUNK_ROWS) -> Iterator[tuple[int, np.ndarray]]:
        # sequential, bounded windows (dropped once passed) for a save's or a rebuild's pass over a map,
        # then back to random-access advice for the rerank
        for start, arr in self.segments():
            for s, window in stream_rows(arr, chunk_rows):
                yield start + s, window
            advise_random(arr)

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
