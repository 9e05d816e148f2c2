"""Indexes written by the code before the index became a package (tests/fixtures/index_v1) still load,
search identically and are saved back byte for byte; a rebuild on the same data calibrates the same."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from matryoshka_index import MatryoshkaAdaptor, MatryoshkaIndex
from matryoshka_index.manifest import CHECKSUM_KEY, MANIFEST_FILE, manifest_bytes, manifest_checksum, read_manifest

FIXTURES = Path(__file__).parent / "fixtures" / "index_v1"
KINDS = ("pca", "adaptor")


def _fixture_module(name: str):
    """A script of the fixture directory, imported (it imports its sibling make_fixture)."""
    import importlib
    import sys

    sys.path.insert(0, str(FIXTURES))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(FIXTURES))


def _fixture_corpus() -> np.ndarray:
    """The corpus make_fixture.py indexed (same generator, same seed)."""
    return _fixture_module("make_fixture").corpus(320)


# Scores are float32 inner products of unit vectors: a newer numpy/BLAS may sum in another order and
# change the last bit (1.2e-7, issue 19 item 1), so scores are compared to this tolerance and ids
# exactly. It is far below what a real change moves: full vectors kept in float16 move the scores by
# ~1e-4 (test_the_score_tolerance_catches_a_real_change).
SCORE_RTOL = SCORE_ATOL = 1e-5


def _assert_same_results(d: np.ndarray, i: np.ndarray, expected_d: np.ndarray, expected_i: np.ndarray) -> None:
    np.testing.assert_array_equal(i, expected_i)
    np.testing.assert_allclose(d, expected_d, rtol=SCORE_RTOL, atol=SCORE_ATOL)


@pytest.mark.parametrize("kind", KINDS)
def test_old_index_loads_and_searches_identically(kind: str) -> None:
    queries = np.load(FIXTURES / "queries.npy")
    expected = np.load(FIXTURES / f"{kind}_expected.npz")
    with MatryoshkaIndex.load(FIXTURES / kind) as index:
        d, i = index.search(queries, k=5)
        d50, i50 = index.search(queries, k=5, candidates=50)
        meta = json.loads((FIXTURES / "expected.json").read_text())[kind]
        assert index.candidates == meta["candidates"]
        assert index.calibration == meta["calibration"]
    _assert_same_results(d, i, expected["D"], expected["I"])
    _assert_same_results(d50, i50, expected["D50"], expected["I50"])


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_the_score_tolerance_catches_a_real_change() -> None:
    """The fixture's scores are exact cosines (rerank="original"): recomputed in float64 they pass the
    tolerance (which admits rounding), but the same ids scored against full vectors kept in float16,
    or one id swapped, fail it."""
    data = _fixture_corpus()[:300]
    queries = np.load(FIXTURES / "queries.npy")
    expected = np.load(FIXTURES / "pca_expected.npz")
    ids = expected["I50"]

    def scores(full: np.ndarray) -> np.ndarray:
        q, x = _unit(queries.astype(np.float64)), _unit(full.astype(np.float64))
        return np.einsum("qd,qkd->qk", q, x[ids])

    one_ulp = np.nextafter(expected["D50"], np.float32(np.inf))  # the fresh machine's difference (issue 19)
    assert not np.array_equal(one_ulp, expected["D50"])  # what the exact comparison used to refuse
    _assert_same_results(one_ulp, ids, expected["D50"], ids)
    rounded = scores(data)
    assert not np.array_equal(rounded.astype(np.float32), expected["D50"])  # rounding differs: the tolerance matters
    _assert_same_results(rounded, ids, expected["D50"], ids)
    with pytest.raises(AssertionError):
        _assert_same_results(scores(data.astype(np.float16)), ids, expected["D50"], ids)
    swapped = ids.copy()
    swapped[0, [0, 1]] = swapped[0, [1, 0]]
    with pytest.raises(AssertionError):
        _assert_same_results(expected["D50"], swapped, expected["D50"], ids)


@pytest.mark.parametrize("kind", KINDS)
def test_old_index_saves_back_byte_for_byte(kind: str, tmp_path: Path) -> None:
    original = (FIXTURES / kind / MANIFEST_FILE).read_bytes()
    assert manifest_bytes(read_manifest(FIXTURES / kind)) == original  # the writer's layout is the old one
    index = MatryoshkaIndex.load(FIXTURES / kind)
    index.save(tmp_path / "again")
    manifest = json.loads((tmp_path / "again" / MANIFEST_FILE).read_text())
    old = json.loads(original)
    # same keys, same values (created is kept, library_version unchanged), plus the manifest's own
    # checksum (issue 15): re-saving seals an old manifest; the old bytes are the new ones without it
    assert manifest.pop(CHECKSUM_KEY) == manifest_checksum(old)
    assert manifest == old
    assert manifest_bytes(manifest) == original
    for rel in old["files"]:
        assert (tmp_path / "again" / rel).read_bytes() == (FIXTURES / kind / rel).read_bytes(), rel


def test_old_index_survives_copy_and_mutation(tmp_path: Path) -> None:
    shutil.copytree(FIXTURES / "pca", tmp_path / "pca")
    index = MatryoshkaIndex.load(tmp_path / "pca")
    queries = np.load(FIXTURES / "queries.npy")
    index.remove([int(np.load(FIXTURES / "pca_expected.npz")["I"][0, 0])])
    _, i = index.search(queries[:1], k=5)
    assert np.load(FIXTURES / "pca_expected.npz")["I"][0, 0] not in i


@pytest.mark.parametrize("kind", KINDS)
def test_rebuild_calibrates_like_the_old_code(kind: str) -> None:
    """Same data, same seed: the calibration (the ladder, the bisection, every step) is unchanged."""
    data = _fixture_corpus()[:300]
    adaptor = (
        "pca"
        if kind == "pca"
        else MatryoshkaAdaptor(matryoshka_dims=[8, 16, 32], hidden_dim=16, epochs=2, batch_size=64, quiet=True)
    )
    index = MatryoshkaIndex.build(data, coarse_dim=8, adaptor=adaptor, calibration_queries=30, quiet=True)
    old = json.loads((FIXTURES / "expected.json").read_text())[kind]
    new = index.calibration
    old_cal = {k: v for k, v in old["calibration"].items() if k != "seconds"}
    assert {k: v for k, v in new.items() if k != "seconds"} == old_cal
    assert index.candidates == old["candidates"]


@pytest.mark.parametrize("name", ["ivf", "hnsw", "adapted", "ip-fixed", "ivf-fixed"])
def test_rebuilds_with_knobs_and_fixed_candidates_calibrate_like_the_old_code(name: str) -> None:
    """IVF (nprobe chosen with candidates), HNSW, adapted rerank, fixed candidates: records unchanged."""
    module = _fixture_module("make_calibration_fixture")
    old = json.loads((FIXTURES / "calibration_expected.json").read_text())[name]
    data = module.corpus(2000)
    index = MatryoshkaIndex.build(data, coarse_dim=8, calibration_queries=100, quiet=True, **module.SETTINGS[name])
    assert index.candidates == old["candidates"]
    new = {k: v for k, v in index.calibration.items() if k != "seconds"}
    assert new == {k: v for k, v in old["calibration"].items() if k != "seconds"}
