"""MatryoshkaIndex with the FAISS backend: exactness, mutations, persistence, errors, concurrency."""

from __future__ import annotations

import json
import sys
import threading
import types
from pathlib import Path

import faiss
import numpy as np
import pytest
from conftest import brute_force, make_corpus, normalize

from matryoshka_index import FormatError, InputError, MatryoshkaAdaptor, MatryoshkaIndex
from matryoshka_index.adaptor.pca import PCARotation
from matryoshka_index.backends.faiss_backend import FaissBackend, default_nlist
from matryoshka_index.calibration import candidate_ladder
from matryoshka_index.exact import exact_topk
from matryoshka_index.metrics import ann_recall


def build(x, **kw):
    kw.setdefault("quiet", True)
    return MatryoshkaIndex.build(x, **kw)


def small_adaptor() -> MatryoshkaAdaptor:
    return MatryoshkaAdaptor(epochs=1, batch_size=128, quiet=True, device="cpu")


# ---------------------------------------------------------------------- exactness
@pytest.mark.parametrize("adaptor", [None, "pca", "small"])
def test_flat_search_with_all_candidates_equals_numpy_brute_force(corpus, queries, adaptor):
    ad = small_adaptor() if adaptor == "small" else adaptor
    ids = np.arange(len(corpus)) * 7 + 3  # external ids, not row numbers
    index = build(corpus, coarse_dim=8, ids=ids, adaptor=ad)
    scores, found = index.search(queries, k=10, candidates=len(corpus))
    want_s, want_i = brute_force(corpus, queries, 10, ids)
    np.testing.assert_array_equal(found, want_i)
    np.testing.assert_allclose(scores, want_s, rtol=1e-5, atol=1e-6)


def test_inner_product_metric_equals_brute_force(corpus, queries):
    index = build(corpus, coarse_dim=8, metric="ip")
    scores, found = index.search(queries, k=5, candidates=len(corpus))
    want_s, want_i = brute_force(corpus, queries, 5, cosine=False)
    np.testing.assert_array_equal(found, want_i)
    np.testing.assert_allclose(scores, want_s, rtol=1e-5, atol=1e-5)


def test_returned_scores_are_exact_full_dim_scores_for_any_candidates(corpus, queries):
    index = build(corpus, coarse_dim=4, adaptor="pca")
    scores, found = index.search(queries, k=10, candidates=12)
    full = normalize(corpus)[found] @ normalize(queries)[:, :, None]
    np.testing.assert_allclose(scores, full[:, :, 0], rtol=1e-5, atol=1e-6)
    assert (np.diff(scores, axis=1) <= 1e-7).all()  # best first


def test_rerank_adapted_uses_adapted_full_vectors(corpus, queries):
    index = build(corpus, coarse_dim=8, adaptor="pca", rerank="adapted")
    r = index.adaptor.rotation_
    scores, found = index.search(queries, k=10, candidates=len(corpus))
    # An orthogonal rotation keeps inner products: same ranking as the originals, scores from rotated vectors.
    want_s, want_i = brute_force(corpus @ r, queries @ r, 10)
    np.testing.assert_array_equal(found, want_i)
    np.testing.assert_allclose(scores, want_s, rtol=1e-5, atol=1e-5)
    assert index.calibration["truth"].startswith("exact inner-product search over the original vectors")


@pytest.mark.parametrize("kind", ["hnsw", "ivf", "pq"])
def test_hnsw_and_ivf_find_the_exact_neighbours_with_enough_candidates(corpus, queries, kind):
    index = build(corpus, coarse_dim=8, index=kind)
    _, found = index.search(queries, k=10, candidates=len(corpus))
    _, want = brute_force(corpus, queries, 10)
    assert ann_recall(found, want) >= 0.99
    assert index.info()["backend"]["coarse_index"] == kind


def test_ivf_chooses_nlist_from_the_corpus_size_and_calibrates_nprobe(corpus):
    index = build(corpus, coarse_dim=8, index="ivf")
    params = index.info()["backend"]["params"]
    assert params["nlist"] == default_nlist(len(corpus)) == 10
    cal = index.calibration
    assert cal["knob"] == {"nprobe": params["nprobe"]}
    assert cal["reached"] and cal["recall"] >= 0.99


