"""The rerank's reads from a loaded index's memory-mapped full vectors (issue 22): the candidate rows of a batch
are prefetched (``posix_fadvise(WILLNEED)`` on their pages) before the gather, with results exactly those of the
gather without it."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import make_corpus

from matryoshka_index import MatryoshkaIndex
from matryoshka_index.backends import faiss_store
from matryoshka_index.backends.faiss_store import FullStore, page_runs


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    x = make_corpus(3000, dim=96, rank=12, seed=3)  # 384-byte rows: several to a page, some across two
    corpus, queries = x[:2900], x[2900:]
    path = tmp_path_factory.mktemp("rerank-reads") / "idx.mindex"
    MatryoshkaIndex.build(corpus, coarse_dim=16, adaptor="pca", quiet=True).save(path)
    return path, corpus, queries


@pytest.fixture
def prefetch_calls(monkeypatch):
    """Every FullStore.prefetch call's return value (the page runs it advised), calling through; the pages
    taken as not in memory (a cold disk: the file a test just wrote is in the page cache)."""
    calls: list[int] = []
    real = FullStore.prefetch
    monkeypatch.setattr(FullStore, "resident", lambda self, rows, sample=8: False)

    def counted(self, rows):
        calls.append(real(self, rows))
        return calls[-1]

    monkeypatch.setattr(FullStore, "prefetch", counted)
    return calls


def _search(path, queries, monkeypatch, *, prefetch: bool, extra: np.ndarray | None = None):
    monkeypatch.setenv("MINDEX_RERANK_PREFETCH", "1" if prefetch else "0")
    index = MatryoshkaIndex.load(path)
    if extra is not None:  # rows added after the load live in the spill file, not in full.npy
        index.add(extra, ids=np.arange(10_000, 10_000 + len(extra)))
    out = index.search(queries, k=10, candidates=120)
    single = [index.search(q[None], k=10, candidates=120) for q in queries[:5]]
    return out, single


def test_prefetch_on_and_off_give_identical_results(saved, monkeypatch, prefetch_calls):
    path, _, queries = saved
    (s_off, i_off), single_off = _search(path, queries, monkeypatch, prefetch=False)
    assert prefetch_calls == []  # off: never called
    (s_on, i_on), single_on = _search(path, queries, monkeypatch, prefetch=True)
    assert np.array_equal(i_on, i_off)
    assert np.array_equal(s_on, s_off)  # bit for bit: the same gather and dot products, only read earlier
    for (a, b), (c, d) in zip(single_on, single_off, strict=True):
        assert np.array_equal(b, d) and np.array_equal(a, c)
    # taken: one call a chunk of the batch of 100 queries (pages within PREFETCH_BYTES), one a single query,
    # each advising some pages
    pages = 120 * 2 * faiss_store._PAGE  # 120 candidates of 384-byte rows: at most 2 pages each
    chunks = -(-100 // max(1, faiss_store.PREFETCH_BYTES // pages))
    assert len(prefetch_calls) == chunks + 5 and min(prefetch_calls) > 0


@pytest.mark.parametrize("budget", [1, 3 * 120 * 2 * 4096, 2**40])  # a query a chunk, 3 a chunk, one chunk
def test_chunked_prefetch_identical(saved, monkeypatch, prefetch_calls, budget):
    path, _, queries = saved
    (s_off, i_off), _ = _search(path, queries, monkeypatch, prefetch=False)
    monkeypatch.setattr(faiss_store, "PREFETCH_BYTES", budget)
    prefetch_calls.clear()
    monkeypatch.setenv("MINDEX_RERANK_PREFETCH", "1")
    s_on, i_on = MatryoshkaIndex.load(path).search(queries, k=10, candidates=120)
    assert np.array_equal(i_on, i_off) and np.array_equal(s_on, s_off)
    per_chunk = max(1, budget // (120 * 2 * faiss_store._PAGE))
    assert len(prefetch_calls) == -(-len(queries) // per_chunk)


def test_prefetch_with_spill_rows_identical(saved, monkeypatch, prefetch_calls):
    path, _, queries = saved
    extra = queries[:40] * 1.01  # near the queries: candidates from both segments
    (s_off, i_off), _ = _search(path, queries, monkeypatch, prefetch=False, extra=extra)
    (s_on, i_on), _ = _search(path, queries, monkeypatch, prefetch=True, extra=extra)
    assert (i_on >= 10_000).any() and (i_on < 10_000).any()
    assert np.array_equal(i_on, i_off) and np.array_equal(s_on, s_off)
    assert prefetch_calls and min(prefetch_calls) > 0


def test_prefetch_needs_a_memory_mapped_base():
    in_ram = FullStore(8, np.ones((100, 8), dtype=np.float32), None, None)
    assert in_ram.prefetch(np.arange(10)) == 0
    empty = FullStore(8, None, None, None)
    assert empty.prefetch(np.arange(10)) == 0


def test_prefetch_ignores_rows_outside_the_base(saved):
    path, _, _ = saved
    full = np.load(path / "full.npy", mmap_mode="r")
    store = FullStore(full.shape[1], full, path / "full.npy", None)
    assert store.prefetch(np.array([-1, len(full), len(full) + 5])) == 0
    assert store.prefetch(np.array([[-1, 3], [3, 7]])) >= 1


@pytest.mark.parametrize("row_bytes", [384, 1536, 4096, 5000, 12288])
@pytest.mark.parametrize("offset", [0, 128, 4000])
def test_page_runs_cover_exactly_the_pages_of_the_rows(row_bytes, offset):
    page = faiss_store._PAGE
    rows = np.random.default_rng(row_bytes + offset).integers(0, 2000, 300)
    firsts, counts = page_runs(offset, row_bytes, rows)
    want = sorted({p for r in rows.tolist() for p in range((offset + r * row_bytes) // page,
                                                           (offset + (r + 1) * row_bytes - 1) // page + 1)})  # fmt: skip
    got = [p for f, c in zip(firsts.tolist(), counts.tolist(), strict=True) for p in range(f, f + c)]
    assert got == want  # every page once, ascending
    assert (firsts[1:] > firsts[:-1] + counts[:-1]).all()  # runs are maximal: a gap between any two


def test_prefetch_switch(monkeypatch):
    monkeypatch.delenv("MINDEX_RERANK_PREFETCH", raising=False)
    assert faiss_store.prefetch_enabled()
    for off in ("0", "false", "OFF", "no"):
        monkeypatch.setenv("MINDEX_RERANK_PREFETCH", off)
        assert not faiss_store.prefetch_enabled(), off
    monkeypatch.setenv("MINDEX_RERANK_PREFETCH", "on")
    assert faiss_store.prefetch_enabled()


def test_vectored_and_range_by_range_advice_both_advise(saved, monkeypatch):
    path, _, _ = saved
    full = np.load(path / "full.npy", mmap_mode="r")
    rows = np.random.default_rng(0).integers(0, len(full), (4, 50))
    vectored_calls: list[int] = []
    real = faiss_store._VectoredAdvice.advise
    monkeypatch.setattr(
        faiss_store._VectoredAdvice, "advise", lambda self, iov: vectored_calls.append(len(iov)) or real(self, iov)
    )
    store = FullStore(full.shape[1], full, path / "full.npy", None)
    want = len(page_runs(int(full.offset), full.shape[1] * 4, rows)[0])
    assert store.prefetch(rows) == want
    if faiss_store._VectoredAdvice.get() is not None:  # Linux >= 5.10: one system call for all the runs
        assert vectored_calls == [want]
    store.vectored = False  # one posix_fadvise a run
    vectored_calls.clear()
    assert store.prefetch(rows) == want and vectored_calls == []


def test_warm_pages_skip_the_prefetch(saved, monkeypatch):
    path, _, queries = saved
    calls: list[int] = []
    real = FullStore.prefetch
    monkeypatch.setattr(FullStore, "prefetch", lambda self, rows: calls.append(1) or real(self, rows))
    (s_off, i_off), _ = _search(path, queries, monkeypatch, prefetch=False)
    full = np.load(path / "full.npy", mmap_mode="r")
    store = FullStore(full.shape[1], full, path / "full.npy", None)
    assert float(np.asarray(full, dtype=np.float64).sum()) != 0.0  # every page read: in memory now
    assert store.resident(np.arange(len(full)).reshape(10, -1))
    (s_on, i_on), _ = _search(path, queries, monkeypatch, prefetch=True)
    assert calls == []  # every sampled page in memory: gathered at once, no advice
    assert np.array_equal(i_on, i_off) and np.array_equal(s_on, s_off)


def test_resident_unknown_is_false():
    in_ram = FullStore(8, np.ones((100, 8), dtype=np.float32), None, None)
    assert not in_ram.resident(np.arange(10))  # not memory-mapped: nothing to tell, and nothing to prefetch
