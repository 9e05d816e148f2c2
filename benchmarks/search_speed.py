"""Search speed of MatryoshkaIndex (FAISS backend) against exact and HNSW full-dimension search.

Datasets
    * real: ``../shared/data/docstrings-minilm384-50k.npy`` (MiniLM, 50,000 x 384): the last 1,000 rows
      are held out as queries, the other 49,000 are indexed.
    * synthetic: low-rank-plus-noise, clustered, ``--rows`` x 384 (default 1,000,000), written once as a
      memory-mapped ``.npy`` under ``--tmp`` (reused when present); 1,000 more rows of the same
      distribution are the queries. Its parameters were calibrated on the real set at equal size (49k
      rows): full-dim HNSW needs the same efSearch, PCA-64 and truncation-64 the same candidates, within
      0.01 recall; IVF is harder than on the real set (see ``write_synthetic``).

Rows, each measured in this one run: exact full-dim ``IndexFlatIP``; full-dim HNSW (efSearch calibrated
to recall@10 >= 0.99 on held-out corpus rows, like ours); MatryoshkaIndex with coarse 32/64/128 + rerank with
the original vectors, for plain truncation, PCA and the trained adaptor (flat coarse index), plus
HNSW and IVF coarse indexes for PCA-128, adaptor-64 and adaptor-128. Every MatryoshkaIndex row uses the library defaults
(candidates calibrated at build time to recall@10 >= 0.99 against exact search, on 1,000 corpus rows
held out of the index while calibrating).

Measured: recall@10 against exact search on the held-out queries, queries/s for a 1,000-query batch
(best of 3), single-query latency p50/p99, build time, RAM bytes/vector (full vectors memory-mapped,
not counted), and where the batch time goes (adapt, coarse, rerank = gather + dot, with the gather
estimated as the rerank time minus the same rerank over cache-resident rows).

Run: ``python benchmarks/search_speed.py`` (41 min on 2 shared cores at 1M rows; ``--rows 100000`` for
a quick look). Writes ``benchmarks/results/search_speed.md`` and ``.json``.
"""

from __future__ import annotations

import os

# The 2-core machine this runs on is shared. OpenMP threads that spin while waiting (the libgomp
# default) lose whole time slices whenever another process holds a core, which made FAISS searches
# 2-10x slower and erratic in our measurements; sleeping waiters do not. Set before FAISS loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import gc
import hashlib
import json
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import torch

from matryoshka_index import MatryoshkaAdaptor, MatryoshkaIndex, __version__
from matryoshka_index.index import PCARotation
from matryoshka_index.quality.index_recall import exact_topk, recall_at_k
from matryoshka_index.storage import atomic_write_bytes
from matryoshka_index.validation import iter_row_chunks, l2_normalize

ROOT = Path(__file__).resolve().parents[1]
REAL = ROOT.parent / "shared" / "data" / "docstrings-minilm384-50k.npy"
RESULTS = ROOT / "benchmarks" / "results"
K = 10
N_QUERIES = 1000


# ---------------------------------------------------------------------- data
from _machine import SYNTHETIC  # noqa: E402  (one set of generator parameters for every benchmark)


