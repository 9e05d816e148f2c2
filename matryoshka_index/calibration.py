"""Operating points and the calibration of the default candidate count.

A two-stage search has a few settings that trade speed for recall: the number of ``candidates`` the
coarse stage hands to the rerank and, for some coarse indexes, a *knob* (IVF's ``nprobe``, HNSW's
``ef``). An :class:`OperatingPoint` is one such setting with what was measured at it (recall@k
against exact search, the one-sided lower confidence bound of that recall, and whatever else the
caller measured: nDCG, queries/s). :class:`OperatingPoints` holds the measured points (in the
spirit of faiss contrib's ``OperatingPoints``) and answers "the smallest setting meeting a target".
:class:`Calibrator` searches the settings for that smallest one without measuring them all:

* the candidate ladder is geometric, ``k * 2^(i/4)`` rounded, up to a cap (:func:`candidate_ladder`);
* recall is assumed monotone in candidates (and in the knob), so the smallest ladder value reaching
  the target is found by bisection (:func:`smallest`);
* the criterion is the lower confidence bound, not the mean (:func:`recall_with_lower_bound`), so
  that fresh queries of the same kind reach the target too (the mean alone lands below it about
  half the time);
* with a knob, the smallest candidate count reaching the target at the exhaustive knob value comes
  first, then candidates up to 4x that (every other ladder step) are tried with the smallest knob
  value reaching the target at each, and the pair the backend's cost model rates cheapest wins;
* the bound needs enough queries to mean anything (:func:`min_queries`): with fewer, only a sample
  with no missed neighbour at all reaches the target, which says little about the next query. The
  API's ``calibrate`` refuses fewer (:func:`check_calibration_queries`); a build whose held-out rows
  are fewer uses the largest candidate count instead of a calibrated one, and says so in its record;
* a target that is not reached is loud (:func:`not_reached_message`): ``calibrate`` raises
  :class:`~matryoshka_index.errors.CalibrationError` and keeps the default it had, a build warns
  (:class:`~matryoshka_index.errors.CalibrationWarning`) and records it under ``"warning"``.

The record of a calibration is one typed :class:`CalibrationRecord` (the manifest's ``calibration``
section through :meth:`~CalibrationRecord.to_dict` / :meth:`~CalibrationRecord.from_dict`), and the
calibration of an index's backend is :func:`calibrate_search` (the measure: a two-stage search of
the queries against their exact neighbours). Users, each through this module: the build
(:func:`held_out_truth`, :func:`too_few_queries`, :func:`prefix_only_record`, :func:`calibrate_search`),
:meth:`MatryoshkaIndex.calibrate <matryoshka_index.MatryoshkaIndex.calibrate>`, the RAM budget's
trial indexes (their records), the labelled evaluation's candidates sweep (:data:`SWEEP_CANDIDATES`,
every other step of the one ladder), the dimension advisor (:class:`OperatingPoints`) and the
migration, which does not calibrate (:data:`UNCALIBRATED_CANDIDATES`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any, Protocol, runtime_checkable

import numpy as np

from .errors import CalibrationError, InputError
from .exact import exact_topk
from .metrics import per_query_recall
from .progress import progress
from .validation import l2_normalize

CONFIDENCE_Z = 1.645
"""One-sided 95%: the calibrated recall's lower confidence bound must reach the target."""
CALIBRATION_K = 10
"""The default candidate count is calibrated for recall@10."""
MAX_CANDIDATES = 4096
"""The top of the candidate ladder (and the cap of a build's calibration)."""
UNCALIBRATED_CANDIDATES = 100
"""The default candidates of an index nobody calibrated (a migrated Qdrant collection, whose recall the
migration measures at this count); ``mindex calibrate`` on real queries replaces it."""


def recall_with_lower_bound(found: np.ndarray, truth: np.ndarray, z: float = CONFIDENCE_Z) -> tuple[float, float]:
    """Mean recall of ``found`` against ``truth`` (``(n_queries, k)`` ids, ``-1`` = none) and its
    one-sided lower confidence bound ``mean - z * std / sqrt(n_queries)`` (z = 1.645: 95%)."""
    per_query = per_query_recall(found, truth)
    if not len(per_query):
        return 1.0, 1.0
    mean = float(per_query.mean())
    if len(per_query) < 2:
        return mean, mean
    return mean, mean - z * float(per_query.std(ddof=1)) / float(np.sqrt(len(per_query)))


