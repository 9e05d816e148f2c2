"""Vector files: ``.npy`` (read memory-mapped, written with ordinary I/O after the space is reserved)
and ``.fvecs``.

Vectors are written with ordinary ``write`` calls after ``posix_fallocate`` reserved their space, never
through a writable memory map: a full disk then raises ``ENOSPC`` (a one-line :class:`StorageError`)
instead of killing the process with ``SIGBUS``. Large arrays are streamed in bounded windows
(:func:`~matryoshka_index.storage.mmaps.stream_rows`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from ..errors import InputError
from .atomic import atomic_write_bytes, temp_file_beside
from .disk import fsync_dir, preallocate, resolve_output
from .mmaps import stream_rows


def load_vectors(path: str | os.PathLike[str], *, mmap: bool = True) -> np.ndarray:
    """Load embeddings from ``.npy`` (memory-mapped, float16/32 kept as stored) or ``.fvecs``.

    Raises :class:`InputError` with one line for a missing file, an unknown extension or a corrupt
    file. Values are not validated here; pass the result through ``check_embeddings``.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        try:
            arr = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
        except ValueError:
            # numpy's own message here suggests allow_pickle; we never load pickled objects.
            raise InputError(
                f"{path}: cannot be read as .npy (not written by np.save, or it holds Python objects, "
                "which are never loaded); save embeddings with np.save(path, array)"
            ) from None
        except Exception as exc:
            raise InputError(f"{path}: cannot be read as .npy ({exc.__class__.__name__}: {exc})") from None
        return arr
    if suffix == ".fvecs":
        return read_fvecs(path, mmap=mmap)
    raise InputError(f"{path}: unknown vector file type {suffix!r}; use .npy or .fvecs")


def read_fvecs(path: str | os.PathLike[str], *, mmap: bool = True) -> np.ndarray:
    """Read the ``.fvecs`` format (each row: int32 dim, then dim float32), as a strided view."""
    path = Path(path)
    size = path.stat().st_size
    if size < 4:
        raise InputError(f"{path}: too small to be an .fvecs file")
    raw = np.memmap(path, dtype=np.int32, mode="r") if mmap else np.fromfile(path, dtype=np.int32)
    d = int(raw[0])
    if d <= 0 or size % (4 * (d + 1)) != 0:
        raise InputError(f"{path}: corrupt .fvecs file (header dim {d} does not divide the file size {size})")
    rows = raw.reshape(-1, d + 1)
    if not (rows[:, 0] == d).all():
        raise InputError(f"{path}: corrupt .fvecs file (rows of different dimensions)")
    return rows[:, 1:].view(np.float32)


def write_fvecs(path: str | os.PathLike[str], x: np.ndarray) -> None:
    x = np.ascontiguousarray(x, dtype=np.float32)
    n, d = x.shape
    out = np.empty((n, d + 1), dtype=np.int32)
    out[:, 0] = d
    out[:, 1:] = x.view(np.int32)
    atomic_write_bytes(path, out.tobytes())


def _npy_header(shape: tuple[int, ...], dtype: np.dtype) -> bytes:
    import io

    buf = io.BytesIO()
    d = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": tuple(shape)}
    np.lib.format.write_array_header_1_0(buf, d)
    return buf.getvalue()


def npy_bytes(shape: tuple[int, ...], dtype: object) -> int:
    """Size on disk of a ``.npy`` of this shape and dtype (header included)."""
    dt = np.dtype(dtype)
    return len(_npy_header(tuple(shape), dt)) + int(np.prod(shape, dtype=np.int64)) * dt.itemsize


def write_npy(
    path: str | os.PathLike[str], shape: tuple[int, ...], dtype: object, chunks: Iterable[np.ndarray]
) -> None:
    """Write a C-order ``.npy`` of ``shape``/``dtype`` from row ``chunks``, atomically, with ordinary I/O.

    The whole size is reserved first (``posix_fallocate``), so a full disk fails at once with one
    :class:`StorageError` line and no partial file is left; nothing is written through a memory map
    (a write fault there is SIGBUS, which kills the process). Use it in place of
    ``np.lib.format.open_memmap(mode="w+")`` for anything large.
    """
    dt = np.dtype(dtype)
    if dt.hasobject:
        raise InputError(f"{path}: object arrays are never written (no pickle)")
    shape = tuple(int(v) for v in shape)
    path = resolve_output(path)
    header = _npy_header(shape, dt)
    total = int(np.prod(shape, dtype=np.int64)) * dt.itemsize
    with temp_file_beside(path) as (fd, tmp):
        try:
            preallocate(fd, len(header) + total, path)
            write_all(fd, header)
            written = 0
            for chunk in chunks:
                block = np.ascontiguousarray(chunk, dtype=dt)
                write_all(fd, memoryview(block).cast("B"))
                written += block.nbytes
            if written != total:
                raise ValueError(f"write_npy: got {written} bytes of data for shape {shape} ({total} expected)")
            os.fsync(fd)
            os.replace(tmp, path)  # before the descriptor (and its lock) is closed
        finally:
            os.close(fd)
    fsync_dir(path.parent)


def write_all(fd: int, data: bytes | memoryview, offset: int | None = None) -> None:
    """Write every byte of ``data`` to ``fd``: at its current position, or from byte ``offset`` (``pwrite``)."""
    view = memoryview(data)
    while view:  # a write may be short
        done = os.write(fd, view) if offset is None else os.pwrite(fd, view, offset)
        view = view[done:]
        if offset is not None:
            offset += done


def save_npy(path: str | os.PathLike[str], arr: np.ndarray) -> None:
    """Save a .npy atomically (streams a memmap in bounded windows rather than loading it; see :func:`write_npy`)."""
    arr = np.asarray(arr)
    if arr.ndim == 0:
        write_npy(path, (), arr.dtype, [arr.reshape(1)])
        return
    row = arr.itemsize * int(np.prod(arr.shape[1:], dtype=np.int64))
    step = max(1, (1 << 24) // max(1, row))
    write_npy(path, arr.shape, arr.dtype, (w for _, w in stream_rows(arr, step)))
