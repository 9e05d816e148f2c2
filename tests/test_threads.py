"""Thread counts: MINDEX_THREADS, --threads, the affinity mask, the cgroup quota and the load; per call, restored."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import faiss
import numpy as np
import pytest
import threadpoolctl
import torch

from matryoshka_index import MatryoshkaAdaptor, threads
from matryoshka_index.adaptor import training
from matryoshka_index.backends.faiss_backend import FaissBackend
from matryoshka_index.errors import InputError
from matryoshka_index.index import MatryoshkaIndex

ROOT = Path(__file__).resolve().parents[1]
BASE = 4  # the pools' count before each call (set by the fixture, whatever the machine's core count)


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    monkeypatch.delenv("MINDEX_THREADS", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "_CGROUP_ROOT", tmp_path)  # an empty cgroup folder: no quota
    monkeypatch.setattr(threads, "other_load", lambda: 0.0)
    return monkeypatch


@pytest.fixture
def loaded(clean_env):
    """4 cores, 3 of them busy with other processes (monkeypatched): the automatic count is 1. The pools
    start at BASE threads; each test's end puts back what they were."""
    clean_env.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    clean_env.setattr(threads, "other_load", lambda: 3.0)
    faiss_before, torch_before = faiss.omp_get_max_threads(), torch.get_num_threads()
    faiss.omp_set_num_threads(BASE)
    torch.set_num_threads(BASE)
    yield clean_env
    faiss.omp_set_num_threads(faiss_before)
    torch.set_num_threads(torch_before)


def counts() -> tuple[int, int]:
    return faiss.omp_get_max_threads(), torch.get_num_threads()


def openmp_counts() -> list[int]:
    return [lib["num_threads"] for lib in threadpoolctl.threadpool_info() if lib["user_api"] == "openmp"]


def observe(monkeypatch, owner, name: str, seen: list) -> None:
    """Record (faiss, torch, every OpenMP pool) threads each time ``owner.name`` runs."""
    real = getattr(owner, name)

    def spy(*args, **kwargs):
        seen.append((*counts(), openmp_counts()))
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, spy)


def tiny_corpus(n: int = 300, d: int = 16) -> np.ndarray:
    return np.random.default_rng(0).standard_normal((n, d)).astype(np.float32)


def tiny_adaptor() -> MatryoshkaAdaptor:
    return MatryoshkaAdaptor(matryoshka_dims=(4, 8), epochs=1, batch_size=64, quiet=True, seed=0)


# ------------------------------------------------------------------------------------ the count itself


def test_env_var_wins_over_automatic(clean_env):
    clean_env.setenv("MINDEX_THREADS", "3")
    assert threads.thread_count() == 3
    assert threads.thread_count(5) == 5  # an explicit request (--threads) wins over the variable
    assert threads.resolve() == (3, True)


def test_bad_env_var_is_one_clear_error(clean_env):
    clean_env.setenv("MINDEX_THREADS", "zero")
    with pytest.raises(InputError, match="MINDEX_THREADS"):
        threads.thread_count()
    with pytest.raises(InputError, match="MINDEX_THREADS"), threads.limited():
        pass
    with pytest.raises(InputError, match="--threads"):
        threads.apply(0)


def test_affinity_mask_bounds_the_count(clean_env):
    clean_env.setattr(os, "sched_getaffinity", lambda pid: {0}, raising=False)
    assert threads.thread_count() == 1
    clean_env.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    assert threads.resolve() == (4, False)


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


def test_load_is_the_smaller_of_the_average_and_the_run_queue_now(monkeypatch):
    monkeypatch.setattr(threads, "_own_load", lambda: 0.5)
    monkeypatch.setattr(os, "getloadavg", lambda: (3.5, 3.0, 2.0))
    monkeypatch.setattr(threads, "run_queue_load", lambda: 0.0)  # the load has just gone: the average lags
    assert threads.other_load() == 0.0
    monkeypatch.setattr(threads, "run_queue_load", lambda: 7.0)  # a burst now, not in the average
    assert threads.other_load() == 3.0
    monkeypatch.setattr(threads, "run_queue_load", lambda: None)  # no /proc/stat
    assert threads.other_load() == 3.0


def test_run_queue_is_read_from_proc_less_our_own_threads():
    if not Path("/proc/stat").exists():
        pytest.fail("this test reads /proc/stat (Linux)")
    assert threads._own_running_threads() >= 1  # the thread running this test
    load = threads.run_queue_load()
    assert load is not None and load >= 0.0


# ------------------------------------------------------------------------------------ per call, restored


def test_limited_sets_every_pool_for_the_block_and_restores_them(loaded):
    blas_before = [lib["num_threads"] for lib in threadpoolctl.threadpool_info() if lib["user_api"] == "blas"]
    # faiss calls whichever libgomp was loaded first (torch's, when torch came first): both are set
    openmp_before = openmp_counts()
    with threads.limited() as n:
        assert n == 1
        assert counts() == (1, 1)
        assert set(openmp_counts()) == {1}  # torch's libgomp and faiss's own copy both
        assert {lib["num_threads"] for lib in threadpoolctl.threadpool_info() if lib["user_api"] == "blas"} <= {1}
    assert counts() == (BASE, BASE)
    assert openmp_counts() == openmp_before
    assert [lib["num_threads"] for lib in threadpoolctl.threadpool_info() if lib["user_api"] == "blas"] == blas_before


def test_limited_restores_after_an_error(loaded):
    with pytest.raises(RuntimeError), threads.limited():
        assert counts() == (1, 1)
        raise RuntimeError("inside")
    assert counts() == (BASE, BASE)


