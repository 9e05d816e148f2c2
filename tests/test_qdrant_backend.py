"""Qdrant backend in qdrant-client local mode: two-stage search, filters, ids, metadata, persistence, errors."""

from __future__ import annotations

import json
import socket
import tempfile
from pathlib import Path

import numpy as np
import pytest
from qdrant_client import QdrantClient
from qdrant_client import models as qm

from matryoshka_index.backends import get_backend_class
from matryoshka_index.backends.qdrant import errors as qdrant_errors
from matryoshka_index.backends.qdrant.metadata import COMPANION_SUFFIX, META_KEY, point_handle
from matryoshka_index.backends.qdrant.server import QdrantBackend
from matryoshka_index.errors import BackendError, FormatError, InputError
from matryoshka_index.qdrant_open import open_index_from_qdrant

N, D, C = 2000, 48, 12


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(7)
    full = _unit(rng.standard_normal((N, D)))
    # a coarse vector that correlates with the full one, as an adapted prefix does
    coarse = _unit(full[:, :C] + 0.3 * rng.standard_normal((N, C)))
    ids = (np.arange(N, dtype=np.int64) * 7 + 3)[rng.permutation(N)]
    queries = _unit(full[:6] + 0.2 * rng.standard_normal((6, D)))
    cqueries = _unit(queries[:, :C])
    payloads = [{"group": int(i % 4), "name": f"p{i}"} for i in range(N)]
    return ids, coarse, full, queries, cqueries, payloads


@pytest.fixture(scope="module")
def backend(data):
    ids, coarse, full, _, _, payloads = data
    be = QdrantBackend.create(coarse_dim=C, full_dim=D, metric="cosine", collection="t")
    be.add(ids, coarse, full, payloads)
    yield be
    be.close()


