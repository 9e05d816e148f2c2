"""The command line under faults (issue 15): full and read-only disks, SIGTERM, kill -9, symlinks, odd input.

Each test failed before its fix: a full disk killed ``mindex`` with SIGBUS, a read-only output was
found after the work (an OSError traceback), SIGTERM left a half-written directory and no message,
temporaries of killed runs piled up with no ``mindex gc``, ``-o`` a symlink replaced the link, an
empty ``ids.npy`` printed only ``Aborted!``, queries scaled by 1e30 scored all zero, and a long
build printed nothing when not on a terminal.
"""

from __future__ import annotations

import errno
import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import make_corpus
from faultfs import leftovers, mindex, one_error_line, remount_read_only, small_fs

from matryoshka_index import MatryoshkaIndex
from matryoshka_index.cli import main

TMPDIR_ENV = "MINDEX_TMPDIR"


def run(*args: str):
    return CliRunner().invoke(main, list(args))


@pytest.fixture(autouse=True)
def _private_tmpdir(tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.setenv(TMPDIR_ENV, str(work))  # never sweep (or fill) the shared /tmp


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("defects")
    x = make_corpus(420, seed=5)
    np.save(d / "corpus.npy", x[:400])
    np.save(d / "queries.npy", x[400:])
    np.save(d / "corpus2.npy", make_corpus(300, seed=6))
    return d


def _build(data: Path, out: Path, corpus: str = "corpus.npy", *extra: str) -> dict:
    r = run("build", str(data / corpus), "--coarse-dim", "8", "-o", str(out), "-q", *extra)
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


# ---------------------------------------------------------------------- 1. disk full
def test_build_on_a_full_disk_is_one_line_before_the_work(data, tmp_path):
    big = tmp_path / "big.npy"
    np.save(big, make_corpus(8000, 128, seed=1))  # 4 MB of vectors for a 3 MB disk
    with small_fs(tmp_path / "small", "3m") as fs:
        r = mindex("build", str(big), "--coarse-dim", "8", "-o", str(fs / "idx"), env={TMPDIR_ENV: ""})
        assert r.returncode == 2, (r.returncode, r.stderr[-2000:])  # before: -7, SIGBUS, no message
        line = one_error_line(r.stderr)
        assert "needs about" in line and str(fs) in line and "free" in line
        assert list(fs.iterdir()) == []


def test_synthetic_on_a_full_disk_is_one_line_and_leaves_nothing(tmp_path):
    with small_fs(tmp_path / "small", "3m") as fs:
        r = mindex("synthetic", str(fs / "c.npy"), "-n", "5000", "-d", "384")
        assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
        assert "needs about" in one_error_line(r.stderr)
        assert list(fs.iterdir()) == []


def test_a_disk_error_during_the_work_is_one_line(data, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise OSError(errno.EIO, "Input/output error", str(tmp_path / "x"))

    monkeypatch.setattr(MatryoshkaIndex, "build", classmethod(broken))
    r = run("build", str(data / "corpus.npy"), "--coarse-dim", "8", "-o", str(tmp_path / "idx"))
    assert r.exit_code == 2 and "Input/output error" in one_error_line(r.stderr)

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "idx"))

    monkeypatch.setattr(MatryoshkaIndex, "build", classmethod(full))
    r = run("build", str(data / "corpus.npy"), "--coarse-dim", "8", "-o", str(tmp_path / "idx"))
    assert r.exit_code == 2 and "no space left on the device" in one_error_line(r.stderr)


# ---------------------------------------------------------------------- 4. read-only outputs, before the work
@pytest.fixture
def read_only(tmp_path, data):
    """A read-only directory holding an index (built before it was made read-only)."""
    if os.geteuid() != 0:
        d = tmp_path / "ro"
        d.mkdir()
        _build(data, d / "idx")
        d.chmod(0o555)
        yield d
        d.chmod(0o755)
        return
    with small_fs(tmp_path / "ro", "8m") as fs:
        _build(data, fs / "idx")
        remount_read_only(fs)
        yield fs


