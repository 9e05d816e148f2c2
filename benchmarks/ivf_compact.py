"""A compact IVF coarse stage (issue 22): ``64 ivf pq4x32`` with implicit ids (<= 16 B/vector including ids)
against full-dim HNSW32, uncapped, at 100k and 1M rows.

The corpus is the synthetic 1,001,000 x 384 file of ``out_of_ram.py`` (``search_speed.write_synthetic`` with
``_machine.SYNTHETIC``; the last 1,000 rows are the queries), its first ``n`` rows the corpus of size ``n``.
One adaptor (fitted on 30,000 rows of the 1M corpus, as ``out_of_ram.py``) serves every size. Ours:
``MatryoshkaIndex.build(corpus, coarse_dim=64, adaptor=..., index="ivf", backend_options={"code": "pq4",
"pq_m": 32, "implicit_ids": True})`` with the calibrated defaults (candidates and nprobe chosen at build time
on held-out corpus rows, not on these queries), saved and loaded (the list-ordered layout is written by the
save; the coarse index memory-mapped). Optionally the same lists with their ids (``implicit_ids=False``,
FAISS fast-scan). Baseline: FAISS ``IndexHNSWFlat(384, 32)`` (efConstruction 80, as ``frontier.py``), its
``efSearch`` tuned as an oracle on these very queries (the smallest reaching recall@10 >= 0.99).

Per method: one 1,000-query batch, run ``--repeats`` times; queries/s of the fastest run, and queries per
CPU-second (the process's user + system time over the same run, which a loaded machine does not inflate the
way it inflates wall time). The 1-minute load average before and after each measurement is recorded.

    python benchmarks/ivf_compact.py --work /tmp/o22ivf-data [--sizes 100000,1000000] [--threads 2]
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
sys.path.insert(0, str(HERE))
K = 10
N_FILE, N_QUERIES = 1_001_000, 1000
EF_LADDER = [16, 24, 32, 48, 64, 96, 128, 160, 192, 256, 384, 512]
OURS = {  # name -> (file name, backend options)
    "ours 64 ivf pq4x32 implicit ids": ("ivf-pq4x32-implicit", {"code": "pq4", "pq_m": 32, "implicit_ids": True}),
    "ours 64 ivf pq4x32 (ids in lists, fast-scan)": ("ivf-pq4x32-fastscan", {"code": "pq4", "pq_m": 32}),
}


def load_avg() -> float:
    return round(os.getloadavg()[0], 2)


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def timed(fn: Any, repeats: int) -> dict:
    """Best wall time over ``repeats`` runs of ``fn`` and the CPU seconds of that run; ``fn`` returns the ids."""
    best: dict | None = None
    l0 = load_avg()
    for _ in range(repeats):
        c0, t0 = cpu_seconds(), time.perf_counter()
        found = fn()
        wall, cpu = time.perf_counter() - t0, cpu_seconds() - c0
        if best is None or wall < best["wall_s"]:
            best = {"wall_s": wall, "cpu_s": cpu, "found": found}
    best["load"] = [l0, load_avg()]
    return best


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
        "matryoshka_index": getattr(matryoshka_index, "__version__", "?"),
        "kernel": platform.release(),
        "cores": os.cpu_count(),
        "ram_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
    }


def truth_for(work: Path, x: Any, n: int, queries: Any) -> Any:
    import faiss
    import numpy as np

    path = work / ("truth.npy" if n == N_FILE - N_QUERIES else f"truth-{n}.npy")
    if not path.exists():
        flat = faiss.IndexFlatIP(x.shape[1])
        for s in range(0, n, 100_000):
            flat.add(np.ascontiguousarray(x[s : min(n, s + 100_000)]))
        np.save(path, flat.search(queries, K)[1])
    return np.load(path)


def measure_ours(work: Path, name: str, n: int, x: Any, queries: Any, truth: Any, ns: Any) -> dict:
    from matryoshka_index import MatryoshkaAdaptor, MatryoshkaIndex
    from matryoshka_index.evaluation import recall_at_k

    slug, options = OURS[name]
    path = work / f"{slug}-{n}.mindex"
    row: dict[str, Any] = {"method": name, "rows": n, "options": options}
    if not path.exists():
        adaptor = MatryoshkaAdaptor.load(work / "adaptor")
        l0, t0 = load_avg(), time.perf_counter()
        idx = MatryoshkaIndex.build(
            x[:n], coarse_dim=64, adaptor=adaptor, index="ivf",
            backend_options={**options, "spill_dir": str(work)}, quiet=True,
        )  # fmt: skip
        row["build_s"] = round(time.perf_counter() - t0, 1)
        t0 = time.perf_counter()
        idx.save(path)
        row["save_s"] = round(time.perf_counter() - t0, 1)
        row["build_load"] = [l0, load_avg()]
        del idx
    idx = MatryoshkaIndex.load(path, verify=False)
    cal = idx.calibration
    row["candidates"] = int(idx.candidates)
    row["nprobe"] = idx.backend.get_search_knob()
    row["nlist"] = idx.backend.info()["params"].get("nlist")
    row["calibrated_recall"] = cal.get("recall")
    mem = idx.backend.memory()
    row["memory"] = mem
    idx.search(queries[:100], k=K)  # warm: the coarse codes and the full vectors' pages
    t = timed(lambda: idx.search(queries, k=K)[1], ns.repeats)
    row.update(recall=round(float(recall_at_k(t.pop("found"), truth)), 4), **t)
    return row


def measure_hnsw(work: Path, queries: Any, truth: Any, ns: Any) -> dict:
    import faiss

    from matryoshka_index.evaluation import recall_at_k

    index = faiss.read_index(str(work / "hnsw32.faiss"))
    built = json.loads((work / "hnsw32.json").read_text())
    grid = {}
    chosen = None
    for ef in EF_LADDER:
        index.hnsw.efSearch = ef
        r = float(recall_at_k(index.search(queries, K)[1], truth))
        grid[ef] = round(r, 4)
        if r >= 0.99:
            chosen = ef
            break
    index.hnsw.efSearch = chosen or EF_LADDER[-1]
    t = timed(lambda: index.search(queries, K)[1], ns.repeats)
    found = t.pop("found")
    n = index.ntotal
    resident = faiss.serialize_index(index).size
    return {
        "method": "full-dim HNSW32 (efSearch oracle)",
        "rows": n,
        "efSearch": chosen,
        "recall_by_ef": grid,
        "recall": round(float(recall_at_k(found, truth)), 4),
        "resident_bytes_per_vector": round(resident / n, 1),
        "build": built,
        **t,
    }


def finish(row: dict, nq: int) -> dict:
    row["qps"] = round(nq / row["wall_s"], 1)
    row["q_per_cpu_s"] = round(nq / max(row["cpu_s"], 1e-9), 1)
    row["wall_s"], row["cpu_s"] = round(row["wall_s"], 4), round(row["cpu_s"], 4)
    return row


def write_report(res: dict, out: Path) -> None:
    out.with_suffix(".json").write_text(json.dumps(res, indent=2) + "\n")
    v = res["versions"]
    lines = [
        "# A compact IVF coarse stage: implicit ids, <= 16 B/vector including ids (issue 22)",
        "",
        f"Written by `benchmarks/ivf_compact.py`. Commit `{v['commit']}`; `{res['command']}`; Python {v['python']}, "
        f"numpy {v['numpy']}, faiss {v['faiss']}, kernel {v['kernel']}, {v['cores']} cores, {v['ram_gib']} GiB; "
        f"{res['threads']} threads (`OMP_NUM_THREADS`, `faiss.omp_set_num_threads`), not pinned; "
        f"{res['started']}. A shared machine: the 1-minute load average is in every row; queries per CPU-second "
        "beside wall queries/s.",
        "",
        "| method | rows | candidates | nprobe / efSearch | nlist | recall@10 | queries/s | queries/CPU-s | "
        "resident B/vector (per vector, w/o fixed) | amortised B/vector | build s | load |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in res["rows"]:
        if r["method"].startswith("full-dim"):
            lines.append(
                f"| {r['method']} | {r['rows']:,} | - | {r['efSearch']} | - | {r['recall']:.4f} | {r['qps']:,.0f} | "
                f"{r['q_per_cpu_s']:,.0f} | {r['resident_bytes_per_vector']} | {r['resident_bytes_per_vector']} | "
                f"{r['build'].get('build_s', '')} | {r['load'][0]}-{r['load'][1]} |"
            )
        else:
            m = r["memory"]
            lines.append(
                f"| {r['method']} | {r['rows']:,} | {r['candidates']} | {r['nprobe']} | {r['nlist']} | "
                f"{r['recall']:.4f} | {r['qps']:,.0f} | {r['q_per_cpu_s']:,.0f} | {m['per_vector_bytes']} | "
                f"{m['resident_bytes_per_vector']} | {r.get('build_s', '(earlier run)')} | "
                f"{r['load'][0]}-{r['load'][1]} |"
            )
    lines += ["", *res.get("findings", [])]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=Path("/tmp/o22ivf-data"))
    ap.add_argument("--sizes", default="100000,1000000")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--only", default="", help="';'-separated method names of ours (default all)")
    ap.add_argument("--no-hnsw", action="store_true")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "ivf_compact")
    ns = ap.parse_args()
    os.environ["OMP_NUM_THREADS"] = str(ns.threads)
    import faiss
    import numpy as np

    faiss.omp_set_num_threads(ns.threads)
    x = np.load(ns.work / f"synthetic-{N_FILE}x384.npy", mmap_mode="r")
    queries = np.ascontiguousarray(x[N_FILE - N_QUERIES :], dtype=np.float32)
    res = {
        "command": " ".join(["python", *sys.argv]),
        "versions": versions(),
        "threads": ns.threads,
        "started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "rows": [],
    }
    if ns.out.with_suffix(".json").exists():  # merge: a later run adds or replaces rows
        old = json.loads(ns.out.with_suffix(".json").read_text())
        res["rows"] = old.get("rows", [])
        res["findings"] = old.get("findings", [])
    only = {s.strip() for s in ns.only.split(";") if s.strip()}

    def put(row: dict) -> None:
        res["rows"] = [r for r in res["rows"] if (r["method"], r["rows"]) != (row["method"], row["rows"])] + [row]
        res["rows"].sort(key=lambda r: (r["rows"], r["method"]))
        write_report(res, ns.out)
        print(
            json.dumps({k: row.get(k) for k in ("method", "rows", "recall", "qps", "q_per_cpu_s", "load")}), flush=True
        )

    for n in [int(s) for s in ns.sizes.split(",")]:
        truth = truth_for(ns.work, x, n, queries)
        for name in OURS:
            if only and name not in only:
                continue
            put(finish(measure_ours(ns.work, name, n, x, queries, truth, ns), len(queries)))
        if not ns.no_hnsw and n == N_FILE - N_QUERIES and (ns.work / "hnsw32.faiss").exists():
            put(finish(measure_hnsw(ns.work, queries, truth, ns), len(queries)))


if __name__ == "__main__":
    main()
