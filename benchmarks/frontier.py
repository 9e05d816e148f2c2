"""The memory / speed frontier at recall@10 >= 0.99: MatryoshkaIndex coarse codes against quantization + rescoring.

For every method: resident RAM bytes/vector (measured), queries/s (1,000-query batch, best of 3),
p50 single-query latency, build time, recall@10 against exact full-dim search on held-out queries.

Baselines (what a FAISS / Qdrant user turns on instead), each at the **smallest oversampling that
reaches recall@10 >= 0.99 on these very queries** (an oracle, generous to them), every one reranked
at full dimension by the same C++ call over the same memory-mapped vectors as ours
(``faiss.knn_inner_products_by_idx``, what ``Refine(Flat)`` computes): binary sign-d
(``IndexBinaryFlat``, Hamming), RaBitQ-d 1-bit and 4-bit (``IndexRaBitQFastScan``), SQ8-d and SQ4-d
(``IndexScalarQuantizer``), ``PCA64,Flat`` and ``PCA64,PQ32x4fs`` (``index_factory``; + the refine),
full-dim HNSW32 (efSearch oracle, no rerank needed) and HNSW32-SQ8 + rescore.

Ours: ``MatryoshkaIndex.build`` at the library's calibrated defaults (candidates calibrated at build
time on corpus rows held out of the index, target 0.99: not an oracle), trained adaptor (library
defaults, fitted once on the build sample), coarse dims 32/64/128 x codes x structures; ablation rows
vary one thing (the ITQ balance, the adaptor).

RAM: resident bytes/vector are what stays in memory per vector, measured on the saved-and-reloaded
index (ours: ``FaissBackend.memory()``, the serialised coarse index + in-RAM arrays; baselines: their
serialised FAISS index). Full vectors (and our ids) are memory-mapped by every method alike and
reported separately as page-cache bytes. Fixed costs (our adaptor's weights) are listed apart.

Rows are measured in one run, baselines and ours alternating, so load affects both alike.

Run: ``python benchmarks/frontier.py`` (real dev set) or ``--synthetic --rows 200000``.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see search_speed.py: spinning waiters lose slices

import argparse
import gc
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import faiss
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from search_speed import Dataset, best_of, latencies, load, machine, synthetic_dataset

from matryoshka_index import MatryoshkaAdaptor, MatryoshkaIndex
from matryoshka_index.calibration import candidate_ladder
from matryoshka_index.quality.index_recall import recall_at_k
from matryoshka_index.storage import atomic_write_bytes
from matryoshka_index.validation import iter_row_chunks, l2_normalize

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
K = 10
TARGET = 0.99
N_QUERIES = 1000
IP = faiss.METRIC_INNER_PRODUCT


def real_path() -> Path:
    for base in (ROOT.parent, ROOT.parent.parent, Path("/work")):
        p = base / "shared" / "data" / "docstrings-minilm384-50k.npy"
        if p.is_file():
            return p
    raise SystemExit("docstrings-minilm384-50k.npy not found under ../shared/data")


def real_dataset() -> Dataset:
    path = real_path()
    x = np.load(path, mmap_mode="r")
    return Dataset(
        name=f"real: MiniLM docstrings, {len(x) - N_QUERIES:,} x {x.shape[1]}",
        source=f"{path} (last {N_QUERIES} rows held out as queries)",
        corpus=x[:-N_QUERIES],
        queries=np.array(x[-N_QUERIES:], dtype=np.float32),
    )


# ---------------------------------------------------------------------- shared pieces
def normalised_copy(corpus: np.ndarray, path: Path) -> np.ndarray:
    """The corpus L2-normalised, as a read-only memory map (the baselines' rescoring store)."""
    if not path.exists():
        out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=corpus.shape)
        for sl in iter_row_chunks(len(corpus), 65536):
            out[sl] = l2_normalize(corpus[sl])
        out.flush()
        del out
    return np.load(path, mmap_mode="r")