def test_pq_scans_every_vector_from_half_a_byte_per_dimension(corpus, queries):
    flat = build(corpus, coarse_dim=8, adaptor="pca")
    pq = build(corpus, coarse_dim=8, adaptor="pca", index="pq")
    info = pq.info()["backend"]
    assert info["coarse_index"] == "pq" and info["params"]["pq_m"] == 8
    # 4 bits a coarse dimension: the coarse index is 8x smaller than flat's float32 (ids aside)
    assert info["ram_bytes_per_vector"] < flat.info()["backend"]["ram_bytes_per_vector"]
    # approximate coarse scores: the calibration needs at least as many candidates as exact flat
    assert pq.candidates >= flat.candidates and pq.calibration["reached"]
    # the coarse ranking is close to flat's: most of the exact coarse top-20 are in PQ's top-40
    _, exact_coarse = flat.backend.coarse_search(flat._prepare(queries)[0], 20)
    _, pq_coarse = pq.backend.coarse_search(pq._prepare(queries)[0], 40)
    assert ann_recall(pq_coarse, exact_coarse) >= 0.9
    with pytest.raises(InputError, match="pq_m: must divide coarse_dim 8, got 3"):
        build(corpus, coarse_dim=8, index="pq", backend_options={"pq_m": 3})


def test_k_larger_than_the_index_pads_with_minus_one(corpus):
    index = build(corpus[:5], coarse_dim=4)
    scores, found = index.search(corpus[:2], k=8)
    assert (found[:, :5] >= 0).all() and (found[:, 5:] == -1).all()
    assert np.isneginf(scores[:, 5:]).all()


def test_batched_search_equals_one_by_one(corpus):
    index = build(corpus, coarse_dim=8, adaptor="pca")
    q = make_corpus(50, seed=9)
    s_all, i_all = index.search(q, k=7)
    for j in (0, 17, 49):
        s_one, i_one = index.search(q[j : j + 1], k=7)
        np.testing.assert_array_equal(i_one[0], i_all[j])
        np.testing.assert_allclose(s_one[0], s_all[j], rtol=1e-6)


def test_float16_and_memmap_input_are_streamed(tmp_path, corpus, queries):
    path = tmp_path / "c.npy"
    np.save(path, corpus.astype(np.float16))
    mm = np.load(path, mmap_mode="r")
    index = build(mm, coarse_dim=8, candidates=len(corpus))
    _, found = index.search(queries.astype(np.float16), k=5)
    _, want = brute_force(corpus.astype(np.float16).astype(np.float32), queries.astype(np.float16), 5)
    np.testing.assert_array_equal(found, want)


# ---------------------------------------------------------------------- calibration
def test_calibrated_candidates_reach_the_target_and_are_minimal_on_the_ladder(corpus):
    index = build(corpus, coarse_dim=4, target_recall=0.95)
    cal = index.calibration
    assert cal["reached"] and cal["recall"] >= 0.95
    assert index.candidates == cal["candidates"]
    assert cal["recall"] >= cal["recall_lower_bound"] >= 0.95  # the bound, not just the mean, reaches it
    measured = {c: lower for c, _, _, lower in cal["steps"]}
    ladder = candidate_ladder(10, len(corpus))
    below = [c for c in ladder if c < index.candidates]
    if below:  # the next smaller ladder value was measured and its lower bound missed the target
        assert measured[below[-1]] < 0.95
    assert cal["query_source"].startswith("random corpus rows held out of the index")
    assert cal["queries"] == 40  # a tenth of the corpus, at most 1,000


def test_calibration_queries_are_held_out_of_the_index_then_added(monkeypatch, corpus):
    sizes = []
    real_search = FaissBackend.search

    def spy(self, *a, **k):
        sizes.append(len(self))
        return real_search(self, *a, **k)

    monkeypatch.setattr(FaissBackend, "search", spy)
    index = build(corpus, coarse_dim=4)
    assert sizes and set(sizes) == {360}  # 40 held-out rows were not in the index while calibrating
    assert len(index) == 400
    np.testing.assert_array_equal(np.sort(index.ids()), np.arange(400))


def test_exact_topk_include_mask(corpus, queries):
    include = np.arange(400) % 3 != 0
    _, rows = exact_topk(queries, corpus, 10, normalize=True, include=include, chunk_rows=64)
    kept = np.flatnonzero(include)
    np.testing.assert_array_equal(rows, brute_force(corpus[kept], queries, 10, kept)[1])


def test_fixed_candidates_skip_the_ladder_but_report_recall(corpus):
    index = build(corpus, coarse_dim=4, candidates=len(corpus))
    assert index.candidates == len(corpus)
    assert index.calibration["recall"] == 1.0
    assert len(index.calibration["steps"]) == 1


def test_default_candidates_scale_with_k(corpus):
    index = build(corpus, coarse_dim=4, candidates=30)
    assert index.resolve_candidates(10) == 30
    assert index.resolve_candidates(5) == 30
    assert index.resolve_candidates(20) == 60
    assert index.resolve_candidates(10, 11) == 11


def test_calibrate_on_user_queries(corpus, queries):
    index = build(corpus, coarse_dim=4, candidates=10)
    record = index.calibrate(queries, target_recall=0.9)
    assert record["query_source"] == "caller's queries" and record["queries"] == len(queries)
    _, found = index.search(queries, k=10)
    _, want = brute_force(corpus, queries, 10)
    assert ann_recall(found, want) == pytest.approx(record["recall"])
    assert record["recall"] >= 0.9


