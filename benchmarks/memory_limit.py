"""Build and search a corpus larger than the memory the process may use (issue 15, item 7).

A synthetic float32 corpus (default 1,000,000 x 384, 1.5 GB: the issue's case) is built into a flat
FAISS index and searched with ``mindex`` while the process sits in a memory cgroup whose limit
(default 1 GiB) is smaller than the corpus. Page cache is charged to the cgroup too, so what is measured is what the
README promises: a corpus larger than RAM builds and searches, at what cost in time and major page
faults. Each configuration is run with the code in ``--before`` (a checkout without the fix) and
in this checkout, with and without the limit; the corpus and index files are dropped from the page
cache (``posix_fadvise(DONTNEED)``) before every run so no run inherits another's cache.

Needs root and a cgroup v1 memory controller at /sys/fs/cgroup/memory (or cgroup v2 at
/sys/fs/cgroup); prints a table and writes ``benchmarks/results/memory_limit.md`` and ``.json``.

    git archive <commit before the fix> | tar -x -C /tmp/orig
    python benchmarks/memory_limit.py --before /tmp/orig [--rows 1000000] [--limit-mib 1024]

Since issue 15's changes were merged, the package itself advises its maps as ADVICE_PRE did, so
today's code is measured as ``--variants after`` (issue 19, item 7); the other variants are kept to
re-run the issue-15 comparison on a checkout of that time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

VARIANTS = ("before", "after", "after + advice", "after + advice + index windows")
HERE = Path(__file__).resolve().parent
REPO = HERE.parent
CG1 = Path("/sys/fs/cgroup/memory")
CG2 = Path("/sys/fs/cgroup")

# What the backend's own code should do with the storage helpers (faiss_backend.py outside
# _SpillFile is another helper's file, so the "after + advice" rows apply it inside the process):
# the rerank's random gathers from the memory-mapped full vectors (a loaded index's full.npy and the
# build's spill file) advised random, one page per candidate instead of a read-ahead window; the
# sequential passes over them (exact search, writing full.npy) advised sequential, windows dropped
# once consumed, random again afterwards.
ADVICE_PRE = """
from matryoshka_index.backends import faiss_backend as _fb
from matryoshka_index.storage import advise_random as _ar, stream_rows as _sr
_open = _fb.FaissBackend.open.__func__
def _open_advised(cls, *a, **k):
    be = _open(cls, *a, **k)
    _ar(be._full.base)
    return be
_fb.FaissBackend.open = classmethod(_open_advised)
_append = _fb._SpillFile.append
def _append_advised(self, x):
    cap = self._cap
    _append(self, x)
    if self._cap != cap:
        _ar(self._mm)
_fb._SpillFile.append = _append_advised
def _iter_chunks(self, chunk_rows=_fb._CHUNK_ROWS):
    for start, arr in self.segments():
        for s, w in _sr(arr, chunk_rows):
            yield start + s, w
        _ar(arr)
_fb._FullStore.iter_chunks = _iter_chunks
"""

# And the build's own pass over the corpus (index.py, another helper's file) dropping each window of
# the memory-mapped corpus once added, as validation.check_embeddings now does for its pass.
INDEX_PRE = """
import matryoshka_index.index as _ix
from matryoshka_index.storage import release_rows as _rr
_add = _ix.MatryoshkaIndex._add_rows
def _add_released(self, vectors, id_arr, payloads, rows):
    _add(self, vectors, id_arr, payloads, rows)
    if isinstance(rows, slice):
        _rr(vectors, rows.start, rows.stop)
    elif len(rows):
        _rr(vectors, int(rows[0]), int(rows[-1]) + 1)
