"""Labelled evaluation: metrics against hand-worked numbers (and trec_eval when installed), the
train/test split discipline, the advisor, and the report and plot files."""

from __future__ import annotations

import json
import math
import struct
import sys

import numpy as np
import pytest
from conftest import constructed_labelled_report

from matryoshka_index import InputError, MatryoshkaAdaptor, MatryoshkaError
from matryoshka_index.datasets import low_rank_corpus
from matryoshka_index.metrics import mrr_at_k, ndcg_at_k, neighbour_recall, recall_at_k
from matryoshka_index.quality import (
    LabelledReport,
    QuerySplit,
    advise,
    discover_labelled_sets,
    evaluate_beir,
    evaluate_labelled,
    labelled_metrics,
    load_beir,
    load_labelled_files,
    parse_budget,
    ranked_rows,
    read_qrels,
    split_queries,
)

# ---------------------------------------------------------------------- hand-worked metrics
# q1 judges b (2) and a (1); q2 judges c (1); q3 has only a zero judgement, so it is skipped.
QRELS = {"q1": {"a": 1, "b": 2}, "q2": {"c": 1}, "q3": {"a": 0}}
RUN = [["x", "b", "a"], ["y", "z", "w"], ["a", "b", "c"]]
QIDS = ["q1", "q2", "q3"]


def test_ndcg_hand_worked():
    # q1: DCG = 0/log2(2) + 2/log2(3) + 1/log2(4) = 1.26186 + 0.5; IDCG = 2/1 + 1/log2(3) = 2.63093.
    q1 = (2 / math.log2(3) + 1 / 2) / (2 + 1 / math.log2(3))
    assert q1 == pytest.approx(0.669672, abs=1e-6)
    assert ndcg_at_k(RUN, QIDS, QRELS, 10) == pytest.approx((q1 + 0.0) / 2, abs=1e-12)
    assert ndcg_at_k(RUN, QIDS, QRELS, 10) == pytest.approx(0.334836, abs=1e-6)
    # Cut at 2: only b (rank 2) counts.
    assert ndcg_at_k(RUN, QIDS, QRELS, 2) == pytest.approx((2 / math.log2(3)) / (2 + 1 / math.log2(3)) / 2, abs=1e-12)
    assert ndcg_at_k([["b", "a"]], ["q1"], QRELS, 10) == pytest.approx(1.0)


def test_mrr_and_recall_hand_worked():
    assert mrr_at_k(RUN, QIDS, QRELS, 10) == pytest.approx((1 / 2 + 0) / 2)
    assert mrr_at_k(RUN, QIDS, QRELS, 1) == 0.0
    assert recall_at_k(RUN, QIDS, QRELS, 2) == pytest.approx((1 / 2 + 0) / 2)
    assert recall_at_k(RUN, QIDS, QRELS, 3) == pytest.approx((2 / 2 + 0) / 2)
    # neighbour recall: 2 of 3 and 1 of 3; -1 never matches.
    found = np.array([[1, 2, 9], [4, -1, -1]])
    truth = np.array([[1, 2, 3], [4, 5, -1]])
    assert neighbour_recall(found, truth, 3) == pytest.approx((2 + 1) / 6)


def test_labelled_metrics_on_rows():
    ids = ["a", "b", "c", "x", "y", "z", "w"]
    rows = np.array([[3, 1, 0], [4, 5, 6]])
    out = labelled_metrics(rows, ids, ["q1", "q2"], QRELS)
    assert out["ndcg@10"] == pytest.approx(0.334836, abs=1e-6)
    assert out["mrr@10"] == pytest.approx(0.25)
    assert "recall@100" not in out  # only 3 columns: recall@100 would be a lie


def _random_run(seed: int = 0):
    rng = np.random.default_rng(seed)
    docs = [f"d{i}" for i in range(300)]
    qrels, run, ranked, qids = {}, {}, [], []
    for q in range(40):
        qid = f"q{q}"
        rel = rng.choice(300, size=rng.integers(1, 6), replace=False)
        qrels[qid] = {docs[r]: int(rng.integers(1, 4)) for r in rel}
        scores = rng.permutation(300).astype(float)  # distinct scores: no tie-breaking differences
        order = np.argsort(-scores)[:150]
        run[qid] = {docs[r]: float(scores[r]) for r in order}
        ranked.append([docs[r] for r in order])
        qids.append(qid)
    return qrels, run, ranked, qids


