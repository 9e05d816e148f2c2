"""The calibration module (operating points, the calibrator), the capability protocols the index asks
for, closing an index, and the names that moved in issue 10 still importable from their old homes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import make_corpus

from matryoshka_index import MatryoshkaIndex
from matryoshka_index.backends import Closeable, ReportsTimings, SearchKnob, StoresIndexMetadata, TrainableCoarse
from matryoshka_index.calibration import (
    SWEEP_CANDIDATES,
    CalibrationRecord,
    Calibrator,
    OperatingPoint,
    OperatingPoints,
    candidate_ladder,
    recall_with_lower_bound,
    smallest,
)
from matryoshka_index.metrics import ann_recall, per_query_recall


def test_candidate_ladder_is_geometric_distinct_and_capped():
    assert candidate_ladder(10, 30) == [10, 12, 14, 17, 20, 24, 28, 30]
    assert candidate_ladder(10, 5) == [10]


def test_smallest_bisects_a_monotone_predicate():
    calls = []

    def ok(v):
        calls.append(v)
        return v >= 37

    values = list(range(1, 101))
    assert smallest(values, ok) == 37
    assert calls[0] == 100 and len(calls) <= 9
    assert smallest(values, lambda v: False) is None


def test_recall_lower_bound_is_below_the_mean_and_skips_empty_truth():
    truth = np.array([[1, 2], [3, 4], [5, -1], [-1, -1]])
    found = np.array([[1, 2], [3, 9], [5, 7], [8, 9]])
    mean, lower = recall_with_lower_bound(found, truth)
    assert mean == pytest.approx((1 + 0.5 + 1) / 3) == ann_recall(found, truth)
    assert lower < mean
    np.testing.assert_allclose(per_query_recall(found, truth), [1, 0.5, 1])
    assert recall_with_lower_bound(found[:1], truth[:1]) == (1.0, 1.0)
    assert ann_recall(found[3:], truth[3:]) == 1.0  # nothing to find


def _measure_with(recall_of):
    """A measure function over a made-up monotone recall surface, with its calls recorded."""
    calls = []

    def measure(c, knob):
        calls.append((c, knob))
        r = recall_of(c, knob)
        return r, r - 0.01

    return measure, calls


def test_calibrator_picks_the_smallest_ladder_value_whose_lower_bound_reaches_the_target():
    measure, calls = _measure_with(lambda c, knob: min(1.0, c / 100))
    seen = []
    points = OperatingPoints(measure, on_measure=seen.append)
    choice, record = Calibrator(10, 400).calibrate(
        points, 0.9, queries=5, truth_note="t", query_source="s", started=None
    )
    ladder = candidate_ladder(10, 400)
    assert choice.candidates == min(c for c in ladder if c / 100 - 0.01 >= 0.9)
    assert choice.knob is None and record["knob"] is None and record["reached"]
    assert len(calls) == len(set(calls)) == len(seen)  # each setting measured once
    assert record["steps"] == [p.step() for p in points] and record["candidates"] == choice.candidates
    assert record["queries"] == 5 and record["truth"] == "t" and record["query_source"] == "s"


def test_calibrator_with_a_knob_keeps_the_cheapest_pair_reaching_the_target():
    # recall rises with both candidates and nprobe; the cost favours small nprobe strongly
    measure, _ = _measure_with(lambda c, p: min(1.0, c / 80) * min(1.0, p / 8 + 0.5))
    calibrator = Calibrator(10, 400, knob=("nprobe", [1, 2, 4, 8, 16]), cost=lambda c, p: c + 50 * p)
    choice = calibrator.choose(OperatingPoints(measure), 0.9)
    assert choice.knob is not None and choice.knob < 16  # more candidates bought a cheaper probe
    r = min(1.0, choice.candidates / 80) * min(1.0, choice.knob / 8 + 0.5)
    assert r - 0.01 >= 0.9
    assert calibrator.choose(OperatingPoints(measure), 0.9, fixed=30, fixed_knob=4).knob == 4
    assert calibrator.choose(OperatingPoints(measure), 0.9, fixed=30).knob == 16
    with pytest.raises(ValueError, match="cost model"):
        Calibrator(10, 40, knob=("nprobe", [1, 2]))


def test_the_calibration_record_writes_every_section_back_as_it_was_read():
    fixtures = Path(__file__).parent / "fixtures" / "index_v1"
    sections = [json.loads(p.read_text())["calibration"] for p in sorted(fixtures.glob("*/manifest.json"))]
    assert sections and all("candidates" in s for s in sections)
    fallback = {**sections[0], "method": "too few queries", "min_queries": None, "warning": "w", "later": [1]}
    sections += [{}, {"skipped": "1 vector(s); calibration needs at least 2"}, fallback]
    for section in sections:
        record = CalibrationRecord.from_dict(section)
        assert record.to_dict() == section
        assert record.calibrated == ("candidates" in section)
    assert CalibrationRecord.from_dict(fallback).extra == {"later": [1]}
    assert CalibrationRecord.from_dict(None) == CalibrationRecord() and CalibrationRecord().to_dict() == {}


def test_the_evaluation_sweep_takes_every_other_step_of_the_one_ladder():
    ladder = candidate_ladder(10, 1280)
    assert list(SWEEP_CANDIDATES) == ladder[::2] and SWEEP_CANDIDATES[-1] == 1280
    assert SWEEP_CANDIDATES[:5] == (10, 14, 20, 28, 40)  # x sqrt(2), as the sweep's own ladder was


def test_unreachable_target_takes_the_top_of_the_ladder_and_says_so():
    measure, _ = _measure_with(lambda c, knob: 0.5)
    choice, record = Calibrator(10, 50).calibrate(
        OperatingPoints(measure), 0.99, queries=1, truth_note="", query_source=""
    )
    assert choice.candidates == 50 and record["reached"] is False


def test_operating_points_smallest_meeting_and_rows():
    points = OperatingPoints()
    for c, r, q in ((10, 0.8, 900.0), (20, 0.95, 600.0), (40, 0.99, 300.0), (20, 0.95, 700.0)):
        points.add(OperatingPoint(c, recall=r, extra={"qps": q}))
    best = points.smallest_meeting(0.95, lambda p: p.recall, order=lambda p: (p.candidates, -p.extra["qps"]))
    assert (best.candidates, best.extra["qps"]) == (20, 700.0)
    assert points.smallest_meeting(0.999, lambda p: p.recall, order=lambda p: p.candidates) is None
    assert next(iter(points)).to_dict() == {"candidates": 10, "recall@10": 0.8, "qps": 900.0}
    with pytest.raises(ValueError, match="no measure"):
        points.measure(11)  # (10, None) was added, so only a new setting needs a measure


# ---------------------------------------------------------------------- capabilities and close
class _Plain:
    kind = "plain"


class _Everything:
    supports_timings = True

    def train(self, coarse_sample, n_total): ...
    def search_knob(self): ...
    def set_search_knob(self, value): ...
    def get_search_knob(self): ...
    def search_cost(self, candidates, knob=None): ...
    def attach_index_metadata(self, manifest, adaptor_files): ...
    def close(self): ...


def test_capability_protocols_check_for_the_names():
    for cap in (TrainableCoarse, SearchKnob, StoresIndexMetadata, ReportsTimings, Closeable):
        assert isinstance(_Everything(), cap)
        assert not isinstance(_Plain(), cap)


def test_close_and_context_manager_close_a_closeable_backend(tmp_path):
    index = MatryoshkaIndex.build(make_corpus(60), coarse_dim=8, quiet=True)
    index.close()  # FAISS holds nothing to release: a no-op
    index.save(tmp_path / "i")
    closed = []
    with MatryoshkaIndex.load(tmp_path / "i") as loaded:
        assert len(loaded) == 60
        loaded.backend.close = lambda: closed.append(True)  # an instance attribute: now Closeable
    assert closed == [True]


def test_names_that_moved_still_import_from_their_old_homes():
    import matryoshka_index.calibration as cal
    import matryoshka_index.evaluation as ev
    import matryoshka_index.manifest as man
    from matryoshka_index import index as old

    assert ev.recall_at_k is ann_recall and ev.exact_topk is old.exact_topk
    assert old.recall_with_lower_bound is cal.recall_with_lower_bound and cal.CONFIDENCE_Z == 1.645
    # the private aliases of the former index.py are gone (issue 20): the defining modules' names serve
    assert not [name for name in vars(old) if name.startswith("_") and not name.startswith("__")]
    assert (old.FORMAT, old.FORMAT_VERSION, old.MANIFEST_FILE) == (man.FORMAT, man.FORMAT_VERSION, man.MANIFEST_FILE)
    assert (man.FORMAT, man.FORMAT_VERSION, man.MANIFEST_FILE) == ("matryoshka-index", 1, "manifest.json")
    for name in ("MatryoshkaIndex", "PCARotation", "check_output_path", "embedded_qdrant_backend", "adaptor_kind"):
        assert hasattr(old, name)
    from matryoshka_index.quality.evaluate import METHOD_LABELS, METRICS
    from matryoshka_index.quality.labels import METHOD_LABELS as labels

    assert METHOD_LABELS is labels and METRICS == ("ndcg@10", "recall@100", "mrr@10")
