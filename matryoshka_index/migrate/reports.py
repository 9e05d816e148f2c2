"""What a migration reports: the plan (all a dry run returns), the verification, the report, the rollback."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from ..storage import human_bytes


@dataclass
class MigrationPlan:
    """What a migration will do (``dry_run`` returns only this, inside the report)."""

    endpoint: str
    source: str
    source_collection: str
    vector: str | None
    metric: str
    full_dim: int
    coarse_dim: int
    points: int
    target: str
    target_exists: bool
    resume_from: int
    alias: str | None
    alias_now_points_to: str | None
    other_vectors: list[str]
    sparse_vectors: list[str]
    payload_indexes: list[str]
    adaptor: str
    train_rows: int
    batch_size: int
    parallel: int
    estimated_target_bytes: int
    estimated_process_bytes: int
    estimated_copy_seconds: float | None
    notes: list[str] = field(default_factory=list)
    mode: str = "copy"
    """``"copy"`` (a new collection) or ``"in_place"`` (``coarse`` added to the source)."""
    storage: dict[str, Any] = field(default_factory=dict)
    """Extra disk and RAM each mode needs on the server (estimates; see ``storage["basis"]``)."""
    time_basis: str = "rough: measured read speed x 3"
    """How ``estimated_copy_seconds`` was reached."""
    prefix_only: dict[str, Any] | None = None
    """Prefix only (``--prefix-only --dim M``): ``dim``, the vector bytes a point of the source and of the
    target, ``bytes_saved_per_point`` and ``bytes_saved`` (all points), and ``quality``: the metric the
    prefix alone keeps, measured now (``metric``, ``predicted``, ``full_dim``, ``queries``, ``basis``)."""

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("time_basis")  # said in describe(); the JSON keeps the keys of the first version
        if out["prefix_only"] is None:  # likewise: only a prefix-only plan has the key
            out.pop("prefix_only")
        return out

    def _storage_lines(self) -> list[str]:
        if not self.storage:
            return []
        c, i = self.storage["copy"], self.storage["in_place"]
        return [
            f"storage:  copy mode needs ~{human_bytes(c['disk_bytes'])} more disk and ~{human_bytes(c['ram_bytes'])} "
            f"more RAM (a second copy of every point); in place ~{human_bytes(i['disk_bytes'])} disk and "
            f"~{human_bytes(i['ram_bytes'])} RAM (the coarse vectors only)",
            f"          ({self.storage['basis']})",
        ]

    def _time_line(self) -> str:
        if self.estimated_copy_seconds is None:
            estimate = "not estimated"
        else:
            verb = "update" if self.mode == "in_place" else "copy"
            estimate = f"{verb} ~{human_seconds(self.estimated_copy_seconds)} ({self.time_basis})"
        return (
            "time:     "
            + estimate
            + ("; adaptor training not estimated (depends on the device)" if self.train_rows else "")
        )

    def describe(self) -> str:
        """The plan as readable lines (what ``mindex migrate --dry-run`` prints)."""
        in_place = self.mode == "in_place"
        vec = "its unnamed vector" if self.vector is None else f"vector {self.vector!r}"
        source = (
            f"source:   {self.source_collection!r}"
            + (f" (via alias {self.source!r})" if self.source != self.source_collection else "")
            + f" at {self.endpoint}: {self.points:,} points, {vec}, {self.full_dim} dims, {self.metric}"
        )
        if self.prefix_only is not None:
            carried = self.other_vectors + self.sparse_vectors
            what = f"target:   {self.target!r} with 'coarse' ({self.coarse_dim} dims, HNSW) alone: no full vector" + (
                f"; carried over unchanged: {', '.join(carried)}" if carried else ""
            )
            step, done, size = "copy:     ", "copied", "target collection ~{} (vectors + payload + coarse HNSW)"
        elif in_place:
            what = (
                f"in place: adds 'coarse' ({self.coarse_dim} dims) to {self.source_collection!r}; {vec} "
                "becomes the rerank vector; every existing vector and payload is left untouched (no second copy)"
            )
            step, done, size = "update:   ", "updated", "coarse vectors ~{} (vectors + coarse HNSW)"
        else:
            carried = self.other_vectors + self.sparse_vectors
            what = (
                f"target:   {self.target!r} with 'coarse' ({self.coarse_dim} dims, HNSW) + 'full' ({self.full_dim} dims, "
                "rerank only)" + (f"; carried over unchanged: {', '.join(carried)}" if carried else "")
            )
            step, done, size = "copy:     ", "copied", "target collection ~{} (vectors + payload + coarse HNSW)"
        lines = [
            source,
            what,
            f"adaptor:  {self.adaptor}",
            f"{step}{self.points - self.resume_from:,} points in batches of {self.batch_size}"
            + (f", resuming after {self.resume_from:,} already {done}" if self.resume_from else ""),
            f"size:     {size.format(human_bytes(self.estimated_target_bytes))}; "
            f"this process ~{human_bytes(self.estimated_process_bytes)}",
            self._time_line(),
            *(self._storage_lines() if self.prefix_only is None else prefix_only_lines(self.prefix_only)),
        ]
        if self.payload_indexes and not in_place:
            lines.append(f"indexes:  payload indexes recreated: {', '.join(self.payload_indexes)}")
        if self.alias:
            now = f"now -> {self.alias_now_points_to!r}" if self.alias_now_points_to else "new alias"
            lines.append(f"alias:    {self.alias!r} switched to {self.target!r} after verification ({now})")
        return joined(lines, "note:     ", self.notes)


@dataclass
class VerificationResult:
    """Step 5: does the target hold exactly what the source holds, and how well does matryoshka search do?"""

    mode: str
    source_count: int
    target_count: int
    counts_equal: bool
    checked: int
    missing: int
    payload_mismatches: int
    vector_mismatches: int
    max_full_vector_diff: float
    full_vector_tolerance: float
    id_handle_collisions: int
    recall_at_10: float | None
    recall_queries: int
    candidates: int
    examples: list[str] = field(default_factory=list)
    coarse_missing: int = 0
    """In place: points that have the original vector but no ``coarse`` (0 in copy mode)."""
    full_digest_equal: bool | None = None
    """In place with ``verify="full"``: whether every point's payload and vectors hash as before."""
    full_vector_absent: bool | None = None
    """Prefix only: whether the target holds no full vector (none in its config, none on a checked point)."""
    quality: dict[str, Any] | None = None
    """Prefix only: the plan's metric measured on the target (``metric``, ``predicted``, ``measured``,
    ``difference``, ``queries``)."""

    @property
    def passed(self) -> bool:
        return (
            self.counts_equal
            and self.missing == 0
            and self.payload_mismatches == 0
            and self.vector_mismatches == 0
            and self.coarse_missing == 0
            and self.full_digest_equal is not False
            and self.full_vector_absent is not False
        )

    def to_dict(self) -> dict[str, Any]:
        out = {**asdict(self), "passed": self.passed}
        for key in ("full_vector_absent", "quality"):  # prefix only; other reports keep the first version's keys
            if out[key] is None:
                out.pop(key)
        return out