def _no_work(*args, **kwargs):
    raise AssertionError("the work started before the output was checked")


@pytest.mark.parametrize("command", ["build", "train", "calibrate", "search", "synthetic"])
def test_a_read_only_output_fails_before_any_work(command, data, read_only, monkeypatch):
    from matryoshka_index import MatryoshkaAdaptor
    from matryoshka_index.cli import data_commands

    monkeypatch.setattr(MatryoshkaIndex, "build", classmethod(_no_work))
    monkeypatch.setattr(MatryoshkaIndex, "calibrate", _no_work)
    monkeypatch.setattr(MatryoshkaIndex, "search", _no_work)
    monkeypatch.setattr(MatryoshkaAdaptor, "fit", _no_work)
    monkeypatch.setattr(data_commands, "write_low_rank_corpus", _no_work)
    corpus, queries = str(data / "corpus.npy"), str(data / "queries.npy")
    args = {
        "build": ["build", corpus, "--coarse-dim", "8", "-o", str(read_only / "new.mindex"), "--train"],
        "train": ["train", corpus, "-o", str(read_only / "adaptor")],
        "calibrate": ["calibrate", str(read_only / "idx"), queries],
        "search": ["search", str(read_only / "idx"), queries, "-o", str(read_only / "res.jsonl")],
        "synthetic": ["synthetic", str(read_only / "c.npy"), "-n", "100"],
    }[command]
    r = run(*args)
    assert r.exit_code == 2, (r.exit_code, r.output, r.exception)
    line = one_error_line(r.stderr)
    assert "read-only" in line or "permission denied" in line


# ---------------------------------------------------------------------- 2. SIGTERM, kill -9, mindex gc
_SIGNAL_DURING_SAVE = """
import os, signal
import matryoshka_index.manifest as I  # file_table hashes every file of a save
real = I.sha256_file
def hashed(p):
    os.kill(os.getpid(), signal.{sig})
    return real(p)
I.sha256_file = hashed
"""


def _signal_during_save(data: Path, out: Path, sig: str) -> object:
    return mindex(
        "build", str(data / "corpus2.npy"), "--coarse-dim", "8", "-o", str(out), pre=_SIGNAL_DURING_SAVE.format(sig=sig)
    )


def test_sigterm_during_a_save_is_one_line_exit_143_and_leaves_the_old_index(data, tmp_path):
    out = tmp_path / "idx"
    before = _build(data, out)
    r = _signal_during_save(data, out, "SIGTERM")
    assert r.returncode == 143, (r.returncode, r.stderr[-2000:])  # before: -15, no message
    assert r.stderr.strip().splitlines() == ["Terminated; nothing was left half-written."]
    assert len(MatryoshkaIndex.load(out)) == before["count"] == 400
    assert leftovers(tmp_path) == []
    assert os.listdir(tmp_path / "work") == []


def test_ctrl_c_during_a_save_is_one_line_exit_130(data, tmp_path):
    out = tmp_path / "idx"
    _build(data, out)
    r = _signal_during_save(data, out, "SIGINT")
    assert r.returncode == 130, (r.returncode, r.stderr[-2000:])
    assert r.stderr.strip().splitlines() == ["Interrupted; nothing was left half-written."]
    assert len(MatryoshkaIndex.load(out)) == 400 and leftovers(tmp_path) == []


_KILL_DURING_SAVE = """
import os
import matryoshka_index.manifest as I  # file_table hashes every file of a save
I.sha256_file = lambda p: os._exit(9)
"""


