"""Implicit ids (issue 22): an IVF coarse stage whose rows are saved in list order, so no id a vector in memory."""

from __future__ import annotations

import faiss
import numpy as np
import pytest
from click.testing import CliRunner
from conftest import brute_force, make_corpus, normalize

from matryoshka_index import InputError, MatryoshkaIndex
from matryoshka_index.backends.faiss_backend import FaissBackend
from matryoshka_index.backends.ivf_lists import IMPLICIT_CODES
from matryoshka_index.cli import main


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    x = make_corpus(2450, 32, seed=5)
    return x[:2400], x[2400:]


def build(x: np.ndarray, *, ids=None, code: str = "pq4", implicit: bool = True, **kw) -> MatryoshkaIndex:
    options = {"code": code, "implicit_ids": implicit, "nlist": 48, **kw}
    return MatryoshkaIndex.build(
        x, ids=ids, coarse_dim=16, adaptor="pca", index="ivf", backend_options=options, quiet=True
    )


def assert_exact(scores, found, x: np.ndarray, ids: np.ndarray, q: np.ndarray) -> None:
    """Returned ids are stored ids and the scores their full-dimension cosine, best first."""
    assert (found >= 0).all()
    row_of = {int(i): r for r, i in enumerate(ids)}
    rows = np.vectorize(row_of.__getitem__)(found)
    np.testing.assert_allclose(scores, np.einsum("qkd,qd->qk", normalize(x)[rows], normalize(q)), rtol=1e-5, atol=1e-5)
    assert (np.diff(scores, axis=1) <= 1e-6).all()


@pytest.mark.parametrize("code", IMPLICIT_CODES)
def test_saved_in_list_order_returns_exactly_the_unordered_results(data, tmp_path, code):
    x, q = data
    index = build(x, code=code)
    before = index.search(q, k=10, candidates=100)
    index.save(tmp_path / "i.mindex")
    loaded = MatryoshkaIndex.load(tmp_path / "i.mindex")
    after = loaded.search(q, k=10, candidates=100)
    np.testing.assert_array_equal(after[1], before[1])
    np.testing.assert_allclose(after[0], before[0], rtol=1e-6, atol=1e-6)
    # the saved rows are in list order: each list's entries are consecutive rows, ascending from 0
    coarse = faiss.read_index(str(tmp_path / "i.mindex" / "coarse.faiss"))
    invlists = faiss.extract_index_ivf(coarse).invlists
    labels = [faiss.rev_swig_ptr(invlists.get_ids(i), invlists.list_size(i)) for i in range(invlists.nlist)]
    np.testing.assert_array_equal(np.concatenate([lab for lab in labels if len(lab)]), np.arange(len(x)))


def test_float_lists_with_implicit_ids_find_what_ordinary_float_lists_find(data, tmp_path):
    x, q = data
    plain = build(x, code="float", implicit=False).search(q, k=10, candidates=60)
    index = build(x, code="float")
    index.save(tmp_path / "f.mindex")
    found = MatryoshkaIndex.load(tmp_path / "f.mindex").search(q, k=10, candidates=60)
    # same lists, same float scores: the same results (ties aside: none here, as the scores show)
    np.testing.assert_array_equal(found[1], plain[1])
    np.testing.assert_allclose(found[0], plain[0], rtol=1e-6, atol=1e-6)


def test_implicit_ids_map_to_external_ids_through_add_remove_save_load(data, tmp_path):
    x, q = data
    rng = np.random.default_rng(0)
    ids = rng.permutation(len(x)).astype(np.int64) * 7919 + 10**9  # external ids, far from rows, shuffled
    index = build(x[:2000], ids=ids[:2000])
    index.save(tmp_path / "a.mindex")
    index = MatryoshkaIndex.load(tmp_path / "a.mindex")
    assert sorted(index.ids()) == sorted(ids[:2000])
    index.add(x[2000:], ids=ids[2000:])  # to a loaded, memory-mapped index: beyond each list's ordered part
    gone = ids[::13]
    assert index.remove(gone) == len(gone)
    alive = ~np.isin(ids, gone)
    scores, found = index.search(q, k=10, candidates=len(x))
    assert not np.isin(found, gone).any()
    assert_exact(scores, found, x, ids, q)
    _, truth = brute_force(x[alive], q, 10, ids[alive])
    np.testing.assert_array_equal(np.sort(found, axis=1), np.sort(truth, axis=1))  # every row probed and reranked
    # a stored vector's own query finds it, for added rows (tail of a list) and ordered ones alike
    probe = np.flatnonzero(alive)[[0, 1, 2, 1700, 1900, 2200]]  # ordered rows, then added ones
    _, own = index.search(x[probe], k=1, candidates=50)
    np.testing.assert_array_equal(own[:, 0], ids[probe])
    index.save(tmp_path / "b.mindex")
    loaded = MatryoshkaIndex.load(tmp_path / "b.mindex")
    assert sorted(loaded.ids()) == sorted(ids[alive])
    again = loaded.search(q, k=10, candidates=len(x))
    np.testing.assert_array_equal(again[1], found)
    np.testing.assert_allclose(again[0], scores, rtol=1e-6, atol=1e-6)
    _, own = loaded.search(x[probe], k=1, candidates=50)
    np.testing.assert_array_equal(own[:, 0], ids[probe])


