"""Adaptor training beside two busy processes, then a search batch once they have gone: a process-wide
thread count (``--base``) against the per-call count of this tree.

``--base`` is a checkout of the code whose training set the thread count for the whole process
(``threads.apply()``, e.g. ``git worktree add --detach /tmp/threads-old 0cc02d7``); this tree sets it
per call (``threads.limited()``) and restores it. Both run as a new user runs them: no ``OMP_*`` or
``MINDEX_THREADS`` variable (the package sets ``OMP_WAIT_POLICY=PASSIVE`` itself).

Each measurement is a fresh process that (1) fits ``MatryoshkaAdaptor(epochs=1)`` and reports, then
waits; (2) in the loaded condition the parent stops the two ``python -c "while 1: pass"`` processes
(started ``--warm-load`` s before the fit, so that the 1-minute load average has seen them) and
waits ``--settle`` s; (3) the child builds a flat coarse-64 (PCA) index and times 5 batches of
queries. So the search runs after a fit under load, with the load gone but the load average still
high. Inside the fit and inside each search the count actually in force is recorded (torch's and
FAISS's ``omp_get_max_threads`` read from within training's neighbour search and the FAISS backend's
``search``), and FAISS's process-wide count after the fit. The order alternates (base, this tree,
this tree, base per condition pair) so that drift of the machine's own load hits both alike. Right
after each row the same search runs in a fresh process of the same code that never fitted: the
speed the machine gives at that moment, the reference for "once the load has gone".

    python benchmarks/threads_load.py --base /tmp/threads-old [--rows 20000 --repeats 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from _machine import cpu_model  # benchmarks/_machine.py (the script's own folder)

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "docstrings-minilm384-50k.npy"
if not DATA.exists():
    DATA = Path("/work/shared/data/docstrings-minilm384-50k.npy")
RESULTS = ROOT / "benchmarks" / "results"

CHILD = r"""
import json, os, sys, time
import numpy as np
from matryoshka_index import MatryoshkaAdaptor, MatryoshkaIndex
from matryoshka_index.adaptor import training
from matryoshka_index.backends.faiss_backend import FaissBackend
import faiss, torch

def procs_running():
    for line in open("/proc/stat"):
        if line.startswith("procs_running"):
            return int(line.split()[1])

in_fit, in_search = [], []
real_nn, real_search = training.nearest_neighbours, FaissBackend.search
def nn_spy(*a, **k):
    in_fit.append((torch.get_num_threads(), faiss.omp_get_max_threads()))
    return real_nn(*a, **k)
def search_spy(self, *a, **k):
    in_search.append(faiss.omp_get_max_threads())
    return real_search(self, *a, **k)
training.nearest_neighbours, FaissBackend.search = nn_spy, search_spy

rows, epochs, n_queries = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
x = np.ascontiguousarray(np.load(sys.argv[4], mmap_mode="r")[: rows + n_queries], dtype=np.float32)
corpus, queries = x[:rows], x[rows:]
t0 = time.perf_counter()
if epochs:  # epochs 0: no fit, the reference process that never saw the load
    MatryoshkaAdaptor(epochs=epochs, patience=epochs, quiet=True, seed=0).fit(corpus)
fit = {"train_s": time.perf_counter() - t0, "fit_torch_faiss_threads": sorted(set(in_fit)),
       "faiss_threads_after_fit": faiss.omp_get_max_threads(), "torch_threads_after_fit": torch.get_num_threads(),
       "load_after_fit": os.getloadavg()[0]}
print(json.dumps(fit), flush=True)
sys.stdin.readline()  # the parent stops the load (loaded condition), then says go
search = {"load_at_search": os.getloadavg()[0], "procs_running_at_search": procs_running()}
index = MatryoshkaIndex.build(corpus, coarse_dim=64, adaptor="pca", index="flat", quiet=True)
index.search(queries[:50], k=10)  # warm-up
in_search.clear()
batches = []
for _ in range(5):
    t0 = time.perf_counter()
    index.search(queries, k=10)
    batches.append(time.perf_counter() - t0)
