"""``migrate_collection`` / ``mindex migrate`` in qdrant-client local mode.

A 20k-point source with int and UUID ids, payloads, an extra named vector, a sparse vector and a
few points without the migrated vector is copied and checked point by point; a migration killed
half-way is resumed; the source is compared before and after; dry runs write nothing; bad input
gives one line.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import socket
import tempfile
import uuid
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from qdrant_client import QdrantClient
from qdrant_client import models as qm

from matryoshka_index import MatryoshkaAdaptor, migrate_collection
from matryoshka_index.backends.qdrant.metadata import MIGRATION_KEY, MetadataStore, point_handle
from matryoshka_index.cli import main
from matryoshka_index.errors import BackendError, InputError

DIM = 32
COARSE = 8


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _point_id(i: int) -> int | str:
    # every other point has a UUID id
    return i * 10 if i % 2 else str(uuid.uuid5(uuid.NAMESPACE_URL, f"doc/{i}"))


def make_source(client: QdrantClient, name: str, n: int, *, seed: int = 0, without_vector: int = 0) -> None:
    """A collection like a user's: named vectors 'emb' (cosine) and 'img' (dot), sparse 'bm25', payloads."""
    rng = np.random.default_rng(seed)
    emb = _unit(rng.standard_normal((n, DIM)))
    img = rng.standard_normal((n, 8)).astype(np.float32)
    client.create_collection(
        name,
        vectors_config={
            "emb": qm.VectorParams(size=DIM, distance=qm.Distance.COSINE),
            "img": qm.VectorParams(size=8, distance=qm.Distance.DOT),
        },
        sparse_vectors_config={"bm25": qm.SparseVectorParams()},
        metadata={"owner": "search-team"},
    )
    points = []
    for i in range(n):
        vec: dict = {"img": img[i].tolist()}
        if i >= without_vector:
            vec["emb"] = emb[i].tolist()
        if i % 3 == 0:
            vec["bm25"] = qm.SparseVector(indices=[i % 97, 100 + i % 13], values=[0.5, float(i % 7) + 1])
        payload = {
            "i": i,
            "title": f"Dokument №{i}",
            "tags": ["a", str(i % 5)],
            "nested": {"score": i / 7, "ok": bool(i % 2), "none": None},
        }
        points.append(qm.PointStruct(id=_point_id(i), vector=vec, payload=payload))
    for start in range(0, n, 2000):
        client.upsert(name, points[start : start + 2000])


def dump(client: QdrantClient, name: str) -> list[tuple]:
    """Every point of a collection (id, payload, vectors), in id order, exactly as stored."""
    out, offset = [], None
    while True:
        records, offset = client.scroll(name, limit=2048, offset=offset, with_payload=True, with_vectors=True)
        for r in records:
            vecs = r.vector if isinstance(r.vector, dict) else {"": r.vector}
            vecs = {k: (v.model_dump() if isinstance(v, qm.SparseVector) else v) for k, v in vecs.items()}
            out.append((r.id, r.payload, vecs))
        if offset is None:
            return out


def digest(points: list[tuple]) -> str:
    return hashlib.sha256(json.dumps([[str(i), p, v] for i, p, v in points], sort_keys=True).encode()).hexdigest()


def assert_target_matches(source: list[tuple], target: list[tuple]) -> None:
    """Same ids (no duplicates), same payloads, 'full' == 'emb' (cosine: within 1e-6), other vectors identical."""
    assert [str(i) for i, _, _ in target] == [str(i) for i, _, _ in source]
    assert len({str(i) for i, _, _ in target}) == len(target)
    for (sid, sp, sv), (_, tp, tv) in zip(source, target, strict=True):
        assert tp == sp, sid
        assert tv.get("img") == sv.get("img"), sid  # Dot: bit-identical
        assert tv.get("bm25") == sv.get("bm25"), sid
        if "emb" in sv:
            np.testing.assert_allclose(tv["full"], sv["emb"], atol=1e-6, rtol=0)
            assert len(tv["coarse"]) == COARSE
        else:
            assert "full" not in tv and "coarse" not in tv


@pytest.fixture(scope="module")
def adaptor() -> MatryoshkaAdaptor:
    x = _unit(np.random.default_rng(11).standard_normal((500, DIM)))
    return MatryoshkaAdaptor(matryoshka_dims=[COARSE, 16], epochs=1, batch_size=128, device="cpu", quiet=True).fit(x)


