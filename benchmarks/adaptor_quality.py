"""Adaptor quality: does a short prefix of f(e) find the right candidates?

Reads the real embeddings in ``../shared/data`` (beside the project root; see its README):

* ``docstrings-minilm384-50k.npy`` (ANN view): 500 held-out rows are the queries, the other 49,500 the
  corpus. For m in {32, 64, 128}: recall@10 of "coarse top-C by the m-dim prefix, rerank the C
  candidates with the original 384-d vectors" against exact 384-d search, C in {10, 50, 100, 200},
  for plain truncation, PCA, and the adaptor (plus ablation variants at m = 64).
* ``dev-docstring-qa/`` (labelled): nDCG@10 on the test queries with the adapted m-dim prefix alone
  (no rerank), adaptor trained unsupervised on that corpus.

Writes ``benchmarks/results/adaptor_quality.md`` and ``.json`` and prints the tables.

    python benchmarks/adaptor_quality.py [--data ../shared/data] [--quick]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from _machine import cpu_model  # benchmarks/_machine.py (the script's own folder)

from matryoshka_index import MatryoshkaAdaptor, __version__
from matryoshka_index.adaptor.model import pca_rotation
from matryoshka_index.metrics import ndcg_at_k, neighbour_recall
from matryoshka_index.validation import l2_normalize

ROOT = Path(__file__).resolve().parent.parent
DIMS = (32, 64, 128)
CANDIDATES = (10, 50, 100, 200)
C_LADDER = (10, 20, 30, 40, 50, 60, 70, 80, 90, 100, 120, 140, 160, 180, 200, 250, 300, 400, 500)

# Ablation variants (all trained on the same rows with the same seed). The default row is whatever
# MatryoshkaAdaptor() does with no arguments.
VARIANTS: dict[str, dict] = {
    "adaptor (default)": {},
    "identity init, paper's 3 losses": dict(init="identity", listwise_weight=0.0),
    "PCA init, paper's 3 losses": dict(init="pca", listwise_weight=0.0),
    "PCA init, listwise + reconstruction only": dict(init="pca", pairwise_weight=0.0, topk_weight=0.0),
    "PCA init, all terms, no reconstruction": dict(init="pca", reconstruction_weight=0.0),
}


def machine() -> dict:
    cpu = cpu_model()
    import os

    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "matryoshka_index": __version__,
    }


def top_ids(q: np.ndarray, x: np.ndarray, k: int) -> np.ndarray:
    """Exact top-k ids by inner product, best first."""
    out = np.empty((len(q), k), dtype=np.int64)
    for s in range(0, len(q), 256):
        sims = q[s : s + 256] @ x.T
        part = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(sims, part, 1), axis=1)
        out[s : s + 256] = np.take_along_axis(part, order, 1)
    return out


def coarse_rerank_recall(
    coarse_q: np.ndarray, coarse_x: np.ndarray, full_q: np.ndarray, full_x: np.ndarray, truth: np.ndarray
) -> dict[int, float]:
    """recall@10 of coarse top-C then exact rerank, for each C in CANDIDATES and C_LADDER."""
    cmax = max(max(CANDIDATES), max(C_LADDER))
    cand = top_ids(l2_normalize(coarse_q), l2_normalize(coarse_x), cmax)
    out = {}
    for c in sorted(set(CANDIDATES) | set(C_LADDER)):
        ids = cand[:, :c]
        scores = np.einsum("qd,qcd->qc", full_q, full_x[ids])
        best = np.take_along_axis(ids, np.argsort(-scores, axis=1)[:, :10], 1)
        out[c] = neighbour_recall(best, truth, 10)
    return out


def needed_c(curve: dict[int, float], target: float = 0.95) -> int | None:
    return next((c for c in C_LADDER if curve[c] >= target), None)


def ann_section(data: Path, quick: bool) -> tuple[dict, dict]:
    x = np.load(data / "docstrings-minilm384-50k.npy").astype(np.float32)
    rng = np.random.default_rng(0)
    perm = rng.permutation(len(x))
    q, corpus = x[perm[:500]], x[perm[500:]]
    truth = top_ids(q, corpus, 10)
    results: dict = {"rows": len(corpus), "queries": len(q), "methods": {}}

    def record(name: str, transform, seconds: float | None = None) -> None:
        tq, tx = transform(q), transform(corpus)
        results["methods"][name] = {
            "train_seconds": seconds,
            "recall": {m: coarse_rerank_recall(tq[:, :m], tx[:, :m], q, corpus, truth) for m in DIMS},
        }
        r64 = results["methods"][name]["recall"][64]
        print(f"  {name:45s} m=64 C=100 recall@10 {r64[100]:.3f}  C needed for 0.95: {needed_c(r64)}", flush=True)

    record("truncation", lambda a: a)
    rot = pca_rotation(corpus)
    record("PCA", lambda a: a @ rot)
    variants = {"adaptor (default)": {}} if quick else VARIANTS
    for name, params in variants.items():
        t0 = time.perf_counter()
        adaptor = MatryoshkaAdaptor(seed=0, quiet=True, **params).fit(corpus)
        record(name, adaptor.transform, time.perf_counter() - t0)
        results["methods"][name]["history"] = adaptor.history_.to_dict()
    return results, {}


def labelled_section(data: Path) -> dict:
    d = data / "dev-docstring-qa"
    corpus = np.load(d / "corpus.npy").astype(np.float32)
    queries = np.load(d / "queries.npy").astype(np.float32)
    ids = json.loads((d / "ids.json").read_text())
    split = {}
    for line in (d / "queries.jsonl").read_text().splitlines():
        rec = json.loads(line)
        split[rec["_id"]] = rec.get("split")
    qrels: dict[str, dict[str, float]] = {}
    for line in (d / "qrels" / "test.tsv").read_text().splitlines()[1:]:
        qid, did, score = line.split("\t")
        qrels.setdefault(qid, {})[did] = float(score)
    test_rows = [i for i, qid in enumerate(ids["query_ids"]) if split.get(qid) == "test"]
    q = queries[test_rows]
    qids = [ids["query_ids"][i] for i in test_rows]
    doc_ids = np.array(ids["corpus_ids"])

    def ndcg(tq: np.ndarray, tx: np.ndarray) -> float:
        top = top_ids(l2_normalize(tq), l2_normalize(tx), 10)
        return ndcg_at_k([doc_ids[r] for r in top], qids, qrels, 10)

    out: dict = {"corpus": len(corpus), "test_queries": len(q), "full": ndcg(q, corpus), "methods": {}}
    rot = pca_rotation(corpus)
    t0 = time.perf_counter()
    adaptor = MatryoshkaAdaptor(seed=0, quiet=True).fit(corpus)
    secs = time.perf_counter() - t0
    for name, fn in (("truncation", lambda a: a), ("PCA", lambda a: a @ rot), ("adaptor (default)", adaptor.transform)):
        tq, tx = fn(q), fn(corpus)
        out["methods"][name] = {m: ndcg(tq[:, :m], tx[:, :m]) for m in (*DIMS, 256)}
    out["adaptor_train_seconds"] = secs
    return out


def markdown(ann: dict, lab: dict, info: dict) -> str:
    lines = [
        "# Adaptor quality",
        "",
        "Produced by `benchmarks/adaptor_quality.py` on the real MiniLM embeddings in `../shared/data` "
        "(not in this repository). Machine: "
        f"{info['cpu']}, {info['cores']} cores, torch {info['torch']} ({info['torch_threads']} threads), "
        f"matryoshka-index {info['matryoshka_index']}, {info['date']}.",
        "",
        f"## Coarse-then-rerank recall@10 (docstrings-minilm384-50k: {ann['rows']} rows, {ann['queries']} held-out queries)",
        "",
        "Coarse top-C by cosine of the m-dim prefix, rerank the C candidates with the original 384-d vectors, "
        "compare with exact 384-d top-10. 'C for 0.95' is the smallest C on the ladder "
        f"{C_LADDER[0]}..{C_LADDER[-1]} reaching recall@10 >= 0.95.",
        "",
        "| method | m | " + " | ".join(f"C={c}" for c in CANDIDATES) + " | C for 0.95 | train s |",
        "|---|---|" + "---|" * (len(CANDIDATES) + 2),
    ]
    for name, r in ann["methods"].items():
        for m in DIMS:
            curve = r["recall"][m]
            secs = f"{r['train_seconds']:.1f}" if r["train_seconds"] is not None else "-"
            cells = " | ".join(f"{curve[c]:.3f}" for c in CANDIDATES)
            lines.append(f"| {name} | {m} | {cells} | {needed_c(curve) or '>500'} | {secs} |")
    lines += [
        "",
        f"## nDCG@10 with the prefix alone (dev-docstring-qa test split: {lab['test_queries']} queries, "
        f"{lab['corpus']} documents)",
        "",
        f"Full 384-d: **{lab['full']:.3f}**. The adaptor is trained unsupervised on the corpus embeddings "
        f"({lab['adaptor_train_seconds']:.1f} s); no query is seen in training.",
        "",
        "| method | m=32 | m=64 | m=128 | m=256 |",
        "|---|---|---|---|---|",
    ]
    for name, r in lab["methods"].items():
        lines.append(f"| {name} | " + " | ".join(f"{r[m]:.3f}" for m in (*DIMS, 256)) + " |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--quick", action="store_true", help="default adaptor only, no ablation rows")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    if not (args.data / "docstrings-minilm384-50k.npy").exists():
        print(f"data not found under {args.data}; pass --data", file=sys.stderr)
        return 2
    info = {**machine(), "date": time.strftime("%Y-%m-%d")}
    print(f"reading {args.data}")
    print("ANN view (docstrings-minilm384-50k):")
    ann, _ = ann_section(args.data, args.quick)
    print("labelled view (dev-docstring-qa):")
    lab = labelled_section(args.data)
    text = markdown(ann, lab, info)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "adaptor_quality.md").write_text(text)
    (args.out / "adaptor_quality.json").write_text(
        json.dumps({"machine": info, "ann": ann, "labelled": lab}, indent=2, default=str) + "\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
