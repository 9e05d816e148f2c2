"""The thread count follows MINDEX_THREADS, --threads, the affinity mask, the cgroup quota and the load."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from matryoshka_index import threads
from matryoshka_index.errors import InputError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    monkeypatch.delenv("MINDEX_THREADS", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "_CGROUP_ROOT", tmp_path)  # an empty cgroup folder: no quota
    monkeypatch.setattr(threads, "other_load", lambda: 0.0)
    return monkeypatch


def test_env_var_wins_over_automatic(clean_env):
    clean_env.setenv("MINDEX_THREADS", "3")
    assert threads.thread_count() == 3
    assert threads.thread_count(5) == 5  # an explicit request (--threads) wins over the variable


def test_bad_env_var_is_one_clear_error(clean_env):
    clean_env.setenv("MINDEX_THREADS", "zero")
    with pytest.raises(InputError, match="MINDEX_THREADS"):
        threads.thread_count()
    with pytest.raises(InputError, match="--threads"):
        threads.thread_count(0)


def test_affinity_mask_bounds_the_count(clean_env):
    clean_env.setattr(os, "sched_getaffinity", lambda pid: {0}, raising=False)
    assert threads.thread_count() == 1
    clean_env.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    assert threads.thread_count() == 4


def test_cgroup_quota_bounds_the_count(clean_env, tmp_path):
    clean_env.setattr(os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    assert threads.thread_count() == 8
    (tmp_path / "cpu.max").write_text("250000 100000\n")  # docker --cpus 2.5
    assert threads.cgroup_cores() == 2.5
    assert threads.thread_count() == 2
    (tmp_path / "cpu.max").unlink()
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("100000\n")  # cgroup v1, 1 core
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert threads.thread_count() == 1


def test_load_of_other_processes_lowers_the_count_to_at_least_one(clean_env):
    clean_env.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    clean_env.setattr(threads, "other_load", lambda: 2.2)
    assert threads.thread_count() == 2
    clean_env.setattr(threads, "other_load", lambda: 9.0)
    assert threads.thread_count() == 1


def test_apply_sets_torch_only_when_already_imported(clean_env):
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    try:
        clean_env.setenv("MINDEX_THREADS", "2")
        assert threads.apply() == 2
        assert torch.get_num_threads() == 2
        assert "MINDEX_THREADS" in os.environ and os.environ.get("OMP_NUM_THREADS") is None  # no export by default
    finally:
        torch.set_num_threads(before)


def _run(code: str, **env: str) -> str:
    full = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "MINDEX_THREADS", "OMP_NUM_THREADS")}
    full.update(env)
    full["PYTHONPATH"] = str(ROOT) + os.pathsep + full.get("PYTHONPATH", "")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_import_sets_passive_wait_and_does_not_import_torch_for_it():
    # The module alone (run as a file: the package import would load the adaptor and torch).
    code = (
        "import os, sys, runpy; runpy.run_path('matryoshka_index/threads.py'); "
        "print(os.environ.get('OMP_WAIT_POLICY'), 'torch' in sys.modules, 'faiss' in sys.modules)"
    )
    assert _run(code) == "PASSIVE False False"
    # The package import sets it too, before torch loads (the adaptor imports torch).
    assert _run("import os, matryoshka_index; print(os.environ.get('OMP_WAIT_POLICY'))") == "PASSIVE"
    # A value the user chose is kept.
    assert (
        _run("import os, matryoshka_index; print(os.environ['OMP_WAIT_POLICY'])", OMP_WAIT_POLICY="ACTIVE") == "ACTIVE"
    )


def test_cli_threads_option_reaches_torch_and_faiss():
    code = (
        "import sys\n"
        "from matryoshka_index.cli import main\n"
        "sys.argv = ['mindex'] + sys.argv[1:]\n"
        "try:\n"
        "    main(['--threads', '3', 'info', '--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        # torch and faiss load after the option is read (the CLI no longer imports torch at start-up);
        # training calls threads.apply() when it starts, which reads the exported count
        "import faiss, torch\n"
        "from matryoshka_index import threads\n"
        "threads.apply()\n"
        "print(torch.get_num_threads(), faiss.omp_get_max_threads())\n"
    )
    assert _run(code).splitlines()[-1] == "3 3"
    assert _run(code.replace("'--threads', '3', ", ""), MINDEX_THREADS="2").splitlines()[-1] == "2 2"
