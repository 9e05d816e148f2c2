"""Memory-map advice: tell the kernel how a memory-mapped array is read, so a corpus larger than RAM
streams through a bounded window (:func:`stream_rows`) and the rerank's gathers read one page each."""

from __future__ import annotations

import mmap
from collections.abc import Iterator
from typing import Any

import numpy as np

_PAGE = mmap.PAGESIZE


def _mapping(arr: np.ndarray) -> tuple[mmap.mmap, int] | None:
    """The ``mmap`` under ``arr`` (a memmap or a view of one) and its start address, else None."""
    mm = getattr(arr, "_mmap", None)
    base: Any = arr
    while mm is None and base is not None:
        if isinstance(base, mmap.mmap):
            mm = base
            break
        base = getattr(base, "base", None)
    if not isinstance(mm, mmap.mmap) or mm.closed:
        return None
    try:
        start = np.frombuffer(mm, dtype=np.uint8, count=1).ctypes.data if len(mm) else 0
    except (ValueError, TypeError):
        return None
    return mm, start


def _advise(arr: np.ndarray, option: int | None, lo: int | None = None, hi: int | None = None) -> bool:
    """``madvise`` on the pages of rows ``lo:hi`` of ``arr`` (all rows when None); False when not possible."""
    if option is None or not hasattr(mmap.mmap, "madvise") or arr.ndim == 0 or not len(arr):
        return False
    found = _mapping(arr)
    if found is None:
        return False
    mm, base = found
    n = len(arr)
    lo = 0 if lo is None else max(0, min(lo, n))
    hi = n if hi is None else max(lo, min(hi, n))
    stride = arr.strides[0]
    if hi <= lo or stride <= 0:
        return False
    first = arr.ctypes.data - base + lo * stride
    last = arr.ctypes.data - base + (hi - 1) * stride + arr[0].nbytes
    begin = (first // _PAGE) * _PAGE
    end = min(len(mm), -(-last // _PAGE) * _PAGE)
    if end <= begin:
        return False
    try:
        mm.madvise(option, begin, end - begin)
    except (OSError, ValueError):
        return False
    return True


def advise_sequential(arr: np.ndarray) -> bool:
    """Tell the kernel ``arr``'s mapping is read front to back once (read-ahead, early reclaim)."""
    return _advise(arr, getattr(mmap, "MADV_SEQUENTIAL", None))


def advise_random(arr: np.ndarray) -> bool:
    """Tell the kernel ``arr``'s mapping is read at random rows (the rerank's gathers): no read-ahead,
    so each candidate costs one page, not a read-ahead window of pages nobody asked for."""
    return _advise(arr, getattr(mmap, "MADV_RANDOM", None))


def advise_normal(arr: np.ndarray) -> bool:
    return _advise(arr, getattr(mmap, "MADV_NORMAL", None))


def release_rows(arr: np.ndarray, start: int, stop: int) -> bool:
    """Drop rows ``start:stop`` of a memory-mapped ``arr`` from this process's memory (``MADV_DONTNEED``).

    For a read-only or file-backed shared mapping nothing is lost: the pages are read again from the
    file if touched later. Used behind a streaming pass so its resident window stays bounded.
    """
    return _advise(arr, getattr(mmap, "MADV_DONTNEED", None), start, stop)


def stream_rows(arr: np.ndarray, chunk_rows: int, *, release: bool = True) -> Iterator[tuple[int, np.ndarray]]:
    """``(start, window)`` over the rows of ``arr`` in order; for a memory map, advised sequential and each
    window dropped from memory once the consumer moves past it (bounded resident memory)."""
    n = len(arr) if arr.ndim else 0
    mapped = _mapping(arr) is not None
    if mapped:
        advise_sequential(arr)
    try:
        for start in range(0, n, chunk_rows):
            stop = min(start + chunk_rows, n)
            yield start, arr[start:stop]
            if mapped and release:
                release_rows(arr, start, stop)
    finally:
        if mapped:
            advise_normal(arr)