def write_synthetic(
    path: Path, n: int, d: int, *, rank, alpha, topics, local, local_scale, latent_noise, noise, seed
) -> None:
    """Topic-manifold low-rank-plus-noise rows, unit norm: ``x = (c_t + s A_t u + l eps_r) @ B + sigma eps``.

    ``B``: a random rank-``rank`` basis scaled by ``i^-alpha`` (a decaying spectrum spread over every
    coordinate, so plain truncation is poor and PCA has structure to find). Each row belongs to one
    of ``topics`` topics (a fixed number, so a larger corpus fills its topics more densely, as more
    documents of the same kind would); inside a topic it lies near a ``local``-dim random subspace
    ``A_t`` (low local intrinsic dimension, as real embeddings have), plus latent noise over all
    ``rank`` directions and isotropic noise over all ``d`` coordinates.

    Calibrated on the real MiniLM set at equal size (49,000 rows, 1,000 held-out queries): recall@10 of
    full-dim HNSW (M=32) at efSearch 32/64/128/256 is 0.959/0.982/0.992/0.997 here against
    0.960/0.984/0.995/0.998 on the real set; PCA-64 top-C + full rerank at C = 50/100/200/400 gives
    0.822/0.892/0.942/0.972 against 0.830/0.903/0.947/0.976; truncation-64 at C=200 0.770 against
    0.775. IVF is harder here than on the real set (nprobe 4/16/64 of 885 lists: 0.53/0.72/0.87
    against 0.70/0.86/0.95), so IVF rows are pessimistic. The previous generator (clusters of 50 rows
    in a 192-dim latent space) matched PCA but made graphs far harder than real data at 1M rows
    (full-dim HNSW needed efSearch 2,048 for 0.99), see git history.
    Written chunk by chunk to a memmap.
    """
    rng = np.random.default_rng(seed)
    std = (np.arange(1, rank + 1) ** -alpha).astype(np.float32)
    basis = np.linalg.qr(rng.standard_normal((d, rank)))[0].T.astype(np.float32) * std[:, None]
    centres = rng.standard_normal((topics, rank)).astype(np.float32)
    frames = (rng.standard_normal((topics, local, rank)) / np.sqrt(local)).astype(np.float32)
    sigma = noise * np.sqrt((std**2).sum() / d)
    tmp = path.with_name(path.name + ".tmp.npy")
    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(n, d))
    for sl in iter_row_chunks(n, 65536):
        m = sl.stop - sl.start
        t = rng.integers(0, topics, m)
        u = rng.standard_normal((m, local)).astype(np.float32)
        z = centres[t] + local_scale * np.einsum("nl,nlr->nr", u, frames[t])
        z += latent_noise * rng.standard_normal((m, rank)).astype(np.float32)
        x = z @ basis + sigma * rng.standard_normal((m, d)).astype(np.float32)
        out[sl] = x / np.linalg.norm(x, axis=1, keepdims=True)
    out.flush()
    del out
    os.replace(tmp, path)


@dataclass
class Dataset:
    name: str
    source: str
    corpus: np.ndarray  # memory-mapped
    queries: np.ndarray


def real_dataset() -> Dataset:
    x = np.load(REAL, mmap_mode="r")
    return Dataset(
        name=f"real: MiniLM docstrings, {len(x) - N_QUERIES:,} x {x.shape[1]}",
        source=f"{REAL} (last {N_QUERIES} rows held out as queries)",
        corpus=x[:-N_QUERIES],
        queries=np.array(x[-N_QUERIES:], dtype=np.float32),
    )


def synthetic_dataset(n: int, d: int, tmp: Path) -> Dataset:
    tmp.mkdir(parents=True, exist_ok=True)
    tag = "-".join(f"{k}{v}" for k, v in SYNTHETIC.items())
    path = tmp / f"synthetic-{n + N_QUERIES}x{d}-{tag}.npy"
    if not path.exists():
        t0 = time.perf_counter()
        write_synthetic(path, n + N_QUERIES, d, **SYNTHETIC)
        print(f"  wrote {path} in {time.perf_counter() - t0:.1f} s", flush=True)
    x = np.load(path, mmap_mode="r")
    return Dataset(
        name=f"synthetic: topic-manifold low-rank + noise, {n:,} x {d}",
        source=f"{path} (memory-mapped; {SYNTHETIC}; the last {N_QUERIES} rows are the queries)",
        corpus=x[:n],
        queries=np.array(x[n:], dtype=np.float32),
    )


# ---------------------------------------------------------------------- measuring
def best_of(fn, repeats: int = 3) -> tuple[float, Any]:
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def latencies(fn, queries: np.ndarray, n: int) -> dict[str, float]:
    fn(queries[:1])  # warm-up
    times = []
    for i in range(n):
        q = queries[i : i + 1]
        t0 = time.perf_counter()
        fn(q)
        times.append(time.perf_counter() - t0)
    ms = np.array(times) * 1000
    return {"p50_ms": round(float(np.percentile(ms, 50)), 3), "p99_ms": round(float(np.percentile(ms, 99)), 3)}


def load() -> float:
    return round(os.getloadavg()[0], 2)


