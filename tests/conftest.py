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


def constructed_labelled_report(prefix: dict | None = None):
    """A hand-made LabelledReport for the advisor's tests: dim 64, 1,000 corpus vectors, full nDCG@10 0.40,
    an ANN sweep per method and m (m=8 never reaches 0.99 of anything; at m=16 "pca" needs C=80, "adaptor"
    C=40; m=32 meets at C=10), and ``prefix`` (the prefix-alone rows; none by default)."""
    from matryoshka_index.quality import LabelledReport

    def pt(c, recall, ndcg, qps):
        return {"candidates": c, "recall@10": recall, "ndcg@10": ndcg, "qps": qps}

    ann = {
        "pca": {
            8: [pt(10, 0.5, 0.30, 900), pt(80, 0.8, 0.38, 500)],
            16: [pt(10, 0.7, 0.36, 800), pt(40, 0.95, 0.390, 700), pt(80, 0.995, 0.399, 600)],
            32: [pt(10, 0.999, 0.40, 500)],
        },
        "adaptor": {
            8: [pt(10, 0.6, 0.33, 850), pt(80, 0.85, 0.385, 450)],
            16: [pt(10, 0.8, 0.37, 780), pt(40, 0.992, 0.397, 650), pt(80, 0.999, 0.40, 550)],
            32: [pt(10, 0.999, 0.40, 480)],
        },
    }
    return LabelledReport(
        name="constructed", dim=64, dims=[8, 16, 32], methods=["pca", "adaptor"], n_corpus=1000,
        n_test_queries=100, n_train_queries=0, n_train_pairs=0, full={"ndcg@10": 0.40}, prefix=prefix or {},
        ann=ann, exact_qps=400.0,
    )  # fmt: skip
