"""Ours against every peer, fair by construction: ScaNN, LoRANN, DiskANN, usearch, hnswlib and tuned FAISS.

Each method x build setting runs in its own fresh processes (a build process that writes the index,
then a serve process that loads it and measures), under the peer's own venv, pinned to the same CPU
with ``taskset`` and the same thread count (``OMP_NUM_THREADS`` etc., FAISS's OpenMP threads and
``distance_compute_blas_threshold`` pinned in every process that loads FAISS), on the same data file
(``.npy``, written once), the same queries and the same exact ground truth (computed once, saved).
Jobs run interleaved across libraries (round robin), so load drifts hit all alike; the load average
is recorded per row.

Peers get their oracle: every declared (build, search) setting is measured on the test queries and
each library's fastest point reaching the target is kept. Ours get no oracle: the configurations of
``ours_peer.CONFIGS`` are declared before the run and searched at the candidates they calibrated at
build time (``target_recall`` = the panel's target), ``ram_budget=`` as a user calls it.

Memory is counted the same for everyone, from the serve process: RssAnon after load and a warm-up
minus RssAnon before the load (heap and anonymous maps: what the index holds), with the fixed part
(our adaptor and codebooks, PCA/OPQ matrices, centroids, PQ pivots) in its own column; RssFile (pages
of memory-mapped files: page cache) apart; and the library's own figure where it reports one.

Run: ``python benchmarks/peers/run.py`` (real dev set) or ``--synthetic --rows 200000``.
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
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT / "benchmarks"))
from _machine import SYNTHETIC, cpu_model  # noqa: E402
from worker import PEERS, make_peer  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
K = 10
TARGETS = (0.99, 0.95)
N_QUERIES = 1000
VENVS = Path(os.environ.get("PEERS_VENVS", "/work/venvs"))
# Which python runs each peer: ours and FAISS in the project's venv, the rest where their numpy fits.
PYTHON: dict[str, Path] = {
    "ours": Path(sys.executable),
    "faiss": Path(sys.executable),
    "scann": VENVS / "peers-np2" / "bin" / "python",
    "lorann": VENVS / "peers-np2" / "bin" / "python",
    "usearch": VENVS / "peers-np2" / "bin" / "python",
    "hnswlib": VENVS / "peers-np2" / "bin" / "python",
    "diskann": VENVS / "peers-np1" / "bin" / "python",
    "svs": VENVS / "peers-np2" / "bin" / "python",
}
IMPORT = {"ours": "matryoshka_index", "faiss": "faiss", "scann": "scann", "lorann": "lorann",
          "usearch": "usearch.index", "hnswlib": "hnswlib", "diskann": "diskannpy", "svs": "svs"}  # fmt: skip


def python_for(peer: str) -> Path:
    return Path(os.environ.get(f"PEERS_PYTHON_{peer.upper()}", PYTHON[peer]))


def child_env(threads: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "OMP_NUM_THREADS": str(threads),
            "OPENBLAS_NUM_THREADS": str(threads),
            "MKL_NUM_THREADS": str(threads),
            "OMP_WAIT_POLICY": "PASSIVE",
            "PEERS_THREADS": str(threads),
            "PYTHONPATH": str(ROOT),
            "TF_CPP_MIN_LOG_LEVEL": "2",
            "MINDEX_QUIET": "1",
        }
    )
    return env


def available(peer: str) -> str | None:
    """None when the peer's python imports its package, else the reason it is skipped."""
    py = python_for(peer)
    if not py.exists():
        return f"no python at {py} (make its venv: see benchmarks/peers/requirements-{peer}.txt)"
    probe = subprocess.run(
        [str(py), "-c", f"import {IMPORT[peer]}"], capture_output=True, text=True, env=child_env(1), timeout=120
    )
    if probe.returncode:
        last = (probe.stderr.strip().splitlines() or ["import failed"])[-1]
        return f"{IMPORT[peer]} does not import under {py}: {last}"
    return None