def _alias(client: QdrantClient, alias: str, collection: str) -> None:
    client.update_collection_aliases(
        change_aliases_operations=[
            qm.CreateAliasOperation(create_alias=qm.CreateAlias(collection_name=collection, alias_name=alias))
        ]
    )


# --------------------------------------------------------------------------------- the 20k migration


@pytest.fixture(scope="module")
def migrated(adaptor):
    client = QdrantClient(":memory:")
    make_source(client, "docs_v1", 20_000, without_vector=5)
    _alias(client, "docs", "docs_v1")
    before = dump(client, "docs_v1")
    source_config = client.get_collection("docs_v1").model_dump()
    report = migrate_collection(
        client,
        "docs",
        vector="emb",
        coarse_dim=COARSE,
        adaptor=adaptor,
        target="docs_matryoshka",
        alias="docs",
        verify="full",
        recall_queries=30,
        batch_size=512,
        quiet=True,
    )
    return client, report, before, source_config


def test_20k_migration_copies_everything(migrated):
    client, report, before, _ = migrated
    assert report.ok and report.state == "complete", report.describe()
    assert report.copied_total == report.plan.points == 20_000
    assert report.points_without_vector == 5
    v = report.verification
    assert v.counts_equal and v.source_count == v.target_count == 20_000 and v.checked == 20_000
    assert v.missing == v.payload_mismatches == v.vector_mismatches == 0 and v.id_handle_collisions == 0
    assert v.max_full_vector_diff <= 1e-6
    assert v.recall_at_10 is not None and 0 < v.recall_at_10 <= 1 and v.recall_queries == 30
    assert client.count("docs_matryoshka", exact=True).count == 20_000
    assert_target_matches(before, dump(client, "docs_matryoshka"))


def test_20k_migration_keeps_ids_config_and_switches_alias(migrated):
    client, report, _, _ = migrated
    uid = _point_id(0)
    got = client.retrieve("docs_matryoshka", [uid, 10], with_payload=True)
    assert {str(p.id) for p in got} == {uid, "10"}
    info = client.get_collection("docs_matryoshka")
    assert set(info.config.params.vectors) == {"img", "coarse", "full"}  # "emb" became "full"
    assert set(info.config.params.sparse_vectors) == {"bm25"}
    assert info.config.metadata["owner"] == "search-team"  # the source's own metadata is carried over
    aliases = {a.alias_name: a.collection_name for a in client.get_aliases().aliases}
    assert aliases == {"docs": "docs_matryoshka"} and report.alias_switched
    record = MetadataStore(client, "docs_matryoshka", "mem").read(MIGRATION_KEY)
    assert record["state"] == "complete" and record["alias_previous"] == "docs_v1" and record["copied"] == 20_000


def test_source_unchanged(migrated):
    client, _, before, source_config = migrated
    after = dump(client, "docs_v1")
    assert digest(after) == digest(before)
    assert client.get_collection("docs_v1").model_dump() == source_config


def test_migrated_collection_opens_with_from_qdrant(migrated):
    import matryoshka_index.index as index_mod

    client, _, before, _ = migrated
    idx = index_mod.MatryoshkaIndex.from_qdrant("docs", client=client, device="cpu")
    assert len(idx) == 20_000 and idx.coarse_dim == COARSE
    # query with a stored UUID point's own vector: it comes back first, under its exact UUID
    pid, _, vecs = next(p for p in before if isinstance(p[0], str) and "emb" in p[2])
    _, ids = idx.search(np.asarray([vecs["emb"]], np.float32), k=3)
    assert idx.backend.point_ids(ids[0])[0] == pid and ids[0, 0] == point_handle(pid)


# ----------------------------------------------------------------------------- crash and resume


class Crash(RuntimeError):
    pass