_ix.MatryoshkaIndex._add_rows = _add_released
"""


class Cgroup:
    """A fresh memory cgroup with a limit; ``enter`` is a preexec_fn that moves the child into it."""

    def __init__(self, name: str, limit: int | None) -> None:
        self.v1 = (CG1 / "memory.limit_in_bytes").exists()
        self.path = (CG1 if self.v1 else CG2) / name
        self.path.mkdir(exist_ok=True)
        self.limit = limit
        if self.v1:
            (self.path / "memory.limit_in_bytes").write_text(str(limit if limit else -1))
            (self.path / "memory.max_usage_in_bytes").write_text("0")
        else:
            (self.path / "memory.max").write_text(str(limit) if limit else "max")

    def enter(self) -> None:
        (self.path / "cgroup.procs").write_text(str(os.getpid()))

    def peak(self) -> int | None:
        f = self.path / ("memory.max_usage_in_bytes" if self.v1 else "memory.peak")
        return int(f.read_text()) if f.exists() else None

    def close(self) -> None:
        for _ in range(50):
            try:
                self.path.rmdir()
                return
            except OSError:
                time.sleep(0.1)


def drop_cache(*paths: Path) -> None:
    for root in paths:
        files = [root] if root.is_file() else [p for p in root.rglob("*") if p.is_file()] if root.exists() else []
        for f in files:
            fd = os.open(f, os.O_RDONLY)
            try:
                os.fsync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def run(code_dir: Path, args: list[str], limit: int | None, timeout: float, pre: str = "") -> dict:
    """``mindex ARGS`` with ``code_dir`` on the path, inside a memory cgroup; wall, peak RSS, faults, cgroup peak."""
    code = (
        "import sys\nsys.argv[0] = 'mindex'\n" + pre + "\nfrom matryoshka_index.cli import main\nmain(sys.argv[1:])\n"
    )
    env = dict(os.environ, PYTHONPATH=str(code_dir), OMP_NUM_THREADS="2", MINDEX_QUIET="1", MINDEX_TMPDIR="")
    cg = Cgroup(f"mindex-bench-{os.getpid()}", limit)
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-c", code, *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=cg.enter,
        cwd=str(code_dir.parent),  # not code_dir itself: python -c puts the cwd first on sys.path
    )
    timed_out = False
    deadline = t0 + timeout
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.perf_counter() > deadline:
            proc.kill()
            timed_out = True
            pid, status, usage = os.wait4(proc.pid, 0)
            break
        time.sleep(0.2)
    wall = time.perf_counter() - t0
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
    peak = cg.peak()
    cg.close()
    rc = os.waitstatus_to_exitcode(status)
    return {
        "rc": rc,
        "load_at_end": [round(v, 2) for v in os.getloadavg()],
        "timed_out": timed_out,
        "seconds": round(wall, 1),
        "max_rss_mib": round(usage.ru_maxrss / 1024, 1),
        "major_faults": int(usage.ru_majflt),
        "cgroup_peak_mib": round(peak / 2**20, 1) if peak else None,
        "stderr_tail": err.strip().splitlines()[-1:] if rc else [],
        "stdout_tail": out.strip().splitlines()[-1:] if out.strip() else [],
    }


def machine() -> dict:
    return {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "ram_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "python": platform.python_version(),
        "kernel": platform.release(),
    }


def load() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def provenance() -> dict:
    """The commit measured (and whether the tree had uncommitted changes), the command line, the versions."""
    from importlib.metadata import PackageNotFoundError, version

    def git(*args: str) -> str:
        r = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True)
        return r.stdout.strip() if r.returncode == 0 else "unknown"

    versions = {}
    for name in ("numpy", "faiss-cpu", "torch", "matryoshka-index"):
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = None
    return {
        "commit": git("rev-parse", "HEAD"),
        "uncommitted_changes": bool(git("status", "--porcelain", "--untracked-files=no")),
        "command": " ".join(["python", *sys.argv]),
        "versions": versions,
        "threads": "OMP_NUM_THREADS=2 in each child, no CPU pinning",
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", type=Path, help="a checkout of the code without the fix (e.g. git archive of main)")
    ap.add_argument(
        "--patch-tree",
        type=Path,
        help="a checkout of issue 15's time for the two patched variants (they patch private names of that code, "
        "gone since: MatryoshkaIndex._add_rows, faiss_backend._SpillFile)",
    )
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--limit-mib", type=int, default=1024)
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds before a run is stopped and reported")
    ap.add_argument("--work", type=Path, default=Path("/var/tmp/mindex-memory-limit"))
    ap.add_argument("--no-unlimited", action="store_true", help="skip the runs without a limit")
    ap.add_argument("--variants", default="before,after", help="comma-separated, of: " + ", ".join(VARIANTS))
    ap.add_argument("--append", action="store_true", help="add to the rows of an earlier run's json")
    ap.add_argument(
        "--search-only",
        action="store_true",
        help="build once without a limit (this checkout), then only search under the limit with each variant",
    )
    ap.add_argument("--report-only", action="store_true", help="rewrite the .md from the .json, run nothing")
    ns = ap.parse_args()
    if ns.report_only:
        write_report(json.loads((HERE / "results" / "memory_limit.json").read_text()))
        return
    if os.geteuid() != 0 or not (CG1.exists() or (CG2 / "cgroup.controllers").exists()):
        sys.exit("needs root and a memory cgroup (cgroup v1 /sys/fs/cgroup/memory or v2 /sys/fs/cgroup)")
    ns.work.mkdir(parents=True, exist_ok=True)
    corpus, queries = ns.work / "corpus.npy", ns.work / "queries.npy"
    if not corpus.exists():
        r = run(REPO, ["synthetic", str(corpus), "-n", str(ns.rows), "-d", str(ns.dim), "-q"], None, 3600)
        assert r["rc"] == 0, r
        subprocess.run(
            [sys.executable, "-c", f"import numpy as np; x = np.load({str(corpus)!r}, mmap_mode='r'); "
             f"np.save({str(queries)!r}, np.ascontiguousarray(x[-{ns.queries}:]) + np.float32(0.01))"],
            check=True, env=dict(os.environ, PYTHONPATH=str(REPO)),
        )  # fmt: skip
    limit = ns.limit_mib * 2**20
    unlimited = [] if ns.no_unlimited else [None]
    known = {
        "before": (ns.before, "", [*unlimited, limit]),
        "after": (REPO, "", [*unlimited, limit]),
        "after + advice": (ns.patch_tree, ADVICE_PRE, [limit]),
        "after + advice + index windows": (ns.patch_tree, ADVICE_PRE + INDEX_PRE, [limit]),
    }
    wanted = [v.strip() for v in ns.variants.split(",") if v.strip()]
    if "before" in wanted and ns.before is None:
        sys.exit("--before DIR is needed for the 'before' rows")
    if any(v.startswith("after + ") for v in wanted) and ns.patch_tree is None:
        sys.exit("--patch-tree DIR is needed for the patched variants: they patch issue 15's code, not this checkout's")
    variants = [(v, *known[v]) for v in wanted]
    out_json = HERE / "results" / "memory_limit.json"
    earlier = json.loads(out_json.read_text()) if ns.append and out_json.exists() else {}
    rows = earlier.get("rows", [])
    loads = earlier.get("loads", [])
    if "load_before" in earlier:  # the first version of this script's json
        codes = list(dict.fromkeys(r["code"] for r in rows))
        loads = [{"variants": codes, "before": earlier["load_before"], "after": earlier["load_after"]}]
    load_before = load()
    if ns.search_only:
        index = ns.work / "idx.mindex"
        shutil.rmtree(index, ignore_errors=True)
        drop_cache(corpus)
        args = ["build", str(corpus), "--coarse-dim", "64", "-o", str(index), "-q"]
        b = run(REPO, args, None, 3600)
        rows.append({"code": "after (index for the search rows)", "operation": "build", "limit_mib": None, **b})
        print(rows[-1], flush=True)
        for label, code_dir, pre, _ in variants:
            drop_cache(index, queries)
            args = ["search", str(index), str(queries), "-k", "10", "-o", str(ns.work / "res.npy")]
            s = run(code_dir, args, limit, ns.timeout, pre)
            rows.append({"code": label, "operation": "search", "limit_mib": ns.limit_mib, **s})
            print(rows[-1], flush=True)
        variants = []
    for label, code_dir, pre, limits in variants:
        for lim in limits:
            index = ns.work / "idx.mindex"
            shutil.rmtree(index, ignore_errors=True)
            drop_cache(corpus)
            args = ["build", str(corpus), "--coarse-dim", "64", "-o", str(index), "-q"]
            b = run(code_dir, args, lim, ns.timeout, pre)
            rows.append({"code": label, "operation": "build", "limit_mib": ns.limit_mib if lim else None, **b})
            print(rows[-1], flush=True)
            if b["rc"] != 0:
                continue
            drop_cache(index, queries)
            args = ["search", str(index), str(queries), "-k", "10", "-o", str(ns.work / "res.npy")]
            s = run(code_dir, args, lim, ns.timeout, pre)
            rows.append({"code": label, "operation": "search", "limit_mib": ns.limit_mib if lim else None, **s})
            print(rows[-1], flush=True)
    report = {
        **provenance(),
        "machine": machine(),
        "loads": [*loads, {"variants": wanted, "before": load_before, "after": load()}],
        "corpus": {"rows": ns.rows, "dim": ns.dim, "bytes": corpus.stat().st_size},
        "queries": ns.queries,
        "limit_mib": ns.limit_mib,
        "rows": rows,
        "self_rusage_maxrss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "memory_limit.json").write_text(json.dumps(report, indent=2) + "\n")
    write_report(report)


VARIANT_NOTES = {
    "before": "the code before issue 15's fixes",
    "after": "this checkout (the commit above)",
    "after + advice": "this branch plus the advice hunks for faiss_backend.py outside _SpillFile (ADVICE_PRE above)",
    "after + advice + index windows": "and index.py's corpus pass dropping its windows (INDEX_PRE above)",
}


def write_report(report: dict) -> None:
    """``memory_limit.md`` from the json (the findings, when present, are the json's ``findings``)."""
    c = report["corpus"]
    loads = report.get("loads") or [
        {"variants": ["all"], "before": report.get("load_before"), "after": report.get("load_after")}
    ]
    lines = [
        "# Build and search under a memory limit smaller than the corpus",
        "",
        f"Corpus {c['rows']:,} x {c['dim']} float32 ({c['bytes'] / 2**20:,.0f} MiB), flat FAISS index, coarse dim 64, "
        f"no adaptor; {report['queries']:,} queries, k=10. Limit: a memory cgroup (v1) of {report['limit_mib']} MiB "
        "(page cache counted, as in a container). Corpus and index dropped from the page cache before every run. "
        "`python benchmarks/memory_limit.py --help` for how it runs.",
        "",
        *(
            [
                f"Commit measured: `{report['commit']}`"
                + (" (with uncommitted changes)" if report.get("uncommitted_changes") else "")
                + f"; command: `{report['command']}`; versions: {report['versions']}; threads: {report['threads']}.",
                "",
            ]
            if "commit" in report
            else []
        ),
        f"Machine: {report['machine']}. A shared machine: other jobs ran alongside, "
        "so times are noisy, and only far-apart times mean something; exit status, faults and memory are the robust "
        "figures. Load (`uptime`) around each set of runs, and the 1/5/15-minute load at the end of each run:",
        "",
        *[f"- {', '.join(x['variants'])}: before `{x['before']}`; after `{x['after']}`" for x in loads],
        "",
        "| code | operation | limit | exit | seconds | peak RSS MiB | cgroup peak MiB | major faults | load at end |",
        "|---|---|---|---|---:|---:|---:|---:|---|",
    ]
    for r in report["rows"]:
        status = "timeout" if r["timed_out"] else str(r["rc"])
        lim = f"{r['limit_mib']} MiB" if r["limit_mib"] else "none"
        lines.append(
            f"| {r['code']} | {r['operation']} | {lim} | {status} | {r['seconds']} | {r['max_rss_mib']} | "
            f"{r['cgroup_peak_mib']} | {r['major_faults']:,} | {' '.join(map(str, r.get('load_at_end') or ['-']))} |"
        )
    present = {r["code"] for r in report["rows"]}
    lines += ["", "Codes:", ""] + [f"- **{k}**: {v}" for k, v in VARIANT_NOTES.items() if k in present]
    if report.get("findings"):
        lines += ["", "## Findings", "", *report["findings"]]
    (HERE / "results" / "memory_limit.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