def test_metrics_agree_with_trec_eval_or_ranx():
    qrels, run, ranked, qids = _random_run()
    ours = {
        "ndcg@10": ndcg_at_k(ranked, qids, qrels, 10),
        "mrr@10": mrr_at_k(ranked, qids, qrels, 10),
        "recall@100": recall_at_k(ranked, qids, qrels, 100),
    }
    try:
        import pytrec_eval
    except ImportError:
        pytrec_eval = None
    if pytrec_eval is not None:
        per_q = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10", "recall.100"}).evaluate(run)
        # trec_eval's recip_rank has no cut-off: MRR@10 is recip_rank over each run's top 10.
        top10 = {q: dict(sorted(r.items(), key=lambda t: -t[1])[:10]) for q, r in run.items()}
        rr = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(top10)
        theirs = {
            "ndcg@10": np.mean([v["ndcg_cut_10"] for v in per_q.values()]),
            "mrr@10": np.mean([v["recip_rank"] for v in rr.values()]),
            "recall@100": np.mean([v["recall_100"] for v in per_q.values()]),
        }
    else:
        ranx = pytest.importorskip("ranx", reason="neither pytrec_eval nor ranx is installed (optional cross-check)")
        theirs = ranx.evaluate(ranx.Qrels(qrels), ranx.Run(run), ["ndcg@10", "mrr@10", "recall@100"])
    for k in ours:
        assert ours[k] == pytest.approx(theirs[k], abs=1e-6), k


def test_ranked_rows_is_exact_prefix_cosine():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((500, 16)).astype(np.float32)
    q = rng.standard_normal((7, 16)).astype(np.float32)
    for m in (4, 16):
        xn = x[:, :m] / np.linalg.norm(x[:, :m], axis=1, keepdims=True)
        qn = q[:, :m] / np.linalg.norm(q[:, :m], axis=1, keepdims=True)
        expect = np.argsort(-(qn @ xn.T), axis=1)[:, :20]
        np.testing.assert_array_equal(ranked_rows(q, x, 20, m), expect)


# ---------------------------------------------------------------------- files
def test_read_qrels_formats_and_errors(tmp_path):
    beir = tmp_path / "test.tsv"
    beir.write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td2\t2\nq2\td1\t0\n")
    assert read_qrels(beir) == {"q1": {"d1": 1.0, "d2": 2.0}, "q2": {"d1": 0.0}}
    trec = tmp_path / "qrels.txt"
    trec.write_text("q1 0 d1 1\nq2 0 d3 1\n")
    assert read_qrels(trec) == {"q1": {"d1": 1.0}, "q2": {"d3": 1.0}}
    with pytest.raises(InputError, match=r"^train_qrels: .*file not found"):
        read_qrels(tmp_path / "missing.tsv", "train_qrels")
    bad = tmp_path / "bad.tsv"
    bad.write_text("q1\td1\t1\nq1\td2\tmany\n")
    with pytest.raises(InputError, match=r"^qrels: .*line 2: score 'many' is not a number"):
        read_qrels(bad)
    bad.write_text("q1\td1\n")
    with pytest.raises(InputError, match="expected 3 columns"):
        read_qrels(bad)
    bad.write_text("query-id\tcorpus-id\tscore\n")
    with pytest.raises(InputError, match="no judgements"):
        read_qrels(bad)


