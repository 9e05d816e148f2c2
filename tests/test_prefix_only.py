"""Shrink for good (issue 23): ``build(..., rerank=None)`` keeps only the adapted prefix, and
``mindex migrate --prefix-only --dim M`` writes a collection holding only the M-dim adapted vector."""

from __future__ import annotations

import json
import os
import uuid

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import brute_force, constructed_labelled_report, make_corpus
from qdrant_client import QdrantClient
from qdrant_client import models as qm

from matryoshka_index import MatryoshkaAdaptor, MatryoshkaIndex, migrate_collection
from matryoshka_index.adaptor.pca import PCARotation
from matryoshka_index.backends.qdrant.metadata import MIGRATION_KEY, MetadataStore
from matryoshka_index.cli import main
from matryoshka_index.errors import FormatError, InputError
from matryoshka_index.manifest import MANIFEST_FILE, check_manifest_fields, manifest_bytes, seal_manifest
from matryoshka_index.metrics import ann_recall, ndcg_at_k
from matryoshka_index.quality import advise


def run(*args: str):
    return CliRunner().invoke(main, list(args))


def _prefix_scores(adaptor: PCARotation, queries: np.ndarray, corpus: np.ndarray, dim: int) -> np.ndarray:
    """Cosine scores of the adapted prefixes, by NumPy: what a prefix-only search ranks by."""

    def unit(v: np.ndarray) -> np.ndarray:
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    return unit(adaptor.transform(queries, dim)) @ unit(adaptor.transform(corpus, dim)).T


@pytest.fixture(scope="module")
def data():
    x = make_corpus(1200, dim=48, rank=10, seed=5)
    return x[:1100], x[1100:]


@pytest.fixture(scope="module")
def built(data, tmp_path_factory):
    corpus, _ = data
    spill = tmp_path_factory.mktemp("spill")
    old = os.environ.get("MINDEX_TMPDIR")
    os.environ["MINDEX_TMPDIR"] = str(spill)
    try:
        index = MatryoshkaIndex.build(corpus, coarse_dim=12, adaptor="pca", rerank=None, quiet=True)
    finally:
        if old is None:
            os.environ.pop("MINDEX_TMPDIR")
        else:
            os.environ["MINDEX_TMPDIR"] = old
    return index, spill


# ------------------------------------------------------------------------------------ the build
def test_prefix_only_search_is_the_prefix_ranking_with_prefix_scores(data, built):
    corpus, queries = data
    index, _ = built
    scores, ids = index.search(queries, k=10)
    truth = _prefix_scores(index.adaptor, queries, corpus, 12)
    order = np.argsort(-truth, axis=1, kind="stable")[:, :10]
    expected = np.take_along_axis(truth, order, axis=1)
    np.testing.assert_allclose(scores, expected, atol=1e-5)
    # ids: the prefix's own top 10 (ties aside: compare the scores each id has under the prefix)
    np.testing.assert_allclose(np.take_along_axis(truth, ids, axis=1), expected, atol=1e-5)


def test_prefix_only_keeps_no_full_vector_in_ram_or_on_disk(built, tmp_path):
    index, spill = built
    assert list(spill.iterdir()) == []  # no spill file of full vectors was ever written
    info = index.info()
    assert info["rerank"] is None and info["prefix_only"] is True and info["full_dim"] == 0
    assert info["memory"]["full_vectors"].startswith("none")
    assert info["memory"]["page_cache_bytes_per_vector"] == 0
    assert info["backend"]["memory"]["full_vectors_in_ram_bytes_per_vector"] == 0
    assert info["memory"]["bytes_saved_per_vector"] == (48 - 12) * 4
    assert info["stages"]["rerank"].startswith("none")
    index.save(tmp_path / "p.mindex")
    names = sorted(p.name for p in (tmp_path / "p.mindex").iterdir())
    assert "full.npy" not in names and "coarse.faiss" in names
    manifest = json.loads((tmp_path / "p.mindex" / MANIFEST_FILE).read_text())
    assert manifest["rerank"] is None and manifest["full_dim"] == 0 and manifest["input_dim"] == 48
    # the whole directory is smaller than the full vectors alone would be
    size = sum(p.stat().st_size for p in (tmp_path / "p.mindex").rglob("*") if p.is_file())
    assert size < len(index) * 48 * 4


def test_prefix_only_calibration_record_says_so_with_the_measured_recall(data, built):
    corpus, queries = data
    index, _ = built
    cal = index.calibration
    assert "rerank=None" in cal["skipped"] and cal["k"] == 10 and cal["queries"] == 110
    info = index.info()["candidates"]
    assert info["calibrated_recall"] == cal["recall"] and "prefix only" in info["note"]
    # what it reports is the prefix's recall@10 against exact full-dim search: at 6 of 48 dims on
    # rank-10 data that is far from 1, and new queries of the same distribution measure about the same
    short = MatryoshkaIndex.build(corpus, coarse_dim=6, adaptor="pca", rerank=None, quiet=True)
    measured = ann_recall(short.search(queries, k=10)[1], brute_force(corpus, queries, 10)[1])
    assert short.calibration["recall"] < 0.7
    assert abs(short.calibration["recall"] - measured) < 0.08


