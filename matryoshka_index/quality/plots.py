"""Pictures of a labelled report (matplotlib, headless; the optional ``plot`` extra).

matplotlib is imported only when a plot is drawn, with the Agg backend, so the package works
without it and plots need no display.
"""

from __future__ import annotations

import io
import os
from typing import Any

from ..errors import MatryoshkaError
from ..storage import atomic_write_bytes
from .labels import METHOD_LABELS, LabelledResults

COLORS = {
    "full": "black",
    "truncation": "tab:gray",
    "pca": "tab:blue",
    "adaptor": "tab:orange",
    "supervised": "tab:green",
}


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise MatryoshkaError(
            "plots need matplotlib, which is not installed: pip install 'matryoshka-index[plot]'"
        ) from None
    matplotlib.use("Agg", force=True)  # headless: never needs a display
    import matplotlib.pyplot as plt

    return plt


def default_ann_dim(report: LabelledResults) -> int:
    """The prefix length the recall-vs-speed panel shows: 64 when measured, else the middle one."""
    dims = sorted({m for curves in report.ann.values() for m in curves}) or report.dims
    return 64 if 64 in dims else dims[len(dims) // 2]


def plot_report(
    report: LabelledResults,
    path: str | os.PathLike[str],
    *,
    ann_dim: int | None = None,
    title: str | None = None,
    dpi: int = 120,
) -> None:
    """Write a PNG with nDCG@10 vs dimension per method (left) and recall@10 vs queries/s (right)."""
    plt = _pyplot()
    from matplotlib import ticker

    has_ann = any(report.ann.values())
    fig, axes = plt.subplots(1, 2 if has_ann else 1, figsize=(14 if has_ann else 7.5, 5.6), squeeze=False)
    ax = axes[0][0]

    # Left: quality at each prefix length. Solid = prefix alone, dashed = two-stage index (rerank at full dim).
    dims = list(report.dims)
    full = report.full["ndcg@10"]
    ax.axhline(full, color=COLORS["full"], linestyle=":", linewidth=1.5, label=f"{METHOD_LABELS['full']} ({full:.3f})")
    xs_all = sorted({*dims, report.dim})
    for method in report.methods:
        xs = [m for m in xs_all if m in report.prefix[method]]
        ys = [report.prefix[method][m]["ndcg@10"] for m in xs]
        ax.plot(xs, ys, marker="o", color=COLORS.get(method), label=f"{METHOD_LABELS[method]}, prefix alone")
    for method, per_dim in report.two_stage.items():
        ms = [m for m in dims if m in per_dim]
        if ms:
            ax.plot(
                ms,
                [per_dim[m]["ndcg@10"] for m in ms],
                marker="s",
                linestyle="--",
                color=COLORS.get(method),
                alpha=0.85,
                label=f"two-stage index, {METHOD_LABELS[method]} coarse",
            )
    ax.set_xscale("log", base=2)
    ax.set_xticks(xs_all)
    ax.set_xticklabels([f"{m} (full)" if m == report.dim else str(m) for m in xs_all])
    ax.set_xlabel("coarse / prefix dimension m (log scale)")
    ax.set_ylabel(f"nDCG@10 on {report.n_test_queries:,} test queries")
    ax.set_title("Retrieval quality vs dimension")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")

    if has_ann:
        m = default_ann_dim(report) if ann_dim is None else ann_dim
        ax = axes[0][1]
        for method, curves in report.ann.items():
            curve = curves.get(m)
            if not curve:
                continue
            xs = [p["qps"] for p in curve]
            ys = [p["recall@10"] for p in curve]
            ax.plot(xs, ys, marker="o", markersize=4, color=COLORS.get(method), label=METHOD_LABELS[method])
            default = report.two_stage.get(method, {}).get(m)
            if default is not None:
                pt = next((p for p in curve if p["candidates"] == default["candidates"]), None)
                if pt is not None:
                    ax.plot(pt["qps"], pt["recall@10"], marker="*", markersize=15, color=COLORS.get(method),
                            markeredgecolor="black", linestyle="none")  # fmt: skip
        # Label a few candidate counts on the curve of the last method, so the x axis can be read as C.
        last = next((curves[m] for curves in reversed(list(report.ann.values())) if curves.get(m)), None)
        if last:
            for p in [p for p in last if p["candidates"] in (10, 40, 160, 640)]:
                ax.annotate(f"C={p['candidates']}", (p["qps"], p["recall@10"]), textcoords="offset points",
                            xytext=(4, -11), fontsize=7, color="dimgray")  # fmt: skip
        if report.exact_qps:
            ax.plot(report.exact_qps, 1.0, marker="X", markersize=11, color="black", linestyle="none",
                    label=f"exact full-dim search ({report.exact_qps:.0f} q/s)")  # fmt: skip
        ax.plot([], [], marker="*", markersize=12, color="white", markeredgecolor="black", linestyle="none",
                label="calibrated default candidates")  # fmt: skip
        ax.set_xscale("log")
        # plain numbers at 1-2-5 steps: the default minor labels (3x10^3 4x10^3 ...) run into each other
        plain = ticker.FuncFormatter(lambda v, _pos: f"{v:,.0f}")
        ax.xaxis.set_major_formatter(plain)
        ax.xaxis.set_minor_locator(ticker.LogLocator(base=10, subs=(2.0, 5.0)))
        ax.xaxis.set_minor_formatter(plain)
        ax.set_xlabel("queries per second (log scale; more candidates C = slower)")
        ax.set_ylabel("recall@10 vs exact full-dim search")
        ax.set_title(f"Speed vs recall, two-stage index with m = {m}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8, loc="lower left")

    suptitle = (
        title or f"Matryoshka index on {report.name or 'labelled data'}: {report.n_corpus:,} docs, {report.dim}-d"
    )
    fig.suptitle(suptitle, fontsize=13)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
