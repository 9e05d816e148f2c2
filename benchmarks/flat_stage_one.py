"""How fast can an exhaustive (flat) coarse scan be against exact full-dim search? Back to back.

``search_speed.py`` measures each row once, one after the other, so the exact baseline and a coarse
row may run at different moments of a shared machine. This script times, on the same 1M x 384
corpus, FAISS's exact ``IndexFlatIP`` at full dim (k=10) and a flat scan of the first m coordinates
(the coarse stage alone, no rerank) for several k, alternating them round by round, so the ratio
between them is measured under the same conditions. It uses the synthetic corpus that
``search_speed.py`` writes (generated here when missing) and the same FAISS settings as the library
(BLAS from 20 queries of 64 dims on).

Writes ``benchmarks/results/flat_stage_one.md`` and ``.json`` and prints the table.

    python benchmarks/flat_stage_one.py [--rows 1000000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import faiss
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from search_speed import N_QUERIES, RESULTS, machine, synthetic_dataset

from matryoshka_index.backends.faiss_codes import flat_search_blas
from matryoshka_index.storage import atomic_write_bytes
from matryoshka_index.validation import iter_row_chunks, l2_normalize

DIMS = (32, 64, 128)
KS = (10, 50, 200, 1000)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--tmp", type=Path, default=Path("/tmp/mindex-bench"))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--out", type=Path, default=RESULTS / "flat_stage_one")
    args = p.parse_args(argv)
    faiss.omp_set_num_threads(args.threads)
    flat_search_blas().__enter__()  # the library lowers it only inside its own searches: here, for the run
    args.tmp.mkdir(parents=True, exist_ok=True)
    ds = synthetic_dataset(args.rows, args.dim, args.tmp)
    q = l2_normalize(np.asarray(ds.queries))
    exact = faiss.IndexFlatIP(args.dim)
    coarse = {m: faiss.IndexFlatIP(m) for m in DIMS}
    for sl in iter_row_chunks(len(ds.corpus), 65536):
        block = l2_normalize(ds.corpus[sl])
        exact.add(block)
        for m, index in coarse.items():
            index.add(l2_normalize(np.ascontiguousarray(block[:, :m])))
    qm = {m: l2_normalize(np.ascontiguousarray(q[:, :m])) for m in DIMS}

    times: dict[str, list[float]] = {"exact": []}
    for _ in range(args.rounds):
        t0 = time.perf_counter()
        exact.search(q, 10)
        times["exact"].append(time.perf_counter() - t0)
        for m in DIMS:
            for k in KS:
                t0 = time.perf_counter()
                coarse[m].search(qm[m], k)
                times.setdefault(f"{m}:{k}", []).append(time.perf_counter() - t0)
        print(f"  round done: exact {times['exact'][-1]:.2f} s", flush=True)

    ex = times["exact"]
    lines = [
        "# Flat coarse scan vs exact search, back to back",
        "",
        f"Written by `benchmarks/flat_stage_one.py` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. "
        f"Data: {ds.name} ({ds.source.split(' (')[0]}). Machine: {machine()['cpu']}, {machine()['cores']} cores, "
        f"FAISS {faiss.__version__}, {args.threads} threads.",
        "",
        f"One batch of {N_QUERIES:,} queries; each cell is min / max seconds over {args.rounds} rounds, the "
        "rounds alternating exact and coarse searches. The coarse stage alone (no rerank, no adaptor): FAISS "
        "`IndexFlatIP` over the first m coordinates, top-k. 'x exact' divides the exact search's time by the "
        "coarse search's, both from the same round, and gives the range over rounds.",
        "",
        f"Exact `IndexFlatIP`, d={args.dim}, k=10: {min(ex):.2f} / {max(ex):.2f} s "
        f"({N_QUERIES / max(ex):,.0f}-{N_QUERIES / min(ex):,.0f} queries/s).",
        "",
        "| m | k | seconds (min / max) | x exact (range) |",
        "|---|---|---|---|",
    ]
    summary = {}
    for m in DIMS:
        for k in KS:
            t = times[f"{m}:{k}"]
            ratios = [e / c for e, c in zip(ex, t, strict=True)]
            summary[f"{m}:{k}"] = {"seconds": t, "ratio_min": min(ratios), "ratio_max": max(ratios)}
            lines.append(f"| {m} | {k:,} | {min(t):.2f} / {max(t):.2f} | {min(ratios):.2f}-{max(ratios):.2f}x |")
    lines += [
        "",
        "A batch of queries makes the flat scan a BLAS matrix product; at m=64 it runs at a lower FLOP rate than at "
        "384 and the 1,000 x 1M score matrix is still produced and scanned, so the coarse stage alone stays well "
        "under the 384/64 = 6x byte ratio. The exhaustive 4-bit PQ fast-scan (`index='pq'`) and the graph index "
        "(`index='hnsw'`) are the ways past it (see search_speed.md).",
    ]
    md = "\n".join(lines) + "\n"
    atomic_write_bytes(args.out.with_suffix(".md"), md.encode())
    dump = {"exact_seconds": ex, "coarse": summary, "rows": args.rows, "machine": machine()}
    atomic_write_bytes(args.out.with_suffix(".json"), (json.dumps(dump, indent=2) + "\n").encode())
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