def test_prefix_only_round_trips_and_adds_and_removes(data, built, tmp_path):
    _, queries = data
    index, _ = built
    index.save(tmp_path / "p.mindex")
    loaded = MatryoshkaIndex.load(tmp_path / "p.mindex")
    s0, i0 = index.search(queries, k=10)
    s1, i1 = loaded.search(queries, k=10)
    np.testing.assert_array_equal(i0, i1)
    np.testing.assert_array_equal(s0, s1)
    assert loaded.rerank is None and loaded.calibration == index.calibration
    extra = make_corpus(30, dim=48, rank=10, seed=9)
    new_ids = loaded.add(extra)
    assert len(loaded) == len(index) + 30
    _, found = loaded.search(extra, k=1)
    np.testing.assert_array_equal(found[:, 0], new_ids)
    loaded.remove(new_ids[:10])
    loaded.save(tmp_path / "p.mindex")
    again = MatryoshkaIndex.load(tmp_path / "p.mindex")
    assert len(again) == len(index) + 20
    assert not np.isin(again.search(extra[:10], k=5)[1], new_ids[:10]).any()


def test_prefix_only_hnsw_and_a_code_search_the_prefix(data):
    corpus, queries = data
    exact = MatryoshkaIndex.build(corpus, coarse_dim=12, adaptor="pca", rerank=None, quiet=True)
    for kw in ({"index": "hnsw"}, {"code": "sq8"}):
        index = MatryoshkaIndex.build(corpus, coarse_dim=12, adaptor="pca", rerank=None, quiet=True, **kw)
        assert index.info()["backend"]["full_vectors"].startswith("none")
        # an approximate coarse stage alone finds most of the exact prefix ranking
        assert ann_recall(index.search(queries, k=10)[1], exact.search(queries, k=10)[1]) >= 0.9


@pytest.mark.parametrize("backend", ["qdrant", "qdrant-edge"])
def test_prefix_only_on_the_qdrant_backends_holds_coarse_alone(data, built, backend, tmp_path):
    if backend == "qdrant-edge":
        pytest.importorskip("qdrant_edge", reason="the edge extra is not installed")
    corpus, queries = data
    faiss_index, _ = built
    options = {"location": ":memory:"} if backend == "qdrant" else None
    payloads = [{"row": i} for i in range(len(corpus))]
    index = MatryoshkaIndex.build(
        corpus, coarse_dim=12, adaptor=faiss_index.adaptor, rerank=None, backend=backend, index="flat",
        backend_options=options, payloads=payloads, quiet=True,
    )  # fmt: skip
    try:
        s, ids = index.search(queries, k=10)
        s_faiss, ids_faiss = faiss_index.search(queries, k=10)
        np.testing.assert_allclose(s, s_faiss, atol=1e-5)  # the same prefix scores
        assert (ids == ids_faiss).mean() > 0.99  # the same ranking, ties aside
        assert index.info()["prefix_only"] and index.info()["stages"]["rerank"].startswith("none")
        hits = index.query(
            queries[:3], k=5, with_payload=True, query_filter={"must": [{"key": "row", "range": {"lt": 300}}]}
        )
        assert all(h.payload["row"] < 300 and h.payload["row"] == h.id for row in hits for h in row)
        with pytest.raises(InputError, match="prefix only"):
            index.exact_search(queries)
        index.save(tmp_path / "q.mindex")
    finally:
        index.close()
    files = {p.relative_to(tmp_path / "q.mindex").as_posix() for p in (tmp_path / "q.mindex").rglob("*") if p.is_file()}
    if backend == "qdrant":
        assert "qdrant/coarse.npy" in files and not any("full" in f for f in files)
    else:
        config = json.loads((tmp_path / "q.mindex" / "qdrant_edge" / "edge_config.json").read_text())
        assert list(config["vectors"]) == ["coarse"]
    with MatryoshkaIndex.load(tmp_path / "q.mindex") as loaded:
        _, ids2 = loaded.search(queries, k=10)
        np.testing.assert_array_equal(ids2, ids)
        assert loaded.rerank is None and len(loaded) == len(corpus)


def test_prefix_only_refusals_are_one_line(data, built):
    corpus, queries = data
    index, _ = built
    with pytest.raises(InputError, match="rerank=None"):
        index.exact_search(queries)
    with pytest.raises(InputError, match="rerank=None"):
        index.calibrate(queries)
    with pytest.raises(InputError, match="ram_budget"):
        MatryoshkaIndex.build(corpus, coarse_dim=12, rerank=None, ram_budget=64, quiet=True)
    with pytest.raises(InputError, match="rerank"):
        MatryoshkaIndex.build(corpus, coarse_dim=12, rerank="none", quiet=True)
    from matryoshka_index.backends.base import stores_prefix_only
    from matryoshka_index.index.build import check_prefix_only

    class NoPrefix:  # a backend class without supports_prefix_only: refused before any work
        kind = "x"

    assert not stores_prefix_only(NoPrefix)
    with pytest.raises(InputError, match="not supported by the x backend"):
        check_prefix_only(NoPrefix, "x", None)


def test_prefix_only_manifest_fields_are_checked(built, tmp_path):
    index, _ = built
    index.save(tmp_path / "p.mindex")
    path = tmp_path / "p.mindex" / MANIFEST_FILE
    good = json.loads(path.read_text())
    for field, value, says in (("full_dim", 48, "full_dim"), ("rerank", "original", "full_dim")):
        bad = seal_manifest({**good, field: value})
        path.write_bytes(manifest_bytes(bad))
        with pytest.raises(FormatError, match=says):
            MatryoshkaIndex.load(tmp_path / "p.mindex")
    check_manifest_fields(good, where="x")  # the real one passes


def test_rerank_default_builds_are_unchanged(data):
    corpus, queries = data
    index = MatryoshkaIndex.build(corpus, coarse_dim=12, adaptor="pca", quiet=True)
    assert index.rerank == "original" and index.full_dim == 48
    assert index.info()["prefix_only"] is False
    s, _ = index.search(queries, k=5, candidates=len(corpus))
    np.testing.assert_allclose(s, brute_force(corpus, queries, 5)[0], atol=1e-5)


