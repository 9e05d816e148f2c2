"""The dimension advisor: the smallest coarse dimension and candidate count that meet a quality budget.

It reads the ANN sweep of a :class:`~matryoshka_index.quality.LabelledReport` (the two-stage index's
real searches on the user's test queries) and picks, over every measured method, the smallest prefix
length m and then the smallest candidate count C whose result meets the budget; ties go to the faster
method. Budgets: ``max_ndcg_loss`` (nDCG@10 at least ``(1 - loss) x`` the full-dim nDCG@10) or
``min_recall`` (recall@10 against exact full-dim search). Only measured points are considered: the
answer is as fine as the report's ``dims`` and candidates ladder.

``prefix_only=True`` asks for the smallest m whose prefix *alone* meets the budget (an index built
with ``rerank=None``, a ``mindex migrate --prefix-only --dim M``): nDCG@10 from the report's
per-dimension table of each method, recall@10 from the sweep's point at 10 candidates (the
prefix's own top 10). Every advice says the bytes saved a vector and for the whole collection
(``collection_size``, default the report's corpus): the RAM of the search vectors with the two-stage
index (the full vectors stay on disk), disk and RAM with the prefix alone (there are no full vectors).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from ..calibration import OperatingPoint, OperatingPoints
from ..errors import InputError
from ..storage import human_bytes
from ..validation import check_positive_int
from .evaluate import LabelledReport
from .frontier import Frontier, frontier
from .labels import METHOD_LABELS

_BUDGET_KEYS = {"ndcg-loss": "max_ndcg_loss", "ndcg_loss": "max_ndcg_loss", "recall": "min_recall"}


@dataclass(frozen=True, kw_only=True)
class Advice:
    """What :func:`advise` found. ``met`` is False when no measured point meets the budget; the
    other fields then describe the closest point (the one with the best value of the budget's metric)."""

    budget: str
    met: bool
    method: str | None = None
    coarse_dim: int | None = None
    candidates: int | None = None
    ndcg_at_10: float | None = None
    recall_at_10: float | None = None
    full_ndcg_at_10: float
    qps: float | None = None
    exact_qps: float | None
    full_dim: int
    coarse_bytes_per_vector: float | None = None  # measured when the report has code rows, else 4 x m
    full_bytes_per_vector: int
    vectors: int = 0
    """The collection size the total saving is given for (``collection_size``, default the report's corpus)."""
    prefix_only: bool = False
    """The prefix alone meets the budget (no rerank, no full vectors kept); ``candidates`` is then None."""

    @property
    def bytes_saved_per_vector(self) -> float | None:
        """Full-dim float32 bytes minus the coarse bytes: in RAM (two-stage), on disk and in RAM (prefix only)."""
        if self.coarse_bytes_per_vector is None:
            return None
        return self.full_bytes_per_vector - self.coarse_bytes_per_vector

    @property
    def bytes_saved(self) -> float | None:
        """:attr:`bytes_saved_per_vector` times :attr:`vectors`."""
        per = self.bytes_saved_per_vector
        return None if per is None else per * self.vectors

    @property
    def memory_saving(self) -> float | None:
        """Share of the in-RAM search vectors saved: 1 - coarse bytes / full bytes (full vectors can stay on disk)."""
        if self.coarse_bytes_per_vector is None:
            return None
        return 1.0 - self.coarse_bytes_per_vector / self.full_bytes_per_vector

    @property
    def speedup(self) -> float | None:
        if self.qps is None or not self.exact_qps:
            return None
        return self.qps / self.exact_qps

    def to_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "memory_saving": self.memory_saving,
            "speedup": self.speedup,
            "bytes_saved_per_vector": self.bytes_saved_per_vector,
            "bytes_saved": self.bytes_saved,
        }

    def _saved_line(self) -> str:
        where = "on disk and in RAM" if self.prefix_only else "in RAM"
        return (
            f"  saves {self.bytes_saved_per_vector:g} B/vector {where}, {human_bytes(self.bytes_saved or 0)} for "
            f"{self.vectors:,} vectors"
        )

    def __str__(self) -> str:
        if self.method is None:
            if self.prefix_only:
                return f"{self.budget}: no measurement of the prefix alone in the report"
            return f"{self.budget}: no two-stage measurement in the report (run the evaluation with ann=True)"
        head = "meets" if self.met else "NOT met by any measured point; closest"
        if self.prefix_only:
            recall = "" if self.recall_at_10 is None else f", recall@10 vs exact {self.recall_at_10:.3f}"
            ndcg = (
                ""
                if self.ndcg_at_10 is None
                else f"  nDCG@10 {self.ndcg_at_10:.4f} ({self.ndcg_at_10 / self.full_ndcg_at_10:.1%} of full-dim "
                f"{self.full_ndcg_at_10:.4f}){recall}"
            )
            return "\n".join(
                [
                    f"{self.budget}: {head}: the prefix alone at dim {self.coarse_dim} "
                    f"({METHOD_LABELS.get(self.method, self.method)}; rerank=None, no full vectors kept)",
                    *([ndcg] if ndcg else [f"  recall@10 vs exact {self.recall_at_10:.3f}"]),
                    f"  storage: {self.coarse_bytes_per_vector:g} B/vector instead of {self.full_bytes_per_vector} "
                    "B/vector at full dim",
                    self._saved_line(),
                ]
            )
        lines = [
            f"{self.budget}: {head}: coarse dim {self.coarse_dim} with {self.candidates} candidates "
            f"({METHOD_LABELS.get(self.method, self.method)})",
            f"  nDCG@10 {self.ndcg_at_10:.4f} ({self.ndcg_at_10 / self.full_ndcg_at_10:.1%} of full-dim "
            f"{self.full_ndcg_at_10:.4f}), recall@10 vs exact {self.recall_at_10:.3f}",
            f"  memory: {self.coarse_bytes_per_vector:g} B/vector in the coarse index instead of "
            f"{self.full_bytes_per_vector} B/vector at full dim ({self.memory_saving:.0%} less in RAM; the "
            f"full vectors are only read for the {self.candidates} candidates per query)",
            self._saved_line(),
        ]
        if self.speedup is not None:
            lines.append(
                f"  time: {self.qps:.0f} queries/s vs {self.exact_qps:.0f} for exact full-dim search "
                f"(x{self.speedup:.2f}, timed side by side on this run's machine)"
            )
            if self.speedup < 1:
                lines.append(
                    "  (slower than exact search here: a brute-force scan of a small corpus is one fast matrix "
                    "product; the two-stage index pays off in memory, and in time on large corpora)"
                )
        return "\n".join(lines)