def rerank(full: np.ndarray, q: np.ndarray, rows: np.ndarray, k: int = K) -> np.ndarray:
    """Best ``k`` of the candidate rows by full inner product, one C++ call (as our backend does)."""
    nq, c = rows.shape
    rows = np.where(rows >= 0, rows, np.iinfo(np.int64).max)
    rows = np.ascontiguousarray(np.sort(rows, axis=1)) if (rows == np.iinfo(np.int64).max).any() else rows
    vals = np.empty((nq, k), dtype=np.float32)
    out = np.empty((nq, k), dtype=np.int64)
    faiss.knn_inner_products_by_idx(
        faiss.swig_ptr(q), faiss.swig_ptr(full), faiss.swig_ptr(np.ascontiguousarray(rows)),
        full.shape[1], nq, len(full), c, k, faiss.swig_ptr(vals), faiss.swig_ptr(out), c,
    )  # fmt: skip
    return out


def index_bytes(index: Any) -> int:
    if isinstance(index, faiss.IndexBinary):
        return int(faiss.serialize_index_binary(index).size)
    return int(faiss.serialize_index(index).size)


class Baseline:
    """A FAISS coarse index over the full-dim vectors + full-dim rescoring of its top ``c``."""

    def __init__(self, name: str, make, *, binary: bool = False, hnsw: bool = False, rescore: bool = True):
        self.name, self.make, self.binary, self.hnsw, self.rescore = name, make, binary, hnsw, rescore
        self.c: int | None = None

    def build(self, full: np.ndarray) -> float:
        t0 = time.perf_counter()
        self.index = self.make()
        sample = full[np.sort(np.random.default_rng(0).permutation(len(full))[:65536])]
        if not self.index.is_trained:
            self.index.train(self._enc(np.asarray(sample)))
        self.fixed = index_bytes(self.index)  # trained, empty: header + parameters (PCA matrix, ranges, ...)
        for sl in iter_row_chunks(len(full), 65536):
            self.index.add(self._enc(np.asarray(full[sl])))
        return time.perf_counter() - t0

    def _enc(self, x: np.ndarray) -> np.ndarray:
        return np.packbits(x > 0, axis=1) if self.binary else np.ascontiguousarray(x, dtype=np.float32)

    def coarse(self, q: np.ndarray, c: int) -> np.ndarray:
        if self.hnsw:
            params = faiss.SearchParametersHNSW(efSearch=max(c, K))
            return self.index.search(self._enc(q), c, params=params)[1]
        return self.index.search(self._enc(q), c)[1]

    def search(self, full: np.ndarray, q: np.ndarray, c: int) -> np.ndarray:
        if not self.rescore:  # full-dim HNSW: c is efSearch, the graph's scores are already exact
            return self.index.search(q, K, params=faiss.SearchParametersHNSW(efSearch=c))[1]
        return rerank(full, q, self.coarse(q, c))

    def oracle(self, full: np.ndarray, q: np.ndarray, truth: np.ndarray, cap: int) -> tuple[int | None, float]:
        """Smallest c on the 2^(1/4) ladder whose recall@10 on these queries reaches the target."""
        ladder = candidate_ladder(K, min(cap, self.index.ntotal))
        memo: dict[int, float] = {}
        prefix = None
        if self.rescore and not self.hnsw:
            prefix = self.coarse(q, ladder[-1])  # flat scans: the top-c are a prefix of the top-cap

        def rec(c: int) -> float:
            if c not in memo:
                found = rerank(full, q, np.ascontiguousarray(prefix[:, :c])) if prefix is not None else None
                memo[c] = recall_at_k(found if found is not None else self.search(full, q, c), truth)
            return memo[c]

        lo, hi = 0, len(ladder) - 1
        if rec(ladder[hi]) < TARGET:
            return None, memo[ladder[hi]]
        while lo < hi:
            mid = (lo + hi) // 2
            if rec(ladder[mid]) >= TARGET:
                hi = mid
            else:
                lo = mid + 1
        return ladder[lo], memo[ladder[lo]]