def min_queries(target: float, k: int = CALIBRATION_K, z: float = CONFIDENCE_Z) -> int | None:
    """The fewest queries for which the lower bound can reach ``target`` with anything short of a
    perfect sample; None for ``target >= 1`` (no sample shows recall 1.0 by a lower bound).

    With ``n`` queries of recall@k and a single missed neighbour among all ``n * k``, the mean is
    ``1 - 1/(k n)`` and the sample standard deviation ``1/(k sqrt(n))``, so the bound
    ``mean - z * std / sqrt(n)`` is ``1 - (1 + z) / (k n)``: it reaches ``target`` only when
    ``n >= (1 + z) / (k (1 - target))``. At z = 1.645, k = 10 and target 0.99: 26.45, so 27 queries
    (0.95: 6, 0.999: 265). With fewer, one miss already fails the target and only a sample without
    any miss passes: the bound is then decided by luck, not by the candidate count.
    """
    if target >= 1:
        return None
    return max(2, math.ceil((1 + z) / (k * (1 - target)) - 1e-9))


def check_calibration_queries(n_queries: int, target: float, k: int = CALIBRATION_K, *, name: str = "queries") -> int:
    """Refuse (one :class:`InputError` line) fewer queries than :func:`min_queries` or a target of 1.0;
    returns the minimum."""
    need = min_queries(target, k)
    if need is None:
        raise InputError(
            f"target_recall: {target} cannot be shown by a lower confidence bound on sample queries (only a "
            f"sample without a single miss reaches it, which says nothing of the next query); choose at most "
            f"0.999 (which needs {min_queries(0.999, k)} queries), or search with candidates=len(index) for exact results"
        )
    if n_queries < need:
        raise InputError(
            f"{name}: {n_queries} are too few to calibrate for target_recall {target}: the one-sided 95% lower "
            f"confidence bound on recall@{k} needs at least {need} (with fewer, a single missed neighbour already "
            f"puts it below the target); give at least {need} queries or lower target_recall"
        )
    return need


def not_reached_message(
    record: CalibrationRecord | Mapping[str, Any], *, cap: int, n: int, knob: str | None, outcome: str
) -> str:
    """One line: the target, what was reached at the most candidates tried, ``outcome`` (what the index
    does now) and what to do."""
    record = record.to_dict() if isinstance(record, CalibrationRecord) else record
    options = [f"allow more candidates (max_candidates, now {cap}, of {n} vectors)"] if cap < n else []
    options.append("lower target_recall")
    finer = "rebuild with a larger coarse_dim or a trained adaptor"
    options.append(finer + (f" (the exhaustive {knob} was tried)" if knob else ""))
    return (
        f"target_recall {record['target_recall']} not reached on {record['queries']} queries: recall@{record['k']} "
        f"{record['recall']} (lower bound {record['recall_lower_bound']}) at {record['candidates']} candidates, "
        f"the most tried; {outcome}; to reach it, {', '.join(options[:-1])} or {options[-1]}"
    )


def candidate_ladder(k: int, cap: int) -> list[int]:
    """Geometric ladder k, k*2^(1/4), k*2^(2/4), ... (rounded, distinct) up to and including ``cap``: the
    one ladder of candidate counts (the calibration's; a sweep takes every other step of it)."""
    cap = max(k, cap)
    out: list[int] = []
    i = 0
    while True:
        v = min(cap, round(k * 2 ** (i / 4)))
        if not out or v > out[-1]:
            out.append(v)
        if v >= cap:
            return out
        i += 1


def smallest(values: Sequence[int], ok: Callable[[int], bool]) -> int | None:
    """Smallest of the sorted ``values`` for which ``ok`` holds, by bisection (``ok`` assumed monotone);
    None if even the largest fails. ``ok`` is called O(log n) times, the largest value first."""
    if not ok(values[-1]):
        return None
    lo, hi = 0, len(values) - 1
    while lo < hi:
        mid = (lo + hi) // 2
        if ok(values[mid]):
            hi = mid
        else:
            lo = mid + 1
    return values[lo]