def test_a_killed_builds_temporaries_are_swept_by_the_next_build_and_by_gc(data, tmp_path):
    out = tmp_path / "idx"
    _build(data, out)
    work = tmp_path / "work"
    for _ in range(2):
        r = mindex("build", str(data / "corpus2.npy"), "--coarse-dim", "8", "-o", str(out), pre=_KILL_DURING_SAVE)
        assert r.returncode == 9, r.stderr[-2000:]
    # The second killed build already swept the first one's temporaries: one of each is left.
    assert len([n for n in leftovers(tmp_path) if n.startswith(".idx.")]) == 1
    assert len(os.listdir(work)) == 1  # the killed build's spill directory ($MINDEX_TMPDIR)
    _build(data, out, "corpus2.npy")  # the next build of that output sweeps them
    assert leftovers(tmp_path) == [] and os.listdir(work) == []
    assert len(MatryoshkaIndex.load(out)) == 300

    r = mindex("build", str(data / "corpus.npy"), "--coarse-dim", "8", "-o", str(out), pre=_KILL_DURING_SAVE)
    assert r.returncode == 9
    r = run("gc", "--dry-run", str(tmp_path))
    assert r.exit_code == 0 and "would remove" in r.stdout and leftovers(tmp_path)
    r = run("gc", str(out))  # an index: the temporaries of that output, and the work directories
    assert r.exit_code == 0, r.output
    assert "removed" in r.stdout and "stale temporar" in r.stdout.splitlines()[-1]
    assert leftovers(tmp_path) == [] and os.listdir(work) == []
    assert "nothing to remove" in run("gc", str(tmp_path)).stdout


# ---------------------------------------------------------------------- 3. a kill between the two renames
_KILL_BETWEEN_RENAMES = """
import os
from matryoshka_index import storage
storage.atomic._exchange = lambda a, b: False
storage.atomic._between_renames = lambda: os._exit(9)
"""


def test_a_build_killed_between_the_renames_leaves_an_index_the_next_command_opens(data, tmp_path):
    out = tmp_path / "idx"
    _build(data, out)
    r = mindex("build", str(data / "corpus2.npy"), "--coarse-dim", "8", "-o", str(out), pre=_KILL_BETWEEN_RENAMES)
    assert r.returncode == 9, r.stderr[-2000:]
    assert not out.exists()
    info = run("info", str(out))  # before: "no index here (not found)"
    assert info.exit_code == 0, info.output
    assert json.loads(info.stdout)["count"] == 400
    run("gc", str(tmp_path))
    assert leftovers(tmp_path) == []


# ---------------------------------------------------------------------- 5. symlinks
def test_output_a_symlink_to_an_index_rewrites_the_index_it_points_to(data, tmp_path):
    real = tmp_path / "real.mindex"
    _build(data, real)
    link = tmp_path / "current.mindex"
    link.symlink_to(real.name)
    _build(data, link, "corpus2.npy")
    assert link.is_symlink() and len(MatryoshkaIndex.load(real)) == 300


def test_output_a_dangling_symlink_is_one_line(data, tmp_path):
    (tmp_path / "link").symlink_to(tmp_path / "gone" / "idx")
    r = run("build", str(data / "corpus.npy"), "--coarse-dim", "8", "-o", str(tmp_path / "link"))
    assert r.exit_code == 2 and "does not exist" in one_error_line(r.stderr)
    r = run("train", str(data / "corpus.npy"), "-o", str(tmp_path / "link"))
    assert r.exit_code == 2 and "does not exist" in one_error_line(r.stderr)


# ---------------------------------------------------------------------- 11. smaller ones
def test_an_empty_ids_file_under_no_verify_is_one_line_not_aborted(data, tmp_path):
    out = tmp_path / "idx"
    _build(data, out)
    (out / "ids.npy").write_bytes(b"")
    r = run("search", str(out), str(data / "queries.npy"), "--no-verify")
    assert r.exit_code == 2, r.output
    assert "Aborted" not in r.output and "empty or truncated" in one_error_line(r.stderr)


