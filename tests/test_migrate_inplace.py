"""``migrate_collection(..., in_place=True)`` / ``mindex migrate --in-place`` and ``--rollback``, local mode.

qdrant-client 1.20's local mode implements ``create_vector_name`` and ``delete_vector_name``, so the
whole in-place path runs here. What local mode cannot show: a real server's version check (simulated
by replacing ``client.info``), quantization of ``coarse`` (local mode ignores quantization; the request
is checked instead) and concurrent writers (local mode writes from one thread).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from qdrant_client import QdrantClient
from qdrant_client import models as qm
from test_migrate import COARSE, DIM, _point_id, _unit, dump, make_source

from matryoshka_index import MatryoshkaAdaptor, migrate_collection
from matryoshka_index.backends.qdrant.metadata import META_KEY, MIGRATION_KEY, MetadataStore, point_handle
from matryoshka_index.cli import main
from matryoshka_index.errors import InputError
from matryoshka_index.migrate import CHECK_KEY, rollback_in_place

N = 6000


def without_coarse(points: list[tuple]) -> list[tuple]:
    """The dump with the added 'coarse' vector taken out: what must equal the dump from before."""
    return [(i, p, {k: v for k, v in vecs.items() if k != "coarse"}) for i, p, vecs in points]


@pytest.fixture(scope="module")
def adaptor() -> MatryoshkaAdaptor:
    x = _unit(np.random.default_rng(11).standard_normal((500, DIM)))
    return MatryoshkaAdaptor(matryoshka_dims=[COARSE, 16], epochs=1, batch_size=128, device="cpu", quiet=True).fit(x)


@pytest.fixture(scope="module")
def migrated(adaptor):
    client = QdrantClient(":memory:")
    make_source(client, "docs", N, without_vector=5)
    before = dump(client, "docs")
    config_before = client.get_collection("docs").config.model_dump()
    report = migrate_collection(
        client,
        "docs",
        vector="emb",
        coarse_dim=COARSE,
        adaptor=adaptor,
        in_place=True,
        verify="full",
        verify_sample=300,
        recall_queries=20,
        batch_size=500,
        quiet=True,
    )
    after = dump(client, "docs")  # before any search: local mode's Cosine search renormalises in place
    return client, report, before, after, config_before


def test_in_place_keeps_every_vector_and_payload_bit_identical(migrated):
    client, report, before, after, _ = migrated
    assert report.ok and report.state == "complete", report.describe()
    assert without_coarse(after) == before  # ids, payloads, 'emb' (Cosine), 'img', sparse 'bm25': exact
    with_vector = {str(i) for i, _, vecs in before if "emb" in vecs}
    assert {str(i) for i, _, vecs in after if "coarse" in vecs} == with_vector
    assert all(len(vecs["coarse"]) == COARSE for _, _, vecs in after if "coarse" in vecs)
    # no second copy: the only new collection is the small companion holding the adaptor
    assert {c.name for c in client.get_collections().collections} == {"docs", "docs__mindex_meta"}
    assert client.count("docs", exact=True).count == N


def test_in_place_report_verification_and_storage(migrated):
    _, report, _, _, _ = migrated
    v = report.verification
    assert v.counts_equal and v.source_count == v.target_count == N and v.coarse_missing == 0
    assert v.checked == 300 and v.missing == v.payload_mismatches == v.vector_mismatches == 0
    assert v.full_digest_equal is True and v.recall_at_10 is not None and v.recall_queries == 20
    assert report.copied_total == N and report.points_without_vector == 5
    plan = report.plan
    assert plan.mode == "in_place" and plan.target == "docs"
    assert plan.storage["in_place"]["disk_bytes"] == N * COARSE * 4 == plan.storage["in_place"]["ram_bytes"]
    assert plan.storage["copy"]["disk_bytes"] > N * (DIM + COARSE) * 4 > plan.storage["in_place"]["disk_bytes"]
    text = report.describe()
    assert "gave 6,000 points a 'coarse' vector" in text and "digest of every point unchanged" in text
    assert "storage: this in-place migration needed" in text and "estimates" in text


def test_in_place_config_gains_only_coarse(migrated):
    client, _, _, _, config_before = migrated
    config = client.get_collection("docs").config.model_dump()
    vectors = config["params"].pop("vectors")
    before_vectors = config_before["params"].pop("vectors")
    assert set(vectors) == set(before_vectors) | {"coarse"}
    assert all(vectors[name] == before_vectors[name] for name in before_vectors)
    assert vectors["coarse"]["size"] == COARSE and vectors["coarse"]["distance"] == "Cosine"
    meta = config.pop("metadata")
    assert meta["owner"] == "search-team" and set(meta) == {"owner", META_KEY, MIGRATION_KEY}
    config_before.pop("metadata")
    assert config == config_before
    record = json.loads(meta[META_KEY])
    assert record["vectors"]["full"] == "emb" and record["manifest"]["origin"]["mode"] == "in_place"


def test_in_place_collection_opens_with_from_qdrant(migrated):
    import matryoshka_index.index as index_mod

    client, _, before, _, _ = migrated
    idx = index_mod.MatryoshkaIndex.from_qdrant("docs", client=client, device="cpu")
    assert idx.backend.full_vector == "emb" and len(idx) == N and idx.coarse_dim == COARSE
    pid, _, vecs = next(p for p in before if isinstance(p[0], str) and "emb" in p[2])
    scores, ids = idx.search(np.asarray([vecs["emb"]], np.float32), k=3)
    assert idx.backend.point_ids(ids[0])[0] == pid and ids[0, 0] == point_handle(pid)
    assert scores[0, 0] == pytest.approx(1.0, abs=1e-5)  # reranked on the original 'emb' vector


def test_a_second_run_needs_resume_and_copy_mode_is_refused(adaptor):
    client = QdrantClient(":memory:")
    make_source(client, "docs", 400)
    kw = dict(vector="emb", coarse_dim=COARSE, in_place=True, verify_sample=100, recall_queries=5, quiet=True)
    assert migrate_collection(client, "docs", adaptor=adaptor, **kw).ok
    with pytest.raises(InputError, match="already holds a finished in-place migration"):
        migrate_collection(client, "docs", adaptor=adaptor, **kw)
    with pytest.raises(InputError, match="holds an in-place migration"):
        migrate_collection(client, "docs", vector="emb", adaptor=adaptor, quiet=True)
    with pytest.raises(InputError, match="started with coarse_dim 8"):
        migrate_collection(client, "docs", resume=True, **{**kw, "coarse_dim": 16})
    # --resume on a finished migration re-verifies it against the fingerprints taken before it began
    again = migrate_collection(client, "docs", resume=True, **kw)
    assert again.ok and again.copied_this_run == 0 and again.verification.checked == 100


def test_local_mode_cosine_search_changes_stored_bits_and_reverification_sees_it(adaptor):
    """qdrant-client local mode (not a server) renormalises stored Cosine vectors in place on every search
    (local/distances.py, cosine_similarity): the last bit of some vectors changes. The migration never
    searches the collection in local mode for that reason; a search afterwards does change bits, and
    re-verification reports it as a vector change, which is exactly what it is there to catch."""
    client = QdrantClient(":memory:")
    make_source(client, "docs", 400)
    before = dump(client, "docs")
    kw = dict(vector="emb", coarse_dim=COARSE, in_place=True, verify_sample=400, recall_queries=5, quiet=True)
    assert migrate_collection(client, "docs", adaptor=adaptor, **kw).ok
    assert without_coarse(dump(client, "docs")) == before
    client.query_points("docs", query=before[1][2]["emb"], using="emb", limit=3)  # the user's own search
    changed = sum(a != b for a, b in zip(without_coarse(dump(client, "docs")), before, strict=True))
    if changed == 0:  # pragma: no cover - a qdrant-client that no longer writes while searching
        pytest.skip("this qdrant-client's local mode no longer modifies vectors when searching")
    report = migrate_collection(client, "docs", resume=True, **kw)
    assert not report.ok and report.verification.vector_mismatches == changed
    assert report.verification.payload_mismatches == 0


# ----------------------------------------------------------------------------- crash and resume


class Crash(RuntimeError):
    pass


@pytest.mark.parametrize("stale_checkpoint", [False, True], ids=["checkpoint-at-crash", "stale-checkpoint"])
def test_killed_half_way_then_resumed(adaptor, stale_checkpoint):
    client = QdrantClient(":memory:")
    make_source(client, "src", 3000, seed=3)
    before = dump(client, "src")

    def crash_after_five(event):
        if event.batch == 5:
            raise Crash("simulated crash")

    kw = dict(vector="emb", coarse_dim=COARSE, in_place=True, batch_size=256, recall_queries=5, quiet=True)
    with pytest.raises(Crash):
        migrate_collection(client, "src", adaptor=adaptor, on_batch=crash_after_five, checkpoint_seconds=3600, **kw)
    store = MetadataStore(client, "src", "mem")
    record = store.read(MIGRATION_KEY)
    assert record["state"] == "updating" and record["coarse_added"] == 5 * 256 and record["offset"] is not None
    has_coarse = qm.Filter(must=[qm.HasVectorCondition(has_vector="coarse")])
    assert client.count("src", count_filter=has_coarse).count == 5 * 256
    assert without_coarse(dump(client, "src")) == before  # half-way, nothing else changed either

    from matryoshka_index.qdrant_open import open_index_from_qdrant

    with pytest.raises(InputError, match="unfinished in-place migration"):
        open_index_from_qdrant(object, "src", client=client)
    with pytest.raises(InputError, match="--resume"):
        migrate_collection(client, "src", adaptor=adaptor, **kw)

    if stale_checkpoint:  # a kill -9 before any checkpoint was written: every batch is redone
        store.write({**record, "offset": None, "coarse_added": 0, "batches": 0}, MIGRATION_KEY)
    report = migrate_collection(client, "src", resume=True, verify="full", **kw)
    assert report.ok, report.describe()
    expected_from = 0 if stale_checkpoint else 5 * 256
    assert report.resumed_from == expected_from and report.copied_this_run == 3000 - expected_from
    assert report.copied_total == 3000 and client.count("src", exact=True).count == 3000
    assert client.count("src", count_filter=has_coarse).count == 3000
    # the migration began in sample mode, so the full digest was never taken: the sample is compared
    assert report.verification.full_digest_equal is None and any("verify='full'" in w for w in report.warnings)
    assert without_coarse(dump(client, "src")) == before


def test_tampering_is_caught_by_the_fingerprints(adaptor):
    client = QdrantClient(":memory:")
    make_source(client, "src", 400)
    kw = dict(vector="emb", coarse_dim=COARSE, in_place=True, recall_queries=5, verify="full", quiet=True)
    assert migrate_collection(client, "src", adaptor=adaptor, verify_sample=50, **kw).ok
    check = json.loads(MetadataStore(client, "src", "mem").read_companion_record(CHECK_KEY))
    sampled = check["sample"][0][0]
    point = int(sampled[1:]) if sampled[0] == "i" else sampled[1:]
    client.set_payload("src", {"title": "tampered"}, points=[point])
    report = migrate_collection(client, "src", resume=True, **kw)
    v = report.verification
    assert not report.ok and report.state == "verification_failed"
    assert v.payload_mismatches == 1 and v.vector_mismatches == 0 and v.full_digest_equal is False
    assert any("payload changed" in e for e in v.examples)


# ------------------------------------------------------------------------------------------ rollback


def test_rollback_restores_the_original_config(adaptor):
    client = QdrantClient(":memory:")
    make_source(client, "docs", 800)
    before = dump(client, "docs")
    config = client.get_collection("docs").config.model_dump()
    collections = {c.name for c in client.get_collections().collections}
    migrate_collection(client, "docs", vector="emb", adaptor=adaptor, coarse_dim=COARSE, in_place=True, quiet=True)
    assert "coarse" in client.get_collection("docs").config.params.vectors
    undone = rollback_in_place(client, "docs")
    assert undone.removed_vector == "coarse" and undone.removed_companion == "docs__mindex_meta"
    assert set(undone.removed_metadata_keys) == {META_KEY, MIGRATION_KEY} and undone.state_before == "complete"
    assert client.get_collection("docs").config.model_dump() == config
    assert {c.name for c in client.get_collections().collections} == collections
    assert dump(client, "docs") == before
    with pytest.raises(InputError, match="holds no in-place migration to roll back"):
        rollback_in_place(client, "docs")


def test_rollback_of_an_unfinished_migration_and_of_an_unnamed_vector(adaptor):
    client = QdrantClient(":memory:")
    rng = np.random.default_rng(4)
    x = _unit(rng.standard_normal((600, DIM)))
    client.create_collection("plain", vectors_config=qm.VectorParams(size=DIM, distance=qm.Distance.DOT))
    client.upsert("plain", qm.Batch(ids=list(range(600)), vectors=x.tolist(), payloads=[{"n": i} for i in range(600)]))
    before = dump(client, "plain")
    params = client.get_collection("plain").config.params.vectors

    def crash(event):
        raise Crash()

    kw = dict(coarse_dim=COARSE, adaptor=adaptor, in_place=True, batch_size=100, recall_queries=10, quiet=True)
    with pytest.raises(Crash):
        migrate_collection(client, "plain", on_batch=crash, **kw)
    undone = rollback_in_place(client, "plain")
    assert undone.state_before == "updating" and undone.removed_vector == "coarse"
    # the unnamed vector is given back in its single form (local mode would keep {"": params})
    assert client.get_collection("plain").config.params.vectors == params
    client.upsert("plain", [qm.PointStruct(id=9999, vector=x[0].tolist())])  # the application's own upsert
    client.delete("plain", qm.PointIdsList(points=[9999]))
    assert dump(client, "plain") == before and [c.name for c in client.get_collections().collections] == ["plain"]

    # the unnamed vector is the rerank vector of an in-place migration too; the plan says what the
    # application's own upserts must change, and that is what Qdrant then asks for
    plan = migrate_collection(client, "plain", dry_run=True, **kw).describe()
    assert "Qdrant refuses upserts with an unnamed vector" in plan and "vector={'': v}" in plan
    report = migrate_collection(client, "plain", **kw)
    assert report.ok and report.plan.vector is None, report.describe()
    with pytest.raises(Exception, match="Unnamed vectors are not allowed"):
        client.upsert("plain", [qm.PointStruct(id=9999, vector=x[0].tolist())])
    client.upsert("plain", [qm.PointStruct(id=9999, vector={"": x[0].tolist(), "coarse": [0.5] * COARSE})])
    client.delete("plain", qm.PointIdsList(points=[9999]))
    assert without_coarse(dump(client, "plain")) == before
    import matryoshka_index.index as index_mod

    idx = index_mod.MatryoshkaIndex.from_qdrant("plain", client=client, device="cpu")
    assert idx.backend.full_vector == ""
    _, ids = idx.search(x[7:8], k=3)
    assert ids[0, 0] == 7


def test_rollback_refuses_what_it_did_not_add(adaptor):
    client = QdrantClient(":memory:")
    make_source(client, "src", 300)
    migrate_collection(client, "src", vector="emb", coarse_dim=COARSE, adaptor=adaptor, target="dst", quiet=True)
    with pytest.raises(InputError, match="target of a copy-mode migration of 'src'"):
        rollback_in_place(client, "dst")
    client.create_collection(
        "own",
        vectors_config={
            "coarse": qm.VectorParams(size=4, distance=qm.Distance.DOT),
            "emb": qm.VectorParams(size=DIM, distance=qm.Distance.COSINE),
        },
    )
    with pytest.raises(InputError, match="holds no in-place migration"):
        rollback_in_place(client, "own")
    with pytest.raises(InputError, match="already has a vector named 'coarse'"):
        migrate_collection(client, "own", vector="emb", adaptor=adaptor, in_place=True, quiet=True)
    assert "coarse" in client.get_collection("own").config.params.vectors


# -------------------------------------------------------------------------- server version, options


def test_refuses_a_server_older_than_1_18(monkeypatch, adaptor):
    """The version comes from ``client.info()``; an old server is simulated by replacing it."""
    client = QdrantClient(":memory:")
    make_source(client, "docs", 200)
    before = (client.get_collections(), client.get_collection("docs").model_dump(), dump(client, "docs"))
    monkeypatch.setattr(client, "info", lambda: qm.VersionInfo(title="qdrant - vector search engine", version="1.17.4"))
    for dry_run in (True, False):
        with pytest.raises(InputError) as err:
            migrate_collection(client, "docs", vector="emb", adaptor=adaptor, in_place=True, dry_run=dry_run)
        msg = str(err.value)
        assert "needs Qdrant >= 1.18" in msg and "runs 1.17.4" in msg and "drop --in-place" in msg
        assert "\n" not in msg
    assert (client.get_collections(), client.get_collection("docs").model_dump(), dump(client, "docs")) == before
    # 1.18 itself (and a 'v' prefix) is accepted; an unreadable version is a warning, not a refusal
    monkeypatch.setattr(client, "info", lambda: qm.VersionInfo(title="qdrant", version="v1.18.0"))
    assert migrate_collection(client, "docs", vector="emb", adaptor=adaptor, in_place=True, dry_run=True).ok
    monkeypatch.setattr(client, "info", lambda: qm.VersionInfo(title="qdrant", version="dev"))
    report = migrate_collection(client, "docs", vector="emb", adaptor=adaptor, in_place=True, dry_run=True)
    assert any("could not read the server version" in w for w in report.warnings)


def test_copy_mode_options_are_refused_and_quantization_is_requested(monkeypatch, adaptor):
    client = QdrantClient(":memory:")
    make_source(client, "docs", 300)
    for kwargs in ({"target": "x"}, {"alias": "a"}, {"shard_number": 2}, {"on_disk": True}):
        with pytest.raises(InputError, match="belongs to copy mode"):
            migrate_collection(client, "docs", vector="emb", in_place=True, **kwargs)
    # local mode ignores quantization, so the request itself is what can be checked here
    calls = []
    real = client.update_collection

    def spy(name, **kw):
        if kw.get("vectors_config"):
            calls.append(kw["vectors_config"])
        return real(name, **kw)

    monkeypatch.setattr(client, "update_collection", spy)
    report = migrate_collection(
        client, "docs", vector="emb", adaptor=adaptor, coarse_dim=COARSE, in_place=True, coarse_quantization="int8"
    )
    assert report.ok
    (config,) = calls
    assert set(config) == {"coarse"} and isinstance(config["coarse"].quantization_config, qm.ScalarQuantization)


# ----------------------------------------------------------------------------------- CLI, path mode


@pytest.fixture
def storage(tmp_path):
    # local path mode commits one SQLite transaction per point: tmpfs keeps the test quick
    base = Path(tempfile.mkdtemp(dir="/dev/shm", prefix="mindex-test-")) if Path("/dev/shm").is_dir() else tmp_path
    path = base / "qdrant"
    client = QdrantClient(path=str(path))
    make_source(client, "docs", 400, seed=9)
    client.close()
    yield path
    shutil.rmtree(base, ignore_errors=True)


def _dump_path(path: Path, name: str) -> list[tuple]:
    client = QdrantClient(path=str(path))
    try:
        return dump(client, name)
    finally:
        client.close()


def test_cli_in_place_then_rollback_in_path_mode(storage, adaptor, tmp_path):
    runner = CliRunner()
    before = _dump_path(storage, "docs")
    base = ["migrate", "--qdrant-path", str(storage), "--collection", "docs", "--vector", "emb"]
    adaptor.save(tmp_path / "adaptor")

    dry = runner.invoke(main, [*base, "--in-place", "--coarse-dim", "8", "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "in place: adds 'coarse'" in dry.stdout and "nothing was written" in dry.stdout
    bad = runner.invoke(main, [*base, "--in-place", "--target", "other"])
    assert bad.exit_code == 2 and "target: belongs to copy mode" in bad.stderr

    res = runner.invoke(
        main, [*base, "--in-place", "--coarse-dim", "8", "--adaptor", str(tmp_path / "adaptor"), "--json", "-q"]
    )
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert report["ok"] and report["plan"]["mode"] == "in_place" and report["copied_total"] == 400
    assert without_coarse(_dump_path(storage, "docs")) == before  # persisted to disk, reread by a new client

    import matryoshka_index.index as index_mod

    idx = index_mod.MatryoshkaIndex.from_qdrant("docs", path=storage, device="cpu")
    assert len(idx) == 400 and idx.backend.full_vector == "emb"
    idx.backend.close()

    usage = runner.invoke(main, [*base, "--rollback", "--resume"])
    assert usage.exit_code == 2 and "--rollback takes no --resume" in usage.output
    undone = runner.invoke(main, [*base[:-2], "--rollback"])
    assert undone.exit_code == 0, undone.output
    assert "rolled back the in-place migration of 'docs'" in undone.stdout
    assert _dump_path(storage, "docs") == before
    again = runner.invoke(main, [*base[:-2], "--rollback"])
    assert again.exit_code == 2 and "holds no in-place migration" in again.stderr
    assert _point_id(1) == 10  # ids as make_source writes them: ints and UUIDs both survived


# -------------------------------------------------------------------------------------- real server


@pytest.mark.docker
def test_in_place_on_a_real_server(adaptor):
    """The same on the pinned Qdrant server (testcontainers); skipped, with the reason, without Docker.

    Written against the server API but never run where it was written (no Docker engine there).
    """
    from test_qdrant_server import API_KEY, _docker_or_skip, pinned_image

    _docker_or_skip()
    from testcontainers.community.qdrant import QdrantContainer

    with QdrantContainer(image=pinned_image(), api_key=API_KEY) as container:
        client = QdrantClient(
            url=f"http://{container.rest_host_address}", api_key=API_KEY, check_compatibility=False, timeout=30
        )
        make_source(client, "docs", 3000, without_vector=3)
        before = dump(client, "docs")
        vectors_before = set(client.get_collection("docs").config.params.vectors)
        report = migrate_collection(
            client,
            "docs",
            vector="emb",
            coarse_dim=COARSE,
            adaptor=adaptor,
            in_place=True,
            coarse_quantization="int8",
            verify="full",
            recall_queries=20,
            quiet=True,
        )
        assert report.ok, report.describe()
        assert without_coarse(dump(client, "docs")) == before
        coarse = client.get_collection("docs").config.params.vectors["coarse"]
        assert isinstance(coarse.quantization_config, qm.ScalarQuantization)
        import matryoshka_index.index as index_mod

        idx = index_mod.MatryoshkaIndex.from_qdrant("docs", client=client, device="cpu")
        pid, _, vecs = next(p for p in before if "emb" in p[2])
        _, ids = idx.search(np.asarray([vecs["emb"]], np.float32), k=3)
        assert idx.backend.point_ids(ids[0])[0] == pid
        undone = rollback_in_place(client, "docs")
        assert undone.removed_vector == "coarse"
        assert set(client.get_collection("docs").config.params.vectors) == vectors_before
        assert dump(client, "docs") == before  # a server never rewrites stored vectors on search
        client.close()
