"""DiskANN (``diskannpy`` 0.7.0 ``StaticDiskIndex``) for ``out_of_ram.py`` (issue 22): build, tune, one measured pass.

Runs in its own numpy<2 venv (``/work/venvs/peers-np1``, ``benchmarks/peers/requirements-diskann.txt``), so it
imports nothing of the library. The index: a Vamana graph + the full float vectors on disk (read with direct I/O,
``O_DIRECT``: the page cache never holds them), ``pq_bytes`` PQ codes a vector in RAM
(``search_memory_maximum = (pq_bytes + 0.5) * n`` bytes: DiskANN takes ``floor(budget / n)`` chunks), and an
optional BFS node cache (``num_nodes_to_cache``, each node 4 * (d + 1 + R) bytes in RAM). Metric ``l2``: the rows
are unit norm, so its order is the inner product's.

    python out_of_ram_diskann.py build --corpus X.npy --rows 1000000 --out DIR --R 32 --L 64 --pq-bytes 16 --threads 2
    python out_of_ram_diskann.py tune --corpus X.npy --rows N --index DIR --truth T.npy ...   (oracle search L)
    python out_of_ram_diskann.py --child SPEC_JSON                                            (one measured pass)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np

K = 10
N_QUERIES = 1000


def read_bytes() -> int:
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("read_bytes:"):
            return int(line.split()[1])
    return 0


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f[:K]) & set(t[:K])) / K for f, t in zip(found, truth, strict=True)]))


def build(ns: argparse.Namespace) -> None:
    import diskannpy

    out = Path(ns.out)
    out.mkdir(parents=True, exist_ok=True)
    x = np.load(ns.corpus, mmap_mode="r")
    data_bin = out / "data.bin"  # DiskANN's own format: int32 n, int32 d, then the rows
    if not data_bin.exists():
        tmp = data_bin.with_suffix(".bin.tmp")
        with open(tmp, "wb") as f:
            np.array([ns.rows, x.shape[1]], dtype=np.int32).tofile(f)
            for s in range(0, ns.rows, 65536):
                np.ascontiguousarray(x[s : min(s + 65536, ns.rows)], dtype=np.float32).tofile(f)
        os.replace(tmp, data_bin)
    budget_gb = (ns.pq_bytes + 0.5) * ns.rows / 2**30
    t0 = time.perf_counter()
    diskannpy.build_disk_index(
        data=str(data_bin),
        distance_metric="l2",
        index_directory=str(out),
        complexity=ns.L,
        graph_degree=ns.R,
        search_memory_maximum=budget_gb,
        build_memory_maximum=ns.build_memory_gb,
        num_threads=ns.threads,
        pq_disk_bytes=0,
        vector_dtype=np.float32,
    )
    info = {
        "R": ns.R,
        "L": ns.L,
        "pq_bytes": ns.pq_bytes,
        "rows": ns.rows,
        "threads": ns.threads,
        "build_s": round(time.perf_counter() - t0, 1),
        "search_memory_maximum_gb": budget_gb,
        "build_memory_maximum_gb": ns.build_memory_gb,
        "max_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "disk_bytes": int(sum(p.stat().st_size for p in out.glob("ann*"))),
        "load": [round(v, 2) for v in os.getloadavg()],
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    data_bin.unlink()  # the disk index holds its own copy of the rows
    (out / "build.json").write_text(json.dumps(info, indent=2) + "\n")
    print(json.dumps(info))


def open_index(spec: dict):
    import diskannpy

    return diskannpy.StaticDiskIndex(
        index_directory=spec["index"],
        num_threads=spec["threads"],
        num_nodes_to_cache=spec["cache_nodes"],
        cache_mechanism=1,  # BFS from the medoid
        distance_metric="l2",
        vector_dtype=np.float32,
        dimensions=384,
    )


def ids_of(res) -> np.ndarray:
    return np.asarray(res.identifiers if hasattr(res, "identifiers") else res[0], dtype=np.int64)


def tune(spec: dict) -> dict:
    """Recall of each search L on the tuning queries (batched, all threads): the oracle picks the least L."""
    x = np.load(spec["corpus"], mmap_mode="r")
    queries = np.ascontiguousarray(x[spec["rows"] :], dtype=np.float32)[: spec["n_tune"]]
    truth = np.load(spec["truth"])[: spec["n_tune"]]
    index = open_index(spec)
    out = {}
    for c in spec["ladder"]:
        t0 = time.perf_counter()
        ids = ids_of(
            index.batch_search(queries, k_neighbors=K, complexity=c, num_threads=spec["threads"], beam_width=spec["beam_width"])
        )  # fmt: skip
        r = recall(ids, truth)
        out[str(c)] = {"recall@10": round(r, 4), "seconds": round(time.perf_counter() - t0, 1)}
        print(json.dumps({"L": c, **out[str(c)]}), file=sys.stderr, flush=True)
        if r >= spec.get("stop_at", 0.995):
            break
    return out


def child(spec: dict) -> dict:
    """One measured pass set, as ``out_of_ram.child``: single queries one after another, then one batch."""
    x = np.load(spec["corpus"], mmap_mode="r")
    queries = np.ascontiguousarray(x[spec["rows"] :], dtype=np.float32)
    truth = np.load(spec["truth"])
    del x
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    index = open_index(spec)
    c, w = spec["complexity"], spec["beam_width"]
    res: dict = {"rss_after_load_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    res["load_rss_mib"] = round((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024, 1)
    n1 = spec["n_single"]
    rb0, mf0 = read_bytes(), resource.getrusage(resource.RUSAGE_SELF).ru_majflt
    times, found = [], []
    for i in range(n1):
        t0 = time.perf_counter()
        found.append(ids_of(index.search(queries[i], k_neighbors=K, complexity=c, beam_width=w))[None, :K])
        times.append(time.perf_counter() - t0)
        if i >= 29 and sum(times) > spec["max_seconds"]:
            break
    n1 = len(times)
    rb1, mf1 = read_bytes(), resource.getrusage(resource.RUSAGE_SELF).ru_majflt
    ms = np.array(times) * 1000
    res["single"] = {
        "queries": n1,
        "qps": round(n1 / float(np.sum(times)), 1),
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p99_ms": round(float(np.percentile(ms, 99)), 2),
        "read_bytes_per_query": round((rb1 - rb0) / n1),
        "major_faults_per_query": round((mf1 - mf0) / n1, 1),
        "recall@10": round(recall(np.concatenate(found), truth[:n1]), 4),
    }
    nb = spec["n_batch"]
    qb = queries[N_QUERIES - nb :]
    rb0, mf0 = read_bytes(), resource.getrusage(resource.RUSAGE_SELF).ru_majflt
    t0 = time.perf_counter()
    ids = ids_of(index.batch_search(qb, k_neighbors=K, complexity=c, num_threads=spec["threads"], beam_width=w))
    t = time.perf_counter() - t0
    rb1, mf1 = read_bytes(), resource.getrusage(resource.RUSAGE_SELF).ru_majflt
    res["batch"] = {
        "queries": nb,
        "qps": round(nb / t, 1),
        "read_bytes_per_query": round((rb1 - rb0) / nb),
        "major_faults_per_query": round((mf1 - mf0) / nb, 1),
        "recall@10": round(recall(ids, truth[N_QUERIES - nb :]), 4),
    }
    res["max_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return res


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        print(json.dumps(child(json.loads(sys.argv[2]))))
        return
    if len(sys.argv) > 2 and sys.argv[1] == "--tune":
        print(json.dumps(tune(json.loads(sys.argv[2]))))
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("action", choices=["build"])
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--rows", type=int, required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--R", type=int, default=32)
    ap.add_argument("--L", type=int, default=64)
    ap.add_argument("--pq-bytes", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--build-memory-gb", type=float, default=6.0)
    build(ap.parse_args())


if __name__ == "__main__":
    main()