def test_cli_build_rerank_none_writes_a_prefix_only_index(data, tmp_path):
    corpus, queries = data
    np.save(tmp_path / "c.npy", corpus)
    np.save(tmp_path / "q.npy", queries)
    out = tmp_path / "c.mindex"
    result = run(
        "build", str(tmp_path / "c.npy"), "--coarse-dim", "12", "--pca", "--rerank", "none", "-o", str(out), "-q"
    )
    assert result.exit_code == 0, result.output
    assert not (out / "full.npy").exists()
    info = run("info", str(out))
    assert info.exit_code == 0, info.output
    assert json.loads(info.stdout)["rerank"] is None
    searched = run("search", str(out), str(tmp_path / "q.npy"), "-k", "5", "-o", str(tmp_path / "r.npy"))
    assert searched.exit_code == 0, searched.output
    np.testing.assert_array_equal(np.load(tmp_path / "r.npy"), MatryoshkaIndex.load(out).search(queries, k=5)[1])


def test_info_qdrant_query_of_a_prefix_only_index_is_the_coarse_query_alone(data, built, tmp_path):
    corpus, queries = data
    index = MatryoshkaIndex.build(
        corpus, coarse_dim=12, adaptor=built[0].adaptor, rerank=None, backend="qdrant",
        backend_options={"location": ":memory:"}, quiet=True,
    )  # fmt: skip
    try:
        index.save(tmp_path / "q.mindex")
        np.save(tmp_path / "q.npy", queries[:1])
        result = run(
            "info", str(tmp_path / "q.mindex"), "--qdrant-query", "--query", str(tmp_path / "q.npy"), "-k", "5"
        )
        assert result.exit_code == 0, result.output
        body = json.loads(result.stdout)["body"]
        assert "prefetch" not in body and body["using"] == "coarse" and body["limit"] == 5  # was a two-stage body
        assert len(body["query"]) == 12
        # qdrant-client takes it as it is, and it gives the index's own results
        answer = index.backend.client.query_batch_points(index.backend.collection, requests=[qm.QueryRequest(**body)])
        assert [int(p.id) for p in answer[0].points] == index.search(queries[:1], k=5)[1][0].tolist()
    finally:
        index.close()


def test_eval_of_a_prefix_only_index_measures_what_it_can(data, built, tmp_path):
    _, queries = data
    index, _ = built
    index.save(tmp_path / "p.mindex")
    np.save(tmp_path / "q.npy", queries)
    result = run("eval", str(tmp_path / "p.mindex"), str(tmp_path / "q.npy"))
    assert result.exit_code == 0, result.output  # was: stopped at exact_search's refusal
    report = json.loads(result.stdout)
    assert report["prefix_only"] is True and report["recall@10"] is None and report["queries"] == len(queries)
    assert report["build_recall@10"] == index.calibration["recall"] and report["queries_per_second"] > 0
    assert report["memory"]["bytes_saved_per_vector"] == (48 - 12) * 4
    refused = run("eval", str(tmp_path / "p.mindex"), str(tmp_path / "q.npy"), "--candidates", "20")
    assert refused.exit_code == 2 and refused.stderr.strip().splitlines() == [
        "Error: candidates: a prefix-only index (rerank=None) has no rerank candidates; drop --candidates"
    ]


# ------------------------------------------------------------------------------------ the migration
MDIM, MPREFIX = 32, 8


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _pid(i: int) -> int | str:
    return i * 3 if i % 2 else str(uuid.uuid5(uuid.NAMESPACE_URL, f"doc/{i}"))


def make_source(client: QdrantClient, name: str, n: int = 3000, *, without_vector: int = 4) -> np.ndarray:
    """Named vectors 'emb' (cosine, low rank: a short prefix means something) and 'img' (dot), sparse
    'bm25', payloads, int and UUID ids, a few points without 'emb'. Returns the 'emb' rows."""
    emb = _unit(make_corpus(n, dim=MDIM, rank=10, noise=0.3, seed=21))
    img = np.random.default_rng(4).standard_normal((n, 4)).astype(np.float32)
    client.create_collection(
        name,
        vectors_config={
            "emb": qm.VectorParams(size=MDIM, distance=qm.Distance.COSINE),
            "img": qm.VectorParams(size=4, distance=qm.Distance.DOT),
        },
        sparse_vectors_config={"bm25": qm.SparseVectorParams()},
    )
    points = []
    for i in range(n):
        vec: dict = {"img": img[i].tolist()}
        if i >= without_vector:
            vec["emb"] = emb[i].tolist()
        if i % 4 == 0:
            vec["bm25"] = qm.SparseVector(indices=[i % 50, 60 + i % 7], values=[0.5, 1.0 + i % 3])
        points.append(qm.PointStruct(id=_pid(i), vector=vec, payload={"i": i, "title": f"doc {i}", "tags": [i % 5]}))
    for start in range(0, n, 1000):
        client.upsert(name, points[start : start + 1000])
    return emb


def dump(client: QdrantClient, name: str) -> dict[str, tuple]:
    """Every point of a collection by id (as text): (payload, vectors)."""
    out, offset = {}, None
    while True:
        records, offset = client.scroll(name, limit=2048, offset=offset, with_payload=True, with_vectors=True)
        for r in records:
            vecs = r.vector if isinstance(r.vector, dict) else {"": r.vector}
            out[str(r.id)] = (
                r.payload,
                {k: (v.model_dump() if isinstance(v, qm.SparseVector) else v) for k, v in vecs.items()},
            )
        if offset is None:
            return out


