"""Synthetic embeddings for demos, tests and benchmarks (no download, no model).

Rows are drawn near a random low-rank subspace with a decaying spectrum, plus isotropic noise, and
L2-normalised: neighbours mean something (they share subspace coordinates), and the signal is spread
over every coordinate, so plain truncation is a poor baseline while PCA and the adaptor have
structure to find, as with real sentence embeddings.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from .progress import progress
from .storage import check_free_space, check_writable, npy_bytes, write_npy

_CHUNK = 65536


def _low_rank_chunks(n: int, dim: int, rank: int, noise: float, seed: int) -> Iterator[np.ndarray]:
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(rng.standard_normal((dim, dim)))[0][:, :rank]
    scales = 1.0 / np.sqrt(np.arange(1, rank + 1))
    sigma = noise * np.sqrt((scales**2).sum() / dim)
    for start in range(0, n, _CHUNK):
        m = min(_CHUNK, n - start)
        x = (rng.standard_normal((m, rank)) * scales) @ basis.T + sigma * rng.standard_normal((m, dim))
        yield (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def low_rank_corpus(n: int, dim: int = 384, *, rank: int = 48, noise: float = 0.25, seed: int = 0) -> np.ndarray:
    """``n x dim`` float32 unit-norm rows near a rank-``rank`` subspace (spectrum decaying as 1/sqrt(i))."""
    return np.concatenate(list(_low_rank_chunks(n, dim, rank, noise, seed)))


def write_low_rank_corpus(
    path: str | os.PathLike[str],
    n: int,
    dim: int = 384,
    *,
    rank: int = 48,
    noise: float = 0.25,
    seed: int = 0,
    quiet: bool | None = None,
) -> Path:
    """Write the same rows as :func:`low_rank_corpus` to a ``.npy`` chunk by chunk (never all in RAM), atomically.

    The location is checked first (writable, room for the whole file), so a read-only or full disk
    fails at once with one :class:`~matryoshka_index.errors.StorageError` line and nothing is left behind.
    """
    path = check_writable(path, "output")
    check_free_space(path.parent, npy_bytes((n, dim), np.float32), f"a {n} x {dim} float32 corpus")
    chunks = progress(
        _low_rank_chunks(n, dim, rank, noise, seed), total=-(-n // _CHUNK), desc="generating", unit="chunk", quiet=quiet
    )
    write_npy(path, (n, dim), np.float32, chunks)
    return path
