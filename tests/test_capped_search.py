"""A search in a memory cgroup smaller than the index's full vectors returns exactly the uncapped results (issue 22).

The fast version of ``benchmarks/out_of_ram.py``: a small corpus (full.npy about 1.6x the cap), the page cache of
the index dropped, the search in a child process inside a memory cgroup (v1 at /sys/fs/cgroup/memory, else v2)
whose limit charges the page cache too: the plain rerank (prefetch on, the default), with the prefetch off, and
with a per-query stop. The child first streams all of full.npy (an exact search), so the cgroup is at its limit
when the search starts and every page it reads costs a reclaim; the cap must have bound (the cgroup's peak
reached its limit, or its fail count rose). A regression that holds the vectors in RAM is killed by the cap. Skips,
saying why, where no memory cgroup can be made (not root, no memory controller, a read-only /sys).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import make_corpus

from matryoshka_index import MatryoshkaIndex
from matryoshka_index.backends.faiss_rerank import RerankStop

CAP_MIB = 96  # the child's interpreter, numpy and faiss take about 65 MiB of it
ROWS, DIM = 110_000, 384  # full.npy 169 MB: 1.7x the cap
CG1 = Path("/sys/fs/cgroup/memory")
CG2 = Path("/sys/fs/cgroup")

CHILD = r"""
import json, sys
import numpy as np
from matryoshka_index import MatryoshkaIndex
from matryoshka_index.backends.faiss_rerank import RerankStop
spec = json.loads(sys.argv[1])
index = MatryoshkaIndex.load(spec["path"], verify=False)
queries = np.load(spec["queries"])
if spec["stop"] is not None:
    index.backend.set_rerank_stop(RerankStop(**spec["stop"]))
index.exact_search(queries[:2], k=10)  # streams all of full.npy: the cgroup is at its limit before the search
scores, ids = index.search(queries, k=10, candidates=spec["candidates"])
single = [index.search(q[None], k=10, candidates=spec["candidates"])[1] for q in queries[:20]]
np.savez(spec["out"], scores=scores, ids=ids, single=np.concatenate(single))
"""


class MemoryCgroup:
    """A fresh memory cgroup with a limit (v1 or v2); raises OSError where one cannot be made."""

    def __init__(self, name: str, limit: int) -> None:
        self.v1 = (CG1 / "memory.limit_in_bytes").exists()
        if not self.v1 and "memory" not in (CG2 / "cgroup.controllers").read_text().split():
            raise OSError("no memory controller in the cgroup v2 hierarchy")
        self.path = (CG1 if self.v1 else CG2) / name
        self.path.mkdir()
        try:
            if self.v1:
                (self.path / "memory.limit_in_bytes").write_text(str(limit))
            else:
                (self.path / "memory.max").write_text(str(limit))
                (self.path / "memory.swap.max").write_text("0")
        except OSError:
            self.close()
            raise
        self.limit = limit

    def enter(self) -> None:
        (self.path / "cgroup.procs").write_text(str(os.getpid()))

    def bound(self) -> bool:
        """Whether the usage reached the limit at some point (so the cap made the kernel reclaim)."""
        if self.v1:
            peak = int((self.path / "memory.max_usage_in_bytes").read_text())
            return peak >= 0.95 * self.limit or int((self.path / "memory.failcnt").read_text()) > 0
        events = dict(line.split() for line in (self.path / "memory.events").read_text().splitlines())
        return int(events.get("max", 0)) > 0 or int(events.get("high", 0)) > 0

    def close(self) -> None:
        for _ in range(50):
            try:
                self.path.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError:
                time.sleep(0.1)


def _drop_page_cache(directory: Path) -> None:
    for f in directory.iterdir():
        fd = os.open(f, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


@pytest.fixture(scope="module")
def cgroup_name():
    if not sys.platform.startswith("linux"):
        pytest.skip("memory cgroups are Linux only")
    name = f"mindex-test-cap-{os.getpid()}"
    try:
        MemoryCgroup(name, CAP_MIB * 2**20).close()
    except OSError as exc:
        pytest.skip(f"no memory cgroup can be made here ({exc}); needs root and a memory controller")
    return name


@pytest.fixture(scope="module")
def saved(tmp_path_factory, cgroup_name):
    x = make_corpus(ROWS + 200, dim=DIM, rank=24, seed=11)
    path = tmp_path_factory.mktemp("capped") / "idx.mindex"
    # fixed candidates: no calibration pass (the property is about reads, not about the candidate count)
    index = MatryoshkaIndex.build(x[:ROWS], coarse_dim=32, adaptor="pca", candidates=80, quiet=True)
    index.save(path)
    queries = x[ROWS:]
    np.save(path.parent / "queries.npy", queries)
    assert (path / "full.npy").stat().st_size > 1.5 * CAP_MIB * 2**20  # the vectors cannot all be resident
    return path, queries


def _capped_search(path: Path, queries_path: Path, out: Path, name: str, env: dict, stop: dict | None) -> None:
    cg = MemoryCgroup(name, CAP_MIB * 2**20)
    try:
        _drop_page_cache(path)
        spec = {"path": str(path), "queries": str(queries_path), "candidates": 80, "out": str(out), "stop": stop}
        proc = subprocess.run(
            [sys.executable, "-c", CHILD, json.dumps(spec)],
            env={**os.environ, "OMP_NUM_THREADS": "1", "MINDEX_QUIET": "1", **env},
            preexec_fn=cg.enter,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert proc.returncode == 0, proc.stderr[-2000:]  # killed by the cap (-9), or an error
        assert cg.bound(), "the cap never bound: the test would not show a search under memory pressure"
    finally:
        cg.close()


@pytest.mark.parametrize(
    "env,stop",
    [
        ({}, None),
        ({"MINDEX_RERANK_PREFETCH": "0"}, None),
        ({}, {"slope": 1.0, "intercept": 0.0, "sigma": 0.02, "z": 1.0}),
    ],
    ids=["prefetch", "no-prefetch", "per-query-stop"],
)
def test_search_under_a_memory_cap_returns_the_uncapped_results(saved, cgroup_name, tmp_path, env, stop):
    path, queries = saved
    index = MatryoshkaIndex.load(path)
    if stop is not None:
        index.backend.set_rerank_stop(RerankStop(**stop))
    want_s, want_i = index.search(queries, k=10, candidates=80)
    want_single = np.concatenate([index.search(q[None], k=10, candidates=80)[1] for q in queries[:20]])
    del index
    out = tmp_path / "got.npz"
    _capped_search(path, path.parent / "queries.npy", out, cgroup_name, env, stop)
    got = np.load(out)
    assert np.array_equal(got["ids"], want_i) and np.array_equal(got["scores"], want_s)
    assert np.array_equal(got["single"], want_single)