def labelled_sample(emb: np.ndarray, n: int = 60) -> tuple[np.ndarray, list[str], dict[str, dict[str, float]]]:
    """Queries near documents 100..100+n (noisy copies), each judged relevant to its document."""
    rng = np.random.default_rng(8)
    rows = np.arange(100, 100 + n)
    q = _unit(emb[rows] + 0.15 * rng.standard_normal((n, MDIM)).astype(np.float32))
    qids = [f"q{i}" for i in range(n)]
    return q, qids, {qid: {str(_pid(int(r))): 1.0} for qid, r in zip(qids, rows, strict=True)}


def numpy_prefix_ranking(target: dict[str, tuple], cq: np.ndarray, k: int) -> list[list[str]]:
    """Top-k point ids by the target's stored 'coarse' vectors, by NumPy (independent of the library)."""
    ids = [pid for pid, (_, v) in target.items() if "coarse" in v]
    c = np.asarray([target[pid][1]["coarse"] for pid in ids], dtype=np.float32)
    order = np.argsort(-(cq @ c.T), axis=1, kind="stable")[:, :k]
    return [[ids[j] for j in row] for row in order]


@pytest.fixture(scope="module")
def source_adaptor():
    emb = _unit(make_corpus(3000, dim=MDIM, rank=10, noise=0.3, seed=21))
    return MatryoshkaAdaptor(matryoshka_dims=[MPREFIX, 16], epochs=2, batch_size=128, device="cpu", quiet=True).fit(
        emb[4:]
    )


def _assert_target_is_prefix_only(before: dict, after: dict, adaptor: MatryoshkaAdaptor) -> None:
    """Every point (no more), same payloads, same other vectors, 'coarse' = the prefix, no full vector."""
    assert set(after) == set(before)
    for pid, (payload, vecs) in before.items():
        tpayload, tvecs = after[pid]
        assert tpayload == payload, pid
        assert tvecs.get("img") == vecs.get("img") and tvecs.get("bm25") == vecs.get("bm25"), pid
        assert "full" not in tvecs and "emb" not in tvecs, pid
        if "emb" in vecs:
            expected = _unit(adaptor.transform(np.asarray([vecs["emb"]], np.float32), dim=MPREFIX))[0]
            np.testing.assert_allclose(tvecs["coarse"], expected, atol=1e-5)
        else:
            assert "coarse" not in tvecs, pid


def test_prefix_only_migration_keeps_every_point_and_no_full_vector(source_adaptor):
    client = QdrantClient(":memory:")
    make_source(client, "docs")
    before = dump(client, "docs")
    report = migrate_collection(
        client, "docs", vector="emb", coarse_dim=MPREFIX, adaptor=source_adaptor, prefix_only=True, verify="full",
        alias="docs_live", quiet=True,
    )  # fmt: skip
    assert report.ok and report.state == "complete", report.describe()
    info = client.get_collection("docs_prefix8")
    assert set(info.config.params.vectors) == {"img", "coarse"}  # no 'full', no 'emb'
    assert set(info.config.params.sparse_vectors) == {"bm25"}
    assert client.count("docs_prefix8", exact=True).count == 3000
    _assert_target_is_prefix_only(before, dump(client, "docs_prefix8"), source_adaptor)
    assert dump(client, "docs") == before  # the source is never modified
    v = report.verification
    assert v.full_vector_absent is True and v.checked == 3000 and v.vector_mismatches == 0
    # the bytes saved: 32 float32 of 'emb' -> 8 of 'coarse', a point
    p = report.plan.prefix_only
    assert p["bytes_saved_per_point"] == (MDIM - MPREFIX) * 4 and p["bytes_saved"] == 3000 * (MDIM - MPREFIX) * 4
    assert "saves 96 B a point" in report.plan.describe()
    aliases = {a.alias_name: a.collection_name for a in client.get_aliases().aliases}
    assert aliases == {"docs_live": "docs_prefix8"}


def test_prefix_only_migration_predicts_the_recall_it_measures(source_adaptor):
    client = QdrantClient(":memory:")
    emb = make_source(client, "docs")
    planned = migrate_collection(
        client, "docs", vector="emb", coarse_dim=MPREFIX, adaptor=source_adaptor, prefix_only=True, dry_run=True,
        recall_queries=80, quiet=True,
    )  # fmt: skip
    assert "docs_prefix8" not in {c.name for c in client.get_collections().collections}  # a dry run writes nothing
    q = planned.plan.prefix_only["quality"]
    assert q["metric"] == "recall@10" and q["queries"] == 80 and q["corpus_points"] == 3000 - 4
    report = migrate_collection(
        client, "docs", vector="emb", coarse_dim=MPREFIX, adaptor=source_adaptor, prefix_only=True,
        recall_queries=80, quiet=True,
    )  # fmt: skip
    assert report.ok, report.describe()
    measured = report.verification.quality
    assert measured["predicted"] == q["predicted"]  # the same plan again
    assert abs(measured["measured"] - measured["predicted"]) <= 0.01
    assert 0.2 < measured["measured"] < 0.99  # a prefix of 8 of 32 dims loses something, not everything
    # independently, by NumPy: exact full-dim top 10 over the source vs the target's coarse top 10
    target = dump(client, "docs_prefix8")
    by_id = {str(_pid(i)): emb[i] for i in range(4, 3000)}
    ids = list(by_id)
    full = np.asarray([by_id[i] for i in ids])
    qids = [str(x) for x in q["query_points"]]
    qv = np.asarray([by_id[i] for i in qids])
    exact = np.argsort(-(qv @ full.T), axis=1, kind="stable")[:, :11]
    found = numpy_prefix_ranking(target, _unit(source_adaptor.transform(qv, dim=MPREFIX)), 11)
    hits = []
    for own, e_row, f_row in zip(qids, exact, found, strict=True):
        truth = [ids[j] for j in e_row if ids[j] != own][:10]
        got = [i for i in f_row if i != own][:10]
        hits.append(len(set(truth) & set(got)) / 10)
    assert abs(float(np.mean(hits)) - measured["measured"]) <= 0.01
    # the target opens as a prefix-only index and searches the prefix: the same ranking as NumPy's
    with MatryoshkaIndex.from_qdrant("docs_prefix8", client=client, device="cpu") as index:
        assert index.rerank is None and index.coarse_dim == MPREFIX and len(index) == 3000
        hits = index.query(qv[:5], k=3, with_payload=True)
        assert [[str(h.id) for h in row] for row in hits] == [row[:3] for row in found[:5]]
        assert all(h.payload == target[str(h.id)][0] for row in hits for h in row)


