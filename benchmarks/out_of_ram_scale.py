"""Scale for issue 22: a corpus of N x 384 (5M or 10M) built from a memory-mapped ``.npy`` under a memory cap,
then searched under the same cap, cold (``out_of_ram.py``'s child: single queries, then a batch).

The corpus is ``search_speed.write_synthetic`` with ``_machine.SYNTHETIC`` (N + 1,000 rows, the last 1,000 the
queries), exact top-10 by FAISS ``IndexFlatIP`` in 100k-row chunks. The adaptor is the one ``out_of_ram.py``
fitted on 30,000 rows of the 1M corpus (the same generator, so the same distribution; fitting again would only
spend the build's time on the same answer). The build is one child process in a memory cgroup of ``--cap-mib``
(page cache charged): ``MatryoshkaIndex.build`` of ``64 flat pq4x32 itq`` on ``np.load(mmap_mode="r")``, its
spill file under ``--work``; its wall time, peak RSS (``ru_maxrss``) and the cgroup's peak are reported.

    python benchmarks/out_of_ram_scale.py --rows 5000000 [--work /tmp/o22m-data/scale] [--cap-mib 2048]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
K = 10
N_QUERIES = 1000
NAME = "ours 64 flat pq4x32 itq"


def build_child(spec: dict) -> dict:
    import numpy as np

    from matryoshka_index import MatryoshkaAdaptor, MatryoshkaIndex

    x = np.load(spec["corpus"], mmap_mode="r")
    corpus = x[: spec["rows"]]
    t0 = time.perf_counter()
    idx = MatryoshkaIndex.build(
        corpus,
        coarse_dim=64,
        adaptor=MatryoshkaAdaptor.load(spec["adaptor"]),
        index="flat",
        backend_options={"code": "pq4", "pq_m": 32, "balance": "itq", "spill_dir": spec["work"]},
        quiet=True,
    )
    build_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    idx.save(spec["path"])
    save_s = time.perf_counter() - t0
    return {
        "build_s": round(build_s, 1),
        "save_s": round(save_s, 1),
        "max_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "candidates": int(idx.candidates),
        "memory": idx.backend.memory(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=5_000_000)
    ap.add_argument("--work", type=Path, default=Path("/tmp/o22m-data/scale"))
    ap.add_argument("--adaptor", type=Path, default=Path("/tmp/o22m-data/adaptor"))
    ap.add_argument("--cap-mib", type=int, default=2048)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--single", type=int, default=150)
    ap.add_argument("--batch", type=int, default=200)
    ap.add_argument("--max-seconds", type=float, default=60.0)
    ap.add_argument("--results", type=Path, default=HERE / "results" / "out_of_ram_scale.json")
    ap.add_argument("--build-child", default=None, help=argparse.SUPPRESS)
    ns = ap.parse_args()
    if ns.build_child is not None:
        print(json.dumps(build_child(json.loads(ns.build_child))))
        return
    import faiss
    import numpy as np
    import out_of_ram
    from _machine import SYNTHETIC
    from memory_limit import Cgroup
    from out_of_ram import load_avg, spawn, versions
    from search_speed import write_synthetic

    faiss.omp_set_num_threads(ns.threads)
    n = ns.rows
    ns.work.mkdir(parents=True, exist_ok=True)
    corpus_path = ns.work / f"synthetic-{n + N_QUERIES}x384.npy"
    info_path = ns.work / f"prepared-{n}.json"
    info = json.loads(info_path.read_text()) if info_path.exists() else {}
    if not corpus_path.exists():
        t0 = time.perf_counter()
        write_synthetic(corpus_path, n + N_QUERIES, 384, **SYNTHETIC)
        info["corpus_write_s"] = round(time.perf_counter() - t0, 1)
    truth_path = ns.work / f"truth-{n}.npy"
    if not truth_path.exists():
        t0 = time.perf_counter()
        x = np.load(corpus_path, mmap_mode="r")
        queries = np.ascontiguousarray(x[n:], dtype=np.float32)
        best_s = np.full((N_QUERIES, K), -np.inf, dtype=np.float32)
        best_i = np.full((N_QUERIES, K), -1, dtype=np.int64)
        for s in range(0, n, 100_000):  # chunked: the exact search never holds the corpus
            flat = faiss.IndexFlatIP(384)
            flat.add(np.ascontiguousarray(x[s : min(s + 100_000, n)]))
            d, i = flat.search(queries, K)
            cat_s, cat_i = np.hstack([best_s, d]), np.hstack([best_i, i + s])
            order = np.argsort(-cat_s, axis=1, kind="stable")[:, :K]
            best_s, best_i = np.take_along_axis(cat_s, order, 1), np.take_along_axis(cat_i, order, 1)
        np.save(truth_path, best_i)
        info["truth_s"] = round(time.perf_counter() - t0, 1)
        del x
    info_path.write_text(json.dumps(info, indent=2) + "\n")
    index_path = ns.work / f"{NAME.replace(' ', '-')}-{n}.mindex"
    if "build" not in info or not index_path.exists():
        spec = {"corpus": str(corpus_path), "rows": n, "adaptor": str(ns.adaptor), "work": str(ns.work),
                "path": str(index_path)}  # fmt: skip
        env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS=str(ns.threads), MINDEX_QUIET="1")
        cg = Cgroup(f"mindex-ooram-build-{os.getpid()}", ns.cap_mib * 2**20)
        l0 = load_avg()
        t0 = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), "--build-child", json.dumps(spec)],
            env=env, capture_output=True, text=True, preexec_fn=cg.enter, cwd=str(REPO.parent),
        )  # fmt: skip
        peak = cg.peak()
        cg.close()
        if proc.returncode != 0:
            sys.exit(f"build failed rc={proc.returncode}: {proc.stderr.strip().splitlines()[-5:]}")
        info["build"] = {
            **json.loads(proc.stdout.strip().splitlines()[-1]),
            "wall_s": round(time.perf_counter() - t0, 1),
            "cap_mib": ns.cap_mib,
            "cgroup_peak_mib": round(peak / 2**20, 1) if peak else None,
            "load": [l0[0], load_avg()[0]],
        }
        info_path.write_text(json.dumps(info, indent=2) + "\n")
    print(json.dumps(info["build"]), flush=True)
    out_of_ram.N_ROWS = n
    rows = []
    for cold in (True,):
        spec = {"kind": "ours", "candidates": info["build"]["candidates"], "path": str(index_path),
                "files": [str(index_path)], "corpus": str(corpus_path), "truth": str(truth_path),
                "threads": ns.threads, "rows": n, "cold": cold, "n_single": ns.single, "n_batch": ns.batch,
                "max_seconds": ns.max_seconds}  # fmt: skip
        l0 = load_avg()
        r = spawn(spec, ns.cap_mib, {"MINDEX_RERANK_PREFETCH": "1"}, timeout=900)
        rows.append({"method": NAME, "rows": n, "mode": f"cold, {ns.cap_mib} MiB cap", "prefetch": "on",
                     "candidates": spec["candidates"], **r, "load": [l0[0], load_avg()[0]]})  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)
    report = {
        "machine": versions(),
        "command": " ".join([sys.executable, *sys.argv]),
        "rows": n,
        "threads": ns.threads,
        "cap_mib": ns.cap_mib,
        "prepared": info,
        "passes": rows,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    ns.results.parent.mkdir(exist_ok=True)
    tmp = ns.results.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(report, indent=2) + "\n")
    os.replace(tmp, ns.results)


if __name__ == "__main__":
    main()