@dataclass
class BatchEvent:
    """Passed to ``on_batch`` after each batch is acknowledged (and before the checkpoint may be written)."""

    batch: int
    copied: int
    total: int


@dataclass
class MigrationReport:
    """What ``migrate_collection`` did: counts, verification, recall, alias."""

    plan: MigrationPlan
    dry_run: bool
    copied_this_run: int = 0
    copied_total: int = 0
    resumed_from: int = 0
    batches: int = 0
    seconds: float = 0.0
    adaptor_trained: bool = False
    points_without_vector: int = 0
    verification: VerificationResult | None = None
    alias_switched: bool = False
    state: str = "planned"
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """A dry run, or a migration whose verification passed."""
        return self.dry_run or (self.verification is not None and self.verification.passed)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["plan"] = self.plan.to_dict()
        out["verification"] = None if self.verification is None else self.verification.to_dict()
        out["ok"] = self.ok
        return out

    def describe(self) -> str:
        if self.dry_run:
            return self.plan.describe() + "\n(dry run: nothing was written)"
        in_place = self.plan.mode == "in_place"
        if in_place:
            lines = [
                f"gave {self.copied_this_run:,} points a 'coarse' vector this run"
                + (f" (resumed after {self.resumed_from:,})" if self.resumed_from else "")
                + f" in {self.plan.target!r}; {self.copied_total:,} of {self.plan.points:,} in total, {self.seconds:.1f} s"
            ]
        else:
            lines = [
                f"copied {self.copied_this_run:,} points this run"
                + (f" (resumed after {self.resumed_from:,})" if self.resumed_from else "")
                + f" into {self.plan.target!r}; {self.copied_total:,} of {self.plan.points:,} in total, {self.seconds:.1f} s"
            ]
        if self.points_without_vector:
            what = "left without coarse" if in_place else "copied without coarse/full"
            lines.append(f"{self.points_without_vector:,} points have no {self.plan.vector!r} vector: {what}")
        if self.plan.prefix_only is not None:
            p = self.plan.prefix_only
            lines.append(
                f"storage: the target keeps {human_bytes(p['target_vector_bytes'])} of vector a point instead of "
                f"{human_bytes(p['source_vector_bytes'])}: ~{human_bytes(p['bytes_saved'])} less than the source "
                "(vector bytes, estimate)"
            )
        elif self.plan.storage:
            needed = self.plan.storage["in_place" if in_place else "copy"]
            lines.append(
                f"storage: this {'in-place' if in_place else 'copy'} migration needed ~{human_bytes(needed['disk_bytes'])} "
                f"more disk and ~{human_bytes(needed['ram_bytes'])} more RAM on the server "
                + (
                    f"(copy mode would have needed ~{human_bytes(self.plan.storage['copy']['disk_bytes'])} / "
                    f"~{human_bytes(self.plan.storage['copy']['ram_bytes'])})"
                    if in_place
                    else f"(in place would need ~{human_bytes(self.plan.storage['in_place']['disk_bytes'])} / "
                    f"~{human_bytes(self.plan.storage['in_place']['ram_bytes'])})"
                )
                + "; estimates from points x dims x 4 bytes"
            )
        v = self.verification
        if v is not None:
            if in_place:
                lines.append(
                    f"verification ({v.mode}): {'PASSED' if v.passed else 'FAILED'}: counts {v.source_count:,} before / "
                    f"{v.target_count:,} now, {v.coarse_missing} points without coarse, {v.checked:,} sampled points "
                    f"compared bit for bit: {v.missing} missing, {v.payload_mismatches} payload and "
                    f"{v.vector_mismatches} vector changes"
                    + (
                        ""
                        if v.full_digest_equal is None
                        else f"; digest of every point {'unchanged' if v.full_digest_equal else 'CHANGED'}"
                    )
                )
            else:
                lines.append(
                    f"verification ({v.mode}): {'PASSED' if v.passed else 'FAILED'}: counts {v.source_count:,} / {v.target_count:,}, "
                    f"{v.checked:,} points compared, {v.missing} missing, {v.payload_mismatches} payload and "
                    f"{v.vector_mismatches} vector mismatches (max full-vector diff {v.max_full_vector_diff:.2g})"
                )
            if v.full_vector_absent is not None:
                lines.append(
                    "prefix only: "
                    + ("no full vector in the target" if v.full_vector_absent else "the target HOLDS a full vector")
                    + f"; coarse within {v.full_vector_tolerance:g} of the recomputed prefix (max diff "
                    f"{v.max_full_vector_diff:.2g})"
                )
            if v.quality is not None and v.quality.get("measured") is not None:
                q = v.quality
                lines.append(
                    f"quality: {q['metric']} of the prefix alone on the target {q['measured']:.4f}, planned "
                    f"{q['predicted']:.4f} (difference {q['difference']:+.4f}, {q['queries']} queries)"
                )
            elif v.recall_at_10 is not None:
                lines.append(
                    f"recall@10 of matryoshka search vs exact full-dim search: {v.recall_at_10:.4f} "
                    f"({v.recall_queries} sampled queries, {v.candidates} candidates)"
                )
            lines += [f"  {e}" for e in v.examples[:5]]
        if self.plan.alias:
            lines.append(
                f"alias {self.plan.alias!r} -> {self.plan.target!r}"
                if self.alias_switched
                else f"alias {self.plan.alias!r} NOT switched (verification did not pass)"
            )
        return joined(lines, "warning: ", self.warnings)


