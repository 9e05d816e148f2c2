"""Mixed load (searching threads beside a mutating one) and two processes opening one index.

Shared by ``faults.py`` and the tests, like ``_faults_lib``.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from _faults_lib import COARSE, DIM, N_ROWS, ROOT, child_env, one_line_error, synthetic

# ---------------------------------------------------------------------------------- mixed load


@dataclass
class LoadReport:
    backend: str
    seconds: float
    searches: int
    errors: list[str]
    bad_ids: int  # returned ids that were not live at any moment of that search
    bad_scores: int  # returned scores that are not the exact score of that id's vector
    mutations: int
    final_ok: bool
    final_note: str
    qps: float
    p50_ms: float
    p99_ms: float

    def to_dict(self) -> dict:
        return self.__dict__.copy()


def _percentile_ms(lat: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(lat) * 1000, q)) if lat else float("nan")


def mixed_load(
    backend: str,
    seconds: float,
    *,
    threads: int = 8,
    mutate: bool = True,
    n: int = N_ROWS,
    dim: int = DIM,
    work: Path | None = None,
    seed: int = 0,
) -> LoadReport:
    """``threads`` threads search one query at a time while one thread adds, removes and re-adds batches.

    Every returned id must have been live at some instant between the search's start and end (the
    mutating ids have (start-of-add, end-of-remove) intervals); every returned score must be the
    exact full-dimension score of that id's vector; at the end the index must hold exactly the base
    rows plus the mutating ids last added.
    """
    import threading

    from matryoshka_index import MatryoshkaIndex

    base = synthetic(n, dim, 11)
    extra = synthetic(400, dim, 12)
    extra_ids = np.arange(1_000_000, 1_000_000 + len(extra), dtype=np.int64)
    vectors = {int(i): v for i, v in zip(range(n), base, strict=True)}
    vectors.update({int(i): v for i, v in zip(extra_ids, extra, strict=True)})
    queries = synthetic(256, dim, 13)
    opts: dict[str, Any] = {"backend": backend}
    index = MatryoshkaIndex.build(base, coarse_dim=COARSE, adaptor="pca", quiet=True, **opts)
    lock = threading.Lock()
    intervals: dict[int, list[list[float]]] = {int(i): [] for i in extra_ids}  # [add start, remove end]
    live: set[int] = set()
    stop = threading.Event()
    errors: list[str] = []
    lat: list[float] = []
    bad = {"ids": 0, "scores": 0, "searches": 0, "mutations": 0}
    batches = np.array_split(extra_ids, 8)

    def mutator() -> None:
        rng = np.random.default_rng(seed)
        while not stop.is_set():
            batch = batches[int(rng.integers(len(batches)))]
            try:
                present = [int(i) for i in batch if int(i) in live]
                if present:  # remove what of this batch is live
                    index.remove(np.asarray(present, dtype=np.int64))
                    t = time.perf_counter()
                    with lock:
                        for i in present:
                            intervals[i][-1][1] = t
                            live.discard(i)
                else:  # (re-)add the batch
                    t = time.perf_counter()
                    with lock:
                        for i in batch:
                            intervals[int(i)].append([t, float("inf")])
                    index.add(extra[batch - extra_ids[0]], ids=batch)
                    with lock:
                        live.update(int(i) for i in batch)
                bad["mutations"] += 1
            except Exception as exc:  # any exception is the finding
                errors.append(f"mutator: {type(exc).__name__}: {exc}")
                return

    def searcher(k: int) -> None:
        rng = np.random.default_rng(seed + 1 + k)
        while not stop.is_set():
            q = queries[int(rng.integers(len(queries)))][None]
            t0 = time.perf_counter()
            try:
                scores, ids = index.search(q, k=10)
            except Exception as exc:
                errors.append(f"search: {type(exc).__name__}: {exc}")
                return
            t1 = time.perf_counter()
            lat.append(t1 - t0)
            bad["searches"] += 1
            for s, i in zip(scores[0], ids[0], strict=True):
                i = int(i)
                if i < 0:
                    continue
                if i >= 1_000_000:
                    with lock:
                        ok = any(a <= t1 and r >= t0 for a, r in intervals.get(i, []))
                    if not ok:
                        bad["ids"] += 1
                        continue
                elif i not in vectors:
                    bad["ids"] += 1
                    continue
                if abs(float(s) - float(vectors[i] @ q[0])) > 1e-4:
                    bad["scores"] += 1

    workers = [threading.Thread(target=searcher, args=(k,), daemon=True) for k in range(threads)]
    if mutate:
        workers.append(threading.Thread(target=mutator, daemon=True))
    t_start = time.perf_counter()
    for w in workers:
        w.start()
    time.sleep(seconds)
    stop.set()
    for w in workers:
        w.join(60)
    elapsed = time.perf_counter() - t_start
    expected = set(range(n)) | live
    got = {int(i) for i in index.ids()}
    final_ok, note = got == expected, f"{len(got)} ids, {len(live)} of the mutating ids live"
    if final_ok and live:  # each live mutating vector finds itself first, with its exact score
        some = sorted(live)[:50]
        _scores, ids = index.search(np.stack([vectors[i] for i in some]), k=1)
        hits = int((ids[:, 0] == np.asarray(some)).sum())
        final_ok = hits == len(some)
        note += f"; {hits}/{len(some)} find themselves first"
    elif not final_ok:
        note += f"; missing {len(expected - got)}, unexpected {len(got - expected)}"
    return LoadReport(
        backend=backend,
        seconds=round(elapsed, 2),
        searches=bad["searches"],
        errors=errors[:5],
        bad_ids=bad["ids"],
        bad_scores=bad["scores"],
        mutations=bad["mutations"],
        final_ok=final_ok,
        final_note=note,
        qps=round(bad["searches"] / elapsed, 1),
        p50_ms=round(_percentile_ms(lat, 50), 3),
        p99_ms=round(_percentile_ms(lat, 99), 3),
    )


# ------------------------------------------------------------------------- two processes, one index

TWO_OPEN_CHILD = (
    "import sys, time, hashlib\nfrom matryoshka_index import MatryoshkaIndex\nimport numpy as np\n"
    "idx = MatryoshkaIndex.load(sys.argv[1])\nprint('OPEN', flush=True)\ntime.sleep(float(sys.argv[3]))\n"
    "s, i = idx.search(np.load(sys.argv[2]), k=10)\n"
    "print(hashlib.sha256(i.tobytes()).hexdigest(), flush=True)\n"
)


def two_processes(index_dir: Path, queries: Path, tmp: Path, hold_s: float = 3.0) -> dict:
    """Two processes open the same saved index at once (each holds it ``hold_s`` s) and search it."""
    from matryoshka_index import MatryoshkaIndex

    _s, i = MatryoshkaIndex.load(index_dir).search(np.load(queries), k=10)
    expected = hashlib.sha256(i.tobytes()).hexdigest()
    procs = []
    for _ in range(2):
        procs.append(
            subprocess.Popen(
                [sys.executable, "-c", TWO_OPEN_CHILD, str(index_dir), str(queries), str(hold_s)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=child_env(tmp),
                cwd=ROOT,
            )
        )
    results = []
    for p in procs:
        out, err = p.communicate(timeout=300)
        lines = out.split()
        results.append(
            {
                "returncode": p.returncode,
                "opened": "OPEN" in lines,
                "same_results": bool(lines) and lines[-1] == expected,
                "stderr_last": err.strip().splitlines()[-1] if err.strip() else "",
                "one_line_error": one_line_error(p.returncode, err),
            }
        )
    return {"both_searched": all(r["same_results"] for r in results), "processes": results}
