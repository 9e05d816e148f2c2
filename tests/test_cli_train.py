"""``mindex train`` end to end, and its one-line errors."""

from __future__ import annotations

import json

import numpy as np
from click.testing import CliRunner

from matryoshka_index import MatryoshkaAdaptor
from matryoshka_index.cli import main


def make(tmp_path, name, arr):
    path = tmp_path / name
    np.save(path, arr)
    return str(path)


def corpus(n=600, d=32, seed=0):
    x = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_help_reads_well():
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    for command in ("train", "build", "search", "info", "eval", "migrate"):
        assert command in result.output
    assert "train" in CliRunner().invoke(main, ["train", "--help"]).output


def test_train_writes_a_loadable_adaptor(tmp_path):
    x = corpus()
    path = make(tmp_path, "c.npy", x)
    out = tmp_path / "adaptor"
    result = CliRunner().invoke(
        main, ["train", path, "-o", str(out), "--epochs", "1", "--batch-size", "128", "--dims", "8,16", "-q"]
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output.strip().splitlines()[-1])
    assert summary["matryoshka_dims"] == [8, 16] and summary["supervised"] is False
    adaptor = MatryoshkaAdaptor.load(out)
    assert adaptor.transform(x[:3]).shape == (3, 32)


def test_train_supervised(tmp_path):
    x = corpus()
    q = make(tmp_path, "q.npy", x[:200] + 0.01)
    p = make(tmp_path, "p.npy", x[:200])
    out = tmp_path / "a"
    args = ["train", make(tmp_path, "c.npy", x), "-o", str(out), "--queries", q, "--positives", p]
    extra = ["--ranking-weight", "5", "--hard-negatives", "2"]
    result = CliRunner().invoke(main, [*args, "--epochs", "1", "--batch-size", "128", *extra, "-q"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output.strip().splitlines()[-1])["supervised"] is True
    params = json.loads((out / "adaptor.json").read_text())["params"]
    assert (params["ranking_weight"], params["hard_negatives"]) == (5.0, 2)


def test_train_with_unlabelled_queries(tmp_path):
    x = corpus()
    q = make(tmp_path, "q.npy", x[:200] + 0.3)  # queries at an offset from the documents, no labels
    out = tmp_path / "a"
    args = ["train", make(tmp_path, "c.npy", x), "-o", str(out), "--queries", q, "--epochs", "1", "--batch-size", "128"]
    result = CliRunner().invoke(main, [*args, "-q"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output.strip().splitlines()[-1])
    assert summary["supervised"] is False and summary["query_head"] is True
    assert 0 < summary["unlabelled_queries"] < 200  # a share is held out for validation and the guard
    assert MatryoshkaAdaptor.load(out).has_query_head_
    result = CliRunner().invoke(main, [*args, "--no-query-head", "-q"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output.strip().splitlines()[-1])["query_head"] is False


def test_train_positives_without_queries_one_line(tmp_path):
    p = make(tmp_path, "p.npy", corpus(50))
    result = CliRunner().invoke(
        main, ["train", make(tmp_path, "c.npy", corpus()), "-o", str(tmp_path / "a"), "--positives", p]
    )
    assert result.exit_code == 2 and "--positives needs --queries" in result.output
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1, result.output  # one line, not click's usage block


def test_train_no_query_head_without_queries_one_line(tmp_path):
    result = CliRunner().invoke(
        main, ["train", make(tmp_path, "c.npy", corpus()), "-o", str(tmp_path / "a"), "--no-query-head"]
    )
    assert result.exit_code == 2 and "--no-query-head: only with --queries" in result.output
    assert len(result.output.strip().splitlines()) == 1, result.output


def run_error(tmp_path, arr, *extra):
    path = make(tmp_path, "bad.npy", arr)
    result = CliRunner().invoke(main, ["train", path, "-o", str(tmp_path / "a"), "--batch-size", "128", *extra])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "a").exists()
    return lines[0]


def test_train_bad_inputs_one_line_exit_2(tmp_path):
    assert "expected a 2-D array" in run_error(tmp_path, np.ones(10, dtype=np.float32))
    assert "expected float16/float32/float64" in run_error(tmp_path, np.ones((300, 4), dtype=np.int32))
    x = corpus()
    x[3, 0] = np.nan
    assert "row 3 contains NaN or Inf" in run_error(tmp_path, x)
    x = corpus()
    x[4] = 0
    assert "row 4 is an all-zero vector" in run_error(tmp_path, x)
    assert "fewer than batch_size=128" in run_error(tmp_path, corpus(100))
    q = make(tmp_path, "q.npy", corpus(50, 16))
    p = make(tmp_path, "p.npy", corpus(50, 16))
    assert "has 16 dimensions but 32" in run_error(tmp_path, corpus(), "--queries", q, "--positives", p)


def test_train_missing_or_foreign_file(tmp_path):
    result = CliRunner().invoke(main, ["train", str(tmp_path / "nope.npy"), "-o", str(tmp_path / "a")])
    assert result.exit_code == 2 and "file not found" in result.output
    bad = tmp_path / "x.npy"
    bad.write_bytes(b"this is not numpy")
    result = CliRunner().invoke(main, ["train", str(bad), "-o", str(tmp_path / "a")])
    assert result.exit_code == 2 and "cannot be read as .npy" in result.output and "Traceback" not in result.output
    txt = tmp_path / "x.csv"
    txt.write_text("1,2")
    result = CliRunner().invoke(main, ["train", str(txt), "-o", str(tmp_path / "a")])
    assert result.exit_code == 2 and "use .npy or .fvecs" in result.output


def test_written_files_respect_the_umask(tmp_path):
    import os
    import stat

    from matryoshka_index.storage import atomic_directory, atomic_write_bytes

    old = os.umask(0o022)
    try:
        atomic_write_bytes(tmp_path / "f.txt", b"x")
        with atomic_directory(tmp_path / "d") as d:
            (d / "inner").write_text("y")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "f.txt").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == 0o755
