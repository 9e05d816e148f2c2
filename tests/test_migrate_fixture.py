"""Migrations stopped half-way by the code before ``migrate/`` became a package resume with today's code.

The fixtures (``tests/fixtures/migration_v1/``, made by its ``make_fixture.py``) are qdrant-client
local-mode storages holding a source and a copy-mode (or in-place) migration stopped after 2 of 6
batches, and what the old code reported when it resumed them. A copy of each is resumed here; the
result must equal an uninterrupted run of today's code, and the report and the migration record
must have the keys and values the old code wrote (timings, timestamps and the random recall sample
aside).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from qdrant_client import QdrantClient
from qdrant_client import models as qm

from matryoshka_index import MatryoshkaAdaptor, migrate_collection
from matryoshka_index.backends.qdrant.metadata import MIGRATION_KEY, MetadataStore
from matryoshka_index.migrate import Checkpoint, State, rollback_in_place

FIXTURES = Path(__file__).parent / "fixtures" / "migration_v1"
COMMON = dict(vector="emb", coarse_dim=8, batch_size=20, recall_queries=20, seed=0, quiet=True)
# values that differ from run to run: wall time, read-speed estimate, where the storage lives,
# the random points recall is measured on, and timestamps
VOLATILE = {"seconds", "estimated_copy_seconds", "endpoint", "recall_at_10", "started", "updated", "finished"}


def _dump(client: QdrantClient, name: str) -> list[tuple]:
    out, offset = [], None
    while True:
        records, offset = client.scroll(name, limit=256, offset=offset, with_payload=True, with_vectors=True)
        for r in records:
            vecs = r.vector if isinstance(r.vector, dict) else {"": r.vector}
            out.append(
                (r.id, r.payload, {k: v.model_dump() if isinstance(v, qm.SparseVector) else v for k, v in vecs.items()})
            )
        if offset is None:
            return out


def _same(old: object, new: object, path: str = "") -> None:
    """Same keys everywhere; same values but where they are volatile by nature."""
    if isinstance(old, dict):
        assert isinstance(new, dict) and sorted(old) == sorted(new), f"{path}: keys {sorted(old)} != {sorted(new)}"
        for key in old:
            if key not in VOLATILE:
                _same(old[key], new[key], f"{path}.{key}")
        return
    if isinstance(old, float) and isinstance(new, float):  # measured differences move by an ulp across numpy builds
        assert abs(old - new) <= 1e-6 + 1e-5 * abs(old), f"{path}: {old!r} (old code) != {new!r}"
        return
    assert old == new, f"{path}: {old!r} (old code) != {new!r}"


@pytest.fixture
def storage(tmp_path):
    def copy(mode: str, name: str) -> Path:
        dest = tmp_path / name
        shutil.copytree(FIXTURES / mode / "qdrant", dest)
        return dest

    return copy


@pytest.mark.parametrize("mode", ["copy", "in_place"])
def test_resume_of_an_old_checkpoint_equals_an_uninterrupted_run(storage, mode):
    expected = json.loads((FIXTURES / mode / "expected.json").read_text())
    kw = {"in_place": True} if mode == "in_place" else {"target": "dst"}
    client = QdrantClient(path=str(storage(mode, "resumed")))
    try:
        stopped = MetadataStore(client, "src" if mode == "in_place" else "dst", "fixture").read(MIGRATION_KEY)
        assert stopped["state"] == ("updating" if mode == "in_place" else "copying") and stopped["batches"] == 2
        report = migrate_collection(client, "src", resume=True, verify="full", **COMMON, **kw)
        assert report.ok and report.state == "complete" and report.resumed_from == 40, report.describe()
        record = MetadataStore(client, "src" if mode == "in_place" else "dst", "fixture").read(MIGRATION_KEY)
        _same(expected["report"], report.to_dict(), "report")
        _same(expected["record"], record, "record")
        resumed = _dump(client, "src" if mode == "in_place" else "dst")
    finally:
        client.close()

    # the same migration, never interrupted, on a second copy of the fixture: in place, the stopped
    # migration is rolled back first (which restores the source exactly); in copy mode, a new target
    adaptor = MatryoshkaAdaptor.load(FIXTURES / "adaptor")
    client = QdrantClient(path=str(storage(mode, "fresh")))
    try:
        if mode == "in_place":
            rollback_in_place(client, "src")
            fresh = migrate_collection(client, "src", adaptor=adaptor, verify="full", **COMMON, **kw)
            again = _dump(client, "src")
        else:
            fresh = migrate_collection(client, "src", adaptor=adaptor, verify="full", **COMMON, target="dst2")
            again = _dump(client, "dst2")
    finally:
        client.close()
    assert fresh.ok and fresh.copied_total == report.copied_total == 120
    assert [(i, p) for i, p, _ in resumed] == [(i, p) for i, p, _ in again]
    for (pid, _, a), (_, _, b) in zip(resumed, again, strict=True):
        assert sorted(a) == sorted(b), pid
        for name in a:
            if isinstance(a[name], dict):  # sparse: identical
                assert a[name] == b[name], (pid, name)
            else:  # local mode re-normalises Cosine vectors on every write: last bits may differ
                np.testing.assert_allclose(a[name], b[name], atol=1e-6, rtol=0, err_msg=f"{pid} {name}")


@pytest.mark.parametrize("mode", ["copy", "in_place"])
def test_checkpoint_record_round_trips_exactly(storage, mode):
    """The typed checkpoint reads every record the old code wrote and writes back the same JSON text."""
    client = QdrantClient(path=str(storage(mode, "read")))
    try:
        stopped = MetadataStore(client, "src" if mode == "in_place" else "dst", "fixture").read(MIGRATION_KEY)
    finally:
        client.close()
    finished = json.loads((FIXTURES / mode / "expected.json").read_text())["record"]
    for record in (stopped, finished):
        cp = Checkpoint.from_dict(record)
        assert json.dumps(cp.to_dict(), sort_keys=True) == json.dumps(record, sort_keys=True)
    assert (
        Checkpoint.from_dict(stopped).state == State.WRITING and Checkpoint.from_dict(finished).state == State.COMPLETE
    )
    assert Checkpoint.from_dict(stopped).done == 40 and Checkpoint.from_dict(stopped).in_place == (mode == "in_place")
