"""Shared small synthetic data. No test reads ../shared: a user's clone has no such folder."""

from __future__ import annotations

import numpy as np
import pytest


def make_corpus(n: int, dim: int = 32, *, rank: int = 8, noise: float = 0.3, seed: int = 0) -> np.ndarray:
    """Low-rank-plus-noise float32 embeddings (so neighbours mean something), rows in random directions."""
    rng = np.random.default_rng(seed)
    basis = rng.standard_normal((rank, dim)).astype(np.float32)
    latent = rng.standard_normal((n, rank)).astype(np.float32)
    x = latent @ basis + noise * rng.standard_normal((n, dim)).astype(np.float32)
    return x.astype(np.float32)


@pytest.fixture
def corpus() -> np.ndarray:
    """400 x 32 float32 corpus."""
    return make_corpus(400, seed=1)


@pytest.fixture
def queries() -> np.ndarray:
    """25 x 32 float32 queries from the same distribution as ``corpus`` (same basis: same seed)."""
    return make_corpus(425, seed=1)[400:]  # same basis, rows the corpus does not hold


def normalize(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def brute_force(corpus: np.ndarray, queries: np.ndarray, k: int, ids: np.ndarray | None = None, *, cosine=True):
    """Exact top-k by NumPy: (scores, ids)."""
    c = normalize(corpus) if cosine else np.asarray(corpus, np.float32)
    q = normalize(queries) if cosine else np.asarray(queries, np.float32)
    s = q @ c.T
    order = np.argsort(-s, axis=1, kind="stable")[:, :k]
    ids = np.arange(len(corpus)) if ids is None else np.asarray(ids)
    return np.take_along_axis(s, order, axis=1), ids[order]


# The tests' tensors are small: one torch thread is as fast as two on an idle machine, and on a busy
# one (CI boxes run other jobs) spinning OpenMP threads made the adaptor tests ~10x slower.
try:
    import torch

    torch.set_num_threads(1)
except ImportError:  # pragma: no cover - torch is a dependency
    pass
