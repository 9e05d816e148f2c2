"""Input checks shared by the Python API and the CLI.

One place decides what a valid embedding matrix or id array is, so every entry point fails the
same way: an :class:`~matryoshka_index.errors.InputError` whose one-line message names the argument,
says what is wrong and what to do. Checks stream over large (memory-mapped) arrays in chunks so a
corpus larger than RAM is never loaded whole just to be validated.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import TypeVar

import numpy as np

from .errors import InputError
from .storage import stream_rows

T = TypeVar("T")
_FLOAT_DTYPES = (np.float16, np.float32, np.float64)
_CHUNK_ROWS = 65536
_FLOAT32_MAX = float(np.finfo(np.float32).max)
_SMALLEST_SAFE_NORM = 1e-18  # below this, squares of the entries have lost precision in float32


def iter_row_chunks(n_rows: int, chunk_rows: int = _CHUNK_ROWS) -> Iterator[slice]:
    """Slices covering ``range(n_rows)`` in chunks of at most ``chunk_rows`` rows."""
    for start in range(0, n_rows, chunk_rows):
        yield slice(start, min(start + chunk_rows, n_rows))


def check_embeddings(
    x: object,
    name: str = "x",
    *,
    dim: int | None = None,
    min_rows: int = 1,
    allow_zero_rows: bool = False,
) -> np.ndarray:
    """Validate a 2-D float embedding matrix and return it (never copied; memmaps stay memmaps).

    Checks, each with its own message: an array at all, 2-D, a float dtype (float16/32/64), at
    least ``min_rows`` rows and one column, ``dim`` columns when given, only finite values and (unless
    ``allow_zero_rows``) no all-zero rows, whose cosine similarity is undefined.
    """
    if not isinstance(x, np.ndarray):
        try:
            x = np.asarray(x)
        except Exception as exc:  # ragged lists and the like
            raise InputError(f"{name}: cannot be read as an array ({exc}); pass a 2-D float array") from None
    arr: np.ndarray = x  # type: ignore[assignment]
    if arr.ndim != 2:
        hint = " (a single vector? reshape it with x[None, :])" if arr.ndim == 1 else ""
        raise InputError(f"{name}: expected a 2-D array (rows x dims), got shape {arr.shape}{hint}")
    if arr.dtype not in _FLOAT_DTYPES:
        raise InputError(
            f"{name}: expected float16/float32/float64 values, got dtype {arr.dtype}; convert with .astype(np.float32)"
        )
    n, d = arr.shape
    if d == 0:
        raise InputError(f"{name}: has 0 columns; embeddings need at least one dimension")
    if n < min_rows:
        what = "is empty" if n == 0 else f"has {n} rows"
        raise InputError(
            f"{name}: {what}; at least {min_rows} row{'' if min_rows == 1 else 's'} {'is' if min_rows == 1 else 'are'} needed"
        )
    if dim is not None and d != dim:
        raise InputError(f"{name}: has {d} dimensions but {dim} are expected; use embeddings from the same model")
    # One sequential pass in bounded windows: a memory-mapped corpus is advised sequential and each
    # window dropped from memory once checked, so validating never holds the corpus in RAM.
    for start, window in stream_rows(arr, _CHUNK_ROWS):
        chunk = np.asarray(window)
        finite = np.isfinite(chunk).all(axis=1)
        if not finite.all():
            row = start + int(np.argmin(finite))
            raise InputError(f"{name}: row {row} contains NaN or Inf; remove or fix non-finite embeddings")
        if chunk.dtype == np.float64:
            big = (np.abs(chunk) > _FLOAT32_MAX).any(axis=1)
            if big.any():
                row = start + int(np.argmax(big))
                raise InputError(
                    f"{name}: row {row} has values beyond float32's range (3.4e38); rescale the embeddings"
                )
        if not allow_zero_rows:
            zero = ~chunk.any(axis=1)
            if zero.any():
                row = start + int(np.argmax(zero))
                raise InputError(
                    f"{name}: row {row} is an all-zero vector, whose cosine similarity is undefined; drop it"
                )
    return arr


def check_ids(ids: object, n_rows: int, name: str = "ids") -> np.ndarray:
    """Validate external ids: 1-D, integer-valued, one per row, unique. Returns an int64 array."""
    arr = np.asarray(ids)
    if arr.ndim != 1:
        raise InputError(f"{name}: expected a 1-D array of integer ids, got shape {arr.shape}")
    if arr.size and arr.dtype.kind not in "iu":
        if arr.dtype.kind == "f" and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
            arr = arr.astype(np.int64)
        else:
            raise InputError(f"{name}: expected integer ids, got dtype {arr.dtype}")
    if arr.dtype.kind == "u" and arr.size and arr.max() > np.iinfo(np.int64).max:
        raise InputError(f"{name}: ids must fit in int64")
    arr = arr.astype(np.int64, copy=False)
    if len(arr) != n_rows:
        raise InputError(f"{name}: has {len(arr)} ids for {n_rows} vectors; give exactly one id per row")
    if arr.size and (arr < 0).any():
        raise InputError(f"{name}: negative id {int(arr[arr < 0][0])}; ids must be >= 0 (-1 marks 'no result')")
    uniq, counts = np.unique(arr, return_counts=True)
    if (counts > 1).any():
        dup = uniq[counts > 1]
        raise InputError(f"{name}: {len(dup)} duplicate id(s), e.g. {int(dup[0])}; every id must be unique")
    return arr


def check_positive_int(value: object, name: str, *, minimum: int = 1) -> int:
    """An integer argument that must be >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise InputError(f"{name}: expected an integer, got {value!r}")
    if value < minimum:
        raise InputError(f"{name}: must be >= {minimum}, got {value}")
    return int(value)