def baselines(d: int) -> list[Baseline]:
    def rabitq(bits):
        return lambda: faiss.IndexRaBitQFastScan(d, IP, 32, bits)

    def sq(qt):
        return lambda: faiss.IndexScalarQuantizer(d, qt, IP)

    return [
        Baseline(f"binary sign-{d} + rescore", lambda: faiss.IndexBinaryFlat(d), binary=True),
        Baseline(f"RaBitQ-{d} 1-bit + rescore", rabitq(1)),
        Baseline(f"RaBitQ-{d} 4-bit + rescore", rabitq(4)),
        Baseline(f"SQ8-{d} + rescore", sq(faiss.ScalarQuantizer.QT_8bit)),
        Baseline(f"SQ4-{d} + rescore", sq(faiss.ScalarQuantizer.QT_4bit)),
        Baseline("PCA64,Flat,Refine(Flat)", lambda: faiss.index_factory(d, "PCA64,Flat", IP)),
        Baseline("PCA64,PQ32x4fs,Refine(Flat)", lambda: faiss.index_factory(d, "PCA64,PQ32x4fs", IP)),
        Baseline("full-dim HNSW32", lambda: _hnsw(faiss.IndexHNSWFlat(d, 32, IP)), hnsw=True, rescore=False),
        Baseline(
            "HNSW32-SQ8 + rescore",
            lambda: _hnsw(faiss.IndexHNSWSQ(d, faiss.ScalarQuantizer.QT_8bit, 32, IP)),
            hnsw=True,
        ),
    ]


def _hnsw(index: Any) -> Any:
    index.hnsw.efConstruction = 80
    return index


def _o(name: str, m: int, structure: str, code: str, adaptor: str = "adaptor", **opts: Any) -> tuple:
    return (name, m, structure, {"code": code, **opts}, adaptor)


# (name, coarse_dim, structure, backend options, adaptor key)
OURS: list[tuple] = [
    *[_o(f"ours {m} flat float", m, "flat", "float") for m in (32, 64, 128)],
    _o("ours 64 flat sq8", 64, "flat", "sq8"),
    *[_o(f"ours {m} flat sq4", m, "flat", "sq4") for m in (32, 64)],
    _o("ours 32 flat pq4x32", 32, "flat", "pq4", pq_m=32),
    _o("ours 64 flat pq4x64", 64, "flat", "pq4", pq_m=64),
    _o("ours 64 flat pq4x32", 64, "flat", "pq4", pq_m=32),
    _o("ours 60 flat pq4x30", 60, "flat", "pq4", pq_m=30),  # 15 B of codes: room for fast-scan's block padding
    _o("ours 128 flat pq4x128", 128, "flat", "pq4", pq_m=128),
    _o("ours 128 flat pq4x64", 128, "flat", "pq4", pq_m=64),
    _o("ours 128 flat pq4x32", 128, "flat", "pq4", pq_m=32),
    *[_o(f"ours {m} flat rabitq itq", m, "flat", "rabitq", balance="itq") for m in (64, 128)],
    _o("ours 64 flat rabitq4 itq", 64, "flat", "rabitq", balance="itq", rabitq_bits=4),
    *[_o(f"ours {m} flat binary itq", m, "flat", "binary", balance="itq") for m in (128, 256)],
    _o("ours 64 hnsw float", 64, "hnsw", "float"),
    _o("ours 64 hnsw sq8", 64, "hnsw", "sq8"),
    _o("ours 64 hnsw pq4x32", 64, "hnsw", "pq4", pq_m=32),
    _o("ours 128 hnsw binary itq", 128, "hnsw", "binary", balance="itq"),
    _o("ours 64 ivf sq8", 64, "ivf", "sq8"),
    _o("ours 64 ivf pq4x32", 64, "ivf", "pq4", pq_m=32),
    _o("ours 64 ivf pq4x16", 64, "ivf", "pq4", pq_m=16),  # 8 B codes + the inverted lists' 8 B ids
    _o("ours 128 ivf rabitq itq", 128, "ivf", "rabitq", balance="itq"),
]
ABLATION: list[tuple] = [
    _o("ablation: 128 flat binary, no balance", 128, "flat", "binary"),
    _o("ablation: 128 flat rabitq, no balance", 128, "flat", "rabitq"),
    _o("ablation: 64 flat pq4x32 itq", 64, "flat", "pq4", pq_m=32, balance="itq"),
    _o("ablation: 64 flat pq4x32, PCA", 64, "flat", "pq4", "pca", pq_m=32),
    _o("ablation: 128 flat binary itq, PCA", 128, "flat", "binary", "pca", balance="itq"),
]