def _write_beir(root, n=300, d=16, nq=40, seed=0):
    rng = np.random.default_rng(seed)
    root.mkdir()
    (root / "qrels").mkdir()
    c = low_rank_corpus(n, d, rank=6, seed=seed)
    q = c[:nq] + 0.2 * rng.standard_normal((nq, d)).astype(np.float32)
    np.save(root / "corpus.npy", c)
    np.save(root / "queries.npy", q.astype(np.float32))
    cids, qids = [f"d{i}" for i in range(n)], [f"q{i}" for i in range(nq)]
    (root / "ids.json").write_text(json.dumps({"corpus_ids": cids, "query_ids": qids}))
    split = ["train" if i % 2 else "test" for i in range(nq)]
    (root / "queries.jsonl").write_text(
        "".join(json.dumps({"_id": qids[i], "text": "t", "split": split[i]}) + "\n" for i in range(nq))
    )
    for name in ("train", "test"):
        rows = [f"{qids[i]}\t{cids[i]}\t1\n" for i in range(nq) if split[i] == name]
        (root / "qrels" / f"{name}.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(rows))
    return c, q


def test_load_beir_and_discover(tmp_path):
    c, q = _write_beir(tmp_path / "set-a")
    (tmp_path / "not-a-set").mkdir()
    assert [p.name for p in discover_labelled_sets(tmp_path)] == ["set-a"]
    data = load_beir(tmp_path / "set-a")
    assert data.name == "set-a" and data.corpus.shape == c.shape and len(data.query_ids) == len(q)
    assert set(data.qrels) == {f"q{i}" for i in range(0, 40, 2)}
    assert set(data.train_qrels) == {f"q{i}" for i in range(1, 40, 2)}
    assert data.query_splits["q1"] == "train"
    report = evaluate_beir(data, methods=["truncation"], dims=(4,), two_stage=False, ann=False)
    assert report.name == "set-a" and report.n_test_queries == 20
    d = tmp_path / "set-a"
    files = load_labelled_files(
        d / "corpus.npy", d / "queries.npy", d / "qrels" / "test.tsv", d / "qrels" / "train.tsv",
        ids=d / "ids.json", queries_jsonl=d / "queries.jsonl",
    )  # fmt: skip
    assert files.qrels == data.qrels and files.train_qrels == data.train_qrels and files.name == "set-a"
    with pytest.raises(InputError, match=r"^ids: labelled evaluation needs the ids"):
        load_labelled_files(d / "corpus.npy", d / "queries.npy", d / "qrels" / "test.tsv")
    (tmp_path / "set-a" / "ids.json").unlink()
    with pytest.raises(InputError, match=r"^directory: .*has no ids.json"):
        load_beir(tmp_path / "set-a")


# ---------------------------------------------------------------------- split discipline
CIDS = [f"d{i}" for i in range(5)]
QIDS5 = [f"q{i}" for i in range(5)]


def test_split_refuses_overlap_and_inconsistent_splits():
    test = {"q0": {"d0": 1}, "q1": {"d1": 1}}
    with pytest.raises(InputError, match=r"^train_qrels: 1 query id\(s\) also judged in the test qrels"):
        split_queries(QIDS5, CIDS, test, {"q1": {"d2": 1}, "q2": {"d2": 1}})
    with pytest.raises(InputError, match=r"^train_qrels: query 'q2' has split 'test'"):
        split_queries(QIDS5, CIDS, test, {"q2": {"d2": 1}}, {"q2": "test"})
    with pytest.raises(InputError, match=r"^qrels: query 'q0' is judged as a test query but its split is 'train'"):
        split_queries(QIDS5, CIDS, test, None, {"q0": "train"})
    with pytest.raises(InputError, match=r"^qrels: no query has a relevant document"):
        split_queries(QIDS5, CIDS, {"q0": {"d0": 0}})
    with pytest.raises(InputError, match=r"^qrels: query id 'q9' is not among the query ids"):
        split_queries(QIDS5, CIDS, {"q9": {"d0": 1}})
    with pytest.raises(InputError, match=r"^train_qrels: corpus id 'd9' .* is not among the corpus ids"):
        split_queries(QIDS5, CIDS, test, {"q2": {"d9": 1}})
    with pytest.raises(InputError, match="never be trained on"):
        QuerySplit(np.array([0, 1]), np.array([1, 2]), ("q0", "q1"), ("q1", "q2"))


def test_split_pairs_one_per_relevant_document():
    split, test_qrels = split_queries(
        QIDS5, CIDS, {"q0": {"d0": 1}}, {"q2": {"d1": 1, "d2": 2, "d3": 0}, "q3": {"d4": 1}}
    )
    assert list(test_qrels) == ["q0"] and split.test_ids == ("q0",)
    q_rows, d_rows = split.training_pairs(QIDS5, CIDS)
    assert sorted(zip(q_rows.tolist(), d_rows.tolist(), strict=True)) == [(2, 1), (2, 2), (3, 4)]


def make_labelled(n: int = 600, d: int = 32, nq: int = 160, seed: int = 0):
    """Documents near a low-rank subspace; each query is a noisy copy of one document (relevance 2)
    and also judges that document's nearest neighbour (relevance 1); the first half are test queries."""
    rng = np.random.default_rng(seed)
    c = low_rank_corpus(n, d, rank=8, noise=0.4, seed=seed)
    primary = rng.choice(n, size=nq, replace=False)
    q = c[primary] + 0.35 * rng.standard_normal((nq, d)).astype(np.float32) / np.sqrt(d) * 4
    q = (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)
    sims = c[primary] @ c.T
    sims[np.arange(nq), primary] = -np.inf
    second = sims.argmax(axis=1)
    cids, qids = [f"doc{i}" for i in range(n)], [f"query{i}" for i in range(nq)]
    qrels = {qids[i]: {cids[primary[i]]: 2, cids[second[i]]: 1} for i in range(nq)}
    half = nq // 2
    test = {k: qrels[k] for k in qids[:half]}
    train = {k: qrels[k] for k in qids[half:]}
    return c, cids, q, qids, test, train


def small_adaptor(**kw) -> MatryoshkaAdaptor:
    return MatryoshkaAdaptor(**{"epochs": 1, "batch_size": 128, "quiet": True, "seed": 0, **kw})


def test_a_test_query_never_reaches_training(monkeypatch):
    c, cids, q, qids, test, train = make_labelled(n=400, nq=60)
    calls = []
    real_fit = MatryoshkaAdaptor.fit

    def spy(self, corpus, queries=None, positives=None):
        calls.append((np.array(corpus), None if queries is None else np.array(queries), positives))
        return real_fit(self, corpus, queries, positives)

    monkeypatch.setattr(MatryoshkaAdaptor, "fit", spy)
    evaluate_labelled(
        c, cids, q, qids, test, train, methods=["supervised"], dims=(8,), two_stage=False, ann=False,
        supervised_adaptor=small_adaptor(), train_queries_in_corpus=True,
    )  # fmt: skip
    assert len(calls) == 1
    seen_corpus, seen_q, seen_pos = calls[0]
    test_vecs = q[[qids.index(k) for k in test]]
    train_vecs = q[[qids.index(k) for k in train]]
    # Two positives per training query: one pair each.
    assert len(seen_q) == len(seen_pos) == 2 * len(train)
    for rows in (seen_q, seen_corpus):
        close_to_test = (np.abs(rows[:, None, :] - test_vecs[None, :, :]).max(axis=2) < 1e-7).any(axis=1)
        assert not close_to_test.any(), "a test query's embedding was handed to fit()"
    assert (np.abs(seen_q[:, None, :] - train_vecs[None, :, :]).max(axis=2) < 1e-7).any(axis=1).all()
    assert len(seen_corpus) == len(c) + len(train)  # corpus plus the training queries, nothing else


def test_two_stage_index_calibrates_on_training_queries_never_test_ones(monkeypatch):
    from matryoshka_index.index import MatryoshkaIndex

    c, cids, q, qids, test, train = make_labelled(n=400, nq=60)
    seen = []
    real = MatryoshkaIndex.calibrate

    def spy(self, queries, **kw):
        seen.append(np.array(queries))
        return real(self, queries, **kw)

    monkeypatch.setattr(MatryoshkaIndex, "calibrate", spy)
    rep = evaluate_labelled(c, cids, q, qids, test, train, methods=["truncation"], dims=(8,), ann=False, repeats=1)
    assert len(seen) == 1
    test_vecs = q[[qids.index(k) for k in test]]
    train_vecs = q[[qids.index(k) for k in train]]
    assert len(seen[0]) == len(train)
    assert not (np.abs(seen[0][:, None, :] - test_vecs[None]).max(axis=2) < 1e-7).any()
    assert (np.abs(seen[0][:, None, :] - train_vecs[None]).max(axis=2) < 1e-7).any(axis=1).all()
    assert rep.two_stage["truncation"][8]["calibration_queries"] == "caller's queries"
    assert any("training queries (never a test query)" in note for note in rep.notes)
    # without training queries (or when switched off) the build's calibration on corpus rows stands
    seen.clear()
    rep = evaluate_labelled(c, cids, q, qids, test, methods=["truncation"], dims=(8,), ann=False, repeats=1)
    assert not seen and rep.two_stage["truncation"][8]["calibration_queries"].startswith("random corpus rows")
    evaluate_labelled(
        c, cids, q, qids, test, train, methods=["truncation"], dims=(8,), ann=False, repeats=1,
        calibrate_on_train_queries=False,
    )  # fmt: skip
    assert not seen


def test_a_calibration_on_training_queries_that_misses_its_target_keeps_the_build_and_says_so(monkeypatch):
    from matryoshka_index.errors import CalibrationError
    from matryoshka_index.index import MatryoshkaIndex

    def missed(self, queries, **kw):  # as a short truncated prefix of a large corpus does (4,096 candidates cap)
        raise CalibrationError("target_recall 0.99 not reached", {"recall": 0.93, "reached": False})

    monkeypatch.setattr(MatryoshkaIndex, "calibrate", missed)
    c, cids, q, qids, test, train = make_labelled(n=400, nq=60)
    lines = []
    rep = evaluate_labelled(
        c, cids, q, qids, test, train, methods=["truncation"], dims=(8,), ann=False, repeats=1, log=lines.append
    )
    entry = rep.two_stage["truncation"][8]
    assert entry["calibration_on_queries_reached"] is False and entry["calibration_on_queries_recall"] == 0.93
    assert entry["candidates"] >= 10 and 0.0 <= entry["ndcg@10"] <= 1.0  # the build's own calibration stands
    assert any("not reached" in line for line in lines)


def test_bad_inputs_are_one_line_errors():
    c, cids, q, qids, test, train = make_labelled(n=200, nq=20)
    with pytest.raises(InputError, match=r"^queries: has 16 dimensions but 32 are expected"):
        evaluate_labelled(c, cids, q[:, :16], qids, test)
    with pytest.raises(InputError, match=r"^corpus_ids: has 199 ids for 200 embedding rows"):
        evaluate_labelled(c, cids[:-1], q, qids, test)
    with pytest.raises(InputError, match=r"^methods: 'supervised' needs train_qrels"):
        evaluate_labelled(c, cids, q, qids, test, methods=["supervised"])
    with pytest.raises(InputError, match=r"^dims: prefix length 64 exceeds"):
        evaluate_labelled(c, cids, q, qids, test, dims=(8, 64))
    fitted = small_adaptor(matryoshka_dims=(8,)).fit(c)
    with pytest.raises(InputError, match=r"^supervised_adaptor: pass an unfitted MatryoshkaAdaptor"):
        evaluate_labelled(c, cids, q, qids, test, train, supervised_adaptor=fitted)
    with pytest.raises(InputError, match=r"^qrels: .*file not found"):
        evaluate_labelled(c, cids, q, qids, "/nonexistent/test.tsv")


# ---------------------------------------------------------------------- the whole evaluation
@pytest.fixture(scope="module")
def report() -> LabelledReport:
    c, cids, q, qids, test, train = make_labelled()
    return evaluate_labelled(
        c, cids, q, qids, test, train, dims=(4, 8, 16),
        adaptor=small_adaptor(matryoshka_dims=(4, 8, 16)),
        supervised_adaptor=small_adaptor(matryoshka_dims=(4, 8, 16), ranking_weight=5.0),
        candidates=(10, 20, 40, 80, 160, 600), repeats=1, quiet=True, name="synthetic",
    )  # fmt: skip


def test_report_measures_every_method_and_dimension(report):
    assert report.methods == ["truncation", "pca", "adaptor", "adaptor_queries", "supervised"]
    assert report.n_test_queries == 80 and report.n_train_queries == 80 and report.n_train_pairs == 160
    assert 0.2 < report.full["ndcg@10"] < 1.0  # a task with something to lose
    for method in report.methods:
        for m in report.dims:
            for key in ("ndcg@10", "recall@100", "mrr@10"):
                assert 0.0 <= report.prefix[method][m][key] <= 1.0
                assert 0.0 <= report.two_stage[method][m][key] <= 1.0
            assert report.two_stage[method][m]["candidates"] >= 10
    # At full dimension truncation is the original search, and an orthogonal rotation keeps every cosine.
    assert report.prefix["truncation"][32] == report.full
    assert report.prefix["pca"][32]["ndcg@10"] == pytest.approx(report.full["ndcg@10"], abs=1e-2)
    # Rotating to the principal axes first must help the 4-dim prefix of a low-rank corpus.
    assert report.prefix["pca"][4]["ndcg@10"] > report.prefix["truncation"][4]["ndcg@10"] + 0.05
    # Reranking every document (C = corpus size) is exact search: recall 1 and the full-dim nDCG.
    for method in report.methods:
        last = report.ann[method][4][-1]
        assert last["candidates"] == 600
        assert last["recall@10"] == pytest.approx(1.0)
        assert last["ndcg@10"] == pytest.approx(report.full["ndcg@10"], abs=1e-9)
    assert report.exact_qps and report.exact_qps > 0
    assert report.training["supervised"]["pairs"] == 160


def test_markdown_and_json(report, tmp_path):
    md = report.to_markdown([advise(report, min_recall=0.95)])
    for text in ("## nDCG@10", "## recall@100", "## MRR@10", "ANN view", "Dimension advisor", "PCA",
                 "adaptor (supervised)", "two-stage index", f"{report.full['ndcg@10']:.3f}",
                 f"{report.prefix['pca'][8]['ndcg@10']:.3f}"):  # fmt: skip
        assert text in md, text
    path = tmp_path / "report.md"
    report.write_markdown(path)
    assert path.read_text().startswith("# Retrieval quality by dimension: synthetic")
    report.save_json(tmp_path / "report.json")
    again = LabelledReport.from_dict(json.loads((tmp_path / "report.json").read_text()))
    assert again.to_markdown() == report.to_markdown()


def test_plot_file_is_a_real_png(report, tmp_path):
    pytest.importorskip("matplotlib", reason="matplotlib (the 'plot' extra) is not installed")
    path = tmp_path / "report.png"
    report.plot(path)
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert width >= 1200 and height >= 500
    assert len(data) > 30_000  # two panels of lines and text, not a blank canvas


def test_plot_without_matplotlib_is_one_clear_error(report, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(MatryoshkaError, match=r"pip install 'matryoshka-index\[plot\]'"):
        report.plot(tmp_path / "x.png")


# ---------------------------------------------------------------------- the advisor
def test_advisor_picks_smallest_dimension_then_candidates():
    r = constructed_labelled_report()
    a = advise(r, min_recall=0.99)
    assert (a.met, a.method, a.coarse_dim, a.candidates) == (True, "adaptor", 16, 40)
    assert a.coarse_bytes_per_vector == 64 and a.full_bytes_per_vector == 256
    assert a.memory_saving == pytest.approx(0.75)
    assert a.speedup == pytest.approx(650 / 400)
    # An exact-search timing taken beside that sweep is preferred to the report-wide one.
    r.exact_qps_at = {"adaptor": {16: 500.0}}
    assert advise(r, min_recall=0.99).speedup == pytest.approx(650 / 500)
    r.exact_qps_at = {}
    # Lose at most 1% of 0.40: nDCG@10 >= 0.396 -> adaptor at m=16, C=40 (0.397).
    a = advise(r, max_ndcg_loss=0.01)
    assert (a.method, a.coarse_dim, a.candidates) == ("adaptor", 16, 40)
    # Restricted to PCA, the same budget needs C=80.
    a = advise(r, max_ndcg_loss=0.01, methods=["pca"])
    assert (a.method, a.coarse_dim, a.candidates) == ("pca", 16, 80)
    # 5% loss (>= 0.38) is met at m=8 by PCA with C=80 and by the adaptor with C=80: faster one wins.
    a = advise(r, max_ndcg_loss=0.05)
    assert (a.method, a.coarse_dim, a.candidates) == ("pca", 8, 80)
    text = str(a)
    assert "coarse dim 8 with 80 candidates" in text and "32 B/vector" in text and "256 B/vector" in text


def test_advisor_reports_unmet_budget_and_parses_budgets():
    a = advise(constructed_labelled_report(), min_recall=0.9999)
    assert not a.met and a.coarse_dim is not None and "NOT met" in str(a)
    assert parse_budget("ndcg-loss=1%") == {"max_ndcg_loss": pytest.approx(0.01)}
    assert parse_budget("recall@10=0.99") == {"min_recall": 0.99}
    with pytest.raises(InputError, match=r"^advise: "):
        parse_budget("speed=fast")
    with pytest.raises(InputError, match="exactly one budget"):
        advise(constructed_labelled_report())
    with pytest.raises(InputError, match=r"^max_ndcg_loss: "):
        advise(constructed_labelled_report(), max_ndcg_loss=1.0)
