"""What every peer adapter and the worker share, numpy + stdlib only (each peer runs in its own venv).

A peer is one library behind one interface: ``build(data, params, workdir)`` writes an index to
``workdir`` (in a build process), ``load(workdir, params)`` opens it in a fresh serve process, and
``search(queries, k, params)`` answers a batch with row ids ``(nq, k)``. Each declares its grid of
build settings and, per build, its lines of search settings (each line ascending in cost: the worker
stops a line at its first point past the highest recall target).
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path
from typing import Any

import numpy as np

# The FAISS process-wide global every process pins to the same value before anything else runs.
# matryoshka_index's FAISS backend lowers it to this value from FAISS's default (128000) when its first
# backend is created; pinning it here first, in every process that loads FAISS, makes the library's
# change a no-op, so a FAISS baseline runs with exactly the setting our rows run with.
BLAS_THRESHOLD = 20 * 64


class Peer:
    """One library: its declared grids and the four calls the worker makes."""

    library = ""
    keeps_in_ram = ""  # one line: what the served index holds resident (and what it leaves on disk)

    def prepare(self) -> None:
        """Import what ``load`` and ``search`` need, before the serve process takes its first RSS reading
        (a library's code is not its index's memory)."""

    def build_grid(self, n: int, d: int) -> list[dict[str, Any]]:
        raise NotImplementedError

    def search_lines(self, n: int, build: dict[str, Any]) -> list[list[dict[str, Any]]]:
        raise NotImplementedError

    def build(self, data: np.ndarray, build: dict[str, Any], workdir: Path) -> dict[str, Any]:
        raise NotImplementedError

    def load(self, workdir: Path, build: dict[str, Any], data_path: Path) -> None:
        raise NotImplementedError

    def search(self, queries: np.ndarray, k: int, params: dict[str, Any]) -> np.ndarray:
        raise NotImplementedError

    def fixed_bytes(self, n: int, d: int, build: dict[str, Any]) -> int:
        """Bytes the served index keeps whatever its size (centroids, codebooks, rotations, weights)."""
        return 0

    def library_bytes(self) -> int | None:
        """The library's own figure for the served index's memory, where it reports one."""
        return None

    def versions(self) -> dict[str, str]:
        return {}


def proc_status() -> dict[str, int]:
    """Resident set of this process from /proc/self/status, bytes: VmRSS, RssAnon (heap, anonymous
    maps: what the index itself holds) and RssFile (resident pages of mapped files: page cache)."""
    out: dict[str, int] = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile", "RssShmem", "VmHWM"):
            out[key] = int(value.split()[0]) * 1024
    return out


def trim_heap() -> None:
    """Give freed heap back to the system (glibc), so an RSS delta counts what is held, not what was."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass


def pin_faiss(threads: int) -> dict[str, Any]:
    """Set FAISS's OpenMP threads and BLAS threshold in this process (when FAISS is importable here)."""
    try:
        import faiss
    except ImportError:
        return {"faiss": None}
    faiss.omp_set_num_threads(threads)
    faiss.cvar.distance_compute_blas_threshold = BLAS_THRESHOLD
    return {
        "faiss": faiss.__version__,
        "faiss_omp_threads": faiss.omp_get_max_threads(),
        "distance_compute_blas_threshold": int(faiss.cvar.distance_compute_blas_threshold),
    }


def recall_at_k(found: np.ndarray, truth: np.ndarray, k: int) -> float:
    """Mean fraction of the exact top-``k`` found in the returned top-``k`` (ids as row numbers)."""
    found = np.asarray(found)[:, :k]
    truth = np.asarray(truth)[:, :k]
    hits = sum(len(np.intersect1d(f, t)) for f, t in zip(found, truth, strict=True))
    return hits / truth.size


def rerank_ip(full: np.ndarray, queries: np.ndarray, rows: np.ndarray, k: int) -> np.ndarray:
    """Best ``k`` of the candidate ``rows`` by full-dim inner product, read from ``full`` (a memory map).

    numpy only (no FAISS needed in a peer's venv); the FAISS baselines use FAISS's one C++ call instead,
    as our backend does.
    """
    nq = len(queries)
    out = np.full((nq, k), -1, dtype=np.int64)
    for i in range(nq):
        cand = rows[i][rows[i] >= 0]
        if len(cand) == 0:
            continue
        order = np.sort(cand)
        scores = np.asarray(full[order]) @ queries[i]
        top = np.argsort(-scores)[:k]
        out[i, : len(top)] = order[top]
    return out


def env_threads() -> int:
    return int(os.environ.get("PEERS_THREADS", "1"))
