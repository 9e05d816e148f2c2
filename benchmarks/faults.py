"""Crash tests: kill -9 at random moments, hostile files, full and read-only disks, mixed load.

    python benchmarks/faults.py [--kills 50] [--budget-s 600] [--load-seconds 120] [--only build,save]

Per operation (``mindex build`` / ``index.save()`` / ``mindex train -o`` over an existing result,
``mindex migrate`` copy and ``--in-place`` then ``--resume``, ``--rollback``, ``mindex calibrate``;
qdrant-client local mode for the migrations): ``--kills`` SIGKILLs at seeded random moments drawn
uniformly over the operation's measured duration (from the end of its imports to its end), each
followed by the checks of ``_faults_lib``. ``--budget-s`` caps the seconds spent per operation (a
loaded machine may not allow 50 cycles of each): the table says how many ran. Then: every file of
an index and of an adaptor truncated or with a byte flipped, a manifest from a future format
version, a full disk and a read-only target (small tmpfs mounts where ``mount`` works, else
skipped with the reason), two processes opening one index, and the mixed load of ``_load_lib``.
Results go to ``benchmarks/results/faults.md`` and ``.json`` after each section, so an interrupted
run keeps what it measured.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _faults_lib as fl
import _load_lib as ll

RESULTS = Path(__file__).resolve().parent / "results"


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def provenance() -> dict:
    """The commit measured, the command line, library versions and the children's threads."""
    from importlib.metadata import PackageNotFoundError, version

    git = subprocess.run(["git", "-C", str(RESULTS.parent.parent), "rev-parse", "HEAD"], capture_output=True, text=True)
    versions = {}
    for name in ("numpy", "faiss-cpu", "torch", "qdrant-client"):
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = None
    return {
        "commit": git.stdout.strip() or "unknown",
        "command": " ".join(["python", *sys.argv]),
        "versions": versions,
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS", "1"),
    }


@contextlib.contextmanager
def tmpfs(path: Path, size: str, *, read_only: bool = False):
    """A small tmpfs at ``path`` (root and a permitted ``mount`` only); yields False where it cannot mount."""
    path.mkdir(parents=True, exist_ok=True)
    ok = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    if ok.returncode != 0:
        yield False
        return
    try:
        if read_only:
            subprocess.run(["mount", "-o", "remount,ro", str(path)], check=True)
        yield True
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def hostile(work: Path, data: dict[str, Path]) -> list[dict]:
    """Damaged files, a future manifest, a full disk and a read-only target: each must be one line, exit 2."""
    rows: list[dict] = []
    tmp = work / "tmp"
    index, adaptor = work / "idx", work / "adaptor"
    fl.cli(["build", str(data["corpus_a"]), "--coarse-dim", "16", "--pca", "-q", "-o", str(index)])
    fl.cli(["train", str(data["corpus_a"]), "-o", str(adaptor), "--epochs", "1", "--max-samples", "600", "-q"])

    def record(case: str, args: list[str]) -> None:
        rc, out, err = fl.run_cli_process(args, tmp)
        lines = [ln for ln in err.splitlines() if ln.strip()]
        rows.append(
            {
                "case": case,
                "exit": rc,
                "one_line": fl.one_line_error(rc, err),
                "results_printed": bool(out.strip()),
                "message": (lines[-1] if lines else "")[:200],
            }
        )

    for case, damaged in fl.damaged_copies(index, work / "damaged_idx"):
        record(f"index: {case}", ["search", str(damaged), str(data["queries"])])
    for case, damaged in fl.damaged_copies(adaptor, work / "damaged_adaptor"):
        record(f"adaptor: {case}", ["build", str(data["corpus_a"]), "--adaptor", str(damaged), "-o", str(work / "x")])
    future = fl.future_manifest(index, work / "future_idx")
    record("index: manifest format_version from the future", ["search", str(future), str(data["queries"])])
    future = fl.future_manifest(adaptor, work / "future_adaptor", name="adaptor.json")
    record(
        "adaptor: adaptor.json format_version from the future",
        ["build", str(data["corpus_a"]), "--adaptor", str(future), "-o", str(work / "x")],
    )
    with tmpfs(work / "full", "200k") as mounted:
        if mounted:
            record(
                "disk full (200 KB tmpfs): build -o",
                ["build", str(data["corpus_a"]), "--pca", "-o", str(work / "full/idx")],
            )
            left = fl.leftovers(work / "full", tmp)
            rows[-1]["leftovers"] = left
        else:
            rows.append({"case": "disk full", "skipped": "mount -t tmpfs is not permitted here"})
    with tmpfs(work / "ro", "1m", read_only=True) as mounted:
        if mounted:
            record("read-only target: build -o", ["build", str(data["corpus_a"]), "--pca", "-o", str(work / "ro/idx")])
            record(
                "read-only target: train -o",
                ["train", str(data["corpus_a"]), "--epochs", "1", "-o", str(work / "ro/a")],
            )
        else:
            rows.append({"case": "read-only target", "skipped": "mount -t tmpfs is not permitted here"})
    return rows


