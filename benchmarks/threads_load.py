"""Adaptor training and a search batch, idle and beside two busy processes, before and after the thread fix.

"Before" is a checkout of the code without ``matryoshka_index/threads.py`` (``--base``, e.g.
``git worktree add /tmp/threads-base cd9e556``), run as a new user runs it: no ``OMP_*`` variables.
"After" is this tree, also with no ``OMP_*`` variables (the package sets ``OMP_WAIT_POLICY=PASSIVE``
itself and sizes torch's pool to the cores free). Each measurement runs in a fresh process; the
two conditions alternate (before idle, after idle, before loaded, after loaded) so that drift of
the machine's own load hits both sides alike. The load is two ``python -c "while 1: pass"``
processes, started 60 s before the loaded runs so that the 1-minute load average has seen them.

    python benchmarks/threads_load.py --base /tmp/threads-base [--rows 30000 --epochs 1]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "docstrings-minilm384-50k.npy"
if not DATA.exists():
    DATA = Path("/work/shared/data/docstrings-minilm384-50k.npy")
RESULTS = ROOT / "benchmarks" / "results"

CHILD = r"""
import json, sys, time
t_import = time.perf_counter()
import numpy as np
from matryoshka_index import MatryoshkaAdaptor, MatryoshkaIndex
import torch
rows, epochs, n_queries = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
x = np.ascontiguousarray(np.load(sys.argv[4], mmap_mode="r")[: rows + n_queries], dtype=np.float32)
corpus, queries = x[:rows], x[rows:]
t0 = time.perf_counter()
MatryoshkaAdaptor(epochs=epochs, patience=epochs, quiet=True, seed=0).fit(corpus)
train_s = time.perf_counter() - t0
threads = torch.get_num_threads()
index = MatryoshkaIndex.build(corpus, coarse_dim=64, adaptor="pca", index="flat")
index.search(queries[:50], k=10)  # warm-up
batches = []
for _ in range(5):
    t0 = time.perf_counter()
    index.search(queries, k=10)
    batches.append(time.perf_counter() - t0)
import faiss
print(json.dumps({"train_s": train_s, "search_batch_s": sorted(batches)[len(batches) // 2],
                  "search_batch_max_s": max(batches), "queries": len(queries),
                  "torch_threads": threads, "faiss_threads": faiss.omp_get_max_threads()}))
"""


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def run_child(tree: Path, args: argparse.Namespace) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OMP_") and k != "MINDEX_THREADS"}
    env["PYTHONPATH"] = str(tree)
    before = uptime()
    t0 = time.perf_counter()
    try:
        out = subprocess.run(
            [sys.executable, "-c", CHILD, str(args.rows), str(args.epochs), str(args.queries), str(DATA)],
            capture_output=True,
            text=True,
            env=env,
            cwd=tree,
            timeout=args.timeout,
        )
    except subprocess.TimeoutExpired:
        return {"timed_out": True, "wall_s": args.timeout, "uptime_before": before, "uptime_after": uptime()}
    if out.returncode != 0:
        raise SystemExit(f"child failed in {tree}:\n{out.stderr[-3000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result.update(wall_s=time.perf_counter() - t0, uptime_before=before, uptime_after=uptime())
    return result


def busy(n: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", "while 1: pass"]) for _ in range(n)]


def fmt(r: dict, key: str) -> str:
    if r.get("timed_out"):
        return f"> {r['wall_s']:.0f}"
    return f"{r[key]:.2f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", type=Path, required=True, help="checkout of the code before the fix")
    ap.add_argument("--rows", type=int, default=30_000)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--queries", type=int, default=1_000)
    ap.add_argument("--busy", type=int, default=2, help="busy processes for the loaded runs")
    ap.add_argument("--warm-load", type=float, default=60.0, help="seconds the busy processes run first")
    ap.add_argument("--timeout", type=float, default=1500.0)
    args = ap.parse_args()
    trees = {"before": args.base.resolve(), "after": ROOT}
    runs: list[dict] = []
    for condition in ("idle", "loaded"):
        procs = busy(args.busy) if condition == "loaded" else []
        try:
            if procs:
                time.sleep(args.warm_load)
            for variant, tree in trees.items():
                print(f"{variant} / {condition} ...", flush=True)
                r = run_child(tree, args)
                r.update(variant=variant, condition=condition)
                runs.append(r)
                print(json.dumps(r), flush=True)
        finally:
            for p in procs:
                p.kill()
                p.wait()

    lines = [
        "# Threads under load: training and search, before and after the thread fix",
        "",
        f"Machine: {platform.node()}, {os.cpu_count()} cores (`{platform.processor() or platform.machine()}`), "
        f"Python {platform.python_version()}. Data: first {args.rows:,} rows of `{DATA.name}` "
        f"(real MiniLM 384-d), {args.queries:,} further rows as queries.",
        "",
        f"Training: `MatryoshkaAdaptor(epochs={args.epochs}).fit` on {args.rows:,} x 384 (includes the neighbour "
        "search and the PCA). Search: a flat coarse-64 (PCA) + rerank index, median of 5 batches of "
        f'{args.queries:,} queries. Loaded: {args.busy} `python -c "while 1: pass"` processes, started '
        f"{args.warm_load:.0f} s before. Before = `--base` (`{args.base}`), after = this tree; both run with no "
        "`OMP_*` variable set, as a new user would.",
        "",
        "The machine is shared with other agents' work: its own load (`uptime`, before and after each run) is "
        "in the last columns. Where it is far from idle the figures are relative: before vs after, back to "
        "back, under the same conditions.",
        "",
        "| code | condition | train s | search batch s (median / max) | torch threads | faiss threads "
        "| load before | load after |",
        "|---|---|---:|---:|---:|---:|---|---|",
    ]
    for r in runs:
        lb = r["uptime_before"].split("load average:")[-1].strip()
        la = r["uptime_after"].split("load average:")[-1].strip()
        search = "-" if r.get("timed_out") else f"{r['search_batch_s']:.3f} / {r['search_batch_max_s']:.3f}"
        lines.append(
            f"| {r['variant']} | {r['condition']} | {fmt(r, 'train_s')} | {search} | {r.get('torch_threads', '-')} "
            f"| {r.get('faiss_threads', '-')} | {lb} | {la} |"
        )
    by = {(r["variant"], r["condition"]): r for r in runs}
    lines.append("")
    for variant in trees:
        idle, loaded = by.get((variant, "idle")), by.get((variant, "loaded"))
        if idle and loaded and not idle.get("timed_out") and not loaded.get("timed_out"):
            lines.append(
                f"- {variant}: training {loaded['train_s'] / idle['train_s']:.1f}x its idle time under load, "
                f"search batch {loaded['search_batch_s'] / idle['search_batch_s']:.1f}x."
            )
        elif idle and loaded and loaded.get("timed_out"):
            lines.append(
                f"- {variant}: training under load did not finish within the {args.timeout:.0f} s limit "
                f"({args.timeout / idle['train_s']:.0f}x its idle time and counting); its search was not reached."
            )
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "threads_load.md").write_text("\n".join(lines) + "\n")
    (RESULTS / "threads_load.json").write_text(
        json.dumps({"args": vars(args) | {"base": str(args.base)}, "runs": runs}, indent=2) + "\n"
    )
    print("\n".join(lines))


if __name__ == "__main__":
    main()
