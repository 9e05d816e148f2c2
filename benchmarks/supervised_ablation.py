"""Supervised adaptor ablation: which settings move nDCG@10 of the short prefix on labelled data?

Reads every labelled set under ``../shared/data`` (beside the project root; BEIR layout with ready
embeddings, see its README). For each set: the supervised adaptor is trained on the *train* split's
(query, relevant document) pairs only (``MatryoshkaAdaptor.fit(corpus, queries, positives)``, with
its own validation split and early stopping) and scored on the *test* queries: nDCG@10 of the
m-dim prefix alone (no rerank), for m in {32, 64, 128, 256}, beside full-dim, truncation, PCA and
the unsupervised adaptor (corpus only, and given the training queries without their labels). Every
variant uses the same rows and seed; one setting changes per row. The rows of the first ablation
(ranking weight, width, epochs, temperature, before the query head existed) are in
``supervised_ablation_before_query_head.md``.

Writes ``benchmarks/results/supervised_ablation.md`` and ``.json`` and prints the table.

    python benchmarks/supervised_ablation.py [--data ../shared/data] [--sets NAME,...] [--variants N,...]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from matryoshka_index import MatryoshkaAdaptor
from matryoshka_index.adaptor.model import pca_rotation
from matryoshka_index.quality.data import discover_labelled_sets, load_beir, split_queries
from matryoshka_index.quality.evaluate import labelled_metrics, ranked_rows
from matryoshka_index.storage import atomic_write_bytes

sys.path.insert(0, str(Path(__file__).resolve().parent))
from adaptor_quality import machine as adaptor_quality_machine

ROOT = Path(__file__).resolve().parent.parent
DIMS = (32, 64, 128, 256)

# One lever per row against the library defaults (which the first row uses as they are): each of issue
# 23's levers switched off (the query head, the query-to-document term, the unsupervised corpus terms
# as regularisation) or on (mined hard negatives), and the earlier ablation's best row.
VARIANTS: dict[str, dict] = {
    "supervised, library defaults (query head on)": {},
    "query_head=False (one function for queries and documents)": dict(query_head=False),
    "query_weight=0 (no query-to-document listwise term)": dict(query_weight=0.0),
    "no unsupervised corpus terms (pairwise, top-k, listwise, reconstruction = 0)": dict(
        pairwise_weight=0.0, topk_weight=0.0, listwise_weight=0.0, reconstruction_weight=0.0
    ),
    "hard_negatives=8 (mined at full dim)": dict(hard_negatives=8),
    "hidden_dim=1536 and epochs=8 (the first ablation's best)": dict(hidden_dim=1536, epochs=8),
    "parametrisation='orthogonal' (a learned rotation, full-dim inner products exact)": dict(
        parametrisation="orthogonal"
    ),
    "parametrisation='orthogonal', lr=1e-2": dict(parametrisation="orthogonal", lr=1e-2),
}


def machine() -> dict:
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    return {
        **adaptor_quality_machine(),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "commit": commit,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "threads": os.environ.get("MINDEX_THREADS", "library default (the cores free at start)"),
    }


def run_set(path: Path, seed: int, variants: dict[str, dict]) -> dict:
    data = load_beir(path)
    split, test_qrels = split_queries(data.query_ids, data.corpus_ids, data.qrels, data.train_qrels, data.query_splits)
    corpus = np.asarray(data.corpus, dtype=np.float32)
    queries = np.asarray(data.queries, dtype=np.float32)
    q_rows, d_rows = split.training_pairs(data.query_ids, data.corpus_ids)
    # the split discipline: no test query is ever handed to fit()
    assert not np.isin(q_rows, split.test_rows).any()
    test_q, test_ids = queries[split.test_rows], list(split.test_ids)

    def ndcg(q: np.ndarray, c: np.ndarray) -> dict[int, float]:
        out = {}
        for m in (*DIMS, c.shape[1]):
            ranked = ranked_rows(q, c, 10, m)
            out[m] = round(labelled_metrics(ranked, data.corpus_ids, test_ids, test_qrels)["ndcg@10"], 4)
        return out

    rows: dict[str, dict] = {}
    rows["full-dim (original)"] = {"ndcg": ndcg(test_q, corpus), "seconds": None}
    rows["truncation"] = rows["full-dim (original)"]
    rot = pca_rotation(corpus)  # a rotation (no centring), as the index's PCA baseline applies it
    rows["PCA"] = {"ndcg": ndcg(test_q @ rot, corpus @ rot), "seconds": None}
    t0 = time.perf_counter()
    unsup = MatryoshkaAdaptor(seed=seed, quiet=True).fit(corpus)
    rows["adaptor (unsupervised)"] = {
        "ndcg": ndcg(unsup.transform(test_q), unsup.transform(corpus)),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    print(f"  unsupervised: {rows['adaptor (unsupervised)']['ndcg']}", flush=True)
    t0 = time.perf_counter()
    with_q = MatryoshkaAdaptor(seed=seed, quiet=True).fit(corpus, queries=queries[split.train_rows])
    rows["adaptor (unsupervised, unlabelled train queries)"] = {
        "ndcg": ndcg(with_q.transform_queries(test_q), with_q.transform(corpus)),
        "seconds": round(time.perf_counter() - t0, 1),
        "guard": with_q.history_.guard,
        "fell_back_to_start": with_q.history_.fell_back_to_start,
    }
    print(f"  unsupervised, unlabelled queries: {rows['adaptor (unsupervised, unlabelled train queries)']}", flush=True)
    for name, params in variants.items():
        t0 = time.perf_counter()
        sup = MatryoshkaAdaptor(seed=seed, quiet=True, **params).fit(corpus, queries[q_rows], corpus[d_rows])
        rows[name] = {
            "ndcg": ndcg(sup.transform_queries(test_q), sup.transform(corpus)),
            "seconds": round(time.perf_counter() - t0, 1),
            "params": params,
            "guard": sup.history_.guard,
            "fell_back_to_start": sup.history_.fell_back_to_start,
            "best_epoch": sup.history_.best_epoch,
            "epochs_run": len(sup.history_.val_loss),
        }
        print(f"  {name}: {rows[name]['ndcg']} ({rows[name]['seconds']} s)", flush=True)
    return {
        "name": path.name,
        "corpus": len(corpus),
        "test_queries": len(test_ids),
        "train_pairs": len(q_rows),
        "full_dim": corpus.shape[1],
        "load_average_end": [round(v, 2) for v in os.getloadavg()],
        "rows": rows,
    }


def markdown(sets: list[dict], info: dict, defaults: dict) -> str:
    lines = [
        "# Supervised adaptor ablation",
        "",
        "Produced by `benchmarks/supervised_ablation.py` on the labelled sets in `../shared/data` (not in this "
        f"repository). Machine: {info['cpu']}, {info['cores']} cores, torch {info['torch']} "
        f"({info['torch_threads']} threads at the start), matryoshka-index {info['matryoshka_index']}, {info['date']}; "
        f"commit `{info['commit']}`, command `{info['command']}`, threads: {info['threads']}; load average at the "
        f"start {info['load_average_start']}, at the end of each set below (a 2-core machine shared with other "
        "CPU-heavy jobs: training seconds are noisy, nDCG is not).",
        "",
        "nDCG@10 on the **test** queries with the m-dim prefix alone (no rerank); percentages are of the original "
        "full-dim nDCG@10. Supervised rows train on the train split's (query, relevant document) pairs only, with "
        "the unsupervised terms on, a held-out share of the pairs for validation and early stopping; each row "
        f"changes one setting of the library defaults (`ranking_weight={defaults['ranking_weight']}`, "
        f"`hard_negatives={defaults['hard_negatives']}`, `hidden_dim`=input dim, `epochs={defaults['epochs']}`, "
        f"`query_head={defaults['query_head']}`, `query_weight={defaults['query_weight']}`). Rows with a query head "
        "send the test queries through `transform_queries`. Earlier rows (ranking weight, width, epochs, "
        "temperature, weight decay; before the query head): `supervised_ablation_before_query_head.md`.",
    ]
    for s in sets:
        full = s["rows"]["full-dim (original)"]["ndcg"][s["full_dim"]]
        lines += [
            "",
            f"## `{s['name']}`: {s['corpus']:,} documents, {s['test_queries']:,} test queries, "
            f"{s['train_pairs']:,} training pairs (load average at the end {s['load_average_end']})",
            "",
            "| method | " + " | ".join(f"m={m}" for m in DIMS) + f" | full ({s['full_dim']}) | train s |",
            "|---|" + "---|" * (len(DIMS) + 2),
        ]
        for name, r in s["rows"].items():
            if name == "full-dim (original)":
                continue
            cells = " | ".join(f"{r['ndcg'][m]:.3f} ({r['ndcg'][m] / full:.0%})" for m in (*DIMS, s["full_dim"]))
            secs = "-" if r["seconds"] is None else f"{r['seconds']:.0f}"
            lines.append(f"| {name} | {cells} | {secs} |")
        fell = [n for n, r in s["rows"].items() if r.get("fell_back_to_start")]
        if fell:
            lines += [
                "",
                "The guard kept the PCA start (the trained adaptor lost on held-out data) in: " + "; ".join(fell),
            ]
        best = max((n for n in s["rows"] if n in VARIANTS), key=lambda n: s["rows"][n]["ndcg"][64])
        b = s["rows"][best]["ndcg"][64]
        lines += [
            "",
            f"Best supervised row at m=64: **{best}**, {b:.3f} = {b / full:.1%} of full-dim {full:.3f}.",
        ]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sets", help="comma-separated set names (default: every labelled set)")
    parser.add_argument("--variants", help="comma-separated row numbers of VARIANTS, from 0 (default: all)")
    args = parser.parse_args()
    load_start = [round(v, 2) for v in os.getloadavg()]
    names = list(VARIANTS)
    variants = {names[int(i)]: VARIANTS[names[int(i)]] for i in args.variants.split(",")} if args.variants else VARIANTS
    if not args.data.is_dir():
        print(f"data not found under {args.data}; pass --data", file=sys.stderr)
        return 2
    paths = discover_labelled_sets(args.data)
    if args.sets:
        paths = [p for p in paths if p.name in args.sets.split(",")]
    if not paths:
        print(f"no labelled set under {args.data}", file=sys.stderr)
        return 2
    sets = []
    for p in paths:
        print(f"== {p.name}", flush=True)
        sets.append(run_set(p, args.seed, variants))
    info = {**machine(), "load_average_start": load_start}
    defaults = MatryoshkaAdaptor().get_params()
    md = markdown(sets, info, defaults)
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(args.out / "supervised_ablation.md", md.encode())
    dump = {"machine": info, "variants": variants, "sets": sets}
    atomic_write_bytes(args.out / "supervised_ablation.json", (json.dumps(dump, indent=2) + "\n").encode())
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
