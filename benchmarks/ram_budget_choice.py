"""What ``ram_budget`` builds at round budgets on the real MiniLM set (issue 19, item 8).

One budget per run: ``MatryoshkaIndex.build(corpus, adaptor="pca", ram_budget=B)`` on the first ``--rows`` rows
of ``../shared/data/docstrings-minilm384-50k.npy`` (500 other rows are the queries), then the chosen option, the
built index's measured bytes/vector, its recall@10 against exact search and its queries/s (best of 3 batches), or
the refusal line. Results are merged into ``benchmarks/results/ram_budget_choice.json`` under ``--label`` (e.g.
``before`` / ``after``), with the commit, command line, library versions, threads and load averages.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's package
from _machine import cpu_model

import matryoshka_index
from matryoshka_index import InputError, MatryoshkaIndex
from matryoshka_index.exact import exact_topk
from matryoshka_index.storage import atomic_write_bytes

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent.parent / "shared" / "data" / "docstrings-minilm384-50k.npy"
RESULTS = ROOT / "benchmarks" / "results"


def load() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", type=float, required=True)
    ap.add_argument("--rows", type=int, default=29_000)
    ap.add_argument("--label", required=True)
    ap.add_argument("--data", type=Path, default=Path(os.environ.get("MINDEX_DATA", DATA)))
    ap.add_argument("--out", type=Path, default=RESULTS / "ram_budget_choice.json")
    args = ap.parse_args()
    import faiss

    x = np.load(args.data, mmap_mode="r")
    corpus, queries = np.asarray(x[: args.rows]), np.asarray(x[args.rows : args.rows + 500])
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True).stdout
    row: dict = {
        "budget": args.budget,
        "rows": args.rows,
        "commit": commit.strip(),
        "command": " ".join(sys.argv),
        "faiss_threads": faiss.omp_get_max_threads(),
        "cpus": sorted(os.sched_getaffinity(0)),
        "load_before": load(),
    }
    t0 = time.perf_counter()
    try:
        index = MatryoshkaIndex.build(corpus, adaptor="pca", ram_budget=args.budget, quiet=True)
    except InputError as exc:
        row.update(refused=str(exc), build_s=round(time.perf_counter() - t0, 1), load_after=load())
    else:
        row["build_s"] = round(time.perf_counter() - t0, 1)
        record = index.info()["ram_budget"]
        chosen = next(o for o in record["options"] if o["verdict"] == "chosen")
        memory = index.backend.memory()
        _, truth = exact_topk(queries, corpus, 10, normalize=True)
        best = float("inf")
        for _ in range(3):
            t = time.perf_counter()
            _, found = index.search(queries, k=10)
            best = min(best, time.perf_counter() - t)
        recall = float(np.mean([len(set(f) & set(g)) / 10 for f, g in zip(found, truth, strict=True)]))
        row.update(
            chosen=record["chosen"],
            chosen_option={k: chosen.get(k) for k in ("bytes_per_vector", "trial_bytes_per_vector", "queries_per_s")},
            # per-vector bytes less the 8-byte ids a reloaded index memory-maps (the same sum in every tree)
            built_bytes_per_vector=round(memory["per_vector_bytes"] - 8, 2),
            candidates=index.candidates,
            recall_at_10=round(recall, 4),
            queries_per_s=round(len(queries) / best, 1),
            warning=record.get("warning"),
            rejected_for_bytes=[o["option"] for o in record["options"] if "B/vector > budget" in o["verdict"]],
            load_after=load(),
        )
    report = json.loads(args.out.read_text()) if args.out.exists() else {"runs": {}}
    report["machine"] = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "numpy": np.__version__,
        "faiss": faiss.__version__,
        "matryoshka_index": matryoshka_index.__version__,
        "data": str(args.data.name),
        "adaptor": "pca (PCA rotation fitted on the build sample)",
    }
    row["faiss_threads"] = faiss.omp_get_max_threads()  # as the build left it (MINDEX_THREADS applies there)
    report["runs"].setdefault(args.label, {})[f"{args.budget:g}"] = row
    atomic_write_bytes(args.out, (json.dumps(report, indent=1) + "\n").encode())
    print(json.dumps(row, indent=1))


if __name__ == "__main__":
    main()
