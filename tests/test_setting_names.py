"""One name per setting across backends (issue 20): ``ef_construction`` / ``ef_search`` (the FAISS
backend's and ``mindex build``'s names) on both Qdrant backends and in the raw request, ``code`` for the
coarse code. The former names (``hnsw_ef_construct``, ``hnsw_ef``, ``coarse_quantization``) still work
until 0.2, each with a DeprecationWarning; given with a different value beside the new name, one line;
saved manifest sections keep their keys (the file format), so what was saved before still opens.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from qdrant_client import QdrantClient

from matryoshka_index.backends.qdrant.metadata import vector_params
from matryoshka_index.backends.qdrant.request import query_request
from matryoshka_index.backends.qdrant.server import QdrantBackend
from matryoshka_index.errors import InputError

SKIP_EDGE = 'qdrant-edge-py is not installed (pip install "matryoshka-index[edge]")'


def _no_deprecation(fn):
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        return fn()


def _coarse_ef_construct(be: QdrantBackend) -> int | None:
    info = be.client.get_collection(be.collection)
    return vector_params(info)["coarse"].hnsw_config.ef_construct


def test_qdrant_takes_the_faiss_names_without_a_warning():
    be = _no_deprecation(lambda: QdrantBackend.create(coarse_dim=4, full_dim=8, ef_construction=40, ef_search=64))
    assert be.ef_search == 64 and _coarse_ef_construct(be) == 40
    assert be.coarse_search_params(10).hnsw_ef == 64 and be.coarse_search_params(100).hnsw_ef == 100
    client = QdrantClient(":memory:")
    QdrantBackend.create(coarse_dim=4, full_dim=8, client=client, collection="c")
    attached = _no_deprecation(lambda: QdrantBackend.from_collection(client, "c", ef_search=48))
    assert attached.ef_search == 48


def test_qdrant_former_names_warn_and_mean_the_same():
    with pytest.warns(DeprecationWarning, match=r"hnsw_ef_construct= is deprecated.*give ef_construction="):
        old = QdrantBackend.create(coarse_dim=4, full_dim=8, hnsw_ef_construct=40)
    assert _coarse_ef_construct(old) == 40
    with pytest.warns(DeprecationWarning, match=r"hnsw_ef= is deprecated.*give ef_search="):
        old = QdrantBackend.create(coarse_dim=4, full_dim=8, hnsw_ef=64)
    assert old.ef_search == 64
    client = QdrantClient(":memory:")
    QdrantBackend.create(coarse_dim=4, full_dim=8, client=client, collection="c")
    with pytest.warns(DeprecationWarning, match="hnsw_ef= is deprecated"):
        assert QdrantBackend.from_collection(client, "c", hnsw_ef=48).ef_search == 48
    # the same value both ways is accepted (still warned); different values are one line
    with pytest.warns(DeprecationWarning):
        assert QdrantBackend.create(coarse_dim=4, full_dim=8, hnsw_ef=64, ef_search=64).ef_search == 64
    with (
        pytest.raises(InputError, match=r"^hnsw_ef=64 and ef_search=32 disagree") as err,
        pytest.warns(DeprecationWarning),
    ):
        QdrantBackend.create(coarse_dim=4, full_dim=8, hnsw_ef=64, ef_search=32)
    assert "\n" not in str(err.value)


def test_coarse_quantization_warns_and_code_does_not():
    with pytest.warns(DeprecationWarning, match=r"coarse_quantization= is deprecated.*code='sq8'"):
        assert QdrantBackend.create(coarse_dim=4, full_dim=8, coarse_quantization="int8").code == "sq8"
    assert _no_deprecation(lambda: QdrantBackend.create(coarse_dim=4, full_dim=8, code="sq8")).code == "sq8"


def test_a_snapshot_saved_with_coarse_quantization_only_opens_without_a_warning(tmp_path):
    """A snapshot written before codes names ``coarse_quantization``: opening it is not the user's deprecated call."""
    be = QdrantBackend.create(coarse_dim=4, full_dim=8, code="sq8")
    x = np.random.default_rng(0).standard_normal((20, 8)).astype(np.float32)
    be.add(np.arange(20), x[:, :4].copy(), x)
    section = be.save(tmp_path)
    meta_path = tmp_path / section["snapshot"] / "collection.json"
    meta = json.loads(meta_path.read_text())
    meta.pop("code", None)
    meta["coarse_quantization"] = "int8"
    meta_path.write_text(json.dumps(meta))
    section = {k: v for k, v in section.items() if k != "code"}
    opened = _no_deprecation(lambda: QdrantBackend.open(tmp_path, section))
    assert opened.code == "sq8" and len(opened) == 20