@pytest.mark.parametrize("stale_checkpoint", [False, True], ids=["checkpoint-at-crash", "stale-checkpoint"])
def test_killed_half_way_then_resumed(adaptor, stale_checkpoint):
    client = QdrantClient(":memory:")
    make_source(client, "src", 4000, seed=3)
    before = dump(client, "src")
    batches: list[int] = []

    def crash_after_five(event):
        batches.append(event.batch)
        if event.batch == 5:
            raise Crash("simulated crash")

    kw = dict(
        vector="emb", coarse_dim=COARSE, adaptor=adaptor, target="dst", batch_size=256, recall_queries=5, quiet=True
    )
    with pytest.raises(Crash):
        migrate_collection(client, "src", on_batch=crash_after_five, checkpoint_seconds=3600, **kw)
    store = MetadataStore(client, "dst", "mem")
    record = store.read(MIGRATION_KEY)
    assert record["state"] == "copying" and record["copied"] == 5 * 256 and record["offset"] is not None
    assert client.count("dst", exact=True).count == 5 * 256

    from matryoshka_index.qdrant_open import open_index_from_qdrant

    with pytest.raises(InputError, match="unfinished migration"):
        open_index_from_qdrant(object, "dst", client=client)
    with pytest.raises(InputError, match="--resume"):
        migrate_collection(client, "src", **kw)

    if stale_checkpoint:  # a kill -9 before any checkpoint was written: everything is written again
        store.write({**record, "offset": None, "copied": 0, "batches": 0}, MIGRATION_KEY)
    report = migrate_collection(
        client, "src", resume=True, verify="full", **{k: v for k, v in kw.items() if k != "adaptor"}
    )
    assert report.ok, report.describe()
    expected_from = 0 if stale_checkpoint else 5 * 256
    assert report.resumed_from == expected_from and report.copied_this_run == 4000 - expected_from
    assert report.copied_total == 4000 and client.count("dst", exact=True).count == 4000
    assert_target_matches(before, dump(client, "dst"))
    assert digest(dump(client, "src")) == digest(before)


def test_resume_refuses_other_adaptor_and_coarse_dim(adaptor):
    client = QdrantClient(":memory:")
    make_source(client, "src", 600)
    kw = dict(vector="emb", adaptor=adaptor, target="dst", batch_size=100, recall_queries=5, quiet=True)

    def crash(event):
        raise Crash()

    with pytest.raises(Crash):
        migrate_collection(client, "src", coarse_dim=COARSE, on_batch=crash, **kw)
    other = MatryoshkaAdaptor(matryoshka_dims=[COARSE], epochs=1, batch_size=64, device="cpu", quiet=True, seed=5)
    other.fit(_unit(np.random.default_rng(2).standard_normal((200, DIM))))
    with pytest.raises(InputError, match="adaptor: differs"):
        migrate_collection(client, "src", resume=True, **{**kw, "adaptor": other})
    with pytest.raises(InputError, match="created with coarse_dim 8"):
        migrate_collection(client, "src", resume=True, coarse_dim=16, **kw)
    report = migrate_collection(client, "src", resume=True, **kw)  # same adaptor given again: fine
    assert report.ok and report.plan.coarse_dim == COARSE


def test_verification_failure_leaves_alias_alone(adaptor):
    client = QdrantClient(":memory:")
    make_source(client, "src_v1", 500)
    _alias(client, "src", "src_v1")
    kw = dict(vector="emb", coarse_dim=COARSE, adaptor=adaptor, target="dst", recall_queries=5, quiet=True)
    assert migrate_collection(client, "src", **kw).ok
    client.set_payload("dst", {"title": "tampered"}, points=[_point_id(7)])
    report = migrate_collection(client, "src", resume=True, alias="src", verify="full", **kw)
    assert not report.ok and report.verification.payload_mismatches == 1 and not report.alias_switched
    assert {a.alias_name: a.collection_name for a in client.get_aliases().aliases} == {"src": "src_v1"}
    assert "payload differs" in report.verification.examples[0]


# ----------------------------------------------------------------------------------------- dry run


def test_dry_run_writes_nothing(adaptor):
    client = QdrantClient(":memory:")
    make_source(client, "docs_v1", 1000)
    _alias(client, "docs", "docs_v1")
    before = (client.get_collections(), client.get_aliases(), client.get_collection("docs_v1").model_dump())
    report = migrate_collection(client, "docs", vector="emb", alias="docs", dry_run=True, quiet=True)
    after = (client.get_collections(), client.get_aliases(), client.get_collection("docs_v1").model_dump())
    assert before == after
    plan = report.plan
    assert report.dry_run and report.ok and not report.adaptor_trained
    assert (plan.points, plan.full_dim, plan.coarse_dim, plan.target) == (1000, DIM, 16, "docs_matryoshka")
    assert plan.other_vectors == ["img"] and plan.sparse_vectors == ["bm25"] and plan.alias_now_points_to == "docs_v1"
    assert plan.estimated_target_bytes > 1000 * (DIM + 16) * 4 and plan.estimated_copy_seconds is not None
    text = report.describe()
    assert "1,000 points" in text and "nothing was written" in text and "train (unsupervised)" in text


