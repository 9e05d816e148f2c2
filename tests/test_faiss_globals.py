"""FAISS's process-wide BLAS threshold is ours only while our search runs (issue 21: a baseline measured after
our first index ran faster or slower than one measured before it)."""

from __future__ import annotations

import threading

import faiss
import pytest
from conftest import make_corpus

from matryoshka_index import MatryoshkaIndex
from matryoshka_index.backends import faiss_codes

DEFAULT = 128000


@pytest.fixture
def restore_threshold():
    before = int(faiss.cvar.distance_compute_blas_threshold)
    yield
    faiss.cvar.distance_compute_blas_threshold = before


def _observe(monkeypatch) -> list[int]:
    seen: list[int] = []
    scores_from = faiss_codes.scores_from

    def spy(*args, **kwargs):
        seen.append(int(faiss.cvar.distance_compute_blas_threshold))
        return scores_from(*args, **kwargs)

    monkeypatch.setattr(faiss_codes, "scores_from", spy)
    return seen


def test_search_lowers_the_threshold_inside_and_restores_it(monkeypatch, restore_threshold):
    faiss.cvar.distance_compute_blas_threshold = DEFAULT
    x = make_corpus(600, 64, seed=3)
    index = MatryoshkaIndex.build(x, coarse_dim=16, adaptor="pca", candidates=40)
    assert int(faiss.cvar.distance_compute_blas_threshold) == DEFAULT  # building leaves no trace
    seen = _observe(monkeypatch)
    index.search(x[:30], k=5)
    index.exact_search(x[:30], k=5)
    assert seen and set(seen) == {faiss_codes._BLAS_THRESHOLD}
    assert int(faiss.cvar.distance_compute_blas_threshold) == DEFAULT


def test_a_threshold_the_user_set_is_kept(monkeypatch, restore_threshold):
    faiss.cvar.distance_compute_blas_threshold = 5000
    x = make_corpus(400, 32, seed=4)
    index = MatryoshkaIndex.build(x, coarse_dim=8, adaptor="pca", candidates=30)
    seen = _observe(monkeypatch)
    index.search(x[:10], k=3)
    assert seen and set(seen) == {5000}
    assert int(faiss.cvar.distance_compute_blas_threshold) == 5000


def test_overlapping_searches_restore_once_the_last_ends(restore_threshold):
    faiss.cvar.distance_compute_blas_threshold = DEFAULT
    inside = threading.Barrier(2)
    release = threading.Event()
    values: list[int] = []

    def search() -> None:
        with faiss_codes.flat_search_blas():
            inside.wait(timeout=10)
            release.wait(timeout=10)
            values.append(int(faiss.cvar.distance_compute_blas_threshold))

    threads = [threading.Thread(target=search) for _ in range(2)]
    for t in threads:
        t.start()
    release.set()
    for t in threads:
        t.join(timeout=10)
    assert values == [faiss_codes._BLAS_THRESHOLD] * 2
    assert int(faiss.cvar.distance_compute_blas_threshold) == DEFAULT