def parse_budget(text: str) -> dict[str, float]:
    """``"ndcg-loss=1%"`` -> ``{"max_ndcg_loss": 0.01}``; ``"recall=0.99"`` -> ``{"min_recall": 0.99}``."""
    key, sep, value = str(text).partition("=")
    key = key.strip().lower().removesuffix("@10")
    if not sep or key not in _BUDGET_KEYS:
        raise InputError(f"advise: expected 'ndcg-loss=1%' or 'recall=0.99', got {text!r}")
    value = value.strip()
    try:
        v = float(value[:-1]) / 100 if value.endswith("%") else float(value)
    except ValueError:
        raise InputError(f"advise: {value!r} is not a number (e.g. 1% or 0.01)") from None
    return {_BUDGET_KEYS[key]: v}


def _budget(report: LabelledReport, max_ndcg_loss: float | None, min_recall: float | None) -> tuple[float, str, str]:
    """``(threshold, metric key, wording)`` of exactly one budget."""
    if (max_ndcg_loss is None) == (min_recall is None):
        raise InputError("advise: give exactly one budget, max_ndcg_loss (e.g. 0.01) or min_recall (e.g. 0.99)")
    if max_ndcg_loss is not None:
        loss = float(max_ndcg_loss)
        if not 0 <= loss < 1:
            raise InputError(f"max_ndcg_loss: must be a fraction in [0, 1), got {max_ndcg_loss!r} (1% is 0.01)")
        threshold = (1 - loss) * report.full["ndcg@10"]
        return threshold, "ndcg@10", f"nDCG@10 loss <= {loss:.1%} (nDCG@10 >= {threshold:.4f})"
    threshold = float(min_recall)  # type: ignore[arg-type]
    if not 0 < threshold <= 1:
        raise InputError(f"min_recall: must be in (0, 1], got {min_recall!r}")
    return threshold, "recall@10", f"recall@10 >= {threshold:g}"


