"""Supervised adaptor ablation: which settings move nDCG@10 of the short prefix on labelled data?

Reads every labelled set under ``../shared/data`` (beside the project root; BEIR layout with ready
embeddings, see its README). For each set: the supervised adaptor is trained on the *train* split's
(query, relevant document) pairs only (``MatryoshkaAdaptor.fit(corpus, queries, positives)``, with
its own validation split and early stopping) and scored on the *test* queries: nDCG@10 of the
m-dim prefix alone (no rerank), for m in {32, 64, 128, 256}, beside full-dim, truncation, PCA and
the unsupervised adaptor. Every variant uses the same rows and seed; one setting changes per row.

Writes ``benchmarks/results/supervised_ablation.md`` and ``.json`` and prints the table.

    python benchmarks/supervised_ablation.py [--data ../shared/data]
"""

from __future__ import annotations

import argparse
import json
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

# One change per row against the library defaults (which the first row uses as they are), and one row
# combining the two changes that helped most at m=64 in a first run.
VARIANTS: dict[str, dict] = {
    "supervised, library defaults": {},
    "ranking_weight=1 (the paper's unit weight)": dict(ranking_weight=1.0),
    "ranking_weight=3": dict(ranking_weight=3.0),
    "ranking_weight=30": dict(ranking_weight=30.0),
    "hard_negatives=2 (mined at full dim)": dict(hard_negatives=2),
    "hard_negatives=8 (mined at full dim)": dict(hard_negatives=8),
    "hidden_dim=1536 (4x wider MLP)": dict(hidden_dim=1536),
    "hidden_dim=96 (narrow MLP)": dict(hidden_dim=96),
    "epochs=8": dict(epochs=8),
    "weight_decay=0.1": dict(weight_decay=0.1),
    "temperature=0.02": dict(temperature=0.02),
    "two changes: hidden_dim=1536 and epochs=8": dict(hidden_dim=1536, epochs=8),
}


def machine() -> dict:
    return {**adaptor_quality_machine(), "date": time.strftime("%Y-%m-%d")}


def run_set(path: Path, seed: int) -> dict:
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
    for name, params in VARIANTS.items():
        t0 = time.perf_counter()
        sup = MatryoshkaAdaptor(seed=seed, quiet=True, **params).fit(corpus, queries[q_rows], corpus[d_rows])
        rows[name] = {
            "ndcg": ndcg(sup.transform(test_q), sup.transform(corpus)),
            "seconds": round(time.perf_counter() - t0, 1),
            "params": params,
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
        "rows": rows,
    }


def markdown(sets: list[dict], info: dict, defaults: dict) -> str:
    lines = [
        "# Supervised adaptor ablation",
        "",
        "Produced by `benchmarks/supervised_ablation.py` on the labelled sets in `../shared/data` (not in this "
        f"repository). Machine: {info['cpu']}, {info['cores']} cores, torch {info['torch']} "
        f"({info['torch_threads']} threads), matryoshka-index {info['matryoshka_index']}, {info['date']}.",
        "",
        "nDCG@10 on the **test** queries with the m-dim prefix alone (no rerank); percentages are of the original "
        "full-dim nDCG@10. Supervised rows train on the train split's (query, relevant document) pairs only, with "
        "the unsupervised terms on, a held-out share of the pairs for validation and early stopping; each row "
        f"changes one setting of the library defaults (`ranking_weight={defaults['ranking_weight']}`, "
        f"`hard_negatives={defaults['hard_negatives']}`, `hidden_dim`=input dim, `epochs={defaults['epochs']}`).",
    ]
    for s in sets:
        full = s["rows"]["full-dim (original)"]["ndcg"][s["full_dim"]]
        lines += [
            "",
            f"## `{s['name']}`: {s['corpus']:,} documents, {s['test_queries']:,} test queries, "
            f"{s['train_pairs']:,} training pairs",
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
    args = parser.parse_args()
    if not args.data.is_dir():
        print(f"data not found under {args.data}; pass --data", file=sys.stderr)
        return 2
    paths = discover_labelled_sets(args.data)
    if not paths:
        print(f"no labelled set under {args.data}", file=sys.stderr)
        return 2
    sets = []
    for p in paths:
        print(f"== {p.name}", flush=True)
        sets.append(run_set(p, args.seed))
    info = machine()
    defaults = MatryoshkaAdaptor().get_params()
    md = markdown(sets, info, defaults)
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(args.out / "supervised_ablation.md", md.encode())
    dump = {"machine": info, "variants": VARIANTS, "sets": sets}
    atomic_write_bytes(args.out / "supervised_ablation.json", (json.dumps(dump, indent=2) + "\n").encode())
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