def test_verify_seed_samples_the_same_points_every_time(adaptor):
    client = QdrantClient(":memory:")
    make_source(client, "src", 800)
    kw = dict(vector="emb", coarse_dim=COARSE, adaptor=adaptor, target="dst", recall_queries=15, quiet=True)
    runs = [migrate_collection(client, "src", verify_seed=7, verify_sample=40, **kw)]
    runs += [migrate_collection(client, "src", resume=True, verify_seed=s, verify_sample=40, **kw) for s in (7, 8)]
    recalls = [r.verification.recall_at_10 for r in runs]
    assert all(r.ok and r.verification.checked == 40 for r in runs)
    assert recalls[0] == recalls[1]  # the same 15 queries, the same answers
    with pytest.raises(InputError, match="verify_seed"):
        migrate_collection(client, "src", resume=True, verify_seed=-1, **kw)


# --------------------------------------------------------------------------- small collections


def test_unnamed_vector_source_trains_its_own_adaptor():
    client = QdrantClient(":memory:")
    rng = np.random.default_rng(4)
    x = _unit(rng.standard_normal((400, DIM)))
    client.create_collection("plain", vectors_config=qm.VectorParams(size=DIM, distance=qm.Distance.DOT))
    client.upsert("plain", qm.Batch(ids=list(range(400)), vectors=x.tolist(), payloads=[{"n": i} for i in range(400)]))
    before = dump(client, "plain")
    report = migrate_collection(
        client, "plain", coarse_dim=COARSE, sample=300, adaptor_options={"epochs": 1}, recall_queries=10, quiet=True
    )
    assert report.ok and report.adaptor_trained and report.plan.metric == "ip"
    target = dump(client, "plain_matryoshka")
    for (_, sp, sv), (_, tp, tv) in zip(before, target, strict=True):
        assert tp == sp and tv["full"] == sv[""]  # Dot: the full vector is bit-identical
    import matryoshka_index.index as index_mod

    idx = index_mod.MatryoshkaIndex.from_qdrant("plain_matryoshka", client=client, device="cpu")
    assert len(idx) == 400


# ------------------------------------------------------------------------------------------- errors


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def small_client():
    client = QdrantClient(":memory:")
    make_source(client, "docs", 300)
    client.create_collection("euclid", vectors_config=qm.VectorParams(size=4, distance=qm.Distance.EUCLID))
    client.create_collection("other", vectors_config=qm.VectorParams(size=4, distance=qm.Distance.COSINE))
    return client


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"collection": "nope"}, "collection: no collection or alias named 'nope' at in-memory Qdrant"),
        ({"vector": "text"}, "vector: collection 'docs' has no dense vector named 'text'"),
        ({"vector": "bm25"}, "a sparse vector; choose a dense one"),
        ({}, "several named vectors (emb, img); choose the one to migrate with --vector NAME"),
        ({"collection": "euclid"}, "uses Euclid distance"),
        ({"collection": "other", "vector": "x"}, "has a single unnamed vector, no vector named 'x'"),
        ({"vector": "emb", "alias": "docs"}, "alias: 'docs' is the source collection's own name"),
        (
            {"vector": "emb", "target": "other"},
            "already exists at in-memory Qdrant and was not created by mindex migrate",
        ),
        ({"vector": "emb", "coarse_dim": DIM}, "coarse_dim: 32 must be smaller than the vectors' 32 dims"),
        ({"vector": "emb", "verify": "some"}, "verify: choose 'sample' or 'full'"),
    ],
)
def test_bad_input_is_one_line(small_client, kwargs, message):
    collection = kwargs.pop("collection", "docs")
    with pytest.raises(InputError) as err:
        migrate_collection(small_client, collection, quiet=True, **kwargs)
    assert message in str(err.value) and "\n" not in str(err.value)
    assert {c.name for c in small_client.get_collections().collections} == {"docs", "euclid", "other"}