def test_tiny_corpus_skips_calibration():
    index = build(make_corpus(1), coarse_dim=4)
    assert "skipped" in index.calibration
    _, found = index.search(make_corpus(1), k=3)
    assert found[0, 0] == 0 and (found[0, 1:] == -1).all()


# ---------------------------------------------------------------------- add / remove
def test_add_then_search_equals_brute_force_over_the_union(corpus, queries):
    index = build(corpus[:200], coarse_dim=8, adaptor="pca")
    added = index.add(corpus[200:], ids=np.arange(200, 400))
    np.testing.assert_array_equal(added, np.arange(200, 400))
    assert len(index) == 400
    _, found = index.search(queries, k=10, candidates=400)
    np.testing.assert_array_equal(found, brute_force(corpus, queries, 10)[1])


def test_add_without_ids_continues_after_the_largest_id(corpus):
    index = build(corpus[:10], coarse_dim=4, ids=np.arange(10) + 100)
    np.testing.assert_array_equal(index.add(corpus[10:13]), [110, 111, 112])


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf", "pq"])
def test_removed_ids_are_never_returned(tmp_path, corpus, kind):
    index = build(corpus, coarse_dim=8, index=kind)
    gone = np.arange(0, 400, 3)
    assert index.remove(gone) == len(gone)
    assert len(index) == 400 - len(gone)
    q = corpus[gone[:40]]  # the removed vectors themselves: their own ids would be the top hit
    for idx in (index, _save_load(index, tmp_path / "i.mindex")):
        _, found = idx.search(q, k=20, candidates=400)
        assert not np.isin(found, gone).any()
        assert (found >= 0).all()  # 20 live neighbours exist: no slot may be left empty
        _, exact = idx.exact_search(q, k=20)
        assert not np.isin(exact, gone).any()
        np.testing.assert_array_equal(np.sort(idx.ids()), np.setdiff1d(np.arange(400), gone))
        _, want = brute_force(np.delete(corpus, gone, axis=0), q, 20, np.setdiff1d(np.arange(400), gone))
        np.testing.assert_array_equal(exact, want)
        assert ann_recall(found, want) >= 0.95


def test_remove_then_add_the_same_id_again(corpus):
    index = build(corpus, coarse_dim=8, candidates=400)
    index.remove([7])
    index.add(corpus[7:8] * -1.0, ids=[7])  # a different vector under the old id
    _, found = index.search(-corpus[7:8], k=1)
    assert found[0, 0] == 7
    assert len(index) == 400


def test_remove_unknown_id_is_an_error_unless_missing_ok(corpus):
    index = build(corpus[:20], coarse_dim=4)
    with pytest.raises(InputError, match=r"ids: 1 id\(s\) not in the index, e.g. 999"):
        index.remove([3, 999])
    assert len(index) == 20  # nothing removed by the failed call
    assert index.remove([3, 999], missing_ok=True) == 1


# ---------------------------------------------------------------------- save / load
def _save_load(index, path, **kw):
    index.save(path)
    return MatryoshkaIndex.load(path, **kw)


@pytest.mark.parametrize(
    ("kind", "adaptor"), [("flat", None), ("hnsw", "pca"), ("ivf", "pca"), ("pq", "pca"), ("flat", "small")], ids=str
)
def test_save_load_round_trip_gives_identical_results(tmp_path, corpus, queries, kind, adaptor):
    ad = small_adaptor() if adaptor == "small" else adaptor
    index = build(corpus, coarse_dim=8, index=kind, adaptor=ad)
    s0, i0 = index.search(queries, k=10)
    loaded = _save_load(index, tmp_path / "a.mindex")
    s1, i1 = loaded.search(queries, k=10)
    np.testing.assert_array_equal(i0, i1)
    np.testing.assert_allclose(s0, s1, rtol=1e-6)
    assert loaded.candidates == index.candidates
    assert loaded.calibration == json.loads(json.dumps(index.calibration))
    assert isinstance(loaded.backend._full.base, np.memmap)  # full vectors memory-mapped, not read


def test_manifest_describes_the_index(tmp_path, corpus):
    index = build(corpus, coarse_dim=8, adaptor="pca", ids=np.arange(400) + 10)
    index.save(tmp_path / "m.mindex")
    manifest = json.loads((tmp_path / "m.mindex" / "manifest.json").read_text())
    assert manifest["format"] == "matryoshka-index" and manifest["format_version"] == 1
    assert (manifest["metric"], manifest["input_dim"], manifest["coarse_dim"]) == ("cosine", 32, 8)
    assert manifest["count"] == 400 and manifest["candidates"] == index.candidates
    assert manifest["adaptor"] == {"kind": "pca", "directory": "adaptor"}
    assert manifest["backend"]["kind"] == "faiss" and manifest["backend"]["index"] == "flat"
    assert set(manifest["files"]) >= {"coarse.faiss", "full.npy", "ids.npy", "adaptor/pca.json"}
    saved_ids = np.load(tmp_path / "m.mindex" / "ids.npy", allow_pickle=False)
    np.testing.assert_array_equal(np.sort(saved_ids), np.arange(400) + 10)