def fit_adaptor(ds: Dataset, args, **params: Any) -> tuple[Any, float]:
    n = len(ds.corpus)
    rows = np.sort(np.random.default_rng(0).choice(n, size=min(n, args.fit_rows or args.sample_size), replace=False))
    tag = "-".join(f"{k}{v}" for k, v in sorted(params.items())) or "default"
    cache = args.tmp / f"frontier-adaptor-{n}x{ds.corpus.shape[1]}-fit{len(rows)}-{tag}"
    if (cache / "fit_seconds.json").is_file():
        return MatryoshkaAdaptor.load(cache), json.loads((cache / "fit_seconds.json").read_text())["seconds"]
    t0 = time.perf_counter()
    adaptor = MatryoshkaAdaptor(quiet=True, max_samples=len(rows), **params).fit(np.asarray(ds.corpus[rows]))
    seconds = time.perf_counter() - t0
    adaptor.save(cache)
    (cache / "fit_seconds.json").write_text(json.dumps({"seconds": seconds}))
    return adaptor, seconds


def run_ours(ds: Dataset, truth: np.ndarray, spec: tuple, adaptors: dict, args) -> dict:
    name, m, structure, options, akey = spec
    l0 = load()
    t0 = time.perf_counter()
    index = MatryoshkaIndex.build(
        ds.corpus,
        coarse_dim=m,
        adaptor=adaptors[akey],
        index=structure,
        backend_options={**options, "spill_dir": str(args.tmp)},
        sample_size=args.sample_size,
        quiet=True,
    )
    build = time.perf_counter() - t0
    path = args.tmp / "frontier-ours.mindex"
    shutil.rmtree(path, ignore_errors=True)
    index.save(path)
    del index
    gc.collect()
    served = MatryoshkaIndex.load(path, verify=False)
    mem = served.backend.memory()
    q = ds.queries
    t, (_, found) = best_of(lambda: served.search(q, k=K))
    row = {
        "method": name,
        "kind": "ours",
        "coarse_dim": m,
        "structure": structure,
        "options": options,
        "adaptor": akey,
        "candidates": served.candidates,
        "knob": served.calibration.get("knob"),
        "calibrated_recall": served.calibration.get("recall"),
        "recall@10": round(recall_at_k(found, truth), 4),
        "qps": round(len(q) / t, 1),
        **latencies(lambda x: served.search(x, k=K), q, args.latency_queries),
        "build_s": round(build, 2),
        "ram_bytes_per_vector": mem["per_vector_bytes"],
        "fixed_bytes": mem["fixed_bytes"],
        "amortised_bytes_per_vector": mem["resident_bytes_per_vector"],
        "page_cache_bytes_per_vector": mem["page_cache_bytes_per_vector"],
        "load": [l0, load()],
    }
    served = None
    gc.collect()
    shutil.rmtree(path, ignore_errors=True)
    return row


def run_baseline(ds: Dataset, full: np.ndarray, truth: np.ndarray, b: Baseline, args) -> dict:
    l0 = load()
    build = b.build(full)
    q = l2_normalize(ds.queries)
    cap = 2048 if not b.rescore else args.max_candidates
    c, oracle_recall = b.oracle(full, q, truth, cap)
    row: dict[str, Any] = {"method": b.name, "kind": "baseline", "build_s": round(build, 2)}
    total = index_bytes(b.index)
    row["ram_bytes_per_vector"] = round((total - b.fixed) / b.index.ntotal, 2)
    row["fixed_bytes"] = b.fixed
    row["amortised_bytes_per_vector"] = round(total / b.index.ntotal, 2)
    row["page_cache_bytes_per_vector"] = full.shape[1] * 4 if b.rescore else 0
    if c is None:
        row.update({"candidates": None, "recall@10": round(oracle_recall, 4), "reached": False, "load": [l0, load()]})
        return row
    t, found = best_of(lambda: b.search(full, l2_normalize(ds.queries), c))
    row.update(
        {
            ("ef_search" if not b.rescore else "candidates"): c,
            "recall@10": round(recall_at_k(found, truth), 4),
            "qps": round(len(q) / t, 1),
            **latencies(lambda x: b.search(full, l2_normalize(x), c), ds.queries, args.latency_queries),
            "reached": True,
            "load": [l0, load()],
        }
    )
    b.index = None
    gc.collect()
    return row


