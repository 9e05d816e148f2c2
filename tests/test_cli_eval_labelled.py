"""``mindex eval`` on a labelled set: the tables, the advisor, the report and the plot from one command."""

from __future__ import annotations

import json

import numpy as np
from click.testing import CliRunner

from matryoshka_index.cli import main
from matryoshka_index.datasets import low_rank_corpus


def write_set(root, n=600, d=16, nq=60, seed=0):
    rng = np.random.default_rng(seed)
    (root / "qrels").mkdir(parents=True)
    c = low_rank_corpus(n, d, rank=6, seed=seed)
    q = c[:nq] + 0.05 * rng.standard_normal((nq, d)).astype(np.float32)
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


def test_eval_labelled_dir_writes_report_plot_and_advice(tmp_path):
    write_set(tmp_path / "set")
    args = [
        "eval", "--labelled", str(tmp_path / "set"), "--dims", "4,8", "--candidates", "10,40,600",
        "--advise", "ndcg-loss=5%", "--advise", "recall=0.9",
        "--report", str(tmp_path / "r.md"), "--plot", str(tmp_path / "r.png"), "--json", str(tmp_path / "r.json"), "-q",
    ]  # fmt: skip
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    md = (tmp_path / "r.md").read_text()
    for method in ("truncation", "PCA", "unsupervised", "supervised"):
        assert method in md
    assert "nDCG@10" in md and "recall@100" in md and "MRR@10" in md
    assert (tmp_path / "r.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    data = json.loads((tmp_path / "r.json").read_text())
    assert data  # every number, machine-readable
    assert "nDCG@10 loss <= 5.0%" in result.output and "recall@10" in result.output


def test_eval_labelled_files_and_errors(tmp_path):
    write_set(tmp_path / "set")
    s = tmp_path / "set"
    base = [
        "eval",
        "--corpus",
        str(s / "corpus.npy"),
        "--queries",
        str(s / "queries.npy"),
        "--ids",
        str(s / "ids.json"),
    ]
    ok = CliRunner().invoke(
        main, [*base, "--qrels", str(s / "qrels/test.tsv"), "--dims", "8", "--no-ann", "--no-two-stage", "-q"]
    )
    assert ok.exit_code == 0, ok.output
    assert (
        "supervised" not in ok.output.split("nDCG@10")[1].split("recall@100")[0]
    )  # no --train-qrels: no supervised row

    def error(*extra):
        result = CliRunner().invoke(main, [*base, *extra])
        assert result.exit_code == 2, result.output
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert len(lines) == 1 and "Traceback" not in result.output, result.output
        return lines[0]

    assert "--qrels" in error()
    assert "advise" in error("--qrels", str(s / "qrels/test.tsv"), "--advise", "speed=fast")
    (s / "bad.tsv").write_text("query-id\tcorpus-id\tscore\nq0\tnope\t1\n")
    assert "nope" in error("--qrels", str(s / "bad.tsv"))
    mixed = CliRunner().invoke(main, ["eval", "idx", "q.npy", "--labelled", str(s)])
    assert mixed.exit_code == 2 and "not both" in mixed.output