@dataclass
class RollbackReport:
    """What :func:`rollback_in_place` removed (only what the in-place migration had added)."""

    endpoint: str
    collection: str
    removed_vector: str | None
    removed_metadata_keys: list[str]
    removed_companion: str | None
    points: int
    state_before: str | None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return True

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": True}

    def describe(self) -> str:
        removed = [f"vector {self.removed_vector!r}"] if self.removed_vector else []
        removed += [f"metadata {k!r}" for k in self.removed_metadata_keys]
        if self.removed_companion:
            removed.append(f"companion collection {self.removed_companion!r}")
        return (
            f"rolled back the in-place migration of {self.collection!r} at {self.endpoint} (state was "
            f"{self.state_before!r}): removed {', '.join(removed) or 'nothing (nothing was left)'}; "
            f"{self.points:,} points, their payloads and original vectors untouched ({self.seconds:.1f} s)"
        )


def prefix_only_lines(p: dict[str, Any]) -> list[str]:
    """A prefix-only plan's lines: the bytes saved and the quality the prefix keeps."""
    q = p.get("quality") or {}
    lines = [
        f"prefix:   'coarse' ({p['dim']} dims) alone: {human_bytes(p['source_vector_bytes'])} -> "
        f"{human_bytes(p['target_vector_bytes'])} of vector a point, saves {human_bytes(p['bytes_saved_per_point'])} "
        f"a point, ~{human_bytes(p['bytes_saved'])} in all against the source (the source vector's HNSW links go too)"
    ]
    if q.get("predicted") is not None:
        kept = f" (full dim {q['full_dim']:.4f}, {q['kept']:.1%} kept)" if q.get("kept") is not None else ""
        lines.append(f"quality:  {q['metric']} {q['predicted']:.4f}{kept}: {q['basis']}")
    return lines


def joined(lines: list[str], label: str, items: list[str]) -> str:
    """The lines, then one labelled line per item, as one text."""
    return "\n".join([*lines, *(label + item for item in items)])


def human_seconds(s: float) -> str:
    if s < 90:
        return f"{s:.0f} s"
    if s < 5400:
        return f"{s / 60:.0f} min"
    return f"{s / 3600:.1f} h"


__all__ = [
    "BatchEvent",
    "MigrationPlan",
    "MigrationReport",
    "RollbackReport",
    "VerificationResult",
    "human_bytes",
    "human_seconds",
]