def test_add_and_remove_after_load_then_save_again(tmp_path, corpus, queries):
    index = build(corpus[:300], coarse_dim=8, candidates=400)
    loaded = _save_load(index, tmp_path / "a.mindex")
    loaded.add(corpus[300:], ids=np.arange(300, 400))  # rows now span the mmap and a spill file
    loaded.remove([0, 1, 350])
    keep = np.setdiff1d(np.arange(400), [0, 1, 350])
    want = brute_force(corpus[keep], queries, 10, keep)[1]
    np.testing.assert_array_equal(loaded.search(queries, k=10)[1], want)
    again = _save_load(loaded, tmp_path / "a.mindex")  # overwrite the directory it was loaded from
    np.testing.assert_array_equal(again.search(queries, k=10)[1], want)
    assert len(again) == 397


def test_load_with_mmap_false_reads_full_vectors_into_ram(tmp_path, corpus):
    loaded = _save_load(build(corpus, coarse_dim=8), tmp_path / "r.mindex", mmap=False)
    assert not isinstance(loaded.backend._full.base, np.memmap)
    assert loaded.info()["memory"]["ram_bytes_per_vector"] > 32 * 4


def test_info_reports_memory_device_and_calibration(tmp_path, corpus):
    index = build(corpus, coarse_dim=8)
    info = index.info()
    assert info["device"] == "cpu"
    # measured: coarse floats + IndexIDMap labels + the in-RAM ids (no alive mask, no lookup built) + header
    assert 8 * 4 + 8 + 8 <= info["memory"]["ram_bytes_per_vector"] < 8 * 4 + 8 + 8 + 1
    assert info["memory"]["exact_search_ram_bytes_per_vector"] == 128
    assert info["candidates"]["default"] == index.candidates
    assert info["candidates"]["calibrated_recall"] == index.calibration["recall"]
    index.save(tmp_path / "x.mindex")
    disk = sum(p.stat().st_size for p in (tmp_path / "x.mindex").rglob("*") if p.is_file())
    assert index.info()["memory"]["disk_bytes_per_vector"] == pytest.approx(disk / 400, abs=0.1)


def test_interrupted_save_leaves_the_previous_index_loadable_and_unchanged(tmp_path, corpus, queries, monkeypatch):
    path = tmp_path / "keep.mindex"
    index = build(corpus[:200], coarse_dim=8, adaptor="pca")
    index.save(path)
    before = {p.relative_to(path): p.read_bytes() for p in path.rglob("*") if p.is_file()}
    index.add(corpus[200:])

    def boom(*a, **k):
        raise KeyboardInterrupt  # as if the user pressed Ctrl-C half-way through the save

    monkeypatch.setattr(np, "save", boom)  # ids.npy is written after coarse.faiss and full.npy
    with pytest.raises(KeyboardInterrupt):
        index.save(path)
    monkeypatch.undo()
    after = {p.relative_to(path): p.read_bytes() for p in path.rglob("*") if p.is_file()}
    assert after == before
    assert [p.name for p in tmp_path.iterdir()] == ["keep.mindex"]  # no temp directory left behind
    old = MatryoshkaIndex.load(path)
    assert len(old) == 200
    np.testing.assert_array_equal(old.search(queries, k=5, candidates=200)[1], brute_force(corpus[:200], queries, 5)[1])


def test_interrupted_first_save_leaves_nothing_under_the_final_name(tmp_path, corpus, monkeypatch):
    index = build(corpus, coarse_dim=8)
    monkeypatch.setattr(faiss, "write_index", lambda *a: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError, match="disk full"):
        index.save(tmp_path / "new.mindex")
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------- corrupt files
@pytest.fixture
def saved(tmp_path, corpus) -> Path:
    path = tmp_path / "s.mindex"
    build(corpus[:50], coarse_dim=8, adaptor="pca").save(path)
    return path


