"""Coarse codes on both Qdrant backends: ``code=`` builds, saves, reopens and searches with exact rerank
scores; the collection (or shard) config really holds the quantization; FAISS-only codes are refused in
one line; the raw request body searches the codes with Qdrant's rescoring off.

qdrant-client local mode keeps the quantization config but searches the floats (an emulation); the
qdrant-edge tests check that the engine really searches the codes (quantized coarse scores, code bytes).
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
from qdrant_client import QdrantClient
from qdrant_client import models as qm

from matryoshka_index.backends import get_backend_class
from matryoshka_index.backends.base import COARSE
from matryoshka_index.backends.qdrant.collection import check_server_has, code_of
from matryoshka_index.backends.qdrant.common import CODES, qdrant_code_bytes
from matryoshka_index.backends.qdrant.metadata import vector_params
from matryoshka_index.backends.qdrant.request import query_request
from matryoshka_index.backends.qdrant.server import QdrantBackend
from matryoshka_index.errors import InputError

N, D, C, K, CANDS = 400, 32, 16, 5, 60
SKIP_EDGE = 'qdrant-edge-py is not installed (pip install "matryoshka-index[edge]")'

# what each code must put into the collection config: (class, encoding or bits)
EXPECTED = {
    "float": (type(None), None),
    "sq8": (qm.ScalarQuantization, qm.ScalarType.INT8),
    "binary": (qm.BinaryQuantization, None),
    "binary1.5": (qm.BinaryQuantization, qm.BinaryQuantizationEncoding.ONE_AND_HALF_BITS),
    "binary2": (qm.BinaryQuantization, qm.BinaryQuantizationEncoding.TWO_BITS),
    "turbo4": (qm.TurboQuantization, qm.TurboQuantBitSize.BITS4),
    "turbo2": (qm.TurboQuantization, qm.TurboQuantBitSize.BITS2),
    "turbo1": (qm.TurboQuantization, qm.TurboQuantBitSize.BITS1),
}
# the same in qdrant-edge's edge_config.json: (key, field, value)
EDGE_CONFIG = {
    "sq8": ("scalar", "type", "int8"),
    "binary": ("binary", "encoding", None),
    "binary1.5": ("binary", "encoding", "one_and_half_bits"),
    "binary2": ("binary", "encoding", "two_bits"),
    "turbo4": ("turbo", "bits", "bits4"),
    "turbo2": ("turbo", "bits", "bits2"),
    "turbo1": ("turbo", "bits", "bits1"),
}


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(11)
    full = _unit(rng.standard_normal((N, D)))
    coarse = _unit(full[:, :C] + 0.2 * rng.standard_normal((N, C)))
    ids = np.arange(N, dtype=np.int64) * 3 + 1
    queries = _unit(full[:4] + 0.1 * rng.standard_normal((4, D)))
    return ids, coarse, full, queries, _unit(queries[:, :C])


def _assert_exact_rerank(scores: np.ndarray, got: np.ndarray, data) -> None:
    """Every returned id is stored and its score is the exact full-dim inner product, best first."""
    ids, _, full, queries, _ = data
    row_of = {int(i): r for r, i in enumerate(ids)}
    assert (got != -1).all() and got.shape == (len(queries), K)
    for q, srow, irow in zip(queries, scores, got, strict=True):
        exact = np.array([full[row_of[int(i)]] @ q for i in irow], dtype=np.float32)
        np.testing.assert_allclose(srow, exact, rtol=1e-5, atol=1e-5)
        assert (np.diff(srow) <= 1e-6).all()


def _assert_config(quant, code: str) -> None:
    cls, detail = EXPECTED[code]
    assert isinstance(quant, cls), (code, quant)
    if code == "sq8":
        assert quant.scalar.type == detail
    elif cls is qm.BinaryQuantization:
        assert quant.binary.encoding == detail
    elif cls is qm.TurboQuantization:
        assert quant.turbo.bits == detail
    assert code_of(quant) == code


# ------------------------------------------------------------------------------ qdrant (local mode)
@pytest.mark.parametrize("code", CODES)
def test_local_mode_code_builds_saves_reopens_and_reranks_exactly(code, data, tmp_path):
    ids, coarse, full, queries, cq = data
    be = QdrantBackend.create(coarse_dim=C, full_dim=D, code=code, quiet=True)
    be.add(ids, coarse, full)
    coarse_params = vector_params(be.client.get_collection(be.collection))[COARSE]
    _assert_config(coarse_params.quantization_config, code)
    assert bool(coarse_params.on_disk) == (code != "float")  # the codes are searched: floats may stay on disk
    scores, got = be.search(cq, queries, K, CANDS)
    _assert_exact_rerank(scores, got, data)
    info = be.info()
    # local mode keeps the config but searches the floats: info says so rather than pretending
    assert info["coarse_code"] == code and info["coarse_code_applied"] is (code == "float")
    assert info["coarse_resident_measured_as"].startswith("estimated")
    section = json.loads(json.dumps(be.save(tmp_path)))
    assert section["code"] == code and section["coarse_rescore"] is False
    again = QdrantBackend.open(tmp_path, section)
    assert again.code == code and again.rescore is False
    _assert_config(vector_params(again.client.get_collection(again.collection))[COARSE].quantization_config, code)
    np.testing.assert_array_equal(again.search(cq, queries, K, CANDS)[1], got)
    be.close()
    again.close()


@pytest.mark.parametrize("code", ["sq8", "binary2", "turbo1"])
def test_code_is_read_back_from_the_collection(code):
    client = QdrantClient(":memory:")
    QdrantBackend.create(coarse_dim=C, full_dim=D, code=code, client=client, collection="docs", quiet=True)
    attached = QdrantBackend.from_collection(client, "docs")
    assert attached.code == code and attached.rescore is False
    assert attached.coarse_search_params(CANDS).quantization == qm.QuantizationSearchParams(rescore=False)


def test_coarse_quantization_maps_onto_code_and_disagreement_is_one_line():
    assert QdrantBackend.create(coarse_dim=4, full_dim=8, coarse_quantization="int8").code == "sq8"
    assert QdrantBackend.create(coarse_dim=4, full_dim=8, coarse_quantization="binary", code="binary").code == "binary"
    with pytest.raises(InputError, match="disagree") as err:
        QdrantBackend.create(coarse_dim=4, full_dim=8, coarse_quantization="int8", code="binary2")
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("code", ["sq4", "pq4", "rabitq", "int8", "turbo3"])
def test_codes_qdrant_cannot_store_are_refused_in_one_line(code):
    with pytest.raises(InputError) as err:
        QdrantBackend.create(coarse_dim=4, full_dim=8, code=code)
    text = str(err.value)
    assert "\n" not in text and text.startswith("code: the Qdrant backend stores coarse as float, sq8, binary")
    if code in ("sq4", "pq4", "rabitq"):
        assert "backend='faiss' has it" in text


def test_turboquant_needs_a_server_of_at_least_1_18():
    def server(version: str):
        return SimpleNamespace(info=lambda: SimpleNamespace(version=version))

    with pytest.raises(InputError, match=r"TurboQuant needs a Qdrant server >= 1\.18; http://q:6333 runs 1\.17\.2"):
        check_server_has("turbo2", server("1.17.2"), "http://q:6333", "remote", 0)
    check_server_has("turbo2", server("1.18.0"), "http://q:6333", "remote", 0)  # new enough
    check_server_has("sq8", server("1.10.0"), "http://q:6333", "remote", 0)  # not TurboQuant: no question


# ------------------------------------------------------------------------------ the raw request body
@pytest.mark.parametrize("index", ["flat", "hnsw"])
def test_request_body_searches_the_codes_with_rescoring_off(index, data, tmp_path):
    _, _, _, queries, cq = data
    be = QdrantBackend.create(coarse_dim=C, full_dim=D, index=index, code="binary2", quiet=True)
    manifest = {"coarse_dim": C, "full_dim": D, "candidates": CANDS, "backend": be.save(tmp_path)}
    body = query_request(manifest, cq[0], queries[0], k=K)
    params = body["prefetch"]["params"]
    assert params["quantization"] == {"rescore": False}
    assert "exact" not in params  # exact search reads the floats and ignores the codes
    assert params == be.coarse_search_params(CANDS).model_dump(
        exclude_none=True, exclude_defaults=True
    )  # what the backend sends
    float_be = QdrantBackend.create(coarse_dim=C, full_dim=D, index=index, quiet=True)
    plain = query_request({**manifest, "backend": float_be.save(tmp_path / "f")}, k=K)["prefetch"]["params"]
    assert "quantization" not in plain and plain == float_be.coarse_search_params(CANDS).model_dump(
        exclude_none=True, exclude_defaults=True
    )
    # a manifest written before codes (coarse_quantization only) keeps its rescoring, as its index does
    legacy = {**manifest, "backend": {"kind": "qdrant", "index": index, "coarse_quantization": "int8"}}
    assert query_request(legacy, k=K)["prefetch"]["params"]["quantization"] == {"rescore": True}


# ------------------------------------------------------------------------------ qdrant-edge
@pytest.fixture(scope="module")
def Edge():
    pytest.importorskip("qdrant_edge", reason=SKIP_EDGE)
    return get_backend_class("qdrant-edge")


@pytest.mark.parametrize("index", ["flat", "hnsw"])
@pytest.mark.parametrize("code", CODES)
def test_edge_code_is_really_searched_saved_and_reopened(Edge, code, index, data, tmp_path):
    ids, coarse, full, queries, cq = data
    be = Edge.create(coarse_dim=C, full_dim=D, index=index, code=code, quiet=True)
    be.add(ids, coarse, full)
    config = json.loads((be.path / "edge_config.json").read_text())["vectors"][COARSE]
    if code == "float":
        assert config.get("quantization_config") is None
    else:
        key, field, value = EDGE_CONFIG[code]
        assert config["quantization_config"][key].get(field) == value and config["memory"] == "cold"
    scores, got = be.search(cq, queries, K, CANDS)
    _assert_exact_rerank(scores, got, data)
    # the coarse stage alone scores with the codes (no rescoring): not the float inner products
    cscores, cids = be.coarse_search(cq, K)
    row_of = {int(i): r for r, i in enumerate(ids)}
    floats = np.array([[coarse[row_of[int(i)]] @ q for i in r] for q, r in zip(cq, cids, strict=True)])
    assert np.allclose(cscores, floats, atol=1e-5) is (code == "float")
    info = be.info()
    assert info["coarse_code"] == code and info["coarse_code_applied"] is True
    assert info["coarse_resident_measured_as"].startswith("measured")
    if code != "float":  # the engine's code files hold exactly the documented bytes a vector
        assert info["coarse_code_bytes_per_vector"] == qdrant_code_bytes(code, C)
        assert info["coarse_float_bytes_per_vector_resident"] == 0
    saved = tmp_path / "saved"
    saved.mkdir()
    section = json.loads(json.dumps(be.save(saved)))
    assert section["code"] == code and section["rescore"] is False
    be.close()
    again = Edge.open(saved, section)
    assert again.code == code and again.rescore is False
    np.testing.assert_array_equal(again.search(cq, queries, K, CANDS)[1], got)
    again.close()


@pytest.mark.parametrize("code", ["sq4", "pq4", "rabitq"])
def test_edge_refuses_faiss_only_codes_in_one_line(Edge, code):
    with pytest.raises(InputError) as err:
        Edge.create(coarse_dim=4, full_dim=8, code=code)
    text = str(err.value)
    assert "\n" not in text and text.startswith("code: the qdrant-edge backend stores coarse as float, sq8")


def test_edge_coarse_quantization_still_works_and_maps_onto_code(Edge):
    be = Edge.create(coarse_dim=4, full_dim=8, coarse_quantization="binary")
    assert be.code == "binary" and be.coarse_quantization == "binary"
    be.close()


def test_index_built_with_a_code_keeps_it_through_save_and_load(Edge, data, tmp_path):
    import matryoshka_index.index as index_mod

    _, _, full, queries, _ = data
    idx = index_mod.MatryoshkaIndex.build(
        full,
        coarse_dim=C,
        adaptor="pca",
        backend="qdrant-edge",
        backend_options={"code": "turbo4"},
        candidates=CANDS,
        calibration_queries=20,
        quiet=True,
    )
    idx.save(tmp_path / "ix")
    loaded = index_mod.MatryoshkaIndex.load(tmp_path / "ix")
    assert loaded.backend.code == "turbo4"
    scores, got = loaded.search(queries, k=K)
    assert (got != -1).all()
    np.testing.assert_allclose(scores, np.einsum("qkd,qd->qk", full[got], queries), atol=1e-5)


def test_edge_info_right_after_add_reports_the_codes_a_search_will_use(Edge, data):
    ids, coarse, full, _, _ = data
    be = Edge.create(coarse_dim=C, full_dim=D, code="sq8", quiet=True)
    be.add(ids[:200], coarse[:200], full[:200])
    be.search(coarse[:1], full[:1], K, CANDS)  # optimized: the codes cover these 200
    be.add(ids[200:], coarse[200:], full[200:])  # pending: the next search optimizes first
    info = be.info()
    assert info["optimize_pending"] and 0.4 < info["coarse_code_coverage"] < 0.6  # codes of 200 of 400 exist
    assert info["coarse_code_applied"] is True and info["coarse_code_bytes_per_vector"] == qdrant_code_bytes("sq8", C)
    be.search(coarse[:1], full[:1], K, CANDS)
    info = be.info()
    assert info["coarse_code_coverage"] == 1.0 and info["coarse_code_bytes_per_vector"] == qdrant_code_bytes("sq8", C)
    be.close()


def test_ram_budget_on_a_qdrant_backend_is_one_line():
    from matryoshka_index import MatryoshkaIndex
    from matryoshka_index.errors import InputError

    x = np.random.default_rng(0).standard_normal((200, 16)).astype(np.float32)
    with pytest.raises(InputError, match="ram_budget: the qdrant backend does not measure its memory"):
        MatryoshkaIndex.build(x, backend="qdrant", backend_options={"location": ":memory:"}, ram_budget=16, quiet=True)