search.update(search_batch_s=sorted(batches)[len(batches) // 2], search_batch_max_s=max(batches),
              search_batches_s=batches, search_faiss_threads=sorted(set(in_search)),
              faiss_threads_at_end=faiss.omp_get_max_threads(), queries=len(queries))
print(json.dumps(search), flush=True)
"""


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def load_field(text: str) -> str:
    return text.split("load average:")[-1].strip()


def busy(n: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", "while 1: pass"]) for _ in range(n)]


def stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        p.kill()
        p.wait()


def run_child(tree: Path, loaded: bool, args: argparse.Namespace, epochs: int | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OMP_") and k != "MINDEX_THREADS"}
    env["PYTHONPATH"] = str(tree)
    epochs = args.epochs if epochs is None else epochs
    procs = busy(args.busy) if loaded else []
    try:
        if procs:
            time.sleep(args.warm_load)
        result: dict = {"uptime_before": uptime()}
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(args.rows), str(epochs), str(args.queries), str(DATA)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=tree,
        )
        line = child.stdout.readline()
        if not line:
            raise SystemExit(f"child failed in {tree}:\n{child.stderr.read()[-3000:]}")
        result.update(json.loads(line))
        result["uptime_after_fit"] = uptime()
    finally:
        stop(procs)
    if procs:
        time.sleep(args.settle)
    child.stdin.write("go\n")
    child.stdin.flush()
    out, err = child.communicate(timeout=args.timeout)
    if child.returncode != 0:
        raise SystemExit(f"child failed in {tree}:\n{err[-3000:]}")
    result.update(json.loads(out.strip().splitlines()[-1]))
    result["uptime_after"] = uptime()
    return result


def git_commit(tree: Path) -> str:
    out = subprocess.run(["git", "-C", str(tree), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(["git", "-C", str(tree), "status", "--porcelain"], capture_output=True, text=True).stdout
    return out.stdout.strip() + (" (with uncommitted changes)" if dirty.strip() else "")


def versions() -> dict:
    code = "import numpy, faiss, torch, threadpoolctl; print(numpy.__version__, faiss.__version__, torch.__version__, threadpoolctl.__version__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.split()
    return dict(zip(("numpy", "faiss", "torch", "threadpoolctl"), out, strict=False))


def fmt_threads(pairs: list) -> str:
    return ", ".join("/".join(str(v) for v in p) if isinstance(p, list | tuple) else str(p) for p in pairs) or "-"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", type=Path, required=True, help="checkout with the process-wide thread count")
    ap.add_argument("--rows", type=int, default=20_000)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--queries", type=int, default=1_000)
    ap.add_argument("--busy", type=int, default=2, help="busy processes for the loaded runs")
    ap.add_argument("--warm-load", type=float, default=60.0, help="seconds the busy processes run before the fit")
    ap.add_argument("--settle", type=float, default=2.0, help="seconds between stopping the load and the search")
    ap.add_argument("--repeats", type=int, default=2, help="condition pairs (idle + loaded) per variant")
    ap.add_argument("--timeout", type=float, default=1200.0)
    args = ap.parse_args()
    trees = {"process-wide (base)": args.base.resolve(), "per-call (this tree)": ROOT}
    names = list(trees)
    meta = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv]),
        "commits": {name: git_commit(tree) for name, tree in trees.items()},
        "machine": platform.node(),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "versions": versions(),
        "threads": "not pinned: no OMP_* / MINDEX_THREADS variable, no affinity mask (a new user's set-up)",
        "uptime_start": uptime(),
    }
    runs: list[dict] = []
    for rep in range(args.repeats):
        order = names if rep % 2 == 0 else names[::-1]
        for condition in ("idle", "loaded"):
            for variant in order if condition == "idle" else order[::-1]:
                print(f"{variant} / {condition} ...", flush=True)
                r = run_child(trees[variant], condition == "loaded", args)
                # The same search at once in a fresh process of the same code that never fitted: the speed the
                # machine gives now, without whatever the fit left behind.
                fresh = run_child(trees[variant], False, args, epochs=0)
                r.update(
                    fresh_search_batch_s=fresh["search_batch_s"],
                    fresh_search_faiss_threads=fresh["search_faiss_threads"],
                    fresh_procs_running=fresh["procs_running_at_search"],
                )
                r.update(variant=variant, condition=condition, repeat=rep)
                runs.append(r)
                print(json.dumps(r), flush=True)
    meta["uptime_end"] = uptime()
    write(meta, args, runs)


def write(meta: dict, args: argparse.Namespace, runs: list[dict]) -> None:
    v = meta["versions"]
    lines = [
        "# Threads under load: training beside busy processes, then search once they have gone",
        "",
        f"{meta['date']}, machine {meta['machine']} ({meta['cores']} cores, {meta['cpu']}), Python {meta['python']}, "
        f"numpy {v.get('numpy')}, faiss {v.get('faiss')}, torch {v.get('torch')}, threadpoolctl "
        f"{v.get('threadpoolctl')}. Threads: {meta['threads']}. Code: process-wide = `{args.base}` at "
        f"{meta['commits']['process-wide (base)']}, per-call = this tree at {meta['commits']['per-call (this tree)']}.",
        "",
        f"Command: `{meta['command']}`",
        "",
        f"Data: first {args.rows:,} rows of `{DATA.name}` (real MiniLM 384-d), {args.queries:,} further rows as "
        f"queries. Training: `MatryoshkaAdaptor(epochs={args.epochs}).fit` (includes the neighbour search and the "
        f"PCA). Search: a flat coarse-64 (PCA) + rerank index, median of 5 batches of {args.queries:,} queries, "
        "built and searched in the same process right after the fit. Loaded: "
        f'{args.busy} `python -c "while 1: pass"` processes from {args.warm_load:.0f} s before the fit until it '
        f"ends; the search starts {args.settle:.0f} s after they stopped (the 1-minute load average still counts "
        "them). Each row is a fresh process; the variants alternate.",
        "",
        "The machine is shared with other developers' builds and tests, so no row is idle: the load average "
        "(`uptime`) at the start of each run, after the fit and at the end is in the last columns, and the "
        "per-call count follows it. Compare rows run next to each other.",
        "",
        "Threads columns: torch/FAISS threads seen inside the fit; FAISS's count left in the process after the "
        "fit (outside any call); FAISS threads seen inside each search call; procs_running at the search start; "
        "the same search in a fresh process that never fitted, run right after.",
        "",
        "| code | condition | train s | fit threads (torch/faiss) | faiss after fit | search batch s (median / max) "
        "| search threads | run queue at search | fresh process: search s (threads) | load at start | after fit "
        "| at end |",
        "|---|---|---:|---|---:|---:|---|---:|---:|---|---|---|",
    ]
    for r in runs:
        lines.append(
            f"| {r['variant']} | {r['condition']} | {r['train_s']:.1f} | {fmt_threads(r['fit_torch_faiss_threads'])} "
            f"| {r['faiss_threads_after_fit']} | {r['search_batch_s']:.3f} / {r['search_batch_max_s']:.3f} "
            f"| {fmt_threads(r['search_faiss_threads'])} | {r['procs_running_at_search']} "
            f"| {r['fresh_search_batch_s']:.3f} ({fmt_threads(r['fresh_search_faiss_threads'])}) "
            f"| {load_field(r['uptime_before'])} | {load_field(r['uptime_after_fit'])} | {load_field(r['uptime_after'])} |"
        )
    lines.append("")
    for variant in dict.fromkeys(r["variant"] for r in runs):
        mine = [r for r in runs if r["variant"] == variant]
        idle = [r for r in mine if r["condition"] == "idle"]
        loaded = [r for r in mine if r["condition"] == "loaded"]
        if idle and loaded:

            def mean(rs: list[dict], key: str) -> float:
                return sum(r[key] for r in rs) / len(rs)

            lines.append(
                f"- {variant}: training {mean(loaded, 'train_s'):.1f} s loaded vs {mean(idle, 'train_s'):.1f} s idle "
                f"(means); search batch after the loaded fit {mean(loaded, 'search_batch_s'):.3f} s vs "
                f"{mean(idle, 'search_batch_s'):.3f} s after the idle one "
                f"({mean(loaded, 'search_batch_s') / mean(idle, 'search_batch_s'):.2f}x); after the loaded fit vs a "
                f"fresh process right after: {mean(loaded, 'search_batch_s'):.3f} s vs "
                f"{mean(loaded, 'fresh_search_batch_s'):.3f} s "
                f"({mean(loaded, 'search_batch_s') / mean(loaded, 'fresh_search_batch_s'):.2f}x)."
            )
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "threads_load.md").write_text("\n".join(lines) + "\n")
    (RESULTS / "threads_load.json").write_text(
        json.dumps({"meta": meta, "args": vars(args) | {"base": str(args.base)}, "runs": runs}, indent=2) + "\n"
    )
    print("\n".join(lines))


if __name__ == "__main__":
    main()
