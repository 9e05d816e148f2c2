"""``mindex build / search / info / eval`` end to end in a temp dir, and their one-line errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import brute_force, make_corpus

from matryoshka_index import MatryoshkaIndex
from matryoshka_index.cli import main
from matryoshka_index.storage import write_fvecs


def run(*args: str):
    return CliRunner().invoke(main, list(args))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """corpus.npy (300 x 32), queries.npy (20 x 32), ids.npy, and an index built with --train."""
    d = tmp_path_factory.mktemp("cli")
    x = make_corpus(320, seed=3)
    np.save(d / "corpus.npy", x[:300])
    np.save(d / "queries.npy", x[300:])
    np.save(d / "ids.npy", np.arange(300, dtype=np.int64) * 2 + 1)
    result = run(
        "build",
        str(d / "corpus.npy"),
        "--coarse-dim",
        "8",
        "-o",
        str(d / "corpus.mindex"),
        "--ids",
        str(d / "ids.npy"),
        "--train",
        "--quiet",
    )
    assert result.exit_code == 0, result.output
    return d, json.loads(result.stdout)


def test_build_with_train_writes_an_index_and_a_summary(files):
    d, summary = files
    assert summary["count"] == 300 and summary["coarse_dim"] == 8
    assert summary["adaptor"] == "matryoshka-adaptor"
    assert summary["calibrated_recall@10"] >= summary["target_recall"] == 0.99
    index = MatryoshkaIndex.load(d / "corpus.mindex")
    assert index.candidates == summary["candidates"]
    np.testing.assert_array_equal(np.sort(index.ids()), np.arange(300) * 2 + 1)


def test_search_writes_npy_and_jsonl_equal_to_the_python_api(files, tmp_path):
    d, _ = files
    index = MatryoshkaIndex.load(d / "corpus.mindex")
    want_s, want_i = index.search(np.load(d / "queries.npy"), k=5, candidates=40)

    out = tmp_path / "res.npy"
    result = run(
        "search", str(d / "corpus.mindex"), str(d / "queries.npy"), "-k", "5", "--candidates", "40", "-o", str(out)
    )
    assert result.exit_code == 0, result.output
    np.testing.assert_array_equal(np.load(out), want_i)
    np.testing.assert_allclose(np.load(tmp_path / "res.scores.npy"), want_s, rtol=1e-6)

    out = tmp_path / "res.jsonl"
    result = run(
        "search", str(d / "corpus.mindex"), str(d / "queries.npy"), "-k", "5", "--candidates", "40", "-o", str(out)
    )
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["query"] for r in rows] == list(range(20))
    assert [r["ids"] for r in rows] == want_i.tolist()
    np.testing.assert_allclose([r["scores"] for r in rows], want_s, atol=1e-6)


def test_search_with_all_candidates_is_exact_and_prints_jsonl_without_output(files):
    d, _ = files
    result = run("search", str(d / "corpus.mindex"), str(d / "queries.npy"), "-k", "3", "--candidates", "300")
    assert result.exit_code == 0, result.output
    got = [json.loads(line)["ids"] for line in result.stdout.splitlines()]
    x = np.load(d / "corpus.npy")
    _, want = brute_force(x, np.load(d / "queries.npy"), 3, np.arange(300) * 2 + 1)
    assert got == want.tolist()


def test_search_reads_fvecs_queries(files, tmp_path):
    d, _ = files
    write_fvecs(tmp_path / "q.fvecs", np.load(d / "queries.npy"))
    result = run("search", str(d / "corpus.mindex"), str(tmp_path / "q.fvecs"), "-k", "2")
    assert result.exit_code == 0, result.output
    assert len(result.stdout.splitlines()) == 20


def test_info_reports_device_memory_and_calibration(files):
    d, summary = files
    result = run("info", str(d / "corpus.mindex"))
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["device"] == "cpu" and info["count"] == 300
    assert info["candidates"]["default"] == summary["candidates"]
    assert info["candidates"]["calibrated_recall"] == summary["calibrated_recall@10"]
    assert info["memory"]["ram_bytes_per_vector"] < info["memory"]["exact_search_ram_bytes_per_vector"] + 64
    assert info["memory"]["full_vectors"].startswith("memory-mapped from")
    assert info["adaptor"]["kind"] == "matryoshka-adaptor"


def test_eval_reports_recall_speed_and_memory(files):
    d, _ = files
    result = run("eval", str(d / "corpus.mindex"), str(d / "queries.npy"), "-k", "5", "--candidates", "300")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["recall@5"] == 1.0  # every candidate reranked: exact
    assert report["queries"] == 20 and report["candidates"] == 300
    assert report["queries_per_second"] > 0 and report["exact_queries_per_second"] > 0
    assert report["memory"]["exact_search_ram_bytes_per_vector"] == 128


def test_build_variants_pca_hnsw_and_existing_index_replaced(files, tmp_path):
    d, _ = files
    out = tmp_path / "p.mindex"
    for _ in range(2):  # the second build replaces the first index
        result = run(
            "build", str(d / "corpus.npy"), "--coarse-dim", "8", "-o", str(out), "--pca", "--index", "hnsw", "-q"
        )
        assert result.exit_code == 0, result.output
    info = json.loads(run("info", str(out)).stdout)
    assert info["adaptor"]["kind"] == "pca" and info["backend"]["coarse_index"] == "hnsw"


def test_build_with_a_saved_adaptor(files, tmp_path):
    d, _ = files
    adaptor_dir = tmp_path / "adaptor"
    result = run("train", str(d / "corpus.npy"), "-o", str(adaptor_dir), "--epochs", "1", "--batch-size", "64", "-q")
    assert result.exit_code == 0, result.output
    out = tmp_path / "a.mindex"
    result = run(
        "build", str(d / "corpus.npy"), "--coarse-dim", "8", "-o", str(out), "--adaptor", str(adaptor_dir), "-q"
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert (summary["coarse_dim"], summary["adaptor"]) == (8, "matryoshka-adaptor")
    assert (out / "adaptor" / "adaptor.safetensors").is_file()


def _bad(tmp_path, files):
    d, _ = files
    np.save(tmp_path / "nan.npy", np.where(np.arange(32) == 0, np.nan, np.ones((4, 32), np.float32)))
    np.save(tmp_path / "q16.npy", np.ones((3, 16), np.float32))
    np.save(tmp_path / "ints.npy", np.ones((3, 32), np.int32))
    (tmp_path / "notindex").mkdir()
    (tmp_path / "notindex" / "precious.txt").write_text("keep me")
    c, idx, q = str(d / "corpus.npy"), str(d / "corpus.mindex"), str(d / "queries.npy")
    o = str(tmp_path / "o.mindex")
    return [
        (["build", str(tmp_path / "missing.npy"), "-o", o], "missing.npy: file not found"),
        (["build", str(tmp_path / "nan.npy"), "-o", o], "contains NaN or Inf"),
        (["build", str(tmp_path / "ints.npy"), "-o", o], "expected float16/float32/float64 values"),
        (["build", c, "-o", o], "coarse_dim: 64 exceeds the embedding dimension 32"),
        (["build", c, "--coarse-dim", "8", "-o", o, "--train", "--pca"], "choose at most one"),
        (["build", c, "--coarse-dim", "8", "-o", o, "--ids", q], "expected a 1-D array of integer ids"),
        (["build", c, "--coarse-dim", "8", "-o", o, "--target-recall", "2"], "target_recall: must be in (0.0, 1.0]"),
        (["build", c, "--coarse-dim", "8", "-o", str(tmp_path / "notindex")], "is not a matryoshka index; refusing"),
        (["build", c, "--coarse-dim", "8", "-o", o, "--adaptor", str(tmp_path)], "adaptor.json: not found"),
        (["search", idx, str(tmp_path / "q16.npy")], "has 16 dimensions but 32 are expected"),
        (["search", idx, q, "-k", "0"], "k: must be >= 1, got 0"),
        (["search", idx, q, "-k", "10", "--candidates", "3"], "candidates: must be >= k"),
        (["search", idx, q, "-o", str(tmp_path / "r.txt")], "unknown result file type '.txt'"),
        (["search", str(tmp_path / "notindex"), q], "manifest.json: not found"),
        (["search", str(tmp_path / "nope.mindex"), q], "no index here"),
        (["info", c], "not an index directory"),
        (["eval", idx, str(tmp_path / "q16.npy")], "has 16 dimensions but 32 are expected"),
    ]


def test_bad_input_gives_one_line_and_exit_code_2(files, tmp_path):
    for args, message in _bad(tmp_path, files):
        result = run(*args)
        assert result.exit_code == 2, (args, result.output)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: "), (args, result.stderr)
        assert message in lines[0], (args, lines[0])
        assert "Traceback" not in result.output
    assert (tmp_path / "notindex" / "precious.txt").read_text() == "keep me"
    assert not (tmp_path / "o.mindex").exists()


def test_corrupt_index_is_reported_in_one_line(files, tmp_path):
    d, _ = files
    bad = tmp_path / "bad.mindex"
    result = run("build", str(d / "corpus.npy"), "--coarse-dim", "8", "-o", str(bad), "-q")
    assert result.exit_code == 0, result.output
    (bad / "full.npy").write_bytes(b"\x93NUMPY broken")
    result = run("info", str(bad))
    assert result.exit_code == 2
    assert (
        result.stderr.strip()
        == f"Error: {bad / 'full.npy'}: checksum does not match the manifest; the file is corrupt or replaced"
    )


@pytest.mark.parametrize("backend", ["qdrant", "qdrant-edge"])
def test_build_backend_flag_gives_the_same_results_as_faiss(files, tmp_path, backend):
    if backend == "qdrant-edge":
        pytest.importorskip(
            "qdrant_edge", reason='qdrant-edge-py is not installed (pip install "matryoshka-index[edge]")'
        )
    d, _ = files
    out = tmp_path / f"{backend}.mindex"
    result = run("build", str(d / "corpus.npy"), "--coarse-dim", "8", "-o", str(out), "--backend", backend, "-q")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    # Qdrant builds default to an HNSW coarse index (FAISS to flat); "qdrant" without --url is the
    # embedded engine (qdrant-edge) when the edge extra is installed, else qdrant-client's local mode
    try:
        import qdrant_edge  # noqa: F401

        used = "qdrant-edge"
    except ImportError:
        used = backend
    assert (summary["backend"], summary["coarse_index"]) == (used, "hnsw")
    x, q = np.load(d / "corpus.npy"), np.load(d / "queries.npy")
    result = run("search", str(out), str(d / "queries.npy"), "-k", "5", "--candidates", "300")
    assert result.exit_code == 0, result.output
    got = [json.loads(line)["ids"] for line in result.stdout.splitlines()]
    _, want = brute_force(x, q, 5)
    np.testing.assert_array_equal(np.array(got), want)
    info = json.loads(run("info", str(out)).stdout)
    assert info["backend"]["backend"] == used
    # disk use counts allocated blocks: qdrant-edge's preallocated sparse segment files must not
    # inflate it (they once made a 300-row index look like 50 KB per vector)
    assert 0 < info["memory"]["disk_bytes_per_vector"] < 20_000


def test_qdrant_only_flags_are_refused_with_faiss(files, tmp_path):
    d, _ = files
    result = run("build", str(d / "corpus.npy"), "--coarse-dim", "8", "-o", str(tmp_path / "x"), "--url", "http://h")
    assert result.exit_code == 2
    assert result.stderr.strip() == "Error: --url: only with --backend qdrant (got --backend faiss)"
    assert not (tmp_path / "x").exists()


def test_calibrate_on_queries_rewrites_the_index_in_place(files, tmp_path):
    import shutil

    d, _ = files
    target = tmp_path / "copy.mindex"
    shutil.copytree(d / "corpus.mindex", target)
    # queries unlike the corpus rows: a fixed distortion of them, as short questions are of documents;
    # 300 of them, as a bound on recall 0.999 needs at least 265 queries (issue 15)
    rng = np.random.default_rng(0)
    q = np.load(d / "corpus.npy") + 0.6 * rng.standard_normal((300, 32)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    np.save(tmp_path / "q.npy", q)
    result = run("calibrate", str(target), str(tmp_path / "q.npy"), "--target-recall", "0.999", "-q")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    reloaded = MatryoshkaIndex.load(target)  # checksums verified: the rewrite is a whole, valid index
    assert reloaded.candidates == summary["candidates"]
    assert reloaded.calibration["query_source"] == "caller's queries"
    assert reloaded.calibration["target_recall"] == 0.999 and reloaded.calibration["queries"] == 300
    # the default candidates now reach the target on those queries
    _, want = brute_force(np.load(d / "corpus.npy"), q, 10)
    _, got = reloaded.search(q, k=10)
    want_ids = want * 2 + 1  # the index was built with ids 2 * row + 1
    recall = np.mean([len(set(g) & set(w)) / 10 for g, w in zip(got, want_ids, strict=True)])
    assert summary["reached"] and recall >= 0.999
    # a wrong-dimension query file is one line, exit code 2, and the index is untouched
    np.save(tmp_path / "bad.npy", q[:, :16])
    before = (target / "manifest.json").read_bytes()
    bad = run("calibrate", str(target), str(tmp_path / "bad.npy"))
    assert bad.exit_code == 2 and "Traceback" not in bad.output
    assert (target / "manifest.json").read_bytes() == before