def test_adaptor_dim_mismatch_is_one_line(small_client):
    wrong = MatryoshkaAdaptor(matryoshka_dims=[4], epochs=1, batch_size=64, device="cpu", quiet=True)
    wrong.fit(_unit(np.random.default_rng(1).standard_normal((200, 16))))
    with pytest.raises(InputError) as err:
        migrate_collection(small_client, "docs", vector="emb", adaptor=wrong, quiet=True)
    assert str(err.value) == (
        "adaptor: expects 16-dim embeddings but vector 'emb' of collection 'docs' has 32 dims; "
        "give an adaptor trained on this model's embeddings, or omit it to train one"
    )


def test_server_down_is_one_line():
    url = f"http://127.0.0.1:{_closed_port()}"
    client = QdrantClient(url=url, check_compatibility=False)
    with pytest.raises(BackendError) as err:
        migrate_collection(client, "docs")
    assert str(err.value).startswith(f"cannot reach Qdrant at {url}: ") and "is the server running?" in str(err.value)
    assert "\n" not in str(err.value)
    result = CliRunner().invoke(main, ["migrate", "--qdrant-url", url, "--collection", "docs"])
    assert result.exit_code == 2
    assert result.stderr.strip().startswith(f"Error: cannot reach Qdrant at {url}")
    assert len(result.stderr.strip().splitlines()) == 1


# ----------------------------------------------------------------------------------- CLI, path mode


@pytest.fixture
def storage(tmp_path):
    # local path mode commits one SQLite transaction per point: tmpfs keeps the test quick
    base = Path(tempfile.mkdtemp(dir="/dev/shm", prefix="mindex-test-")) if Path("/dev/shm").is_dir() else tmp_path
    path = base / "qdrant"
    client = QdrantClient(path=str(path))
    make_source(client, "docs_v1", 600, seed=9)
    _alias(client, "docs", "docs_v1")
    client.close()
    yield path
    shutil.rmtree(base, ignore_errors=True)