def test_resident_bytes_a_vector_are_the_codes_alone(tmp_path):
    x = make_corpus(6000, 96, rank=24, seed=2)
    sizes = {}
    for implicit in (False, True):
        index = MatryoshkaIndex.build(
            x, coarse_dim=64, adaptor="pca", index="ivf", quiet=True,
            backend_options={"code": "pq4", "pq_m": 32, "nlist": 16, "implicit_ids": implicit},
        )  # fmt: skip
        path = tmp_path / f"{implicit}.mindex"
        index.save(path)
        sizes[implicit] = MatryoshkaIndex.load(path).backend.memory()
    implicit, ids = sizes[True], sizes[False]
    # pq4 x 32 = 16 B of codes; the ids stay in the mapped file (page cache), never counted as resident
    assert 16.0 <= implicit["per_vector_bytes"] <= 16.1, implicit
    assert implicit["page_cache_bytes_per_vector"] == pytest.approx(96 * 4 + 8 + 8)
    assert ids["per_vector_bytes"] >= 24.0, ids  # the same lists keeping their 8-byte ids in RAM


def test_an_index_loaded_into_ram_counts_its_ids(data, tmp_path):
    x, _ = data
    index = build(x, pq_m=8)
    index.save(tmp_path / "r.mindex")
    mapped = MatryoshkaIndex.load(tmp_path / "r.mindex").backend.memory()
    in_ram = MatryoshkaIndex.load(tmp_path / "r.mindex", mmap=False).backend.memory()
    assert in_ram["coarse_index_bytes_per_vector"] - mapped["coarse_index_bytes_per_vector"] == pytest.approx(
        8, abs=0.01
    )


@pytest.mark.parametrize(
    ("kw", "says"),
    [
        ({"index": "flat", "code": "pq4"}, "applies to index='ivf'"),
        ({"index": "hnsw", "code": "float"}, "applies to index='ivf'"),
        ({"index": "ivf", "code": "rabitq"}, "choose one of float, sq8, sq4, pq4"),
        ({"index": "ivf", "code": "binary"}, "choose one of float, sq8, sq4, pq4"),
    ],
)
def test_implicit_ids_where_they_cannot_apply_is_one_line(kw, says):
    with pytest.raises(InputError, match=says) as err:
        FaissBackend.create(coarse_dim=16, full_dim=32, implicit_ids=True, **kw)
    assert "\n" not in str(err.value)


def test_implicit_ids_must_be_a_bool():
    with pytest.raises(InputError, match="implicit_ids: must be true or false") as err:
        FaissBackend.create(coarse_dim=16, full_dim=32, index="ivf", implicit_ids="yes")
    assert "\n" not in str(err.value)


def test_cli_implicit_ids_with_a_flat_index_is_one_line(tmp_path):
    corpus = tmp_path / "c.npy"
    np.save(corpus, make_corpus(300, 32))
    args = ["build", str(corpus), "--coarse-dim", "16", "--pca", "-q", "-o", str(tmp_path / "i.mindex")]
    out = CliRunner().invoke(main, [*args, "--index", "flat", "--option", "implicit_ids=true"])
    assert out.exit_code == 2, out.output
    assert out.output.strip().count("\n") == 0 and "implicit_ids: applies to index='ivf'" in out.output


def test_cli_builds_an_implicit_ids_index(tmp_path):
    corpus = tmp_path / "c.npy"
    np.save(corpus, make_corpus(600, 32))
    args = ["build", str(corpus), "--coarse-dim", "16", "--pca", "-q", "-o", str(tmp_path / "i.mindex")]
    out = CliRunner().invoke(main, [*args, "--index", "ivf", "--code", "pq4", "--option", "implicit_ids=true"])
    assert out.exit_code == 0, out.output
    backend = MatryoshkaIndex.load(tmp_path / "i.mindex").backend
    assert backend.memory()["page_cache_bytes_per_vector"] == pytest.approx(32 * 4 + 8 + 8)


def test_a_float16_rerank_copy_is_saved_in_the_same_list_order(data, tmp_path):
    # implicit ids reorder full.npy at save; the float16 copy the rerank reads must follow the same order
    x, q = data
    index = build(x, rerank_dtype="float16")
    before = index.search(q, k=10, candidates=100)
    index.save(tmp_path / "h.mindex")
    loaded = MatryoshkaIndex.load(tmp_path / "h.mindex")
    after = loaded.search(q, k=10, candidates=100)
    np.testing.assert_array_equal(after[1], before[1])
    np.testing.assert_allclose(after[0], before[0], rtol=1e-3, atol=1e-3)
    half = sorted((tmp_path / "h.mindex").rglob("rerank_f16.npy"))
    assert len(half) == 1
    full = np.load(half[0].with_name("full.npy"))
    np.testing.assert_allclose(np.load(half[0]).astype(np.float32), full, rtol=1e-3, atol=1e-3)