def check_fraction(value: object, name: str, *, low: float = 0.0, high: float = 1.0) -> float:
    """A float argument in the open/closed interval (low, high]."""
    try:
        v = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise InputError(f"{name}: expected a number, got {value!r}") from None
    if not (low < v <= high):
        raise InputError(f"{name}: must be in ({low}, {high}], got {v}")
    return v


def l2_normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Row-wise L2 normalisation to float32 (a copy).

    A row whose squares overflow (1e30) or underflow (1e-30) float32 is first divided by its largest
    absolute value, so it normalises without overflow warnings or an all-zero result; other rows keep
    the plain float32 computation bit for bit. All-zero rows stay zero.
    """
    x = np.asarray(x, dtype=np.float32)
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        norms = np.linalg.norm(x, axis=1, keepdims=True)
        # Only rows whose squares overflow or underflow are rescaled first: every other row keeps the
        # exact float32 result it always had (saved indexes answer bit for bit as before).
        extreme = ~np.isfinite(norms[:, 0]) | (norms[:, 0] < _SMALLEST_SAFE_NORM)
        if extreme.any():
            rows = x[extreme]
            scale = np.abs(rows).max(axis=1, keepdims=True)
            rows = rows / np.where(scale > 0, scale, 1).astype(np.float32)
            norms = norms.copy()
            norms[extreme] = np.linalg.norm(rows, axis=1, keepdims=True)
            x = x.copy()
            x[extreme] = rows
    out = x / np.maximum(norms, eps)
    return out.astype(np.float32, copy=False)


def best_time(fn: Callable[[], T], repeats: int = 1) -> tuple[float, T]:
    """Call ``fn`` ``repeats`` times: ``(the shortest wall time in seconds, the last result)``.

    The best of several runs is the least disturbed by other processes (and the first run alone pays
    for reading memory-mapped pages from disk); the one timer of the evaluations and benchmarks.
    """
    best, out = float("inf"), None
    for _ in range(check_positive_int(repeats, "repeats")):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out  # type: ignore[return-value]
