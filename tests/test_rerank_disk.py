"""The rerank that respects the disk (issue 22): the float16 rerank copy and the calibrated per-query stop.

Properties: a float16 copy is saved, loaded and added to, halves the rerank's bytes a row and keeps recall;
the default index reranks exactly as before (float32, every candidate); the per-query stop, calibrated on some
queries, reaches its target on held-out ones while reranking fewer candidates, survives save/load, and with it
off (or with a margin no candidate passes) the results are bit for bit the plain search's; bad settings are one
line.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import make_corpus

from matryoshka_index import MatryoshkaIndex
from matryoshka_index.backends import faiss_rerank
from matryoshka_index.backends.faiss_rerank import RerankStop, block_edges, fit_score_model, gather_best_lowp
from matryoshka_index.calibration import calibrate_rerank_stop
from matryoshka_index.errors import CalibrationError, FormatError, InputError
from matryoshka_index.metrics import per_query_recall

TARGET = 0.99


@pytest.fixture(scope="module")
def data():
    # rank 48 in 96 dims with a 16-dim coarse prefix: the calibrated candidates are in the hundreds, so a stop
    # has room to save (rank 12 needs a dozen candidates, and nothing is left to stop)
    x = make_corpus(7600, dim=96, rank=48, seed=5)
    return x[:7000], x[7000:7300], x[7300:]  # corpus, calibration queries, held-out queries


@pytest.fixture(scope="module")
def plain(data):
    corpus, _, _ = data
    return MatryoshkaIndex.build(corpus, coarse_dim=16, adaptor="pca", quiet=True)


@pytest.fixture(scope="module")
def half(data):
    corpus, _, _ = data
    return MatryoshkaIndex.build(
        corpus, coarse_dim=16, adaptor="pca", quiet=True, backend_options={"rerank_dtype": "float16"}
    )


def _recall(index, queries, **kw):
    _, found = index.search(queries, k=10, **kw)
    _, truth = index.exact_search(queries, k=10)
    return float(per_query_recall(found, truth).mean())


# ---------------------------------------------------------------------- the default rerank is unchanged
def _unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_default_rerank_is_the_exact_float32_rerank_of_every_candidate(plain, data, tmp_path):
    _, _, queries = data
    be = plain.backend
    assert be.rerank_dtype == "float32" and be.rerank_stop is None
    timings: dict[str, float] = {}
    scores, ids = plain.search(queries, k=10, candidates=200, timings=timings)
    assert timings["reranked"] == 200 * len(queries)  # every candidate read
    # the reference: the coarse stage's 200 ids, scored by float64 inner products with the saved full vectors
    coarse_q = _unit(plain.adaptor.transform(queries, 16))  # cosine, a PCA adaptor: no query head
    _, cand_ids = be.coarse_search(coarse_q, 200)
    plain.save(tmp_path / "p")
    full = np.load(tmp_path / "p" / "full.npy")
    rows = be.rows_of(cand_ids.ravel()).reshape(cand_ids.shape)
    ref = np.einsum("qcd,qd->qc", full[rows].astype(np.float64), _unit(queries).astype(np.float64))
    best = np.argsort(-ref, axis=1, kind="stable")[:, :10]
    ref_ids = np.take_along_axis(cand_ids, best, axis=1)
    np.testing.assert_allclose(scores, np.take_along_axis(ref, best, axis=1), rtol=0, atol=2e-5)
    assert (ids == ref_ids).mean() > 0.99  # near-ties may swap
    assert all(set(a) == set(b) for a, b in zip(ids.tolist(), ref_ids.tolist(), strict=True))


def test_default_section_unchanged_and_stop_off_is_bit_for_bit(plain, data, tmp_path):
    _, calib, queries = data
    plain.save(tmp_path / "a")
    section = json.loads((tmp_path / "a" / "manifest.json").read_text())["backend"]
    assert "rerank_dtype" not in section["params"] and "rerank_stop" not in section["params"]
    assert not (tmp_path / "a" / faiss_rerank.RERANK_FILES["float16"]).exists()
    before = plain.search(queries, k=10)
    be = plain.backend
    slope, intercept, sigma = be.score_model(_unit(plain.adaptor.transform(calib, 16)), _unit(calib), 10, 200)
    be.set_rerank_stop(RerankStop(slope, intercept, sigma, z=1.0))
    try:
        assert not np.array_equal(plain.search(queries, k=10)[1], before[1])  # the stop does change something
        # a margin no candidate can pass: blockwise with stops checked, yet every candidate reranked
        be.set_rerank_stop(RerankStop(slope, intercept, sigma, z=1e6))
        timings: dict[str, float] = {}
        s, i = plain.search(queries, k=10, timings=timings)
        assert timings["reranked"] == plain.candidates * len(queries)
        assert np.array_equal(s, before[0]) and np.array_equal(i, before[1])
    finally:
        be.set_rerank_stop(None)
    s, i = plain.search(queries, k=10)
    assert np.array_equal(s, before[0]) and np.array_equal(i, before[1])  # off again: exactly the plain search


# ---------------------------------------------------------------------- the float16 copy
def test_float16_copy_keeps_recall_and_halves_the_row(plain, half, data, tmp_path):
    _, _, queries = data
    r32 = _recall(plain, queries, candidates=300)
    r16 = _recall(half, queries, candidates=300)
    assert r16 >= r32 - 0.005, (r16, r32)
    s16, i16 = half.search(queries, k=10, candidates=300)
    s32, i32 = plain.search(queries, k=10, candidates=300)
    assert (i16 == i32).mean() > 0.97 and np.abs(s16 - s32).max() < 1e-2  # the same ranking, float16-rounded
    assert not np.array_equal(s16, s32)  # and it is the copy that was read
    half.save(tmp_path / "h")
    copy = np.load(tmp_path / "h" / "rerank_f16.npy", mmap_mode="r")
    full = np.load(tmp_path / "h" / "full.npy", mmap_mode="r")
    assert copy.dtype == np.float16 and copy.shape == full.shape and copy.nbytes * 2 == full.nbytes
    np.testing.assert_array_equal(copy, full.astype(np.float16))
    loaded = MatryoshkaIndex.load(tmp_path / "h")
    assert loaded.info()["backend"]["rerank_dtype"] == "float16"
    assert (
        loaded.info()["memory"]["page_cache_bytes_per_vector"] < plain.info()["memory"]["page_cache_bytes_per_vector"]
    )
    s, i = loaded.search(queries, k=10, candidates=300)
    assert np.array_equal(i, i16) and np.array_equal(s, s16)  # built and loaded rerank alike
    # rows added after the load go to both spill files; saved again, the copy has them
    extra = queries[:20] * 1.01
    loaded.add(extra, ids=np.arange(50_000, 50_020))
    s, i = loaded.search(extra, k=1)
    assert (i[:, 0] == np.arange(50_000, 50_020)).all()
    loaded.save(tmp_path / "h2")
    again = MatryoshkaIndex.load(tmp_path / "h2")
    assert np.load(tmp_path / "h2" / "rerank_f16.npy").shape == (7020, 96)
    assert np.array_equal(again.search(extra, k=1)[1], i)


def test_float16_copy_missing_or_wrong_is_a_format_error(half, tmp_path):
    half.save(tmp_path / "h")
    (tmp_path / "h" / "rerank_f16.npy").unlink()
    with pytest.raises(FormatError, match=r"rerank_f16\.npy: missing"):
        MatryoshkaIndex.load(tmp_path / "h", verify=False)
    np.save(tmp_path / "h" / "rerank_f16.npy", np.zeros((10, 96), dtype=np.float16))
    with pytest.raises(FormatError, match="expected float16"):
        MatryoshkaIndex.load(tmp_path / "h", verify=False)


def test_gather_best_lowp_matches_float32_scores_of_the_converted_rows():
    rng = np.random.default_rng(0)
    base = rng.standard_normal((500, 24)).astype(np.float16)
    spill = rng.standard_normal((100, 24)).astype(np.float16)
    q = rng.standard_normal((7, 24)).astype(np.float32)
    rows = rng.integers(0, 600, (7, 40))
    rows[0, 30:] = -1
    s, r = gather_best_lowp([(0, base), (500, spill)], 24, q, rows, 5)
    allv = np.concatenate([base, spill]).astype(np.float32)
    for i in range(7):
        cand = rows[i][rows[i] >= 0]
        sc = allv[cand] @ q[i]
        order = np.argsort(-sc, kind="stable")[:5]
        np.testing.assert_allclose(s[i], sc[order], rtol=1e-5, atol=1e-5)
        assert list(r[i]) == list(cand[order])
    s, r = gather_best_lowp([(0, base)], 24, q[:1], np.full((1, 3), -1), 5)
    assert (r == -1).all() and np.isneginf(s).all()


# ---------------------------------------------------------------------- the per-query stop
def test_stop_reaches_its_calibrated_recall_on_held_out_rows_with_fewer_candidates(plain, data, tmp_path):
    index = plain  # (the float16 copy with a stop: benchmarks/rerank_disk.py; the reads are the same code)
    _, calib, queries = data
    c = index.candidates
    timings: dict[str, float] = {}
    index.search(queries, k=10, timings=timings)
    plain_mean = timings["reranked"] / len(queries)
    assert plain_mean == c
    try:
        record = index.calibrate_rerank_stop(calib, target_recall=TARGET)
        assert record["used"] and record["recall_lower_bound"] >= TARGET
        base = record["plain"]["candidates"]  # the fewest plain candidates reaching the target on these queries
        assert record["mean_reranked"] < base == record["plain"]["mean_reranked"]
        timings = {}
        held = _recall(index, queries, timings=timings)
        mean = timings["reranked"] / len(queries)
        # held out: the calibrated recall (its lower bound: a 95% bound on fresh queries of the same kind)
        assert held >= TARGET - 0.005, held
        assert mean < base, (mean, base)  # easy queries stopped early
        plain_held = _recall(index, queries, candidates=base)  # no weaker a search than the plain baseline's
        assert held >= plain_held - 0.005, (held, plain_held)
        index.save(tmp_path / "s")
        loaded = MatryoshkaIndex.load(tmp_path / "s")
        assert loaded.backend.rerank_stop == index.backend.rerank_stop
        assert np.array_equal(loaded.search(queries, k=10)[1], index.search(queries, k=10)[1])
    finally:
        index.backend.set_rerank_stop(None)


def test_stop_bad_settings_are_one_line(plain, data):
    _, calib, _ = data
    for kwargs, what in (
        ({"z": -1.0}, "must be >= 0"),
        ({"factor": 0.0}, "factor must be > 0"),
        ({"sigma": float("nan")}, "must be finite"),
        ({"slope": "1"}, "must be a number"),
    ):
        args = {"slope": 1.0, "intercept": 0.0, "sigma": 0.1, "z": 1.0, **kwargs}
        with pytest.raises(InputError, match=what) as exc:
            RerankStop(**args)
        assert "\n" not in str(exc.value)
    with pytest.raises(InputError, match="expected a RerankStop"):
        plain.backend.set_rerank_stop({"z": 1})
    with pytest.raises(InputError, match="target_recall"):
        plain.calibrate_rerank_stop(calib, target_recall=1.5)
    with pytest.raises(InputError, match="too few"):
        plain.calibrate_rerank_stop(calib[:5])
    with pytest.raises(InputError, match="rerank_dtype: expected one of float32, float16"):
        MatryoshkaIndex.build(calib, coarse_dim=16, adaptor="pca", quiet=True, backend_options={"rerank_dtype": "int4"})
    with pytest.raises(FormatError, match="rerank_stop parameters are malformed"):
        RerankStop.from_params({"slope": 1.0}, "manifest.json")
    with pytest.raises(InputError, match="factors must be >= 1"):
        calibrate_rerank_stop(lambda f, z: (1.0, 1.0, 1.0), 0.9, factors=(0.5,))


def test_stop_not_reachable_is_a_calibration_error_and_keeps_it_off(plain, data, monkeypatch):
    _, calib, _ = data
    be = plain.backend
    real = be.search

    def missing_half(*args, **kwargs):  # a search that loses half of every top 10, whatever the setting
        scores, ids = real(*args, **kwargs)
        ids[:, ::2] = -1
        return scores, ids

    monkeypatch.setattr(be, "search", missing_half)
    with pytest.raises(CalibrationError, match="no per-query stop reaches") as exc:
        plain.calibrate_rerank_stop(calib, target_recall=0.9)
    assert "\n" not in str(exc.value) and be.rerank_stop is None
    assert exc.value.record["plain"]["recall"] <= 0.5


def test_calibrate_rerank_stop_picks_the_fewest_candidates_reaching_the_target():
    # a made-up monotone world: recall grows with z, more so with a larger cap; reranked grows with both
    def measure(f, z):
        recall = min(1.0, 0.9 + 0.02 * z * f)
        return recall, recall, 100 * f * (1 + z)

    choice = calibrate_rerank_stop(measure, 0.95, factors=(1.0, 2.0), margins=[i / 4 for i in range(41)])
    # factor 1 needs z 2.5 (reranked 350), factor 2 needs z 1.25 (reranked 450): factor 1 wins
    assert (choice.factor, choice.z) == (1.0, 2.5) and choice.mean_candidates == 350
    none = calibrate_rerank_stop(lambda f, z: (0.5, 0.5, 1.0), 0.95, factors=(1.0,), margins=(0.0, 1.0))
    assert none.factor is None and none.steps


def test_block_edges_and_score_model():
    assert block_edges(10, 190) == [20, 25, 32, 40, 50, 63, 79, 99, 124, 155, 190]
    assert block_edges(10, 12) == [12] and block_edges(10, 1) == [1]
    c = np.linspace(0, 1, 200).reshape(4, 50)
    slope, intercept, sigma = fit_score_model(c, 0.5 * c + 0.1, 10)
    assert abs(slope - 0.5) < 1e-9 and abs(intercept - 0.1) < 1e-9 and sigma < 1e-9
