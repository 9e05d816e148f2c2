"""Qdrant: full-dimension search vs matryoshka coarse+rerank (one query with a prefetch), and qdrant-edge vs FAISS.

Reads ``docstrings-minilm384-50k.npy`` from ``../shared/data`` (beside the project root, i.e.
``/work/shared/data`` on the development machine; 50,000 real all-MiniLM-L6-v2 embeddings, 384-d,
L2-normalised). A seeded shuffle gives the corpus and held-out queries; the ground truth is exact
384-d inner-product search computed with numpy.

Rows, each with recall@10 against that truth and queries/s:

* **qdrant-edge** (``backend="qdrant-edge"``: Qdrant's own engine in-process, needs the ``edge``
  extra), on the whole set (49,800 points by default): full-dim exact search, then coarse + rerank
  (nested prefetch) with the coarse stage exact or HNSW, each without and with int8 quantization of
  ``coarse``, at several candidate counts; beside them the **FAISS backend** on the very same vectors
  (flat and HNSW coarse). Queries/s of a batch of queries, and milliseconds per query when they
  come one at a time. Build times (add, ``optimize()``) are recorded per configuration.

* qdrant-client **local mode** (in-process, in memory): full-dim search (brute force over ``full``),
  coarse+rerank at several candidate counts, coarse-only, and the FAISS backend (flat) on the very
  same coarse/full vectors for reference. Local mode is qdrant-client's pure-Python/numpy
  emulation, meant for tests: it is **not a performance engine** (brute force for every stage, one
  query at a time, and it warns above 20,000 points), so the default is a 20,000-point subset and
  200 queries, and its queries/s say nothing about a Qdrant server.
* with ``--url``: a real Qdrant server, the whole set (49,800 points by default): the user's
  baseline (a plain collection, one 384-d HNSW vector), exact full-dim search, and matryoshka
  coarse (HNSW, optionally int8) + full rerank inside Qdrant.

Writes ``benchmarks/results/qdrant_search.md`` and ``.json`` (``--out`` to change) and prints the table.

    python benchmarks/qdrant_search.py [--data ../shared/data] [--points 20000] [--queries 200]
                                       [--adaptor DIR | --epochs 3] [--url http://localhost:6333]
                                       [--edge-points 49800] [--no-edge] [--no-local]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _machine import cpu_model  # benchmarks/_machine.py (the script's own folder)

from matryoshka_index import MatryoshkaAdaptor, __version__
from matryoshka_index.backends import get_backend_class
from matryoshka_index.backends.qdrant.server import QdrantBackend
from matryoshka_index.validation import l2_normalize

ROOT = Path(__file__).resolve().parent.parent
DATA_FILE = "docstrings-minilm384-50k.npy"
K = 10


def machine() -> dict:
    cpu = cpu_model()
    mem = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = round(int(line.split()[1]) / 1024**2, 1)
    except OSError:
        pass
    import qdrant_client
    import torch

    try:
        import faiss

        faiss_version = faiss.__version__
    except Exception:  # pragma: no cover
        faiss_version = None
    from importlib.metadata import version

    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "ram_gib": mem,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": torch.__version__,
        "faiss": faiss_version,
        "qdrant_client": version("qdrant-client") if hasattr(qdrant_client, "__name__") else None,
        "qdrant_edge": edge_version(),
        "matryoshka_index": __version__,
        "platform": platform.platform(),
    }


def edge_version() -> str | None:
    try:
        from matryoshka_index.backends.qdrant.edge import edge_version as version

        return version()
    except Exception:  # the extra is not installed
        return None


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f[f >= 0]) & set(t)) / len(t) for f, t in zip(found, truth, strict=True)]))


def timed(fn, n_queries: int, repeat: int = 1) -> tuple[np.ndarray, float]:
    """Ids of one full run and queries/s of the best of ``repeat`` runs."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        _, ids = fn()
        best = min(best, time.perf_counter() - t0)
    return ids, n_queries / best


def load_adaptor(args, corpus: np.ndarray) -> tuple[MatryoshkaAdaptor, dict]:
    if args.adaptor:
        return MatryoshkaAdaptor.load(args.adaptor, device="cpu"), {"source": str(args.adaptor)}
    t0 = time.perf_counter()
    dims = sorted({32, 64, 128, args.coarse_dim} - {corpus.shape[1]})
    adaptor = MatryoshkaAdaptor(matryoshka_dims=dims, epochs=args.epochs, seed=0, device="cpu", quiet=args.quiet)
    adaptor.fit(corpus)
    return adaptor, {
        "source": f"trained unsupervised on the {len(corpus):,} corpus rows, {args.epochs} epochs, CPU",
        "seconds": round(time.perf_counter() - t0, 1),
    }