# ---------------------------------------------------------------------- data
def prepare_data(args: argparse.Namespace) -> dict[str, Any]:
    """data.npy, queries.npy and truth.npy under the run folder (written once; reused when there)."""
    tag = f"synthetic-{args.rows}" if args.synthetic else "real"
    folder = args.tmp / tag
    folder.mkdir(parents=True, exist_ok=True)
    truth = folder / "truth.npy"
    if args.synthetic:
        from search_speed import write_synthetic

        src = folder / "synthetic-source.npy"
        if not src.exists():
            write_synthetic(src, args.rows + N_QUERIES, args.dim, **SYNTHETIC)
        source = f"topic-manifold synthetic {SYNTHETIC}, {args.rows:,} rows + {N_QUERIES} queries (the last rows)"
    else:
        src = real_path()
        rows = len(np.load(src, mmap_mode="r"))
        source = f"{src} (first {rows - N_QUERIES:,} rows indexed, last {N_QUERIES} held out as queries)"
    if not truth.exists():
        x = np.load(src, mmap_mode="r")
        write_dataset(folder, x[:-N_QUERIES], np.asarray(x[-N_QUERIES:]))
    ds = dataset(folder, source, tag)
    if not args.synthetic:
        ds["train_queries"] = write_train_queries(folder, np.load(ds["queries"]))
    return ds


def write_train_queries(folder: Path, test_queries: np.ndarray) -> Path | None:
    """LoRANN's training queries for the real set: rows of the same model and kind that are not test queries.

    The 49k set has no rows apart from its index and its 1,000 test queries, so these are the other MiniLM
    docstring rows of dev-docstring-qa (its 12,000 documents and its 1,000 train-split queries), less any row
    equal to a test query (cosine > 0.9999). None when that set is absent.
    """
    out = folder / "train_queries.npy"
    if out.exists():
        return out
    qa = real_path().parent / "dev-docstring-qa"
    if not (qa / "corpus.npy").is_file():
        return None
    split = [json.loads(line)["split"] for line in (qa / "queries.jsonl").read_text().splitlines() if line.strip()]
    order = {qid: i for i, qid in enumerate(json.loads((qa / "ids.json").read_text())["query_ids"])}
    rows = [line for line in (qa / "queries.jsonl").read_text().splitlines() if line.strip()]
    train = sorted(order[json.loads(r)["_id"]] for r, s in zip(rows, split, strict=True) if s == "train")
    cand = np.concatenate([np.load(qa / "corpus.npy"), np.load(qa / "queries.npy")[train]]).astype(np.float32)
    keep = (cand @ test_queries.T).max(axis=1) < 0.9999
    np.save(out, np.ascontiguousarray(cand[keep]))
    return out


