"""Small CLI leftovers of issues 19/23: each a one-line answer where there was noise or silence."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
from click.testing import CliRunner
from conftest import make_corpus

from matryoshka_index.cli import main
from matryoshka_index.quality.labels import METHODS


def test_eval_methods_help_lists_every_labelled_method():
    result = CliRunner().invoke(main, ["eval", "--help"], terminal_width=400)
    assert result.exit_code == 0
    line = next(text for text in result.output.splitlines() if "--methods" in text)
    assert all(m in line for m in METHODS), line  # adaptor_queries was missing


def test_a_warning_during_a_command_is_one_line_naming_its_category(tmp_path):
    """A real process (pytest would record the warning instead of showing it): the local-mode warning of
    --backend qdrant without a server printed with contextlib's file and source line, three lines."""
    np.save(tmp_path / "c.npy", make_corpus(300, seed=2))
    args = ["build", str(tmp_path / "c.npy"), "--coarse-dim", "8", "-o", str(tmp_path / "ix"), "-q"]
    args += ["--backend", "qdrant", "--option", "shard_number=2"]  # an option qdrant-edge lacks: local mode
    script = "import sys; from matryoshka_index.cli import main; main(sys.argv[1:])"
    result = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("UserWarning: backend='qdrant' without a server"), lines


def test_balance_itq_with_float_prefixes_is_refused_in_one_line(tmp_path):
    np.save(tmp_path / "c.npy", make_corpus(200, seed=3))
    base = ["build", str(tmp_path / "c.npy"), "--coarse-dim", "8", "-o", str(tmp_path / "ix"), "-q"]
    for extra in (["--balance", "itq"], ["--code", "float", "--option", "balance=itq"]):
        result = CliRunner().invoke(main, [*base, *extra])
        assert result.exit_code == 2, result.output
        assert result.stderr.strip().splitlines() == [
            "Error: --balance itq: rotates the prefix to spread the bits of a code (binary, rabitq, pq4, sq8/sq4); "
            "float prefixes rank the same without it; give --code too, or drop --balance"
        ]
        assert not (tmp_path / "ix").exists()
    ok = CliRunner().invoke(main, [*base, "--code", "binary", "--balance", "itq"])  # a code: accepted as before
    assert ok.exit_code == 0, ok.output