def _checksums(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _dump_path(path: Path, name: str) -> list[tuple]:
    client = QdrantClient(path=str(path))
    try:
        return dump(client, name)
    finally:
        client.close()


def test_cli_dry_run_then_migrate_in_path_mode(storage, adaptor, tmp_path):
    runner = CliRunner()
    before_files = _checksums(storage)
    before = _dump_path(storage, "docs_v1")
    base = ["migrate", "--qdrant-path", str(storage), "--collection", "docs", "--vector", "emb", "--coarse-dim", "8"]

    scratch = set(Path(tempfile.gettempdir()).glob("mindex-estimate-*"))
    dry = runner.invoke(main, [*base, "--alias", "docs", "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "600 points" in dry.stdout and "nothing was written" in dry.stdout
    # local path mode is slow to write: the time is measured on a scratch storage, which is gone after
    assert "written into a scratch local-mode storage" in dry.stdout
    assert set(Path(tempfile.gettempdir()).glob("mindex-estimate-*")) == scratch
    assert _checksums(storage) == before_files  # no new collection, no metadata, no file touched

    adaptor.save(tmp_path / "adaptor")
    args = [*base, "--alias", "docs", "--adaptor", str(tmp_path / "adaptor"), "--verify", "full", "--seed", "3"]
    res = runner.invoke(main, [*args, "--json", "-q"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert report["ok"] and report["verification"]["checked"] == 600 and report["alias_switched"]
    after_files = _checksums(storage)
    source_files = [f for f in before_files if f.startswith("collection/docs_v1/")]
    assert source_files and all(after_files[f] == before_files[f] for f in source_files)  # byte-for-byte
    assert digest(_dump_path(storage, "docs_v1")) == digest(before)
    assert_target_matches(before, _dump_path(storage, "docs_matryoshka"))

    # the alias now leads to the migrated collection, which is not migrated twice
    again = runner.invoke(main, [*base, "--adaptor", str(tmp_path / "adaptor")])
    assert again.exit_code == 2 and "'docs_matryoshka' already has the matryoshka layout" in again.stderr
    again = runner.invoke(main, [*base[:4], "docs_v1", *base[5:], "--target", "docs_matryoshka"])
    assert again.exit_code == 2 and "already holds a finished migration of 'docs_v1'" in again.stderr


def test_cli_usage_errors(tmp_path):
    runner = CliRunner()
    res = runner.invoke(main, ["migrate", "--collection", "docs"])
    assert res.exit_code == 2 and "exactly one of --qdrant-url or --qdrant-path" in res.output
    res = runner.invoke(main, ["migrate", "--qdrant-path", str(tmp_path / "none"), "--collection", "docs"])
    assert res.exit_code == 2 and "not a Qdrant local-mode storage directory" in res.stderr
    assert not (tmp_path / "none").exists()


def test_cli_ctrl_c_points_at_resume(monkeypatch, storage):
    import matryoshka_index.migrate as migrate_mod

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(migrate_mod, "migrate_collection", interrupted)
    res = CliRunner().invoke(main, ["migrate", "--qdrant-path", str(storage), "--collection", "docs"])
    assert res.exit_code == 130 and "Rerun with --resume" in res.stderr


def _journal_mode(client: QdrantClient, collection: str) -> str:
    return client._client.collections[collection].storage.storage.execute("PRAGMA journal_mode").fetchone()[0]


def test_path_mode_writes_through_a_write_ahead_log_and_resumes_after_a_crash(storage, adaptor):
    """Local path mode commits one SQLite transaction per point; while the migration writes, the target uses a
    write-ahead log (far fewer bytes and syncs, see benchmarks/results/migrate_io.md), and afterwards its journal
    mode is what local mode left; a crash in between leaves a storage that reopens and resumes."""
    client = QdrantClient(path=str(storage))
    seen: list[str] = []

    def crash_after_two(event):
        seen.append(_journal_mode(client, "dst"))
        if event.batch == 2:
            raise Crash("simulated crash")

    kw = dict(
        vector="emb", coarse_dim=COARSE, adaptor=adaptor, target="dst", batch_size=100, recall_queries=5, quiet=True
    )
    try:
        with pytest.raises(Crash):
            migrate_collection(client, "docs", on_batch=crash_after_two, **kw)
        assert seen == ["wal", "wal"]
        assert _journal_mode(client, "dst") == "delete"  # set back on the way out
        src_mode = _journal_mode(client, "docs_v1")
    finally:
        client.close()
    client = QdrantClient(path=str(storage))
    try:
        report = migrate_collection(client, "docs", resume=True, verify="full", **kw)
        assert report.ok and report.resumed_from == 200 and report.copied_total == 600, report.describe()
        assert _journal_mode(client, "dst") == "delete" and _journal_mode(client, "docs_v1") == src_mode
    finally:
        client.close()


def test_a_crash_between_creating_the_target_and_storing_the_adaptor_resumes(adaptor, monkeypatch):
    """Found by benchmarks/faults.py: kill -9 right after the target was created left a target that
    --resume refused ('has no stored adaptor; delete it'), although nothing had been copied yet."""
    from matryoshka_index.migrate.context import Run

    client = QdrantClient(":memory:")
    make_source(client, "src", 300)
    kw = dict(vector="emb", coarse_dim=COARSE, adaptor=adaptor, target="dst", batch_size=100, recall_queries=5)
    real = Run.store_adaptor

    def crash(self, cp, model):
        raise Crash("killed before the adaptor was stored")

    monkeypatch.setattr(Run, "store_adaptor", crash)
    with pytest.raises(Crash):
        migrate_collection(client, "src", quiet=True, **kw)
    assert "dst" in {c.name for c in client.get_collections().collections}  # the target was created
    monkeypatch.setattr(Run, "store_adaptor", real)
    report = migrate_collection(client, "src", resume=True, quiet=True, **kw)
    assert report.ok and client.count("dst").count == 300


def test_the_dry_run_scratch_storage_of_a_killed_run_is_swept(tmp_path, monkeypatch):
    """Found by benchmarks/faults.py: every killed local-mode migration left a mindex-estimate-* folder."""
    import os
    import subprocess
    import sys

    from matryoshka_index import storage
    from matryoshka_index.migrate import plan

    monkeypatch.setenv("MINDEX_TMPDIR", str(tmp_path))
    code = "from matryoshka_index import storage; import os; storage.owned_temp_dir('mindex-estimate-'); os._exit(9)"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    subprocess.run([sys.executable, "-c", code], env=env, check=False)
    assert [p.name.startswith("mindex-estimate-") for p in tmp_path.iterdir()] == [True]
    client = QdrantClient(path=str(tmp_path / "q"))
    make_source(client, "src", 20)
    from matryoshka_index.migrate.source import read_source

    src = read_source(client, "src", "emb", "local")
    records = client.scroll("src", limit=5, with_vectors=True)[0]
    assert plan.local_write_seconds(records, src, COARSE) > 0
    client.close()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("mindex-estimate-")] == []
    storage.sweep_stale(tmp_path)
