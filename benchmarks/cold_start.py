"""Cold start of ``mindex search``: process start to results written, and peak RSS, before and after.

"Before" is the code at a given commit (main before the numpy adaptor: ``cd9e556``, where importing the
package imports torch), "after" is this checkout (the adaptor applied in numpy; torch not imported by
a search), and "after, no torch" is this checkout with torch made unimportable (a search-only
environment). Each run is a fresh ``python`` process doing what the ``mindex`` entry point does::

    mindex search INDEX queries.npy -k 10 -o out.jsonl        # and: mindex --version

timed from just before the process is spawned to its exit (the results file is complete then; the
search itself is one batch, so "first result" and "last result" are the same moment), with its
peak resident set size from GNU ``/usr/bin/time``. Runs of the variants are interleaved, one
warm-up run per variant is discarded (file cache), and the median, min and max of the rest are
reported, with the machine's load: on the shared 2-core development box other jobs run beside us.

The index: the real MiniLM set in ``../shared/data`` (49,500 rows indexed, coarse 64 of 384 dims, FAISS
flat, a trained adaptor: 1 epoch on 20,000 rows, enough for a real-sized 384x384 MLP), 100
held-out rows as queries; synthetic data of the same shape with ``--synthetic``.

    git worktree add /tmp/coldstart-base cd9e556      # the code before
    python benchmarks/cold_start.py --base /tmp/coldstart-base [--reps 7] [--data ../shared/data]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
from _machine import cpu_model  # benchmarks/_machine.py (the script's own folder)

ROOT = Path(__file__).resolve().parent.parent
DATA_FILE = "docstrings-minilm384-50k.npy"
TIME = "/usr/bin/time"  # GNU time: -f %M is the peak RSS of the command alone
ENTRY = "import sys; sys.argv[0] = 'mindex'; from matryoshka_index.cli import main; main()"
BLOCK_TORCH = textwrap.dedent(
    """
    import sys

    class _NoTorch:
        def find_spec(self, name, path=None, target=None):
            if name == "torch" or name.startswith("torch."):
                raise ImportError(f"No module named {name!r}")
            return None

    sys.meta_path.insert(0, _NoTorch())
    """
)


def machine() -> dict:
    cpu = cpu_model()
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "numpy": np.__version__}


def load_average() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def build_index(work: Path, data: Path | None, synthetic: bool) -> tuple[Path, Path, dict]:
    """Build the searched index with this checkout's code (the on-disk format is the same before and after)."""
    sys.path.insert(0, str(ROOT))
    from matryoshka_index import MatryoshkaAdaptor, MatryoshkaIndex

    if synthetic or data is None:
        rng = np.random.default_rng(0)
        x = rng.standard_normal((49_600, 384)).astype(np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        source = "synthetic 49,600 x 384 (Gaussian, normalised)"
    else:
        x = np.load(data / DATA_FILE)[:49_600]
        source = f"{DATA_FILE} (first 49,600 rows)"
    corpus, queries = x[:49_500], x[49_500:]
    adaptor = MatryoshkaAdaptor(epochs=1, max_samples=20_000, device="cpu", quiet=True).fit(corpus)
    index = MatryoshkaIndex.build(corpus, coarse_dim=64, adaptor=adaptor, quiet=True)
    index.save(work / "corpus.mindex")
    np.save(work / "queries.npy", queries)
    return work / "corpus.mindex", work / "queries.npy", {"source": source, "rows": len(corpus), "queries": 100}


def run_once(args: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float]:
    """(wall seconds, peak RSS MiB) of one ``mindex ARGS`` process.

    The peak RSS comes from ``/usr/bin/time``: a child forked straight from this (large: it built the
    index) process would count this process's pages up to its ``exec`` in its own ``ru_maxrss``.
    """
    rss_file = cwd / "maxrss.txt"
    start = time.perf_counter()
    proc = subprocess.run(
        [TIME, "-f", "%M", "-o", str(rss_file), sys.executable, "-c", ENTRY, *args],
        env=env,
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"mindex {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")
    return wall, int(rss_file.read_text().split()[-1]) / 1024.0  # %M is KiB


def variant_env(tree: Path, block_torch: bool, work: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    path = [str(tree)]
    if block_torch:
        site = work / "notorch"
        site.mkdir(exist_ok=True)
        (site / "sitecustomize.py").write_text(BLOCK_TORCH)
        path.insert(0, str(site))
    env.update(PYTHONPATH=os.pathsep.join(path), MINDEX_QUIET="1", OMP_WAIT_POLICY="PASSIVE")
    return env


def probe(env: dict[str, str], cwd: Path) -> dict:
    """Which package the variant imports, and whether a search-only run ends up importing torch."""
    code = (
        "import sys, json, matryoshka_index, matryoshka_index.index, matryoshka_index.cli.main;"
        "print(json.dumps({'package': matryoshka_index.__file__, 'torch_imported': 'torch' in sys.modules}))"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=cwd, capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def summary(values: list[float]) -> dict:
    return {
        "median": round(statistics.median(values), 3),
        "min": round(min(values), 3),
        "max": round(max(values), 3),
        "runs": [round(v, 3) for v in values],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", type=Path, required=True, help="a checkout of the code before (git worktree add ...)")
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data", help="default: ../shared/data")
    ap.add_argument("--synthetic", action="store_true")
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "cold_start")
    a = ap.parse_args()
    if not a.synthetic and not (a.data / DATA_FILE).is_file():
        raise SystemExit(f"--data {a.data}: no {DATA_FILE} there; give --data DIR or --synthetic")
    if not Path(TIME).is_file():
        raise SystemExit(f"{TIME} (GNU time) is needed for the peak RSS; apt-get install time")
    if not (a.base / "matryoshka_index" / "__init__.py").is_file():
        raise SystemExit(f"--base {a.base}: no matryoshka_index there; make it with: git worktree add {a.base} cd9e556")
    base_commit = subprocess.run(
        ["git", "-C", str(a.base), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    after_commit = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        index, queries, dataset = build_index(work, a.data, a.synthetic)
        variants = {
            f"before ({base_commit})": variant_env(a.base, False, work),
            f"after ({after_commit})": variant_env(ROOT, False, work),
            f"after, torch unimportable ({after_commit})": variant_env(ROOT, True, work),
        }
        probes = {name: probe(env, work) for name, env in variants.items()}
        commands = {
            "search": ["search", str(index), str(queries), "-k", "10", "-o", str(work / "out.jsonl"), "--quiet"],
            "--version": ["--version"],
        }
        load_before = load_average()
        times: dict[str, dict[str, list[float]]] = {n: {c: [] for c in commands} for n in variants}
        rss: dict[str, dict[str, list[float]]] = {n: {c: [] for c in commands} for n in variants}
        for rep in range(a.reps + 1):  # rep 0 warms the file cache and is discarded
            for name, env in variants.items():
                for cmd, args in commands.items():
                    wall, peak = run_once(args, env, work)
                    if rep:
                        times[name][cmd].append(wall)
                        rss[name][cmd].append(peak)
            print(f"rep {rep}/{a.reps} done", file=sys.stderr)
        load_after = load_average()

    results = {
        "machine": machine(),
        "load_before": load_before,
        "load_after": load_after,
        "dataset": dataset,
        "reps": a.reps,
        "variants": {
            name: {
                "probe": probes[name],
                **{
                    cmd: {"wall_s": summary(times[name][cmd]), "peak_rss_mib": summary(rss[name][cmd])}
                    for cmd in commands
                },
            }
            for name in variants
        },
    }
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    a.out.with_suffix(".md").write_text(report(results))
    print(report(results))


def report(r: dict) -> str:
    m = r["machine"]
    lines = [
        "# Cold start of `mindex search`",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, Python {m['python']}, numpy {m['numpy']}. "
        f"Load before: `{r['load_before']}`; after: `{r['load_after']}` (a shared box: other jobs ran beside these "
        "runs, so single runs vary; medians of interleaved runs are the figures to compare).",
        "",
        f"Index: {r['dataset']['source']}, {r['dataset']['rows']:,} rows, coarse 64 of 384 dims, FAISS flat, "
        f"trained adaptor; {r['dataset']['queries']} queries in one batch. {r['reps']} runs per row after one "
        "discarded warm-up; wall time from spawning `python` to its exit (the results file is complete then), "
        "peak RSS from GNU time.",
        "",
        "| code | command | wall median (s) | min | max | peak RSS median (MiB) | torch imported |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, v in r["variants"].items():
        for cmd in ("search", "--version"):
            w, s = v[cmd]["wall_s"], v[cmd]["peak_rss_mib"]
            lines.append(
                f"| {name} | `mindex {cmd}` | {w['median']:.3f} | {w['min']:.3f} | {w['max']:.3f} | "
                f"{s['median']:.0f} | {'yes' if v['probe']['torch_imported'] else 'no'} |"
            )
    lines += [
        "",
        "`torch imported`: whether importing the package, the index and the CLI imports torch in that code. "
        "Reproduce: `git worktree add /tmp/coldstart-base cd9e556 && python benchmarks/cold_start.py "
        "--base /tmp/coldstart-base`.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
