"""qdrant-edge backend (Qdrant's engine in-process): two-stage search equal to FAISS, HNSW/int8, filters,
add/remove, save/load of the shard inside the index directory, one process per shard directory, errors.

Every test but the first needs ``qdrant-edge-py`` (the ``edge`` extra) and is skipped, with the
reason, when it is not installed.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from matryoshka_index.backends import get_backend_class
from matryoshka_index.errors import BackendError, FormatError, InputError

N, D, C = 2000, 48, 12
SKIP_REASON = 'qdrant-edge-py is not installed (pip install "matryoshka-index[edge]")'


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def qe():
    return pytest.importorskip("qdrant_edge", reason=SKIP_REASON)


@pytest.fixture(scope="module")
def Edge(qe):
    return get_backend_class("qdrant-edge")


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(7)
    full = _unit(rng.standard_normal((N, D)))
    coarse = _unit(full[:, :C] + 0.3 * rng.standard_normal((N, C)))  # correlated, as an adapted prefix is
    ids = (np.arange(N, dtype=np.int64) * 7 + 3)[rng.permutation(N)]
    queries = _unit(full[:6] + 0.2 * rng.standard_normal((6, D)))
    cqueries = _unit(queries[:, :C])
    payloads = [{"group": int(i % 4), "name": f"p{i}"} for i in range(N)]
    return ids, coarse, full, queries, cqueries, payloads


@pytest.fixture(scope="module")
def flat(Edge, data):
    ids, coarse, full, _, _, payloads = data
    be = Edge.create(coarse_dim=C, full_dim=D, metric="cosine", index="flat")
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


# ------------------------------------------------------------------------------- without the extra


def test_missing_package_is_one_line_input_error(monkeypatch):
    """Without qdrant-edge-py, asking for the backend says which extra to install (one line)."""
    monkeypatch.setitem(sys.modules, "qdrant_edge", None)  # `import qdrant_edge` now raises ImportError
    monkeypatch.delitem(sys.modules, "matryoshka_index.backends.qdrant.edge", raising=False)
    with pytest.raises(InputError) as err:
        get_backend_class("qdrant-edge")
    assert 'pip install "matryoshka-index[edge]"' in str(err.value) and "\n" not in str(err.value)
    from matryoshka_index import MatryoshkaIndex

    with pytest.raises(InputError, match=r"matryoshka-index\[edge\]"):
        MatryoshkaIndex.build(np.ones((4, 8), np.float32), coarse_dim=2, backend="qdrant-edge", quiet=True)


def test_loading_an_edge_index_without_the_package_says_what_to_install(qe, tmp_path, monkeypatch):
    from matryoshka_index import MatryoshkaIndex

    x = _unit(np.random.default_rng(1).standard_normal((60, 8)))
    MatryoshkaIndex.build(x, coarse_dim=4, backend="qdrant-edge", quiet=True).save(tmp_path / "ix")
    monkeypatch.setitem(sys.modules, "qdrant_edge", None)
    monkeypatch.delitem(sys.modules, "matryoshka_index.backends.qdrant.edge", raising=False)
    with pytest.raises(InputError, match=r'pip install "matryoshka-index\[edge\]"') as err:
        MatryoshkaIndex.load(tmp_path / "ix")
    assert "unknown backend" not in str(err.value)


# ------------------------------------------------------------------------------------------ search


def test_registered_and_protocol(flat, Edge):
    from matryoshka_index.backends import SearchBackend

    assert isinstance(flat, SearchBackend) and flat.kind == "qdrant-edge"
    assert Edge.__name__ == "QdrantEdgeBackend"


def test_exact_mode_equals_faiss_backend(flat, data):
    ids, coarse, full, q, cq, _ = data
    fb = get_backend_class("faiss").create(coarse_dim=C, full_dim=D, metric="cosine", index="flat", device="cpu")
    fb.add(ids, coarse, full)
    for k, cands in ((10, 40), (5, 200), (10, 10)):
        fs, fi = fb.search(cq, q, k, cands)
        es, ei = flat.search(cq, q, k, cands)
        np.testing.assert_array_equal(ei, fi)
        np.testing.assert_allclose(es, fs, atol=1e-5)
    np.testing.assert_array_equal(flat.exact_search(q, 10)[1], fb.exact_search(q, 10)[1])
    np.testing.assert_array_equal(flat.coarse_search(cq, 7)[1], fb.coarse_search(cq, 7)[1])
    # and both equal the two-stage search written out in numpy
    _, ref_i = _two_stage_numpy(ids, coarse, full, cq, q, 10, 40)
    np.testing.assert_array_equal(flat.search(cq, q, 10, 40)[1], ref_i)


def test_matryoshka_index_same_top_k_as_faiss(qe, tmp_path):
    """Same data, same adaptor, exact coarse stage: MatryoshkaIndex on qdrant-edge answers as on FAISS."""
    from matryoshka_index import MatryoshkaAdaptor, MatryoshkaIndex

    rng = np.random.default_rng(3)
    basis = rng.standard_normal((8, 32)).astype(np.float32)
    x = (rng.standard_normal((1500, 8)) @ basis + 0.3 * rng.standard_normal((1500, 32))).astype(np.float32)
    adaptor = MatryoshkaAdaptor(matryoshka_dims=[8], epochs=1, batch_size=128, device="cpu", quiet=True).fit(x)
    kw = dict(coarse_dim=8, adaptor=adaptor, index="flat", candidates=60, calibration_queries=50, quiet=True)
    on_faiss = MatryoshkaIndex.build(x, backend="faiss", backend_options={"device": "cpu"}, **kw)
    on_edge = MatryoshkaIndex.build(x, backend="qdrant-edge", **kw)
    queries = x[:25] + 0.05 * rng.standard_normal((25, 32)).astype(np.float32)
    fs, fi = on_faiss.search(queries, k=10)
    es, ei = on_edge.search(queries, k=10)
    np.testing.assert_array_equal(ei, fi)
    np.testing.assert_allclose(es, fs, atol=1e-5)

    # save / load round trip: the shard sits beside the adaptor in the index directory
    on_edge.save(tmp_path / "ix")
    assert {p.name for p in (tmp_path / "ix").iterdir()} >= {"manifest.json", "adaptor", "qdrant_edge"}
    section = json.loads((tmp_path / "ix" / "manifest.json").read_text())["backend"]
    assert section["kind"] == "qdrant-edge" and section["points"] == 1500 and section["index"] == "flat"
    loaded = MatryoshkaIndex.load(tmp_path / "ix")
    np.testing.assert_array_equal(loaded.search(queries, k=10)[1], fi)
    assert len(loaded) == 1500 and loaded.candidates == on_edge.candidates
    # the loaded index works on its own copy: changing it leaves the saved files (and checksums) intact
    loaded.add(x[:3] * 2, ids=[5000, 5001, 5002])
    assert len(loaded) == 1503
    again = MatryoshkaIndex.load(tmp_path / "ix")  # verify=True: every file still matches the manifest
    assert len(again) == 1500
    loaded.save(tmp_path / "ix")  # saving over the index that is open replaces it atomically
    assert len(MatryoshkaIndex.load(tmp_path / "ix")) == 1503
    for idx in (on_edge, loaded, again):
        idx.backend.close()


def test_hnsw_and_int8_coarse(Edge, data, flat):
    ids, coarse, full, q, cq, _ = data
    _, exact = flat.search(cq, q, 10, 100)
    for quant in (None, "int8"):
        be = Edge.create(
            coarse_dim=C, full_dim=D, index="hnsw", coarse_quantization=quant, indexing_threshold_kb=1, hnsw_m=8
        )
        be.add(ids, coarse, full)
        assert be.info()["optimize_pending"]
        _, found = be.search(cq, q, 10, 100)  # optimizes first: the graph (and int8 codes) get built
        info = be.info()
        assert not info["optimize_pending"] and info["indexed_vectors"] >= N
        assert info["coarse_quantization"] == quant and info["coarse_index"] == "hnsw"
        overlap = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, exact, strict=True)])
        assert overlap >= 0.9, (quant, overlap)
        be.close()


def test_filter_passes_through_both_stages(qe, flat, data):
    ids, coarse, full, q, cq, payloads = data
    flt = qe.Filter(must=[qe.FieldCondition(key="group", match=qe.MatchValue(2))])
    _, found = flat.search(cq, q, 10, 30, query_filter=flt)
    mask = np.array([p["group"] == 2 for p in payloads])
    _, ref = _two_stage_numpy(ids, coarse, full, cq, q, 10, 30, mask=mask)
    np.testing.assert_array_equal(found, ref)
    assert {p["group"] for p in flat.payloads(found[0])} == {2}
    assert flat.external_ids(found[0]) == [int(i) for i in found[0]]
    assert flat.external_ids(np.array([-1, 5])) == [None, 5] and flat.payloads(np.array([-1])) == [None]
    # a qdrant-client Filter and its dict form are translated, and find the same points
    from qdrant_client import models as qm

    client_filter = qm.Filter(must=[qm.FieldCondition(key="group", match=qm.MatchValue(value=2))])
    as_dict = {"must": [{"key": "group", "match": {"value": 2}}]}
    for other in (client_filter, as_dict):
        np.testing.assert_array_equal(flat.search(cq, q, 10, 30, query_filter=other)[1], ref)
    with pytest.raises(InputError, match=r"takes a qdrant_edge\.Filter, a qdrant_client\.models\.Filter"):
        flat.search(cq, q, 10, 30, query_filter=["must"])
    with pytest.raises(InputError, match="not a Qdrant filter"):
        flat.search(cq, q, 10, 30, query_filter={"must": [{"nonsense": 1}]})


def test_client_filters_of_every_kind_translate(qe, flat, data):
    """Ranges, any/except, must_not, should with min_should, has_id, is_empty and nested filters select the
    same points through a translated qdrant-client filter as through the hand-written qdrant-edge one."""
    from qdrant_client import models as qm

    ids, _, _, q, cq, _ = data
    some = [int(i) for i in ids[:50]]
    pairs = [
        (
            qm.Filter(must=[qm.FieldCondition(key="group", range=qm.Range(gte=1, lt=3))]),
            qe.Filter(must=[qe.FieldCondition(key="group", range=qe.RangeFloat(gte=1, lt=3))]),
        ),
        (
            qm.Filter(must_not=[qm.FieldCondition(key="group", match=qm.MatchAny(any=[0, 3]))]),
            qe.Filter(must_not=[qe.FieldCondition(key="group", match=qe.MatchAny([0, 3]))]),
        ),
        (
            qm.Filter(
                should=[qm.FieldCondition(key="group", match=qm.MatchExcept(**{"except": [1]}))],
                min_should=qm.MinShould(conditions=[qm.HasIdCondition(has_id=some)], min_count=1),
            ),
            qe.Filter(
                should=[qe.FieldCondition(key="group", match=qe.MatchExcept([1]))],
                min_should=qe.MinShould([qe.HasIdCondition(set(some))], 1),
            ),
        ),
        (
            qm.Filter(must=[qm.Filter(must_not=[qm.IsEmptyCondition(is_empty=qm.PayloadField(key="name"))])]),
            qe.Filter(must=[qe.Filter(must_not=[qe.IsEmptyCondition("name")])]),
        ),
    ]
    for client_filter, edge_filter in pairs:
        want = flat.search(cq, q, 10, 30, query_filter=edge_filter)[1]
        np.testing.assert_array_equal(flat.search(cq, q, 10, 30, query_filter=client_filter)[1], want)
        assert (want >= 0).any()


def test_add_contains_remove_ids_len(Edge):
    rng = np.random.default_rng(1)
    be = Edge.create(coarse_dim=4, full_dim=8, metric="cosine", index="flat", upload_batch_size=7)
    ids = np.arange(0, 60, 3, dtype=np.int64)
    be.add(ids, _unit(rng.standard_normal((20, 4))), _unit(rng.standard_normal((20, 8))))
    assert len(be) == 20 and sorted(be.ids().tolist()) == ids.tolist()
    assert be.contains(np.array([0, 1, 57, -1])).tolist() == [True, False, True, False]
    assert be.remove(np.array([0, 1, 3, 3])) == 2
    assert len(be) == 18 and not be.contains(np.array([0, 3])).any()
    s, i = be.search(np.ones((1, 4), np.float32), np.ones((1, 8), np.float32), 25, 30)
    assert (i[0, :18] >= 0).all() and (i[0, 18:] == -1).all() and np.isneginf(s[0, 18:]).all()
    assert 0 not in i and 3 not in i
    with pytest.raises(InputError, match="expected coarse"):
        be.add(np.array([100]), np.zeros((1, 5), np.float32), np.zeros((1, 8), np.float32))
    with pytest.raises(InputError, match="ids >= 0"):
        be.add(np.array([-5]), np.zeros((1, 4), np.float32), np.zeros((1, 8), np.float32))
    be.close()
    with pytest.raises(InputError, match="closed"):
        len(be)


def test_backend_save_open_roundtrip_and_checks(Edge, data, tmp_path):
    ids, coarse, full, q, cq, payloads = data
    be = Edge.create(coarse_dim=C, full_dim=D, index="flat", on_disk=True)
    be.add(ids[:500], coarse[:500], full[:500], payloads[:500])
    section = json.loads(json.dumps(be.save(tmp_path)))
    config = json.loads((tmp_path / "qdrant_edge" / "edge_config.json").read_text())
    assert config["vectors"]["full"]["memory"] == "cold" and config["vectors"]["full"]["hnsw_config"]["m"] == 0
    assert not (tmp_path / "qdrant_edge" / ".mindex-edge.lock").exists()
    expected = be.search(cq, q, 10, 50)
    be2 = Edge.open(tmp_path, section)
    assert len(be2) == 500 and be2.path != be.path
    np.testing.assert_array_equal(be2.search(cq, q, 10, 50)[1], expected[1])
    assert be2.payloads([int(ids[3]), 10**9]) == [payloads[3], None]
    assert be2.info()["full_vectors"].startswith("disk")
    work = be2.path
    be2.close()
    be.close()
    assert not work.exists()  # the working copy goes with the backend
    with pytest.raises(FormatError, match="manifest says"):
        Edge.open(tmp_path, {**section, "full_dim": D + 1})
    with pytest.raises(FormatError, match="no qdrant-edge shard here"):
        Edge.open(tmp_path / "nowhere", section)
    with pytest.raises(FormatError, match="not supported"):
        Edge.open(tmp_path, {**section, "format_version": 99})


# ------------------------------------------------------------------------- one process per directory


def test_second_open_of_a_shard_directory_is_one_line(Edge, data, tmp_path):
    ids, coarse, full, _, _, _ = data
    shard_dir = tmp_path / "live"
    be = Edge.create(coarse_dim=C, full_dim=D, index="flat", path=shard_dir)
    be.add(ids[:50], coarse[:50], full[:50])
    section = be.save(tmp_path / "saved")
    for attempt in (
        lambda: Edge.create(coarse_dim=C, full_dim=D, path=shard_dir),
        lambda: Edge.open(tmp_path / "saved", section, path=shard_dir),
    ):
        with pytest.raises(BackendError) as err:
            attempt()
        msg = str(err.value)
        assert "already open in another process or index (one process per shard directory)" in msg
        assert "\n" not in msg
    # another process gets the same line (and exit code 2 from the CLI convention is not involved here)
    script = textwrap.dedent(
        f"""
        from matryoshka_index.backends import get_backend_class
        from matryoshka_index.errors import BackendError
        try:
            get_backend_class("qdrant-edge").create(coarse_dim={C}, full_dim={D}, path={str(shard_dir)!r})
        except BackendError as exc:
            print(exc)
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert "one process per shard directory" in out.stdout, out.stderr
    assert len(be) == 50  # the first holder is unaffected
    be.close()
    assert not shard_dir.exists()
    reopened = Edge.open(tmp_path / "saved", section, path=shard_dir)  # free again once closed
    assert len(reopened) == 50
    reopened.close()


def test_path_must_be_empty_and_bad_options_are_one_line(Edge, tmp_path):
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="is not empty"):
        Edge.create(coarse_dim=2, full_dim=4, path=busy)
    assert sorted(p.name for p in busy.iterdir()) == ["notes.txt"]  # nothing of ours left behind
    for kwargs, message in (
        ({"index": "ivf"}, "supports 'flat', 'hnsw'"),
        ({"coarse_quantization": "int4"}, "coarse_quantization"),
        ({"metric": "l2"}, "metric"),
        ({"coarse_dim": 8}, "exceeds full_dim"),
        ({"hnsw_m": 0}, "hnsw_m"),
    ):
        with pytest.raises(InputError, match=message):
            Edge.create(**{"coarse_dim": 2, "full_dim": 4, **kwargs})


def test_info(flat):
    info = flat.info()
    assert info["backend"] == "qdrant-edge" and info["count"] == N and info["coarse_index"] == "flat"
    assert info["ram_bytes_per_vector"] >= (C + D) * 4 and info["disk_bytes_per_vector"] > 0
    assert info["device"].startswith("cpu") and Path(info["path"]).is_dir()