def test_the_raw_request_takes_ef_search_and_its_former_name():
    manifest = {"coarse_dim": 2, "full_dim": 3, "candidates": 10, "backend": {"kind": "qdrant", "collection": "c"}}
    new = _no_deprecation(lambda: query_request(manifest, ef_search=50))
    with pytest.warns(DeprecationWarning, match="hnsw_ef= is deprecated"):
        old = query_request(manifest, hnsw_ef=50)
    assert new == old and new["prefetch"]["params"] == {"hnsw_ef": 50}  # Qdrant's own field name on the wire


def test_edge_takes_the_faiss_names_and_keeps_its_saved_keys(tmp_path):
    pytest.importorskip("qdrant_edge", reason=SKIP_EDGE)
    from matryoshka_index.backends.qdrant.edge import QdrantEdgeBackend

    be = _no_deprecation(lambda: QdrantEdgeBackend.create(coarse_dim=4, full_dim=8, ef_construction=40, ef_search=64))
    assert be.ef_search == 64
    x = np.random.default_rng(0).standard_normal((20, 8)).astype(np.float32)
    be.add(np.arange(20), x[:, :4].copy(), x)
    section = be.save(tmp_path)
    be.close()
    # the manifest section is the file format: its keys are the ones every saved index has
    assert section["hnsw_ef_construct"] == 40 and section["hnsw_ef"] == 64
    with _no_deprecation(lambda: QdrantEdgeBackend.open(tmp_path, section)) as reopened:
        assert reopened.ef_search == 64 and len(reopened) == 20
    with _no_deprecation(lambda: QdrantEdgeBackend.open(tmp_path, section, ef_search=80)) as reopened:
        assert reopened.ef_search == 80
    with pytest.warns(DeprecationWarning, match="hnsw_ef= is deprecated"):
        reopened = QdrantEdgeBackend.open(tmp_path, section, hnsw_ef=72)
    with reopened:
        assert reopened.ef_search == 72
    with pytest.warns(DeprecationWarning, match="hnsw_ef_construct= is deprecated"):
        old = QdrantEdgeBackend.create(coarse_dim=4, full_dim=8, hnsw_ef_construct=40)
    old.close()


def test_mindex_build_passes_ef_search_to_a_qdrant_edge_index(tmp_path):
    pytest.importorskip("qdrant_edge", reason=SKIP_EDGE)
    from click.testing import CliRunner

    from matryoshka_index.cli import main

    corpus = tmp_path / "c.npy"
    np.save(corpus, np.random.default_rng(0).standard_normal((120, 16)).astype(np.float32))
    out = tmp_path / "q.mindex"
    args = ["build", str(corpus), "--coarse-dim", "8", "--pca", "-q", "--backend", "qdrant-edge", "--ef-search", "64"]
    result = CliRunner().invoke(main, [*args, "-o", str(out)])
    assert result.exit_code == 0, result.output
    section = json.loads((out / "manifest.json").read_text())["backend"]
    assert section["kind"] == "qdrant-edge" and section["hnsw_ef"] == 64


def test_a_migrations_own_coarse_quantization_option_does_not_warn():
    """``migrate_collection(coarse_quantization=...)`` is the migration's option, not an alias of ``code``."""
    from matryoshka_index.backends.qdrant.collection import quantization_config

    config = _no_deprecation(lambda: quantization_config("int8", True))
    assert config is not None and config.scalar is not None
    assert _no_deprecation(lambda: quantization_config(None, True)) is None
