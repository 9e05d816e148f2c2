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
import warnings
from collections.abc import Callable
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

# One lever per row (issue 23's levers (a)-(d)). The library defaults (row 0) train up to three fits and keep
# the best on the held-out pairs: the supervised fit with the query-to-document term on its queries, the same
# without the unsupervised corpus terms (corpus_term_search), and the unsupervised fit given the same queries
# unlabelled (the guard). The other rows switch the choice off (one fit, corpus_term_search=False and
# guard=False: the PCA-start guard is then off too) to show each candidate and lever alone.
ONE_FIT = dict(corpus_term_search=False, guard=False)
NO_CORPUS = dict(pairwise_weight=0.0, topk_weight=0.0, listwise_weight=0.0, reconstruction_weight=0.0)
VARIANTS: dict[str, dict] = {
    "supervised, library defaults (query term; corpus terms and guard chosen on held-out pairs)": {},
    "previous defaults: one fit, corpus terms on, no query term": dict(**ONE_FIT, query_weight=0.0),
    "(d) one fit, corpus terms on, query term on the labelled queries": dict(ONE_FIT),
    "(a) one fit, no unsupervised corpus terms, query term on": dict(**ONE_FIT, **NO_CORPUS),
    "(c) one fit as (d), matryoshka_weights=(4, 2, 1, 1) (short prefixes weigh more)": dict(
        **ONE_FIT, matryoshka_weights=(4.0, 2.0, 1.0, 1.0)
    ),
    "(d) one fit as (d), epochs=8 (early stopping, patience 2)": dict(**ONE_FIT, epochs=8),
    "(d) one fit as (a), hard_negatives=8 (mined at full dim)": dict(**ONE_FIT, **NO_CORPUS, hard_negatives=8),
    "query_head=False (one function for queries and documents)": dict(query_head=False),
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


def unsupervised_rows(
    corpus: np.ndarray, train_queries: np.ndarray, test_q: np.ndarray, ndcg: Callable, seed: int
) -> dict:
    """The two unsupervised baselines: corpus only, and given the training queries without their labels."""
    out: dict[str, dict] = {}
    t0 = time.perf_counter()
    unsup = MatryoshkaAdaptor(seed=seed, quiet=True).fit(corpus)
    out["adaptor (unsupervised)"] = {
        "ndcg": ndcg(unsup.transform(test_q), unsup.transform(corpus)),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    print(f"  unsupervised: {out['adaptor (unsupervised)']['ndcg']}", flush=True)
    t0 = time.perf_counter()
    with_q = MatryoshkaAdaptor(seed=seed, quiet=True).fit(corpus, queries=train_queries)
    out["adaptor (unsupervised, unlabelled train queries)"] = {
        "ndcg": ndcg(with_q.transform_queries(test_q), with_q.transform(corpus)),
        "seconds": round(time.perf_counter() - t0, 1),
        "guard": with_q.history_.guard,
        "fell_back_to_start": with_q.history_.fell_back_to_start,
    }
    print(f"  unsupervised, unlabelled queries: {out['adaptor (unsupervised, unlabelled train queries)']}", flush=True)
    return out


def run_set(path: Path, seed: int, variants: dict[str, dict], baselines: bool = True) -> dict:
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
    if baselines:
        rows.update(unsupervised_rows(corpus, queries[split.train_rows], test_q, ndcg, seed))
    for name, params in variants.items():
        t0 = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            sup = MatryoshkaAdaptor(seed=seed, quiet=True, **params).fit(corpus, queries[q_rows], corpus[d_rows])
        rows[name] = {
            "ndcg": ndcg(sup.transform_queries(test_q), sup.transform(corpus)),
            "seconds": round(time.perf_counter() - t0, 1),
            "params": params,
            "guard": sup.history_.guard,
            "fell_back_to_start": sup.history_.fell_back_to_start,
            "selection": sup.history_.selection,
            "fell_back_to_unsupervised": sup.history_.fell_back_to_unsupervised,
            "warnings": [str(w.message) for w in caught],
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
        f"`query_head={defaults['query_head']}`, `query_weight={defaults['query_weight']}`, "
        f"`corpus_term_search={defaults['corpus_term_search']}`, `guard={defaults['guard']}`). Rows with a query head "
        "send the test queries through `transform_queries`. Earlier rows (ranking weight, width, epochs, "
        "temperature, weight decay; before the query head): `supervised_ablation_before_query_head.md`.",
    ]
    for s in sets:
        full = {int(m): v for m, v in s["rows"]["full-dim (original)"]["ndcg"].items()}[s["full_dim"]]
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
            nd = {int(m): v for m, v in r["ndcg"].items()}  # JSON keys are strings after --merge
            cells = " | ".join(f"{nd[m]:.3f} ({nd[m] / full:.0%})" for m in (*DIMS, s["full_dim"]))
            secs = "-" if r["seconds"] is None else f"{r['seconds']:.0f}"
            lines.append(f"| {name} | {cells} | {secs} |")
        for n, r in s["rows"].items():
            sel = r.get("selection")
            if sel:
                means = {c: sum(v.values()) / len(v) for c, v in sel["ndcg"].items()}
                lines += [
                    "",
                    f"{n}: kept **{sel['kept']}**; the candidates on {sel['pairs']} held-out training pairs "
                    "(nDCG@10 of their positives, mean over the prefix lengths): "
                    + "; ".join(f"{c} {v:.3f}" for c, v in means.items()),
                ]
        fell = [n for n, r in s["rows"].items() if r.get("fell_back_to_start")]
        if fell:
            lines += [
                "",
                "The guard kept the PCA start (the trained adaptor lost on held-out data) in: " + "; ".join(fell),
            ]
        at64 = {n: {int(m): v for m, v in r["ndcg"].items()}[64] for n, r in s["rows"].items()}
        best = max((n for n in s["rows"] if n in VARIANTS), key=lambda n: at64[n], default=None)
        if best is None:
            continue
        b = at64[best]
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
    parser.add_argument("--no-baselines", action="store_true", help="skip the two unsupervised adaptor rows")
    parser.add_argument("--name", default="supervised_ablation", help="output file stem under --out")
    parser.add_argument(
        "--merge",
        nargs="+",
        type=Path,
        help="combine the JSON files of runs split by set or variant (same commit) into --name; trains nothing",
    )
    args = parser.parse_args()
    if args.merge:
        return merge(args.merge, args.out, args.name)
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
        sets.append(run_set(p, args.seed, variants, baselines=not args.no_baselines))
    info = {**machine(), "load_average_start": load_start}
    defaults = MatryoshkaAdaptor().get_params()
    dump = {"machine": info, "defaults": defaults, "variants": variants, "sets": sets}
    write(dump, args.out, args.name)
    return 0


def write(dump: dict, out: Path, name: str) -> None:
    md = markdown(dump["sets"], dump["machine"], dump["defaults"])
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / f"{name}.md", md.encode())
    atomic_write_bytes(out / f"{name}.json", (json.dumps(dump, indent=2, default=list) + "\n").encode())
    print(md)


def merge(paths: list[Path], out: Path, name: str) -> int:
    """One table per set from runs split across processes: rows in VARIANTS order, each run's machine kept."""
    runs = [json.loads(p.read_text()) for p in paths]
    if len({r["machine"]["commit"] for r in runs}) != 1:
        print("--merge: the runs come from different commits", file=sys.stderr)
        return 2
    by_set: dict[str, dict] = {}
    for r in runs:
        for s in r["sets"]:
            merged = by_set.setdefault(s["name"], {**s, "rows": {}, "load_average_end": []})
            merged["rows"].update(s["rows"])
            merged["load_average_end"].append(s["load_average_end"])
    order = ["full-dim (original)", "truncation", "PCA", "adaptor (unsupervised)"]
    order += ["adaptor (unsupervised, unlabelled train queries)", *VARIANTS]
    for s in by_set.values():
        s["rows"] = {n: s["rows"][n] for n in sorted(s["rows"], key=lambda n: order.index(n) if n in order else 99)}
    machine = {**runs[0]["machine"], "command": " ; ".join(r["machine"]["command"] for r in runs)}
    machine["load_average_start"] = [r["machine"]["load_average_start"] for r in runs]
    variants = {k: v for r in runs for k, v in r["variants"].items()}
    write(
        {"machine": machine, "defaults": runs[0]["defaults"], "variants": variants, "sets": list(by_set.values())},
        out,
        name,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