def _edit_manifest(path: Path, **changes) -> None:
    m = json.loads((path / "manifest.json").read_text())
    m.update(changes)
    (path / "manifest.json").write_text(json.dumps(m))


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda p: (p / "manifest.json").write_text("{not json"), "is not valid JSON"),
        (lambda p: (p / "manifest.json").unlink(), "manifest.json: not found"),
        (lambda p: _edit_manifest(p, format="something-else"), "is not a matryoshka-index file"),
        (lambda p: _edit_manifest(p, format_version=99), "format version 99 is not supported"),
        (lambda p: (p / "full.npy").unlink(), "full.npy: missing"),
        (lambda p: (p / "adaptor" / "pca_rotation.npy").unlink(), "pca_rotation.npy: missing"),
        (lambda p: (p / "ids.npy").write_bytes(b"garbage"), "ids.npy: checksum does not match"),
        (lambda p: _edit_manifest(p, backend={"kind": "elastic"}), "unknown backend 'elastic'"),
        (lambda p: _edit_manifest(p, files={"../x": "0"}), "points outside the index directory"),
        (lambda p: _edit_manifest(p, files=None), "no valid 'files' checksum table"),
        (lambda p: _edit_manifest(p, coarse_dim=16), "dims coarse=16 full=32 but the backend stores coarse=8"),
    ],
    ids=[
        "bad-json",
        "no-manifest",
        "foreign",
        "future-version",
        "missing-full",
        "missing-adaptor-file",
        "checksum",
        "unknown-backend",
        "path-escape",
        "no-files",
        "dim-mismatch",
    ],
)
def test_corrupt_or_foreign_index_fails_with_one_clear_line(saved, damage, message):
    damage(saved)
    with pytest.raises(FormatError) as err:
        MatryoshkaIndex.load(saved)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_corrupt_faiss_file_without_checksum_verification(saved):
    (saved / "coarse.faiss").write_bytes(b"not a faiss index at all")
    with pytest.raises(FormatError, match=r"coarse\.faiss: not a readable FAISS index"):
        MatryoshkaIndex.load(saved, verify=False)


def test_load_of_a_missing_path_or_a_file(tmp_path):
    with pytest.raises(FormatError, match="no index here"):
        MatryoshkaIndex.load(tmp_path / "nope")
    (tmp_path / "f").write_text("x")
    with pytest.raises(FormatError, match="not an index directory"):
        MatryoshkaIndex.load(tmp_path / "f")


# ---------------------------------------------------------------------- bad input
BAD_BUILD = [
    (lambda x: {"vectors": x[0]}, "vectors: expected a 2-D array"),
    (lambda x: {"vectors": x.astype(np.int64)}, "expected float16/float32/float64 values"),
    (lambda x: {"vectors": np.where(np.arange(32) == 3, np.nan, x)}, "contains NaN or Inf"),
    (lambda x: {"vectors": np.vstack([x, np.zeros((1, 32), np.float32)])}, "row 400 is an all-zero vector"),
    (lambda x: {"vectors": x[:0]}, "vectors: is empty"),
    (lambda x: {"coarse_dim": 33}, "coarse_dim: 33 exceeds the embedding dimension 32"),
    (lambda x: {"coarse_dim": 0}, "coarse_dim: must be >= 1"),
    (lambda x: {"ids": np.r_[np.arange(399), 5]}, "ids: 1 duplicate id(s), e.g. 5"),
    (lambda x: {"ids": np.arange(10)}, "ids: has 10 ids for 400 vectors"),
    (lambda x: {"ids": -np.arange(1, 401)}, "ids: negative id"),
    (lambda x: {"backend": "milvus"}, "backend: unknown backend 'milvus'"),
    (lambda x: {"index": "lsh"}, "index: unknown coarse index type 'lsh'"),
    (lambda x: {"metric": "l2"}, "metric: unknown metric 'l2'"),
    (lambda x: {"rerank": "coarse"}, "rerank: unknown rerank 'coarse'"),
    (lambda x: {"target_recall": 1.5}, "target_recall: must be in (0.0, 1.0]"),
    (lambda x: {"backend_options": {"efs": 3}}, "backend_options: unknown option(s) 'efs' for backend 'faiss'"),
    (lambda x: {"adaptor": "magic"}, "adaptor: expected None, 'pca', 'train'"),
    (lambda x: {"adaptor": PCARotation().fit(make_corpus(50, 16))}, "adaptor: was trained on 16-dimensional"),
    (lambda x: {"payloads": ["a"] * 400}, "payloads: entry 0 is a str; give a dict (or None) per row"),
    (lambda x: {"payloads": [None] * 3}, "payloads: has 3 entries for 400 vectors"),
]


@pytest.mark.parametrize(("change", "message"), BAD_BUILD, ids=[m for _, m in BAD_BUILD])
def test_bad_build_input_gets_its_message(corpus, change, message):
    kw = {"vectors": corpus, "coarse_dim": 8, "quiet": True, **change(corpus)}
    with pytest.raises(InputError) as err:
        MatryoshkaIndex.build(**kw)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


@pytest.fixture
def small_index(corpus):
    return build(corpus[:100], coarse_dim=8)