def write_dataset(folder: Path, corpus: np.ndarray, queries: np.ndarray) -> None:
    """data.npy (float32, C order, written in chunks), queries.npy and the exact truth.npy in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    data = folder / "data.npy"
    out = np.lib.format.open_memmap(data.with_suffix(".tmp.npy"), mode="w+", dtype=np.float32, shape=corpus.shape)
    for s in range(0, len(corpus), 65536):
        out[s : s + 65536] = corpus[s : s + 65536]
    out.flush()
    del out
    os.replace(data.with_suffix(".tmp.npy"), data)
    np.save(folder / "queries.npy", np.ascontiguousarray(queries, dtype=np.float32))
    np.save(folder / "truth.npy", exact_truth(np.load(data, mmap_mode="r"), np.load(folder / "queries.npy")))


def dataset(folder: Path, source: str, tag: str) -> dict[str, Any]:
    """The paths and shape of a dataset ``write_dataset`` wrote; refuses rows that are not unit-norm."""
    data = folder / "data.npy"
    x = np.load(data, mmap_mode="r")
    norms = np.linalg.norm(np.asarray(x[: min(len(x), 10_000)]), axis=1)
    if abs(norms - 1).max() > 1e-3:
        raise SystemExit(f"{data}: rows are not unit-norm (max |norm-1| {abs(norms - 1).max():.3g}); the peers' l2 "
                         "and inner-product orders would differ")  # fmt: skip
    return {"folder": folder, "data": data, "queries": folder / "queries.npy", "truth": folder / "truth.npy",
            "n": len(x), "d": x.shape[1], "source": source, "tag": tag}  # fmt: skip


def real_path() -> Path:
    for base in (ROOT.parent, ROOT.parent.parent, Path("/work")):
        p = base / "shared" / "data" / "docstrings-minilm384-50k.npy"
        if p.is_file():
            return p
    raise SystemExit("docstrings-minilm384-50k.npy not found under ../shared/data; run with --synthetic")


def exact_truth(data: np.ndarray, queries: np.ndarray, k: int = 100) -> np.ndarray:
    """Exact top-``k`` by inner product (FAISS flat; ties broken by FAISS's order), once per dataset."""
    import faiss

    index = faiss.IndexFlatIP(data.shape[1])
    for s in range(0, len(data), 65536):
        index.add(np.ascontiguousarray(data[s : s + 65536]))
    return index.search(queries, k)[1].astype(np.int64)


# ---------------------------------------------------------------------- jobs
def jobs(peers: list[str], ds: dict[str, Any], adaptor_dir: Path | None, only: list[str]) -> list[tuple[str, dict]]:
    """Every (peer, build setting), interleaved round robin across peers."""
    per: list[list[tuple[str, dict]]] = []
    for name in peers:
        peer = make_peer(name)
        if name in ("lorann", "svs") and ds.get("train_queries"):
            grid = peer.build_grid(ds["n"], ds["d"], str(ds["train_queries"]))
        else:
            grid = peer.build_grid(ds["n"], ds["d"])
        if name == "ours":
            grid = [{**g, "adaptor_dir": str(adaptor_dir)} for g in grid]
        grid = [g for g in grid if not only or any(s in g["name"] for s in only)]
        per.append([(name, g) for g in grid])
    order = []
    for i in range(max((len(p) for p in per), default=0)):
        order += [p[i] for p in per if i < len(p)]
    return order


def run_job(name: str, build: dict[str, Any], ds: dict[str, Any], args: argparse.Namespace, i: int) -> dict:
    work = ds["folder"] / "jobs" / f"{i:03d}-{name}"
    reuse = getattr(args, "reuse_builds", False) and (work / "build.json").exists()
    if reuse and json.loads((work / "setting.json").read_text()) != build:
        reuse = False
    if work.exists() and not reuse:
        subprocess.run(["rm", "-rf", str(work)], check=True)
    work.mkdir(parents=True, exist_ok=True)
    (work / "setting.json").write_text(json.dumps(build))
    base = [
        "taskset", "-c", args.cpus, str(python_for(name)), str(HERE / "worker.py"), "--peer", name,
        "--build", str(work / "setting.json"), "--data", str(ds["data"]), "--workdir", str(work / "index"),
    ]  # fmt: skip
    row: dict[str, Any] = {"peer": name, "library": make_peer(name).library, "setting": build["name"]}
    for phase, extra in (
        *([] if reuse else [("build", [])]),
        (
            "serve",
            ["--queries", str(ds["queries"]), "--truth", str(ds["truth"]), "--targets", ",".join(map(str, TARGETS))],
        ),
    ):
        out = work / f"{phase}.json"
        log = work / f"{phase}.log"
        t0 = time.perf_counter()
        with log.open("w") as fh:
            try:
                rc = subprocess.run(
                    [*base[:5], phase, *base[5:], "--out", str(out), *extra],
                    stdout=fh, stderr=subprocess.STDOUT, env=child_env(args.threads), timeout=args.job_timeout,
                ).returncode  # fmt: skip
            except subprocess.TimeoutExpired:
                rc = "timeout"
        if rc != 0 or not out.exists():
            tail = log.read_text(errors="replace").strip().splitlines()[-3:]
            row["error"] = f"{phase} failed ({rc}) after {time.perf_counter() - t0:.0f} s: {' | '.join(tail)}"
            return row
        row[phase] = json.loads(out.read_text())
    if reuse:  # the index a killed run had built (same setting): serve it, say so
        row["build"] = json.loads((work / "build.json").read_text())
        row["build"]["reused"] = True
    if not args.keep_indexes:
        subprocess.run(["rm", "-rf", str(work / "index")], check=False)
    return row


def train_adaptor(ds: dict[str, Any], args: argparse.Namespace) -> tuple[Path, float]:
    """The one adaptor ours use, trained once per dataset with the library defaults, in a pinned process."""
    out = ds["folder"] / "adaptor"
    stamp = ds["folder"] / "adaptor_fit.json"
    if stamp.exists():
        return out, json.loads(stamp.read_text())["seconds"]
    code = (
        "import json,sys,numpy as np; sys.path.insert(0, sys.argv[3]); from ours_peer import train_adaptor; "
        "s = train_adaptor(np.load(sys.argv[1], mmap_mode='r'), __import__('pathlib').Path(sys.argv[2])); "
        "print(json.dumps({'seconds': s}))"
    )
    res = subprocess.run(
        ["taskset", "-c", args.cpus, sys.executable, "-c", code, str(ds["data"]), str(out), str(HERE)],
        capture_output=True, text=True, env=child_env(args.threads), check=True,
    )  # fmt: skip
    seconds = json.loads(res.stdout.strip().splitlines()[-1])["seconds"]
    stamp.write_text(json.dumps({"seconds": seconds}))
    return out, seconds


def git_commit() -> str:
    try:
        sha = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True).stdout
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True).stdout.strip()  # fmt: skip
        return sha.strip() + (" (with uncommitted changes)" if dirty else "")
    except OSError:
        return "unknown"