def local_rows(args, ids, coarse, full, q, cq, truth) -> tuple[list[dict], dict]:
    rows = []
    n_q = len(q)
    be = QdrantBackend.create(coarse_dim=coarse.shape[1], full_dim=full.shape[1], metric="cosine", quiet=args.quiet)
    t0 = time.perf_counter()
    be.add(ids, coarse, full)
    build = {"points": len(ids), "upload_seconds": round(time.perf_counter() - t0, 1)}
    be.search(cq[:2], q[:2], K, args.candidates[0])  # warm-up
    found, qps = timed(lambda: be.exact_search(q, K), n_q)
    rows.append(
        {
            "engine": "qdrant local",
            "method": "full-dim search (384-d, brute force)",
            "candidates": None,
            "recall@10": recall(found, truth),
            "qps": qps,
        }
    )
    for c in args.candidates:
        found, qps = timed(lambda c=c: be.search(cq, q, K, c), n_q)
        rows.append(
            {
                "engine": "qdrant local",
                "method": f"coarse {coarse.shape[1]}-d + rerank 384-d (prefetch)",
                "candidates": c,
                "recall@10": recall(found, truth),
                "qps": qps,
            }
        )
    found, qps = timed(lambda: be.coarse_search(cq, K), n_q)
    rows.append(
        {
            "engine": "qdrant local",
            "method": f"coarse {coarse.shape[1]}-d only, no rerank",
            "candidates": None,
            "recall@10": recall(found, truth),
            "qps": qps,
        }
    )
    be.close()
    fb = get_backend_class("faiss").create(
        coarse_dim=coarse.shape[1], full_dim=full.shape[1], metric="cosine", index="flat", device="cpu"
    )
    fb.add(ids, coarse, full)
    fb.search(cq[:5], q[:5], K, args.candidates[0])  # warm-up
    for c in args.candidates:
        found, qps = timed(lambda c=c: fb.search(cq, q, K, c), n_q, repeat=5)
        rows.append(
            {
                "engine": "faiss (reference)",
                "method": f"flat coarse {coarse.shape[1]}-d + rerank 384-d",
                "candidates": c,
                "recall@10": recall(found, truth),
                "qps": qps,
            }
        )
    return rows, build


def single_ms(fn, n: int) -> float:
    """Median milliseconds of one query at a time (``fn(i)`` runs query ``i``)."""
    times = []
    for i in range(n):
        t0 = time.perf_counter()
        fn(i)
        times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1000)


def faiss_threads(n: int | None) -> None:
    """FAISS's OpenMP threads: ``n``, or every core (None)."""
    import faiss

    faiss.omp_set_num_threads(n or os.cpu_count() or 1)


