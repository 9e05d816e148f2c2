"""Shrink for good (issue 23): ``build(..., rerank=None)`` keeps only the adapted prefix, and
``mindex migrate --prefix-only --dim M`` writes a collection holding only the M-dim adapted vector."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import brute_force, make_corpus

from matryoshka_index import MatryoshkaIndex
from matryoshka_index.adaptor.pca import PCARotation
from matryoshka_index.cli import main
from matryoshka_index.errors import FormatError, InputError
from matryoshka_index.manifest import MANIFEST_FILE, check_manifest_fields, manifest_bytes, seal_manifest
from matryoshka_index.metrics import ann_recall


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
