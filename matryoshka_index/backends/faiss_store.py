"""The FAISS backend's full-vector store: a read-only base (a loaded ``full.npy``) then an append-only spill file.

Rows are positions in insertion order (see :mod:`.faiss_backend`); the spill file grows by doubling, its blocks
reserved before ordinary writes fill them (read back through a read-only map), so a full disk is a one-line error,
not SIGBUS.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ..errors import StorageError
from ..storage import advise_random, disk_error, owned_temp_dir, preallocate, remove_temp_dir, stream_rows

__all__ = ["CHUNK_ROWS", "FullStore", "SpillFile"]

CHUNK_ROWS = 65536


class SpillFile:
    """An append-only float32 matrix in a raw temporary file; capacity doubles as it grows.

    The directory is owned (:func:`~matryoshka_index.storage.owned_temp_dir`: a later run sweeps it if
    this process is killed) and lives in ``directory``, else ``$MINDEX_TMPDIR``, else the system temp
    folder. Rows are written like ``full.npy`` (:func:`~matryoshka_index.storage.write_npy`): ordinary
    positional writes into space each growth reserved first (:func:`~matryoshka_index.storage.preallocate`,
    which checks the free space where the file system cannot reserve it), so a full disk is a one-line
    StorageError, never SIGBUS. The rows are read back through a read-only map advised random-access
    (``MADV_RANDOM``): nothing is ever written through a map.
    """

    def __init__(self, dim: int, directory: str | None) -> None:
        self.dim = dim
        self.dir = str(owned_temp_dir("mindex-spill-", directory))
        self.path = os.path.join(self.dir, "full.f32")
        self.n = 0
        self._cap = 0
        self._mm: np.ndarray | None = None
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        # The descriptor and the directory go away with this object (or at interpreter exit), never left in /tmp.
        self._finalizer = weakref.finalize(self, _close_and_remove, self._fd, self.dir)

    def append(self, x: np.ndarray) -> None:
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"SpillFile.append: rows of shape (n, {self.dim}) expected, got {x.shape}")
        need = self.n + len(x)
        if need > self._cap:
            self._grow(need)
        try:
            _pwrite_all(self._fd, memoryview(x).cast("B"), self.n * self.dim * 4)
        except OSError as exc:
            raise (disk_error(exc, self.path) or exc) from None
        self.n = need

    def _grow(self, need: int) -> None:
        cap = max(need, 2 * self._cap, 1024)
        try:
            preallocate(self._fd, cap * self.dim * 4, self.path)
        except StorageError:  # the doubling does not fit: the rows themselves may still
            cap = need
            preallocate(self._fd, cap * self.dim * 4, self.path)
        try:
            os.ftruncate(self._fd, cap * self.dim * 4)  # no-op where fallocate worked; sizes it where not
        except OSError as exc:
            raise (disk_error(exc, self.path) or exc) from None
        # Read-only: the file only grows, so views of an earlier, shorter map stay valid.
        self._mm = np.memmap(self.path, dtype=np.float32, mode="r", shape=(cap, self.dim))
        # Read back at random rows (the rerank's gathers, the calibration's): no read-ahead, so a
        # spill file larger than the memory left does not thrash (benchmarks/results/memory_limit.md).
        advise_random(self._mm)
        self._cap = cap

    @property
    def array(self) -> np.ndarray:
        """The rows written so far, read-only (a view of the map)."""
        if self._mm is None:
            return np.empty((0, self.dim), dtype=np.float32)
        return self._mm[: self.n]

    def close(self) -> None:
        self._mm = None
        self._finalizer()


def _pwrite_all(fd: int, data: memoryview, offset: int) -> None:
    while data:  # a write may be short
        done = os.pwrite(fd, data, offset)
        data, offset = data[done:], offset + done


def _close_and_remove(fd: int, directory: str) -> None:
    try:
        os.close(fd)
    except OSError:
        pass
    remove_temp_dir(directory)


class FullStore:
    """Full vectors by row: a read-only base (a loaded index's ``full.npy``) then a spill file for later rows."""

    def __init__(self, dim: int, base: np.ndarray | None, base_path: Path | None, spill_dir: str | None) -> None:
        self.dim = dim
        self.base = base if base is not None else np.empty((0, dim), dtype=np.float32)
        self.base_path = base_path
        self.spill_dir = spill_dir
        self.spill: SpillFile | None = None

    def __len__(self) -> int:
        return len(self.base) + (self.spill.n if self.spill is not None else 0)

    def append(self, x: np.ndarray) -> None:
        if self.dim == 0:  # prefix only: rows without vectors, no file (an (n, 0) array holds no bytes)
            self.base = np.empty((len(self) + len(x), 0), dtype=np.float32)
            return
        if self.spill is None:
            self.spill = SpillFile(self.dim, self.spill_dir)
        self.spill.append(x)

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