def machine() -> dict[str, Any]:
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "ram_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "platform": platform.platform(),
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--synthetic", action="store_true", help="topic-manifold synthetic rows instead of the real set")
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--tmp", type=Path, default=Path("/tmp/mindex-peers"))
    ap.add_argument("--peers", default=",".join(PEERS), help="comma-separated: " + ",".join(PEERS))
    ap.add_argument("--only", default="", help="substrings of setting names, split on '|' (quick looks, subsets)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--cpus", default="0", help="taskset CPU list every process is pinned to")
    ap.add_argument("--job-timeout", type=int, default=3600)
    ap.add_argument("--keep-indexes", action="store_true")
    ap.add_argument(
        "--reuse-builds",
        action="store_true",
        help="serve a job folder's finished build of the same "
        "setting instead of building again (a killed run's slow builds)",
    )
    ap.add_argument(
        "--shard",
        default="0/1",
        help="I/N: run jobs I, I+N, ... of the interleaved order (N runners, "
        "one per CPU, share one run; report.py --merge joins their rows)",
    )
    ap.add_argument("--results", type=Path, default=RESULTS / "peers.json")
    ap.add_argument("--key", default=None, help="entry of the results file (default: real / synthetic-ROWS)")
    args = ap.parse_args(argv)
    started = time.time()
    ds = prepare_data(args)
    peers, skipped = [], {}
    for name in [p for p in args.peers.split(",") if p]:
        reason = available(name)
        if reason:
            skipped[name] = reason
            print(f"skip {name}: {reason}", flush=True)
        else:
            peers.append(name)
    adaptor_dir, fit_s = train_adaptor(ds, args) if "ours" in peers else (None, None)
    rows = []
    order = jobs(peers, ds, adaptor_dir, [s for s in args.only.split("|") if s])
    shard, shards = (int(x) for x in args.shard.split("/"))
    planned = [f"{name}: {b['name']}" for name, b in order]
    order = order[shard::shards]
    print(f"{len(order)} jobs on {ds['n']:,} x {ds['d']}", flush=True)
    key = args.key or ds["tag"]
    from report import write_results

    entry = {
        "name": ("real: MiniLM docstrings" if not args.synthetic else "synthetic: topic-manifold")
        + f", {ds['n']:,} x {ds['d']}",
        "source": ds["source"],
        "n": ds["n"],
        "d": ds["d"],
        "k": K,
        "targets": list(TARGETS),
        "commit": git_commit(),
        "command": " ".join([sys.executable, *sys.argv]),
        "threads": args.threads,
        "pinning": f"taskset -c {args.cpus} (every build and serve process)"
        + (f"; runner {shard + 1} of {shards}, each on its own CPU" if shards > 1 else ""),
        "planned_jobs": planned,
        "shard": args.shard,
        "adaptor_fit_s": fit_s,
        "train_queries": train_queries_note(ds),
        "skipped": skipped,
        "started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(started)),
        "machine": machine(),
        "rows": rows,
    }
    # the results file is rewritten after every job (jobs_done of jobs_this_runner), so a run stopped at a
    # deadline leaves every row it measured, and says how far it got
    for i, (name, build) in enumerate(order):
        row = run_job(name, build, ds, args, i * shards + shard)
        rows.append(row)
        print(summary_line(row), flush=True)
        entry.update(jobs_done=i + 1, jobs_this_runner=len(order), minutes=round((time.time() - started) / 60, 1))
        write_results(args.results, key, entry)
    if not order:
        entry.update(jobs_done=0, jobs_this_runner=0, minutes=round((time.time() - started) / 60, 1))
        write_results(args.results, key, entry)


def train_queries_note(ds: dict[str, Any]) -> str | None:
    tq = ds.get("train_queries")
    if not tq:
        return None
    rows = len(np.load(tq, mmap_mode="r"))
    return (f"LoRANN '+ train queries' rows: {rows:,} MiniLM rows of dev-docstring-qa (its documents and "
            "train-split queries), none equal to a test query")  # fmt: skip


def summary_line(row: dict[str, Any]) -> str:
    if "error" in row:
        return f"  {row['setting']}: {row['error']}"
    s = row["serve"]
    best = ", ".join(
        f"@{t}: {o['qps']:,.0f} q/s r={o['recall']}" if o else f"@{t}: not reached" for t, o in s["oracle"].items()
    )
    return (
        f"  {row['setting']}: {s['resident_bytes_per_vector_all']:g} B/vec all ({s['resident_bytes_per_vector']:g} "
        f"+ fixed {s['fixed_bytes'] / 1e3:.0f} KB), build {row['build']['build_s']} s; {best}; load {s['load']}"
    )


if __name__ == "__main__":
    main()