def add_normalised(index: faiss.Index, corpus: np.ndarray) -> None:
    for sl in iter_row_chunks(len(corpus), 65536):
        index.add(l2_normalize(corpus[sl]))


def hnsw_bytes(index: faiss.IndexHNSWFlat, d: int) -> float:
    h = index.hnsw
    total = index.ntotal * d * 4 + h.neighbors.size() * 4 + h.levels.size() * 4 + h.offsets.size() * 8
    return total / index.ntotal


# ---------------------------------------------------------------------- rows
def run_exact(ds: Dataset, args) -> tuple[dict, np.ndarray]:
    d = ds.corpus.shape[1]
    l0 = load()
    t0 = time.perf_counter()
    ex = faiss.IndexFlatIP(d)
    add_normalised(ex, ds.corpus)
    build = time.perf_counter() - t0
    q = l2_normalize(ds.queries)
    t, (_, truth) = best_of(lambda: ex.search(q, K))
    row = {
        "method": "exact IndexFlatIP",
        "coarse_dim": d,
        "coarse_index": "flat (full dim)",
        "candidates": None,
        "recall@10": 1.0,
        "qps": round(N_QUERIES / t, 1),
        "batch_s": round(t, 4),
        **latencies(lambda x: ex.search(l2_normalize(x), K), q, args.latency_queries),
        "build_s": round(build, 2),
        "ram_bytes_per_vector": d * 4,
        "load": [l0, load()],
    }
    return row, truth


