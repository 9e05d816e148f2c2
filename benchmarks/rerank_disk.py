"""A rerank that respects the disk (issue 22): the float16 rerank copy and the per-query stop, cold under a cap.

The corpus, truth and adaptor of ``out_of_ram.py``'s prepare step (1,000,000 x 384 synthetic + 1,000 queries)
under ``--work``. Built once, unlimited: ours ``64 flat pq4x32 itq`` twice, with ``rerank_dtype`` float32 (the
default) and float16; on each, the per-query stop calibrated (:meth:`MatryoshkaIndex.calibrate_rerank_stop`) on
the first 500 queries at the index's calibrated candidates, saved as a third and fourth index. Measured on the
other 500 queries (``--single`` of them one after another, the last ``--batch`` as one batch), each configuration
in a child process (this file with ``--child``), cold in a memory cgroup of ``--cap-mib`` with the page cache
dropped before each pass (``out_of_ram.drop_cache``), and warm without a cap: queries/s, p50, p99, bytes read per
query (``/proc/self/io``), major faults, the candidates reranked per query (the search's ``timings["reranked"]``)
and recall@10 of the pass, with the load average. The rerank prefetch is on (the default) throughout.

    python benchmarks/rerank_disk.py --work /tmp/o22rr-data [--cap-mib 256] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
from out_of_ram import drop_cache, load_avg, read_bytes, versions  # noqa: E402

K = 10
N_ROWS, N_QUERIES, N_CALIBRATION = 1_000_000, 1000, 500
BUILD = {"index": "flat", "backend_options": {"code": "pq4", "pq_m": 32, "balance": "itq"}}
DTYPES = ("float32", "float16")


def index_path(work: Path, dtype: str, stop: bool) -> Path:
    return work / f"flat-pq4x32-itq-{dtype}{'-stop' if stop else ''}.mindex"


def prepare(work: Path, threads: int) -> dict:
    import faiss
    import numpy as np

    from matryoshka_index import MatryoshkaAdaptor, MatryoshkaIndex

    faiss.omp_set_num_threads(threads)
    info_path = work / "rerank_disk_prepared.json"
    info = json.loads(info_path.read_text()) if info_path.exists() else {}
    corpus_path = work / f"synthetic-{N_ROWS + N_QUERIES}x384.npy"
    x = np.load(corpus_path, mmap_mode="r")
    corpus, queries = x[:N_ROWS], np.ascontiguousarray(x[N_ROWS:], dtype=np.float32)
    adaptor = MatryoshkaAdaptor.load(work / "adaptor")
    for dtype in DTYPES:
        path = index_path(work, dtype, False)
        if not path.exists():
            t0 = time.perf_counter()
            opts = {**BUILD["backend_options"], "spill_dir": str(work), "rerank_dtype": dtype}
            idx = MatryoshkaIndex.build(corpus, coarse_dim=64, adaptor=adaptor, index=BUILD["index"],
                                        backend_options=opts, quiet=True)  # fmt: skip
            info.setdefault("build_s", {})[dtype] = round(time.perf_counter() - t0, 1)
            info.setdefault("build_load", {})[dtype] = load_avg()
            idx.save(path)
            del idx
        stop_path = index_path(work, dtype, True)
        if not stop_path.exists():
            idx = MatryoshkaIndex.load(path, verify=False)
            t0 = time.perf_counter()
            record = idx.calibrate_rerank_stop(queries[:N_CALIBRATION])
            info.setdefault("stop_calibration", {})[dtype] = {
                **record,
                "seconds_total": round(time.perf_counter() - t0, 1),
                "load": load_avg(),
            }
            idx.save(stop_path)
            del idx
        idx = MatryoshkaIndex.load(path, verify=False)
        info.setdefault("candidates", {})[dtype] = int(idx.candidates)
        info.setdefault("build_calibration", {})[dtype] = {
            k: idx.calibration.get(k) for k in ("recall", "recall_lower_bound", "candidates", "queries")
        }
        del idx
        info_path.write_text(json.dumps(info, indent=2) + "\n")
    info["corpus"], info["truth"] = str(corpus_path), str(work / "truth.npy")
    info_path.write_text(json.dumps(info, indent=2) + "\n")
    return info


def child(spec: dict) -> dict:
    import faiss
    import numpy as np

    from matryoshka_index import MatryoshkaIndex
    from matryoshka_index.evaluation import recall_at_k

    faiss.omp_set_num_threads(spec["threads"])
    x = np.load(spec["corpus"], mmap_mode="r")
    queries = np.ascontiguousarray(x[N_ROWS + N_CALIBRATION :], dtype=np.float32)
    truth = np.load(spec["truth"])[N_CALIBRATION:]
    del x
    index = MatryoshkaIndex.load(spec["path"], verify=False)

    def search(q: np.ndarray, timings: dict) -> np.ndarray:
        return index.search(q, k=K, candidates=spec["candidates"], timings=timings)[1]

    files = [Path(spec["path"])]
    res: dict[str, Any] = {"stop": index.info()["backend"].get("rerank_stop")}
    if not spec["cold"]:
        search(queries, {})
    n1 = spec["n_single"]
    dropped = drop_cache(files) if spec["cold"] else None
    rb0, mf0 = read_bytes(), resource.getrusage(resource.RUSAGE_SELF).ru_majflt
    times, found, timings = [], [], {}
    for i in range(n1):
        t0 = time.perf_counter()
        found.append(search(queries[i : i + 1], timings))
        times.append(time.perf_counter() - t0)
    rb1, mf1 = read_bytes(), resource.getrusage(resource.RUSAGE_SELF).ru_majflt
    ms = np.array(times) * 1000
    res["single"] = {
        "queries": n1,
        "qps": round(n1 / float(np.sum(times)), 1),
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p99_ms": round(float(np.percentile(ms, 99)), 2),
        "read_bytes_per_query": round((rb1 - rb0) / n1),
        "major_faults_per_query": round((mf1 - mf0) / n1, 1),
        "reranked_per_query": round(timings["reranked"] / n1, 1),
        "recall@10": round(float(recall_at_k(np.concatenate(found), truth[:n1])), 4),
    }
    nb = spec["n_batch"]
    qb = queries[len(queries) - nb :]
    if spec["cold"]:
        drop_cache(files)
    rb0, mf0 = read_bytes(), resource.getrusage(resource.RUSAGE_SELF).ru_majflt
    timings = {}
    t0 = time.perf_counter()
    ids = search(qb, timings)
    t = time.perf_counter() - t0
    rb1, mf1 = read_bytes(), resource.getrusage(resource.RUSAGE_SELF).ru_majflt
    res["batch"] = {
        "queries": nb,
        "qps": round(nb / t, 1),
        "read_bytes_per_query": round((rb1 - rb0) / nb),
        "major_faults_per_query": round((mf1 - mf0) / nb, 1),
        "reranked_per_query": round(timings["reranked"] / nb, 1),
        "recall@10": round(float(recall_at_k(ids, truth[len(truth) - nb :])), 4),
    }
    timings = {}
    all_ids = search(queries, timings)  # all 500 held-out queries, for the recall at the same settings
    res["held_out"] = {
        "queries": len(queries),
        "recall@10": round(float(recall_at_k(all_ids, truth)), 4),
        "reranked_per_query": round(timings["reranked"] / len(queries), 1),
    }
    res["cache_drop"] = dropped
    res["max_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return res


def spawn(spec: dict, cap_mib: int | None, timeout: float) -> dict:
    from memory_limit import Cgroup

    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS=str(spec["threads"]), MINDEX_QUIET="1")
    cg = Cgroup(f"mindex-rerank-disk-{os.getpid()}", cap_mib * 2**20 if cap_mib else None)
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec)],
        env=env, capture_output=True, text=True, timeout=timeout, preexec_fn=cg.enter, cwd=str(REPO.parent),
    )  # fmt: skip
    peak = cg.peak()
    cg.close()
    out: dict[str, Any] = {"rc": proc.returncode, "seconds": round(time.perf_counter() - t0, 1)}
    out["cgroup_peak_mib"] = round(peak / 2**20, 1) if peak else None
    if proc.returncode == 0:
        out.update(json.loads(proc.stdout.strip().splitlines()[-1]))
    else:
        out["stderr_tail"] = proc.stderr.strip().splitlines()[-3:]
    return out


def write_report(report: dict, results: Path) -> None:
    (results / "rerank_disk.json").write_text(json.dumps(report, indent=2) + "\n")
    v = report["versions"]
    lines = [
        "# A rerank that respects the disk: float16 rerank copy and per-query stop (issue 22)",
        "",
        f"Synthetic 1,000,000 x 384 (out_of_ram.py's data), ours `64 flat pq4x32 itq`; the stop calibrated on 500 "
        f"queries, measured on the other 500. Cold: a {report['cap_mib']} MiB memory cgroup, page cache dropped "
        f"before each pass; warm: no cap, pages read first. {report['threads']} threads. Prefetch on.",
        "",
        f"Commit `{v['commit']}`; `{report['command']}`; Python {v['python']}, numpy {v['numpy']}, faiss "
        f"{v['faiss']}, kernel {v['kernel']}, {v['cores']} cores, {v['ram_gib']} GiB. {report['date']}. Load "
        "average (1 min) in every row: a shared machine, so times are noisy; bytes read and reranked counts are "
        "the robust figures.",
        "",
        "| rerank copy | per-query stop | candidates (cap) | mode | reranked/query (single) | single q/s (queries) | p50 ms | p99 ms | "
        "read KB/query | major faults/query | recall@10 single | batch q/s (queries) | batch read KB/query | "
        "batch reranked/query | held-out recall@10 (500) | held-out reranked/query | cgroup peak MiB | load |",
        "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in report["rows"]:
        r = row["result"]
        if r.get("rc") != 0:
            lines.append(f"| {row['dtype']} | {row['stop']} | {row['mode']} | failed: {r.get('stderr_tail')} |")
            continue
        s, b, h = r["single"], r["batch"], r["held_out"]
        lines.append(
            f"| {row['dtype']} | {'on' if row['stop'] else 'off'} | {row['candidates']}"
            f"{' (' + str(math.ceil(r['stop']['factor'] * row['candidates'] - 1e-9)) + ')' if r.get('stop') else ''} | "
            f"{row['mode']} | {s['reranked_per_query']} | "
            f"{s['qps']:,} ({s['queries']}) | {s['p50_ms']} | {s['p99_ms']} | {s['read_bytes_per_query'] / 1000:,.0f} | "
            f"{s['major_faults_per_query']} | {s['recall@10']} | {b['qps']:,} ({b['queries']}) | "
            f"{b['read_bytes_per_query'] / 1000:,.0f} | {b['reranked_per_query']} | {h['recall@10']} | "
            f"{h['reranked_per_query']} | {r['cgroup_peak_mib']} | {row['load'][0]}-{row['load_after'][0]} |"
        )
    (results / "rerank_disk.md").write_text("\n".join(lines) + "\n" + report.get("findings", "") + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=Path("/tmp/o22rr-data"))
    ap.add_argument("--cap-mib", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--single", type=int, default=150)
    ap.add_argument("--batch", type=int, default=200)
    ap.add_argument("--results", type=Path, default=HERE / "results")
    ap.add_argument("--prepare-only", action="store_true")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child is not None:
        print(json.dumps(child(json.loads(args.child))))
        return
    info = prepare(args.work, args.threads)
    if args.prepare_only:
        return
    report: dict[str, Any] = {
        "command": "python " + " ".join(sys.argv),
        "versions": versions(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cap_mib": args.cap_mib,
        "threads": args.threads,
        "prepared": info,
        "rows": [],
    }
    for dtype in DTYPES:
        # plain at the build's calibrated default, plain at the fewest candidates reaching the target on the stop's
        # calibration queries (the stop's baseline: the same recall), then the stop
        baseline = info["stop_calibration"][dtype]["plain"]["candidates"]
        for stop, candidates in ((False, None), (False, baseline), (True, None)):
            for mode, cap in (("warm, no cap", None), (f"cold, {args.cap_mib} MiB cap", args.cap_mib)):
                spec = {
                    "candidates": candidates,
                    "path": str(index_path(args.work, dtype, stop)),
                    "corpus": info["corpus"],
                    "truth": info["truth"],
                    "threads": args.threads,
                    "cold": cap is not None,
                    "n_single": args.single,
                    "n_batch": args.batch,
                }
                load = load_avg()
                result = spawn(spec, cap, timeout=900)
                row = {"dtype": dtype, "stop": stop, "mode": mode, "load": load, "load_after": load_avg()}
                row["candidates"] = candidates or info["candidates"][dtype]
                row["result"] = result
                report["rows"].append(row)
                print(json.dumps(row), flush=True)
                write_report(report, args.results)


if __name__ == "__main__":
    main()
