"""Qdrant's own set-up for a collection larger than RAM, in qdrant-edge, for ``out_of_ram.py`` (issue 22).

What Qdrant recommends once the vectors outgrow RAM ("When your collection outgrows RAM", "Memory tiers"):
one vector of the full dimension, the originals on disk (``Memory.Cold``: memory-mapped, not pre-warmed), a
quantized copy pinned in RAM (binary 1 bit = 48 B a vector here, or TurboQuant), the HNSW graph built on them
(defaults m=16, ef_construct=100), and rescoring against the originals with oversampling. Our qdrant-edge
backend cannot express this (it always searches an adapted-prefix ``coarse`` vector and reranks a second,
``full`` one), so this file drives qdrant-edge directly, the way the backend does (``EdgeShard``,
``QueryRequest``, ``query_batch``). The oracle tunes ``oversampling`` and ``hnsw_ef`` for the least work reaching
each recall target (warm, on the tuning queries).

    python out_of_ram_qdrant.py build --corpus X.npy --rows N --out DIR --code binary --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import qdrant_edge as qe

K = 10
N_QUERIES = 1000
VECTOR = "v"


def read_bytes() -> int:
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("read_bytes:"):
            return int(line.split()[1])
    return 0


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f[:K]) & set(t[:K])) / K for f, t in zip(found, truth, strict=True)]))


def quantization(code: str):
    if code == "binary":
        return qe.BinaryQuantizationConfig(memory=qe.Memory.Pinned)
    if code.startswith("turbo"):
        bits = {"turbo4": "Bits4", "turbo2": "Bits2", "turbo1": "Bits1"}[code]
        return qe.TurboQuantQuantizationConfig(bits=getattr(qe.TurboQuantBitSize, bits), memory=qe.Memory.Pinned)
    raise SystemExit(f"unknown code {code}")


def config(code: str, m: int, ef_construct: int, threads: int, graph_memory: str | None):
    hnsw = qe.HnswIndexConfig(
        m=m,
        ef_construct=ef_construct,
        full_scan_threshold=10_000,
        max_indexing_threads=threads,
        memory=getattr(qe.Memory, graph_memory) if graph_memory else None,
    )
    return qe.EdgeConfig(
        vectors={
            VECTOR: qe.EdgeVectorParams(
                size=384,
                distance=qe.Distance.Dot,  # unit-norm rows: Cosine's order, no re-normalising
                hnsw_config=hnsw,
                quantization_config=quantization(code),
                memory=qe.Memory.Cold,  # the originals on disk, read only to rescore
            )
        },
        max_search_threads=threads,
        wal_enabled=False,
    )


def build(ns: argparse.Namespace) -> None:
    out = Path(ns.out)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    x = np.load(ns.corpus, mmap_mode="r")
    cfg = config(ns.code, ns.m, ns.ef_construct, ns.threads, ns.graph_memory)
    shard = qe.EdgeShard.create(str(out / "shard"), cfg)
    t0 = time.perf_counter()
    for s in range(0, ns.rows, 1024):
        block = np.ascontiguousarray(x[s : min(s + 1024, ns.rows)], dtype=np.float32)
        shard.update(qe.UpdateOperation.upsert_points([qe.Point(s + i, {VECTOR: v}) for i, v in enumerate(block)]))
    upsert_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    shard.optimize()
    optimize_s = time.perf_counter() - t0
    shard.flush()
    shard.close()
    info = {
        "code": ns.code,
        "m": ns.m,
        "ef_construct": ns.ef_construct,
        "graph_memory": ns.graph_memory,
        "rows": ns.rows,
        "threads": ns.threads,
        "upsert_s": round(upsert_s, 1),
        "optimize_s": round(optimize_s, 1),
        "max_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "disk_bytes": int(sum(p.stat().st_size for p in (out / "shard").rglob("*") if p.is_file())),
        "load": [round(v, 2) for v in os.getloadavg()],
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    (out / "build.json").write_text(json.dumps(info, indent=2) + "\n")
    print(json.dumps(info))


def open_shard(spec: dict):
    b = json.loads((Path(spec["index"]) / "build.json").read_text())
    cfg = config(b["code"], b["m"], b["ef_construct"], spec["threads"], b.get("graph_memory"))
    return qe.EdgeShard.load(str(Path(spec["index"]) / "shard"), cfg)


def searcher(shard, oversampling: float, hnsw_ef: int):
    params = qe.SearchParams(
        hnsw_ef=hnsw_ef, quantization=qe.QuantizationSearchParams(rescore=True, oversampling=oversampling)
    )

    def search(q: np.ndarray) -> np.ndarray:
        reqs = [qe.QueryRequest(limit=K, query=qe.Query.Nearest(v, using=VECTOR), params=params) for v in q]
        out = np.full((len(q), K), -1, dtype=np.int64)
        for s in range(0, len(reqs), 256):
            for row, pts in enumerate(shard.query_batch(qe.QueryBatchRequest(reqs[s : s + 256])), start=s):
                for col, p in enumerate(pts[:K]):
                    out[row, col] = p.id
        return out

    return search


def tune(spec: dict) -> dict:
    """Recall of each (oversampling, hnsw_ef) on the tuning queries, warm: the oracle picks the least work."""
    x = np.load(spec["corpus"], mmap_mode="r")
    queries = np.ascontiguousarray(x[spec["rows"] :], dtype=np.float32)[: spec["n_tune"]]
    truth = np.load(spec["truth"])[: spec["n_tune"]]
    shard = open_shard(spec)
    out = {}
    for ov in spec["oversampling"]:
        for ef in spec["hnsw_ef"]:
            t0 = time.perf_counter()
            r = recall(searcher(shard, ov, ef)(queries), truth)
            out[f"{ov}/{ef}"] = {"recall@10": round(r, 4), "seconds": round(time.perf_counter() - t0, 2)}
            print(json.dumps({"oversampling": ov, "hnsw_ef": ef, **out[f"{ov}/{ef}"]}), file=sys.stderr, flush=True)
            if r >= 0.995:
                break
    shard.close()
    return out


def child(spec: dict) -> dict:
    """One measured pass set, as ``out_of_ram.child``: single queries one after another, then one batch."""
    x = np.load(spec["corpus"], mmap_mode="r")
    queries = np.ascontiguousarray(x[spec["rows"] :], dtype=np.float32)
    truth = np.load(spec["truth"])
    del x
    shard = open_shard(spec)
    search = searcher(shard, spec["oversampling"], spec["hnsw_ef"])
    res: dict = {"cache_drop": None}
    if not spec["cold"]:
        search(queries)
    else:
        from out_of_ram import drop_cache

        res["cache_drop"] = drop_cache([Path(spec["index"])])
    rb0, mf0 = read_bytes(), resource.getrusage(resource.RUSAGE_SELF).ru_majflt
    times, found = [], []
    for i in range(spec["n_single"]):
        t0 = time.perf_counter()
        found.append(search(queries[i : i + 1]))
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
    if spec["cold"]:
        from out_of_ram import drop_cache

        drop_cache([Path(spec["index"])])
    rb0, mf0 = read_bytes(), resource.getrusage(resource.RUSAGE_SELF).ru_majflt
    t0 = time.perf_counter()
    ids = search(qb)
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
    shard.close()
    return res


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] in ("--child", "--tune"):
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        fn = child if sys.argv[1] == "--child" else tune
        print(json.dumps(fn(json.loads(sys.argv[2]))))
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("action", choices=["build"])
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--rows", type=int, required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--code", default="binary")
    ap.add_argument("--m", type=int, default=16)
    ap.add_argument("--ef-construct", type=int, default=100)
    ap.add_argument("--graph-memory", default=None, help="Pinned / Cached / Cold (default: the engine's)")
    ap.add_argument("--threads", type=int, default=2)
    build(ap.parse_args())


if __name__ == "__main__":
    main()
