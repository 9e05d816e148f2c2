"""Issue 23's supervised levers: the corpus-term search and the guard against the unsupervised fit, both
decided on held-out training pairs; the held-out nDCG they use."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from matryoshka_index import MatryoshkaAdaptor
from matryoshka_index.adaptor import AdaptorFallbackWarning
from matryoshka_index.adaptor.guard import positive_ndcg

D = 32


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def paired_task(seed: int = 0, n_docs: int = 1200, n_pairs: int = 300):
    """Low-rank documents; each query is its positive at a constant offset, plus noise."""
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(rng.standard_normal((D, D)))[0]
    docs = unit(
        (rng.standard_normal((n_docs, 8)) * np.linspace(3, 0.5, 8)) @ basis[:, :8].T
        + 0.2 * rng.standard_normal((n_docs, D))
    )
    relevant = rng.choice(n_docs, n_pairs, replace=False)
    queries = unit(docs[relevant] + basis[:, 0] + 0.15 * rng.standard_normal((n_pairs, D)))
    return docs, queries, docs[relevant]


def small(**kw) -> MatryoshkaAdaptor:
    base = dict(matryoshka_dims=(4, 8), epochs=2, batch_size=128, quiet=True, device="cpu", seed=0)
    return MatryoshkaAdaptor(**{**base, **kw})


def test_positive_ndcg_by_hand():
    rows = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]], dtype=np.float32)
    queries = np.array([[1.0, 0.2], [0.1, 1.0]], dtype=np.float32)
    positives = np.array([[0.9, 0.5], [-1.0, 0.1]], dtype=np.float32)
    # query 0: its positive (cos 0.95) is below row 0 (0.98): rank 2; query 1: its positive (cos 0.0) is
    # below row 1 (0.99), the other query's positive (0.57) and row 0 (0.10): rank 4
    got = positive_ndcg(queries, positives, rows, lambda x: x, (2,), k=10)
    assert got[2] == pytest.approx((1 / np.log2(3) + 1 / np.log2(5)) / 2)
    assert positive_ndcg(queries, positives, rows, lambda x: x, (2,), k=1)[2] == 0.0


def test_the_fit_kept_is_the_best_candidate_on_the_held_out_pairs():
    docs, queries, positives = paired_task()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AdaptorFallbackWarning)
        adaptor = small().fit(docs, queries, positives)
    sel = adaptor.history_.selection
    assert set(sel["ndcg"]) == {"supervised", "supervised without the corpus terms", "unsupervised, queries unlabelled"}
    means = {name: np.mean(list(v.values())) for name, v in sel["ndcg"].items()}
    assert means[sel["kept"]] == max(means.values())
    assert sel["pairs"] == 60  # min(100, a fifth of 300) held out, more than val_fraction's 15
    assert adaptor.history_.fell_back_to_unsupervised == (sel["kept"] == "unsupervised, queries unlabelled")
    assert adaptor.metadata_["training"]["selection"] == sel  # saved with the adaptor


def test_one_fit_when_both_levers_are_off():
    docs, queries, positives = paired_task()
    adaptor = small(corpus_term_search=False, guard=False).fit(docs, queries, positives)
    assert adaptor.history_.selection is None and not adaptor.history_.fell_back_to_unsupervised
    assert adaptor.metadata_["training"]["pairs"] == 285  # val_fraction's 5% held out, as before the levers


def test_when_the_unsupervised_fit_scores_best_it_is_kept_with_a_warning(monkeypatch):
    from matryoshka_index.adaptor import guard

    docs, queries, positives = paired_task()
    scores = iter([0.30, 0.40])  # the candidates in order: supervised, then unsupervised with the queries

    def scripted(queries, positives, rows, transform, dims, k=10):
        value = next(scores)
        return {int(m): value for m in dims}

    monkeypatch.setattr(guard, "positive_ndcg", scripted)
    with pytest.warns(AdaptorFallbackWarning, match="lost on 60 held-out pairs to the unsupervised one"):
        adaptor = small(corpus_term_search=False).fit(docs, queries, positives)
    assert adaptor.history_.fell_back_to_unsupervised
    assert adaptor.history_.selection["kept"] == "unsupervised, queries unlabelled"
    assert adaptor.history_.selection["ndcg"]["supervised"] == {"4": 0.3, "8": 0.3}