def edge_rows(args, ids, coarse, full, q, cq, truth) -> tuple[list[dict], dict]:
    """qdrant-edge (exact and HNSW coarse, without and with int8) beside the FAISS backend, same vectors.

    The full sweep runs both engines on one thread (qdrant-edge ``max_search_threads=1``, FAISS
    ``omp_set_num_threads(1)``); a few rows at 100 candidates then use every core.
    """
    edge = get_backend_class("qdrant-edge")
    faiss_cls = get_backend_class("faiss")
    rows: list[dict] = []
    builds: dict[str, dict] = {}
    n_q, n_single = len(q), min(50, len(q))
    cd, fd = coarse.shape[1], full.shape[1]

    def add_rows(engine: str, method: str, search, cands: list[int | None], build_key: str, threads: str) -> None:
        for c in cands:
            search(c, q[:5], cq[:5])  # warm-up (and, for qdrant-edge, the optimize after the adds)
            found, qps = timed(lambda c=c: search(c, q, cq), n_q, repeat=3)
            ms = single_ms(lambda i, c=c: search(c, q[i : i + 1], cq[i : i + 1]), n_single)
            rows.append(
                {
                    "engine": engine,
                    "method": method,
                    "candidates": c,
                    "threads": threads,
                    "recall@10": recall(found, truth),
                    "qps": qps,
                    "ms_single": ms,
                    "build": build_key,
                }
            )

    all_cores = f"all ({os.cpu_count()})"
    sweeps = [
        (1, [("flat", None), ("flat", "int8"), ("hnsw", None), ("hnsw", "int8")], args.candidates),
        (None, [("flat", None), ("hnsw", "int8")], [100]),
    ]
    for threads, configs, cands in sweeps:
        label = "1" if threads else all_cores
        faiss_threads(threads)
        for i, (index, quant) in enumerate(configs):
            key = f"qdrant-edge {index}" + (f" + {quant}" if quant else "")
            be = edge.create(
                coarse_dim=cd,
                full_dim=fd,
                metric="cosine",
                index=index,
                coarse_quantization=quant,
                max_search_threads=threads,
                quiet=args.quiet,
            )
            t0 = time.perf_counter()
            be.add(ids, coarse, full)
            t_add = time.perf_counter() - t0
            t0 = time.perf_counter()
            be.optimize()
            t_opt = time.perf_counter() - t0
            if threads:  # a save into an index directory, and an open of it (a copy of the shard, then load)
                with tempfile.TemporaryDirectory() as tmp:
                    t0 = time.perf_counter()
                    section = be.save(Path(tmp))
                    t_save = time.perf_counter() - t0
                    t0 = time.perf_counter()
                    edge.open(Path(tmp), section).close()
                    t_open = time.perf_counter() - t0
            info = be.info()  # after the save's flush: segments the optimize replaced are gone
            graph = sum(
                f.stat().st_size for d in be.path.rglob("vector_index-coarse") for f in d.iterdir() if f.is_file()
            )
            if threads:  # builds are recorded once (the optimizer's threads do not depend on the search pool)
                builds[key] = {
                    "add_seconds": round(t_add, 1),
                    "optimize_seconds": round(t_opt, 1),
                    "save_seconds": round(t_save, 2),
                    "open_seconds": round(t_open, 2),
                    "coarse_hnsw_bytes_per_vector": round(graph / len(ids), 1),
                    "segments": info["segments"],
                    "disk_bytes_per_vector": info["disk_bytes_per_vector"],
                    "ram_bytes_per_vector_estimate": info["ram_bytes_per_vector"],
                }
            if i == 0:
                add_rows(
                    "qdrant-edge",
                    f"full-dim exact ({fd}-d)",
                    lambda c, qq, cc, be=be: be.exact_search(qq, K),
                    [None],
                    key,
                    label,
                )
            coarse_name = "exact" if index == "flat" else "HNSW"
            add_rows(
                "qdrant-edge",
                f"coarse {cd}-d {coarse_name}"
                + (f", {quant}" if quant else "")
                + f" + rerank {fd}-d (nested prefetch)",
                lambda c, qq, cc, be=be: be.search(cc, qq, K, c),
                cands,
                key,
                label,
            )
            be.close()
        for index in ("flat", "hnsw"):
            key = f"faiss {index}"
            fb = faiss_cls.create(coarse_dim=cd, full_dim=fd, metric="cosine", index=index, device="cpu")
            t0 = time.perf_counter()
            fb.add(ids, coarse, full)
            if threads:
                builds[key] = {"add_seconds": round(time.perf_counter() - t0, 1)}
            if index == "flat":
                add_rows(
                    "faiss",
                    f"full-dim exact ({fd}-d)",
                    lambda c, qq, cc, fb=fb: fb.exact_search(qq, K),
                    [None],
                    key,
                    label,
                )
            add_rows(
                "faiss",
                f"coarse {cd}-d {'exact' if index == 'flat' else 'HNSW'} + rerank {fd}-d",
                lambda c, qq, cc, fb=fb: fb.search(cc, qq, K, c),
                cands,
                key,
                label,
            )
            del fb
    faiss_threads(1)  # the local-mode rows' FAISS reference runs on one thread too
    return rows, builds