def run_full_hnsw(ds: Dataset, truth: np.ndarray, args) -> dict:
    d = ds.corpus.shape[1]
    n = len(ds.corpus)
    l0 = load()
    # efSearch is calibrated the way MatryoshkaIndex calibrates candidates: 1,000 corpus rows are held
    # out of the graph, serve as queries against exact search over the rest, and are added afterwards.
    rng = np.random.default_rng(1)
    held = np.sort(rng.choice(n, size=min(N_QUERIES, max(1, n // 10)), replace=False))
    indexed = np.ones(n, dtype=bool)
    indexed[held] = False
    t0 = time.perf_counter()
    h = faiss.IndexHNSWFlat(d, 32, faiss.METRIC_INNER_PRODUCT)
    h.hnsw.efConstruction = 80
    order = np.flatnonzero(indexed)
    for sl in iter_row_chunks(len(order), 65536):
        h.add(l2_normalize(ds.corpus[order[sl]]))
    cq = l2_normalize(ds.corpus[held])
    _, cal_truth = exact_topk(cq, ds.corpus, K, normalize=True, include=indexed)
    cal_truth = np.where(cal_truth >= 0, np.searchsorted(order, np.maximum(cal_truth, 0)), -1)  # rows -> labels
    chosen, cal_recall = None, None
    for ef in (16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048):
        h.hnsw.efSearch = ef
        _, found = h.search(cq, K)
        cal_recall = recall_at_k(found, cal_truth)
        chosen = ef
        if cal_recall >= 0.99:
            break
    h.add(cq)
    build = time.perf_counter() - t0
    label_to_row = np.concatenate([order, held])  # HNSW labels are insertion positions
    q = l2_normalize(ds.queries)
    t, (_, found) = best_of(lambda: h.search(q, K))
    found = np.where(found >= 0, label_to_row[np.maximum(found, 0)], -1)
    return {
        "method": "full-dim HNSW (M=32)",
        "coarse_dim": d,
        "coarse_index": f"hnsw efSearch={chosen}",
        "candidates": None,
        "calibrated_recall": round(cal_recall, 4),
        "recall@10": round(recall_at_k(found, truth), 4),
        "qps": round(N_QUERIES / t, 1),
        "batch_s": round(t, 4),
        **latencies(lambda x: h.search(l2_normalize(x), K), q, args.latency_queries),
        "build_s": round(build, 2),
        "ram_bytes_per_vector": round(hnsw_bytes(h, d), 1),
        "load": [l0, load()],
    }


def fit_adaptors(ds: Dataset, args) -> dict[str, Any]:
    """PCA and the adaptor, each fitted once on the same sample (as build would) and shared by the rows."""
    n = len(ds.corpus)
    rng = np.random.default_rng(0)
    rows = np.sort(rng.choice(n, size=min(n, args.sample_size), replace=False))
    sample = np.asarray(ds.corpus[rows], dtype=np.float32)
    out: dict[str, Any] = {"truncation": (None, 0.0)}
    t0 = time.perf_counter()
    out["pca"] = (PCARotation().fit(sample), time.perf_counter() - t0)
    t0 = time.perf_counter()
    params: dict[str, Any] = {"quiet": True, "max_samples": len(sample)}
    if args.adaptor_epochs:
        params["epochs"] = args.adaptor_epochs
    # --reuse-adaptor: a rerun of the same dataset and sample loads the adaptor fitted before and
    # reports that fit's time (saved beside it), so search rows can be re-measured in minutes.
    tag = f"{len(ds.corpus)}x{ds.corpus.shape[1]}-s{len(sample)}-e{args.adaptor_epochs or 'default'}"
    cache = args.tmp / f"adaptor-{hashlib.sha1(ds.source.encode()).hexdigest()[:10]}-{tag}"
    if args.reuse_adaptor and (cache / "fit_seconds.json").is_file():
        adaptor = MatryoshkaAdaptor.load(cache)
        out["adaptor"] = (adaptor, json.loads((cache / "fit_seconds.json").read_text())["seconds"])
        print(f"  reused the adaptor fitted earlier in {cache}", flush=True)
    else:
        adaptor = MatryoshkaAdaptor(**params).fit(sample)
        out["adaptor"] = (adaptor, time.perf_counter() - t0)
        adaptor.save(cache)
        (cache / "fit_seconds.json").write_text(json.dumps({"seconds": out["adaptor"][1]}))
    print(f"  fitted PCA in {out['pca'][1]:.1f} s, adaptor in {out['adaptor'][1]:.1f} s", flush=True)
    return out


def breakdown(index: MatryoshkaIndex, q: np.ndarray) -> dict[str, float]:
    """Seconds for the 1,000-query batch by stage; gather estimated as rerank(random rows) - rerank(hot rows)."""
    timings: dict[str, float] = {}
    index.search(q, k=K, timings=timings)
    be = index.backend
    coarse_q, full_q = index._prepare(q)
    c = index.resolve_candidates(K)
    rows = be._coarse_rows(coarse_q, c)
    t_rand, _ = best_of(lambda: be.rerank_rows(full_q, rows, K))
    hot = np.ascontiguousarray(np.broadcast_to(np.arange(rows.shape[1], dtype=np.int64), rows.shape))
    t_hot, _ = best_of(lambda: be.rerank_rows(full_q, hot, K))
    return {
        "adapt_s": round(timings.get("adapt", 0.0), 4),
        "coarse_s": round(timings.get("coarse", 0.0), 4),
        "rerank_s": round(timings.get("rerank", 0.0), 4),
        "rerank_isolated_s": round(t_rand, 4),
        "rerank_hot_rows_s": round(t_hot, 4),
        "gather_est_s": round(max(0.0, t_rand - t_hot), 4),
    }


def run_matryoshka(ds: Dataset, truth: np.ndarray, name: str, adaptor, coarse_dim: int, kind: str, args) -> dict:
    l0 = load()
    t0 = time.perf_counter()
    index = MatryoshkaIndex.build(
        ds.corpus,
        coarse_dim=coarse_dim,
        adaptor=adaptor,
        index=kind,
        quiet=True,
        backend_options={"spill_dir": str(args.tmp)},
    )
    build = time.perf_counter() - t0
    q = ds.queries
    t, (_, found) = best_of(lambda: index.search(q, k=K))
    info = index.info()
    cal = index.calibration
    row = {
        "method": f"matryoshka {name}",
        "coarse_dim": coarse_dim,
        "coarse_index": kind + (f" nprobe={cal['knob']['nprobe']}" if cal.get("knob") else ""),
        "candidates": index.candidates,
        "calibrated_recall": cal.get("recall"),
        "recall@10": round(recall_at_k(found, truth), 4),
        "qps": round(N_QUERIES / t, 1),
        "batch_s": round(t, 4),
        **latencies(lambda x: index.search(x, k=K), q, args.latency_queries),
        "build_s": round(build, 2),
        "calibration_s": cal.get("seconds"),
        "ram_bytes_per_vector": info["memory"]["ram_bytes_per_vector"],
        "breakdown": breakdown(index, q),
        "device": info["device"],
        "load": [l0, load()],
    }
    index = None  # drops the index and its temporary full-vector file before the next build
    gc.collect()
    return row


# ---------------------------------------------------------------------- report
def machine() -> dict[str, Any]:
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        mem_kb = next(
            int(x.split()[1]) for x in Path("/proc/meminfo").read_text().splitlines() if x.startswith("MemTotal")
        )
    except (OSError, StopIteration):
        mem_kb = 0
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "ram_gib": round(mem_kb / 2**20, 1),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "faiss": faiss.__version__,
        "torch": torch.__version__,
        "matryoshka_index": __version__,
        "faiss_omp_threads": faiss.omp_get_max_threads(),
        "torch_threads": torch.get_num_threads(),
        "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY"),
        "faiss_gpus": faiss.get_num_gpus(),
    }


def fmt(v: Any, digits: int | None = None) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        if digits is not None:
            return f"{v:.{digits}f}"
        return f"{v:,.0f}" if v >= 100 else f"{v:.3g}"
    return f"{v:,}" if isinstance(v, int) else str(v)


def markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    out = [
        "# Search speed: MatryoshkaIndex (FAISS) vs exact and HNSW full-dim search",
        "",
        f"Written by `benchmarks/search_speed.py` on {report['date']} ({report['seconds'] / 60:.0f} min).",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['ram_gib']} GiB RAM; Python {m['python']}, NumPy {m['numpy']}, "
        f"FAISS {m['faiss']} (CPU, {m['faiss_omp_threads']} OpenMP threads, OMP_WAIT_POLICY={m['OMP_WAIT_POLICY']}), "
        f"torch {m['torch']} ({m['torch_threads']} threads), matryoshka-index {m['matryoshka_index']}; "
        f"GPUs visible to FAISS: {m['faiss_gpus']}.",
        "",
        "All rows of a table were measured in the same run, one after the other. recall@10 is against exact "
        "full-dim search on 1,000 held-out queries; queries/s is for one batch of 1,000 (best of 3); latency "
        f"is one query at a time ({report['args']['latency_queries']} queries); RAM bytes/vector counts what "
        "must stay in memory (coarse index + id bookkeeping; the full vectors are memory-mapped from disk and "
        "read only for the candidates). MatryoshkaIndex rows use the library defaults: candidates calibrated "
        "at build time on 1,000 corpus rows held out of the index (then added) to reach recall@10 >= 0.99 "
        "against exact search, rerank with the "
        "original vectors. Build time includes that calibration; the adaptor and PCA were fitted once per "
        "dataset on the build sample and shared by the rows (fit times below).",
        "",
        report["load_note"],
        "",
    ]
    for ds in report["datasets"]:
        exact_qps = ds["rows"][0]["qps"]
        out += [
            f"## {ds['name']}",
            "",
            f"Data: {ds['source']}. Fit once: PCA {ds['fit_s']['pca']:.1f} s, adaptor {ds['fit_s']['adaptor']:.1f} s "
            f"(library defaults, {ds['sample_rows']:,}-row sample).",
            "",
            "| method | coarse dim | coarse index | candidates | recall@10 | calibrated recall | queries/s | x exact | p50 ms | p99 ms | build s | RAM B/vector |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in ds["rows"]:
            cells = [
                r["method"],
                fmt(r["coarse_dim"]),
                r["coarse_index"],
                fmt(r["candidates"]),
                fmt(r["recall@10"], 4),
                fmt(r.get("calibrated_recall"), 4) if r.get("calibrated_recall") is not None else "–",
                fmt(r["qps"]),
                f"{r['qps'] / exact_qps:.2f}x",
                fmt(r["p50_ms"]),
                fmt(r["p99_ms"]),
                fmt(r["build_s"]),
                fmt(r["ram_bytes_per_vector"]),
            ]
            out.append("| " + " | ".join(cells) + " |")
        out += [
            "",
            "Where the 1,000-query batch time goes (seconds): adapt (adaptor/PCA + normalisation), coarse (stage one), "
            "rerank (gather + dot products of the candidates' full vectors, one fused C++ pass); gather is estimated "
            "as the rerank time minus the same rerank over cache-resident rows.",
            "",
            "| method | coarse dim | coarse index | adapt | coarse | rerank | of which gather (est.) | total batch |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in ds["rows"]:
            b = r.get("breakdown")
            if not b:
                continue
            out.append(
                f"| {r['method']} | {r['coarse_dim']} | {r['coarse_index']} | {b['adapt_s']:.3f} | {b['coarse_s']:.3f} | "
                f"{b['rerank_s']:.3f} | {b['gather_est_s']:.3f} | {r['batch_s']:.3f} |"
            )
        out += ["", "Load average (1 min) at the start and end of each row: "]
        out.append(
            ", ".join(
                f"{r['method']} {r['coarse_dim']} {r['coarse_index'].split()[0]}: {r['load'][0]}→{r['load'][1]}"
                for r in ds["rows"]
            )
        )
        out.append("")
    out += ["## Targets (issue 3, 1M x 384)", "", *report["targets"], ""]
    out += ["## What limits the speed-up here", "", *analysis(report), ""]
    return "\n".join(out)


def analysis(report: dict[str, Any]) -> list[str]:
    """Findings computed from the rows (plus the measured facts they rest on)."""
    lines = []
    for ds in report["datasets"]:
        rows = ds["rows"]
        exact = rows[0]
        flat = [r for r in rows if r.get("breakdown") and r["coarse_index"] == "flat"]
        if flat:
            coarse = [r["breakdown"]["coarse_s"] for r in flat]
            by_c = sorted(flat, key=lambda r: r["candidates"])
            picks = [by_c[0], by_c[len(by_c) // 2], by_c[-1]]
            lines.append(
                f"- {ds['name']}: stage one of the flat coarse index alone takes {min(coarse):.2f}-{max(coarse):.2f} s "
                f"per 1,000 queries at 32-128 dims against {exact['batch_s']:.2f} s for the whole exact search: "
                f"at most {exact['batch_s'] / min(coarse):.1f}x before any rerank. The rerank (gather + dot) costs "
                + ", ".join(f"{r['breakdown']['rerank_s']:.3f} s at {r['candidates']:,} candidates" for r in picks)
                + "; adapting 1,000 queries costs under 0.01 s."
            )
        ok = [r for r in rows if r.get("breakdown") and r["recall@10"] >= 0.99]
        if ok:
            best = min(ok, key=lambda r: r["p50_ms"])
            lines.append(
                f"- {ds['name']}, one query at a time (memory-bound, where the byte ratio applies): exact p50 "
                f"{exact['p50_ms']:.1f} ms; best row at recall@10 >= 0.99 is {best['method']} {best['coarse_dim']} "
                f"{best['coarse_index']} at {best['p50_ms']:.1f} ms ({exact['p50_ms'] / best['p50_ms']:.1f}x); "
                + ", ".join(
                    f"{r['method']} {r['coarse_dim']} flat {r['p50_ms']:.1f} ms ({exact['p50_ms'] / r['p50_ms']:.1f}x)"
                    for r in ok
                    if r["coarse_index"] == "flat" and r["coarse_dim"] == 64
                )
                + "."
            )
        full_hnsw = next((r for r in rows if r["method"].startswith("full-dim HNSW")), None)
        if full_hnsw:
            lines.append(
                f"- {ds['name']}: full-dim HNSW needs {full_hnsw['coarse_index'].split()[-1]} for recall@10 >= 0.99 and "
                f"runs at {full_hnsw['qps'] / exact['qps']:.2f}x the exact search; the graph and IVF coarse rows needed "
                + ", ".join(
                    f"{r['candidates']:,} candidates ({r['coarse_dim']}-dim {r['coarse_index']})"
                    for r in rows
                    if r.get("breakdown") and r["coarse_index"].split()[0] in ("hnsw", "ivf")
                )
                + "."
            )
    lines += [
        "- Flat coarse scan vs exact search: each row above is measured once, after the exact baseline, so a "
        "ratio near a target can move with the machine's state between the two measurements. "
        "`benchmarks/flat_stage_one.py` times the exact search and the flat coarse stage alone back to back, round "
        "by round, on the same synthetic corpus ([flat_stage_one.md](flat_stage_one.md)): read the flat rows' "
        "'x exact' against its ranges. A 1,000-query batch makes a flat scan a BLAS product whose 1,000 x n score "
        "matrix is produced and scanned whatever the dimension, and at 64 dims the product runs at a lower FLOP "
        "rate than at 384, so stage one stays under the 384/64 = 6x byte ratio; that ratio applies to a "
        "memory-bound scan (one query at a time: compare the p50 latencies). The exhaustive 4-bit PQ fast-scan "
        "(index='pq', 32 bytes a vector instead of 256, SIMD selection) and the graph index (index='hnsw') are "
        "the ways past it.",
    ]
    return lines


def targets(report: dict[str, Any]) -> list[str]:
    synth = [d for d in report["datasets"] if d["name"].startswith("synthetic")]
    if not synth:
        return ["No synthetic run in this report."]
    ds = synth[0]
    exact = ds["rows"][0]["qps"]
    lines = [f"Dataset: {ds['name']}. Exact IndexFlatIP: {exact:,.1f} queries/s."]

    def best(pred) -> dict | None:
        rows = [r for r in ds["rows"] if pred(r) and r["recall@10"] >= 0.99]
        return max(rows, key=lambda r: r["qps"]) if rows else None

    flat64 = best(
        lambda r: r["method"].startswith("matryoshka") and r["coarse_dim"] == 64 and r["coarse_index"] == "flat"
    )
    graph = best(lambda r: r["method"].startswith("matryoshka") and r["coarse_index"].split()[0] in ("hnsw", "ivf"))
    pq64 = best(lambda r: r["method"].startswith("matryoshka") and r["coarse_dim"] == 64 and r["coarse_index"] == "pq")
    for label, row, goal in (
        ("flat coarse-64 + rerank", flat64, 4.0),
        ("HNSW or IVF coarse + rerank", graph, 10.0),
        ("(not the target's flat index) exhaustive 4-bit PQ coarse-64 + rerank", pq64, 4.0),
    ):
        if row is None:
            lines.append(f"- {label}: no row reached recall@10 >= 0.99 on the held-out queries: target **missed**.")
            continue
        x = row["qps"] / exact
        verdict = "**met**" if x >= goal else "**missed**"
        lines.append(
            f"- {label} (target >= {goal:.0f}x at recall@10 >= 0.99): best is {row['method']} {row['coarse_index']} "
            f"at {x:.2f}x ({row['qps']:,.1f} queries/s, recall@10 {row['recall@10']}, build {row['build_s']} s): {verdict}."
        )
    near = [
        r
        for r in ds["rows"]
        if r["method"].startswith("matryoshka") and r["recall@10"] < 0.99 and r.get("calibrated_recall", 0) >= 0.99
    ]
    if near:
        lines.append(
            "- Rows whose calibration (on corpus rows) reached 0.99 but whose recall on the held-out queries "
            "ended just below: "
            + ", ".join(f"{r['method']} {r['coarse_dim']} {r['coarse_index']} ({r['recall@10']})" for r in near)
            + "."
        )
    return lines


# ---------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=1_000_000, help="synthetic corpus rows (default 1,000,000)")
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--tmp", type=Path, default=Path("/tmp/mindex-bench"), help="synthetic corpus and spill files")
    p.add_argument("--threads", type=int, default=2, help="FAISS OpenMP and torch threads")
    p.add_argument("--latency-queries", type=int, default=200)
    p.add_argument("--sample-size", type=int, default=100_000, help="rows PCA and the adaptor are fitted on")
    p.add_argument("--adaptor-epochs", type=int, default=None, help="override the adaptor's default epochs")
    p.add_argument(
        "--reuse-adaptor",
        action="store_true",
        help="load the adaptor an earlier run fitted on the same data (see --tmp)",
    )
    p.add_argument("--skip-real", action="store_true")
    p.add_argument("--skip-synthetic", action="store_true")
    p.add_argument("--no-full-hnsw", action="store_true", help="skip the full-dim HNSW baseline (slow to build)")
    p.add_argument(
        "--only",
        default=None,
        help="comma-separated METHOD:DIM:INDEX rows to run (e.g. adaptor:64:flat,adaptor:64:ivf); default all",
    )
    p.add_argument("--out", type=Path, default=RESULTS / "search_speed")
    p.add_argument("--from-json", type=Path, help="only re-render the .md from a .json this script wrote")
    args = p.parse_args(argv)
    if args.from_json:
        report = json.loads(args.from_json.read_text())
        atomic_write_bytes(args.out.with_suffix(".md"), markdown(report).encode())
        return
    faiss.omp_set_num_threads(args.threads)
    torch.set_num_threads(args.threads)
    args.tmp.mkdir(parents=True, exist_ok=True)

    t_start = time.perf_counter()
    report: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "machine": machine(),
        "datasets": [],
    }
    loads = [load()]
    datasets = []
    if not args.skip_real:
        if REAL.exists():
            datasets.append(real_dataset)
        else:
            print(f"real data not found at {REAL}; skipped", flush=True)
    if not args.skip_synthetic:
        datasets.append(lambda: synthetic_dataset(args.rows, args.dim, args.tmp))
    for make in datasets:
        ds = make()
        print(f"== {ds.name}\n   reading {ds.source}", flush=True)
        rows = []
        exact_row, truth = run_exact(ds, args)
        rows.append(exact_row)
        print(f"  {exact_row['method']}: {exact_row['qps']} q/s", flush=True)
        gc.collect()
        if not args.no_full_hnsw:
            rows.append(run_full_hnsw(ds, truth, args))
            print(f"  {rows[-1]['method']}: {rows[-1]['qps']} q/s, recall {rows[-1]['recall@10']}", flush=True)
            gc.collect()
        fitted = fit_adaptors(ds, args)
        plan = [(name, dim, "flat") for name in ("truncation", "pca", "adaptor") for dim in (32, 64, 128)]
        # Graph, IVF and PQ coarse indexes beside flat, for PCA and the adaptor at the same dims
        # (truncation needs thousands of candidates at 64 dims: see its flat rows).
        plan += [
            (name, dim, kind)
            for kind in ("pq", "ivf", "hnsw")
            for name, dim in (("pca", 64), ("adaptor", 64), ("pca", 128), ("adaptor", 128))
        ]
        if args.only:
            wanted = {tuple(item.split(":")) for item in args.only.split(",")}
            plan = [(name, dim, kind) for name, dim, kind in plan if (name, str(dim), kind) in wanted]
        for name, dim, kind in plan:
            row = run_matryoshka(ds, truth, name, fitted[name][0], dim, kind, args)
            rows.append(row)
            loads.append(load())
            print(
                f"  {row['method']} {dim} {kind}: C={row['candidates']} recall {row['recall@10']} "
                f"{row['qps']} q/s ({row['qps'] / exact_row['qps']:.2f}x) build {row['build_s']} s",
                flush=True,
            )
        report["datasets"].append(
            {
                "name": ds.name,
                "source": ds.source,
                "rows": rows,
                "fit_s": {k: round(v[1], 2) for k, v in fitted.items()},
                "sample_rows": min(len(ds.corpus), args.sample_size),
            }
        )
    report["seconds"] = round(time.perf_counter() - t_start, 1)
    peak = max([*loads, load()])
    report["load_note"] = (
        f"Machine load: the 1-minute load average ranged up to {peak} during the run on {report['machine']['cores']} "
        "cores (other jobs shared the machine; per-row values are listed under each table). Timings under load "
        "are pessimistic and noisier than on an idle machine; ratios between rows measured at similar load are "
        "more reliable than absolute numbers."
        if peak > report["machine"]["cores"] * 0.6
        else f"Machine load: the 1-minute load average stayed at or below {peak} (mostly idle besides this run)."
    )
    report["targets"] = targets(report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(args.out.with_suffix(".json"), (json.dumps(report, indent=2) + "\n").encode())
    atomic_write_bytes(args.out.with_suffix(".md"), markdown(report).encode())
    print(f"wrote {args.out.with_suffix('.md')} and .json in {report['seconds'] / 60:.1f} min", flush=True)


if __name__ == "__main__":
    sys.exit(main())
