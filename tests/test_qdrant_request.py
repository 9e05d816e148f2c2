"""The raw Qdrant request body built from an index manifest: Qdrant's own models accept it, same results."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from conftest import make_corpus

from matryoshka_index import MatryoshkaIndex
from matryoshka_index.backends.qdrant.request import query_path, query_request, query_vectors
from matryoshka_index.errors import InputError

qm = pytest.importorskip("qdrant_client.models", reason="qdrant-client is not installed")


@pytest.fixture(scope="module")
def qdrant_index(tmp_path_factory):
    x = make_corpus(560, seed=5)
    payloads = [{"row": i, "even": i % 2 == 0} for i in range(500)]
    index = MatryoshkaIndex.build(
        x[:500],
        coarse_dim=8,
        adaptor="pca",
        backend="qdrant",
        backend_options={"location": ":memory:"},
        payloads=payloads,
        quiet=True,
    )
    d = tmp_path_factory.mktemp("qreq") / "q.mindex"
    index.save(d)
    manifest = json.loads((d / "manifest.json").read_text())
    return index, manifest, x[500:]


def run_raw(index, body: dict) -> list:
    """Send the raw body through qdrant-client: QueryRequest parses Qdrant's REST schema (field names included)."""
    request = qm.QueryRequest(**body)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # local mode warns that it ignores search params
        return index.backend.client.query_batch_points(index.backend.collection, requests=[request])[0].points


def test_raw_request_gives_the_index_results(qdrant_index):
    index, manifest, queries = qdrant_index
    scores, ids = index.search(queries, k=10)
    for i, q in enumerate(queries[:20]):
        coarse, full = query_vectors(index.adaptor, q, manifest)
        body = query_request(manifest, coarse, full, k=10)
        json.dumps(body)  # plain JSON, ready to POST
        assert body["prefetch"]["using"] == "coarse" and body["using"] == "full"
        assert body["prefetch"]["limit"] == manifest["candidates"] and body["limit"] == 10
        points = run_raw(index, body)
        assert [p.id for p in points] == ids[i].tolist()
        np.testing.assert_allclose([p.score for p in points], scores[i], atol=1e-5)


def test_filter_and_payload_reach_both_stages(qdrant_index):
    index, manifest, queries = qdrant_index
    coarse, full = query_vectors(index.adaptor, queries[0], manifest)
    flt = {"must": [{"key": "even", "match": {"value": True}}]}
    body = query_request(manifest, coarse, full, k=5, candidates=40, with_payload=True, query_filter=flt)
    assert body["prefetch"]["filter"] == flt and body["filter"] == flt and body["prefetch"]["limit"] == 40
    points = run_raw(index, body)
    assert len(points) == 5 and all(p.payload["even"] for p in points)
    assert [p.payload["row"] for p in points] == [p.id for p in points]


def test_params_follow_the_manifest():
    manifest = {"coarse_dim": 2, "full_dim": 3, "candidates": 50, "backend": {"kind": "qdrant", "collection": "docs"}}
    body = query_request({**manifest, "backend": {**manifest["backend"], "index": "hnsw"}}, [1, 0], [1, 0, 0], k=10)
    assert body["prefetch"]["params"] == {"hnsw_ef": 50}
    flat = query_request(
        {**manifest, "backend": {"kind": "qdrant", "index": "flat", "coarse_quantization": "int8"}},
        [1, 0],
        [1, 0, 0],
        k=60,
        oversampling=2.0,
    )
    assert flat["prefetch"]["params"] == {"exact": True, "quantization": {"rescore": True, "oversampling": 2.0}}
    assert flat["prefetch"]["limit"] == 60  # never fewer candidates than k
    unnamed = query_request(manifest, [1, 0], [1, 0, 0], full_vector="")  # migrated in place: unnamed vector
    assert "using" not in unnamed
    template = query_request(manifest)
    assert template["prefetch"]["query"] == "<coarse (the adapted query prefix): 2 floats>"
    assert query_path(manifest) == "/collections/docs/points/query"
    assert query_path(manifest, "docs_live") == "/collections/docs_live/points/query"


def test_bad_input_is_one_clear_error():
    manifest = {"coarse_dim": 2, "full_dim": 3, "backend": {"kind": "qdrant"}}
    with pytest.raises(InputError, match="expected 2 floats"):
        query_request(manifest, [1, 0, 0], [1, 0, 0])
    with pytest.raises(InputError, match="NaN"):
        query_request(manifest, [1, np.nan], [1, 0, 0])
    with pytest.raises(InputError, match="FAISS"):
        query_request({**manifest, "backend": {"kind": "faiss"}})
    with pytest.raises(InputError, match="names no Qdrant collection"):
        query_path(manifest)
    with pytest.raises(InputError, match="coarse_dim"):
        query_request({"backend": {"kind": "qdrant"}})


def test_mindex_info_qdrant_query_prints_the_request_that_gives_the_index_results(qdrant_index, tmp_path):
    from click.testing import CliRunner

    from matryoshka_index.cli import main

    index, manifest, queries = qdrant_index
    saved = tmp_path / "q.mindex"
    index.save(saved)
    np.save(tmp_path / "q.npy", queries[:1])
    runner = CliRunner()
    template = runner.invoke(main, ["info", str(saved), "--qdrant-query"])
    assert template.exit_code == 0, template.output
    req = json.loads(template.output)
    assert req["method"] == "POST" and req["path"] == query_path(manifest)
    assert req["body"]["prefetch"]["using"] == "coarse" and isinstance(req["body"]["query"], str)  # placeholders
    filled = runner.invoke(main, ["info", str(saved), "--qdrant-query", "--query", str(tmp_path / "q.npy"), "-k", "7"])
    assert filled.exit_code == 0, filled.output
    body = json.loads(filled.output)["body"]
    assert len(body["prefetch"]["query"]) == manifest["coarse_dim"] and body["limit"] == 7
    hits = run_raw(index, body)
    ids = index.search(queries[:1], k=7)[1][0]
    assert [int(h.id) for h in hits] == [int(i) for i in ids]


def test_mindex_info_qdrant_query_on_a_faiss_index_is_one_line(tmp_path):
    from click.testing import CliRunner

    from matryoshka_index.cli import main

    MatryoshkaIndex.build(make_corpus(300, seed=1), coarse_dim=8, quiet=True).save(tmp_path / "f.mindex")
    r = CliRunner().invoke(main, ["info", str(tmp_path / "f.mindex"), "--qdrant-query"])
    assert r.exit_code == 2
    assert "FAISS index is searched in-process" in r.output and "Traceback" not in r.output


def test_the_old_import_path_warns_and_hands_on_the_same_functions(monkeypatch):
    import importlib
    import sys

    from matryoshka_index.backends.qdrant import request

    monkeypatch.delitem(sys.modules, "matryoshka_index.qdrant_request", raising=False)
    with pytest.warns(DeprecationWarning, match="removed in 0.2.*backends.qdrant.request"):
        old = importlib.import_module("matryoshka_index.qdrant_request")
    assert old.query_request is request.query_request
    assert old.query_vectors is request.query_vectors
    assert old.query_path is request.query_path