# ---------------------------------------------------------------------- the record
@dataclass(frozen=True)
class CalibrationRecord:
    """How an index's default candidates were chosen: the manifest's ``calibration`` section, typed.

    Four kinds, by the fields they set: none (``{}``: nothing calibrated yet, e.g. a migration);
    ``skipped`` alone (too few vectors); ``skipped`` with the recall a prefix-only index's coarse
    stage reaches (:func:`prefix_only_record`); a calibration (``candidates`` and the rest, from
    :meth:`Calibrator.run`). A field left ``None`` is not written, except ``knob``, which a
    calibration always writes (``null``: no search knob), and ``min_queries``, written when
    ``fallback`` says the queries were too few for the bound (``null``: no sample shows that target).
    Keys this version does not know are kept in ``extra`` and written back as read.
    Frozen: what is added later (the RAM budget's report, a warning) makes a new record (``replace``).
    """

    skipped: str | None = None
    k: int | None = None
    target_recall: float | None = None
    recall: float | None = None
    recall_lower_bound: float | None = None
    reached: bool | None = None
    queries: int | None = None
    candidates: int | None = None
    knob: dict[str, int] | None = None
    truth: str | None = None
    method: str | None = None
    query_source: str | None = None
    steps: list[list[Any]] | None = None
    seconds: float | None = None
    fallback: bool = False
    min_queries: int | None = None
    warning: str | None = None
    budget: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The manifest's ``calibration`` section (a fresh dict)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in ("fallback", "extra"):
                continue
            if value is not None or (f.name == "knob" and self.candidates is not None):
                out[f.name] = value
            elif f.name == "min_queries" and self.fallback:
                out[f.name] = None
        out.update(self.extra)
        return out

    @classmethod
    def from_dict(cls, section: Mapping[str, Any] | None) -> CalibrationRecord:
        """The record a manifest's ``calibration`` section holds (``None`` or ``{}``: none)."""
        section = dict(section or {})
        known = {f.name for f in fields(cls)} - {"fallback", "extra"}
        given = {name: section.pop(name) for name in list(section) if name in known}
        return cls(**given, fallback="min_queries" in given, extra=section)

    @property
    def calibrated(self) -> bool:
        """A calibration chose the candidates (not skipped, not empty)."""
        return self.candidates is not None

    def with_budget(self, budget: dict[str, Any]) -> CalibrationRecord:
        """This record with the RAM budget's report (``ram_budget`` builds)."""
        return replace(self, budget=budget)


def skipped_record(why: str) -> CalibrationRecord:
    """Nothing calibrated, and why (e.g. a corpus of one vector)."""
    return CalibrationRecord(skipped=why)


# ---------------------------------------------------------------------- operating points
@dataclass
class OperatingPoint:
    """One setting of a two-stage search and what was measured at it.

    ``recall`` is recall@k against exact search, ``lower_bound`` its lower confidence bound (NaN
    when not measured); ``extra`` holds anything else (``"ndcg@10"``, ``"qps"``, ``"coarse_dim"``...).
    """

    candidates: int
    knob: int | None = None
    recall: float = math.nan
    lower_bound: float = math.nan
    extra: dict[str, Any] = field(default_factory=dict)

    def value(self, name: str) -> Any:
        """A measure by name: ``"recall"`` / ``"recall@10"``, ``"lower_bound"``, or a key of ``extra``."""
        if name in ("recall", "recall@10"):
            return self.recall
        if name == "lower_bound":
            return self.lower_bound
        return self.extra[name]

    def step(self) -> list[Any]:
        """``[candidates, knob, recall, lower bound]`` rounded to 5 digits (a calibration record's step)."""
        return [self.candidates, self.knob, round(self.recall, 5), round(self.lower_bound, 5)]

    def to_dict(self, recall_key: str = "recall@10") -> dict[str, Any]:
        """``{"candidates": ..., recall_key: ..., **extra}`` (a row of an evaluation's candidates sweep)."""
        return {"candidates": self.candidates, recall_key: self.recall, **self.extra}


