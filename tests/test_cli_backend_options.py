"""``mindex build``'s backend options: the named flags and --option KEY=VALUE reach the built index; bad ones
are one line and exit 2 (issue 19, item 9)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import make_corpus

from matryoshka_index.cli import main
from matryoshka_index.cli._common import parse_value


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("opts") / "x.npy"
    np.save(path, make_corpus(1500, 64, seed=7))
    return path


def build(corpus, out, *flags: str):
    args = ["build", str(corpus), "--coarse-dim", "32", "-o", str(out), "--pca", "-q", *flags]
    return CliRunner().invoke(main, args)


def backend_section(out) -> dict:
    return json.loads((out / "manifest.json").read_text())["backend"]


@pytest.mark.parametrize(
    ("flags", "want"),
    [
        (["--code", "pq4", "--pq-m", "8", "--balance", "itq"], {"code": "pq4", "pq_m": 8, "balance": "itq"}),
        (["--code", "rabitq", "--rabitq-bits", "4"], {"code": "rabitq", "rabitq_bits": 4}),
        (
            ["--index", "ivf", "--nlist", "8", "--nprobe", "3", "--candidates", "100"],
            {"index": "ivf", "nlist": 8, "nprobe": 3},
        ),
        (
            ["--index", "hnsw", "--hnsw-m", "12", "--ef-construction", "40", "--ef-search", "64"],
            {"index": "hnsw", "hnsw_m": 12, "ef_construction": 40, "ef_search": 64},
        ),
        (  # the generic form, values parsed as int / str
            ["--index", "hnsw", "--option", "hnsw_m=12", "--option", "ef_search=64", "--option", "ef_construction=40"],
            {"index": "hnsw", "hnsw_m": 12, "ef_construction": 40, "ef_search": 64},
        ),
        (["--code", "binary", "--option", "balance=itq"], {"code": "binary", "balance": "itq"}),
    ],
)
def test_each_flag_reaches_the_built_index(corpus, tmp_path, flags, want):
    out = tmp_path / "i.mindex"
    result = build(corpus, out, *flags)
    assert result.exit_code == 0, result.output
    section = backend_section(out)
    got = {k: section["params"].get(k, section.get(k)) for k in want}
    assert got == want
    if "--candidates" in flags:
        assert json.loads(result.output.strip().splitlines()[-1])["candidates"] == 100


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--option", "pq_mm=8"], "--option pq_mm: not an option of --backend faiss; valid: hnsw_m, "),
        (["--option", "pq_m"], "--option 'pq_m': expected KEY=VALUE"),
        (["--option", "code=pq4"], "--option code: set by --code, not by --option"),
        (["--pq-m", "8", "--option", "pq_m=16"], "--option pq_m: also given as --pq-m; give it once"),
        (["--option", "nlist=8", "--option", "nlist=9"], "--option: nlist is given twice"),
        (["--code", "pq4", "--pq-m", "abc"], "pq_m: must be a positive integer or None, got 'abc'"),
        (["--code", "pq4", "--pq-m", "5"], "pq_m: must divide coarse_dim 32, got 5"),
        (["--balance", "pca"], "balance: unknown balance 'pca'"),
        (["--rabitq-bits", "12", "--code", "rabitq"], "rabitq_bits: must be an integer from 1 to 9"),
        (["--ram-budget", "16", "--pq-m", "8"], "--ram-budget picks pq_m itself: drop --pq-m"),
        # --ef-search is an option of every backend since issue 20 (one name per setting): a FAISS-only flag instead
        (["--backend", "qdrant", "--pq-m", "8"], "--pq-m: --backend qdrant has no pq_m option"),
        (["--hnsw-m", "8"], "--hnsw-m: an option of --index hnsw; this build's --index is flat"),
        (["--index", "hnsw", "--nlist", "8"], "--nlist: an option of --index ivf; this build's --index is hnsw"),
        (["--index", "ivf", "--nprobe", "2"], "--nprobe: the build calibrates nprobe together with the candidates"),
        (["--rerank", "none", "--candidates", "20"], "--candidates: a prefix-only index (--rerank none) has no rerank"),
        (["--backend", "qdrant", "--option", "rescore=maybe"], "--option rescore: takes true or false, got 'maybe'"),
        (["--backend", "qdrant", "--option", "on_disk=2"], "--option on_disk: takes true or false, got 2"),
    ],
)
def test_a_bad_key_or_value_is_one_line_and_exit_2(corpus, tmp_path, flags, message):
    out = tmp_path / "bad.mindex"
    result = build(corpus, out, *flags)
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1, (flags, result.stderr)
    assert lines[0].startswith("Error: ") and message in lines[0], lines[0]
    assert not out.exists()


def test_values_are_read_as_the_api_takes_them():
    assert [parse_value(v) for v in ("16", "-3", "0.5", "1e-3", "TRUE", "false", "itq", "")] == [
        16,
        -3,
        0.5,
        1e-3,
        True,
        False,
        "itq",
        "",
    ]
    assert type(parse_value("16")) is int and type(parse_value("16.0")) is float
    assert [parse_value(v) for v in ("off", "No", "ON", "yes")] == [False, False, True, True]


def test_a_bool_option_written_as_off_is_false(corpus, tmp_path):
    out = tmp_path / "q.mindex"
    result = build(corpus, out, "--backend", "qdrant", "--option", "rescore=off")
    assert result.exit_code == 0, result.output
    assert json.loads((out / "manifest.json").read_text())["backend"]["rescore"] is False