def test_queries_scaled_by_1e30_give_the_same_results(data, tmp_path):
    out = tmp_path / "idx"
    _build(data, out)
    np.save(tmp_path / "huge.npy", np.load(data / "queries.npy") * np.float32(1e30))
    a = run("search", str(out), str(data / "queries.npy"), "-k", "5")
    b = run("search", str(out), str(tmp_path / "huge.npy"), "-k", "5")
    assert a.exit_code == b.exit_code == 0 and "overflow" not in b.stderr
    rows_a = [json.loads(line) for line in a.stdout.splitlines()]
    rows_b = [json.loads(line) for line in b.stdout.splitlines()]
    assert [r["ids"] for r in rows_a] == [r["ids"] for r in rows_b]
    np.testing.assert_allclose([r["scores"] for r in rows_b], [r["scores"] for r in rows_a], atol=1e-5)


def test_build_prints_a_line_per_stage_when_not_on_a_terminal_and_none_with_quiet(data, tmp_path, monkeypatch):
    from matryoshka_index import progress

    monkeypatch.setattr(progress, "_MIN_S", 0.0)  # the tiny stages here take less than the usual second
    monkeypatch.delenv("MINDEX_QUIET", raising=False)
    args = ["build", str(data / "corpus.npy"), "--coarse-dim", "8", "--train", "-o"]
    r = run(*args, str(tmp_path / "a"))
    assert r.exit_code == 0, r.output
    lines = r.stderr.splitlines()
    assert any(line.startswith("mindex: training adaptor done: ") and " in " in line for line in lines), lines
    assert any(line.startswith("mindex: saving ") for line in lines), lines
    r = run(*args, str(tmp_path / "b"), "--quiet")
    assert r.exit_code == 0 and r.stderr == ""


def test_stage_lines_estimate_the_time_left(monkeypatch, capsys):
    from matryoshka_index import progress

    clock = iter([0.0, 61.0, 90.0])  # start, the update, the close
    monkeypatch.setattr(progress.time, "monotonic", lambda: next(clock))
    monkeypatch.delenv("MINDEX_QUIET", raising=False)
    with progress.stage_lines():
        bar = progress.progress(total=10, desc="training adaptor", unit="step")
        bar.update(5)  # at 61 s: half done
        bar.close()
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "mindex: training adaptor 50% (5/10 step), 1 min 01 s elapsed, about 1 min 01 s left"
    assert err[1] == "mindex: training adaptor done: 5 step in 1 min 30 s"


_INTERRUPT_AT_IMPORT = """
import importlib.abc, os, signal, sys
class Trip(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == {module!r}:
            os.kill(os.getpid(), signal.SIGINT)
        return None
sys.meta_path.insert(0, Trip())
"""


def test_ctrl_c_while_the_command_line_starts_is_one_line():
    r = mindex("--version", pre=_INTERRUPT_AT_IMPORT.format(module="matryoshka_index.cli.main"))
    assert r.returncode == 130, (r.returncode, r.stderr[-3000:])
    assert r.stderr.strip().splitlines() == ["Interrupted while starting; nothing was written."]


def test_ctrl_c_while_heavy_modules_are_imported_is_one_line():
    # torch is no longer imported at start-up (the adaptor is torch-lazy); click is, after the handler
    for module in ("click",):
        r = mindex("--version", pre=_INTERRUPT_AT_IMPORT.format(module=module))
        assert r.returncode == 130, (module, r.returncode, r.stderr[-3000:])
        assert r.stderr.strip().splitlines() == ["Interrupted while starting; nothing was written."]


def test_gc_on_a_clean_directory_says_so(tmp_path):
    r = run("gc", str(tmp_path))
    assert r.exit_code == 0 and "nothing to remove" in r.stdout


def test_sigterm_handler_is_restored_after_a_command():
    before = signal.getsignal(signal.SIGTERM)
    run("gc", ".")
    assert signal.getsignal(signal.SIGTERM) is before