def test_automatic_count_never_raises_a_pool_the_caller_lowered(loaded):
    loaded.setattr(threads, "other_load", lambda: 0.0)  # 4 cores free
    faiss.omp_set_num_threads(2)  # the caller's own setting (torch's pool too where faiss shares its libgomp)
    torch.set_num_threads(2)
    with threads.limited() as n:
        assert n == 4
        assert counts() == (2, 2)
    assert counts() == (2, 2)


def test_explicit_count_is_used_as_given_and_holds_inside(loaded):
    with threads.limited(3):  # load looks high: an explicit count is not lowered
        assert counts() == (3, 3)
        with threads.limited() as inner:  # a library call inside the block follows the caller's count
            assert inner == 3 and counts() == (3, 3)
        with threads.limited(2):
            assert counts() == (2, 2)
        assert counts() == (3, 3)
    assert counts() == (BASE, BASE)
    for var in ("MINDEX_THREADS", "OMP_NUM_THREADS"):
        loaded.setenv(var, "6")
        with threads.limited():
            assert counts() == (6, 6)
        loaded.delenv(var)
    assert counts() == (BASE, BASE)


def test_overlapping_calls_from_threads_restore_the_process_wide_counts(loaded):
    start, inside = threading.Barrier(2), threading.Barrier(2)
    seen: dict[int, int] = {}

    def call(requested: int, leave_first: bool) -> None:
        start.wait()
        with threads.limited(requested):
            inside.wait()  # both calls are inside now
            seen[requested] = faiss.omp_get_max_threads()  # OpenMP counts are per calling thread
            if not leave_first:
                inside.wait()
        if leave_first:
            inside.wait()

    workers = [threading.Thread(target=call, args=(1, True)), threading.Thread(target=call, args=(3, False))]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert seen == {1: 1, 3: 3}
    assert counts() == (BASE, BASE)  # torch's count is process-wide: the last call to end restored it


# ------------------------------------------------------------------------------------ the library's calls


def test_fit_under_load_runs_reduced_and_restores(loaded):
    seen: list = []
    observe(loaded, training, "nearest_neighbours", seen)
    openmp_before = openmp_counts()
    tiny_adaptor().fit(tiny_corpus())
    assert seen and all(s == (1, 1, [1] * len(s[2])) for s in seen)
    assert counts() == (BASE, BASE)
    assert openmp_counts() == openmp_before


def test_build_with_training_under_load_runs_reduced_and_restores(loaded):
    in_training: list = []
    in_faiss: list = []
    observe(loaded, training, "nearest_neighbours", in_training)
    observe(loaded, FaissBackend, "add", in_faiss)
    MatryoshkaIndex.build(tiny_corpus(), coarse_dim=4, adaptor="train", quiet=True, calibration_queries=50)
    assert in_training and in_faiss
    assert all(s[:2] == (1, 1) for s in in_training + in_faiss)
    assert counts() == (BASE, BASE)


def test_search_and_calibrate_under_load_run_reduced_and_restore(loaded):
    index = MatryoshkaIndex.build(tiny_corpus(), coarse_dim=4, quiet=True, calibration_queries=50)
    assert counts() == (BASE, BASE)
    seen: list = []
    observe(loaded, FaissBackend, "search", seen)
    observe(loaded, FaissBackend, "exact_search", seen)
    queries = tiny_corpus(60)[::-1].copy()
    index.search(queries, k=5)
    assert seen and all(s[:2] == (1, 1) for s in seen)
    assert counts() == (BASE, BASE)
    seen.clear()
    index.calibrate(queries, target_recall=0.9)
    assert seen and all(s[:2] == (1, 1) for s in seen)
    assert counts() == (BASE, BASE)


def test_an_explicit_setting_is_never_lowered_by_load(loaded):
    in_fit: list = []
    in_search: list = []
    observe(loaded, training, "nearest_neighbours", in_fit)
    observe(loaded, FaissBackend, "search", in_search)
    loaded.setenv("MINDEX_THREADS", "2")
    tiny_adaptor().fit(tiny_corpus())
    assert in_fit and all(s[:2] == (2, 2) for s in in_fit)
    assert counts() == (BASE, BASE)
    loaded.delenv("MINDEX_THREADS")
    with threads.limited(3):
        index = MatryoshkaIndex.build(tiny_corpus(), coarse_dim=4, quiet=True, calibration_queries=50)
        index.search(tiny_corpus(20), k=5)
    assert in_search and all(s[:2] == (3, 3) for s in in_search)
    assert counts() == (BASE, BASE)


# ------------------------------------------------------------------------------------ process level


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


_CLI = (
    "import os, sys\n"
    "from matryoshka_index.cli import main\n"
    "sys.argv = ['mindex'] + sys.argv[1:]\n"
    "try:\n"
    "    main(ARGS + ['info', '--help'])\n"
    "except SystemExit:\n"
    "    pass\n"
    # torch and faiss load after the option is read (the CLI does not import torch at start-up); a library
    # call (here the context they run in) uses the command's count
    "import faiss, torch\n"
    "from matryoshka_index import threads\n"
    "with threads.limited():\n"
    "    print(torch.get_num_threads(), faiss.omp_get_max_threads(), os.environ.get('MINDEX_THREADS'))\n"
)


def test_cli_threads_option_holds_for_its_whole_process():
    assert _run(_CLI.replace("ARGS", "['--threads', '3']")).splitlines()[-1] == "3 3 3"
    assert _run(_CLI.replace("ARGS", "[]"), MINDEX_THREADS="2").splitlines()[-1] == "2 2 2"
    # Without a count the command sets nothing process-wide: each library call follows the load.
    no_count = _CLI.replace("ARGS", "[]").split("import faiss")[0] + "print(os.environ.get('MINDEX_THREADS'))\n"
    assert _run(no_count).splitlines()[-1] == "None"
