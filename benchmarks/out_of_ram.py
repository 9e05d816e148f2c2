"""Search when the full vectors do not fit in the memory the process may use (issue 22, the measurement part).

A synthetic 1,000,000 x 384 float32 corpus (1.5 GB; :func:`search_speed.write_synthetic` with ``_machine.SYNTHETIC``,
1,001,000 rows written once under ``--work``, the last 1,000 the queries). Indexes built once, unlimited, saved
under ``--work``:

* ours ``64 flat pq4x32 itq`` (16 B/vector, balance ITQ) and ``64 ivf pq4x32``, calibrated defaults;
* FAISS ``IVF1024,PQ32x4fs`` on the 384-dim vectors, the refine a gather from ``np.load(mmap_mode='r')`` of the
  corpus (``faiss.knn_inner_products_by_idx``, as ``frontier.py``'s baselines), advised ``MADV_RANDOM`` like
  ours; its ``nprobe`` and candidates tuned as an oracle (fewest candidates reaching the target, warm).

Each measurement runs in a child process (this file with ``--child``), in a memory cgroup (v1 or v2, as
``memory_limit.py``) of ``--cap-mib`` for the cold runs, none for the warm ones; before each cold pass the page
cache is dropped (``sync; echo 3 > /proc/sys/vm/drop_caches``, and ``posix_fadvise(DONTNEED)`` on the index's
files). Per pass: single queries one after another (queries/s, p50, p99), then one batch; bytes read from the
disk per query from ``/proc/self/io`` ``read_bytes``, major faults from ``getrusage``. Ours runs with the rerank
prefetch on and off (``MINDEX_RERANK_PREFETCH``). Threads: ``--threads`` (default 2) for every method.

    python benchmarks/out_of_ram.py [--work /work/data-ooram] [--cap-mib 256] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results"
sys.path.insert(0, str(HERE))
K = 10
N_ROWS, N_QUERIES = 1_000_000, 1000
LADDER = [10, 14, 20, 28, 40, 57, 80, 113, 160, 226, 320, 453, 640, 905, 1280, 1810, 2560, 3620, 5120]
OURS = {  # name -> build options
    "ours 64 flat pq4x32 itq": {"index": "flat", "backend_options": {"code": "pq4", "pq_m": 32, "balance": "itq"}},
    "ours 64 ivf pq4x32": {"index": "ivf", "backend_options": {"code": "pq4", "pq_m": 32}},
    # 64 B a vector: half of what Qdrant's set-up keeps, to see whether more bytes for the coarse codes pay back
    "ours 64 flat sq8": {"index": "flat", "backend_options": {"code": "sq8"}},
}
BASELINE = "FAISS IVF1024,PQ32x4fs + refine from mmap"
TARGETS = (0.99, 0.95)
# the peers: built beforehand by their own scripts into --work (outside the cap), tuned here as oracles
DISKANN_PYTHON = os.environ.get("OORAM_DISKANN_PYTHON", "/work/venvs/peers-np1/bin/python")  # numpy<2 venv
DISKANN_DIR = "diskann-R32-L64-pq16"  # out_of_ram_diskann.py build --R 32 --L 64 --pq-bytes 16
DISKANN_BEAM = 4
DISKANN_CACHES = {"DiskANN R32 L64 PQ16 beam 4, no cache": 0, "DiskANN R32 L64 PQ16 beam 4, cache 50k nodes": 50_000}
DISKANN_LADDER = [10, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048, 3072, 4096]
QDRANT_DIR = "qdrant-binary-m16"  # out_of_ram_qdrant.py build --code binary (HNSW m16 ef_construct 100)
QDRANT = "Qdrant-edge HNSW m16 + binary codes pinned, originals on disk, rescore"
QDRANT_OVERSAMPLING = [1.0, 2.0, 4.0, 8.0, 12.0, 16.0, 24.0, 32.0, 48.0, 64.0, 100.0]
QDRANT_EF = [64, 128, 256, 512]  # the engine searches max(hnsw_ef, limit x oversampling)
ALL_METHODS = [*OURS, BASELINE, *DISKANN_CACHES, QDRANT]
N_TUNE = 500  # the peers' oracle tuning queries (the first 500 of the 1,000)


def load_avg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def drop_cache(paths: list[Path]) -> str:
    """Drop the page cache: globally where allowed, and the given files' pages in any case; says which."""
    how = []
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        how.append("drop_caches")
    except OSError:
        pass
    for root in paths:
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for f in files:
            fd = os.open(f, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)
    how.append("posix_fadvise(DONTNEED) on the index's files")
    return " + ".join(how)