def _methods(report: LabelledReport, methods: Sequence[str] | None, have: list[str], what: str) -> list[str]:
    chosen = have if methods is None else list(methods)
    unknown = [m for m in chosen if m not in have]
    if unknown:
        raise InputError(f"methods: {unknown[0]!r} has no {what} measurement in this report; have {have}")
    return chosen


def advise_frontier(report: LabelledReport, *, methods: Sequence[str] | None = None, **budget: float) -> Frontier:
    """The memory / speed frontier of the measured coarse codes (``evaluate_labelled(codes=...)``) for one budget.

    ``budget``: ``max_ndcg_loss=`` or ``min_recall=``, as for :func:`advise` (what :func:`parse_budget`
    returns). Every (method, m, code) row of :attr:`LabelledReport.codes` that meets it at its
    calibrated candidates, fewest resident bytes first, with the frontier marked: no other row
    meeting the budget has fewer bytes and more queries/s.
    """
    unknown = sorted(set(budget) - {"max_ndcg_loss", "min_recall"})
    if unknown:
        raise InputError(f"advise_frontier: unknown budget {unknown[0]!r}; give max_ndcg_loss= or min_recall=")
    threshold, key, wording = _budget(report, budget.get("max_ndcg_loss"), budget.get("min_recall"))
    have = list(dict.fromkeys(r["method"] for r in report.codes))
    chosen = _methods(report, methods, have, "code") if report.codes else []
    return frontier(
        [r for r in report.codes if r["method"] in chosen],
        threshold=threshold,
        key=key,
        budget=wording,
        full_bytes_per_vector=4 * report.dim,
        exact_qps=report.exact_qps,
    )