def server_rows(args, ids, coarse, full, q, cq, truth) -> tuple[list[dict], dict]:
    from qdrant_client import QdrantClient
    from qdrant_client import models as qm

    rows = []
    n_q = len(q)
    client = QdrantClient(url=args.url, api_key=args.api_key, timeout=300, check_compatibility=False)
    suffix = f"_{os.getpid()}"
    base, mat = "mindex_bench_full" + suffix, "mindex_bench_matryoshka" + suffix
    try:
        client.create_collection(base, vectors_config=qm.VectorParams(size=full.shape[1], distance=qm.Distance.COSINE))
        t0 = time.perf_counter()
        client.upload_collection(base, vectors=full, ids=ids.tolist(), batch_size=512, parallel=2, wait=True)
        be = QdrantBackend.create(
            coarse_dim=coarse.shape[1],
            full_dim=full.shape[1],
            metric="cosine",
            url=args.url,
            api_key=args.api_key,
            collection=mat,
            coarse_quantization=args.coarse_quantization,
            parallel=2,
            upload_batch_size=512,
            quiet=args.quiet,
        )
        be.add(ids, coarse, full)
        for name in (base, mat):  # wait until the HNSW graphs are built
            while client.get_collection(name).status != qm.CollectionStatus.GREEN:
                time.sleep(1)
        build = {
            "points": len(ids),
            "upload_and_index_seconds": round(time.perf_counter() - t0, 1),
            "server": client.info().version,
        }

        def baseline(exact: bool):
            reqs = [qm.QueryRequest(query=v.tolist(), limit=K, params=qm.SearchParams(exact=exact)) for v in q]
            out = np.full((n_q, K), -1, dtype=np.int64)
            for s in range(0, n_q, 64):
                for r, resp in enumerate(client.query_batch_points(base, requests=reqs[s : s + 64]), start=s):
                    out[r, : len(resp.points)] = [p.id for p in resp.points]
            return None, out

        found, qps = timed(lambda: baseline(True), n_q)
        rows.append(
            {
                "engine": "qdrant server",
                "method": "full-dim exact (plain collection)",
                "candidates": None,
                "recall@10": recall(found, truth),
                "qps": qps,
            }
        )
        found, qps = timed(lambda: baseline(False), n_q)
        rows.append(
            {
                "engine": "qdrant server",
                "method": "full-dim HNSW (plain collection, defaults)",
                "candidates": None,
                "recall@10": recall(found, truth),
                "qps": qps,
            }
        )
        quant = f", {args.coarse_quantization}" if args.coarse_quantization else ""
        for c in args.candidates:
            found, qps = timed(lambda c=c: be.search(cq, q, K, c), n_q)
            rows.append(
                {
                    "engine": "qdrant server",
                    "method": f"coarse {coarse.shape[1]}-d HNSW{quant} + rerank 384-d (prefetch)",
                    "candidates": c,
                    "recall@10": recall(found, truth),
                    "qps": qps,
                }
            )
        return rows, build
    finally:
        for name in (base, mat, mat + "__mindex_meta"):
            try:
                client.delete_collection(name)
            except Exception:
                pass
        client.close()


def table(rows: list[dict], single: bool = False) -> str:
    if single:
        out = [
            "| engine | method | candidates | threads | recall@10 | queries/s (batch) | ms/query (one at a time) |",
            "|---|---|---|---|---|---|---|",
        ]
    else:
        out = ["| engine | method | candidates | recall@10 | queries/s |", "|---|---|---|---|---|"]
    for r in rows:
        c = "" if r["candidates"] is None else str(r["candidates"])
        if single:
            line = (
                f"| {r['engine']} | {r['method']} | {c} | {r.get('threads', '')} | {r['recall@10']:.4f} | "
                f"{r['qps']:,.1f} | {r['ms_single']:.2f} |"
            )
        else:
            line = f"| {r['engine']} | {r['method']} | {c} | {r['recall@10']:.4f} | {r['qps']:,.1f} |"
        out.append(line)
    return "\n".join(out)