def _two_stage_numpy(ids, coarse, full, cq, q, k, candidates, mask=None):
    cs = cq @ coarse.T
    if mask is not None:
        cs[:, ~mask] = -np.inf
    cand = np.argsort(-cs, axis=1, kind="stable")[:, :candidates]
    fs = np.take_along_axis(q @ full.T, cand, 1)
    if mask is not None:
        fs[~mask[cand]] = -np.inf
    order = np.argsort(-fs, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(fs, order, 1), ids[np.take_along_axis(cand, order, 1)]


def test_registered_and_protocol(backend):
    from matryoshka_index.backends import SearchBackend

    assert get_backend_class("qdrant") is QdrantBackend
    assert isinstance(backend, SearchBackend)
    assert backend.kind == "qdrant"


def test_search_equals_brute_force_two_stage(backend, data):
    ids, coarse, full, q, cq, _ = data
    scores, found = backend.search(cq, q, 10, 50)
    ref_scores, ref_ids = _two_stage_numpy(ids, coarse, full, cq, q, 10, 50)
    np.testing.assert_array_equal(found, ref_ids)
    np.testing.assert_allclose(scores, ref_scores, atol=1e-5)
    # the prefetch really limits the rerank to the coarse candidates: with 10 candidates the
    # result is the coarse top-10 reordered, which differs from exact search
    _, few = backend.search(cq, q, 10, 10)
    _, ref_few = _two_stage_numpy(ids, coarse, full, cq, q, 10, 10)
    np.testing.assert_array_equal(few, ref_few)


def test_search_equals_faiss_backend(backend, data):
    faiss_cls = get_backend_class("faiss")  # ships with the package: an import failure is a failure
    ids, coarse, full, q, cq, _ = data
    fb = faiss_cls.create(coarse_dim=C, full_dim=D, metric="cosine", index="flat", device="cpu")
    fb.add(ids, coarse, full)
    for k, cands in ((10, 40), (5, 200)):
        fs, fi = fb.search(cq, q, k, cands)
        qs, qi = backend.search(cq, q, k, cands)
        np.testing.assert_array_equal(qi, fi)
        np.testing.assert_allclose(qs, fs, atol=1e-5)
    np.testing.assert_array_equal(backend.exact_search(q, 10)[1], fb.exact_search(q, 10)[1])


def test_exact_and_coarse_search(backend, data):
    ids, coarse, full, q, cq, _ = data
    s, i = backend.exact_search(q, 10)
    truth = np.argsort(-(q @ full.T), axis=1)[:, :10]
    np.testing.assert_array_equal(i, ids[truth])
    np.testing.assert_allclose(s, np.take_along_axis(q @ full.T, truth, 1), atol=1e-5)
    _, ci = backend.coarse_search(cq, 5)
    np.testing.assert_array_equal(ci, ids[np.argsort(-(cq @ coarse.T), axis=1)[:, :5]])


def test_filter_passes_through_both_stages(backend, data):
    ids, coarse, full, q, cq, payloads = data
    flt = qm.Filter(must=[qm.FieldCondition(key="group", match=qm.MatchValue(value=2))])
    _, found = backend.search(cq, q, 10, 30, query_filter=flt)
    mask = np.array([p["group"] == 2 for p in payloads])
    _, ref = _two_stage_numpy(ids, coarse, full, cq, q, 10, 30, mask=mask)
    np.testing.assert_array_equal(found, ref)
    groups = {int(ids.tolist().index(i)) % 4 for i in found.ravel()}
    assert groups == {2}
    hits = backend.search_points(cq[:1], q[:1], 3, 30, query_filter=flt)
    assert all(h.payload["group"] == 2 for h in hits[0])


def test_k_larger_than_collection_pads_empty():
    be = QdrantBackend.create(coarse_dim=2, full_dim=3, metric="ip")
    be.add(np.array([5, 9]), np.eye(2, dtype=np.float32), np.eye(3, dtype=np.float32)[:2])
    s, i = be.search(np.ones((1, 2), np.float32), np.ones((1, 3), np.float32), 4, 10)
    assert i.tolist() == [[5, 9, -1, -1]] or i.tolist() == [[9, 5, -1, -1]]
    assert np.isneginf(s[0, 2:]).all()


def test_add_contains_remove_ids_len():
    rng = np.random.default_rng(1)
    be = QdrantBackend.create(coarse_dim=4, full_dim=8, metric="cosine", upload_batch_size=7)
    ids = np.arange(0, 60, 3, dtype=np.int64)
    be.add(ids, _unit(rng.standard_normal((20, 4))), _unit(rng.standard_normal((20, 8))))
    assert len(be) == 20
    assert sorted(be.ids().tolist()) == ids.tolist()
    assert be.contains(np.array([0, 1, 57])).tolist() == [True, False, True]
    assert be.remove(np.array([0, 1, 3])) == 2
    assert len(be) == 18 and not be.contains(np.array([0, 3])).any()
    with pytest.raises(InputError, match="expected coarse"):
        be.add(np.array([100]), np.zeros((1, 5), np.float32), np.zeros((1, 8), np.float32))


def test_metadata_stored_with_collection_and_hidden_from_counts(backend):
    big = bytes(range(256)) * 5000  # > 1 MiB: stored in several chunks
    files = {"adaptor.safetensors": big, "adaptor.json": b'{"x": 1}'}
    backend.attach_index_metadata({"format": "matryoshka-index", "count": len(backend)}, files)
    manifest, got = backend.read_index_metadata()
    assert manifest["count"] == N and got == files
    meta = backend.client.get_collection("t").config.metadata
    record = json.loads(meta[META_KEY])
    assert (
        record["format"] == "matryoshka-index-qdrant"
        and record["adaptor"]["files"]["adaptor.safetensors"]["chunks"] == 3
    )
    assert len(backend) == N  # the adaptor lives in the companion, never in the main collection
    assert backend.client.count("t" + COMPANION_SUFFIX).count == 4
    # the index re-sends the same adaptor after every change: nothing is rewritten
    calls = []
    original = backend.metadata.write_blobs
    backend.metadata.write_blobs = lambda f: calls.append(1) or original(f)
    try:
        backend.attach_index_metadata({"format": "matryoshka-index", "count": 1}, files)
    finally:
        backend.metadata.write_blobs = original
    assert calls == []
    # a new adaptor replaces the old chunks
    backend.attach_index_metadata({"format": "matryoshka-index"}, {"adaptor.json": b"{}"})
    assert backend.read_index_metadata()[1] == {"adaptor.json": b"{}"}
    assert backend.client.count("t" + COMPANION_SUFFIX).count == 1


def test_metadata_fallback_without_collection_metadata(monkeypatch):
    """A server older than 1.16 keeps no collection metadata: records go to the companion collection."""
    be = QdrantBackend.create(coarse_dim=2, full_dim=4, metric="cosine", collection="old")
    real_update = be.client.update_collection

    def no_metadata(name, metadata=None, **kw):  # what an old server does: accept, ignore
        return real_update(name, **kw)

    monkeypatch.setattr(be.client, "update_collection", no_metadata)
    be.attach_index_metadata({"hello": "world"}, {"adaptor.json": b"{}"})
    assert be.client.get_collection("old").config.metadata is None
    manifest, files = be.read_index_metadata()
    assert manifest == {"hello": "world"} and files == {"adaptor.json": b"{}"}
    assert len(be) == 0


def test_snapshot_save_and_open_roundtrip(data, tmp_path):
    ids, coarse, full, q, cq, payloads = data
    be = QdrantBackend.create(coarse_dim=C, full_dim=D, metric="cosine")
    be.add(ids[:500], coarse[:500], full[:500], payloads[:500])
    be.attach_index_metadata({"m": 1}, {"adaptor.json": b"{}"})
    section = json.loads(json.dumps(be.save(tmp_path)))
    assert section["mode"] == "memory"
    assert sorted(p.name for p in (tmp_path / "qdrant").iterdir()) == [
        "coarse.npy",
        "collection.json",
        "full.npy",
        "ids.npy",
        "payloads.jsonl",
    ]
    be2 = QdrantBackend.open(tmp_path, section)
    assert len(be2) == 500
    np.testing.assert_array_equal(be2.search(cq, q, 10, 50)[1], be.search(cq, q, 10, 50)[1])
    assert be2.read_index_metadata() == ({"m": 1}, {"adaptor.json": b"{}"})
    got = be2.client.retrieve(be2.collection, [int(ids[3])], with_payload=True)
    assert got[0].payload == payloads[3]


def _fast_dir(tmp_path: Path) -> Path:
    # local path mode commits one SQLite transaction per point: tmpfs keeps the tests quick
    shm = Path("/dev/shm")
    if shm.is_dir():
        return Path(tempfile.mkdtemp(dir=shm, prefix="mindex-test-"))
    return tmp_path


def test_path_mode_save_records_path_and_reopens(data, tmp_path):
    import shutil

    ids, coarse, full, q, cq, _ = data
    storage = _fast_dir(tmp_path) / "qdrant"
    try:
        be = QdrantBackend.create(coarse_dim=C, full_dim=D, path=storage, collection="docs")
        be.add(ids[:300], coarse[:300], full[:300])
        section = be.save(tmp_path / "index")
        assert section["mode"] == "path" and section["path"] == str(storage.absolute())
        expected = be.search(cq, q, 5, 40)[1]
        with pytest.raises(BackendError, match="open in another client"):
            QdrantBackend.open(tmp_path / "index", section)
        be.close()
        be2 = QdrantBackend.open(tmp_path / "index", section)
        np.testing.assert_array_equal(be2.search(cq, q, 5, 40)[1], expected)
        assert be2.info()["mode"] == "path"
        be2.close()
    finally:
        shutil.rmtree(storage.parent, ignore_errors=True)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_server_down_is_one_clear_line():
    url = f"http://127.0.0.1:{_closed_port()}"
    with pytest.raises(BackendError) as err:
        QdrantBackend.create(coarse_dim=2, full_dim=4, url=url, max_retries=0)
    msg = str(err.value)
    assert msg.startswith(f"cannot reach Qdrant at {url}") and msg.endswith("is the server running?")
    assert "\n" not in msg


def test_transient_errors_are_retried_with_backoff(monkeypatch):
    import httpx
    from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

    slept: list[float] = []
    monkeypatch.setattr(qdrant_errors.time, "sleep", slept.append)
    attempts = iter(
        [
            ResponseHandlingException(httpx.ConnectError("reset")),
            UnexpectedResponse(503, "busy", b"{}", httpx.Headers()),
        ]
    )

    def flaky():
        exc = next(attempts, None)
        if exc is not None:
            raise exc
        return "ok"

    assert qdrant_errors.call(flaky, "http://x", retries=3) == "ok"
    assert len(slept) == 2 and slept[1] > slept[0] * 0.9  # exponential backoff (with jitter)

    # a refusal that is not transient is not retried, and reads as one line
    def refuse():
        raise UnexpectedResponse(400, "Bad Request", b'{"status": {"error": "Wrong input: bad"}}', httpx.Headers())

    with pytest.raises(BackendError, match=r"refused the request \(400: Wrong input: bad\)"):
        qdrant_errors.call(refuse, "http://x", retries=3)
    assert len(slept) == 2


def test_bad_options_one_line():
    with pytest.raises(InputError, match="unknown option"):
        QdrantBackend.create(coarse_dim=2, full_dim=4, colection="typo")
    with pytest.raises(InputError, match="coarse_quantization"):
        QdrantBackend.create(coarse_dim=2, full_dim=4, coarse_quantization="int4")
    with pytest.raises(InputError, match="metric"):
        QdrantBackend.create(coarse_dim=2, full_dim=4, metric="l2")
    with pytest.raises(InputError, match="only one of"):
        QdrantBackend.create(coarse_dim=2, full_dim=4, url="http://x", path="/tmp/y")
    client = QdrantClient(":memory:")
    QdrantBackend.create(coarse_dim=2, full_dim=4, client=client, collection="dup")
    with pytest.raises(InputError, match="already exists"):
        QdrantBackend.create(coarse_dim=2, full_dim=4, client=client, collection="dup")


def test_uuid_ids_get_stable_handles_and_map_back():
    client = QdrantClient(":memory:")
    client.create_collection(
        "u",
        vectors_config={
            "coarse": qm.VectorParams(size=2, distance=qm.Distance.COSINE),
            "full": qm.VectorParams(size=3, distance=qm.Distance.COSINE),
        },
    )
    uid = "5f2b6a3e-1c1d-4a0b-9d2e-0e6f2a9b7c11"
    client.upsert(
        "u",
        [
            qm.PointStruct(id=uid, vector={"coarse": [1, 0], "full": [1, 0, 0]}),
            qm.PointStruct(id=4, vector={"coarse": [0, 1], "full": [0, 1, 0]}),
        ],
    )
    be = QdrantBackend.from_collection(client, "u")
    _, found = be.search(np.array([[1, 0.1]], np.float32), np.array([[1, 0.1, 0]], np.float32), 2, 2)
    assert found[0].tolist() == [point_handle(uid), 4]
    assert point_handle(uid) == point_handle(uid) >= 0 and point_handle(7) == 7
    assert be.point_ids(found[0]) == [uid, 4]
    # a fresh backend that has not seen the handle maps it back after one ids scan
    fresh = QdrantBackend.from_collection(client, "u")
    fresh._has_foreign_ids = True
    assert fresh.point_ids([point_handle(uid), -1]) == [uid, None]
    assert fresh.contains(np.array([point_handle(uid), 5])).tolist() == [True, False]
    assert fresh.remove(np.array([point_handle(uid)])) == 1 and len(fresh) == 1


class _StubIndex:
    @classmethod
    def from_parts(cls, adaptor, backend, manifest):
        obj = cls()
        obj.adaptor, obj.backend, obj.manifest = adaptor, backend, manifest
        return obj


def _manifest(coarse_dim: int, dim: int) -> dict:
    from matryoshka_index.manifest import make_manifest

    return make_manifest(
        metric="cosine",
        input_dim=dim,
        coarse_dim=coarse_dim,
        full_dim=dim,
        rerank="original",
        adaptor_kind="matryoshka-adaptor",
        adaptor_directory=None,
        count=0,
        candidates=40,
        calibration={},
        backend={"kind": "qdrant"},
    )


@pytest.fixture(scope="module")
def tiny_adaptor():
    from matryoshka_index import MatryoshkaAdaptor

    x = _unit(np.random.default_rng(3).standard_normal((300, 16)))
    return MatryoshkaAdaptor(matryoshka_dims=[4], epochs=1, batch_size=64, device="cpu", quiet=True).fit(x)


def test_open_index_from_qdrant_resolves_alias_and_checks_dims(tiny_adaptor):
    client = QdrantClient(":memory:")
    be = QdrantBackend.create(coarse_dim=4, full_dim=16, client=client, collection="idx_v1")
    be.attach_index_metadata(_manifest(4, 16), tiny_adaptor.to_files())
    client.update_collection_aliases(
        change_aliases_operations=[
            qm.CreateAliasOperation(create_alias=qm.CreateAlias(collection_name="idx_v1", alias_name="idx"))
        ]
    )
    opened = open_index_from_qdrant(_StubIndex, "idx", client=client, device="cpu")
    assert opened.backend.collection == "idx_v1" and opened.manifest["candidates"] == 40
    assert opened.adaptor.input_dim_ == 16
    x = np.ones((1, 16), np.float32)
    np.testing.assert_array_equal(opened.adaptor.transform(x), tiny_adaptor.transform(x))

    # a collection whose vectors do not match the adaptor is refused with one line
    bad = QdrantBackend.create(coarse_dim=4, full_dim=24, client=client, collection="bad")
    bad.attach_index_metadata(_manifest(4, 24), tiny_adaptor.to_files())
    with pytest.raises(InputError) as err:
        open_index_from_qdrant(_StubIndex, "bad", client=client, device="cpu")
    assert "does not match its adaptor" in str(err.value) and "\n" not in str(err.value)

    with pytest.raises(InputError, match="no collection or alias named 'nope'"):
        open_index_from_qdrant(_StubIndex, "nope", client=client)
    plain = QdrantBackend.create(coarse_dim=4, full_dim=16, client=client, collection="plain")
    assert plain.collection == "plain"
    with pytest.raises(InputError, match="has no matryoshka-index metadata"):
        open_index_from_qdrant(_StubIndex, "plain", client=client)
    with pytest.raises(InputError, match="not a Qdrant local-mode storage"):
        open_index_from_qdrant(_StubIndex, "idx", path="/nonexistent/dir")


def test_newer_metadata_format_is_refused(tiny_adaptor):
    client = QdrantClient(":memory:")
    be = QdrantBackend.create(coarse_dim=4, full_dim=16, client=client, collection="c")
    be.attach_index_metadata(_manifest(4, 16), tiny_adaptor.to_files())
    record = be.metadata.read()
    be.metadata.write({**record, "format_version": 99})
    with pytest.raises(FormatError, match="format version 99 is not supported"):
        open_index_from_qdrant(_StubIndex, "c", client=client)


def test_matryoshka_index_build_on_qdrant_and_from_qdrant(tiny_adaptor, tmp_path):
    import matryoshka_index.index as index_mod

    MatryoshkaIndex = index_mod.MatryoshkaIndex
    rng = np.random.default_rng(5)
    x = _unit(rng.standard_normal((400, 16)))
    client = QdrantClient(":memory:")
    idx = MatryoshkaIndex.build(
        x,
        coarse_dim=4,
        adaptor=tiny_adaptor,
        backend="qdrant",
        backend_options={"client": client, "collection": "built"},
        candidates=50,
        calibration_queries=20,
        quiet=True,
    )
    reopened = MatryoshkaIndex.from_qdrant("built", client=client, device="cpu")
    assert len(reopened) == 400 and reopened.candidates == idx.candidates
    np.testing.assert_array_equal(idx.search(x[:3], k=5)[1], reopened.search(x[:3], k=5)[1])
    # local mode in memory saves a snapshot into the index directory and loads it back
    idx2 = MatryoshkaIndex.build(
        x,
        coarse_dim=4,
        adaptor=tiny_adaptor,
        backend="qdrant",
        backend_options={"location": ":memory:"},
        candidates=50,
        calibration_queries=20,
        quiet=True,
    )
    idx2.save(tmp_path / "ix")
    loaded = MatryoshkaIndex.load(tmp_path / "ix")
    assert len(loaded) == 400


def test_embedded_qdrant_is_qdrant_edge_when_installed_else_local_mode_with_a_warning(monkeypatch):
    import sys

    from matryoshka_index.index import embedded_qdrant_backend

    # a server, a client or a local-mode location: qdrant-client, whatever is installed
    for opts in ({"url": "http://h:6333"}, {"location": ":memory:"}, {"path": "/tmp/x"}, {"client": object()}):
        assert embedded_qdrant_backend(opts) == "qdrant"
    try:
        import qdrant_edge  # noqa: F401

        assert embedded_qdrant_backend({}) == "qdrant-edge"
        assert embedded_qdrant_backend({"hnsw_m": 8, "on_disk": True}) == "qdrant-edge"
        # an option only qdrant-client has keeps local mode
        with pytest.warns(UserWarning, match="local mode"):
            assert embedded_qdrant_backend({"shard_number": 2}) == "qdrant"
    except ImportError:
        pass
    monkeypatch.setitem(sys.modules, "qdrant_edge", None)  # the extra is not installed
    monkeypatch.delitem(sys.modules, "matryoshka_index.backends.qdrant.edge", raising=False)
    with pytest.warns(UserWarning, match=r'pip install "matryoshka-index\[edge\]"'):
        assert embedded_qdrant_backend({}) == "qdrant"


def test_external_ids_and_payloads_of_int_and_uuid_points():
    """PointLookup: the point id exactly as stored (int or UUID string) and its payload, per handle."""
    client = QdrantClient(":memory:")
    client.create_collection(
        "mixed",
        vectors_config={
            "coarse": qm.VectorParams(size=2, distance=qm.Distance.DOT),
            "full": qm.VectorParams(size=3, distance=qm.Distance.DOT),
        },
    )
    uid = "5F2B6A3E-1C1D-4A0B-9D2E-0E6F2A9B7C11"  # Qdrant answers with the canonical lower-case form
    client.upsert(
        "mixed",
        [
            qm.PointStruct(id=uid, vector={"coarse": [1, 0], "full": [1, 0, 0]}, payload={"kind": "uuid"}),
            qm.PointStruct(id=4, vector={"coarse": [0.9, 0.1], "full": [0.9, 0.1, 0]}, payload={"kind": "int"}),
            qm.PointStruct(id=9, vector={"coarse": [0, 1], "full": [0, 1, 0]}),
        ],
    )
    be = QdrantBackend.from_collection(client, "mixed")
    _, found = be.search(np.array([[1, 0]], np.float32), np.array([[1, 0, 0]], np.float32), 4, 4)
    assert found[0].tolist() == [point_handle(uid.lower()), 4, 9, -1]
    assert be.external_ids(found[0]) == [uid.lower(), 4, 9, None]
    assert be.payloads(found[0]) == [{"kind": "uuid"}, {"kind": "int"}, None, None]
    # a fresh backend resolves UUID handles it has not seen (one ids-only scan) and absent ids give None
    fresh = QdrantBackend.from_collection(client, "mixed")
    fresh._has_foreign_ids = True
    assert fresh.external_ids(np.array([point_handle(uid.lower()), 77])) == [uid.lower(), 77]
    assert fresh.payloads(np.array([4, 77, point_handle(uid.lower())])) == [{"kind": "int"}, None, {"kind": "uuid"}]
