"""The labelled evaluation's coarse codes side by side, and the advisor's memory / speed frontier."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from test_cli_eval_labelled import write_set

from matryoshka_index.cli import main
from matryoshka_index.datasets import low_rank_corpus
from matryoshka_index.errors import InputError
from matryoshka_index.quality import LabelledReport, advise, advise_frontier, evaluate_labelled, parse_codes
from matryoshka_index.quality.frontier import code_options, frontier, parse_code


def test_code_specs_parse_and_bad_ones_are_one_line_errors():
    assert parse_code("pq4x16+itq") == {"code": "pq4", "pq_m": 16, "balance": "itq"}
    assert parse_code("rabitq4") == {"code": "rabitq", "rabitq_bits": 4}
    assert parse_code(" SQ8 ") == {"code": "sq8"}
    assert parse_codes("float, sq8,float,pq4") == ["float", "sq8", "pq4"]
    assert parse_codes(None) == ["float"]
    for bad in ("sq3", "floatx4", "binary4", "pq4x", ""):
        with pytest.raises(InputError, match=r"^codes: ") as err:
            parse_codes([bad]) if bad else parse_codes(",")
        assert "\n" not in str(err.value)
    # a code that cannot apply at a prefix length is skipped there, not an error
    assert code_options("pq4x3", 8) is None and code_options("binary", 12) is None
    assert code_options("pq4x4", 8) == {"index": "flat", "code": "pq4", "pq_m": 4}


def _row(bytes_, qps, recall, name):
    return {"method": "pca", "coarse_dim": 8, "code": name, "bytes_per_vector": bytes_, "candidates": 10,
            "recall@10": recall, "ndcg@10": recall, "qps": qps}  # fmt: skip


def test_frontier_keeps_the_rows_no_other_beats_on_bytes_and_speed():
    rows = [
        _row(4, 100, 0.995, "a"),  # cheapest meeting: on the frontier
        _row(8, 90, 0.999, "b"),  # more bytes and slower than a: dominated
        _row(8, 300, 0.992, "c"),  # faster: on it
        _row(16, 300, 0.999, "d"),  # as fast as c with more bytes: dominated
        _row(2, 5000, 0.90, "e"),  # below the budget: listed apart, never on the frontier
        _row(32, 900, 0.991, "f"),
    ]
    f = frontier(rows, threshold=0.99, key="recall@10", budget="recall@10 >= 0.99")
    assert [r["code"] for r in f.points] == ["a", "c", "f"]
    assert [r["code"] for r in f.meeting] == ["a", "c", "b", "d", "f"]
    assert [r["code"] for r in f.missing] == ["e"]
    for r in f.meeting:  # every row off the frontier is beaten by one on it
        if not r["on_frontier"]:
            assert any(p["bytes_per_vector"] <= r["bytes_per_vector"] and p["qps"] >= r["qps"] for p in f.points)
    text = str(f)
    assert "* 4 B/vector" in text and "below the budget: 2 B/vector" in text
    assert json.dumps(f.to_dict())


@pytest.fixture(scope="module")
def coded_report():
    rng = np.random.default_rng(3)
    c = low_rank_corpus(800, 16, rank=6, seed=3)
    q = c[:60] + 0.05 * rng.standard_normal((60, 16)).astype(np.float32)
    cids, qids = [f"d{i}" for i in range(800)], [f"q{i}" for i in range(60)]
    test = {qids[i]: {cids[i]: 1} for i in range(0, 60, 2)}
    train = {qids[i]: {cids[i]: 1} for i in range(1, 60, 2)}
    return evaluate_labelled(
        c, cids, q, qids, test, train, methods=["truncation", "pca"], dims=(8,), repeats=1,
        codes=["float", "sq8", "pq4", "pq4x4", "pq4x3", "binary"], quiet=True,
    )  # fmt: skip


def test_evaluation_measures_each_code_at_its_calibrated_candidates(coded_report):
    rows = coded_report.codes
    got = {(r["method"], r["code"]) for r in rows}
    # pq4x3 cannot split 8 dims: skipped; every other code measured for both methods
    assert got == {(m, code) for m in ("truncation", "pca") for code in ("float", "sq8", "pq4", "pq4x4", "binary")}
    by = {(r["method"], r["code"]): r for r in rows}
    for method in ("truncation", "pca"):
        b = {code: by[(method, code)]["bytes_per_vector"] for code in ("float", "sq8", "pq4", "pq4x4", "binary")}
        # measured on the built index: float32 codes above int8 above 4-bit PQ above 1 bit a dimension
        assert b["float"] > b["sq8"] > b["pq4"] > b["pq4x4"] > b["binary"] > 0
        assert b["sq8"] >= 8 and b["binary"] >= 1
        # the float row is the two-stage index the report already measured
        assert by[(method, "float")]["candidates"] == coded_report.two_stage[method][8]["candidates"]
    for r in rows:
        assert 0 <= r["recall@10"] <= 1 and 0 <= r["ndcg@10"] <= 1 and r["qps"] > 0 and r["candidates"] >= 10
    again = LabelledReport.from_dict(json.loads(json.dumps(coded_report.to_dict())))
    assert again.codes == rows


def test_advisor_frontier_reads_the_code_rows(coded_report):
    f = advise_frontier(coded_report, min_recall=0.5)
    assert f.meeting and f.points
    assert all(r["recall@10"] >= 0.5 for r in f.meeting)
    qps = [r["qps"] for r in f.points]
    assert qps == sorted(qps) and len(set(qps)) == len(qps)
    assert [r["bytes_per_vector"] for r in f.meeting] == sorted(r["bytes_per_vector"] for r in f.meeting)
    only_pca = advise_frontier(coded_report, min_recall=0.5, methods=["pca"])
    assert {r["method"] for r in only_pca.meeting} == {"pca"}
    with pytest.raises(InputError, match=r"^methods: 'adaptor' has no code measurement"):
        advise_frontier(coded_report, min_recall=0.5, methods=["adaptor"])
    with pytest.raises(InputError, match=r"^advise_frontier: unknown budget 'speed'"):
        advise_frontier(coded_report, speed=2.0)
    assert advise_frontier(coded_report, max_ndcg_loss=0.5).budget.startswith("nDCG@10 loss <= 50.0%")
    # the advice quotes the float index's measured bytes, not 4 x m
    a = advise(coded_report, min_recall=0.5)
    assert a.coarse_bytes_per_vector == next(
        r["bytes_per_vector"] for r in coded_report.codes if (r["method"], r["code"]) == (a.method, "float")
    )
    assert "Coarse codes" in coded_report.to_markdown([f])


def test_cli_eval_codes_prints_the_frontier_and_refuses_a_bad_code(tmp_path):
    write_set(tmp_path / "set")
    base = ["eval", "--labelled", str(tmp_path / "set"), "--dims", "8", "--methods", "pca", "--no-ann", "-q"]
    result = CliRunner().invoke(main, [*base, "--codes", "float,sq8,pq4", "--advise", "recall=0.5"])
    assert result.exit_code == 0, result.output
    assert "memory / speed frontier" in result.output and "sq8" in result.output and "Coarse codes" in result.output
    bad = CliRunner().invoke(main, [*base, "--codes", "float,sq9"])
    assert bad.exit_code == 2 and "codes: unknown code 'sq9'" in bad.output
    assert len(bad.output.strip().splitlines()) == 1
