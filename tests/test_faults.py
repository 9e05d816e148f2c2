"""The fast subset of ``benchmarks/faults.py``: a few kill -9s per operation, hostile files and disks.

Each kill lands at a seeded random moment of the operation (asserted: the process was alive and had
not finished the operation when killed; a draw that came too late is drawn again); after it, what is on disk must load with
its checksums and answer as the previous state or the finished one, and the next run (``--resume``,
``--rollback`` again, or a rerun) must end identical to an uninterrupted run. The benchmark runs 50
kills per operation; here two (one for the slower migrations) keep the suite fast.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import _faults_lib as fl
from faultfs import remount_read_only, small_fs

from matryoshka_index.cli import main

KILLS = {"build": 2, "save": 2, "train": 1, "calibrate": 2, "migrate-copy": 1, "migrate-in-place": 1}
KILLS["migrate-rollback"] = 1
REDRAWS = 4  # a draw that came after the work ended is drawn again, below it (load makes runs uneven)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return fl.write_data(tmp_path_factory.mktemp("faults-data"), n=1000, dim=32)


@pytest.mark.parametrize("name", list(KILLS))
def test_kill_then_next_run(name, data, tmp_path):
    op = fl.OPERATIONS[name](name, tmp_path / name, data)
    if isinstance(op, fl._Migration):
        op.points = 120
    op.prepare()
    window = fl.measure(op, runs=1)  # START to DONE of one uninterrupted run, here and now
    _, outcomes = fl.kill_cycles(op, KILLS[name], seed=7, duration=window, redraws=REDRAWS)
    for o in outcomes:
        # the kill hit a live process in the middle of the operation (issue 19, item 3)
        assert o.killed and o.landed, (name, window, o.delay_s, o.missed_draws)
        assert o.intact, (name, o.delay_s, o.state)
        assert o.resumed_identical, (name, o.delay_s, o.resume_note)


_MARKED = "import sys, time\nprint('START', flush=True)\n{work}\nprint('DONE', flush=True)\ntime.sleep({tail})\n"


def test_a_kill_after_the_work_is_not_counted_as_landed(tmp_path):
    """The harness tells a kill that hit the operation from one that hit a process already past DONE
    (before, a kill during the interpreter's teardown, or after it, counted as a kill)."""
    during = fl.run_child(_MARKED.format(work="time.sleep(1.0)", tail=0), [], tmp_path, kill_after=0.2)
    assert during.returncode is None and during.landed
    after = fl.run_child(_MARKED.format(work="pass", tail=1.0), [], tmp_path, kill_after=0.2)
    assert after.returncode is None and not after.landed  # killed, but after the work
    exited = fl.run_child(_MARKED.format(work="pass", tail=0), [], tmp_path, kill_after=0.5)
    assert exited.returncode == 0 and not exited.landed
    # START and DONE in one write: reading START must not swallow the DONE behind it (a text pipe's
    # buffer did, and the late kill counted as landed)
    together = "import time\nprint('START\\nDONE', flush=True)\ntime.sleep(1.0)\n"
    both = fl.run_child(together, [], tmp_path, kill_after=0.2)
    assert both.returncode is None and not both.landed


def test_the_save_lasts_long_enough_for_kills_to_land(data, tmp_path):
    """The save child pauses at each fsync: its window is several fsync pauses, not the ~0.01 s of the
    save itself (before, kills were drawn over 0.4 s and most came after the save had finished)."""
    op = fl.OPERATIONS["save"]("save", tmp_path / "save", data)
    op.prepare()
    assert fl.measure(op, runs=1) > 3 * fl.SAVE_FSYNC_PAUSE_S


def _build(corpus: Path, out: Path) -> None:
    fl.cli(["build", str(corpus), "--coarse-dim", "8", "--pca", "-q", "-o", str(out)])


_KILLED_SAVE = """
import os, sys
from matryoshka_index import MatryoshkaIndex, storage
idx = MatryoshkaIndex.load(sys.argv[1])
{patch}
idx.save(sys.argv[1])
"""
# kill -9 while the new version is being written (its temporary exists beside the output) ...
_DIE_WHILE_WRITING = "storage.atomic._swap_in = lambda tmp, path: os._exit(9)"
# ... or between the two renames of a file system without RENAME_EXCHANGE (the name is absent)
_DIE_BETWEEN_RENAMES = (
    "storage.atomic._exchange = lambda a, b: False\nstorage.atomic._between_renames = lambda: os._exit(9)"
)


def _killed_save(out: Path, patch: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    r = subprocess.run(
        [sys.executable, "-c", _KILLED_SAVE.format(patch=patch), str(out)], env=env, capture_output=True, text=True
    )
    assert r.returncode == 9, r.stderr[-2000:]


def test_stale_temporary_of_a_killed_save_is_swept_by_the_next_run(data, tmp_path):
    out = tmp_path / "idx"
    _build(data["corpus_a"], out)
    _killed_save(out, _DIE_WHILE_WRITING)
    assert fl.leftovers(tmp_path, tmp_path / "none") != []  # the kill left its temporary
    _build(data["corpus_b"], out)
    assert fl.leftovers(tmp_path, tmp_path / "none") == []


def test_kill_between_the_two_renames_is_recovered(data, tmp_path):
    out = tmp_path / "idx"
    _build(data["corpus_a"], out)
    queries = fl.np.load(data["queries"])
    before = fl.index_fingerprint(out, queries)
    _killed_save(out, _DIE_BETWEEN_RENAMES)
    assert not out.exists()  # the first rename done, the second never happened
    assert fl.index_fingerprint(out, queries) == before  # the API's load puts the old version back
    _build(data["corpus_b"], out)  # the next successful save sweeps the killed one's temporary
    assert fl.leftovers(tmp_path, tmp_path / "none") == []


# ------------------------------------------------------------------------------- hostile files


@pytest.fixture(scope="module")
def saved(data, tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    _build(data["corpus_a"], root / "idx")
    fl.cli(
        [
            "train",
            str(data["corpus_a"]),
            "-o",
            str(root / "adaptor"),
            "--epochs",
            "1",
            "--max-samples",
            "300",
            "--batch-size",
            "128",
            "-q",
        ]
    )
    return root


def _one_line(args: list[str]) -> tuple[bool, str]:
    res = CliRunner().invoke(main, args)
    return fl.one_line_error(res.exit_code, res.stderr), res.stderr.strip()


def test_every_damaged_file_is_one_line_and_exit_2(saved, data, tmp_path):
    failures = []
    for what in ("idx", "adaptor"):
        for case, damaged in fl.damaged_copies(saved / what, tmp_path / f"damaged-{what}"):
            if what == "idx":
                args = ["search", str(damaged), str(data["queries"])]
            else:
                args = ["build", str(data["corpus_a"]), "--adaptor", str(damaged), "-o", str(tmp_path / "x")]
            ok, err = _one_line(args)
            if not ok:
                failures.append(f"{what}: {case}: {err[-300:]!r}")
    assert len(failures) == 0, failures


def test_future_format_versions_are_one_line(saved, data, tmp_path):
    future = fl.future_manifest(saved / "idx", tmp_path / "future")
    ok, err = _one_line(["search", str(future), str(data["queries"])])
    assert ok and "version" in err, err
    future = fl.future_manifest(saved / "adaptor", tmp_path / "future-a", name="adaptor.json")
    ok, err = _one_line(["build", str(data["corpus_a"]), "--adaptor", str(future), "-o", str(tmp_path / "x")])
    assert ok and "version" in err, err


def test_disk_full_is_one_line(data, tmp_path):
    with small_fs(tmp_path / "full", "100k") as mnt:  # skips where no tmpfs can be mounted
        rc, _, err = fl.run_cli_process(
            ["build", str(data["corpus_a"]), "--coarse-dim", "8", "--pca", "-o", str(mnt / "idx")], tmp_path
        )
        assert fl.one_line_error(rc, err), (rc, err[-500:])
        assert fl.leftovers(mnt, tmp_path / "none") == []


def test_read_only_target_is_one_line(data, tmp_path):
    with small_fs(tmp_path / "ro", "1m") as mnt:
        remount_read_only(mnt)
        rc, _, err = fl.run_cli_process(
            ["build", str(data["corpus_a"]), "--coarse-dim", "8", "--pca", "-o", str(mnt / "idx")], tmp_path
        )
        assert fl.one_line_error(rc, err), (rc, err[-500:])
