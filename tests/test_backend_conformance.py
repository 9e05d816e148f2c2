"""One conformance suite for every storage backend: what ``backends/base.py`` promises, checked alike.

Parametrised over FAISS, Qdrant (qdrant-client's local mode, in memory) and qdrant-edge (skipped
with the reason when the ``edge`` extra is missing). Each backend's own test file keeps only what
is its own (filters, snapshots, retries, GPU, HNSW/IVF/PQ details).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from matryoshka_index.backends import (
    CAPABILITIES,
    Closeable,
    PointLookup,
    ReportsTimings,
    SearchBackend,
    SearchKnob,
    StoresIndexMetadata,
    TrainableCoarse,
    get_backend_class,
)
from matryoshka_index.errors import InputError

N, D, C = 600, 24, 8
KINDS = ("faiss", "qdrant", "qdrant-edge")
# Options that make the coarse stage exact on each backend, so results can be compared with numpy.
EXACT = {"faiss": {"index": "flat", "device": "cpu"}, "qdrant": {}, "qdrant-edge": {"index": "flat"}}


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(11)
    full = _unit(rng.standard_normal((N, D)))
    coarse = _unit(full[:, :C] + 0.3 * rng.standard_normal((N, C)))  # correlated, as an adapted prefix is
    ids = (np.arange(N, dtype=np.int64) * 5 + 2)[rng.permutation(N)]
    queries = _unit(full[:7] + 0.2 * rng.standard_normal((7, D)))
    return ids, coarse, full, queries, _unit(queries[:, :C])


def backend_class(kind: str) -> type:
    if kind == "qdrant-edge":
        pytest.importorskip("qdrant_edge", reason='qdrant-edge is not installed (pip install "matryoshka-index[edge]")')
    return get_backend_class(kind)


def create(kind: str, coarse_dim: int = C, full_dim: int = D, metric: str = "cosine"):
    return backend_class(kind).create(coarse_dim=coarse_dim, full_dim=full_dim, metric=metric, **EXACT[kind])


@pytest.fixture(params=KINDS)
def kind(request) -> str:
    return request.param


@pytest.fixture
def filled(kind, data):
    ids, coarse, full, _, _ = data
    be = create(kind)
    be.add(ids, coarse, full)
    yield be
    if isinstance(be, Closeable):
        be.close()


def two_stage_numpy(ids, coarse, full, cq, q, k, candidates):
    cand = np.argsort(-(cq @ coarse.T), axis=1, kind="stable")[:, :candidates]
    fs = np.take_along_axis(q @ full.T, cand, 1)
    order = np.argsort(-fs, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(fs, order, 1), ids[np.take_along_axis(cand, order, 1)]


def test_registered_and_implements_the_protocol(kind, filled):
    cls = backend_class(kind)
    assert get_backend_class(kind) is cls and cls.kind == kind == filled.kind
    assert isinstance(filled, SearchBackend)
    assert (filled.coarse_dim, filled.full_dim) == (C, D)


def test_two_stage_search_equals_numpy(filled, data):
    ids, coarse, full, q, cq = data
    for k, candidates in ((10, 40), (5, 200), (10, 10)):
        scores, found = filled.search(cq, q, k, candidates)
        ref_scores, ref_ids = two_stage_numpy(ids, coarse, full, cq, q, k, candidates)
        np.testing.assert_array_equal(found, ref_ids)
        np.testing.assert_allclose(scores, ref_scores, atol=1e-5)
        assert found.dtype == np.int64 and scores.dtype == np.float32


def test_exact_and_coarse_search_equal_numpy(filled, data):
    ids, coarse, full, q, cq = data
    s, i = filled.exact_search(q, 10)
    truth = np.argsort(-(q @ full.T), axis=1, kind="stable")[:, :10]
    np.testing.assert_array_equal(i, ids[truth])
    np.testing.assert_allclose(s, np.take_along_axis(q @ full.T, truth, 1), atol=1e-5)
    _, ci = filled.coarse_search(cq, 5)
    np.testing.assert_array_equal(ci, ids[np.argsort(-(cq @ coarse.T), axis=1, kind="stable")[:, :5]])


def test_k_larger_than_the_store_pads_with_minus_one_and_minus_inf(kind):
    be = create(kind, coarse_dim=2, full_dim=3, metric="ip")
    be.add(np.array([5, 9]), np.eye(2, dtype=np.float32), np.eye(3, dtype=np.float32)[:2])
    for s, i in (
        be.search(np.ones((1, 2), np.float32), np.ones((1, 3), np.float32), 4, 10),
        be.exact_search(np.ones((1, 3), np.float32), 4),
    ):
        assert sorted(i[0, :2].tolist()) == [5, 9] and i[0, 2:].tolist() == [-1, -1]
        assert np.isfinite(s[0, :2]).all() and np.isneginf(s[0, 2:]).all()


def test_add_contains_remove_ids_len(kind):
    rng = np.random.default_rng(1)
    be = create(kind, coarse_dim=4, full_dim=8)
    ids = np.arange(0, 60, 3, dtype=np.int64)
    be.add(ids, _unit(rng.standard_normal((20, 4))), _unit(rng.standard_normal((20, 8))))
    assert len(be) == 20 and sorted(be.ids().tolist()) == ids.tolist()
    assert be.ids().dtype == np.int64
    assert be.contains(np.array([0, 1, 57])).tolist() == [True, False, True]
    assert be.remove(np.array([0, 1, 3])) == 2
    assert len(be) == 18 and not be.contains(np.array([0, 3])).any()
    s, i = be.search(np.ones((1, 4), np.float32), np.ones((1, 8), np.float32), 25, 30)
    assert (i[0, :18] >= 0).all() and (i[0, 18:] == -1).all() and np.isneginf(s[0, 18:]).all()
    assert 0 not in i and 3 not in i  # removed ids are never returned
    assert 0 not in be.exact_search(np.ones((1, 8), np.float32), 25)[1]


def test_wrong_dimensions_are_one_line(kind):
    be = create(kind, coarse_dim=4, full_dim=8)
    with pytest.raises(InputError, match=r"add: expected coarse \(1, 4\) and full \(1, 8\)"):
        be.add(np.array([100]), np.zeros((1, 5), np.float32), np.zeros((1, 8), np.float32))
    with pytest.raises(InputError, match="expected coarse"):
        be.add(np.array([100]), np.zeros((1, 4), np.float32), np.zeros((1, 7), np.float32))
    assert len(be) == 0


def test_save_then_open_gives_the_same_results(kind, filled, data, tmp_path: Path):
    _, _, _, q, cq = data
    section = json.loads(json.dumps(filled.save(tmp_path)))  # the section is plain JSON
    expected = filled.search(cq, q, 10, 50)
    reopened = backend_class(kind).open(tmp_path, section)
    try:
        assert len(reopened) == len(filled)
        assert sorted(reopened.ids().tolist()) == sorted(filled.ids().tolist())
        got = reopened.search(cq, q, 10, 50)
        np.testing.assert_array_equal(got[1], expected[1])
        np.testing.assert_allclose(got[0], expected[0], atol=1e-6)
    finally:
        if isinstance(reopened, Closeable):
            reopened.close()


def test_info_is_plain_json(filled):
    info = filled.info()
    assert isinstance(info, dict) and json.loads(json.dumps(info)) == info  # mindex info prints it as JSON


# What each backend declares it can do (the protocols check the names; the index relies on them).
# PointLookup is left out until the Qdrant backends implement it (the Qdrant side of issue 10).
DECLARED = {
    "faiss": {TrainableCoarse, SearchKnob, ReportsTimings},
    "qdrant": {StoresIndexMetadata, Closeable},
    "qdrant-edge": {Closeable},
}


def test_capabilities_are_what_each_backend_declares(kind, filled):
    have = {cap for cap in CAPABILITIES if isinstance(filled, cap)} - {PointLookup}
    assert have == DECLARED[kind]
    if isinstance(filled, ReportsTimings):
        timings: dict[str, float] = {}
        filled.search(np.ones((1, C), np.float32), np.ones((1, D), np.float32), 3, 10, timings=timings)
        assert set(timings) >= {"coarse", "rerank"}


def test_close_is_idempotent_when_declared(kind, data):
    if not issubclass(backend_class(kind), Closeable):
        pytest.skip(f"{kind} holds nothing to close")
    be = create(kind)
    be.close()
    be.close()


def test_shared_constants_and_the_quantized_size():
    from matryoshka_index.backends import COARSE, FULL, METRICS, quantized_bytes

    assert (COARSE, FULL, METRICS) == ("coarse", "full", ("cosine", "ip"))
    assert [quantized_bytes(64, q) for q in (None, "int8", "binary")] == [0, 64, 8]
    assert quantized_bytes(65, "binary") == 9