class OperatingPoints:
    """Measured operating points, in the order they were measured.

    With ``measure`` (``(candidates, knob) -> (recall, lower_bound)``), :meth:`measure` runs it once
    per setting and remembers the answer; :meth:`add` records a point measured elsewhere.
    ``on_measure`` is called with each newly measured point (a progress bar, say).
    """

    def __init__(
        self,
        measure: Callable[[int, int | None], tuple[float, float]] | None = None,
        *,
        on_measure: Callable[[OperatingPoint], None] | None = None,
    ) -> None:
        self._measure = measure
        self._on_measure = on_measure
        self._points: list[OperatingPoint] = []
        self._by_setting: dict[tuple[int, int | None], OperatingPoint] = {}

    def add(self, point: OperatingPoint) -> OperatingPoint:
        self._points.append(point)
        self._by_setting.setdefault((point.candidates, point.knob), point)
        return point

    def measure(self, candidates: int, knob: int | None = None) -> OperatingPoint:
        """The point at this setting, measured now unless it was already."""
        key = (candidates, knob)
        if key not in self._by_setting:
            if self._measure is None:
                raise ValueError("these operating points were given no measure function")
            recall, lower = self._measure(candidates, knob)
            point = self.add(OperatingPoint(candidates, knob, recall, lower))
            if self._on_measure is not None:
                self._on_measure(point)
        return self._by_setting[key]

    def __iter__(self) -> Iterator[OperatingPoint]:
        return iter(self._points)

    def __len__(self) -> int:
        return len(self._points)

    def steps(self) -> list[list[Any]]:
        """Every point as ``[candidates, knob, recall, lower bound]``, in measurement order."""
        return [p.step() for p in self._points]

    def meeting(self, threshold: float, value: Callable[[OperatingPoint], float]) -> list[OperatingPoint]:
        """Points whose ``value`` reaches ``threshold`` (up to float rounding, 1e-12)."""
        return [p for p in self._points if value(p) >= threshold - 1e-12]

    def smallest_meeting(
        self, threshold: float, value: Callable[[OperatingPoint], float], order: Callable[[OperatingPoint], Any]
    ) -> OperatingPoint | None:
        """The point meeting ``threshold`` that ``order`` ranks first (the first measured among ties)."""
        ok = self.meeting(threshold, value)
        return min(ok, key=order) if ok else None


# ---------------------------------------------------------------------- the calibrator
@dataclass
class Choice:
    """What a :class:`Calibrator` chose: candidates, knob value (or None) and how."""

    candidates: int
    knob: int | None
    method: str


class Calibrator:
    """Finds the smallest candidate count (and knob value) whose recall reaches a target.

    ``k``: the recall's k (the ladder starts there); ``cap``: the largest candidate count tried;
    ``knob``: ``(name, values)`` of the backend's search knob (values ascending, the last one
    exhaustive) or None; ``cost``: ``(candidates, knob) -> relative cost``, required with a knob.
    """

    def __init__(
        self,
        k: int,
        cap: int,
        *,
        knob: tuple[str, Sequence[int]] | None = None,
        cost: Callable[[int, int], float] | None = None,
    ) -> None:
        if knob is not None and cost is None:
            raise ValueError("a search knob needs a cost model to choose between settings")
        self.k = k
        self.ladder = candidate_ladder(k, cap)
        self.knob = knob
        self.cost = cost

    @property
    def knob_name(self) -> str | None:
        return self.knob[0] if self.knob else None

    def choose(
        self, points: OperatingPoints, target: float, *, fixed: int | None = None, fixed_knob: int | None = None
    ) -> Choice:
        """The setting to use, measuring ``points`` as needed (criterion: the lower confidence bound).

        ``fixed``: candidates chosen by the caller (then ``fixed_knob``, or the exhaustive knob value).
        """

        def reaches(c: int, knob_value: int | None = None) -> bool:
            return points.measure(c, knob_value).lower_bound >= target

        ladder, knob = self.ladder, self.knob
        if fixed is not None:
            knob_value = (fixed_knob or knob[1][-1]) if knob else None
            return Choice(fixed, knob_value, "fixed by the caller; recall measured")
        if knob is None:
            found = smallest(ladder, reaches)
            return Choice(
                found if found is not None else ladder[-1],
                None,
                "smallest value of a geometric candidates ladder (x2^(1/4)) reaching the target, by bisection",
            )
        name, values = knob
        method = (
            f"smallest candidates reaching the target with exhaustive {name}, then the cheapest "
            f"({name}, candidates) pair reaching it for candidates up to 4x that"
        )
        exhaustive = values[-1]
        c0 = smallest(ladder, lambda c: reaches(c, exhaustive))
        if c0 is None:
            return Choice(ladder[-1], exhaustive, method)
        # More candidates let a cheaper probe reach the target: try candidates from c0 up to 4*c0
        # (every other ladder step) and keep the pair the backend's cost model rates cheapest.
        best: tuple[float, int, int] | None = None
        for c in [v for v in ladder if c0 <= v <= 4 * c0][::2]:
            p = smallest(values, lambda p, c=c: reaches(c, p))
            if p is None:
                continue
            cost = self.cost(c, p)  # type: ignore[misc]
            if best is None or cost < best[0]:
                best = (cost, c, p)
        assert best is not None  # c0 reached the target with the exhaustive knob value
        return Choice(best[1], best[2], method)

    def run(
        self,
        points: OperatingPoints,
        target: float,
        *,
        queries: int,
        truth_note: str,
        query_source: str,
        fixed: int | None = None,
        fixed_knob: int | None = None,
        started: float | None = None,
    ) -> tuple[Choice, CalibrationRecord]:
        """:meth:`choose`, then the record of the calibration."""
        t_start = time.perf_counter() if started is None else started
        choice = self.choose(points, target, fixed=fixed, fixed_knob=fixed_knob)
        final = points.measure(choice.candidates, choice.knob)
        name = self.knob_name
        record = CalibrationRecord(
            k=self.k,
            target_recall=target,
            recall=round(final.recall, 5),
            recall_lower_bound=round(final.lower_bound, 5),
            reached=bool(final.lower_bound >= target),
            queries=queries,
            candidates=int(choice.candidates),
            knob={name: int(choice.knob)} if name and choice.knob is not None else None,
            truth=truth_note,
            method=choice.method,
            query_source=query_source,
            steps=points.steps(),
            seconds=round(time.perf_counter() - t_start, 3),
        )
        return choice, record

    def calibrate(self, points: OperatingPoints, target: float, **settings: Any) -> tuple[Choice, dict[str, Any]]:
        """:meth:`run` (``settings`` as there), the record as the manifest's ``calibration`` section (a dict)."""
        choice, record = self.run(points, target, **settings)
        return choice, record.to_dict()