BAD_USE = [
    (lambda i, x: i.search(x[:, :16]), "queries: has 16 dimensions but 32 are expected"),
    (lambda i, x: i.search(x[0]), "queries: expected a 2-D array"),
    (lambda i, x: i.search(np.full((1, 32), np.inf, np.float32)), "queries: row 0 contains NaN or Inf"),
    (lambda i, x: i.search(np.zeros((2, 32), np.float32)), "queries: row 0 is an all-zero vector"),
    (lambda i, x: i.search(x[:0]), "queries: is empty"),
    (lambda i, x: i.search(x, k=0), "k: must be >= 1, got 0"),
    (lambda i, x: i.search(x, k=10, candidates=5), "candidates: must be >= k (got candidates=5, k=10)"),
    (lambda i, x: i.search(x, k=2.5), "k: expected an integer"),
    (lambda i, x: i.add(x[:2], ids=[0, 1000]), "ids: 1 id(s) already in the index, e.g. 0"),
    (lambda i, x: i.add(x[:2], ids=[500, 500]), "ids: 1 duplicate id(s), e.g. 500"),
    (lambda i, x: i.add(x[:2, :8], ids=[500, 501]), "vectors: has 8 dimensions but 32 are expected"),
    (lambda i, x: i.remove([[1, 2]]), "ids: expected a 1-D array"),
    (lambda i, x: i.calibrate(x, target_recall=0), "target_recall: must be in (0.0, 1.0]"),
]


@pytest.mark.parametrize(("call", "message"), BAD_USE, ids=[m for _, m in BAD_USE])
def test_bad_use_gets_its_message(small_index, queries, call, message):
    with pytest.raises(InputError) as err:
        call(small_index, queries)
    assert message in str(err.value)
    assert len(small_index) == 100  # a rejected call changes nothing


def test_train_needs_enough_vectors():
    with pytest.raises(InputError, match="'train' needs at least 5 vectors, got 3"):
        MatryoshkaIndex.build(make_corpus(3), coarse_dim=4, adaptor="train", quiet=True)


def test_index_type_for_a_backend_without_index_choice_is_rejected(monkeypatch, corpus):
    class NoChoice(FaissBackend):
        @classmethod
        def create(cls, *, coarse_dim, full_dim, metric="cosine"):
            return FaissBackend.create(coarse_dim=coarse_dim, full_dim=full_dim, metric=metric)

    monkeypatch.setattr("matryoshka_index.index.build.get_backend_class", lambda name: NoChoice)
    with pytest.raises(InputError, match="index: the other backend chooses its own coarse index"):
        MatryoshkaIndex.build(corpus, coarse_dim=8, backend="other", index="hnsw", quiet=True)
    assert len(MatryoshkaIndex.build(corpus, coarse_dim=8, backend="other", quiet=True)) == 400