def render_edge(results: dict) -> list[str]:
    e = results.get("edge")
    if not e:
        return [
            "**qdrant-edge**: not run (qdrant-edge-py is not installed here, or `--no-edge`; "
            '`pip install "matryoshka-index[edge]"`).',
            "",
        ]
    m = results["machine"]
    builds = "; ".join(
        f"{k}: add {b['add_seconds']} s"
        + (f", optimize {b['optimize_seconds']} s" if "optimize_seconds" in b else "")
        + (f", save {b['save_seconds']} s, open {b['open_seconds']} s" if "save_seconds" in b else "")
        for k, b in e["builds"].items()
    )
    disk = "; ".join(
        f"{k}: {b['disk_bytes_per_vector']:,.0f} (coarse HNSW graph {b.get('coarse_hnsw_bytes_per_vector', 0):,.0f})"
        for k, b in e["builds"].items()
        if "disk_bytes_per_vector" in b
    )
    return [
        f"## qdrant-edge and FAISS, {e['points']:,} points",
        "",
        f'qdrant-edge-py {m.get("qdrant_edge")} (Qdrant\'s segment and shard code in this process; `backend="qdrant-edge"`) '
        "and the FAISS backend on the *same* coarse and full vectors and the same queries. qdrant-edge runs "
        "both stages in one request per query (a nested `Prefetch` on `coarse`, the final `Nearest` on `full`, "
        "HNSW off on `full`), a batch of queries as one `query_batch`; its exact coarse stage is a scan "
        "(`SearchParams(exact=True)`); int8 is scalar quantization of `coarse` with rescoring. Queries/s: best "
        "of 3 runs of the whole batch; ms/query: median of the first 50 queries sent one at a time. "
        "**Threads**: the sweep runs both engines on one thread (qdrant-edge `max_search_threads=1`, FAISS "
        "`omp_set_num_threads(1)`), a per-core comparison; the last rows use every core. On a machine shared "
        "with other busy processes, FAISS's OpenMP threads can spin-wait for a core another job holds and make "
        "the all-core rows slower than the one-thread rows (an earlier run of this script on a loaded machine "
        "fell to about 210 queries/s); qdrant-edge's own thread pool does not suffer that way. Compare the "
        "one-thread rows for a per-core verdict.",
        "",
        table(e["rows"], single=True),
        "",
        f"Build (add, then `optimize()`, which builds the HNSW graph and the int8 codes; save = flush and copy "
        f"the shard into an index directory, open = copy it into a working directory and load it): {builds}.",
        f"Disk bytes per vector of the shard (allocated; the engine's files are sparse), of which the coarse "
        f"HNSW graph: {disk}. (The 384-d float32 full vector alone is 1,536 bytes, the 64-d coarse one 256.)",
        "",
    ]


