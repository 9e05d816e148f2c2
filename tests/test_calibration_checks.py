"""Calibration questions what it is given (issue 15, item 10): too few queries for the confidence bound
are refused (the API's ``calibrate``) or replaced by the largest candidate count (the build), and a
target that is not reached is loud: ``calibrate`` raises and keeps the old default, ``mindex calibrate``
exits non-zero with one line, the build warns and records it."""

from __future__ import annotations

import json
import shutil
import warnings

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import make_corpus

from matryoshka_index import MatryoshkaIndex
from matryoshka_index.calibration import CONFIDENCE_Z, min_queries, recall_with_lower_bound
from matryoshka_index.errors import CalibrationError, CalibrationWarning, InputError


def build(x, **kw):
    kw.setdefault("quiet", True)
    return MatryoshkaIndex.build(x, **kw)


@pytest.fixture(scope="module")
def corpus() -> np.ndarray:
    return make_corpus(400, seed=4)


@pytest.fixture(scope="module")
def queries() -> np.ndarray:
    return make_corpus(460, seed=4)[400:]  # 60 rows the corpus does not hold


# ---------------------------------------------------------------------- the minimum, derived
def _one_miss(n: int, k: int = 10) -> float:
    """The lower bound of n queries of recall@k where exactly one neighbour of one query is missed."""
    truth = np.tile(np.arange(k), (n, 1))
    found = truth.copy()
    found[0, 0] = 10**6
    return recall_with_lower_bound(found, truth, z=CONFIDENCE_Z)[1]


def test_the_minimum_is_where_one_missed_neighbour_still_lets_the_bound_reach_the_target():
    assert min_queries(0.99) == 27  # (1 + 1.645) / (10 * (1 - 0.99)) = 26.45
    assert _one_miss(27) >= 0.99 > _one_miss(26)
    for target in (0.9, 0.95, 0.98, 0.995, 0.999):
        n = min_queries(target)
        assert _one_miss(n) >= target > _one_miss(n - 1), target
    assert min_queries(0.999) == 265 and min_queries(0.95) == 6
    assert min_queries(0.99, k=5) == 53  # fewer neighbours a query: each miss weighs more
    assert min_queries(1.0) is None  # no sample shows recall 1.0 by a lower bound


# ---------------------------------------------------------------------- calibrate (the API)
def test_calibrate_refuses_too_few_queries_and_keeps_the_default(corpus, queries):
    index = build(corpus, coarse_dim=4)
    before, record = index.candidates, index.calibration
    with pytest.raises(InputError) as err:
        index.calibrate(queries[:3])
    message = str(err.value)
    assert "3" in message and "27" in message and "target_recall 0.99" in message and "\n" not in message
    assert index.candidates == before and index.calibration == record
    index.calibrate(queries[:27])  # the minimum is enough to try


def test_calibrate_refuses_a_target_of_one(corpus, queries):
    index = build(corpus, coarse_dim=4)
    with pytest.raises(InputError) as err:
        index.calibrate(queries, target_recall=1.0)
    assert "1.0" in str(err.value) and "0.999" in str(err.value) and "\n" not in str(err.value)


def test_calibrate_that_misses_the_target_raises_and_keeps_the_old_default(corpus, queries):
    index = build(corpus, coarse_dim=2)
    before, record = index.candidates, index.calibration
    with pytest.raises(CalibrationError) as err:
        index.calibrate(queries, target_recall=0.99, max_candidates=10)
    message = str(err.value)
    assert "not reached" in message and "recall@10" in message and "max_candidates" in message
    assert f"keeps its {before} candidates" in message and "\n" not in message
    assert err.value.record["reached"] is False and err.value.record["candidates"] == 10
    assert index.candidates == before and index.calibration == record


def test_a_failed_calibration_leaves_the_ivf_knob_as_it_was():
    x = make_corpus(3000, seed=5)
    index = build(x, coarse_dim=2, index="ivf")
    knob = index.backend.get_search_knob()
    _, before = index.search(x[:20], k=10)
    with pytest.raises(CalibrationError):
        index.calibrate(make_corpus(3100, seed=5)[3000:], target_recall=0.99, max_candidates=12)
    assert index.backend.get_search_knob() == knob
    np.testing.assert_array_equal(index.search(x[:20], k=10)[1], before)


# ---------------------------------------------------------------------- mindex calibrate
@pytest.fixture
def saved(tmp_path, corpus, queries):
    path = tmp_path / "ix.mindex"
    build(corpus, coarse_dim=2).save(path)
    np.save(tmp_path / "q3.npy", queries[:3])
    np.save(tmp_path / "q.npy", queries)
    return path


def _run(*args):
    from matryoshka_index.cli import main

    return CliRunner().invoke(main, list(args))