# ---------------------------------------------------------------------- an index's calibration
SWEEP_CANDIDATES = tuple(candidate_ladder(CALIBRATION_K, 1280)[::2])
"""Candidate counts of an evaluation's sweep: every other step of the one ladder (x sqrt(2)), 10 to 1280."""


class CalibratedSearch(Protocol):
    """What :func:`calibrate_search` asks of a backend: its size, its two-stage search, exact search."""

    def __len__(self) -> int: ...

    def search(
        self, coarse_queries: np.ndarray, full_queries: np.ndarray, k: int, candidates: int
    ) -> tuple[np.ndarray, np.ndarray]: ...

    def exact_search(self, full_queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]: ...


@runtime_checkable
class SearchKnobControl(Protocol):
    """A backend's search knob (``backends.base.SearchKnob``: IVF's ``nprobe``), as the calibration turns it
    (the same structural protocol: this bottom module imports nothing of the backends)."""

    def search_knob(self) -> tuple[str, Sequence[int]] | None: ...

    def set_search_knob(self, value: int) -> None: ...

    def get_search_knob(self) -> int | None: ...

    def search_cost(self, candidates: int, knob: int | None = None) -> float: ...


def held_out_truth(
    queries: np.ndarray, vectors: np.ndarray, ids: np.ndarray, indexed: np.ndarray, k: int, *, metric: str
) -> np.ndarray:
    """Ids of each held-out query's ``k`` exact neighbours among the ``indexed`` rows of ``vectors``, by the
    original vectors (``-1`` = none): the truth when the index holds no originals to search exactly."""
    normalize = metric == "cosine"
    _, rows = exact_topk(
        l2_normalize(queries) if normalize else queries, vectors, k, normalize=normalize, include=indexed
    )
    return np.where(rows >= 0, ids[np.maximum(rows, 0)], -1)