def render(results: dict) -> str:
    """The Markdown report of a results dict (also: ``--render-only`` rebuilds it from the .json)."""
    m, a, local = results["machine"], results["adaptor"], results.get("local")
    md = [
        "# Qdrant: full-dimension search vs matryoshka coarse + rerank",
        "",
        f"Data: `{results['data']}` (`{DATA_FILE}`: real all-MiniLM-L6-v2 embeddings, 384-d, read from "
        f"`../shared/data` beside the repository). {results['queries']} held-out queries; recall@10 against exact "
        f"384-d search (numpy). Coarse prefix: {results['coarse_dim']} dims of the adaptor "
        f"({a['source']}" + (f", {a['seconds']} s" if "seconds" in a else "") + "), the same in every row.",
        "",
        *render_edge(results),
        "## qdrant-client local mode" + (" and a server" if "server" in results else ""),
        "",
    ]
    if local:
        md += [
            f"**Local mode** ({local['points']:,} points, qdrant-client {m['qdrant_client']}, in memory): qdrant-client's "
            "in-process emulation for tests. It is **not a performance engine**: every stage is brute force in "
            "Python/numpy, queries run one at a time, and it warns above 20,000 points, hence the subset. Its "
            "queries/s measure that emulation, not Qdrant. Worse, its rerank stage re-scores through an id filter "
            "over the whole collection (it brute-forces `full` for every point, then keeps the prefetched ids), so "
            "there the two-stage query costs *more* than one full-dim brute force; a server scores only the "
            "prefetched candidates. What local mode does show: the two-stage query reaches the same recall as the "
            "FAISS backend on the same vectors at every candidate count (tests/test_qdrant_backend.py checks the "
            f"returned ids are identical). Upload of {local['points']:,} points: "
            f"{local['build']['upload_seconds']} s.",
            "",
        ]
    else:
        md += ["**Local mode**: not run (`--no-local`).", ""]
    if "server" in results:
        srv = results["server"]
        md.append(
            f"**Server** ({srv['points']:,} points, Qdrant {srv['build']['server']} at {srv['url']}): the plain "
            "collection is what a user has before migrating (one 384-d HNSW vector)."
        )
    else:
        md.append(
            "**Server**: not run (no `--url` given; no Qdrant server or Docker engine was available on the machine "
            "below), so there are no server queries/s here."
        )
    if results["rows"]:
        md += ["", table(results["rows"])]
    load = results.get("load_average")
    md += [
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['ram_gib']} GiB RAM; Python {m['python']}, numpy {m['numpy']}, "
        f"torch {m['torch']}, faiss {m['faiss']}, qdrant-client {m['qdrant_client']}, qdrant-edge-py "
        f"{m.get('qdrant_edge')}, matryoshka-index {m['matryoshka_index']}. Total run: {results['seconds']} s "
        "(most of it training the adaptor"
        + (", then qdrant-client local mode" if local else "")
        + "); FAISS ran on one OpenMP thread except in the all-core rows of the qdrant-edge table"
        + (f"; load average {load} when it started (other jobs shared the cores: timings are noisy)" if load else "")
        + ".",
        "",
        "Reproduce: `python benchmarks/qdrant_search.py` (add `--url http://localhost:6333` with a server from "
        '`docker/compose.yaml`; qdrant-edge rows need `pip install "matryoshka-index[edge]"`).',
        "",
    ]
    return "\n".join(md)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    p.add_argument("--points", type=int, default=20_000, help="corpus rows in local mode (default 20,000)")
    p.add_argument("--server-points", type=int, default=49_800, help="corpus rows on a server (--url)")
    p.add_argument("--queries", type=int, default=200)
    p.add_argument("--coarse-dim", type=int, default=64)
    p.add_argument("--candidates", default="20,50,100,200")
    p.add_argument("--adaptor", type=Path, help="a trained adaptor directory (default: train one)")
    p.add_argument("--epochs", type=int, default=3, help="training epochs when no --adaptor is given")
    p.add_argument("--url", help="also run against this Qdrant server")
    p.add_argument("--api-key", default=os.environ.get("QDRANT_API_KEY"))
    p.add_argument("--coarse-quantization", choices=["int8", "binary"], default=None)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "qdrant_search")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--render-only", action="store_true", help="rewrite the .md from the existing .json")
    p.add_argument("--edge-points", type=int, default=49_800, help="corpus rows for qdrant-edge and FAISS")
    p.add_argument("--no-edge", action="store_true", help="skip the qdrant-edge / FAISS rows")
    p.add_argument("--no-local", action="store_true", help="skip the qdrant-client local-mode rows")
    args = p.parse_args()
    if args.render_only:
        md = render(json.loads(args.out.with_suffix(".json").read_text()))
        args.out.with_suffix(".md").write_text(md)
        print(md)
        return 0
    args.candidates = [int(c) for c in args.candidates.split(",")]

    path = args.data / DATA_FILE
    if not path.is_file():
        print(f"error: {path} not found; pass --data DIR", file=sys.stderr)
        return 2
    x = np.load(path, mmap_mode="r")
    order = np.random.default_rng(0).permutation(len(x))
    q_rows, rest = order[: args.queries], order[args.queries :]
    queries = l2_normalize(np.asarray(x[np.sort(q_rows)]))
    t_start = time.perf_counter()

    n_local = min(args.points, len(rest))
    corpus_local = l2_normalize(np.asarray(x[np.sort(rest[:n_local])]))
    adaptor, adaptor_info = load_adaptor(args, corpus_local)
    cq = l2_normalize(adaptor.transform(queries, dim=args.coarse_dim))

    def prepare(corpus: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        ids = np.arange(len(corpus), dtype=np.int64)
        coarse = l2_normalize(adaptor.transform(corpus, dim=args.coarse_dim))
        truth = np.argsort(-(queries @ corpus.T), axis=1)[:, :K]
        return ids, coarse, corpus, truth

    results = {
        "benchmark": "qdrant_search",
        "data": str(path.resolve()),
        "queries": len(queries),
        "k": K,
        "coarse_dim": args.coarse_dim,
        "adaptor": adaptor_info,
        "machine": machine(),
        "load_average": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
    }
    if not args.no_edge and edge_version() is not None:
        n_edge = min(args.edge_points, len(rest))
        e_ids, e_coarse, e_full, e_truth = prepare(l2_normalize(np.asarray(x[np.sort(rest[:n_edge])])))
        e_rows, e_builds = edge_rows(args, e_ids, e_coarse, e_full, queries, cq, e_truth)
        results["edge"] = {"points": n_edge, "rows": e_rows, "builds": e_builds}
    rows: list[dict] = []
    if not args.no_local:
        ids, coarse, full, truth = prepare(corpus_local)
        rows, local_build = local_rows(args, ids, coarse, full, queries, cq, truth)
        results["local"] = {"build": local_build, "points": n_local}
    results["rows"] = rows
    if args.url:
        n_server = min(args.server_points, len(rest))
        s_ids, s_coarse, s_full, s_truth = prepare(l2_normalize(np.asarray(x[np.sort(rest[:n_server])])))
        s_rows, s_build = server_rows(args, s_ids, s_coarse, s_full, queries, cq, s_truth)
        rows.extend(s_rows)
        results["server"] = {"url": args.url, "build": s_build, "points": n_server}
    results["seconds"] = round(time.perf_counter() - t_start, 1)

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    md = render(results)
    args.out.with_suffix(".md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
