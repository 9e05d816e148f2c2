"""Shrink for good (issue 23) on a real labelled set: what a prefix-only migration predicts and keeps.

Loads a BEIR-layout set (default ``../shared/data/dev-multilingual-qa``) into a qdrant-client local-mode
collection (in memory: vector ``emb``, cosine; point id = corpus row; payload = the corpus id), trains one
unsupervised adaptor on the corpus (what the migration would train: its sample holds every point), then
for each ``--dims`` M runs
``migrate_collection(prefix_only=True, coarse_dim=M)`` twice: with the test split's queries and qrels
(nDCG@10, the user's own labelled sample) and without (recall@10 against exact full-dim search on
sampled points), into a local-mode collection and into a qdrant-edge shard (``--targets``). Each row:
the quality the plan predicted, the same metric measured on the migrated target, full-dim nDCG@10,
the bytes saved. Then the same prefix as a built index (FAISS and qdrant-edge,
``rerank=None``) beside the two-stage index: bytes on disk per vector, measured from the saved directory.

    python benchmarks/prefix_only.py --dims 32,64,128 --epochs 2

Writes ``benchmarks/results/prefix_only.md`` (+ ``.json``) with the commit, the command line, versions,
threads and the load average (the machine is shared: timings are not the point here).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _machine import cpu_model  # noqa: E402


def _dir_bytes(path: Path) -> int:
    """Blocks the saved index occupies (sparse segment files count what they use), its adaptor aside."""
    from matryoshka_index.storage import allocated_bytes

    adaptor = path / "adaptor"
    return allocated_bytes(path) - (allocated_bytes(adaptor) if adaptor.exists() else 0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(HERE.parent.parent / "shared" / "data" / "dev-multilingual-qa"))
    ap.add_argument("--dims", default="32,64,128")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--recall-queries", type=int, default=200)
    ap.add_argument(
        "--targets", default="local,qdrant-edge", help="migration targets: local (a collection), qdrant-edge"
    )
    ap.add_argument("--out", default=str(HERE / "results" / "prefix_only"))
    args = ap.parse_args()

    import faiss
    import qdrant_client
    from qdrant_client import QdrantClient
    from qdrant_client import models as qm

    from matryoshka_index import MatryoshkaAdaptor, MatryoshkaIndex, __version__, migrate_collection
    from matryoshka_index.metrics import ndcg_at_k
    from matryoshka_index.quality.data import load_beir
    from matryoshka_index.threads import thread_count

    threads = thread_count()
    data = load_beir(args.data)
    corpus = np.asarray(data.corpus, dtype=np.float32)
    test_ids = sorted(data.qrels)
    rows = {qid: i for i, qid in enumerate(data.query_ids)}
    queries = np.asarray(data.queries[[rows[q] for q in test_ids]], dtype=np.float32)
    point_of = {cid: i for i, cid in enumerate(data.corpus_ids)}
    qrels = {q: {str(point_of[d]): r for d, r in docs.items()} for q, docs in data.qrels.items()}

    client = QdrantClient(":memory:")
    client.create_collection(
        "docs", vectors_config={"emb": qm.VectorParams(size=corpus.shape[1], distance=qm.Distance.COSINE)}
    )
    for start in range(0, len(corpus), 1000):
        sl = slice(start, start + 1000)
        ids = list(range(start, min(start + 1000, len(corpus))))
        client.upsert(
            "docs",
            qm.Batch(
                ids=ids, vectors={"emb": corpus[sl].tolist()}, payloads=[{"doc": data.corpus_ids[i]} for i in ids]
            ),
        )

    load_before = os.getloadavg()
    t0 = time.perf_counter()
    adaptor = MatryoshkaAdaptor(epochs=args.epochs, seed=0, quiet=True).fit(corpus)
    train_seconds = time.perf_counter() - t0
    results = []
    scratch = tempfile.TemporaryDirectory(prefix="prefix-only-bench-")
    for m, kind, labelled in [
        (int(d), kind, labelled)
        for d in args.dims.split(",")
        for kind in args.targets.split(",")
        for labelled in (True, False)
    ]:
        target = f"docs_prefix{m}" + ("_qrels" if labelled else "_recall")
        edge_path = Path(scratch.name) / target if kind == "qdrant-edge" else None
        t0 = time.perf_counter()
        report = migrate_collection(
            client, "docs", vector="emb", coarse_dim=m, prefix_only=True, quiet=True,
            adaptor=adaptor, recall_queries=args.recall_queries, verify_seed=1,
            **({"edge_path": edge_path} if edge_path is not None else {"target": target}),
            **({"queries": queries, "qrels": qrels, "query_ids": test_ids} if labelled else {}),
        )  # fmt: skip
        seconds = time.perf_counter() - t0
        assert report.ok, report.describe()
        plan = report.plan.prefix_only
        q = report.verification.quality
        if edge_path is not None:  # the shard's own config, read back from its file
            vectors = sorted(json.loads((edge_path / "edge_config.json").read_text())["vectors"])
        else:
            vectors = sorted(client.get_collection(target).config.params.vectors)
        results.append(
            {
                "target": kind, "dim": m, "metric": q["metric"], "predicted": q["predicted"], "measured": q["measured"],
                "difference": q["difference"], "queries": q["queries"], "full_dim": plan["quality"].get("full_dim"),
                "bytes_saved_per_point": plan["bytes_saved_per_point"], "bytes_saved": plan["bytes_saved"],
                "points": report.copied_total, "target_vectors": vectors, "seconds": round(seconds, 1),
            }
        )  # fmt: skip
        print(results[-1], flush=True)
    scratch.cleanup()

    builds = []
    with tempfile.TemporaryDirectory() as tmp:
        for m in [int(d) for d in args.dims.split(",")]:
            for backend, rerank in (
                ("faiss", "original"),
                ("faiss", None),
                ("qdrant-edge", "original"),
                ("qdrant-edge", None),
            ):
                idx = MatryoshkaIndex.build(
                    corpus, coarse_dim=m, adaptor=adaptor, rerank=rerank, backend=backend, index="flat", quiet=True
                )
                path = Path(tmp) / f"{backend}-{m}-{rerank}"
                idx.save(path)
                _, found = idx.search(queries, k=10)
                idx.close()
                ranked = [[str(int(i)) for i in row] for row in found]
                builds.append(
                    {
                        "backend": backend, "dim": m, "rerank": rerank, "disk_bytes_per_vector": round(_dir_bytes(path) / len(corpus), 1),
                        "ndcg@10": round(ndcg_at_k(ranked, test_ids, qrels, 10), 4),
                    }
                )  # fmt: skip
                print(builds[-1], flush=True)
    load_after = os.getloadavg()
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=HERE).stdout.strip()
    env = {
        "commit": commit, "command": " ".join(["python", *sys.argv]), "matryoshka_index": __version__,
        "numpy": np.__version__, "faiss": faiss.__version__, "qdrant_client": qdrant_client.__version__ if hasattr(qdrant_client, "__version__") else None,
        "cpu": cpu_model(), "cores": os.cpu_count(), "threads": threads, "load_before": load_before, "load_after": load_after,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "data": args.data, "corpus": list(corpus.shape),
        "test_queries": len(test_ids), "adaptor_train_seconds": round(train_seconds, 1),
        "adaptor_fell_back_to_start": adaptor.history_.fell_back_to_start, "adaptor_guard": adaptor.history_.guard,
    }  # fmt: skip
    # the held-out guard may keep the PCA start: the prefix rows are then PCA's, and the header says so
    kept = (
        "the guard kept its PCA start (the trained adaptor lost on held-out rows), so every prefix here is PCA's"
        if adaptor.history_.fell_back_to_start
        else "the trained adaptor passed its held-out guard against the PCA start"
    )
    lines = [
        "# Prefix-only migration and index on a real labelled set (issue 23, shrink for good)",
        "",
        f"Data: `{Path(args.data).name}`, {len(corpus):,} x {corpus.shape[1]} corpus, {len(test_ids)} test queries with "
        "qrels. qdrant-client local mode (in memory); one unsupervised adaptor trained on the corpus "
        f"({args.epochs} epochs, {train_seconds:.0f} s; {kept}) and given to every run. Commit `{commit[:12]}`, `{env['command']}`, "
        f"matryoshka-index {__version__}, numpy {np.__version__}, faiss {faiss.__version__}; {env['cpu']}, "
        f"{env['cores']} cores, threads {threads}; load average {load_before[0]:.1f} before, {load_after[0]:.1f} after "
        "(a shared machine; no timing is claimed).",
        "",
        "## The migration: the quality the plan predicted and the quality measured on the target",
        "",
        "| target | M | metric | queries | predicted (plan) | measured (target) | difference | full-dim | bytes saved / point | bytes saved (all points) | target vectors |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['target']} | {r['dim']} | {r['metric']} | {r['queries']} | {r['predicted']:.4f} | {r['measured']:.4f} | {r['difference']:+.4f} | "
            f"{r['full_dim']:.4f} | {r['bytes_saved_per_point']} | {r['bytes_saved']:,} | {', '.join(r['target_vectors'])} |"
        )
    lines += [
        "",
        "nDCG@10: the prefix alone ranked against the user's qrels (test split); full-dim: the same queries "
        "searched exactly at 384 dims. recall@10: the prefix alone against exact full-dim search, sampled points "
        "as queries (the point itself left out). The plan scanned every point (the collection is smaller than "
        "`sample`), so its prediction and the target's own search differ only in ties and float rounding (and, "
        "on a qdrant-edge target, in what the shard's HNSW graph on `coarse` misses). Targets: `local`, a "
        "collection in the same local-mode client; `qdrant-edge`, a shard written with `edge_path=` (searched "
        "by the engine after it built its indexes).",
        "",
        "## The same prefix as a built index: disk bytes per vector and nDCG@10 (test split)",
        "",
        "| backend | M | rerank | disk bytes / vector (allocated blocks of the saved directory, adaptor aside) | nDCG@10 |",
        "|---|---|---|---|---|",
    ]
    for b in builds:
        lines.append(
            f"| {b['backend']} | {b['dim']} | {b['rerank']} | {b['disk_bytes_per_vector']:,} | {b['ndcg@10']:.4f} |"
        )
    lines.append("")
    text = "\n".join(lines)
    print(text)
    out = Path(args.out)
    out.with_suffix(".md").write_text(text)
    out.with_suffix(".json").write_text(
        json.dumps({"environment": env, "migrations": results, "builds": builds}, indent=2)
    )


if __name__ == "__main__":
    main()
