"""The TypeScript example's query vectors against the Python library's (README, "Query from another language").

Trains an adaptor (library defaults, ``--epochs``) on the labelled dev set's corpus (real MiniLM
embeddings, 384-d), builds an index (``--backend``: FAISS by default; the request's vectors depend on the
adaptor and the manifest, not on the backend, and qdrant-client's local mode calibrates a 12,000-row
index too slowly on a loaded 2-core machine) and saves it, then
runs ``examples/typescript``'s compiled ``dist/query.js`` in printing mode on ``--queries`` of the
set's queries, both ways: the adaptor applied in TypeScript from ``adaptor.safetensors``, and
``--onnx`` with the graph ``mindex export`` writes for the index. For each query the request's
coarse vector (the prefetch's ``query``) and full vector (the outer ``query``) are compared with
``matryoshka_index.qdrant_request.query_vectors`` (the library's float32 arithmetic) and with the
README's formula in float64 (scipy's erf): largest absolute difference over every query and
coordinate. Writes ``benchmarks/results/typescript_agreement.md`` and ``.json``.

    cd examples/typescript && npm install && npm run build && cd -
    python benchmarks/typescript_agreement.py [--ts-dir examples/typescript] [--queries 200] [--epochs 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"


def _unit(v: np.ndarray) -> np.ndarray:
    return v / max(float(np.linalg.norm(v)), 1e-12)


def float64_reference(e: np.ndarray, t: dict[str, np.ndarray], manifest: dict) -> tuple[np.ndarray, np.ndarray]:
    """The README's ``query_vectors`` in float64 (scipy's erf): what exact arithmetic on the stored weights gives."""
    from scipy.special import erf

    t = {k: v.astype(np.float64) for k, v in t.items()}
    e = e.astype(np.float64)
    z = e @ t["rotation"] if "rotation" in t else e
    h = z @ t["mlp.0.weight"].T + t["mlp.0.bias"]
    g = h * (1 + erf(h / np.sqrt(2))) / 2
    f = z + g @ t["mlp.2.weight"].T + t["mlp.2.bias"]
    full = f if manifest.get("rerank", "original") == "adapted" else e
    coarse = f[: int(manifest["coarse_dim"])]
    if manifest.get("metric", "cosine") == "cosine":
        return _unit(coarse), _unit(full)
    return coarse, full


def node_request(ts_dir: Path, index: Path, query: np.ndarray, work: Path, onnx: Path | None) -> dict:
    q_file = work / "q.json"
    q_file.write_text(json.dumps([float(x) for x in query]))  # float32 -> shortest repr of the same double
    cmd = ["node", str(ts_dir / "dist" / "query.js"), str(index), str(q_file)]
    if onnx is not None:
        cmd += ["--onnx", str(onnx)]
    env = {k: v for k, v in os.environ.items() if k != "QDRANT_URL"}  # printing mode
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env, cwd=ts_dir)
    return json.loads(out.stdout)


def _version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def _uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--ts-dir", type=Path, default=ROOT / "examples" / "typescript", help="with dist/query.js built")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--coarse-dim", type=int, default=64)
    ap.add_argument("--backend", default="faiss", help="faiss, qdrant (local mode on disk) or qdrant-edge")
    ap.add_argument("--out", type=Path, default=RESULTS / "typescript_agreement")
    args = ap.parse_args()

    from safetensors.numpy import load_file

    from matryoshka_index import MatryoshkaAdaptor, MatryoshkaIndex
    from matryoshka_index.adaptor.onnx_export import export_onnx
    from matryoshka_index.backends.qdrant.request import query_vectors

    ts_dir = args.ts_dir.resolve()
    if not (ts_dir / "dist" / "query.js").exists():
        sys.exit(f"{ts_dir}/dist/query.js is missing: cd {ts_dir} && npm install && npm run build")
    load_before = _uptime()
    corpus = np.load(args.data / "dev-docstring-qa" / "corpus.npy")
    queries = np.load(args.data / "dev-docstring-qa" / "queries.npy")[: args.queries]
    t0 = time.perf_counter()
    adaptor = MatryoshkaAdaptor(epochs=args.epochs, device="cpu", quiet=True).fit(corpus)
    fit_s = time.perf_counter() - t0
    with tempfile.TemporaryDirectory(prefix="ts-agreement-") as tmp:
        work = Path(tmp)
        options = {"path": str(work / "qdrant")} if args.backend == "qdrant" else None
        index = MatryoshkaIndex.build(
            corpus,
            coarse_dim=args.coarse_dim,
            adaptor=adaptor,
            backend=args.backend,
            backend_options=options,
            quiet=True,
        )
        index.save(work / "docs.mindex")
        manifest = json.loads((work / "docs.mindex" / "manifest.json").read_text())
        index.close()
        tensors = load_file(str(work / "docs.mindex" / "adaptor" / "adaptor.safetensors"))
        onnx = work / "coarse.onnx"
        # what `mindex export docs.mindex -o coarse.onnx` writes: the prefix, normalised for a cosine index
        export_onnx(adaptor, onnx, dim=int(manifest["coarse_dim"]), normalize=manifest["metric"] == "cosine")
        worst: dict[str, float] = {}
        largest = {"coarse": 0.0, "full": 0.0}
        for q in queries:
            lib_coarse, lib_full = query_vectors(adaptor, q, manifest)
            ref_coarse, ref_full = float64_reference(q, tensors, manifest)
            largest["coarse"] = max(largest["coarse"], float(np.abs(lib_coarse).max()))
            largest["full"] = max(largest["full"], float(np.abs(lib_full).max()))
            for way, onnx_path in (("typescript", None), ("onnx", onnx)):
                body = node_request(ts_dir, work / "docs.mindex", q, work, onnx_path)["body"]
                ts_coarse = np.asarray(body["prefetch"]["query"], dtype=np.float64)
                ts_full = np.asarray(body["query"], dtype=np.float64)
                for name, a, b in (
                    (f"{way} coarse vs library", ts_coarse, lib_coarse),
                    (f"{way} full vs library", ts_full, lib_full),
                    (f"{way} coarse vs float64", ts_coarse, ref_coarse),
                    (f"{way} full vs float64", ts_full, ref_full),
                ):
                    worst[name] = max(worst.get(name, 0.0), float(np.abs(a - b.astype(np.float64)).max()))
            worst["library coarse vs float64"] = max(
                worst.get("library coarse vs float64", 0.0), float(np.abs(lib_coarse - ref_coarse).max())
            )
    node_version = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
    ort_pkg = ts_dir / "node_modules" / "onnxruntime-node" / "package.json"
    git = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True)
    report = {
        "commit": git.stdout.strip() or "unknown",
        "command": " ".join(["python", *sys.argv]),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "versions": {
            "numpy": np.__version__,
            "torch": _version("torch"),
            "qdrant-client": _version("qdrant-client"),
            "node": node_version,
            "onnxruntime-node": json.loads(ort_pkg.read_text())["version"] if ort_pkg.exists() else None,
        },
        "threads": "library defaults (no pinning); node single-threaded",
        "load_before": load_before,
        "load_after": _uptime(),
        "data": "dev-docstring-qa corpus (12,000 x 384, training and index) and its first queries",
        "queries": len(queries),
        "backend": args.backend,
        "epochs": args.epochs,
        "fit_seconds": round(fit_s, 1),
        "manifest": {k: manifest.get(k) for k in ("coarse_dim", "metric", "rerank", "candidates")},
        "largest_abs_value": largest,
        "max_abs_diff": worst,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    rows = [f"| {name} | {diff:.1e} |" for name, diff in worst.items()]
    md = [
        "# The TypeScript example's query vectors against the Python library's",
        "",
        f"Commit `{report['commit']}`; command `{report['command']}`; {report['machine']}; versions "
        f"{report['versions']}; threads: {report['threads']}. Load before: `{load_before}`; after: "
        f"`{report['load_after']}`.",
        "",
        f"Adaptor: library defaults, {args.epochs} epochs on the dev set's corpus (fit {report['fit_seconds']} s); "
        f"index: {args.backend} backend, {report['manifest']}. `examples/typescript`'s `dist/query.js` in "
        f"printing mode on the first {len(queries)} queries of the set, the adaptor applied in TypeScript from "
        "`adaptor.safetensors` and with `--onnx` (the index's coarse query exported as `mindex export` does). "
        "*library*: `qdrant_request.query_vectors` (float32, what the index sends); *float64*: the README's formula "
        "in float64 with scipy's erf. Largest absolute difference over every query and coordinate "
        f"(the vectors' largest entries: coarse {largest['coarse']:.3f}, full {largest['full']:.3f}):",
        "",
        "| compared | largest abs difference |",
        "|---|---:|",
        *rows,
    ]
    args.out.with_suffix(".md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
