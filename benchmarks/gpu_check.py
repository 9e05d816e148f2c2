"""The GPU path end to end on one machine: adaptor training, query adaptation and the two-stage search.

Nothing but the project and torch is needed (faiss-gpu is used when importable, skipped otherwise).
Every figure is measured on ``--device`` in this one run; on a CPU (``--device cpu``) the script proves
the path works end to end, and its result file says plainly that it holds no GPU figure.

1. **Data**: the topic-manifold synthetic corpus of ``benchmarks/search_speed.py`` (the same
   parameters, calibrated there on the real MiniLM set), generated on the device in torch:
   ``--rows`` x 384 corpus, ``--queries`` queries and 1,000 calibration queries of the same
   distribution (different rows).
2. **Adaptor training** on the first ``--train-rows`` corpus rows, on the device and on the CPU
   (``--cpu-train-rows``, default the same rows; one training only when the device is the CPU):
   wall time, and the quality of both as recall@10 of coarse-``--coarse-dim`` + full rerank at a
   fixed ``--candidates`` against exact search, with its binomial standard error (the two agree
   "within noise" when they differ by less than twice the standard error of the difference).
3. **Transform**: the whole corpus through the device adaptor on the device (rows/s).
4. **Search**, 10,000-query batches (``--queries``), best of ``--repeats`` (after a warm-up on a GPU): exact full-dim
   search on the device (torch float32 matmul + topk; the ground truth), and the two-stage index:
   adapt the queries, coarse top-C with the torch engine (float32 / float16 / int8 storage), rerank
   at full dim on the device; C is the smallest of 10, 20, 40, ... reaching recall@10 >= 0.99 on the
   calibration queries. With faiss-gpu: its ``GpuIndexFlatIP`` for the coarse stage and for exact search.
   And the public API: ``MatryoshkaIndex.build(corpus, adaptor=<the device-trained one>, device=...)``
   then ``index.search`` (numpy in and out, the index's own calibrated candidates; ``--no-index`` skips it).
   Reported: recall@10 against exact search and queries/s, next to exact search's queries/s.

Designed to finish in under 5 minutes on one H100/H200 at the defaults (1M x 384, 100k training rows,
10,000 queries). On the 2-core development machine: ``python benchmarks/gpu_check.py --device cpu
--rows 200000 --train-rows 20000 --queries 2000`` (a few minutes). Writes
``benchmarks/results/gpu_check.md`` and ``.json`` (``--out`` elsewhere).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # shared machines: sleeping OpenMP waiters (see search_speed.py)

import argparse
import copy
import json
import math
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

# this checkout's package (not another installed copy), and search_speed beside this file
sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parent)]
from _machine import SYNTHETIC, cpu_model  # noqa: E402  (benchmarks/_machine.py: stdlib only, no faiss)

from matryoshka_index import MatryoshkaAdaptor, __version__  # noqa: E402

try:  # a GPU machine may have torch only: then the torch engine is the one that runs
    from matryoshka_index.backends import gpu_faiss
except ImportError:
    gpu_faiss = None
from matryoshka_index.backends.torch_engine import TorchCoarseEngine, TorchReranker  # noqa: E402
from matryoshka_index.device import resolve_device  # noqa: E402
from matryoshka_index.storage import atomic_write_bytes  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
K = 10
TARGET = 0.99
CALIB_QUERIES = 1000
LADDER = [10, 20, 40, 80, 160, 320, 640, 1280, 2560]


# ---------------------------------------------------------------------- data (on the device)
class TopicManifold:
    """``search_speed.write_synthetic``'s distribution, generated in torch on ``device`` (same parameters,
    its own random stream): ``x = (c_t + s A_t u + l eps_r) @ B + sigma eps``, rows L2-normalised."""

    def __init__(
        self, d: int, device: torch.device, *, rank, alpha, topics, local, local_scale, latent_noise, noise, seed
    ):
        self.g = torch.Generator(device=device).manual_seed(seed)
        self.device, self.d, self.rank, self.topics, self.local = device, d, rank, topics, local
        self.local_scale, self.latent_noise = local_scale, latent_noise
        std = torch.arange(1, rank + 1, device=device, dtype=torch.float32) ** -alpha
        q, _ = torch.linalg.qr(self._randn(d, rank))
        self.basis = q.T * std[:, None]
        self.centres = self._randn(topics, rank)
        self.frames = self._randn(topics, local, rank) / math.sqrt(local)
        self.sigma = noise * math.sqrt(float((std**2).sum()) / d)

    def _randn(self, *shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=self.g, device=self.device)

    def rows(self, n: int, chunk: int = 65536) -> torch.Tensor:
        out = torch.empty((n, self.d), device=self.device)
        for s in range(0, n, chunk):
            m = min(chunk, n - s)
            t = torch.randint(0, self.topics, (m,), generator=self.g, device=self.device)
            u = self._randn(m, self.local)
            z = self.centres[t] + self.local_scale * torch.einsum("nl,nlr->nr", u, self.frames[t])
            z += self.latent_noise * self._randn(m, self.rank)
            x = z @ self.basis + self.sigma * self._randn(m, self.d)
            out[s : s + m] = torch.nn.functional.normalize(x, dim=1)
        return out


# ---------------------------------------------------------------------- measuring
def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


REPEATS = 3


def timed(fn, dev: torch.device, repeats: int | None = None) -> tuple[float, Any]:
    """Best wall time of ``repeats`` calls (default ``--repeats``; after one warm-up call on a GPU: CUDA and
    cuBLAS initialise lazily), and the last result."""
    repeats = repeats or REPEATS
    if dev.type == "cuda":
        fn()
    best, out = math.inf, None
    for _ in range(repeats):
        sync(dev)
        t0 = time.perf_counter()
        out = fn()
        sync(dev)
        best = min(best, time.perf_counter() - t0)
    return best, out


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    hits = (found[:, :, None] == truth[:, None, :]).any(axis=2).sum(axis=1)
    return float(np.mean(hits / truth.shape[1]))


def std_err(r: float, n_queries: int) -> float:
    return math.sqrt(max(r * (1 - r), 1e-12) / (n_queries * K))


def load() -> float:
    return round(os.getloadavg()[0], 2)


def adaptor_module(adaptor: MatryoshkaAdaptor, dev: torch.device) -> torch.nn.Module:
    """The fitted adaptor as a torch module on ``dev`` (``to_torch`` where the adaptor has it)."""
    if hasattr(adaptor, "to_torch"):
        return adaptor.to_torch(str(dev))
    return copy.deepcopy(adaptor.model_).to(dev).eval()


@torch.no_grad()
def adapt(module: torch.nn.Module, x: torch.Tensor, dim: int, chunk: int = 65536) -> torch.Tensor:
    """L2-normalised first ``dim`` adapted coordinates (the index's coarse vectors), on ``x``'s device."""
    out = torch.empty((len(x), dim), device=x.device)
    for s in range(0, len(x), chunk):
        out[s : s + chunk] = torch.nn.functional.normalize(module(x[s : s + chunk])[:, :dim], dim=1)
    return out


# ---------------------------------------------------------------------- stages
def train_adaptors(train: torch.Tensor, dev, args) -> dict[str, Any]:
    """Fit on the device and on the CPU; wall time of each."""
    host = train.cpu().numpy()
    params = {"quiet": True, "max_samples": None, "seed": args.seed}
    if args.epochs:
        params["epochs"] = args.epochs
    out: dict[str, Any] = {"rows": len(host), "params": params}
    runs = [("device", str(dev), host)]
    if dev.type != "cpu":
        runs.append(("cpu", "cpu", host[: args.cpu_train_rows or len(host)]))
    for key, where, rows in runs:
        l0 = load()
        t0 = time.perf_counter()
        adaptor = MatryoshkaAdaptor(device=where, **params).fit(rows)
        out[key] = {
            "device": where,
            "rows": len(rows),
            "seconds": round(time.perf_counter() - t0, 2),
            "epochs_run": len(adaptor.history_.train_loss),
            "steps": adaptor.history_.steps,
            "load_before": l0,
            "adaptor": adaptor,
        }
        print(f"  trained on {where}: {len(rows):,} rows in {out[key]['seconds']} s", flush=True)
    return out


def two_stage(coarse: TorchCoarseEngine, rerank: TorchReranker, module, q: torch.Tensor, dim: int, c: int):
    """Adapt the queries, coarse top-``c``, rerank at full dim: (scores, rows) as numpy."""
    cq = adapt(module, q, dim)
    _, rows = coarse.search_tensors(cq, c)
    return rerank.rerank(q, rows.cpu().numpy(), K)


def calibrate(search, truth_calib: np.ndarray) -> tuple[int, float]:
    """Smallest ladder candidate count reaching TARGET recall@10 on the calibration queries."""
    r = 0.0
    for c in LADDER:
        r = recall(search(c)[1], truth_calib)
        if r >= TARGET:
            return c, r
    return LADDER[-1], r


def search_rows(data: dict, adaptors: dict, dev, args) -> tuple[list[dict], dict]:
    """Exact full-dim search and the two-stage index with each coarse engine: recall@10 and queries/s."""
    corpus, queries, calib = data["corpus"], data["queries"], data["calib"]
    nq = len(queries)
    exact = TorchCoarseEngine(corpus.shape[1], device=dev, dtype="float32")
    exact.add(np.arange(len(corpus)), corpus)
    l0 = load()
    t_exact, (_, truth) = timed(lambda: exact.search(queries, K), dev)
    truth_calib = exact.search(calib, K)[1]
    base = {"name": "exact full-dim (torch float32 matmul + topk)", "recall@10": 1.0, "candidates": None}
    base.update(qps=round(nq / t_exact, 1), seconds=round(t_exact, 4), load=l0)
    rows = [base]
    print(f"  exact: {base['qps']:,} q/s", flush=True)
    module = adaptor_module(adaptors["device"]["adaptor"], dev)
    coarse_vecs = adapt(module, corpus, args.coarse_dim)
    rerank = TorchReranker(corpus, device=dev)
    quality: dict[str, Any] = {}
    exact = None  # free the float32 copy before the coarse engines are built
    for dtype in args.dtypes:
        eng = TorchCoarseEngine(args.coarse_dim, device=dev, dtype=dtype)
        eng.add(np.arange(len(corpus)), coarse_vecs)
        c, r_cal = calibrate(lambda c, eng=eng: two_stage(eng, rerank, module, calib, args.coarse_dim, c), truth_calib)
        l0 = load()
        t, (_, found) = timed(lambda eng=eng, c=c: two_stage(eng, rerank, module, queries, args.coarse_dim, c), dev)
        row = {"name": f"coarse-{args.coarse_dim} torch {dtype} + rerank on {dev.type}", "candidates": c}
        row.update({"recall@10": round(recall(found, truth), 4), "calibration_recall@10": round(r_cal, 4)})
        row.update(qps=round(nq / t, 1), seconds=round(t, 4), load=l0, speedup=round(t_exact / t, 2))
        row["coarse_device_bytes_per_vector"] = round(eng.nbytes / len(corpus), 1)
        rows.append(row)
        print(f"  {row['name']}: C={c} recall {row['recall@10']} {row['qps']:,} q/s ({row['speedup']}x)", flush=True)
        if dtype == "float32":
            quality["device"] = fixed_candidates_recall(eng, rerank, module, queries, truth, args)
    quality.update(adaptor_quality(adaptors, data, rerank, truth, dev, args, quality.get("device")))
    if not args.no_index and gpu_faiss is not None:  # MatryoshkaIndex's default backend needs faiss
        rows.append(index_row(data, adaptors["device"]["adaptor"], dev, truth, t_exact, args))
    elif not args.no_index:
        print(
            "  MatryoshkaIndex.build row skipped: faiss is not installed here (the torch engine rows ran)", flush=True
        )
    if gpu_faiss is not None and gpu_faiss.gpu_available(dev.index or 0) and dev.type == "cuda":
        rows += faiss_gpu_rows(corpus, coarse_vecs, queries, calib, module, rerank, truth, truth_calib, t_exact, args)
    return rows, quality


def index_row(data, adaptor, dev, truth, t_exact, args) -> dict[str, Any]:
    """The public API on the device: ``MatryoshkaIndex.build(..., device=)`` (calibrated on held-out rows,
    as any build) and ``index.search`` on the measured queries, arrays in and out on the host."""
    from matryoshka_index import MatryoshkaIndex

    x, q = data["corpus"].cpu().numpy(), data["queries"].cpu().numpy()
    l0 = load()
    t0 = time.perf_counter()
    index = MatryoshkaIndex.build(x, coarse_dim=args.coarse_dim, adaptor=adaptor, device=str(dev), quiet=True)
    build_s = time.perf_counter() - t0
    t, (_, found) = timed(lambda: index.search(q, k=K), dev)
    stages = index.info()["stages"]
    row = {"name": f"MatryoshkaIndex.build(device={str(dev)!r}), flat coarse-{args.coarse_dim} (public API)"}
    row.update(candidates=index.candidates, **{"recall@10": round(recall(found, truth), 4)})
    row.update(qps=round(len(q) / t, 1), seconds=round(t, 4), load=l0, speedup=round(t_exact / t, 2))
    row.update(build_seconds=round(build_s, 1), stages=stages)
    print(f"  {row['name']}: built in {row['build_seconds']} s, {row['qps']:,} q/s, stages {stages}", flush=True)
    return row


def fixed_candidates_recall(eng, rerank, module, queries, truth, args) -> float:
    return recall(two_stage(eng, rerank, module, queries, args.coarse_dim, args.candidates)[1], truth)


def adaptor_quality(adaptors, data, rerank, truth, dev, args, device_recall) -> dict[str, Any]:
    """recall@10 at fixed candidates for the device-trained and the CPU-trained adaptor (float32 coarse)."""
    nq = len(data["queries"])
    out: dict[str, Any] = {"candidates": args.candidates, "queries": nq}
    for key in ("device", "cpu"):
        if key not in adaptors:
            continue
        if key == "device" and device_recall is not None:
            r = device_recall
        else:
            module = adaptor_module(adaptors[key]["adaptor"], dev)
            eng = TorchCoarseEngine(args.coarse_dim, device=dev)
            eng.add(np.arange(len(data["corpus"])), adapt(module, data["corpus"], args.coarse_dim))
            r = fixed_candidates_recall(eng, rerank, module, data["queries"], truth, args)
        out[f"{key}_recall@10"] = round(r, 4)
        out[f"{key}_std_err"] = round(std_err(r, nq), 4)
    if "cpu_recall@10" in out:
        diff = out["device_recall@10"] - out["cpu_recall@10"]
        noise = 2 * math.hypot(out["device_std_err"], out["cpu_std_err"])
        out.update(difference=round(diff, 4), two_std_err=round(noise, 4), within_noise=abs(diff) <= noise)
    return out


def faiss_gpu_rows(corpus, coarse_vecs, queries, calib, module, rerank, truth, truth_calib, t_exact, args):
    """faiss-gpu GpuIndexFlatIP: exact full-dim search, and the coarse stage of the two-stage index."""
    gpu = 0 if corpus.device.index is None else corpus.device.index
    nq = len(queries)
    full = gpu_faiss.flat_ip(corpus.shape[1], gpu)
    full.add(corpus.cpu().numpy())
    qn = queries.cpu().numpy()
    t, (_, found) = timed(lambda: full.search(qn, K), corpus.device)
    rows = [{"name": "exact full-dim (faiss-gpu GpuIndexFlatIP)", "recall@10": round(recall(found, truth), 4)}]
    rows[-1].update(candidates=None, qps=round(nq / t, 1), seconds=round(t, 4), load=load())
    full = None
    flat = gpu_faiss.flat_ip(args.coarse_dim, gpu)
    flat.add(coarse_vecs.cpu().numpy())

    def run(q: torch.Tensor, c: int):
        _, cand = flat.search(adapt(module, q, args.coarse_dim).cpu().numpy(), c)
        return rerank.rerank(q, cand, K)

    c, r_cal = calibrate(lambda c: run(calib, c), truth_calib)
    t2, (_, found) = timed(lambda: run(queries, c), corpus.device)
    row = {"name": f"coarse-{args.coarse_dim} faiss-gpu GpuIndexFlatIP + torch rerank", "candidates": c}
    row.update({"recall@10": round(recall(found, truth), 4), "calibration_recall@10": round(r_cal, 4)})
    row.update(qps=round(nq / t2, 1), seconds=round(t2, 4), load=load(), speedup=round(t_exact / t2, 2))
    rows.append(row)
    return rows


# ---------------------------------------------------------------------- report
def machine(dev: torch.device, resolved) -> dict[str, Any]:
    try:
        import faiss  # absent on a GPU machine that has only torch: the torch engine runs without it

        faiss_version = faiss.__version__
    except ImportError:
        faiss_version = None
    cpu = cpu_model()
    out = {
        "device": str(dev),
        "device_name": resolved.name if dev.type == "cuda" else f"CPU: {cpu}",
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "faiss": faiss_version,
        "faiss_gpus": gpu_faiss.gpu_count() if gpu_faiss is not None else 0,
        "faiss_cagra": gpu_faiss.has_cagra() if gpu_faiss is not None else False,
        "numpy": np.__version__,
        "matryoshka_index": __version__,
        "torch_threads": torch.get_num_threads(),
        "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY"),
    }
    if dev.type == "cuda":
        out["gpu_memory_gib"] = round(torch.cuda.get_device_properties(dev).total_memory / 2**30, 1)
    return out


def markdown(report: dict[str, Any]) -> str:
    m, a, q = report["machine"], report["adaptor_training"], report["adaptor_quality"]
    cpu_run = report["device"] == "cpu"
    title = "# gpu_check: the GPU path end to end" + (" — CPU RUN (no GPU figure exists)" if cpu_run else "")
    out = [title, ""]
    if cpu_run:
        out += [
            "**This run used the CPU (`--device cpu`), at a reduced scale. It proves the script and the path work",
            "end to end; it holds no GPU figure. GPU figures have not been measured yet.** The targets of issue 14",
            "(two-stage >= 5x the queries/s of exact search on one H100/H200 at recall@10 >= 0.99; adaptor",
            "training on 100k rows < 15 s) can only be checked by running this script on a GPU machine.",
            "",
        ]
    out += [
        f"Device: **{m['device_name']}** (`{m['device']}`); torch {m['torch']} (CUDA {m['cuda']}), faiss {m['faiss']}",
        f"({m['faiss_gpus']} GPU(s) visible to faiss, CAGRA: {m['faiss_cagra']}), matryoshka-index {m['matryoshka_index']};",
        f"{m['cores']} cores ({m['cpu']}), torch threads {m['torch_threads']}. Load (1-min average) at start",
        f"{report['load_start']}, at the end {report['load_end']}; each row shows the load when it started"
        + (" (a shared 2-core machine: times are under load)." if cpu_run else "."),
        "",
        f"Data: topic-manifold synthetic ({report['rows']:,} x {report['dim']}, generated on `{m['device']}`), "
        f"{report['queries']:,} queries, {CALIB_QUERIES:,} calibration queries; total wall time {report['wall_s']} s.",
        "",
        f"Command: `{report.get('command', 'python benchmarks/gpu_check.py')}`",
        "",
        "## Adaptor training",
        "",
        "| where | rows | seconds | epochs | load |",
        "|---|---|---|---|---|",
    ]
    for key in ("device", "cpu"):
        if key in a:
            r = a[key]
            out.append(f"| {r['device']} | {r['rows']:,} | {r['seconds']} | {r['epochs_run']} | {r['load_before']} |")
    out += ["", f"Quality at a fixed {q['candidates']} candidates (coarse-{report['coarse_dim']} float32 + rerank), "]
    out[-1] += f"recall@10 against exact search on {q['queries']:,} queries:"
    out.append(f"device-trained {q['device_recall@10']} ± {q['device_std_err']} (standard error)")
    if "cpu_recall@10" in q:
        verdict = "within noise" if q["within_noise"] else "NOT within noise"
        out[-1] += f", CPU-trained {q['cpu_recall@10']} ± {q['cpu_std_err']}: difference {q['difference']}, "
        out[-1] += f"{verdict} (2 standard errors of the difference: {q['two_std_err']})."
    else:
        out[-1] += " (the device is the CPU: one training, nothing to compare)."
    t = report["transform"]
    out += ["", f"Transform: {t['rows']:,} rows through the adaptor on `{m['device']}` in {t['seconds']} s "]
    out[-1] += f"({t['rows_per_s']:,.0f} rows/s), adapted prefix of {report['coarse_dim']} dims, normalised."
    out += [
        "",
        "## Search",
        "",
        f"{report['queries']:,}-query batch, best of {report['args']['repeats']}"
        + ("" if cpu_run else " after a warm-up")
        + "; recall@10 against exact search.",
    ]
    out += [
        "",
        "| method | candidates | recall@10 | queries/s | x exact | coarse bytes/vector | load |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in report["search"]:
        cand = "–" if r.get("candidates") is None else r["candidates"]
        bpv = r.get("coarse_device_bytes_per_vector", "–")
        out.append(
            f"| {r['name']} | {cand} | {r['recall@10']} | {r['qps']:,.0f} | {r.get('speedup', 1.0)} | {bpv} | {r['load']} |"
        )
    for r in report["search"]:
        if "stages" in r:
            out += [
                "",
                f"`{r['name']}`: built (adaptor given, calibration on held-out rows) in {r['build_seconds']} s;",
            ]
            out[-1] += f" candidates {r['candidates']} from its own calibration; stages {json.dumps(r['stages'])}."
    out += [
        "",
        "Candidates (torch and faiss-gpu rows): the smallest of "
        + ", ".join(map(str, LADDER))
        + f" reaching recall@10 >= {TARGET}",
    ]
    out[-1] += f" on the calibration queries (the {report['queries']:,} measured queries never chose it)."
    if not report["faiss_gpu"]:
        out[-1] += " faiss-gpu was not usable here, so it has no row."
    torch_rows = [r for r in report["search"] if " torch " in r["name"]]
    if cpu_run and torch_rows:
        lo, hi = min(r["speedup"] for r in torch_rows), max(r["speedup"] for r in torch_rows)
        out += [
            "",
            f"On this CPU the torch two-stage rows answer {lo}-{hi}x the queries/s of torch exact search (not",
            "analysed further: on a CPU the index itself uses FAISS, the MatryoshkaIndex row). These CPU",
            "queries/s, under the load shown, say nothing about a GPU.",
        ]
    return "\n".join(out) + "\n"


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto)")
    p.add_argument("--rows", type=int, default=1_000_000, help="corpus rows (default 1,000,000)")
    p.add_argument("--train-rows", type=int, default=100_000, help="adaptor training rows (default 100,000)")
    p.add_argument("--cpu-train-rows", type=int, default=None, help="rows for the CPU training (default: --train-rows)")
    p.add_argument("--queries", type=int, default=10_000, help="queries in the measured batch (default 10,000)")
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--coarse-dim", type=int, default=64)
    p.add_argument("--candidates", type=int, default=100, help="fixed candidates for the adaptor quality check")
    p.add_argument("--dtypes", default="float32,float16,int8", help="torch coarse engine storage dtypes")
    p.add_argument("--epochs", type=int, default=None, help="adaptor epochs (default: the library default)")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per measurement, the best is kept (default 3)")
    p.add_argument("--no-index", action="store_true", help="skip the MatryoshkaIndex.build(device=) row")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results", help="directory for gpu_check.md/.json")
    args = p.parse_args(argv)
    args.dtypes = [d.strip() for d in args.dtypes.split(",") if d.strip()]
    if args.train_rows > args.rows:
        p.error("--train-rows must not exceed --rows")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    global REPEATS
    args = parse(argv)
    REPEATS = max(1, args.repeats)
    resolved = resolve_device(args.device)
    dev = torch.device(resolved.torch_device)
    t_start, load_start = time.perf_counter(), load()
    print(f"gpu_check on {resolved} (torch device {dev})", flush=True)
    gen = TopicManifold(args.dim, dev, **{**SYNTHETIC, "seed": args.seed})
    data = {"corpus": gen.rows(args.rows), "queries": gen.rows(args.queries), "calib": gen.rows(CALIB_QUERIES)}
    adaptors = train_adaptors(data["corpus"][: args.train_rows], dev, args)
    module = adaptor_module(adaptors["device"]["adaptor"], dev)
    t, _ = timed(lambda: adapt(module, data["corpus"], args.coarse_dim), dev, repeats=1)
    transform = {"rows": args.rows, "seconds": round(t, 3), "rows_per_s": round(args.rows / t, 1), "load": load()}
    search, quality = search_rows(data, adaptors, dev, args)
    report = {
        "device": dev.type,
        "note": "CPU run: no GPU figure exists" if dev.type == "cpu" else "measured on the GPU named in machine",
        "machine": machine(dev, resolved),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "command": " ".join(["python", "benchmarks/gpu_check.py", *(sys.argv[1:] if argv is None else argv)]),
        "rows": args.rows,
        "dim": args.dim,
        "coarse_dim": args.coarse_dim,
        "queries": args.queries,
        "synthetic": SYNTHETIC,
        "adaptor_training": {
            k: ({kk: vv for kk, vv in v.items() if kk != "adaptor"} if isinstance(v, dict) else v)
            for k, v in adaptors.items()
        },
        "adaptor_quality": quality,
        "transform": transform,
        "search": search,
        "faiss_gpu": any("faiss-gpu" in r["name"] for r in search),
        "load_start": load_start,
        "load_end": load(),
        "wall_s": round(time.perf_counter() - t_start, 1),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(args.out / "gpu_check.json", (json.dumps(report, indent=2) + "\n").encode())
    text = markdown(report)
    atomic_write_bytes(args.out / "gpu_check.md", text.encode())
    print(text)
    return report


if __name__ == "__main__":
    main()
