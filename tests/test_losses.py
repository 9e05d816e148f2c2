"""Each loss against a direct numpy computation of the formula in its docstring."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from matryoshka_index.adaptor.losses import (
    listwise_loss,
    pairwise_similarity_loss,
    ranking_loss,
    reconstruction_loss,
    topk_similarity_loss,
)

DIMS = (2, 4, 8)


def cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.fixture
def pair() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    e = rng.standard_normal((7, 8))
    f = e + 0.5 * rng.standard_normal((7, 8))
    return e, f


def t(a: np.ndarray) -> torch.Tensor:
    return torch.tensor(a, dtype=torch.float64)


def test_pairwise_matches_numpy(pair):
    e, f = pair
    n = len(e)
    expected = np.mean(
        [
            np.mean([abs(cos(f[i, :m], f[j, :m]) - cos(e[i], e[j])) for i in range(n) for j in range(n) if i != j])
            for m in DIMS
        ]
    )
    assert float(pairwise_similarity_loss(t(e), t(f), DIMS)) == pytest.approx(expected, rel=1e-9)


def test_topk_matches_numpy(pair):
    e, f = pair
    n, k = len(e), 3
    per_m = []
    for m in DIMS:
        gaps = []
        for i in range(n):
            sims = [(cos(e[i], e[j]), j) for j in range(n) if j != i]
            for _, j in sorted(sims, reverse=True)[:k]:
                gaps.append(abs(cos(f[i, :m], f[j, :m]) - cos(e[i], e[j])))
        per_m.append(np.mean(gaps))
    assert float(topk_similarity_loss(t(e), t(f), DIMS, k=k)) == pytest.approx(np.mean(per_m), rel=1e-9)


def test_topk_is_zero_only_on_neighbours(pair):
    e, _ = pair
    f = e.copy()
    assert float(topk_similarity_loss(t(e), t(f), (8,), k=3)) == pytest.approx(0.0, abs=1e-12)
    assert float(topk_similarity_loss(t(e), t(f), (2,), k=3)) > 0


def test_reconstruction_matches_numpy(pair):
    e, f = pair
    expected = np.mean(np.linalg.norm(f - e, axis=1))
    assert float(reconstruction_loss(t(e), t(f))) == pytest.approx(expected, rel=1e-9)


def test_listwise_matches_numpy(pair):
    e, f = pair
    n, tau = len(e), 0.1
    per_m = []
    for m in DIMS:
        kls = []
        for i in range(n):
            js = [j for j in range(n) if j != i]
            p = np.exp([cos(e[i], e[j]) / tau for j in js])
            p /= p.sum()
            q = np.exp([cos(f[i, :m], f[j, :m]) / tau for j in js])
            q /= q.sum()
            kls.append(float(np.sum(p * np.log(p / q))))
        per_m.append(np.mean(kls))
    assert float(listwise_loss(t(e), t(f), DIMS, temperature=tau)) == pytest.approx(np.mean(per_m), rel=1e-7)


def test_listwise_zero_when_prefix_keeps_similarities(pair):
    e, _ = pair
    assert float(listwise_loss(t(e), t(e), (8,))) == pytest.approx(0.0, abs=1e-9)


def numpy_ranking(q: np.ndarray, docs: np.ndarray, tau: float) -> float:
    """The docstring's formula term by term: docs[i] is queries[i]'s positive, every other row a negative."""
    per_m = []
    for m in DIMS:
        terms = [
            np.log1p(np.exp((cos(q[i, :m], docs[k, :m]) - cos(q[i, :m], docs[i, :m])) / tau))
            for i in range(len(q))
            for k in range(len(docs))
            if k != i
        ]
        per_m.append(np.mean(terms))
    return float(np.mean(per_m))


def test_ranking_matches_numpy(pair):
    q, d = pair
    assert float(ranking_loss(t(q), t(d), DIMS, temperature=0.1)) == pytest.approx(numpy_ranking(q, d, 0.1), rel=1e-9)


def test_ranking_prefers_the_positive():
    rng = np.random.default_rng(0)
    q = rng.standard_normal((6, 8))
    good = ranking_loss(t(q), t(q + 0.01 * rng.standard_normal(q.shape)), DIMS)
    bad = ranking_loss(t(q), t(np.roll(q, 1, axis=0)), DIMS)
    assert float(good) < float(bad)


def test_ranking_with_extra_negatives_matches_numpy(pair):
    q, d = pair
    rng = np.random.default_rng(5)
    extra = rng.standard_normal((4, 8))  # rows after the positives are negatives for every query
    docs = np.concatenate([d, extra])
    want = numpy_ranking(q, docs, 0.1)
    assert float(ranking_loss(t(q), t(docs), DIMS, temperature=0.1)) == pytest.approx(want, rel=1e-9)
    with pytest.raises(ValueError, match="positives"):
        ranking_loss(t(q), t(d[:3]), DIMS)


def test_hard_negatives_are_the_nearest_rows_but_never_a_copy_of_the_positive():
    from matryoshka_index.adaptor.training import mine_hard_negatives

    rng = np.random.default_rng(1)
    rows = torch.tensor(rng.standard_normal((50, 8)), dtype=torch.float32)
    queries = rows[:5] + 0.01 * torch.randn(5, 8, generator=torch.Generator().manual_seed(0))
    positives = rows[:5].clone()  # each query's positive is its own copy in rows
    hard = mine_hard_negatives(rows, queries, positives, pool=6)
    assert hard.shape == (5, 6)
    for i in range(5):
        assert i not in hard[i].tolist()  # the positive's copy is skipped
        sims = torch.nn.functional.cosine_similarity(queries[i : i + 1], rows)
        sims[i] = -2.0
        assert set(hard[i].tolist()) == set(sims.topk(6).indices.tolist())