def too_few_queries(n_queries: int, target: float, k: int, n: int) -> tuple[int, tuple[str, int | None]] | None:
    """``(candidates, (method, min_queries))`` when ``n_queries`` are too few for the lower bound at
    ``target`` (a bisection would be decided by luck): the largest candidate count, not a calibrated one."""
    need = min_queries(target, k)
    if need is not None and n_queries >= need:
        return None
    fixed = min(n, MAX_CANDIDATES)
    method = (
        f"too few queries for the lower confidence bound ({n_queries} held out; target_recall {target} "
        f"needs {need or 'more than any sample'}): the largest candidate count"
        + (" (every vector: exact search)" if fixed == n else "")
        + ", not a calibrated one"
    )
    return fixed, (method, need)


def prefix_only_record(found: np.ndarray, truth: np.ndarray, k: int) -> CalibrationRecord:
    """A prefix-only index's record: nothing to calibrate (no rerank), but the recall@k its coarse stage
    alone (``found``) reaches against exact full-dimension search (``truth``) on held-out rows."""
    recall, bound = recall_with_lower_bound(found, truth)
    return CalibrationRecord(
        skipped="rerank=None (prefix only): no full vectors, so no rerank candidates to calibrate; search is "
        "the coarse stage alone and its scores are inner products of the adapted prefix",
        k=k,
        recall=round(float(recall), 5),
        recall_lower_bound=round(float(bound), 5),
        queries=len(found),
        truth="exact inner-product search over the original full vectors, measured at build time",
        query_source="random corpus rows held out of the index while measuring, then added",
    )


def calibrate_search(
    backend: CalibratedSearch,
    coarse_queries: np.ndarray,
    full_queries: np.ndarray,
    *,
    target: float,
    max_candidates: int,
    truth: np.ndarray | None = None,
    fixed: int | None = None,
    truth_note: str,
    query_source: str,
    k: int = CALIBRATION_K,
    quiet: bool = False,
    fallback: tuple[str, int | None] | None = None,
    if_not_reached: str = "record",
    candidates_now: int | None = None,
    started: float | None = None,
) -> CalibrationRecord:
    """The smallest candidates (and knob value) at which ``backend``'s two-stage search of the prepared
    queries reaches ``target`` (recall@k's lower bound against ``truth``, default: the backend's exact
    search); the backend's knob is left at the value chosen.

    A backend with a search knob (:class:`SearchKnobControl`) has it calibrated with the candidates.
    ``fixed``: candidates chosen by the caller (their recall is still measured); ``fallback``:
    ``(method, min_queries)`` when the caller fixed them because the queries are too few for the bound
    (:func:`too_few_queries`: the knob is then the exhaustive value, and the target still applies).
    A target not reached (unless the caller fixed the candidates) raises :class:`CalibrationError`
    with ``if_not_reached="raise"``, the knob put back and ``candidates_now`` named as kept, else is
    recorded under ``warning``.
    """
    t_start = time.perf_counter() if started is None else started
    knob_control = backend if isinstance(backend, SearchKnobControl) else None
    n = len(backend)
    k = max(1, min(k, n))
    if truth is None:
        _, truth = backend.exact_search(full_queries, k)
    knob = knob_control.search_knob() if knob_control is not None else None
    knob_before = knob_control.get_search_knob() if knob_control is not None and knob else None

    def measure(c: int, knob_value: int | None) -> tuple[float, float]:
        if knob_value is not None and knob_control is not None:
            knob_control.set_search_knob(knob_value)
        _, found = backend.search(coarse_queries, full_queries, k, c)
        return recall_with_lower_bound(found, truth)

    cap = min(n, max_candidates)
    cost = knob_control.search_cost if knob and knob_control is not None else None
    calibrator = Calibrator(k, cap, knob=knob, cost=cost)
    fixed_knob = knob_before if fixed is not None and fallback is None else None
    bar = progress(desc="calibrating", unit="search", quiet=quiet)
    points = OperatingPoints(measure, on_measure=lambda _: bar.update(1))
    try:
        choice, record = calibrator.run(
            points,
            target,
            queries=len(coarse_queries),
            truth_note=truth_note,
            query_source=query_source,
            fixed=fixed,
            fixed_knob=fixed_knob,
            started=t_start,
        )
    finally:
        bar.close()
    if fallback is not None:
        record = replace(record, method=fallback[0], fallback=True, min_queries=fallback[1])
    if (fixed is None or fallback is not None) and not record.reached:
        where = {"cap": cap, "n": n, "knob": calibrator.knob_name}
        if if_not_reached == "raise":
            if knob_before is not None and knob_control is not None:  # the measurement moved the knob: put it back
                knob_control.set_search_knob(knob_before)
            kept = f"the index keeps its {candidates_now} candidates"
            raise CalibrationError(not_reached_message(record, outcome=kept, **where), record.to_dict())
        used = "the index uses them (search(..., candidates=N) overrides it)"
        record = replace(record, warning=not_reached_message(record, outcome=used, **where))
    if knob_control is not None and knob is not None and choice.knob is not None:
        knob_control.set_search_knob(choice.knob)
    return record