def run_exact(full: np.ndarray, ds: Dataset, args) -> tuple[dict, np.ndarray]:
    l0 = load()
    t0 = time.perf_counter()
    ex = faiss.IndexFlatIP(full.shape[1])
    for sl in iter_row_chunks(len(full), 65536):
        ex.add(np.asarray(full[sl]))
    build = time.perf_counter() - t0
    q = l2_normalize(ds.queries)
    t, (_, truth) = best_of(lambda: ex.search(q, K))
    row = {
        "method": "exact IndexFlatIP (full dim)",
        "kind": "reference",
        "recall@10": 1.0,
        "qps": round(len(q) / t, 1),
        **latencies(lambda x: ex.search(l2_normalize(x), K), ds.queries, args.latency_queries),
        "build_s": round(build, 2),
        "ram_bytes_per_vector": full.shape[1] * 4,
        "load": [l0, load()],
    }
    return row, truth


# ---------------------------------------------------------------------- analysis and output
def ok(r: dict) -> bool:
    return r.get("qps") is not None and r["recall@10"] >= TARGET


def frontier(rows: list[dict]) -> list[dict]:
    """Our rows at the target that no other of our rows beats on both bytes and queries/s."""
    ours = sorted(
        (r for r in rows if r["kind"] == "ours" and ok(r)),
        key=lambda r: (r["ram_bytes_per_vector"], -r["qps"]),
    )
    out: list[dict] = []
    for r in ours:
        if not out or r["qps"] > out[-1]["qps"]:
            out.append(r)
    return out


def verdicts(rows: list[dict]) -> list[str]:
    ours = [r for r in rows if r["kind"] == "ours" and ok(r)]
    lines = []
    for b in (r for r in rows if r["kind"] == "baseline"):
        if not ok(b):
            lines.append(
                f"- {b['method']}: never reached recall@10 {TARGET} (best {b['recall@10']}); dominated trivially."
            )
            continue
        dom = [o for o in ours if o["ram_bytes_per_vector"] <= b["ram_bytes_per_vector"] and o["qps"] >= b["qps"]]
        if dom:
            best = max(dom, key=lambda o: o["qps"])
            lines.append(
                f"- {b['method']} ({b['ram_bytes_per_vector']:g} B, {b['qps']:,.0f} q/s): dominated by {best['method']} "
                f"({best['ram_bytes_per_vector']:g} B, {best['qps']:,.0f} q/s)."
            )
        else:
            fewer = [o for o in ours if o["ram_bytes_per_vector"] <= b["ram_bytes_per_vector"]]
            near = max(fewer, key=lambda o: o["qps"]) if fewer else None
            gap = f"; our fastest at <= its bytes: {near['method']} at {near['qps']:,.0f} q/s" if near else ""
            lines.append(f"- {b['method']} ({b['ram_bytes_per_vector']:g} B, {b['qps']:,.0f} q/s): NOT dominated{gap}.")
    small = min(ours, key=lambda o: o["ram_bytes_per_vector"]) if ours else None
    if small:
        hit = "met" if small["ram_bytes_per_vector"] <= 16 else f"missed by {small['ram_bytes_per_vector'] - 16:.3f} B"
        lines.append(
            f"- Smallest of ours at recall@10 >= {TARGET}: {small['method']}, {small['ram_bytes_per_vector']:g} B/vector "
            f"resident, {small['qps']:,.0f} q/s (target <= 16 B: {hit})."
        )
        within = [o for o in ours if o["ram_bytes_per_vector"] <= 16]
        hnsw = next((b for b in rows if b["method"] == "full-dim HNSW32" and ok(b)), None)
        if within and hnsw:
            best = max(within, key=lambda o: o["qps"])
            lines.append(
                f"- Fastest of ours within 16 B: {best['method']}, {best['qps']:,.0f} q/s = "
                f"{best['qps'] / hnsw['qps']:.2f}x full-dim HNSW32's {hnsw['qps']:,.0f} q/s."
            )
    return lines


