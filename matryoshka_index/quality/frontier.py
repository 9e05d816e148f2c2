"""The memory / speed frontier on labelled data: coarse codes measured side by side, and its reading.

``evaluate_labelled(..., codes=["float", "sq8", "pq4x16"])`` builds, for every method and prefix
length m, one flat two-stage index per code (calibrated like the float one, on the training queries
when there are any) and records for each: the resident bytes a vector keeps (measured on the built
index, counted as ``MatryoshkaIndex.build(ram_budget=...)`` counts them: codes, links, id map,
factors; the memory-mapped full vectors apart), the calibrated default candidates, recall@10 against
exact full-dim search, nDCG@10 and queries/s on the test queries. :func:`frontier` reads those rows
for one budget (the advisor's ``max_ndcg_loss`` / ``min_recall``) and marks the frontier: the rows
meeting the budget that no other such row beats on both bytes and queries/s.

Code specs (:func:`parse_codes`): ``float``, ``sq8``, ``sq4``, ``pq4`` (one 4-bit sub-quantizer a
dimension), ``pq4xM`` (M sub-quantizers: m / 2M dimensions each), ``rabitq``, ``rabitq4`` (4-bit),
``binary``; a ``+itq`` suffix adds the ITQ balancing rotation (``balance="itq"``).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import InputError
from .labels import METHOD_LABELS

logger = logging.getLogger(__name__)

_SPEC = re.compile(r"^(float|sq8|sq4|pq4|rabitq|binary)(?:x(\d+))?(4)?(\+itq)?$")


def parse_code(spec: str) -> dict[str, Any]:
    """``"pq4x16+itq"`` -> ``{"code": "pq4", "pq_m": 16, "balance": "itq"}`` (backend options of one code)."""
    text = str(spec).strip().lower()
    found = _SPEC.match(text)
    if found is None or (found[2] and found[1] != "pq4") or (found[3] and found[1] != "rabitq"):
        raise InputError(
            f"codes: unknown code {spec!r}; use float, sq8, sq4, pq4, pq4xM (M sub-quantizers), rabitq, rabitq4 "
            "or binary, optionally with +itq"
        )
    options: dict[str, Any] = {"code": found[1]}
    if found[2]:
        options["pq_m"] = int(found[2])
    if found[3]:
        options["rabitq_bits"] = 4
    if found[4]:
        options["balance"] = "itq"
    return options


def parse_codes(specs: Sequence[str] | str | None) -> list[str]:
    """The code specs to measure, checked and without repeats (``"float,sq8"`` or a list); default ``["float"]``."""
    if specs is None:
        return ["float"]
    items = [s.strip() for s in specs.split(",")] if isinstance(specs, str) else [str(s).strip() for s in specs]
    out: list[str] = []
    for s in (s.lower() for s in items if s):
        parse_code(s)
        if s not in out:
            out.append(s)
    if not out:
        raise InputError("codes: give at least one code, e.g. float,sq8,pq4")
    return out


def code_options(spec: str, coarse_dim: int) -> dict[str, Any] | None:
    """The flat index's backend options for ``spec`` at prefix ``coarse_dim``, or None where it cannot
    apply there (PQ's M must divide m; binary codes need m a multiple of 8)."""
    options = parse_code(spec)
    pq_m = options.get("pq_m")
    if pq_m is not None and (pq_m > coarse_dim or coarse_dim % pq_m):
        return None
    if options["code"] == "binary" and coarse_dim % 8:
        return None
    return {"index": "flat", **options}


@dataclass(frozen=True, kw_only=True)
class Frontier:
    """:func:`frontier`'s answer: the measured code rows for one budget, cheapest first."""

    budget: str
    meeting: list[dict[str, Any]] = field(default_factory=list)
    """Rows meeting the budget, bytes ascending; ``on_frontier`` marks the frontier."""
    missing: list[dict[str, Any]] = field(default_factory=list)
    """Rows below the budget (what they reached is in the row)."""
    full_bytes_per_vector: int = 0
    exact_qps: float | None = None

    @property
    def points(self) -> list[dict[str, Any]]:
        """The frontier: fewest bytes first, each faster than the one before."""
        return [r for r in self.meeting if r["on_frontier"]]

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "frontier": self.points}

    def __str__(self) -> str:
        if not self.meeting and not self.missing:
            return f"{self.budget}: no code measurement in the report (evaluate with codes=[...], mindex eval --codes)"
        exact = f"{self.exact_qps:,.0f}" if self.exact_qps else "?"
        lines = [
            f"{self.budget}: memory / speed frontier (resident RAM bytes/vector, measured; queries/s at each "
            f"index's calibrated candidates; exact full-dim search: {self.full_bytes_per_vector} B/vector, "
            f"{exact} queries/s)"
        ]
        for r in self.meeting:
            mark = "*" if r["on_frontier"] else " "
            lines.append(f"  {mark} {_describe(r)}")
        if not self.meeting:
            lines.append("  no measured code meets it")
        for r in self.missing:
            lines.append(f"    below the budget: {_describe(r)}")
        lines.append("  (* on the frontier: no other row meeting the budget has fewer bytes and more queries/s)")
        return "\n".join(lines)


def _describe(r: dict[str, Any]) -> str:
    return (
        f"{r['bytes_per_vector']:g} B/vector: {METHOD_LABELS.get(r['method'], r['method'])} m={r['coarse_dim']} "
        f"{r['code']}, C={r['candidates']}, {r['qps']:,.0f} q/s, recall@10 {r['recall@10']:.3f}, "
        f"nDCG@10 {r['ndcg@10']:.4f}"
    )


def frontier(
    rows: Sequence[dict[str, Any]],
    *,
    threshold: float,
    key: str,
    budget: str,
    full_bytes_per_vector: int = 0,
    exact_qps: float | None = None,
) -> Frontier:
    """Rows with ``row[key] >= threshold`` (up to float rounding), bytes ascending, the frontier marked."""
    meeting = sorted(
        (dict(r) for r in rows if r[key] >= threshold - 1e-12), key=lambda r: (r["bytes_per_vector"], -r["qps"])
    )
    fastest = None
    for r in meeting:
        r["on_frontier"] = fastest is None or r["qps"] > fastest
        if r["on_frontier"]:
            fastest = r["qps"]
    missing = sorted((dict(r) for r in rows if r[key] < threshold - 1e-12), key=lambda r: r["bytes_per_vector"])
    return Frontier(
        budget=budget,
        meeting=meeting,
        missing=missing,
        full_bytes_per_vector=full_bytes_per_vector,
        exact_qps=exact_qps,
    )


__all__ = ["Frontier", "code_options", "frontier", "parse_code", "parse_codes"]