# ---------------------------------------------------------------------- concurrency
@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_concurrent_searches_equal_serial_results(tmp_path, corpus, kind):
    index = _save_load(build(corpus, coarse_dim=8, index=kind, adaptor="pca"), tmp_path / "c.mindex")
    qs = [make_corpus(30, seed=s) for s in range(8)]
    serial = [index.search(q, k=10) for q in qs]
    results: dict[int, tuple] = {}
    errors: list[BaseException] = []

    def work(j: int) -> None:
        try:
            for _ in range(5):
                results[j] = index.search(qs[j], k=10)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(j,)) for j in range(len(qs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for j, (s, i) in enumerate(serial):
        np.testing.assert_array_equal(results[j][1], i)
        np.testing.assert_allclose(results[j][0], s, rtol=1e-6)


def test_searches_during_adds_and_removes_see_consistent_states(corpus):
    index = build(corpus[:100], coarse_dim=8, candidates=400)
    stop = threading.Event()
    errors: list[BaseException] = []

    def searcher() -> None:
        try:
            while not stop.is_set():
                _, found = index.search(corpus[:5], k=3)
                assert (found[:, 0] >= 0).all()
                assert not np.isin(found, np.arange(1000, 1005)).any()  # removed before any search
        except BaseException as exc:
            errors.append(exc)

    index.add(corpus[100:105], ids=np.arange(1000, 1005))
    index.remove(np.arange(1000, 1005))
    threads = [threading.Thread(target=searcher) for _ in range(3)]
    for t in threads:
        t.start()
    for start in range(105, 400, 15):
        index.add(corpus[start : start + 15], ids=np.arange(start, min(start + 15, 400)))
        index.remove([start])
    stop.set()
    for t in threads:
        t.join()
    assert not errors
    assert len(index) == 100 + 295 - len(range(105, 400, 15))


# ---------------------------------------------------------------------- GPU path (simulated)
def test_no_gpu_visible_means_cpu_silently(monkeypatch, corpus, queries, recwarn):
    monkeypatch.setattr(faiss, "get_num_gpus", lambda: 1)  # a GPU is "visible" but faiss-cpu has no GPU resources
    monkeypatch.delattr(faiss, "StandardGpuResources", raising=False)
    index = build(corpus, coarse_dim=8, candidates=400)
    assert index.info()["device"] == "cpu"
    np.testing.assert_array_equal(index.search(queries, k=5)[1], brute_force(corpus, queries, 5)[1])
    assert not [w for w in recwarn.list if "gpu" in str(w.message).lower()]


class FakeGpuIndex:
    """What ``faiss.index_cpu_to_gpu`` returns in these tests: a ``GpuIndex*`` stand-in that counts its searches
    and answers from a CPU copy of the index it was given (so the results must be the CPU index's)."""

    def __init__(self, cpu_index, log):
        self.cpu, self.log, self.nprobe = faiss.clone_index(cpu_index), log, None

    def search(self, queries, k):
        assert queries.dtype == np.float32 and queries.flags.c_contiguous
        self.log.append(("search", len(queries), k, self.nprobe))
        if self.nprobe is not None:
            faiss.extract_index_ivf(self.cpu).nprobe = self.nprobe
        return self.cpu.search(queries, k)


@pytest.fixture
def fake_gpu(monkeypatch):
    """One GPU faked at the faiss boundary (what faiss-gpu adds to the module); the backend's own code runs."""
    from matryoshka_index.backends import gpu_faiss

    log = []

    class StandardGpuResources:
        pass

    class GpuClonerOptions:
        useFloat16 = False

    def index_cpu_to_gpu(res, device, index, options):
        assert isinstance(res, StandardGpuResources) and options.useFloat16 is False
        log.append(("to_gpu", device, type(index).__name__, index.ntotal))
        return FakeGpuIndex(index, log)

    monkeypatch.setattr(gpu_faiss, "_RESOURCES", {})  # resources made under this fake stay in this test
    monkeypatch.setattr(faiss, "get_num_gpus", lambda: 1)
    monkeypatch.setattr(faiss, "StandardGpuResources", StandardGpuResources, raising=False)
    monkeypatch.setattr(faiss, "GpuClonerOptions", GpuClonerOptions, raising=False)
    monkeypatch.setattr(faiss, "index_cpu_to_gpu", index_cpu_to_gpu, raising=False)
    return log


def test_the_index_searches_stage_one_on_the_gpu_copy(fake_gpu, corpus, queries, tmp_path):
    index = build(corpus, coarse_dim=8, candidates=400)
    fake_gpu.clear()
    found = index.search(queries, k=5)[1]
    np.testing.assert_array_equal(found, brute_force(corpus, queries, 5)[1])
    assert fake_gpu == [("to_gpu", 0, "IndexIDMap", 400), ("search", len(queries), 400, None)]
    assert index.info()["device"] == "gpu:0" and index.info()["stages"]["coarse"] == "gpu:0"
    index.search(queries, k=5)
    assert [e[0] for e in fake_gpu] == ["to_gpu", "search", "search"]  # the copy is kept between searches
    index.remove([0])  # a mutation drops the GPU copy; the next search makes a fresh one
    index.search(queries, k=5)
    assert fake_gpu[-2][0::3] == ("to_gpu", 399) and fake_gpu[-1][0] == "search"
    index.save(tmp_path / "g.mindex")  # saved in CPU form: loads and searches where there is no GPU
    back = MatryoshkaIndex.load(tmp_path / "g.mindex", device="cpu")
    np.testing.assert_array_equal(back.search(queries, k=5)[1], index.search(queries, k=5)[1])
    assert back.info()["device"] == "cpu"


def test_ivf_on_the_gpu_copy_uses_the_calibrated_nprobe(fake_gpu, corpus, queries):
    index = build(corpus, coarse_dim=8, index="ivf", backend_options={"nlist": 8})
    fake_gpu.clear()
    index.search(queries, k=5)
    searches = [e for e in fake_gpu if e[0] == "search"]
    assert searches and searches[-1][3] == index.info()["backend"]["params"]["nprobe"] >= 1


def test_more_candidates_than_the_gpu_selects_run_on_the_cpu(fake_gpu, monkeypatch):
    from matryoshka_index.backends import gpu_faiss

    monkeypatch.setattr(gpu_faiss, "MAX_K", 64)
    x = make_corpus(300, 16, seed=5)
    index = build(x, coarse_dim=8, candidates=50)
    fake_gpu.clear()
    index.search(x[:4], k=5)
    assert [e[0] for e in fake_gpu] == ["to_gpu", "search"]
    np.testing.assert_array_equal(index.search(x[:4], k=5, candidates=300)[1], brute_force(x, x[:4], 5)[1])
    assert [e[0] for e in fake_gpu] == ["to_gpu", "search"]  # 300 > MAX_K: not sent to the GPU copy


def test_failing_gpu_copy_falls_back_to_cpu(fake_gpu, monkeypatch, corpus, queries):
    monkeypatch.setattr(faiss, "index_cpu_to_gpu", lambda *a: (_ for _ in ()).throw(RuntimeError("CUDA")))
    index = build(corpus, coarse_dim=8, candidates=400)
    np.testing.assert_array_equal(index.search(queries, k=5)[1], brute_force(corpus, queries, 5)[1])
    assert index.info()["device"] == "cpu"


# ---------------------------------------------------------------------- parts for other backends
def test_attach_index_metadata_is_called_after_build_add_and_remove(monkeypatch, corpus):
    calls = []
    monkeypatch.setattr(
        FaissBackend, "attach_index_metadata", lambda self, m, files: calls.append((m, files)), raising=False
    )
    index = build(corpus[:50], coarse_dim=8, adaptor="pca")
    index.add(corpus[50:60])
    index.remove([0])
    assert [m["count"] for m, _ in calls] == [50, 60, 59]
    manifest, files = calls[0]
    assert manifest["format"] == "matryoshka-index" and manifest["adaptor"]["kind"] == "pca"
    assert set(files) == {"pca.json", "pca_rotation.npy"}
    rebuilt = MatryoshkaIndex.from_parts(PCARotation.from_files(files), index.backend, calls[-1][0])
    np.testing.assert_array_equal(rebuilt.search(corpus[:5], k=3)[1], index.search(corpus[:5], k=3)[1])


def test_from_qdrant_delegates_to_the_qdrant_backend(monkeypatch):
    seen = {}

    def open_index_from_qdrant(cls, collection, **kw):
        seen.update(cls=cls, collection=collection, **kw)
        return "opened"

    # the function lives in qdrant_open (above the backends) after issue 10, in the backend before
    for name in ("matryoshka_index.qdrant_open", "matryoshka_index.backends.qdrant_backend"):
        fake = types.ModuleType(name)
        fake.open_index_from_qdrant = open_index_from_qdrant
        monkeypatch.setitem(sys.modules, name, fake)
    assert MatryoshkaIndex.from_qdrant("docs", url="http://q:6333", timeout=5) == "opened"
    assert seen == {
        "cls": MatryoshkaIndex,
        "collection": "docs",
        "url": "http://q:6333",
        "path": None,
        "client": None,
        "timeout": 5,
    }


def test_from_parts_rejects_a_manifest_that_does_not_fit(corpus):
    index = build(corpus[:20], coarse_dim=4)
    with pytest.raises(FormatError, match="manifest is incomplete"):
        MatryoshkaIndex.from_parts(None, index.backend, {"metric": "cosine"})


def test_pca_rotation_round_trips_and_keeps_inner_products(tmp_path, corpus):
    pca = PCARotation().fit(corpus)
    r = pca.rotation_
    np.testing.assert_allclose(r.T @ r, np.eye(32), atol=1e-5)
    np.testing.assert_allclose(pca.transform(corpus) @ pca.transform(corpus).T, corpus @ corpus.T, rtol=1e-3, atol=1e-3)
    pca.save(tmp_path / "p")
    np.testing.assert_array_equal(PCARotation.load(tmp_path / "p").rotation_, r)
    np.testing.assert_array_equal(PCARotation.from_files(pca.to_files()).rotation_, r)
    (tmp_path / "p" / "pca_rotation.npy").write_bytes(b"x")
    with pytest.raises(FormatError, match="checksum does not match"):
        PCARotation.load(tmp_path / "p")


def test_save_refuses_to_replace_a_folder_that_is_not_an_index(tmp_path, corpus):
    index = build(corpus[:20], coarse_dim=4)
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "thesis.txt").write_text("irreplaceable")
    with pytest.raises(InputError, match="is not a matryoshka index; refusing to replace it"):
        index.save(tmp_path / "docs")
    assert (tmp_path / "docs" / "thesis.txt").read_text() == "irreplaceable"
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="exists and is not a directory"):
        index.save(tmp_path / "file")
    (tmp_path / "empty").mkdir()
    index.save(tmp_path / "empty")  # an empty folder is fine
    assert len(MatryoshkaIndex.load(tmp_path / "empty")) == 20


def test_load_rejects_unknown_backend_options(saved):
    with pytest.raises(
        InputError, match=r"backend_options: unknown option\(s\) 'nprobes' for backend 'faiss'; accepted: mmap"
    ):
        MatryoshkaIndex.load(saved, nprobes=3)


def test_exhaustive_ivf_probe_runs_as_a_flat_search_with_the_same_rows(corpus):
    index = build(corpus, coarse_dim=8, index="ivf")
    index.remove(np.arange(0, 400, 5))
    be = index.backend
    coarse_q, _ = index._prepare(make_corpus(30, seed=4))
    nlist = be.search_knob()[1][-1]
    via_flat = be._ivf_exhaustive_rows(coarse_q, 50)
    _, via_ivf = be._coarse.search(coarse_q, 50, params=faiss.SearchParametersIVF(nprobe=nlist))
    np.testing.assert_array_equal(via_flat, via_ivf)
    be.set_search_knob(nlist)
    np.testing.assert_array_equal(be._coarse_rows(coarse_q, 50), via_flat)