def write(results: dict, name: str = "faults") -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(fl.dumps(results) + "\n")
    lines = [
        "# Crash tests: kill -9, hostile files, full and read-only disks, mixed load",
        "",
        f"Machine: {results['machine']}. Started {results['started']} (`uptime`: {results['uptime_start']}); "
        f"last section written with `uptime`: {uptime()}.",
        "",
        *(
            [
                f"Commit: `{results['commit']}`; command: `{results['command']}`; versions: {results['versions']}; "
                f"threads: OMP_NUM_THREADS={results.get('omp_num_threads')} in every child, no pinning.",
                "",
            ]
            if "commit" in results and not results.get("parts")
            else []
        ),
        *(
            ["Sections measured by separate runs (a later run of an operation replaces an earlier one):", ""]
            + [
                f"- {', '.join(x['sections'])}: commit `{x['commit']}`, `{x['command']}`, started {x['started']} "
                f"(`uptime`: {x['uptime_start']})"
                for x in results["parts"]
            ]
            + [""]
            if results.get("parts")
            else []
        ),
        "The machine is shared with other agents (a load average of 10-16 on 2 cores during this run is "
        "usual): durations and throughput are relative, the pass/fail counts are not.",
        "",
        "## kill -9 at random moments",
        "",
        "Kill moments: seeded, uniform over the operation's measured duration (from START, once the modules "
        "it needs are imported, to DONE, when the operation returns; the save child pauses 0.02 s before "
        "each fsync, so its window spans its steps). *kills*: the process was alive when SIGKILLed; "
        "*landed*: and had not yet finished the operation (no DONE): only these test anything; *missed "
        "draws*: draws that came after the end and were drawn again below (`--redraws`, 0 here unless said). "
        "*intact*: what is on disk loads with its checksums and answers exactly as the previous state or "
        "as the finished operation (*committed* counts the latter); for a migration, every point, payload "
        "and vector of the source unchanged. *resumed identical*: the next run (`--resume`, `--rollback` "
        "again, or a rerun) ends in a state identical to an uninterrupted run (every point, payload and "
        "vector; within 1e-6 where local mode re-normalises Cosine vectors). *leftovers*: `.NAME.*.tmp`, "
        "`.NAME.*.old` under the work folder and `mindex-*` in the private temporary folder after that run.",
        "",
        "| operation | measured s | cycles | kills | landed | missed draws | intact | committed "
        "| resumed identical | leftovers | uptime |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for r in results["kills"]:
        left = "none"
        if r["leftover_examples"]:
            left = (
                f"after {r['cycles_with_leftovers_after_next_run']} of {r['cycles']} next runs, piling up "
                f"(e.g. `{r['leftover_examples'][0]}`)"
            )
        lines.append(
            f"| {r['operation']} | {r['duration_s']:.2f} | {r['cycles']} | {r['kills']} | {r.get('landed', '-')} | "
            f"{r.get('missed_draws', '-')} | {r['intact']} | "
            f"{r['committed_before_kill']} | {r['resumed_identical']} | {left} | {r['uptime'].split('average:')[-1]} |"
        )
    broken = [(r["operation"], f) for r in results["kills"] for f in r["failures"]]
    lines.append("")
    if broken:
        lines.append("**RELEASE BLOCKERS: a kill left a broken state or a resume differed:**")
        for op, f in broken:
            lines.append(f"- {op}: kill at {f['delay_s']:.3f} s: {f['state']}; next run: {f['resume_note']}")
    elif results["kills"]:
        lines.append("No kill left a broken state; every next run finished identical to an uninterrupted one.")
    if results.get("hostile"):
        lines += ["", "## Hostile files and disks", "", "| case | exit | one line | message |", "|---|---:|---|---|"]
        for h in results["hostile"]:
            if "skipped" in h:
                lines.append(f"| {h['case']} | - | skipped | {h['skipped']} |")
                continue
            msg = h["message"].replace("|", "\\|")
            if h.get("leftovers"):
                msg += f" (left behind: {', '.join(h['leftovers'])})"
            lines.append(f"| {h['case']} | {h['exit']} | {'yes' if h['one_line'] else '**no**'} | {msg} |")
    if results.get("two_processes"):
        lines += ["", "## Two processes opening one saved index", ""]
        for backend, r in results["two_processes"].items():
            lines.append(f"- {backend}: both searched with the same results: {r['both_searched']}; {r['processes']}")
    if results.get("load"):
        lines += [
            "",
            f"## Mixed load: {results['load_threads']} searching threads (one query per call) beside one thread "
            "adding, removing and re-adding batches of 50",
            "",
            "Mutating = no: the same 8 threads with no mutation (the idle figure). *ids not live*: returned ids "
            "that were not in the index at any moment of that search; *wrong scores*: returned scores that "
            "differ from the exact score of that id's vector by more than 1e-4.",
            "",
            "| backend | mutating | seconds | searches | queries/s | p50 ms | p99 ms | mutations | exceptions "
            "| ids not live | wrong scores | final contents |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
        ]
        for r in results["load"]:
            lines.append(
                f"| {r['backend']} | {r['mutating']} | {r['seconds']} | {r['searches']} | {r['qps']} | {r['p50_ms']} "
                f"| {r['p99_ms']} | {r['mutations']} | {len(r['errors'])} | {r['bad_ids']} | {r['bad_scores']} "
                f"| {'exact' if r['final_ok'] else '**wrong**'}: {r['final_note']} |"
            )
    (RESULTS / f"{name}.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=50)
    ap.add_argument("--budget-s", type=float, default=900.0, help="seconds per operation at most")
    ap.add_argument("--only", default=",".join(fl.OPERATIONS))
    ap.add_argument("--load-seconds", type=float, default=120.0)
    ap.add_argument("--load-threads", type=int, default=8)
    ap.add_argument("--skip", default="", help="sections to skip: kills,hostile,two,load")
    ap.add_argument("--redraws", type=int, default=0, help="draw a kill that came after the work again, up to N times")
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--results", default="faults", help="name of the result files in benchmarks/results/")
    ap.add_argument(
        "--merge", type=Path, nargs="+", help="combine these result .json files into --results; run nothing"
    )
    args = ap.parse_args()
    if args.merge:  # sections measured by separate runs (e.g. the kills and the rest, side by side)
        merged: dict = {}
        parts = []
        for path in args.merge:
            part = json.loads(path.read_text())
            sections = [k for k in ("kills", "hostile", "two_processes", "load") if part.get(k)]
            parts.append(
                {k: part.get(k) for k in ("commit", "command", "started", "uptime_start")} | {"sections": sections}
            )
            kills = {r["operation"]: r for r in merged.get("kills", [])}
            kills.update({r["operation"]: r for r in part.get("kills", [])})  # a later run of an operation wins
            merged.update({k: v for k, v in part.items() if v or k not in merged})
            merged["kills"] = list(kills.values())
        merged["parts"] = parts
        write(merged, args.results)
        return
    skip = set(filter(None, args.skip.split(",")))
    work = args.work or Path(tempfile.mkdtemp(prefix="faults-"))
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    results: dict = {
        "machine": f"{platform.node()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "uptime_start": uptime(),
        "args": vars(args),
        **provenance(),
        "kills": [],
        "load_threads": args.load_threads,
    }
    data = fl.write_data(work / "data")
    if "kills" not in skip:
        for name in args.only.split(","):
            op = fl.OPERATIONS[name](name, work / name, data)
            t0 = time.perf_counter()
            op.prepare()
            duration = fl.measure(op)
            outcomes: list[fl.Outcome] = []
            seed = 0
            while len(outcomes) < args.kills and time.perf_counter() - t0 < args.budget_s:
                _, more = fl.kill_cycles(op, 1, seed=seed, duration=duration, redraws=args.redraws)
                outcomes += more
                seed += 1
            row = fl.summarise(name, duration, outcomes) | {"uptime": uptime(), "seconds": time.perf_counter() - t0}
            results["kills"].append(row)
            print(json.dumps({k: v for k, v in row.items() if k != "failures"}), flush=True)
            write(results, args.results)
            shutil.rmtree(work / name, ignore_errors=True)
    if "hostile" not in skip:
        results["hostile"] = hostile(work / "hostile", data)
        write(results, args.results)
    if "two" not in skip:
        from matryoshka_index import MatryoshkaIndex

        results["two_processes"] = {}
        for backend in ("faiss", "qdrant-edge"):
            path = work / f"two-{backend}"
            MatryoshkaIndex.build(fl.synthetic(2000, 64, 1), coarse_dim=16, adaptor="pca", backend=backend).save(path)
            results["two_processes"][backend] = ll.two_processes(path, data["queries"], work / "tmp")
        write(results, args.results)
    if "load" not in skip:
        results["load"] = []
        for backend in ("faiss", "qdrant-edge"):
            for mutating in (False, True):
                r = ll.mixed_load(backend, args.load_seconds, threads=args.load_threads, mutate=mutating)
                results["load"].append(r.to_dict() | {"mutating": mutating, "uptime": uptime()})
                print(json.dumps(results["load"][-1]), flush=True)
                write(results, args.results)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