def test_prefix_only_migration_measures_ndcg_on_the_users_qrels_in_path_mode(source_adaptor, tmp_path):
    storage = tmp_path / "qdrant"
    client = QdrantClient(path=str(storage))
    emb = make_source(client, "docs", 600)  # local path mode writes a point a transaction: keep it small
    client.close()
    q, qids, qrels = labelled_sample(emb)
    np.save(tmp_path / "q.npy", q)
    (tmp_path / "qids.json").write_text(json.dumps(qids))
    (tmp_path / "qrels.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(f"{k}\t{d}\t1\n" for k, docs in qrels.items() for d in docs)
    )
    source_adaptor.save(tmp_path / "adaptor")
    args = [
        "migrate", "--qdrant-path", str(storage), "--collection", "docs", "--vector", "emb", "--prefix-only",
        "--dim", str(MPREFIX), "--adaptor", str(tmp_path / "adaptor"), "--queries", str(tmp_path / "q.npy"),
        "--qrels", str(tmp_path / "qrels.tsv"), "--query-ids", str(tmp_path / "qids.json"), "--quiet",
    ]  # fmt: skip
    dry = run(*args, "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert "nDCG" in dry.stdout or "ndcg@10" in dry.stdout
    result = run(*args, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    plan_q, ver_q = report["plan"]["prefix_only"]["quality"], report["verification"]["quality"]
    assert plan_q["metric"] == ver_q["metric"] == "ndcg@10" and plan_q["queries"] == 60
    assert abs(ver_q["measured"] - plan_q["predicted"]) <= 0.01
    assert 0.3 < plan_q["predicted"] < plan_q["full_dim"] <= 1  # the prefix keeps much, not all
    client = QdrantClient(path=str(storage))
    try:
        target = dump(client, "docs_prefix8")
        assert len(target) == 600 and not any("full" in v for _, v in target.values())
        # independently: nDCG@10 of the target's coarse ranking by NumPy with the library's metric
        ranked = numpy_prefix_ranking(target, _unit(source_adaptor.transform(q, dim=MPREFIX)), 10)
        assert abs(ndcg_at_k(ranked, qids, qrels, 10) - ver_q["measured"]) <= 1e-4
    finally:
        client.close()


class Crash(RuntimeError):
    pass


def test_prefix_only_migration_killed_then_resumed(source_adaptor):
    client = QdrantClient(":memory:")
    make_source(client, "docs")
    before = dump(client, "docs")
    kw = dict(vector="emb", coarse_dim=MPREFIX, prefix_only=True, batch_size=256, recall_queries=30, quiet=True)

    def crash(event):
        if event.batch == 4:
            raise Crash("simulated crash")

    with pytest.raises(Crash):
        migrate_collection(client, "docs", adaptor=source_adaptor, on_batch=crash, checkpoint_seconds=3600, **kw)
    record = MetadataStore(client, "docs_prefix8", "mem").read(MIGRATION_KEY)
    assert record["state"] == "copying" and record["copied"] == 4 * 256 and record["prefix_only"]["dim"] == MPREFIX
    with pytest.raises(InputError, match="--resume"):
        migrate_collection(client, "docs", **kw)
    with pytest.raises(InputError, match="prefix-only migration"):  # a two-stage resume of it is refused
        migrate_collection(
            client, "docs", vector="emb", coarse_dim=MPREFIX, target="docs_prefix8", resume=True, quiet=True
        )
    report = migrate_collection(client, "docs", resume=True, verify="full", **kw)  # the stored adaptor
    assert report.ok, report.describe()
    assert report.resumed_from == 4 * 256 and report.copied_total == 3000
    assert abs(report.verification.quality["difference"]) <= 0.01
    _assert_target_is_prefix_only(before, dump(client, "docs_prefix8"), source_adaptor)


def test_prefix_only_migration_refusals_are_one_line(source_adaptor, tmp_path):
    client = QdrantClient(":memory:")
    emb = make_source(client, "docs", 300)
    with pytest.raises(InputError, match="--dim"):
        migrate_collection(client, "docs", vector="emb", prefix_only=True, quiet=True)
    with pytest.raises(InputError, match="in-place"):
        migrate_collection(client, "docs", vector="emb", coarse_dim=8, prefix_only=True, in_place=True, quiet=True)
    with pytest.raises(InputError, match="only with --prefix-only"):
        migrate_collection(client, "docs", vector="emb", coarse_dim=8, qrels={"q": {"1": 1}}, quiet=True)
    q, qids, _ = labelled_sample(emb, 5)
    with pytest.raises(InputError, match="not a point id"):
        migrate_collection(
            client, "docs", vector="emb", coarse_dim=8, adaptor=source_adaptor, prefix_only=True, dry_run=True,
            queries=q, query_ids=qids, qrels={"q0": {"999999": 1.0}}, quiet=True,
        )  # fmt: skip
    for args, says in (
        (["--dim", "8"], "only with --prefix-only"),
        (["--prefix-only"], "--dim"),
        (["--prefix-only", "--dim", "8", "--in-place"], "--in-place"),
        (["--prefix-only", "--dim", "8", "--qrels", str(tmp_path / "x.tsv")], "--queries and --qrels"),
    ):
        res = run("migrate", "--qdrant-path", str(tmp_path / "none"), "--collection", "docs", *args)
        assert res.exit_code == 2 and says in res.output, res.output


# ------------------------------------------------------------------------------------ into qdrant-edge
def dump_edge(path) -> dict[str, tuple]:
    """Every point of a qdrant-edge shard by id (as text): (payload, vectors), read with qdrant_edge alone
    in the form :func:`dump` gives a collection's (no payload: None; sparse vectors as dicts)."""
    import qdrant_edge as qe

    shard = qe.EdgeShard.load(str(path))
    out, offset = {}, None
    try:
        while True:
            records, offset = shard.scroll(
                qe.ScrollRequest(offset=offset, limit=2048, with_payload=True, with_vector=True)
            )
            for r in records:
                vecs = {
                    k: ({"indices": list(v.indices), "values": list(v.values)} if isinstance(v, qe.SparseVector) else v)
                    for k, v in (r.vector or {}).items()
                }
                out[str(r.id)] = (r.payload or None, vecs)
            if offset is None:
                return out
    finally:
        shard.close()


def edge_vector_names(path) -> set[str]:
    """The dense vectors a shard's config declares (read from its own file)."""
    return set(json.loads((path / "edge_config.json").read_text())["vectors"])


@pytest.mark.parametrize("target_kind", ["local", "qdrant-edge"])
def test_prefix_only_migration_has_no_full_vector_keeps_every_point_and_reports_the_planned_quality(
    source_adaptor, target_kind, tmp_path
):
    """Issue 23's three properties, for a target collection in local mode and for a qdrant-edge shard."""
    client = QdrantClient(":memory:")
    emb = make_source(client, "docs")
    before = dump(client, "docs")
    kw = dict(vector="emb", coarse_dim=MPREFIX, adaptor=source_adaptor, prefix_only=True, recall_queries=80)
    if target_kind == "qdrant-edge":
        kw["edge_path"] = tmp_path / "shard"
    planned = migrate_collection(client, "docs", dry_run=True, quiet=True, **kw).plan.prefix_only["quality"]
    assert not (tmp_path / "shard").exists()  # a dry run writes nothing
    report = migrate_collection(client, "docs", verify="full", quiet=True, **kw)
    assert report.ok and report.state == "complete", report.describe()
    if target_kind == "qdrant-edge":
        after, declared = dump_edge(tmp_path / "shard"), edge_vector_names(tmp_path / "shard")
    else:
        after, declared = dump(client, "docs_prefix8"), set(client.get_collection("docs_prefix8").config.params.vectors)
    # 1. no full vector: none declared, none on any point (neither 'full' nor the source's 'emb')
    assert declared == {"img", "coarse"}
    assert not any({"full", "emb"} & set(vecs) for _, vecs in after.values())
    # 2. every point and payload (and the other vectors; 'coarse' is the prefix of the source's 'emb')
    _assert_target_is_prefix_only(before, after, source_adaptor)
    assert dump(client, "docs") == before  # the source is never modified
    # 3. the quality the plan predicted, reported after within 0.01, and that report is the target's truth
    reported = report.verification.quality
    assert reported["metric"] == planned["metric"] == "recall@10" and reported["predicted"] == planned["predicted"]
    assert abs(reported["measured"] - planned["predicted"]) <= 0.01
    by_id = {str(_pid(i)): emb[i] for i in range(4, 3000)}
    ids = list(by_id)
    full = np.asarray([by_id[i] for i in ids])
    qids = [str(x) for x in planned["query_points"]]
    qv = np.asarray([by_id[i] for i in qids])
    exact = np.argsort(-(qv @ full.T), axis=1, kind="stable")[:, :11]
    found = numpy_prefix_ranking(after, _unit(source_adaptor.transform(qv, dim=MPREFIX)), 11)
    hits = [  # the query point itself left out of both lists, as the plan does
        len(set([ids[j] for j in e_row if ids[j] != own][:10]) & set([i for i in f_row if i != own][:10])) / 10
        for own, e_row, f_row in zip(qids, exact, found, strict=True)
    ]
    assert abs(float(np.mean(hits)) - reported["measured"]) <= 0.01


def test_prefix_only_migration_into_qdrant_edge_killed_then_resumed(source_adaptor, tmp_path):
    import qdrant_edge as qe

    client = QdrantClient(":memory:")
    make_source(client, "docs")
    before = dump(client, "docs")
    shard = tmp_path / "shard"
    kw = dict(vector="emb", coarse_dim=MPREFIX, prefix_only=True, edge_path=shard, batch_size=256, quiet=True)

    def crash(event):
        if event.batch == 4:
            raise Crash("simulated crash")

    with pytest.raises(Crash):
        migrate_collection(client, "docs", adaptor=source_adaptor, on_batch=crash, checkpoint_seconds=0, **kw)
    record = json.loads((shard / "mindex" / "matryoshka_index_migration.json").read_text())
    assert record["state"] == "copying" and record["prefix_only"]["target_kind"] == "qdrant-edge"
    # the checkpoint never counts points the shard does not hold
    assert 0 < record["copied"] <= len(dump_edge(shard)) < 3000
    with pytest.raises(InputError, match="--resume"):
        migrate_collection(client, "docs", **kw)
    report = migrate_collection(client, "docs", resume=True, verify="full", recall_queries=30, **kw)
    assert report.ok, report.describe()
    assert report.resumed_from == record["copied"] and report.copied_total == 3000
    assert abs(report.verification.quality["difference"]) <= 0.01
    _assert_target_is_prefix_only(before, dump_edge(shard), source_adaptor)
    # the stored adaptor is the one the migration used: the user adapts queries with it and searches the shard
    stored = MatryoshkaAdaptor.load(shard / "mindex" / "adaptor")
    q = _unit(stored.transform(np.asarray([before[str(_pid(7))][1]["emb"]], np.float32), dim=MPREFIX))[0]
    opened = qe.EdgeShard.load(str(shard))
    try:
        hit = opened.query(qe.QueryRequest(limit=1, query=qe.Query.Nearest(q.tolist(), using="coarse")))
    finally:
        opened.close()
    assert str(hit[0].id) == str(_pid(7))


def test_prefix_only_migration_into_qdrant_edge_measures_ndcg_from_a_path_source_via_the_cli(source_adaptor, tmp_path):
    storage = tmp_path / "qdrant"
    client = QdrantClient(path=str(storage))
    emb = make_source(client, "docs", 600)
    client.close()
    q, qids, qrels = labelled_sample(emb)
    np.save(tmp_path / "q.npy", q)
    (tmp_path / "qids.json").write_text(json.dumps(qids))
    (tmp_path / "qrels.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(f"{k}\t{d}\t1\n" for k, docs in qrels.items() for d in docs)
    )
    source_adaptor.save(tmp_path / "adaptor")
    shard = tmp_path / "shard"
    args = [
        "migrate", "--qdrant-path", str(storage), "--collection", "docs", "--vector", "emb", "--prefix-only",
        "--dim", str(MPREFIX), "--edge-path", str(shard), "--adaptor", str(tmp_path / "adaptor"),
        "--queries", str(tmp_path / "q.npy"), "--qrels", str(tmp_path / "qrels.tsv"),
        "--query-ids", str(tmp_path / "qids.json"), "--quiet", "--json",
    ]  # fmt: skip
    result = run(*args)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    plan_q, ver_q = report["plan"]["prefix_only"]["quality"], report["verification"]["quality"]
    assert plan_q["metric"] == ver_q["metric"] == "ndcg@10" and abs(ver_q["measured"] - plan_q["predicted"]) <= 0.01
    target = dump_edge(shard)
    assert len(target) == 600 and edge_vector_names(shard) == {"img", "coarse"}
    ranked = numpy_prefix_ranking(target, _unit(source_adaptor.transform(q, dim=MPREFIX)), 10)
    assert abs(ndcg_at_k(ranked, qids, qrels, 10) - ver_q["measured"]) <= 1e-4


def make_edge_source(path, client_source: dict[str, tuple]) -> None:
    """A qdrant-edge shard holding the points of a collection dump (the layout of :func:`make_source`)."""
    import qdrant_edge as qe

    path.mkdir()
    shard = qe.EdgeShard.create(
        str(path),
        qe.EdgeConfig(
            vectors={
                "emb": qe.EdgeVectorParams(size=MDIM, distance=qe.Distance.Cosine),
                "img": qe.EdgeVectorParams(size=4, distance=qe.Distance.Dot),
            },
            sparse_vectors={"bm25": qe.EdgeSparseVectorParams()},
        ),
    )
    points = []
    for pid, (payload, vecs) in client_source.items():
        vectors = {k: (qe.SparseVector(**v) if k == "bm25" else v) for k, v in vecs.items()}
        points.append(qe.Point(int(pid) if pid.isdigit() else pid, vectors, payload))
    shard.update(qe.UpdateOperation.upsert_points(points))
    shard.flush()
    shard.close()


def tree_digest(root) -> dict[str, str]:
    """Every file under ``root`` with the sha256 of its bytes."""
    import hashlib

    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_prefix_only_migration_from_a_qdrant_edge_shard_into_another(source_adaptor, tmp_path):
    from matryoshka_index.migrate.prefix_only_edge import EdgeSourceClient

    client = QdrantClient(":memory:")
    make_source(client, "docs", 1500)
    before = dump(client, "docs")
    make_edge_source(tmp_path / "src", before)
    assert dump_edge(tmp_path / "src") == before  # the same points as the collection
    files = tree_digest(tmp_path / "src")
    source = EdgeSourceClient(tmp_path / "src", "docs")
    try:
        report = migrate_collection(
            source, "docs", vector="emb", coarse_dim=MPREFIX, adaptor=source_adaptor, prefix_only=True,
            edge_path=tmp_path / "shard", verify="full", recall_queries=60, quiet=True,
        )  # fmt: skip
    finally:
        source.close()
    assert report.ok, report.describe()
    assert report.plan.endpoint == f"qdrant-edge shard {tmp_path / 'src'}"
    after = dump_edge(tmp_path / "shard")
    assert edge_vector_names(tmp_path / "shard") == {"img", "coarse"}  # no full vector
    _assert_target_is_prefix_only(before, after, source_adaptor)  # every point, payload and other vector
    assert abs(report.verification.quality["measured"] - report.plan.prefix_only["quality"]["predicted"]) <= 0.01
    assert tree_digest(tmp_path / "src") == files  # the source shard's files are untouched (read from a copy)
    # the same through the CLI
    source_adaptor.save(tmp_path / "adaptor")
    res = run(
        "migrate", "--edge-source", str(tmp_path / "src"), "--collection", "docs", "--vector", "emb",
        "--prefix-only", "--dim", str(MPREFIX), "--edge-path", str(tmp_path / "cli"),
        "--adaptor", str(tmp_path / "adaptor"), "--quiet", "--json",
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert dump_edge(tmp_path / "cli") == after
    refused = run("migrate", "--edge-source", str(tmp_path / "src"), "--collection", "docs", "--prefix-only")
    assert refused.exit_code == 2 and "--edge-path" in refused.output
    both = run("migrate", "--edge-source", str(tmp_path / "src"), "--qdrant-path", str(tmp_path), "--collection", "d")
    assert both.exit_code == 2 and both.stderr.strip().splitlines() == [
        "Error: --edge-source: the source is that shard; give no --qdrant-url or --qdrant-path with it"
    ]


def test_prefix_only_migration_into_qdrant_edge_refusals_are_one_line(source_adaptor, tmp_path):
    client = QdrantClient(":memory:")
    make_source(client, "docs", 300)
    kw = dict(vector="emb", coarse_dim=MPREFIX, adaptor=source_adaptor, quiet=True)
    with pytest.raises(InputError, match="--prefix-only"):
        migrate_collection(client, "docs", edge_path=tmp_path / "a", **kw)
    with pytest.raises(InputError, match="alias: belongs to a target collection"):
        migrate_collection(client, "docs", prefix_only=True, edge_path=tmp_path / "a", alias="live", **kw)
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "mine.txt").write_text("x")
    with pytest.raises(InputError, match="not empty"):
        migrate_collection(client, "docs", prefix_only=True, edge_path=tmp_path / "b", **kw)
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["mine.txt"]
    res = run("migrate", "--qdrant-path", str(tmp_path / "none"), "--collection", "docs", "--edge-path", "x")
    assert res.exit_code == 2 and "--prefix-only" in res.output and len(res.output.strip().splitlines()) == 1


# ------------------------------------------------------------------------------------ the advisor
# dim 64, 1,000 corpus vectors, full nDCG@10 0.40, an ANN sweep (the two-stage index: adaptor m=16 first
# reaches recall 0.99, at 40 candidates) and the prefix alone per method and m
PREFIX_ROWS = {
    "pca": {8: {"ndcg@10": 0.30}, 16: {"ndcg@10": 0.37}, 32: {"ndcg@10": 0.396}, 64: {"ndcg@10": 0.40}},
    "adaptor": {8: {"ndcg@10": 0.33}, 16: {"ndcg@10": 0.385}, 32: {"ndcg@10": 0.399}, 64: {"ndcg@10": 0.40}},
}


def _advisor_report():
    return constructed_labelled_report(PREFIX_ROWS)


def test_advisor_shows_the_bytes_saved_per_vector_and_for_the_collection():
    a = advise(_advisor_report(), min_recall=0.99)  # the two-stage pick: adaptor, m=16, C=40
    assert (a.coarse_dim, a.candidates) == (16, 40)
    assert a.bytes_saved_per_vector == 256 - 64 and a.vectors == 1000 and a.bytes_saved == 192_000
    assert "saves 192 B/vector in RAM, 187.5 KiB for 1,000 vectors" in str(a)
    big = advise(_advisor_report(), min_recall=0.99, collection_size=10_000_000)
    assert big.bytes_saved == 1_920_000_000 and "1.8 GiB for 10,000,000 vectors" in str(big)
    assert big.to_dict()["bytes_saved"] == 1_920_000_000
    with pytest.raises(InputError, match="collection_size"):
        advise(_advisor_report(), min_recall=0.99, collection_size=0)


def test_advisor_prefix_only_picks_the_smallest_prefix_that_alone_meets_the_budget():
    r = _advisor_report()
    # lose at most 5% of 0.40 (>= 0.38): the prefix alone first meets it at m=16 (adaptor 0.385; PCA 0.37 not)
    a = advise(r, max_ndcg_loss=0.05, prefix_only=True)
    assert (a.met, a.prefix_only, a.method, a.coarse_dim, a.candidates) == (True, True, "adaptor", 16, None)
    assert a.ndcg_at_10 == 0.385 and a.bytes_saved == 1000 * (256 - 64)
    text = str(a)
    assert "the prefix alone at dim 16" in text and "on disk and in RAM" in text and "rerank=None" in text
    # 1% (>= 0.396): m=32, where the adaptor's 0.399 beats PCA's 0.396 (both meet: the better one)
    one = advise(r, max_ndcg_loss=0.01, prefix_only=True)
    assert (one.coarse_dim, one.method) == (32, "adaptor")
    assert advise(r, max_ndcg_loss=0.01, prefix_only=True, methods=["pca"]).coarse_dim == 32
    # recall@10 of the prefix alone is the sweep's point at 10 candidates: 0.999 only at m=32
    rec = advise(r, min_recall=0.99, prefix_only=True)
    assert (rec.met, rec.coarse_dim, rec.recall_at_10) == (True, 32, 0.999)
    never = advise(r, max_ndcg_loss=0.0001, prefix_only=True)  # >= 0.39996: no prefix gets there
    assert not never.met and never.coarse_dim == 32 and "NOT met" in str(never)
