"""A memory budget instead of knobs: pick coarse_dim x code x structure for ``ram_budget`` bytes a vector.

``MatryoshkaIndex.build(..., ram_budget=B)`` tries every configuration of :data:`GRID` whose code
alone could fit ``B`` on a trial index over a sample of the corpus (at most :data:`TRIAL_ROWS` rows,
built and calibrated exactly as ``build`` would, with the already fitted adaptor), and measures for
each: the bytes a vector keeps resident (the backend's measured ``per_vector_bytes`` minus the
bookkeeping a saved and reloaded index memory-maps), whether the calibration reached the target
recall, and the queries/s of the calibrated operating point on held-out sample rows. It keeps the
fastest configuration within the budget (``optimize="speed"``) or the one with the fewest bytes
(``optimize="memory"``). The report of every option (chosen or why rejected) is kept in the index's
calibration record, which ``mindex info`` shows.

The bytes compared with the budget leave out FAISS fast-scan's block padding (:func:`without_block_padding`):
a fast-scan index stores its codes in blocks of 32 vectors, so the last block's empty slots cost up
to 31 vectors' codes in all, a share of each vector that shrinks to 0 as the corpus grows (64-dim
PQ4x32 measures 16.01 B/vector at 29k rows, 16.00 at 1M). Letting it decide would make a round
budget (16) miss the configuration it names (16-byte codes) for a slower one of half the size.

Candidates and recall found on the trial sample are not those of the full corpus (the full build
calibrates its own); the trial ranks the configurations, the full build sets the operating point.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ..errors import InputError
from .parts import IndexParts

logger = logging.getLogger(__name__)

OPTIMIZE = ("speed", "memory")
TRIAL_ROWS = 20_000
TRIAL_QUERIES = 500
DIMS = (32, 64, 128, 256)
# (code, structure, extra backend options as a function of coarse_dim)
GRID: tuple[tuple[str, str, Any], ...] = (
    ("float", "flat", lambda m: {}),
    ("sq8", "flat", lambda m: {}),
    ("sq4", "flat", lambda m: {}),
    ("pq4", "flat", lambda m: {"pq_m": m}),
    ("pq4", "flat", lambda m: {"pq_m": m // 2}),
    ("rabitq", "flat", lambda m: {"balance": "itq"}),
    ("binary", "flat", lambda m: {"balance": "itq"}),
    ("float", "hnsw", lambda m: {}),
    ("sq8", "hnsw", lambda m: {}),
)


FAST_SCAN_BLOCK = 32
# (structure, code) pairs held by a FAISS fast-scan index (IndexPQFastScan, IndexRaBitQFastScan): every byte
# of a vector's code sits in a block of 32 vectors, so the serialised codes are ceil(n / 32) * 32 codes long
FAST_SCAN = {("flat", "pq4"), ("flat", "rabitq")}


def padded_rows(n: int) -> int:
    """Vectors a fast-scan index stores codes for: ``n`` rounded up to a whole block of 32."""
    return -(-int(n) // FAST_SCAN_BLOCK) * FAST_SCAN_BLOCK


def without_block_padding(bytes_per_vector: float, n: int, code: str, structure: str) -> float:
    """``bytes_per_vector`` measured on ``n`` rows, less fast-scan's padding of the last block of 32 vectors:
    what a vector keeps as the corpus grows (the padding is ``(padded_rows(n) - n) / n`` of it, -> 0)."""
    if (structure, code) not in FAST_SCAN or n < 1:
        return bytes_per_vector
    return round(bytes_per_vector * n / padded_rows(n), 2)


def with_block_padding(bytes_per_vector: float, n: int, code: str, structure: str) -> float:
    """The padding-free ``bytes_per_vector`` as an index of ``n`` rows measures it (the inverse of the above)."""
    if (structure, code) not in FAST_SCAN or n < 1:
        return bytes_per_vector
    return round(bytes_per_vector * padded_rows(n) / n, 2)


def exact_number(value: float) -> str:
    """``value`` (rounded to 2 decimals) written in full: ``16``, ``8.01``, ``12345.67`` (``:g`` would round it)."""
    return f"{value:.2f}".rstrip("0").rstrip(".")


def code_bytes(code: str, m: int, options: dict[str, Any]) -> float:
    """Bytes of the code alone (a lower bound of what the configuration keeps): prunes before any trial."""
    return {
        "float": 4.0 * m,
        "sq8": float(m),
        "sq4": m / 2,
        "pq4": options.get("pq_m", m) / 2,
        "rabitq": m / 8 + 8,
        "binary": m / 8,
    }[code]


def trial_size(n: int, n_queries: int) -> int:
    """Rows of the trial index: at most :data:`TRIAL_ROWS`, and as many modulo 32 as the corpus, so that
    FAISS fast-scan's padding to blocks of 32 vectors is the same number of vectors in the trial as in
    the full index (amortised over fewer rows: the trial over- rather than under-states the bytes)."""
    cap = min(TRIAL_ROWS, n - n_queries)
    size = cap - (cap - n) % 32
    return size if size >= min(cap, 1000) else cap  # a tiny corpus keeps all its rows


ID_BYTES = 8  # an int64 id a row: in RAM in a freshly built index, memory-mapped once it is saved and reloaded


def resident_bytes_per_vector(memory: dict[str, Any]) -> float:
    """Bytes a vector keeps resident, from a freshly built index's ``memory()``: its measured per-vector
    bytes less the id array, which a saved and reloaded index memory-maps (:data:`ID_BYTES` a row).

    Not ``per_vector_bytes - bookkeeping_bytes_per_vector``: the bookkeeping also counts the ITQ
    balance rotation, a fixed array that ``per_vector_bytes`` has already left out (with ``fixed_bytes``),
    so that difference took the rotation off twice (about 0.8 B/vector for a 64-dim prefix at 20k rows).
    """
    ids = min(ID_BYTES, memory.get("bookkeeping_bytes_per_vector", 0))  # 0 where the ids are memory-mapped
    return round(memory["per_vector_bytes"] - ids, 2)


@runtime_checkable
class MeasuresMemory(Protocol):
    """A backend that measures what its index keeps in memory (FAISS): what a RAM budget compares."""

    def memory(self) -> dict[str, Any]: ...


def describe_option(m: int, code: str, structure: str, options: dict[str, Any]) -> str:
    extra = "".join(f" {k}={v}" for k, v in sorted(options.items()))
    return f"coarse_dim={m} index={structure} code={code}{extra}"


def check_budget(ram_budget: Any, optimize: Any) -> float:
    if isinstance(ram_budget, bool) or not isinstance(ram_budget, (int, float)) or not ram_budget > 0:
        raise InputError(f"ram_budget: must be a positive number of bytes per vector, got {ram_budget!r}")
    if optimize not in OPTIMIZE:
        raise InputError(f"optimize: must be one of {', '.join(OPTIMIZE)}, got {optimize!r}")
    return float(ram_budget)


def choose_configuration(
    build: Callable[..., IndexParts],
    vectors: np.ndarray,
    *,
    ram_budget: float,
    optimize: str,
    target_recall: float,
    backend_options: dict[str, Any],
    seed: int,
) -> dict[str, Any]:
    """The chosen ``{"coarse_dim", "options", ...}`` and the report of every option; refuses an impossible budget.

    ``build(rows, coarse_dim=, index=, backend_options=)``: a trial index on ``rows`` at that setting, built
    and calibrated as the build itself is (with its adaptor, backend, metric and target)."""
    n, dim = vectors.shape
    rng = np.random.default_rng(seed + 1)
    n_q = min(TRIAL_QUERIES, max(1, n // 10))
    rows = rng.permutation(n)[: n_q + trial_size(n, n_q)]
    trial_rows, query_rows = np.sort(rows[n_q:]), np.sort(rows[:n_q])
    trial, queries = np.asarray(vectors[trial_rows]), np.asarray(vectors[query_rows])
    base = {k: v for k, v in backend_options.items() if k not in ("index", "code")}
    report: list[dict[str, Any]] = []

    def trial_of(entry: dict[str, Any]) -> None:
        m, code, structure, options = entry.pop("_spec")
        parts = build(trial, coarse_dim=m, index=structure, backend_options={**base, "code": code, **options})
        measured = resident_bytes_per_vector(parts.backend.memory())
        per = without_block_padding(measured, len(trial), code, structure)
        t0 = time.perf_counter()
        coarse_q, full_q = parts.vectors.prepare(queries, queries=True)  # a search of the queries at k=10
        parts.backend.search(coarse_q, full_q, 10, max(10, parts.candidates))
        cal = parts.calibration
        entry.update(
            coarse_dim=m,
            index=structure,
            options={"code": code, **options},
            bytes_per_vector=per,  # what the budget counts: fast-scan's block padding left out
            trial_bytes_per_vector=measured,
            corpus_bytes_per_vector=with_block_padding(per, n, code, structure),
            queries_per_s=round(len(queries) / max(time.perf_counter() - t0, 1e-9), 1),
            trial_candidates=parts.candidates,
            trial_recall=cal.recall,
            reached=bool(cal.reached),
        )
        if not entry["reached"]:
            entry["verdict"] = f"rejected: recall@10 {cal.recall} < {target_recall} on the trial"
        elif per > ram_budget:
            padding = " (fast-scan block padding left out)" if per != measured else ""
            entry["verdict"] = f"rejected: measured {exact_number(per)} B/vector{padding} > budget"
        else:
            entry["verdict"] = "feasible"

    pruned = []
    for m in (d for d in DIMS if d <= dim):
        for code, structure, extra in GRID:
            options = extra(m)
            if (code == "binary" and m % 8) or (code == "pq4" and (options["pq_m"] < 1 or m % options["pq_m"])):
                continue
            entry: dict[str, Any] = {"option": describe_option(m, code, structure, options)}
            entry["_spec"] = (m, code, structure, options)
            report.append(entry)
            lower = code_bytes(code, m, options)
            if lower > ram_budget:
                entry.update(bytes_per_vector=lower, verdict=f"rejected: its code alone is {lower:g} B/vector")
                pruned.append(entry)
            else:
                trial_of(entry)
    feasible = [e for e in report if e.get("verdict") == "feasible"]
    if not feasible:
        # the smallest feasible budget: try the pruned options, fewest code bytes first, until one reaches
        found = [e for e in report if e.get("reached")]
        for entry in sorted(pruned, key=lambda e: e["bytes_per_vector"]):
            if found and entry["bytes_per_vector"] > min(e["bytes_per_vector"] for e in found):
                break
            trial_of(entry)
            if entry["reached"]:
                found.append(entry)
        if not found:
            raise InputError(f"ram_budget: no configuration reached recall@10 {target_recall}; lower target_recall")
        small = min(found, key=lambda e: e["bytes_per_vector"])
        raise InputError(
            f"ram_budget: {ram_budget:g} B/vector is below every configuration reaching recall@10 {target_recall}; "
            f"the smallest feasible is {exact_number(small['bytes_per_vector'])} B/vector ({small['option']}): "
            f"use ram_budget >= {exact_number(small['bytes_per_vector'])}"
        )
    for e in report:
        e.pop("_spec", None)
    if optimize == "speed":
        chosen = max(feasible, key=lambda e: (e["queries_per_s"], -e["bytes_per_vector"]))
    else:
        chosen = min(feasible, key=lambda e: (e["bytes_per_vector"], -e["queries_per_s"]))
    for e in feasible:
        e["verdict"] = "chosen" if e is chosen else f"feasible, not chosen (optimize={optimize})"
    return {
        "coarse_dim": chosen["coarse_dim"],
        "index": chosen["index"],
        "options": chosen["options"],
        "record": {
            "ram_budget": ram_budget,
            "optimize": optimize,
            "chosen": chosen["option"],
            "corpus_rows": n,
            "trial_rows": len(trial_rows),
            "trial_queries": len(query_rows),
            "options": report,
        },
    }


def check_built_bytes(record: dict[str, Any], memory: dict[str, Any]) -> dict[str, Any]:
    """The budget record with the full index's measured bytes/vector, and a warning where they exceed it
    (counted as the trials were: fast-scan's block padding left out)."""
    built = resident_bytes_per_vector(memory)
    record = {**record, "built_bytes_per_vector": built}
    chosen = next((o for o in record.get("options", []) if o.get("verdict") == "chosen"), None)
    counted = built
    if chosen is not None and record.get("corpus_rows"):
        counted = without_block_padding(built, record["corpus_rows"], chosen["options"]["code"], chosen["index"])
    if counted > record["ram_budget"]:
        record["warning"] = (
            f"the built index keeps {exact_number(counted)} B/vector, {counted - record['ram_budget']:.3g} over the budget "
            f"of {record['ram_budget']:g} (the trial on {record['trial_rows']:,} rows measured less); rebuild with "
            f"ram_budget below {record['ram_budget']:g} to stay within it"
        )
        logger.warning("ram_budget: %s", record["warning"])
    return record