def advise(
    report: LabelledReport,
    *,
    max_ndcg_loss: float | None = None,
    min_recall: float | None = None,
    methods: Sequence[str] | None = None,
    collection_size: int | None = None,
    prefix_only: bool = False,
) -> Advice:
    """The smallest (coarse dim, candidates) of the two-stage index meeting one budget on this report's data.

    Give exactly one of ``max_ndcg_loss`` (a fraction: 0.01 = lose at most 1% of full-dim nDCG@10)
    or ``min_recall`` (recall@10 against exact full-dim search, e.g. 0.99). ``methods`` restricts the
    coarse methods considered (default: all in the report). ``collection_size``: vectors the total
    bytes saved is given for (default: the report's corpus). ``prefix_only``: the smallest prefix
    length whose prefix alone meets the budget (see the module docstring).
    """
    threshold, key, budget = _budget(report, max_ndcg_loss, min_recall)
    full_ndcg = report.full["ndcg@10"]
    vectors = report.n_corpus if collection_size is None else check_positive_int(collection_size, "collection_size")
    if prefix_only:
        return _advise_prefix_only(report, threshold, key, budget, methods, vectors)
    chosen = _methods(report, methods, list(report.ann), "ANN")

    points = OperatingPoints()
    for method in chosen:
        for m, curve in report.ann[method].items():
            for p in curve:
                extra = {"method": method, "coarse_dim": m, "ndcg@10": p["ndcg@10"], "qps": p["qps"]}
                points.add(OperatingPoint(int(p["candidates"]), recall=p["recall@10"], extra=extra))
    if not len(points):
        return Advice(  # nothing measured: no point to describe
            budget=budget,
            met=False,
            full_ndcg_at_10=full_ndcg,
            exact_qps=report.exact_qps,
            full_dim=report.dim,
            full_bytes_per_vector=4 * report.dim,
            vectors=vectors,
        )

    # The smallest coarse dim, then the fewest candidates, then the fastest; meeting the budget up to
    # float rounding. When none meets it: the best value, then the smallest settings.
    def value(pt: OperatingPoint) -> float:
        return pt.value(key)

    best = points.smallest_meeting(
        threshold, value, order=lambda pt: (pt.extra["coarse_dim"], pt.candidates, -pt.extra["qps"])
    )
    met = best is not None
    if best is None:
        best = max(points, key=lambda pt: (value(pt), -pt.extra["coarse_dim"], -pt.candidates))
    method, m = best.extra["method"], best.extra["coarse_dim"]
    measured = [
        r["bytes_per_vector"] for r in report.codes if (r["method"], r["coarse_dim"], r["code"]) == (method, m, "float")
    ]
    return Advice(
        budget=budget,
        met=met,
        method=method,
        coarse_dim=int(m),
        candidates=int(best.candidates),
        ndcg_at_10=float(best.extra["ndcg@10"]),
        recall_at_10=float(best.recall),
        full_ndcg_at_10=full_ndcg,
        qps=float(best.extra["qps"]),
        exact_qps=report.exact_qps_at.get(method, {}).get(m, report.exact_qps),
        full_dim=report.dim,
        coarse_bytes_per_vector=measured[0] if measured else 4 * int(m),
        full_bytes_per_vector=4 * report.dim,
        vectors=vectors,
    )


def _advise_prefix_only(
    report: LabelledReport, threshold: float, key: str, budget: str, methods: Sequence[str] | None, vectors: int
) -> Advice:
    """The smallest m (then the best value) whose prefix alone meets the budget; see :func:`advise`."""
    points = []  # (m, value, method, ndcg, recall)
    if key == "ndcg@10":
        chosen = _methods(report, methods, list(report.prefix), "prefix")
        for method in chosen:
            for m, row in report.prefix[method].items():
                if int(m) < report.dim:  # m = dim is the method's full-dim vectors, not a prefix
                    points.append((int(m), float(row["ndcg@10"]), method, float(row["ndcg@10"]), None))
    else:  # recall@10 of the prefix alone: the sweep's point at 10 candidates is the prefix's own top 10
        chosen = _methods(report, methods, list(report.ann), "ANN")
        for method in chosen:
            for m, curve in report.ann[method].items():
                for p in curve:
                    if int(p["candidates"]) == 10:
                        points.append((int(m), float(p["recall@10"]), method, None, float(p["recall@10"])))
    facts = {
        "budget": budget,
        "full_ndcg_at_10": report.full["ndcg@10"],
        "exact_qps": report.exact_qps,
        "full_dim": report.dim,
        "full_bytes_per_vector": 4 * report.dim,
        "vectors": vectors,
        "prefix_only": True,
    }
    if not points:
        return Advice(met=False, **facts)
    meeting = [p for p in points if p[1] >= threshold - 1e-12]
    met = bool(meeting)
    m, _, method, ndcg, recall = (
        min(meeting, key=lambda p: (p[0], -p[1])) if meeting else max(points, key=lambda p: (p[1], -p[0]))
    )
    return Advice(
        met=met,
        method=method,
        coarse_dim=m,
        ndcg_at_10=ndcg,
        recall_at_10=recall,
        coarse_bytes_per_vector=4 * m,  # float32 prefix; a coded one is smaller
        **facts,
    )