def read_bytes() -> int:
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("read_bytes:"):
            return int(line.split()[1])
    return 0


def refine(full, q, rows):
    """Best ``K`` of the candidate ``rows`` by full inner product, one C++ gather from ``full`` (a memory map)."""
    import faiss
    import numpy as np

    c = rows.shape[1]
    rows = np.ascontiguousarray(np.where(rows >= 0, rows, np.iinfo(np.int64).max))
    rows.sort(axis=1)  # valid rows first (the C++ loop stops at the first invalid one)
    vals = np.empty((len(q), K), dtype=np.float32)
    out = np.empty((len(q), K), dtype=np.int64)
    faiss.knn_inner_products_by_idx(
        faiss.swig_ptr(q), faiss.swig_ptr(full), faiss.swig_ptr(rows),
        full.shape[1], len(q), len(full), c, K, faiss.swig_ptr(vals), faiss.swig_ptr(out), c,
    )  # fmt: skip
    return out


# ---------------------------------------------------------------------- the child: one measured pass set
def child(spec: dict) -> dict:
    import faiss
    import numpy as np

    from matryoshka_index.quality.index_recall import recall_at_k

    global N_ROWS
    N_ROWS = spec["rows"]
    faiss.omp_set_num_threads(spec["threads"])
    x = np.load(spec["corpus"], mmap_mode="r")
    queries = np.ascontiguousarray(x[N_ROWS:], dtype=np.float32)
    truth = np.load(spec["truth"])
    del x
    if spec["kind"] == "ours":
        from matryoshka_index import MatryoshkaIndex

        index = MatryoshkaIndex.load(spec["path"], verify=False)

        def search(q):
            return index.search(q, k=K, candidates=spec["candidates"])[1]
    else:
        from matryoshka_index.storage import advise_random

        coarse = faiss.read_index(spec["path"])
        coarse.nprobe = spec["nprobe"]
        full = np.load(spec["corpus"], mmap_mode="r")[:N_ROWS]
        advise_random(full)

        def search(q):
            return refine(full, q, coarse.search(q, spec["candidates"])[1])

    files = [Path(p) for p in spec["files"]]
    res: dict[str, Any] = {}
    if not spec["cold"]:
        search(queries)  # warm: every page the passes need is read once first
    # single queries, one after another
    n1 = spec["n_single"]
    dropped = drop_cache(files) if spec["cold"] else None
    rb0, mf0 = read_bytes(), resource.getrusage(resource.RUSAGE_SELF).ru_majflt
    times, found = [], []
    for i in range(n1):
        t0 = time.perf_counter()
        found.append(search(queries[i : i + 1]))
        times.append(time.perf_counter() - t0)
        if i >= 29 and sum(times) > spec["max_seconds"]:  # a slow configuration: fewer queries, said in the row
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
        "recall@10": round(float(recall_at_k(np.concatenate(found), truth[:n1])), 4),
    }
    # one batch
    nb = spec["n_batch"] if not spec["cold"] or spec["candidates"] <= 2000 else spec["n_batch"] // 4
    qb = queries[N_QUERIES - nb :]
    if spec["cold"]:
        drop_cache(files)
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
        "recall@10": round(float(recall_at_k(ids, truth[N_QUERIES - nb :])), 4),
    }
    res["cache_drop"] = dropped
    res["max_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return res


def child_argv(kind: str, flag: str = "--child") -> list[str]:
    """The interpreter and script of a method's child: ours and FAISS here, the peers their own files."""
    if kind == "diskann":
        return [DISKANN_PYTHON, str(HERE / "out_of_ram_diskann.py"), flag]
    if kind == "qdrant":
        return [sys.executable, str(HERE / "out_of_ram_qdrant.py"), flag]
    return [sys.executable, str(Path(__file__).resolve()), flag]


def spawn(spec: dict, cap_mib: int | None, env_extra: dict[str, str], timeout: float) -> dict:
    from memory_limit import Cgroup

    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS=str(spec["threads"]), MINDEX_QUIET="1", **env_extra)
    cg = Cgroup(f"mindex-ooram-{os.getpid()}", cap_mib * 2**20 if cap_mib else None)
    dropped = None
    if spec["cold"] and spec["kind"] == "diskann":  # its reads are O_DIRECT: the drop is for its load only
        dropped = drop_cache([Path(p) for p in spec["files"]])
    t0 = time.perf_counter()
    proc = subprocess.run(
        [*child_argv(spec["kind"]), json.dumps(spec)],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        preexec_fn=cg.enter,
        cwd=str(REPO.parent),
    )
    peak = cg.peak()
    cg.close()
    out: dict[str, Any] = {"rc": proc.returncode, "seconds": round(time.perf_counter() - t0, 1)}
    out["cgroup_peak_mib"] = round(peak / 2**20, 1) if peak else None
    if proc.returncode == 0:
        out.update(json.loads(proc.stdout.strip().splitlines()[-1]))
        if dropped:
            out["cache_drop"] = dropped + " (before the process started)"
    else:
        out["stderr_tail"] = proc.stderr.strip().splitlines()[-3:]
    return out