def fmt(v: Any, digits: int | None = None) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}f}" if digits is not None else (f"{v:,.0f}" if v >= 100 else f"{v:.3g}")
    return f"{v:,}" if isinstance(v, int) else str(v)


def markdown(report: dict) -> str:
    m = report["machine"]
    out = [
        "# Memory / speed frontier at recall@10 >= 0.99: coarse codes vs quantization + rescoring",
        "",
        "Written by `benchmarks/frontier.py`. "
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['ram_gib']} GiB RAM; FAISS {m['faiss']} "
        f"({m['faiss_omp_threads']} OpenMP threads, OMP_WAIT_POLICY={m['OMP_WAIT_POLICY']}), torch {m['torch']}, "
        f"matryoshka-index {m['matryoshka_index']}.",
        "",
        "Load: the 1-minute load average at the start and end of each row is in the json; the range and the "
        "threads / CPUs each run used are given per dataset below. Baselines and ours were measured alternately "
        "in one run, so load hit both alike.",
        "",
        "Methods: baselines at the smallest oversampling (candidates, or efSearch for full-dim HNSW) that reaches "
        "recall@10 >= 0.99 on these very queries: an oracle, generous to them. Every rescoring baseline reranks "
        "its candidates at full dimension by the same C++ call over the same memory-mapped vectors as ours. Ours: "
        "`MatryoshkaIndex.build` defaults (candidates calibrated at build time on held-out corpus rows, not on "
        "these queries), trained adaptor with the library defaults, `backend_options={'code': ..., 'balance': ...}`. "
        "RAM B/vector: what each vector keeps resident, measured on the saved and reloaded index (serialised "
        "FAISS index + in-RAM arrays, minus the fixed part: the empty trained index measured at training, e.g. "
        "the PCA matrix, SQ ranges, PQ codebooks, IVF centroids, our ITQ rotation); the fixed part is its own "
        "column and amortised B/vector is everything divided by the count. Full vectors (and our ids) are "
        "memory-mapped by every method, counted separately as page cache. Our adaptor's weights are a further "
        "fixed cost (listed per dataset).",
        "",
    ]
    for ds in report["datasets"].values():
        rows = ds["rows"]
        loads = [x for r in rows for x in r.get("load", [])]
        out += [
            f"## {ds['name']}",
            "",
            f"Data: {ds['source']}. Adaptor fit once: {ds['adaptor_fit_s']:.0f} s on {ds['sample_rows']:,} rows; "
            f"adaptor weights {ds['adaptor_bytes'] / 1e6:.1f} MB ({ds['adaptor_bytes'] / ds['n']:.1f} B/vector at "
            f"this size). Load average during the run: {min(loads):.1f} to {max(loads):.1f}; "
            f"{ds.get('threads', m['faiss_omp_threads'])} thread(s) on CPU(s) {ds.get('cpus', 'any')}. Run took "
            f"{ds['seconds'] / 60:.0f} min.",
            "",
            "| method | candidates (ef) | recall@10 | queries/s | p50 ms | build s | RAM B/vector | + fixed KB "
            "| amortised B/vector | page cache B/vector |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in rows:
            cand = r.get("candidates") if r.get("candidates") is not None else r.get("ef_search")
            if r.get("knob"):
                cand = f"{cand} ({r['knob']})"
            mark = "" if ok(r) or r["kind"] == "reference" else " (below target)"
            out.append(
                f"| {r['method']}{mark} | {fmt(cand)} | {fmt(r['recall@10'], 4)} | {fmt(r.get('qps'))} | "
                f"{fmt(r.get('p50_ms'))} | {fmt(r['build_s'])} | {fmt(r['ram_bytes_per_vector'])} | "
                f"{fmt(r['fixed_bytes'] / 1000 if r.get('fixed_bytes') is not None else None)} | "
                f"{fmt(r.get('amortised_bytes_per_vector'))} | {fmt(r.get('page_cache_bytes_per_vector'))} |"
            )
        out += ["", "Our frontier (bytes ascending, each faster than the last): "]
        out.append(
            ", ".join(f"{r['method']} ({r['ram_bytes_per_vector']:g} B, {r['qps']:,.0f} q/s)" for r in frontier(rows))
        )
        out += ["", "### Targets", "", *verdicts(rows), ""]
        if ds.get("ablation"):
            out += ["### Ablations", "", *ds["ablation"], ""]
    out += report.get("notes", [])
    return "\n".join(out) + "\n"


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sets = list(report["datasets"].values())
    cols = min(2, len(sets))
    nrows = -(-len(sets) // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(8 * cols, 6.5 * nrows), squeeze=False)
    for ax in axes.flat[len(sets) :]:
        ax.set_visible(False)
    markers = "osD^v<>pPX*h"
    names = list(dict.fromkeys(r["method"] for ds in sets for r in ds["rows"] if r["kind"] == "baseline"))
    style = {n: (markers[i % len(markers)], f"C{i % 10}") for i, n in enumerate(names)}  # same look in every panel
    for ax, ds in zip(axes.flat, sets, strict=False):
        rows = [r for r in ds["rows"] if ok(r)]
        for r in (r for r in rows if r["kind"] == "baseline"):
            marker, colour = style[r["method"]]
            ax.scatter(r["ram_bytes_per_vector"], r["qps"], marker=marker, c=colour, s=70, label=r["method"])
        exact = next(r for r in ds["rows"] if r["kind"] == "reference")
        ax.scatter(exact["ram_bytes_per_vector"], exact["qps"], marker="x", c="k", s=70, label=exact["method"])
        ours = [r for r in rows if r["kind"] == "ours"]
        ax.scatter([r["ram_bytes_per_vector"] for r in ours], [r["qps"] for r in ours], c="tab:red", s=18, alpha=0.5,
                   label="ours (every configuration at >= 0.99)")  # fmt: skip
        f = frontier(ds["rows"])
        ax.plot(
            [r["ram_bytes_per_vector"] for r in f], [r["qps"] for r in f], "-o", c="tab:red", lw=2, label="our frontier"
        )
        for r in f:
            ax.annotate(r["method"].replace("ours ", ""), (r["ram_bytes_per_vector"], r["qps"]), fontsize=7,
                        xytext=(4, 4), textcoords="offset points", color="tab:red")  # fmt: skip
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.axvline(16, ls=":", c="grey")
        ax.set_xlabel("resident RAM bytes / vector (measured; log)")
        ax.set_ylabel("queries / s, 1,000-query batch (log)")
        ax.set_title(f"{ds['name']}\nrecall@10 >= 0.99 vs exact full-dim search", fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--synthetic", action="store_true", help="topic-manifold synthetic data instead of the real set")
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--tmp", type=Path, default=Path("/tmp/mindex-frontier"))
    ap.add_argument("--sample-size", type=int, default=100_000)
    ap.add_argument("--fit-rows", type=int, default=None, help="rows the adaptor is fitted on (default: --sample-size)")
    ap.add_argument("--latency-queries", type=int, default=200)
    ap.add_argument("--max-candidates", type=int, default=8192)
    ap.add_argument("--only", default="", help="comma-separated substrings: run only matching rows (quick looks)")
    ap.add_argument("--key", default=None, help="results entry to write (default: real / synthetic)")
    ap.add_argument("--title", default=None, help="heading of that entry (default: the dataset's name)")
    ap.add_argument("--from-partial", type=Path, default=None, help="write results from a killed run's rows file")
    args = ap.parse_args(argv)
    args.tmp.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    ds = synthetic_dataset(args.rows, args.dim, args.tmp) if args.synthetic else real_dataset()
    print(ds.name, flush=True)
    full = normalised_copy(
        ds.corpus, args.tmp / f"normalised-{len(ds.corpus)}x{ds.corpus.shape[1]}-{args.synthetic}.npy"
    )
    adaptor, fit_s = fit_adaptor(ds, args)
    adaptors = {"adaptor": adaptor, "pca": "pca"}
    exact, truth = run_exact(full, ds, args)
    rows = [exact]
    print(f"  {exact['method']}: {exact['qps']:,.0f} q/s", flush=True)
    base = baselines(ds.corpus.shape[1])
    ours = OURS + ABLATION
    keep = [s for s in args.only.split(",") if s]
    order: list[Any] = []
    for i in range(max(len(base), len(ours))):  # alternate: load drifts hit baselines and ours alike
        order += ([base[i]] if i < len(base) else []) + ([ours[i]] if i < len(ours) else [])
    if args.from_partial is not None:
        order, rows = [], json.loads(args.from_partial.read_text())
    for item in order:
        name = item.name if isinstance(item, Baseline) else item[0]
        if keep and not any(s in name for s in keep):
            continue
        row = (
            run_baseline(ds, full, truth, item, args)
            if isinstance(item, Baseline)
            else run_ours(ds, truth, item, adaptors, args)
        )
        rows.append(row)
        (args.tmp / "partial-rows.json").write_text(json.dumps(rows))  # a killed run keeps what it measured
        print(
            f"  {name}: recall {row['recall@10']}, {fmt(row.get('qps'))} q/s, {row['ram_bytes_per_vector']} B, "
            f"c={row.get('candidates') or row.get('ef_search')}, load {row['load']}",
            flush=True,
        )
    out_json = RESULTS / "frontier.json"
    report = json.loads(out_json.read_text()) if out_json.exists() else {"datasets": {}}
    report["machine"] = machine()
    key = args.key or ("synthetic" if args.synthetic else "real")
    abl = ablation_lines(rows)
    report["datasets"][key] = {
        "name": args.title or ds.name,
        "source": ds.source,
        "n": len(ds.corpus),
        "sample_rows": min(len(ds.corpus), args.fit_rows or args.sample_size),
        "threads": faiss.omp_get_max_threads(),
        "cpus": sorted(os.sched_getaffinity(0)),
        "adaptor_fit_s": round(fit_s, 1),
        "adaptor_bytes": adaptor_bytes(adaptor),
        "seconds": round(time.perf_counter() - started, 1),
        "args": {k: str(v) for k, v in vars(args).items()},
        "rows": rows,
        "ablation": abl,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    atomic_write_bytes(out_json, (json.dumps(report, indent=1) + "\n").encode())
    atomic_write_bytes(RESULTS / "frontier.md", markdown(report).encode())
    plot(report, RESULTS / "frontier.png")
    print(markdown(report))


def adaptor_bytes(adaptor: Any) -> int:
    return int(
        sum(np.asarray(p.cpu() if hasattr(p, "cpu") else p).nbytes for p in adaptor.model_.state_dict().values())
    )


def ablation_lines(rows: list[dict]) -> list[str]:
    by = {r["method"]: r for r in rows}
    pairs = [
        ("ours 128 flat binary itq", "ablation: 128 flat binary, no balance", "ITQ balance, 128 binary"),
        ("ours 128 flat rabitq itq", "ablation: 128 flat rabitq, no balance", "ITQ balance, 128 RaBitQ"),
        ("ablation: 64 flat pq4x32 itq", "ours 64 flat pq4x32", "ITQ balance, 64 PQ4x32"),
        ("ours 128 flat binary itq", "ablation: 128 flat binary itq, PCA", "trained adaptor vs PCA, 128 binary itq"),
        ("ours 64 flat pq4x32", "ablation: 64 flat pq4x32, PCA", "trained adaptor vs PCA, 64 PQ4x32"),
    ]
    out = []
    for a, b, what in pairs:
        if a in by and b in by:
            ra, rb = by[a], by[b]
            out.append(
                f"- {what}: {a}: {ra['candidates']} candidates, recall {ra['recall@10']}, {fmt(ra.get('qps'))} q/s; "
                f"{b}: {rb['candidates']} candidates, recall {rb['recall@10']}, {fmt(rb.get('qps'))} q/s."
            )
    return out


if __name__ == "__main__":
    main()