def test_mindex_calibrate_with_too_few_queries_exits_2_with_one_line(saved):
    before = (saved / "manifest.json").read_bytes()
    result = _run("calibrate", str(saved), str(saved.parent / "q3.npy"), "-q")
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert result.stderr.count("\n") == 1 and "27" in result.stderr
    assert (saved / "manifest.json").read_bytes() == before


def test_mindex_calibrate_to_recall_one_exits_2_and_leaves_the_index(saved):
    before = (saved / "manifest.json").read_bytes()
    result = _run("calibrate", str(saved), str(saved.parent / "q.npy"), "--target-recall", "1.0", "-q")
    assert result.exit_code == 2 and result.stderr.count("\n") == 1 and "0.999" in result.stderr
    assert (saved / "manifest.json").read_bytes() == before


def test_mindex_calibrate_that_misses_the_target_exits_non_zero_with_one_line(saved, monkeypatch):
    monkeypatch.setitem(MatryoshkaIndex.calibrate.__kwdefaults__, "max_candidates", 10)
    before = (saved / "manifest.json").read_bytes()
    result = _run("calibrate", str(saved), str(saved.parent / "q.npy"), "-q")
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert result.stderr.count("\n") == 1 and "not reached" in result.stderr and "recall@10" in result.stderr
    assert (saved / "manifest.json").read_bytes() == before  # the old default stays


# ---------------------------------------------------------------------- the build
def test_a_build_that_misses_the_target_warns_and_records_it(corpus, monkeypatch):
    import matryoshka_index.index.build as build_mod

    monkeypatch.setattr(build_mod, "MAX_CANDIDATES", 10)
    with pytest.warns(CalibrationWarning, match="not reached"):
        index = build(corpus, coarse_dim=2)
    cal = index.calibration
    assert cal["reached"] is False and index.candidates == 10
    assert "not reached" in cal["warning"] and "recall@10" in cal["warning"]


def test_a_build_that_reaches_the_target_is_quiet(corpus):
    with warnings.catch_warnings():
        warnings.simplefilter("error", CalibrationWarning)
        index = build(corpus, coarse_dim=4)
    assert index.calibration["reached"] and "warning" not in index.calibration


def test_a_corpus_too_small_to_hold_out_enough_queries_uses_every_vector(tmp_path):
    x = make_corpus(100, seed=6)  # a tenth held out: 10 queries, the bound needs 27
    index = build(x, coarse_dim=4)
    cal = index.calibration
    assert index.candidates == 100 and cal["candidates"] == 100
    assert cal["queries"] == 10 and cal["min_queries"] == 27 and "too few" in cal["method"]
    assert cal["reached"] and cal["recall"] == 1.0
    index.save(tmp_path / "small")  # the record is a valid manifest section
    assert MatryoshkaIndex.load(tmp_path / "small").candidates == 100
    # a target of 1.0 no sample can show: the build searches every vector, which is exact
    exact = build(x, coarse_dim=4, target_recall=1.0)
    assert exact.candidates == 100 and exact.calibration["min_queries"] is None and exact.calibration["reached"]
    exact.save(tmp_path / "exact")
    assert MatryoshkaIndex.load(tmp_path / "exact").calibration["recall"] == 1.0


def test_fixed_candidates_need_no_minimum_and_do_not_warn(corpus):
    with warnings.catch_warnings():
        warnings.simplefilter("error", CalibrationWarning)
        index = build(corpus, coarse_dim=2, candidates=10, calibration_queries=5)
    assert index.candidates == 10 and index.calibration["method"].startswith("fixed by the caller")


def test_mindex_build_of_an_unreachable_target_says_so_and_keeps_the_index(tmp_path):
    """A real process (pytest would capture the warning): the candidates cap is lowered to 10 first."""
    import subprocess
    import sys

    np.save(tmp_path / "c.npy", make_corpus(400, seed=4))
    script = (
        "import sys; import matryoshka_index.index.build as b; b.MAX_CANDIDATES = 10; "
        "from matryoshka_index.cli import main; main(sys.argv[1:])"
    )
    args = ["build", str(tmp_path / "c.npy"), "--coarse-dim", "2", "-o", str(tmp_path / "ix"), "-q"]
    result = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr  # the index is built and usable: the warning says the rest
    assert "CalibrationWarning: target_recall 0.99 not reached" in result.stderr
    summary = json.loads(result.stdout)
    assert summary["calibrated_recall@10"] < summary["target_recall"]
    loaded = MatryoshkaIndex.load(tmp_path / "ix").calibration
    assert loaded["reached"] is False and "not reached" in loaded["warning"]
    shutil.rmtree(tmp_path / "ix")