# ---------------------------------------------------------------------- preparing (unlimited, once)
def prepare(work: Path, threads: int, selected: set[str]) -> dict:
    """Corpus, truth, adaptor, the selected methods' indexes and their settings; what exists is kept."""
    import faiss
    import numpy as np
    from _machine import SYNTHETIC
    from search_speed import write_synthetic

    from matryoshka_index import MatryoshkaAdaptor, MatryoshkaIndex
    from matryoshka_index.quality.index_recall import recall_at_k

    faiss.omp_set_num_threads(threads)
    work.mkdir(parents=True, exist_ok=True)
    corpus_path = work / f"synthetic-{N_ROWS + N_QUERIES}x384.npy"
    info_path = work / "prepared.json"
    info = json.loads(info_path.read_text()) if info_path.exists() else {}
    if not corpus_path.exists():
        t0 = time.perf_counter()
        write_synthetic(corpus_path, N_ROWS + N_QUERIES, 384, **SYNTHETIC)
        info["corpus_write_s"] = round(time.perf_counter() - t0, 1)
    x = np.load(corpus_path, mmap_mode="r")
    corpus, queries = x[:N_ROWS], np.ascontiguousarray(x[N_ROWS:], dtype=np.float32)
    truth_path = work / "truth.npy"
    if not truth_path.exists():
        t0 = time.perf_counter()
        flat = faiss.IndexFlatIP(384)
        for s in range(0, N_ROWS, 100_000):
            flat.add(np.ascontiguousarray(corpus[s : s + 100_000]))
        np.save(truth_path, flat.search(queries, K)[1])
        del flat
        info["truth_s"] = round(time.perf_counter() - t0, 1)
    truth = np.load(truth_path)
    adaptor_dir = work / "adaptor"
    if not (adaptor_dir / "adaptor.json").exists() and any(n in selected for n in OURS):
        t0 = time.perf_counter()
        rows = np.sort(np.random.default_rng(0).choice(N_ROWS, size=min(N_ROWS // 4, 30_000), replace=False))
        MatryoshkaAdaptor(quiet=True, max_samples=len(rows)).fit(np.asarray(corpus[rows])).save(adaptor_dir)
        info["adaptor_fit_s"] = round(time.perf_counter() - t0, 1)
    adaptor = MatryoshkaAdaptor.load(adaptor_dir) if (adaptor_dir / "adaptor.json").exists() else None
    for name, opts in OURS.items():
        path = work / (name.replace(" ", "-") + ".mindex")
        if path.exists() or name not in selected:
            continue
        t0 = time.perf_counter()
        idx = MatryoshkaIndex.build(
            corpus,
            coarse_dim=64,
            adaptor=adaptor,
            index=opts["index"],
            backend_options={**opts["backend_options"], "spill_dir": str(work)},
            quiet=True,
        )
        info.setdefault("build_s", {})[name] = round(time.perf_counter() - t0, 1)
        idx.save(path)
        del idx
    base_path = work / "ivf1024-pq32x4fs.faiss"
    if not base_path.exists() and BASELINE in selected:
        t0 = time.perf_counter()
        nlist = min(1024, N_ROWS // 40)  # 1024 at 1M; fewer only in a small trial
        base = faiss.index_factory(384, f"IVF{nlist},PQ32x4fs", faiss.METRIC_INNER_PRODUCT)
        rows = np.sort(np.random.default_rng(1).choice(N_ROWS, size=min(N_ROWS, 65_536), replace=False))
        base.train(np.ascontiguousarray(corpus[rows]))
        for s in range(0, N_ROWS, 100_000):
            base.add(np.ascontiguousarray(corpus[s : s + 100_000]))
        faiss.write_index(base, str(base_path))
        info.setdefault("build_s", {})[BASELINE] = round(time.perf_counter() - t0, 1)
        del base
    # the settings per target, tuned warm in this process on all 1,000 queries; a method tuned by an earlier run
    # on these same files keeps its settings (delete its entry in prepared.json to retune)
    settings: dict[str, dict] = info.setdefault("settings", {})
    info["corpus"] = str(corpus_path)
    info["truth"] = str(truth_path)
    for name in OURS:
        if name in settings or name not in selected:
            continue
        path = work / (name.replace(" ", "-") + ".mindex")
        idx = MatryoshkaIndex.load(path, verify=False)
        mem = idx.backend.memory()
        calibrated = int(idx.candidates)
        rec = {c: recall_at_k(idx.search(queries, k=K, candidates=c)[1], truth) for c in LADDER if c <= 4 * calibrated}
        rec[calibrated] = recall_at_k(idx.search(queries, k=K, candidates=calibrated)[1], truth)
        settings[name] = {
            "path": str(path),
            "files": [str(path)],
            "calibrated_candidates": calibrated,
            "knob": idx.calibration.get("knob"),
            "resident_bytes_per_vector": mem["resident_bytes_per_vector"],
            "recall_by_candidates": {str(c): round(float(r), 4) for c, r in sorted(rec.items())},
            # 0.99: the calibrated default, what a user gets; 0.95: the fewest candidates reaching it (oracle)
            "candidates": {
                "0.99": calibrated,
                "0.95": min((c for c, r in rec.items() if r >= 0.95), default=calibrated),
            },
        }
        del idx
        info_path.write_text(json.dumps(info, indent=2) + "\n")
    if any(n in selected for n in DISKANN_CACHES):
        tune_diskann(work, info, threads)
        info_path.write_text(json.dumps(info, indent=2) + "\n")
    if QDRANT in selected:
        tune_qdrant(work, info, threads)
        info_path.write_text(json.dumps(info, indent=2) + "\n")
    if BASELINE in settings or BASELINE not in selected:
        return info
    base = faiss.read_index(str(base_path))
    full = corpus
    grid = {}
    for nprobe in (64, 128, 256, 512, 1024):  # 16 and 32 stay below 0.93 at any candidates (first run)
        base.nprobe = nprobe
        for c in [*LADDER, 7240, 10240]:
            _, rows = base.search(queries, c)
            r = float(recall_at_k(refine(full, queries, rows), truth))
            grid[(nprobe, c)] = r
            if r >= 0.99:
                break
    chosen = {}
    for t in TARGETS:
        ok = [(c, nprobe) for (nprobe, c), r in grid.items() if r >= t]
        c, nprobe = min(ok) if ok else (None, None)
        chosen[str(t)] = {"nprobe": nprobe, "candidates": c}
    codes_bytes = base_path.stat().st_size
    settings[BASELINE] = {
        "path": str(base_path),
        "files": [str(base_path), str(corpus_path)],
        "resident_bytes_per_vector": round(codes_bytes / N_ROWS, 2),
        "grid": {f"{n}/{c}": round(r, 4) for (n, c), r in grid.items()},
        "chosen": chosen,
    }
    info_path.write_text(json.dumps(info, indent=2) + "\n")
    return info


def run_tuner(kind: str, spec: dict) -> dict:
    """A peer's oracle tuning, in its own child process (no cap, warm where the peer uses the page cache)."""
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS=str(spec["threads"]))
    proc = subprocess.run([*child_argv(kind, "--tune"), json.dumps(spec)], env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"{kind} tuning failed: {proc.stderr.strip().splitlines()[-3:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def tune_diskann(work: Path, info: dict, threads: int) -> None:
    """DiskANN's search L per target: the least L on the ladder whose recall@10 reaches it (beam width 4)."""
    index = work / DISKANN_DIR
    if all(n in info["settings"] for n in DISKANN_CACHES):
        return
    if not (index / "build.json").exists():
        sys.exit(f"{index}: no DiskANN index; build it first with out_of_ram_diskann.py build")
    build = json.loads((index / "build.json").read_text())
    spec = {"index": str(index), "threads": threads, "cache_nodes": 0, "corpus": info["corpus"], "truth": info["truth"],
            "rows": N_ROWS, "n_tune": N_TUNE, "ladder": DISKANN_LADDER, "beam_width": DISKANN_BEAM, "stop_at": 0.995}  # fmt: skip
    t0 = time.perf_counter()
    grid = run_tuner("diskann", spec)
    chosen = {str(t): min((int(c) for c, g in grid.items() if g["recall@10"] >= t), default=None) for t in TARGETS}
    for name, cache in DISKANN_CACHES.items():
        node = 4 * (384 + 1 + build["R"])  # a cached node: its full vector, its degree, its R neighbours
        info["settings"][name] = {
            "path": str(index),
            "files": [str(index)],
            "build": build,
            "cache_nodes": cache,
            "beam_width": DISKANN_BEAM,
            # in RAM: the PQ codes (pq_bytes a vector), the cache; pivots and the medoid are fixed (about 0.4 MB)
            "resident_bytes_per_vector": round(build["pq_bytes"] + cache * node / N_ROWS, 2),
            "grid": grid,
            "chosen": chosen,
            "tune_queries": N_TUNE,
            "tune_s": round(time.perf_counter() - t0, 1),
        }


def qdrant_resident(index: Path) -> dict:
    """Bytes a vector of what Qdrant keeps in RAM: the quantized codes (pinned) and the HNSW graph's links."""
    files = [p for p in (index / "shard").rglob("*") if p.is_file()]
    quant = sum(allocated(p) for p in files if p.name.startswith("quantized"))
    graph = sum(allocated(p) for p in files if "links" in p.name)
    ids = sum(allocated(p) for p in files if p.name.startswith("id_tracker"))  # point id <-> offset maps
    return {"codes": round(quant / N_ROWS, 2), "graph": round(graph / N_ROWS, 2), "ids": round(ids / N_ROWS, 2)}


def allocated(p: Path) -> int:
    return p.stat().st_blocks * 512  # the engine preallocates: count what the file holds, not its length


def tune_qdrant(work: Path, info: dict, threads: int) -> None:
    """Qdrant's oversampling and hnsw_ef per target: fewest rescored candidates (oversampling x k), then least ef."""
    if QDRANT in info["settings"]:
        return
    index = work / QDRANT_DIR
    if not (index / "build.json").exists():
        sys.exit(f"{index}: no Qdrant shard; build it first with out_of_ram_qdrant.py build")
    spec = {"index": str(index), "threads": threads, "corpus": info["corpus"], "truth": info["truth"], "rows": N_ROWS,
            "n_tune": N_TUNE, "oversampling": QDRANT_OVERSAMPLING, "hnsw_ef": QDRANT_EF}  # fmt: skip
    t0 = time.perf_counter()
    grid = run_tuner("qdrant", spec)
    chosen = {}
    for t in TARGETS:
        ok = sorted((float(k.split("/")[0]), int(k.split("/")[1])) for k, g in grid.items() if g["recall@10"] >= t)
        chosen[str(t)] = {"oversampling": ok[0][0], "hnsw_ef": ok[0][1]} if ok else None
    res = qdrant_resident(index)
    info["settings"][QDRANT] = {
        "path": str(index),
        "files": [str(index)],
        "build": json.loads((index / "build.json").read_text()),
        "resident_bytes_per_vector": round(res["codes"] + res["graph"] + res["ids"], 2),
        "resident_parts": res,
        "grid": grid,
        "chosen": chosen,
        "tune_queries": N_TUNE,
        "tune_s": round(time.perf_counter() - t0, 1),
    }


def qdrant_edge_version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("qdrant-edge-py")
    except PackageNotFoundError:
        return None


def versions() -> dict:
    import faiss
    import numpy as np

    import matryoshka_index

    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--", "matryoshka_index", "benchmarks"],
                           capture_output=True, text=True)  # fmt: skip
    return {
        "commit": commit.stdout.strip() + (" (dirty)" if dirty.stdout.strip() else ""),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "faiss": faiss.__version__,
        "qdrant_edge": qdrant_edge_version(),
        "matryoshka_index": getattr(matryoshka_index, "__version__", "?"),
        "kernel": platform.release(),
        "cores": os.cpu_count(),
        "ram_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=Path("/tmp/o22m-data"))
    ap.add_argument(
        "--rows", type=int, default=1_000_000, help="corpus rows (a small number: a quick trial of this script)"
    )
    ap.add_argument("--cap-mib", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--single", type=int, default=150, help="single queries per pass")
    ap.add_argument("--batch", type=int, default=200, help="queries in the batch pass")
    ap.add_argument("--results", type=Path, default=HERE / "results", help="where out_of_ram.md/.json go")
    ap.add_argument(
        "--max-seconds", type=float, default=45.0, help="stop a single-query pass after this (>= 30 queries)"
    )
    ap.add_argument("--only", default="", help="';'-separated method names (default all)")
    ap.add_argument("--repeat", type=int, default=1, help="run the whole interleaved plan this many times")
    ap.add_argument("--prepare-only", action="store_true", help="build and tune the selected methods, no passes")
    ap.add_argument("--prefetch", default="on,off", help="ours: the rerank prefetch settings to run (on,off)")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--report-only", action="store_true", help="rewrite the .md from the .json")
    ns = ap.parse_args()
    if ns.child is not None:
        print(json.dumps(child(json.loads(ns.child))))
        return
    global RESULTS, N_ROWS
    RESULTS = ns.results
    N_ROWS = ns.rows
    if ns.report_only:
        write_report(json.loads((RESULTS / "out_of_ram.json").read_text()))
        return
    if os.geteuid() != 0:
        sys.exit("needs root (a memory cgroup and drop_caches)")
    started = time.time()
    machine = versions()
    command = " ".join([sys.executable, *sys.argv])
    only = {s.strip() for s in ns.only.split(";") if s.strip()}  # not ",": the baseline's name has one
    methods = [n for n in ALL_METHODS if not only or n in only]
    load0 = load_avg()
    info = prepare(ns.work, ns.threads, set(methods))
    load1 = load_avg()
    if ns.prepare_only:
        return
    prefetches = [p.strip() for p in ns.prefetch.split(",")]
    plan = []
    for t, repeat in ((t, i) for i in range(ns.repeat) for t in TARGETS):  # interleaved: all methods at a target
        for name in methods:
            st = info["settings"][name]
            if name == BASELINE:
                ch = st["chosen"][str(t)]
                if ch["candidates"] is None:
                    continue
                variants = [("-", {}, {"kind": "faiss", "nprobe": ch["nprobe"], "candidates": ch["candidates"]})]
                setting = f"nprobe {ch['nprobe']}"
            elif name in DISKANN_CACHES:
                c = st["chosen"][str(t)]
                if c is None:
                    continue
                extra = {"kind": "diskann", "index": st["path"], "complexity": c, "beam_width": st["beam_width"],
                         "cache_nodes": st["cache_nodes"], "candidates": c}  # fmt: skip
                variants = [("-", {}, extra)]
                setting = f"search L {c}, beam {st['beam_width']}, cache {st['cache_nodes']:,} nodes"
            elif name == QDRANT:
                ch = st["chosen"][str(t)]
                if ch is None:
                    continue
                c = round(ch["oversampling"] * K)
                extra = {"kind": "qdrant", "index": st["path"], **ch, "candidates": c}
                variants = [("-", {}, extra)]
                setting = f"oversampling {ch['oversampling']:g}, hnsw_ef {ch['hnsw_ef']}"
            else:
                c = st["candidates"][str(t)]
                variants = [
                    (p, {"MINDEX_RERANK_PREFETCH": "1" if p == "on" else "0"}, {"kind": "ours", "candidates": c})
                    for p in prefetches
                ]
                setting = ""
            for prefetch, env, extra in variants:
                # DiskANN reads with O_DIRECT: no page cache to warm, so only its capped pass is run
                modes = (True,) if extra["kind"] == "diskann" else (False, True)
                for cold in modes:
                    plan.append((name, t, prefetch, env, {**extra, "repeat": repeat}, cold, setting))
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "out_of_ram.json"
    old_rows = []
    if out.exists():  # a run replaces its own methods' rows only; the others stay, with their own commit
        old_rows = [r for r in json.loads(out.read_text())["rows"] if r["method"] not in methods]
        for r in old_rows:
            r.setdefault("session", "previous session (2026-12-04 19:53 UTC, /work/data-ooram)")
    rows: list[dict] = []
    session = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(started))
    for name, t, prefetch, env, extra, cold, setting in plan:
        st = info["settings"][name]
        spec = {
            **extra,
            "path": st["path"],
            "files": st["files"],
            "corpus": info["corpus"],
            "truth": info["truth"],
            "threads": ns.threads,
            "rows": N_ROWS,
            "cold": cold,
            "n_single": ns.single,
            "n_batch": ns.batch,
            "max_seconds": ns.max_seconds,
        }
        l0 = load_avg()
        r = spawn(spec, ns.cap_mib if cold else None, env, timeout=900)
        row = {
            "method": name,
            "target": t,
            "prefetch": prefetch,
            "mode": f"cold, {ns.cap_mib} MiB cap" if cold else "warm, no cap",
            "cap_mib": ns.cap_mib if cold else None,
            "candidates": extra["candidates"],
            "nprobe": extra.get("nprobe"),
            "setting": setting,
            "repeat": extra["repeat"],
            "resident_bytes_per_vector": st["resident_bytes_per_vector"],
            **r,
            "load": [l0[0], load_avg()[0]],
            "commit": machine["commit"],
            "command": command,
            "session": session,
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
        report = {
            "machine": machine,
            "command": command,
            "threads": ns.threads,
            "corpus_rows": N_ROWS,
            "cap_mib": ns.cap_mib,
            "cgroup": "v1 (/sys/fs/cgroup/memory)"
            if Path("/sys/fs/cgroup/memory/memory.limit_in_bytes").exists()
            else "v2",
            "prepared": {k: v for k, v in info.items() if k != "settings"},
            "settings": info["settings"],
            "load_prepare": [load0, load1],
            "rows": rows + old_rows,
            "seconds": round(time.time() - started, 1),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        }
        tmp = out.with_suffix(".json.tmp")  # written after every row: a run stopped by the clock keeps its rows
        tmp.write_text(json.dumps(report, indent=2) + "\n")
        os.replace(tmp, out)
    write_report(json.loads(out.read_text()))


def table(rows: list[dict]) -> list[str]:
    lines = [
        "| method | target | prefetch | mode | candidates | setting | B/vector resident | single q/s (queries) | p50 ms "
        "| p99 ms | read KB/query | major faults/query | recall@10 | batch q/s (queries) | batch read KB/query "
        "| cgroup peak MiB | cache dropped | load | commit |",
        "|---|---|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---|",
    ]
    for r in rows:
        setting = r.get("setting") or (f"nprobe {r['nprobe']}" if r.get("nprobe") else "")
        head = f"| {r['method']} | {r['target']} | {r['prefetch']} | {r['mode']} | {r['candidates']} | {setting} | "
        if r["rc"] != 0:
            lines.append(head + f"| failed rc={r['rc']}: {' '.join(r.get('stderr_tail', []))} |||||||||||")
            continue
        s, b = r["single"], r["batch"]
        dropped = "yes" if r.get("cache_drop") else "no"
        lines.append(
            head
            + f"{r['resident_bytes_per_vector']} | {s['qps']:,} ({s['queries']}) | {s['p50_ms']} | {s['p99_ms']} | "
            f"{s['read_bytes_per_query'] / 1024:,.0f} | {s['major_faults_per_query']} | {s['recall@10']} | "
            f"{b['qps']:,} ({b['queries']}) | {b['read_bytes_per_query'] / 1024:,.0f} | {r['cgroup_peak_mib']} | "
            f"{dropped} | {r['load'][0]}-{r['load'][1]} | {str(r.get('commit', ''))[:7]} |"
        )
    return lines


def medians(rows: list[dict]) -> list[str]:
    """One line per method, target, prefetch and mode: the median of its repeats (the robust summary)."""
    import statistics

    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        if r["rc"] == 0:
            groups.setdefault((r["method"], r["target"], r["prefetch"], r["mode"]), []).append(r)
    lines = [
        "| method | target | prefetch | mode | repeats | B/vector resident | single q/s | p50 ms | p99 ms | read KB/query "
        "| recall@10 | batch q/s |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for (method, target, prefetch, mode), rs in sorted(groups.items(), key=lambda kv: (-kv[0][1], kv[0][3], kv[0][0])):

        def med(f, rs=rs):
            return statistics.median(f(r) for r in rs)

        lines.append(
            f"| {method} | {target} | {prefetch} | {mode} | {len(rs)} | {rs[0]['resident_bytes_per_vector']} | "
            f"{med(lambda r: r['single']['qps']):,.1f} | {med(lambda r: r['single']['p50_ms']):.2f} | "
            f"{med(lambda r: r['single']['p99_ms']):.2f} | {med(lambda r: r['single']['read_bytes_per_query']) / 1024:,.0f} | "
            f"{rs[0]['single']['recall@10']} | {med(lambda r: r['batch']['qps']):,.1f} |"
        )
    return lines


def write_report(report: dict) -> None:
    m = report["machine"]
    now = [r for r in report["rows"] if not str(r.get("session", "")).startswith("previous")]
    before = [r for r in report["rows"] if str(r.get("session", "")).startswith("previous")]
    lines = [
        "# Search with the full vectors on a cold disk, under a memory cap (issue 22, measurement)",
        "",
        f"Synthetic {report.get('corpus_rows', 1_000_000):,} x 384 float32 (1.5 GB of full vectors at 1M), 1,000 "
        "held-out queries, k=10, recall@10 against exact search. Cold: the search process in a "
        f"{report['cap_mib']} MiB memory cgroup ({report['cgroup']}; page cache charged to it), the page cache "
        "dropped before each pass. Warm: no cap, every page read once before the pass. "
        f"{report['threads']} threads for every method. Single queries one after another (queries/s = queries / "
        "their summed latency; p50, p99), then one batch. Bytes read from disk per query: `/proc/self/io` "
        "read_bytes over the pass.",
        "",
        f"This run: commit `{m['commit']}`; `{report['command']}`; Python {m['python']}, numpy {m['numpy']}, faiss "
        f"{m['faiss']}, qdrant-edge-py {m.get('qdrant_edge', '?')}, kernel {m['kernel']}, {m['cores']} cores, "
        f"{m['ram_gib']} GiB. {report['date']}. A shared machine: the load average (1 min, `os.getloadavg`) is in "
        "every row (other developers' jobs alongside), so times are noisy; bytes read and faults are the robust "
        "figures.",
        "",
        "Median of the repeats (each repeat interleaved with the other methods; every pass is a row further down):",
        "",
        *medians(now),
        "",
        "Every pass:",
        "",
        *table(now),
    ]
    if before:
        lines += [
            "",
            "Rows of the previous session (2026-12-04 19:53 UTC, the same generator's corpus in /work/data-ooram, "
            "load 1.2-4.2), kept for the methods this run did not repeat:",
            "",
            *table(before),
        ]
    if report.get("findings"):
        lines += ["", "## Findings", ""] + [f"- {f}" for f in report["findings"]]
    (RESULTS / "out_of_ram.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    plot(report, RESULTS / "out_of_ram.png")


def plot(report: dict, path: Path) -> None:
    """Cold single-query queries/s against KB read per query: every repeat a point, one colour per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6))
    for ax, target in zip(axes, TARGETS, strict=True):
        colours: dict[str, str] = {}
        for r in report["rows"]:
            if r["rc"] != 0 or r["target"] != target or r["cap_mib"] is None:
                continue
            if str(r.get("session", "")).startswith("previous"):
                continue  # this run's rows only: the previous session ran at another load
            s = r["single"]
            label = r["method"] + ("" if r["prefetch"] == "-" else f", prefetch {r['prefetch']}")
            label += f" ({r['resident_bytes_per_vector']} B/vector resident)"
            first = label not in colours
            colours.setdefault(label, f"C{len(colours)}")
            marker = "s" if r["method"] == BASELINE else "^" if r["method"] == QDRANT else "o"
            ax.scatter(s["read_bytes_per_query"] / 1024, s["qps"], marker=marker, s=50, color=colours[label],
                       label=label if first else None)  # fmt: skip
        ax.set_xlabel("KB read from disk per query")
        ax.set_ylabel("queries/s (single queries, cold)")
        ax.set_title(f"recall@10 target {target}, {report['cap_mib']} MiB cap, each repeat a point", fontsize=10)
        ax.grid(alpha=0.3)
        ax.set_ylim(0, ax.get_ylim()[1] * 1.35)  # room for the legend above the points
        ax.legend(fontsize=6.5, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
