"""The Qdrant backend and ``mindex migrate`` against a real Qdrant server (testcontainers).

The server image is the one pinned in ``docker/compose.yaml`` (override with ``MINDEX_QDRANT_IMAGE``).
Every test here is skipped, with the reason, when no Docker engine answers (as on the CI machine).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest
from qdrant_client import QdrantClient
from qdrant_client import models as qm

from matryoshka_index.backends.qdrant.metadata import META_KEY
from matryoshka_index.backends.qdrant.server import QdrantBackend
from matryoshka_index.errors import BackendError

pytestmark = pytest.mark.docker

API_KEY = "mindex-test-key"


def pinned_image() -> str:
    override = os.environ.get("MINDEX_QDRANT_IMAGE")
    if override:
        return override
    compose = Path(__file__).resolve().parents[1] / "docker" / "compose.yaml"
    match = re.search(r"image:\s*(qdrant/qdrant:v[\d.]+)", compose.read_text())
    assert match, f"{compose}: no pinned qdrant/qdrant image found"
    return match.group(1)


def _docker_or_skip() -> None:
    try:
        import docker

        docker.from_env(timeout=5).ping()
    except Exception as exc:
        pytest.skip(
            f"no Docker engine answers ({exc.__class__.__name__}); the real-Qdrant-server tests need one "
            "(everything else is tested in qdrant-client local mode)"
        )


@pytest.fixture(scope="module")
def server():
    _docker_or_skip()
    from testcontainers.community.qdrant import QdrantContainer

    with QdrantContainer(image=pinned_image(), api_key=API_KEY) as container:
        yield f"http://{container.rest_host_address}"


@pytest.fixture
def client(server):
    c = QdrantClient(url=server, api_key=API_KEY, check_compatibility=False, timeout=30)
    yield c
    for col in c.get_collections().collections:
        c.delete_collection(col.name)
    for alias in c.get_aliases().aliases:
        c.update_collection_aliases(
            change_aliases_operations=[
                qm.DeleteAliasOperation(delete_alias=qm.DeleteAlias(alias_name=alias.alias_name))
            ]
        )
    c.close()


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_two_stage_search_on_server_matches_numpy(server, client):
    rng = np.random.default_rng(0)
    n, d, c = 3000, 48, 12
    full = _unit(rng.standard_normal((n, d)))
    coarse = _unit(full[:, :c] + 0.3 * rng.standard_normal((n, c)))
    ids = np.arange(n, dtype=np.int64) * 5
    q = _unit(full[:20] + 0.2 * rng.standard_normal((20, d)))
    cq = _unit(q[:, :c])
    be = QdrantBackend.create(
        coarse_dim=c, full_dim=d, url=server, api_key=API_KEY, collection="exact", index="flat", parallel=3
    )
    be.add(ids, coarse, full, [{"g": int(i % 3)} for i in range(n)])
    cand = np.argsort(-(cq @ coarse.T), axis=1)[:, :50]
    fs = np.take_along_axis(q @ full.T, cand, 1)
    ref = ids[np.take_along_axis(cand, np.argsort(-fs, axis=1)[:, :10], 1)]
    np.testing.assert_array_equal(be.search(cq, q, 10, 50)[1], ref)
    # HNSW + int8 quantization with rescoring on a sharded collection: approximate, close
    hn = QdrantBackend.create(
        coarse_dim=c,
        full_dim=d,
        url=server,
        api_key=API_KEY,
        collection="hnsw",
        coarse_quantization="int8",
        shard_number=2,
        on_disk=True,
    )
    hn.add(ids, coarse, full)
    found = hn.search(cq, q, 10, 50)[1]
    overlap = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, ref, strict=True)])
    assert overlap >= 0.9
    be.attach_index_metadata({"m": 1}, {"adaptor.json": b"{}"})
    assert META_KEY in client.get_collection("exact").config.metadata  # server-side collection metadata
    assert be.read_index_metadata() == ({"m": 1}, {"adaptor.json": b"{}"})


def test_wrong_api_key_is_one_line(server):
    with pytest.raises(BackendError) as err:
        QdrantBackend.create(coarse_dim=2, full_dim=4, url=server, api_key="wrong", max_retries=0)
    assert "pass the right API key" in str(err.value) and "\n" not in str(err.value)


def test_migration_on_server_with_resume_and_alias(server, client):
    import uuid

    from matryoshka_index import MatryoshkaAdaptor, migrate_collection

    rng = np.random.default_rng(1)
    n, d = 3000, 32
    x = _unit(rng.standard_normal((n, d)))
    client.create_collection(
        "docs_v1",
        vectors_config={
            "emb": qm.VectorParams(size=d, distance=qm.Distance.COSINE),
            "img": qm.VectorParams(size=4, distance=qm.Distance.DOT),
        },
    )
    client.create_payload_index("docs_v1", "tag", qm.PayloadSchemaType.KEYWORD)
    ids = [i if i % 2 else str(uuid.uuid5(uuid.NAMESPACE_URL, str(i))) for i in range(n)]
    client.upsert(
        "docs_v1",
        qm.Batch(
            ids=ids,
            vectors={"emb": x.tolist(), "img": rng.standard_normal((n, 4)).tolist()},
            payloads=[{"tag": str(i % 9), "i": i} for i in range(n)],
        ),
        wait=True,
    )
    client.update_collection_aliases(
        change_aliases_operations=[
            qm.CreateAliasOperation(create_alias=qm.CreateAlias(collection_name="docs_v1", alias_name="docs"))
        ]
    )
    adaptor = MatryoshkaAdaptor(matryoshka_dims=[8], epochs=1, batch_size=128, device="cpu", quiet=True).fit(x[:500])

    class Crash(RuntimeError):
        pass

    def crash(event):
        if event.batch == 4:
            raise Crash

    kw = dict(vector="emb", coarse_dim=8, adaptor=adaptor, alias="docs", batch_size=200, parallel=3, quiet=True)
    with pytest.raises(Crash):
        migrate_collection(client, "docs", on_batch=crash, **kw)
    report = migrate_collection(client, "docs", resume=True, verify="full", recall_queries=20, **kw)
    assert report.ok and report.alias_switched and report.resumed_from >= 600
    assert client.count("docs_matryoshka", exact=True).count == n
    assert set(client.get_collection("docs_matryoshka").payload_schema) == {"tag"}
    assert {a.alias_name: a.collection_name for a in client.get_aliases().aliases} == {"docs": "docs_matryoshka"}

    import matryoshka_index.index as index_mod

    idx = index_mod.MatryoshkaIndex.from_qdrant("docs", url=server, api_key=API_KEY, device="cpu")
    assert len(idx) == n