# ---------------------------------------------------------------------- the rerank's per-query stop (issue 22)
STOP_FACTORS = (1.0, 1.25, 1.5, 2.0)
"""Candidate caps tried for the per-query stop, as multiples of the calibrated candidates."""
STOP_MARGINS = tuple(i / 8 for i in range(0, 65))
"""Margins tried (in residual standard deviations of the full-vs-coarse score model), 0 to 8 by 1/8."""


@dataclass
class StopChoice:
    """What :func:`calibrate_rerank_stop` chose: the cap factor and margin ``z`` (None: no stop reaches the
    target), the measured recall, its lower bound and the mean candidates reranked there, every step measured."""

    factor: float | None
    z: float | None
    recall: float
    lower_bound: float
    mean_candidates: float
    steps: list[list[float]]


def calibrate_rerank_stop(
    measure: Callable[[float, float], tuple[float, float, float]],
    target: float,
    *,
    factors: Sequence[float] = STOP_FACTORS,
    margins: Sequence[float] = STOP_MARGINS,
) -> StopChoice:
    """The per-query stop reranking the fewest candidates on average whose recall's lower bound reaches ``target``.

    ``measure(factor, z) -> (recall, lower_bound, mean candidates reranked)`` searches the calibration queries
    with the stop at that cap factor and margin. For each factor the smallest margin reaching the target is
    found by bisection (a larger margin stops later, so reranks a superset of the candidates: recall is
    monotone in it), then the factor whose point reranks the fewest candidates wins (ties: the smaller factor).
    Self-contained: the backend's stop and score model are in ``backends/faiss_rerank.py``.
    """
    if not 0 < target < 1:
        raise InputError(f"target_recall: must be between 0 and 1 (exclusive), got {target!r}")
    if not factors or not margins or min(factors) < 1 or min(margins) < 0:
        raise InputError("calibrate_rerank_stop: factors must be >= 1 and margins >= 0, neither empty")
    margins = sorted(margins)
    seen: dict[tuple[float, float], tuple[float, float, float]] = {}
    steps: list[list[float]] = []

    def point(factor: float, z: float) -> tuple[float, float, float]:
        if (factor, z) not in seen:
            seen[(factor, z)] = measure(factor, z)
            steps.append([factor, z, *(round(float(v), 5) for v in seen[(factor, z)])])
        return seen[(factor, z)]

    best: tuple[float, float, float] | None = None  # (mean candidates, factor, z)
    for factor in sorted(factors):
        i = smallest(list(range(len(margins))), lambda i, f=factor: point(f, margins[i])[1] >= target - 1e-12)
        if i is None:
            continue
        mean = point(factor, margins[i])[2]
        if best is None or mean < best[0]:
            best = (mean, factor, margins[i])
    if best is None:
        return StopChoice(None, None, math.nan, math.nan, math.nan, steps)
    recall, lower, mean = point(best[1], best[2])
    return StopChoice(best[1], best[2], float(recall), float(lower), float(mean), steps)


__all__ = [
    "CALIBRATION_K",
    "CONFIDENCE_Z",
    "MAX_CANDIDATES",
    "STOP_FACTORS",
    "STOP_MARGINS",
    "SWEEP_CANDIDATES",
    "UNCALIBRATED_CANDIDATES",
    "CalibratedSearch",
    "CalibrationRecord",
    "Calibrator",
    "Choice",
    "OperatingPoint",
    "OperatingPoints",
    "SearchKnobControl",
    "StopChoice",
    "calibrate_rerank_stop",
    "calibrate_search",
    "candidate_ladder",
    "check_calibration_queries",
    "held_out_truth",
    "min_queries",
    "not_reached_message",
    "prefix_only_record",
    "recall_with_lower_bound",
    "skipped_record",
    "smallest",
    "too_few_queries",
]
