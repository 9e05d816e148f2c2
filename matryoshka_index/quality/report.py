"""Markdown tables of a :class:`~matryoshka_index.quality.LabelledReport`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .labels import METHOD_LABELS, METRICS, LabelledResults

_METRIC_TITLES = {
    "ndcg@10": "nDCG@10",
    "recall@100": "recall@100",
    "mrr@10": "MRR@10",
}
# Candidate counts shown in the ANN table (the JSON has every measured one).
_ANN_COLUMNS = (10, 20, 40, 80, 160, 320, 640, 1280)


def _fmt(v: Any, pct_of: float | None = None) -> str:
    if v is None:
        return "–"
    if pct_of:
        return f"{v:.3f} ({v / pct_of:.0%})"
    return f"{v:.3f}"


def _quality_table(report: LabelledResults, metric: str) -> list[str]:
    full = report.full.get(metric)
    head = "| method | " + " | ".join(f"m={m}" for m in report.dims) + f" | full ({report.dim}) |"
    lines = [head, "|---|" + "---|" * (len(report.dims) + 1)]
    lines.append(f"| {METHOD_LABELS['full']} | " + " | ".join("–" for _ in report.dims) + f" | {_fmt(full)} |")
    show_pct = metric == "ndcg@10"
    for method in report.methods:
        cells = [_fmt(report.prefix[method][m].get(metric), full if show_pct else None) for m in report.dims]
        at_full = _fmt(report.prefix[method].get(report.dim, {}).get(metric), full if show_pct else None)
        lines.append(f"| {METHOD_LABELS[method]}, prefix alone | " + " | ".join(cells) + f" | {at_full} |")
    for method, per_dim in report.two_stage.items():
        cells = []
        for m in report.dims:
            e = per_dim.get(m)
            cells.append(
                "–" if e is None else f"{_fmt(e.get(metric), full if show_pct else None)}, C={e['candidates']}"
            )
        lines.append(f"| two-stage index, {METHOD_LABELS[method]} coarse | " + " | ".join(cells) + " | – |")
    return lines


def _ann_table(report: LabelledResults) -> list[str]:
    cols = sorted({p["candidates"] for curves in report.ann.values() for c in curves.values() for p in c})
    shown = [c for c in _ANN_COLUMNS if c in cols] or cols[:8]
    lines = [
        "| method | m | " + " | ".join(f"C={c}" for c in shown) + " | C for 0.99 | q/s at that C |",
        "|---|---|" + "---|" * (len(shown) + 2),
    ]
    for method, curves in report.ann.items():
        for m, curve in curves.items():
            by_c = {p["candidates"]: p for p in curve}
            cells = [f"{by_c[c]['recall@10']:.3f}" if c in by_c else "–" for c in shown]
            hit = next((p for p in curve if p["recall@10"] >= 0.99), None)
            need = str(hit["candidates"]) if hit else f">{curve[-1]['candidates']}" if curve else "–"
            qps = f"{hit['qps']:.0f}" if hit else "–"
            lines.append(f"| {METHOD_LABELS[method]} | {m} | " + " | ".join(cells) + f" | {need} | {qps} |")
    return lines


def _codes_table(report: LabelledResults) -> list[str]:
    lines = [
        "| method | m | code | resident B/vector | candidates | recall@10 | nDCG@10 | queries/s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(report.codes, key=lambda r: (r["bytes_per_vector"], -r["qps"])):
        lines.append(
            f"| {METHOD_LABELS.get(r['method'], r['method'])} | {r['coarse_dim']} | {r['code']} | "
            f"{r['bytes_per_vector']:g} | {r['candidates']} | {r['recall@10']:.3f} | {r['ndcg@10']:.4f} | "
            f"{r['qps']:,.0f} |"
        )
    return lines


def report_markdown(report: LabelledResults, advice: Sequence[Any] = (), *, title: str | None = None) -> str:
    """The report as markdown: one table per metric, the ANN sweep, training facts, advice."""
    name = f": {report.name}" if report.name else ""
    env = report.environment
    lines = [
        f"# {title or 'Retrieval quality by dimension' + name}",
        "",
        f"{report.n_corpus:,} documents, {report.n_test_queries:,} test queries"
        + (
            f", supervised adaptor trained on {report.n_train_pairs:,} (query, relevant document) pairs of "
            f"{report.n_train_queries:,} training queries (disjoint from the test queries)"
            if report.n_train_queries
            else ""
        )
        + f"; {report.dim}-d embeddings, cosine similarity.",
        "",
        "Each cell is measured on the test queries. *Prefix alone*: retrieval with the first m coordinates of "
        "each method's vectors (what the Matryoshka-Adaptor paper reports). *Two-stage index*: "
        "`MatryoshkaIndex` with an m-dim coarse stage and rerank by the original full vectors, at its calibrated "
        "default candidate count C. Percentages are of the full-dim nDCG@10.",
        "",
    ]
    for metric in METRICS:
        if metric not in report.full:
            continue
        lines += [f"## {_METRIC_TITLES[metric]}", "", *_quality_table(report, metric), ""]
    if report.ann:
        exact = f"{report.exact_qps:.0f}" if report.exact_qps else "–"
        lines += [
            "## ANN view: recall@10 against exact full-dim search",
            "",
            f"Two-stage search with C candidates; exact full-dim search runs at {exact} queries/s on the same "
            "queries (median of the measurements taken beside each sweep). 'C for 0.99' is the smallest measured "
            "C with recall@10 >= 0.99.",
            "",
            *_ann_table(report),
            "",
        ]
    if report.codes:
        lines += [
            "## Coarse codes: resident bytes/vector against queries/s",
            "",
            "Each two-stage index (flat coarse stage) at its calibrated candidates; resident bytes measured on the "
            f"built index (codes, id map, factors; the full vectors stay memory-mapped). Full-dim float32: "
            f"{4 * report.dim} B/vector.",
            "",
            *_codes_table(report),
            "",
        ]
    if advice:
        lines += ["## Dimension advisor", ""]
        for a in advice:
            lines += ["```", str(a), "```", ""]
    if report.training:
        lines += ["## Training", ""]
        for method, info in report.training.items():
            hist = info.get("history") or {}
            secs = info.get("seconds")
            parts = [f"{secs:.0f} s" if secs is not None else "fitted by the caller"]
            if info.get("pairs"):
                parts.append(f"{info['pairs']} pairs")
            if hist:
                parts.append(f"best epoch {hist.get('best_epoch')} of {len(hist.get('val_loss', []))}")
                if hist.get("stopped_early"):
                    parts.append("stopped early")
            params = info.get("params") or {}
            shown = [k for k in _SHOWN_PARAMS if k != "ranking_weight" or method == "supervised"]
            changed = {k: params[k] for k in shown if k in params}
            lines.append(f"- {METHOD_LABELS[method]}: " + ", ".join(parts) + (f"; {changed}" if changed else ""))
        lines.append("")
    if env:
        lines += [
            f"Machine: {env.get('cpu')}, {env.get('cores')} cores, torch {env.get('torch')} "
            f"({env.get('torch_threads')} threads), matryoshka-index {env.get('matryoshka_index')}, {env.get('date')}. "
            "Queries/s are the best of repeated batch searches and depend on the machine and its load.",
            "",
        ]
    for note in report.notes:
        lines += [note, ""]
    return "\n".join(lines).rstrip() + "\n"


_SHOWN_PARAMS = ("ranking_weight", "listwise_weight", "temperature", "epochs", "init")
