"""Migrate an existing Qdrant collection to the matryoshka layout, losing nothing: copy mode or in place.

Copy mode (the default)
-----------------------
``migrate_collection(client, "docs", ...)`` (and ``mindex migrate``) follows these steps:

1. **Read** the source's config: its single unnamed vector or the named vector chosen with
   ``vector=``; every other named (dense, multi) and sparse vector is carried over unchanged, as are
   payload indexes and the collection's shard/replication settings. Count the points exactly.
2. **Adaptor**: train one (unsupervised) on a random sample of the source's vectors, or load the
   one given. It is stored with the target (companion collection) *before* any point is copied,
   so a resumed run uses exactly the same adaptor.
3. **Create** the target with the other vectors plus ``coarse`` (adapted prefix, HNSW) and ``full``
   (the chosen vector, HNSW off), then copy every point (id, payload, vectors) in batches, with a
   progress bar, concurrent upserts (server mode) and retries with backoff on transient errors.
4. **Checkpoint**: the scroll offset below which every batch has been acknowledged, and the count,
   kept in the *target collection's metadata* (key ``matryoshka_index_migration``). It lives on
   the server, next to the data it describes: it survives a crash or Ctrl-C of this process (or of
   the machine running it), can be resumed from any machine, and disappears with the target if
   the target is dropped, so it can never point at data that is gone. ``resume=True`` continues from
   it; batches written after the checkpoint are simply written again, and an upsert by id is
   idempotent, so nothing is duplicated or skipped.
5. **Verify**: exact counts equal; a random sample of points (``verify="full"``: all of them) compared
   for payload equality and vector equality; recall@10 of matryoshka search against exact
   full-dimension search on sampled queries.
6. **Alias**: only after verification passed, ``alias`` is switched to the target in one atomic
   ``update_collection_aliases`` request, so readers never see a half-migrated collection.
   The source collection is never modified or deleted.
7. ``dry_run=True`` returns the plan (points, dims, estimated size and time) and writes nothing.

In place (``in_place=True``, ``mindex migrate --in-place``)
-----------------------------------------------------------
Needs Qdrant >= 1.18, which can add a named vector to an existing collection
(``create_vector_name``; ``update_collection(vectors_config=...)`` cannot). The collection gains
``coarse`` and nothing else: every existing vector and payload stays as it is, no second copy of the
data is written, and the collection's original vector (named or unnamed) serves as the full vector
for the rerank (the index record names it). Steps:

1. **Read** the collection as in copy mode; check the server version (``client.info()``): an older
   server is refused with one line before anything is written.
2. **Fingerprint** what must not change, before changing anything: a random sample of points
   (``verify_sample``), each with a digest of its payload and one of all its vectors, and with
   ``verify="full"`` an order-independent digest of every point. They are kept in the companion
   collection ``<collection>__mindex_meta`` (record ``matryoshka_index_migration_check``).
3. **Adaptor** trained or loaded as in copy mode, stored in the companion collection; the index
   record goes into the collection metadata (``matryoshka_index``), the migration record and
   checkpoint too (``matryoshka_index_migration``, ``mode: "in_place"``).
4. ``create_vector_name("coarse")`` (dense, ``coarse_dim``, the collection's distance; HNSW and
   quantization as the collection's defaults, or ``coarse_quantization`` set on ``coarse`` with
   ``update_collection``), then **batched** ``update_vectors`` of ``coarse`` alone, with the same
   checkpoint/resume as copy mode (an update is idempotent, so batches redone after a crash change
   nothing).
5. **Verify**: the point count is unchanged; every point that has the original vector has
   ``coarse``; the sampled points' payload and vector digests are unchanged (``verify="full"``:
   every point's, through the collection digest); recall@10 as in copy mode.
6. ``rollback_in_place(client, "docs")`` (``mindex migrate --rollback``) removes what the migration
   added and nothing else: the ``coarse`` vector (``delete_vector_name``), our metadata keys and the
   companion collection when the migration created it. It refuses a collection whose ``coarse`` was
   not added by an in-place migration.

While an in-place migration is unfinished, ``MatryoshkaIndex.from_qdrant`` refuses the collection
(the user's own searches on their own vector are unaffected throughout). Points the application
writes later without a ``coarse`` vector are invisible to matryoshka search (add them through
:class:`~matryoshka_index.MatryoshkaIndex`, or give them ``coarse`` with the adaptor).

Both modes
----------
The plan and the report give the extra disk and RAM each mode needs, as estimates: points x dims x
bytes per value (4 for float32), payloads measured on a sampled batch; HNSW links, payload indexes
and the write-ahead log come on top.

Cosine collections store their vectors normalised (Qdrant normalises on upsert), so the original
norms are not recoverable by any migration, and writing an already-normalised vector into the Cosine
``full`` vector normalises it again, which may change its last bits: in copy mode full vectors (and
other Cosine vectors) are compared within ``1e-6`` per component; Dot vectors, sparse vectors and
payloads must be identical. In place nothing is rewritten, so everything must be bit-identical.
Only Cosine and Dot sources are supported (matryoshka search ranks by inner product). The source
should not be written to during a migration: points added behind the cursor would be missed, which
verification then reports (a count mismatch, or points without ``coarse``).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from qdrant_client import QdrantClient
from qdrant_client import models as qm

from ._version import __version__
from .backends.qdrant_backend import (
    COARSE,
    COMPANION_SUFFIX,
    FULL,
    META_KEY,
    MIGRATION_KEY,
    MetadataStore,
    QdrantBackend,
    _metric_of,
    _now,
    _quantization,
    _record,
    call,
    describe_client,
    is_foreign_id,
    point_handle,
    require_collection,
    vector_params,
)
from .errors import BackendError, InputError
from .progress import progress
from .validation import check_positive_int

MIGRATION_FORMAT = "matryoshka-index-migration"
MIGRATION_VERSION = 1
CHECK_KEY = "matryoshka_index_migration_check"
MIN_IN_PLACE_VERSION = (1, 18)
ESTIMATE_BASIS = (
    "estimates: points x dims x bytes per value (4 for float32), payloads measured on a sampled batch; "
    "HNSW links, payload indexes and the write-ahead log come on top"
)
DEFAULT_COARSE_DIM = 64
FULL_VECTOR_TOLERANCE = 1e-6
_DTYPE_BYTES = {"float32": 4, "float16": 2, "uint8": 1}
_MIN_TRAIN_ROWS = 32


# ------------------------------------------------------------------------------------------ reports


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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def _storage_lines(self) -> list[str]:
        if not self.storage:
            return []
        c, i = self.storage["copy"], self.storage["in_place"]
        return [
            f"storage:  copy mode needs ~{_human_bytes(c['disk_bytes'])} more disk and ~{_human_bytes(c['ram_bytes'])} "
            f"more RAM (a second copy of every point); in place ~{_human_bytes(i['disk_bytes'])} disk and "
            f"~{_human_bytes(i['ram_bytes'])} RAM (the coarse vectors only)",
            f"          ({self.storage['basis']})",
        ]

    def describe(self) -> str:
        """The plan as readable lines (what ``mindex migrate --dry-run`` prints)."""
        vec = "its unnamed vector" if self.vector is None else f"vector {self.vector!r}"
        source = (
            f"source:   {self.source_collection!r}"
            + (f" (via alias {self.source!r})" if self.source != self.source_collection else "")
            + f" at {self.endpoint}: {self.points:,} points, {vec}, {self.full_dim} dims, {self.metric}"
        )
        time_line = (
            "time:     "
            + (
                f"{'update' if self.mode == 'in_place' else 'copy'} ~{_human_seconds(self.estimated_copy_seconds)} "
                f"(rough: measured read speed x {2 if self.mode == 'in_place' else 3})"
                if self.estimated_copy_seconds is not None
                else "not estimated"
            )
            + ("; adaptor training not estimated (depends on the device)" if self.train_rows else "")
        )
        if self.mode == "in_place":
            lines = [
                source,
                f"in place: adds 'coarse' ({self.coarse_dim} dims) to {self.source_collection!r}; {vec} "
                "becomes the rerank vector; every existing vector and payload is left untouched (no second copy)",
                f"adaptor:  {self.adaptor}",
                f"update:   {self.points - self.resume_from:,} points in batches of {self.batch_size}"
                + (f", resuming after {self.resume_from:,} already updated" if self.resume_from else ""),
                f"size:     coarse vectors ~{_human_bytes(self.estimated_target_bytes)} (vectors + coarse HNSW); "
                f"this process ~{_human_bytes(self.estimated_process_bytes)}",
                time_line,
                *self._storage_lines(),
            ]
            lines += [f"note:     {n}" for n in self.notes]
            return "\n".join(lines)
        lines = [
            source,
            f"target:   {self.target!r} with 'coarse' ({self.coarse_dim} dims, HNSW) + 'full' ({self.full_dim} dims, rerank only)"
            + (
                f"; carried over unchanged: {', '.join(self.other_vectors + self.sparse_vectors)}"
                if self.other_vectors or self.sparse_vectors
                else ""
            ),
            f"adaptor:  {self.adaptor}",
            f"copy:     {self.points - self.resume_from:,} points in batches of {self.batch_size}"
            + (f", resuming after {self.resume_from:,} already copied" if self.resume_from else ""),
            f"size:     target collection ~{_human_bytes(self.estimated_target_bytes)} (vectors + payload + coarse HNSW); "
            f"this process ~{_human_bytes(self.estimated_process_bytes)}",
            time_line,
            *self._storage_lines(),
        ]
        if self.payload_indexes:
            lines.append(f"indexes:  payload indexes recreated: {', '.join(self.payload_indexes)}")
        if self.alias:
            now = f"now -> {self.alias_now_points_to!r}" if self.alias_now_points_to else "new alias"
            lines.append(f"alias:    {self.alias!r} switched to {self.target!r} after verification ({now})")
        lines += [f"note:     {n}" for n in self.notes]
        return "\n".join(lines)


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

    @property
    def passed(self) -> bool:
        return (
            self.counts_equal
            and self.missing == 0
            and self.payload_mismatches == 0
            and self.vector_mismatches == 0
            and self.coarse_missing == 0
            and self.full_digest_equal is not False
        )

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed}


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
        if self.plan.storage:
            needed = self.plan.storage["in_place" if in_place else "copy"]
            lines.append(
                f"storage: this {'in-place' if in_place else 'copy'} migration needed ~{_human_bytes(needed['disk_bytes'])} "
                f"more disk and ~{_human_bytes(needed['ram_bytes'])} more RAM on the server "
                + (
                    f"(copy mode would have needed ~{_human_bytes(self.plan.storage['copy']['disk_bytes'])} / "
                    f"~{_human_bytes(self.plan.storage['copy']['ram_bytes'])})"
                    if in_place
                    else f"(in place would need ~{_human_bytes(self.plan.storage['in_place']['disk_bytes'])} / "
                    f"~{_human_bytes(self.plan.storage['in_place']['ram_bytes'])})"
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
            if v.recall_at_10 is not None:
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
        lines += [f"warning: {w}" for w in self.warnings]
        return "\n".join(lines)


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


def _human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover


def _human_seconds(s: float) -> str:
    if s < 90:
        return f"{s:.0f} s"
    if s < 5400:
        return f"{s / 60:.0f} min"
    return f"{s / 3600:.1f} h"


# ----------------------------------------------------------------------------------- source config


@dataclass
class _Source:
    name: str
    info: qm.CollectionInfo
    vector: str | None
    params: qm.VectorParams
    metric: str
    others: dict[str, qm.VectorParams]
    sparse: dict[str, qm.SparseVectorParams]
    count: int


def _in_place_record(client: QdrantClient, collection: str, endpoint: str) -> dict[str, Any] | None:
    """The migration record of an in-place migration of ``collection`` (None when there is none)."""
    record = MetadataStore(client, collection, endpoint).read(MIGRATION_KEY)
    if record is None or record.get("format") != MIGRATION_FORMAT or record.get("mode") != "in_place":
        return None
    return record


def _read_source(
    client: QdrantClient, collection: str, vector: str | None, endpoint: str, *, in_place: bool = False
) -> _Source:
    """The source's config. ``in_place``: a ``coarse`` vector our own in-place migration added is expected."""
    real = require_collection(client, collection, endpoint)
    if real.endswith(COMPANION_SUFFIX):
        raise InputError(f"collection: {real!r} holds matryoshka-index metadata, not points to migrate")
    info = call(lambda: client.get_collection(real), endpoint, f"reading collection {real!r}", retries=3)
    params = vector_params(info)
    sparse = dict(info.config.params.sparse_vectors or {})
    if getattr(info.config.params, "sharding_method", None) == qm.ShardingMethod.CUSTOM:
        raise InputError(
            f"collection {real!r} uses custom sharding (shard keys), which mindex migrate does not support yet"
        )
    meta = info.config.metadata or {}
    own = _in_place_record(client, real, endpoint) if MIGRATION_KEY in meta or META_KEY in meta else None
    if own is not None and not in_place:
        raise InputError(
            f"collection {real!r} holds an in-place migration (state {own.get('state')!r}); continue or re-verify "
            "it with --in-place --resume, or undo it with --rollback"
        )
    if own is None and (META_KEY in meta or (COARSE in params and FULL in params)):
        raise InputError(
            f"collection {real!r} already has the matryoshka layout; open it with MatryoshkaIndex.from_qdrant"
        )
    if own is not None:
        if vector is None:
            vector = own.get("vector")
        elif vector != own.get("vector"):
            raise InputError(
                f"vector: the in-place migration of {real!r} adapts vector {own.get('vector')!r}, not {vector!r}; "
                "drop --vector to resume it"
            )
        params = {n: p for n, p in params.items() if n != COARSE}
    if "" in params:
        if vector not in (None, ""):
            raise InputError(
                f"vector: collection {real!r} has a single unnamed vector, no vector named {vector!r}; drop --vector"
            )
        chosen, vp = None, params[""]
    else:
        dense = [n for n, p in params.items() if p.multivector_config is None]
        if vector is None:
            if len(dense) != 1:
                what = "no dense vectors" if not dense else f"several named vectors ({', '.join(sorted(dense))})"
                raise InputError(
                    f"vector: collection {real!r} has {what}; choose the one to migrate with --vector NAME"
                )
            vector = dense[0]
        if vector not in params:
            kind = " (a sparse vector; choose a dense one)" if vector in sparse else ""
            have = ", ".join(sorted(params)) or "none"
            raise InputError(f"vector: collection {real!r} has no dense vector named {vector!r}{kind}; it has: {have}")
        if params[vector].multivector_config is not None:
            raise InputError(f"vector: {vector!r} of collection {real!r} is a multivector, which cannot be adapted")
        chosen, vp = vector, params[vector]
    try:
        metric = _metric_of(vp.distance)
    except InputError:
        raise InputError(
            f"vector: {chosen or 'the vector'!r} of collection {real!r} uses {vp.distance.value} distance; "
            "matryoshka search ranks by inner product, so only Cosine and Dot collections can be migrated"
        ) from None
    others = {n: p for n, p in params.items() if n not in ("", chosen)}
    clash = sorted(({COARSE} if in_place else {COARSE, FULL}) & (set(others) | set(sparse)))
    if clash:
        raise InputError(
            f"collection {real!r} already has a vector named {', '.join(map(repr, clash))}, which the matryoshka layout "
            "needs for itself; mindex migrate cannot " + ("add its own next to it" if in_place else "carry it over")
        )
    count = int(call(lambda: client.count(real, exact=True), endpoint, "counting points", retries=3).count)
    return _Source(real, info, chosen, vp, metric, others, sparse, count)


def _vector_of(record: Any, name: str | None) -> Any:
    vec = record.vector
    if isinstance(vec, dict):
        return vec.get("" if name is None else name)
    return vec if name is None else None


# ------------------------------------------------------------------------------------------ adaptor


def _load_adaptor(adaptor: Any) -> Any:
    from .adaptor import MatryoshkaAdaptor  # the migration composes the adaptor with Qdrant

    if isinstance(adaptor, MatryoshkaAdaptor):
        adaptor._check_fitted()
        return adaptor
    return MatryoshkaAdaptor.load(adaptor)


def _check_adaptor(adaptor: Any, src: _Source, coarse_dim: int) -> None:
    if adaptor.input_dim_ != src.params.size:
        vec = "the unnamed vector" if src.vector is None else f"vector {src.vector!r}"
        raise InputError(
            f"adaptor: expects {adaptor.input_dim_}-dim embeddings but {vec} of collection {src.name!r} has "
            f"{src.params.size} dims; give an adaptor trained on this model's embeddings, or omit it to train one"
        )
    if coarse_dim >= adaptor.input_dim_:
        raise InputError(f"coarse_dim: {coarse_dim} must be smaller than the vectors' {adaptor.input_dim_} dims")


def _weights_sha(files: dict[str, bytes]) -> str:
    import hashlib

    return hashlib.sha256(files.get("adaptor.safetensors", b"")).hexdigest()


def _sample_vectors(
    client: QdrantClient, src: _Source, n: int, endpoint: str, seed: int, warnings: list[str]
) -> np.ndarray:
    """Up to ``n`` of the source's vectors, drawn at random (Qdrant's random sample query)."""
    with_vectors: Any = True if src.vector is None else [src.vector]
    rows: dict[Any, Any] = {}
    if n < src.count // 2:
        rounds = 0
        try:
            while len(rows) < n and rounds < 4 * (n // 1000 + 1) + 10:
                rounds += 1
                got = call(
                    lambda: client.query_points(
                        src.name,
                        query=qm.SampleQuery(sample=qm.Sample.RANDOM),
                        limit=min(2000, n - len(rows)),
                        with_payload=False,
                        with_vectors=with_vectors,
                    ),
                    endpoint,
                    "sampling vectors",
                    retries=3,
                ).points
                for p in got:
                    v = _vector_of(p, src.vector)
                    if v is not None:
                        rows[p.id] = v
        except BackendError as exc:  # servers before 1.11 have no random sampling
            warnings.append(f"random sampling failed ({exc}); trained on the first points by id instead")
            rows = {}
    if not rows:
        offset = None
        scan_all = n >= src.count // 2
        while True:
            records, offset = call(
                lambda o=offset: client.scroll(
                    src.name, limit=2048, offset=o, with_payload=False, with_vectors=with_vectors
                ),
                endpoint,
                "reading vectors",
                retries=3,
            )
            for r in records:
                v = _vector_of(r, src.vector)
                if v is not None:
                    rows[r.id] = v
            if offset is None or (not scan_all and len(rows) >= n):
                break
    x = np.asarray(list(rows.values()), dtype=np.float32).reshape(-1, src.params.size)
    if len(x) > n:
        x = x[np.sort(np.random.default_rng(seed).choice(len(x), size=n, replace=False))]
    return x


def _train_adaptor(
    x: np.ndarray, full_dim: int, coarse_dim: int, seed: int, quiet: bool, options: dict[str, Any]
) -> Any:
    from .adaptor import MatryoshkaAdaptor
    from .adaptor.estimator import default_matryoshka_dims

    if len(x) < _MIN_TRAIN_ROWS:
        raise InputError(
            f"collection has only {len(x)} vectors to train an adaptor on (at least {_MIN_TRAIN_ROWS} are needed); "
            "pass a trained one with --adaptor"
        )
    options = dict(options)
    dims = sorted({d for d in default_matryoshka_dims(full_dim) if d < full_dim} | {coarse_dim})
    n_val = min(round(len(x) * float(options.get("val_fraction", 0.05))), 4096)
    # a small collection still trains: the batch never exceeds half of the training rows
    cap = max(4, (len(x) - n_val) // 2)
    options["batch_size"] = min(int(options.get("batch_size", 1024)), cap)
    options.setdefault("matryoshka_dims", dims)
    options.setdefault("seed", seed)
    options.setdefault("quiet", quiet)
    options["max_samples"] = None  # already sampled
    return MatryoshkaAdaptor(**options).fit(x)


def _coarse_vectors(adaptor: Any, x: np.ndarray, coarse_dim: int, metric: str) -> np.ndarray:
    """The adapted prefix of each row (normalised for cosine); all-zero rows give zero vectors."""
    out = np.zeros((len(x), coarse_dim), dtype=np.float32)
    nonzero = x.any(axis=1)
    if nonzero.any():
        out[nonzero] = adaptor.transform(x[nonzero], dim=coarse_dim)
    if metric == "cosine":
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        out = np.divide(out, norms, out=np.zeros_like(out), where=norms > 0)
    return out


# ------------------------------------------------------------------------------------------- target


def _target_vectors_config(
    src: _Source, coarse_dim: int, on_disk: bool | None, coarse_quantization: str | None
) -> dict[str, qm.VectorParams]:
    collection_quant = src.info.config.quantization_config
    vectors: dict[str, qm.VectorParams] = {}
    for name, p in src.others.items():
        # the source's collection-wide quantization moves onto each carried vector, so that
        # `full` (rerank) stays unquantized while everything else keeps its own setting
        if p.quantization_config is None and collection_quant is not None:
            p = p.model_copy(update={"quantization_config": collection_quant})
        vectors[name] = p
    vectors[COARSE] = qm.VectorParams(
        size=coarse_dim,
        distance=src.params.distance,
        quantization_config=_quantization(coarse_quantization, True),
    )
    vectors[FULL] = qm.VectorParams(
        size=src.params.size,
        distance=src.params.distance,
        datatype=src.params.datatype,
        on_disk=src.params.on_disk if on_disk is None else on_disk,
        hnsw_config=qm.HnswConfigDiff(m=0),  # only read to rerank prefetched candidates
    )
    return vectors


def _create_target(
    client: QdrantClient,
    src: _Source,
    target: str,
    endpoint: str,
    *,
    coarse_dim: int,
    on_disk: bool | None,
    coarse_quantization: str | None,
    shard_number: int | None,
    replication_factor: int | None,
    migration_record: dict[str, Any],
) -> None:
    p = src.info.config.params
    cfg = src.info.config
    kwargs: dict[str, Any] = {
        "vectors_config": _target_vectors_config(src, coarse_dim, on_disk, coarse_quantization),
        "sparse_vectors_config": src.sparse or None,
        "shard_number": shard_number if shard_number is not None else p.shard_number,
        "replication_factor": replication_factor if replication_factor is not None else p.replication_factor,
        "write_consistency_factor": p.write_consistency_factor,
        "on_disk_payload": p.on_disk_payload,
    }
    if cfg.hnsw_config is not None:
        kwargs["hnsw_config"] = qm.HnswConfigDiff(**cfg.hnsw_config.model_dump(exclude_none=True))
    if cfg.wal_config is not None:
        kwargs["wal_config"] = qm.WalConfigDiff(**cfg.wal_config.model_dump(exclude_none=True))
    if cfg.optimizer_config is not None:
        opt = cfg.optimizer_config.model_dump(exclude_none=True)
        fields = qm.OptimizersConfigDiff.model_fields
        kwargs["optimizers_config"] = qm.OptimizersConfigDiff(**{k: v for k, v in opt.items() if k in fields})
    # the source's own metadata is carried over; the migration record makes the target
    # recognisable as ours from the moment it exists (one request: no orphan without a record)
    metadata = {**(cfg.metadata or {}), MIGRATION_KEY: json.dumps(migration_record, sort_keys=True)}
    try:
        call(
            lambda: client.create_collection(target, metadata=metadata, **kwargs),
            endpoint,
            f"creating collection {target!r}",
            retries=3,
        )
    except BackendError as exc:
        if "metadata" not in str(exc).lower():
            raise
        # a server before 1.16 knows no collection metadata: the record goes to the companion
        call(lambda: client.create_collection(target, **kwargs), endpoint, f"creating collection {target!r}", retries=3)
        MetadataStore(client, target, endpoint).write(migration_record, MIGRATION_KEY)
    for field_name, schema in (src.info.payload_schema or {}).items():
        call(
            lambda f=field_name, s=schema: client.create_payload_index(
                target, field_name=f, field_schema=s.params if s.params is not None else s.data_type, wait=True
            ),
            endpoint,
            f"creating payload index {field_name!r}",
            retries=3,
        )


# --------------------------------------------------------------------------------------------- copy


class _Writer:
    """Writes batches (upserts, or ``update_vectors`` in place), concurrently on a server; synchronously
    in local mode (one SQLite thread)."""

    def __init__(
        self,
        client: QdrantClient,
        collection: str,
        endpoint: str,
        parallel: int,
        retries: int,
        *,
        in_place: bool = False,
    ) -> None:
        self.client, self.collection, self.endpoint, self.retries = client, collection, endpoint, retries
        self.in_place = in_place
        local = hasattr(getattr(client, "_client", None), "persistent")
        self.pool = ThreadPoolExecutor(parallel) if parallel > 1 and not local else None
        self.parallel = 1 if self.pool is None else parallel

    def _write(self, points: list[Any]) -> None:
        if self.in_place:
            call(
                lambda: self.client.update_vectors(self.collection, points, wait=True),
                self.endpoint,
                "adding coarse vectors",
                retries=self.retries,
            )
            return
        call(
            lambda: self.client.upsert(self.collection, points, wait=True),
            self.endpoint,
            "copying points",
            retries=self.retries,
        )

    def submit(self, points: list[Any]) -> Future:
        if self.pool is not None:
            return self.pool.submit(self._write, points)
        fut: Future = Future()
        try:
            self._write(points)
        except Exception as exc:
            fut.set_exception(exc)
        else:
            fut.set_result(None)
        return fut

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)


def _convert(records: list[Any], src: _Source, adaptor: Any, coarse_dim: int) -> tuple[list[qm.PointStruct], int]:
    fulls: list[Any] = []
    which: list[int] = []
    for i, r in enumerate(records):
        v = _vector_of(r, src.vector)
        if v is not None:
            fulls.append(v)
            which.append(i)
    coarse = None
    if fulls:
        coarse = _coarse_vectors(adaptor, np.asarray(fulls, dtype=np.float32), coarse_dim, src.metric)
    slot = {i: j for j, i in enumerate(which)}
    points = []
    for i, r in enumerate(records):
        vec = r.vector if isinstance(r.vector, dict) else {}
        vectors: dict[str, Any] = {k: v for k, v in vec.items() if k in src.others or k in src.sparse}
        if i in slot:
            vectors[FULL] = fulls[slot[i]]
            vectors[COARSE] = coarse[slot[i]].tolist()  # type: ignore[index]
        points.append(qm.PointStruct(id=r.id, vector=vectors, payload=r.payload or {}))
    return points, len(records) - len(which)


def _convert_in_place(
    records: list[Any], src: _Source, adaptor: Any, coarse_dim: int
) -> tuple[list[qm.PointVectors], int]:
    """``coarse`` alone for every record that has the adapted vector (nothing else is sent back)."""
    ids: list[Any] = []
    fulls: list[Any] = []
    for r in records:
        v = _vector_of(r, src.vector)
        if v is not None:
            ids.append(r.id)
            fulls.append(v)
    if not fulls:
        return [], len(records)
    coarse = _coarse_vectors(adaptor, np.asarray(fulls, dtype=np.float32), coarse_dim, src.metric)
    points = [qm.PointVectors(id=pid, vector={COARSE: c.tolist()}) for pid, c in zip(ids, coarse, strict=True)]
    return points, len(records) - len(points)


def _checkpoint(store: MetadataStore, record: dict[str, Any], **changes: Any) -> None:
    record.update(changes, updated=_now())
    store.write(record, MIGRATION_KEY)


def _copy(
    client: QdrantClient,
    src: _Source,
    target: str,
    endpoint: str,
    adaptor: Any,
    coarse_dim: int,
    record: dict[str, Any],
    store: MetadataStore,
    *,
    batch_size: int,
    parallel: int,
    retries: int,
    checkpoint_seconds: float,
    quiet: bool,
    on_batch: Callable[[BatchEvent], None] | None,
    in_place: bool = False,
) -> tuple[int, int, int]:
    """Copy (or, ``in_place``, add ``coarse`` to) every point from the checkpoint to the end.

    Returns (points processed now, batches, points without the vector). The checkpoint counts
    processed points under ``"copied"`` in copy mode and ``"coarse_added"`` in place.
    """
    count_key = "coarse_added" if in_place else "copied"
    offset = record.get("offset")
    copied = int(record.get(count_key, 0))
    start_copied = copied
    batches = int(record.get("batches", 0))
    no_vector = int(record.get("points_without_vector", 0))
    writer = _Writer(client, target, endpoint, parallel, retries, in_place=in_place)
    pending: deque[tuple[Future, Any, int, int]] = deque()
    last_write = time.monotonic()
    flushed = (offset, copied)
    state = {"offset": offset, "copied": copied, "batches": batches, "no_vector": no_vector}

    def commit(block: bool) -> None:
        nonlocal last_write, flushed
        while pending and (block or pending[0][0].done()):
            fut, next_offset, n, missing = pending.popleft()
            fut.result()  # raises the batch's error; the checkpoint stays before it
            state["offset"], state["copied"] = next_offset, state["copied"] + n
            state["batches"] += 1
            state["no_vector"] += missing
            bar.update(n)
            if on_batch is not None:
                on_batch(BatchEvent(state["batches"], state["copied"], src.count))
            if time.monotonic() - last_write >= checkpoint_seconds:
                flush()
                last_write = time.monotonic()

    def flush() -> None:
        nonlocal flushed
        if (state["offset"], state["copied"]) != flushed:
            _checkpoint(
                store,
                record,
                offset=state["offset"],
                batches=state["batches"],
                points_without_vector=state["no_vector"],
                **{count_key: state["copied"]},
            )
            flushed = (state["offset"], state["copied"])

    # in place only the adapted vector is read back (and no payload): nothing else is rewritten
    with_vectors: Any = True if not in_place or src.vector is None else [src.vector]
    desc = f"adding coarse to {src.name}" if in_place else f"copying {src.name} -> {target}"
    bar = progress(total=src.count, initial=copied, desc=desc, unit="pt", quiet=quiet)
    try:
        while True:
            records, next_offset = call(
                lambda o=offset: client.scroll(
                    src.name, limit=batch_size, offset=o, with_payload=not in_place, with_vectors=with_vectors
                ),
                endpoint,
                "reading points",
                retries=retries,
            )
            if records:
                if in_place:
                    points, missing = _convert_in_place(records, src, adaptor, coarse_dim)
                else:
                    points, missing = _convert(records, src, adaptor, coarse_dim)
                fut: Future = writer.submit(points) if points else _done()
                pending.append((fut, next_offset, len(records), missing))
            commit(block=len(pending) > 2 * writer.parallel)
            if next_offset is None:
                break
            offset = next_offset
        while pending:
            commit(block=True)
        _checkpoint(
            store,
            record,
            state="updated" if in_place else "copied",
            offset=None,
            batches=state["batches"],
            points_without_vector=state["no_vector"],
            **{count_key: state["copied"]},
        )
        flushed = (None, state["copied"])
    finally:
        writer.close()
        bar.close()
        if record.get("state") in ("copying", "updating"):
            try:  # best effort: on a dead server this fails too, and the last checkpoint stands
                flush()
            except Exception:
                pass
    return state["copied"] - start_copied, state["batches"], state["no_vector"]


def _done() -> Future:
    fut: Future = Future()
    fut.set_result(None)
    return fut


# ------------------------------------------------------------------------------------------- verify


def _same_vector(a: Any, b: Any, tolerance: float) -> tuple[bool, float]:
    if a is None or b is None:
        return a is None and b is None, 0.0
    if isinstance(a, qm.SparseVector) or isinstance(b, qm.SparseVector):
        if not (isinstance(a, qm.SparseVector) and isinstance(b, qm.SparseVector)):
            return False, float("inf")
        order_a, order_b = np.argsort(a.indices), np.argsort(b.indices)
        same = np.array_equal(np.asarray(a.indices)[order_a], np.asarray(b.indices)[order_b]) and np.array_equal(
            np.asarray(a.values, np.float32)[order_a], np.asarray(b.values, np.float32)[order_b]
        )
        return bool(same), 0.0 if same else float("inf")
    x, y = np.asarray(a, dtype=np.float32), np.asarray(b, dtype=np.float32)
    if x.shape != y.shape:
        return False, float("inf")
    diff = float(np.abs(x - y).max()) if x.size else 0.0
    return diff <= tolerance, diff


def _compare(src_points: list[Any], target_by_id: dict[Any, Any], src: _Source, result: VerificationResult) -> None:
    full_tol = FULL_VECTOR_TOLERANCE if src.metric == "cosine" else 0.0
    for p in src_points:
        result.checked += 1
        t = target_by_id.get(p.id)
        if t is None:
            result.missing += 1
            if len(result.examples) < 10:
                result.examples.append(f"point {p.id!r} is missing from the target")
            continue
        if (p.payload or {}) != (t.payload or {}):
            result.payload_mismatches += 1
            if len(result.examples) < 10:
                result.examples.append(f"point {p.id!r}: payload differs")
        tvec = t.vector if isinstance(t.vector, dict) else {}
        ok, diff = _same_vector(_vector_of(p, src.vector), tvec.get(FULL), full_tol)
        if np.isfinite(diff):
            result.max_full_vector_diff = max(result.max_full_vector_diff, diff)
        bad = [] if ok else ["full"]
        if (tvec.get(COARSE) is None) != (tvec.get(FULL) is None):
            bad.append("coarse")
        svec = p.vector if isinstance(p.vector, dict) else {}
        for name in list(src.others) + list(src.sparse):
            p_other = src.others.get(name)
            tol = FULL_VECTOR_TOLERANCE if p_other is not None and p_other.distance == qm.Distance.COSINE else 0.0
            if not _same_vector(svec.get(name), tvec.get(name), tol)[0]:
                bad.append(name)
        if bad:
            result.vector_mismatches += 1
            if len(result.examples) < 10:
                result.examples.append(f"point {p.id!r}: vector(s) {', '.join(bad)} differ")


def _retrieve(client: QdrantClient, collection: str, ids: list[Any], endpoint: str) -> dict[Any, Any]:
    out: dict[Any, Any] = {}
    for start in range(0, len(ids), 256):
        chunk = ids[start : start + 256]
        got = call(
            lambda c=chunk: client.retrieve(collection, c, with_payload=True, with_vectors=True),
            endpoint,
            "reading points back",
            retries=3,
        )
        out.update((p.id, p) for p in got)
    return out


def _random_points(client: QdrantClient, collection: str, n: int, endpoint: str) -> list[Any]:
    """About ``n`` distinct random points with payloads and vectors (falls back to the first ``n`` by id)."""
    seen: dict[Any, Any] = {}
    try:
        for _ in range(3 * (n // 500 + 1) + 5):
            if len(seen) >= n:
                break
            got = call(
                lambda: client.query_points(
                    collection,
                    query=qm.SampleQuery(sample=qm.Sample.RANDOM),
                    limit=min(500, n - len(seen)),
                    with_payload=True,
                    with_vectors=True,
                ),
                endpoint,
                "sampling points",
                retries=3,
            ).points
            for p in got:
                seen.setdefault(p.id, p)
    except BackendError:
        seen = {}
    if not seen:
        records, _ = call(
            lambda: client.scroll(collection, limit=n, with_payload=True, with_vectors=True),
            endpoint,
            "reading points",
            retries=3,
        )
        seen = {r.id: r for r in records}
    return list(seen.values())[:n]


def _verify(
    client: QdrantClient,
    src: _Source,
    target: str,
    endpoint: str,
    adaptor: Any,
    coarse_dim: int,
    *,
    mode: str,
    sample: int,
    recall_queries: int,
    candidates: int,
    quiet: bool,
) -> tuple[VerificationResult, dict[str, int]]:
    source_count = int(call(lambda: client.count(src.name, exact=True), endpoint, "counting", retries=3).count)
    target_count = int(call(lambda: client.count(target, exact=True), endpoint, "counting", retries=3).count)
    result = VerificationResult(
        mode=mode,
        source_count=source_count,
        target_count=target_count,
        counts_equal=source_count == target_count,
        checked=0,
        missing=0,
        payload_mismatches=0,
        vector_mismatches=0,
        max_full_vector_diff=0.0,
        full_vector_tolerance=FULL_VECTOR_TOLERANCE if src.metric == "cosine" else 0.0,
        id_handle_collisions=0,
        recall_at_10=None,
        recall_queries=0,
        candidates=candidates,
    )
    if not result.counts_equal:
        result.examples.append(f"source has {source_count:,} points, target {target_count:,}")

    result.id_handle_collisions, ids_info = _scan_handles(client, target, endpoint)

    sampled = _random_points(client, src.name, min(sample, max(source_count, 1)), endpoint)
    if mode == "full":
        offset = None
        with progress(total=source_count, desc="verifying", unit="pt", quiet=quiet) as bar:
            while True:
                records, offset = call(
                    lambda o=offset: client.scroll(src.name, limit=256, offset=o, with_payload=True, with_vectors=True),
                    endpoint,
                    "reading points",
                    retries=3,
                )
                _compare(records, _retrieve(client, target, [r.id for r in records], endpoint), src, result)
                bar.update(len(records))
                if offset is None:
                    break
    else:
        _compare(sampled, _retrieve(client, target, [p.id for p in sampled], endpoint), src, result)

    _measure_recall(client, src, target, adaptor, coarse_dim, sampled, result, recall_queries, candidates)
    return result, ids_info


def _scan_handles(client: QdrantClient, collection: str, endpoint: str) -> tuple[int, dict[str, int]]:
    """Every id once: (int64 handles shared by two ids, {"int": n, "foreign": n}); handles must be unique
    for the int64 view of the index."""
    handles = []
    n_foreign = 0
    offset = None
    while True:
        records, offset = call(
            lambda o=offset: client.scroll(collection, limit=4096, offset=o, with_payload=False, with_vectors=False),
            endpoint,
            "listing ids",
            retries=3,
        )
        for r in records:
            handles.append(point_handle(r.id))
            n_foreign += is_foreign_id(r.id)
        if offset is None:
            break
    collisions = len(handles) - len(np.unique(np.asarray(handles, dtype=np.int64)))
    return collisions, {"int": len(handles) - n_foreign, "foreign": n_foreign}


def _measure_recall(
    client: QdrantClient,
    src: _Source,
    collection: str,
    adaptor: Any,
    coarse_dim: int,
    sampled: list[Any],
    result: VerificationResult,
    recall_queries: int,
    candidates: int,
    full_vector: str | None = None,
) -> None:
    """recall@10 of matryoshka search against exact full-dim search, the sampled points as queries."""
    queries = [(p.id, _vector_of(p, src.vector)) for p in sampled]
    queries = [(pid, v) for pid, v in queries if v is not None and np.any(v)][:recall_queries]
    if not queries or result.target_count <= 1:
        return
    q = np.asarray([v for _, v in queries], dtype=np.float32)
    if src.metric == "cosine":
        q /= np.linalg.norm(q, axis=1, keepdims=True)
    k = min(11, result.target_count)
    cq = _coarse_vectors(adaptor, q, coarse_dim, src.metric)
    if full_vector is not None and _is_local(client) and src.metric == "cosine":
        # qdrant-client local mode normalises the stored vectors *in place* on every Cosine search
        # (local/distances.py, cosine_similarity), which changes the last bit of some of them: the
        # user's own vectors must not be touched, so local mode measures with numpy instead
        found, truth = _numpy_two_stage(client, collection, full_vector, cq, q, k, candidates)
    else:
        backend = QdrantBackend.from_collection(client, collection, full_vector=full_vector)
        _, found = backend.search(cq, q, k, candidates)
        _, truth = backend.exact_search(q, k)
    hits = 0.0
    for (pid, _), f_row, t_row in zip(queries, found, truth, strict=True):
        own = point_handle(pid)  # the query point itself is trivially found: leave it out of both lists
        f = [i for i in f_row.tolist() if i != own and i >= 0][:10]
        t = [i for i in t_row.tolist() if i != own and i >= 0][:10]
        hits += len(set(f) & set(t)) / max(1, len(t))
    result.recall_at_10 = hits / len(queries)
    result.recall_queries = len(queries)


def _is_local(client: QdrantClient) -> bool:
    return hasattr(getattr(client, "_client", None), "persistent")


def _numpy_two_stage(
    client: QdrantClient,
    collection: str,
    full_vector: str,
    coarse_q: np.ndarray,
    q: np.ndarray,
    k: int,
    candidates: int,
) -> tuple[np.ndarray, np.ndarray]:
    """(two-stage ids, exact ids) by numpy over every point's vectors: local mode only (small by nature)."""
    handles: list[int] = []
    coarse_rows: list[Any] = []
    full_rows: list[Any] = []
    offset = None
    while True:
        records, offset = client.scroll(
            collection, limit=1024, offset=offset, with_payload=False, with_vectors=[COARSE, full_vector]
        )
        for r in records:
            vec = r.vector if isinstance(r.vector, dict) else {}
            if vec.get(COARSE) is not None and vec.get(full_vector) is not None:
                handles.append(point_handle(r.id))
                coarse_rows.append(vec[COARSE])
                full_rows.append(vec[full_vector])
        if offset is None:
            break
    ids = np.asarray(handles, dtype=np.int64)
    coarse = np.asarray(coarse_rows, dtype=np.float32).reshape(len(ids), -1)
    full = np.asarray(full_rows, dtype=np.float32).reshape(len(ids), -1)
    k = min(k, len(ids))
    exact = np.argsort(-(q @ full.T), axis=1, kind="stable")[:, :k]
    cand = np.argsort(-(coarse_q @ coarse.T), axis=1, kind="stable")[:, : max(candidates, k)]
    rerank = np.take_along_axis(q @ full.T, cand, axis=1)
    two_stage = np.take_along_axis(cand, np.argsort(-rerank, axis=1, kind="stable")[:, :k], axis=1)
    return ids[two_stage], ids[exact]


# --------------------------------------------------------------------------------------- in place


def server_version(client: QdrantClient, endpoint: str) -> tuple[str, tuple[int, int, int] | None]:
    """The server's version text (``client.info().version``) and its (major, minor, patch), None if unparsable.

    In qdrant-client local mode this is the client library's version (local mode implements
    ``create_vector_name``). Tests simulate an old server by replacing ``client.info``.
    """
    info = call(lambda: client.info(), endpoint, "reading the server version", retries=3)
    text = str(getattr(info, "version", "") or "")
    m = re.match(r"v?(\d+)\.(\d+)(?:\.(\d+))?", text.strip())
    if m is None:
        return text, None
    return text, (int(m.group(1)), int(m.group(2)), int(m.group(3) or 0))


def _require_in_place_support(client: QdrantClient, endpoint: str, warnings: list[str]) -> None:
    text, version = server_version(client, endpoint)
    if version is None:
        warnings.append(
            f"could not read the server version ({text!r}); assuming it can add named vectors (Qdrant >= 1.18)"
        )
        return
    if version[:2] < MIN_IN_PLACE_VERSION:
        need = ".".join(map(str, MIN_IN_PLACE_VERSION))
        raise InputError(
            f"in-place migration needs Qdrant >= {need} (it adds the coarse vector with create_vector_name), but "
            f"{endpoint} runs {text}; upgrade the server, or migrate in copy mode (drop --in-place)"
        )


def _digest_vectors(record: Any, skip: str | None = COARSE) -> bytes:
    """A digest of every vector of a point but ``skip``, exact to the bit (float32 as stored)."""
    vec = record.vector
    if vec is None:
        vec = {}
    elif not isinstance(vec, dict):
        vec = {"": vec}  # an unnamed vector comes back as a list before coarse exists, in a dict after
    h = hashlib.blake2b(digest_size=16)
    for name in sorted(vec):
        if name == skip:
            continue
        v = vec[name]
        h.update(name.encode() + b"\0")
        if isinstance(v, qm.SparseVector):
            h.update(
                b"s" + np.asarray(v.indices, np.int64).tobytes() + b"|" + np.asarray(v.values, np.float32).tobytes()
            )
        else:
            arr = np.asarray(v, dtype=np.float32)
            h.update(b"d" + str(arr.shape).encode() + arr.tobytes())
    return h.digest()


def _digest_payload(record: Any) -> bytes:
    text = json.dumps(record.payload or {}, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.blake2b(text.encode(), digest_size=16).digest()


def _id_key(point_id: Any) -> str:
    """JSON-safe id that keeps int and UUID ids apart."""
    return f"i{point_id}" if isinstance(point_id, int) else f"u{point_id}"


def _id_of(key: str) -> int | str:
    return int(key[1:]) if key[0] == "i" else key[1:]


class _Digest:
    """Order-independent digest of a whole collection: point count and sums of per-point digests."""

    def __init__(self) -> None:
        self.count = 0
        self.payloads = 0
        self.vectors = 0

    def add(self, record: Any) -> None:
        key = _id_key(record.id).encode()
        self.count += 1
        self.payloads += int.from_bytes(hashlib.blake2b(key + _digest_payload(record), digest_size=16).digest(), "big")
        self.vectors += int.from_bytes(hashlib.blake2b(key + _digest_vectors(record), digest_size=16).digest(), "big")

    def to_dict(self) -> dict[str, Any]:
        mask = (1 << 128) - 1
        return {
            "count": self.count,
            "payloads": f"{self.payloads & mask:032x}",
            "vectors": f"{self.vectors & mask:032x}",
        }


def _full_digest(client: QdrantClient, src: _Source, endpoint: str, quiet: bool, desc: str) -> dict[str, Any]:
    digest = _Digest()
    offset = None
    with progress(total=src.count, desc=desc, unit="pt", quiet=quiet) as bar:
        while True:
            records, offset = call(
                lambda o=offset: client.scroll(src.name, limit=256, offset=o, with_payload=True, with_vectors=True),
                endpoint,
                "reading points",
                retries=3,
            )
            for r in records:
                digest.add(r)
            bar.update(len(records))
            if offset is None:
                return digest.to_dict()


def _fingerprint(
    client: QdrantClient, src: _Source, endpoint: str, *, sample: int, full: bool, quiet: bool
) -> dict[str, Any]:
    """What must not change, taken before anything changes: sampled points' digests (and the whole collection's)."""
    points = _random_points(client, src.name, min(sample, max(src.count, 1)), endpoint)
    return {
        "taken": _now(),
        "count": src.count,
        "sample": [[_id_key(p.id), _digest_payload(p).hex(), _digest_vectors(p).hex()] for p in points],
        "full": _full_digest(client, src, endpoint, quiet, "fingerprinting") if full else None,
    }


def _verify_in_place(
    client: QdrantClient,
    src: _Source,
    endpoint: str,
    adaptor: Any,
    coarse_dim: int,
    check: dict[str, Any],
    record: dict[str, Any],
    *,
    mode: str,
    recall_queries: int,
    candidates: int,
    quiet: bool,
    warnings: list[str],
) -> tuple[VerificationResult, dict[str, int]]:
    """Nothing but ``coarse`` changed, and every point with the vector has ``coarse`` (see the module docstring)."""
    count_now = int(call(lambda: client.count(src.name, exact=True), endpoint, "counting", retries=3).count)
    before = int(check.get("count", record.get("source_count", 0)))
    result = VerificationResult(
        mode=mode,
        source_count=before,
        target_count=count_now,
        counts_equal=before == count_now,
        checked=0,
        missing=0,
        payload_mismatches=0,
        vector_mismatches=0,
        max_full_vector_diff=0.0,
        full_vector_tolerance=0.0,
        id_handle_collisions=0,
        recall_at_10=None,
        recall_queries=0,
        candidates=candidates,
    )
    if not result.counts_equal:
        result.examples.append(f"the collection had {before:,} points before the migration and has {count_now:,} now")
    with_coarse = int(
        call(
            lambda: client.count(
                src.name, count_filter=qm.Filter(must=[qm.HasVectorCondition(has_vector=COARSE)]), exact=True
            ),
            endpoint,
            "counting coarse vectors",
            retries=3,
        ).count
    )
    expected = count_now - int(record.get("points_without_vector", 0))
    result.coarse_missing = abs(expected - with_coarse)
    if result.coarse_missing:
        result.examples.append(
            f"{with_coarse:,} points have 'coarse' but {expected:,} have the {src.vector or 'unnamed'!r} vector "
            "(points written during the migration?)"
        )
    result.id_handle_collisions, ids_info = _scan_handles(client, src.name, endpoint)

    wanted = {key: (pd, vd) for key, pd, vd in check.get("sample") or []}
    now = _retrieve(client, src.name, [_id_of(k) for k in wanted], endpoint)
    now_by_key = {_id_key(pid): p for pid, p in now.items()}
    for key, (pd, vd) in wanted.items():
        result.checked += 1
        p = now_by_key.get(key)
        if p is None:
            result.missing += 1
            if len(result.examples) < 10:
                result.examples.append(f"point {_id_of(key)!r} is gone")
            continue
        if _digest_payload(p).hex() != pd:
            result.payload_mismatches += 1
            if len(result.examples) < 10:
                result.examples.append(f"point {p.id!r}: payload changed")
        if _digest_vectors(p).hex() != vd:
            result.vector_mismatches += 1
            if len(result.examples) < 10:
                result.examples.append(f"point {p.id!r}: a vector other than 'coarse' changed")
    if mode == "full":
        if check.get("full"):
            after = _full_digest(client, src, endpoint, quiet, "verifying")
            result.full_digest_equal = after == check["full"]
            if not result.full_digest_equal:
                what = [k for k in ("count", "payloads", "vectors") if after[k] != check["full"][k]]
                result.examples.append(
                    f"the digest of every point differs from before the migration ({', '.join(what)})"
                )
        else:
            warnings.append(
                "verify='full' needs the digest taken before the migration started, and this migration began with "
                "verify='sample'; the sampled points were compared"
            )
    _measure_recall(
        client,
        src,
        src.name,
        adaptor,
        coarse_dim,
        list(now.values()),
        result,
        recall_queries,
        candidates,
        full_vector=src.vector or "",
    )
    return result, ids_info


# ---------------------------------------------------------------------------------------- estimates


def _storage(
    src: _Source,
    coarse_dim: int,
    payload_bytes: float,
    other_bytes: float,
    on_disk: bool | None,
    coarse_quantization: str | None,
) -> dict[str, Any]:
    """Extra server disk and RAM of each mode: points x dims x bytes per value (estimates)."""
    n = src.count
    full = _DTYPE_BYTES.get(getattr(src.params.datatype, "value", None) or "float32", 4) * src.params.size
    coarse = coarse_dim * 4 + {"int8": coarse_dim, "binary": (coarse_dim + 7) // 8}.get(coarse_quantization or "", 0)
    full_on_disk = bool(src.params.on_disk if on_disk is None else on_disk)
    return {
        "basis": ESTIMATE_BASIS,
        "copy": {
            "disk_bytes": int(n * (coarse + full + other_bytes + payload_bytes)),
            "ram_bytes": int(n * (coarse + (0 if full_on_disk else full) + other_bytes)),
        },
        "in_place": {"disk_bytes": int(n * coarse), "ram_bytes": int(n * coarse)},
    }


def _estimate(
    client: QdrantClient, src: _Source, coarse_dim: int, batch_size: int, endpoint: str, coarse_quantization: str | None
) -> tuple[int, float | None, float, float]:
    """(target bytes, copy seconds, payload bytes per point, other vectors' bytes per point), from one
    sampled batch read: rough by design."""
    n = min(batch_size, 64, max(src.count, 1))
    t0 = time.perf_counter()
    records, _ = call(
        lambda: client.scroll(src.name, limit=n, with_payload=True, with_vectors=True),
        endpoint,
        "reading points",
        retries=3,
    )
    read_seconds = time.perf_counter() - t0
    if not records:
        return 0, 0.0, 0.0, 0.0
    payload = float(np.mean([len(json.dumps(r.payload or {})) for r in records]))
    other = 0.0
    for name, p in src.others.items():
        per = _DTYPE_BYTES.get(getattr(p.datatype, "value", None) or "float32", 4) * p.size
        if p.multivector_config is not None:
            lens = [len((r.vector or {}).get(name) or []) for r in records if isinstance(r.vector, dict)]
            per *= float(np.mean(lens)) if lens else 1.0
        other += per
    for name in src.sparse:
        nnz = [len(v.indices) for r in records if isinstance(r.vector, dict) and (v := r.vector.get(name)) is not None]
        other += 8 * (float(np.mean(nnz)) if nnz else 0.0)
    full = _DTYPE_BYTES.get(getattr(src.params.datatype, "value", None) or "float32", 4) * src.params.size
    quant = {"int8": coarse_dim, "binary": (coarse_dim + 7) // 8}.get(coarse_quantization or "", 0)
    hnsw = 2 * 16 * 4  # level-0 links of the coarse graph, m=16
    per_point = coarse_dim * 4 + quant + full + other + payload + hnsw
    # reading dominates on a server; adapting and writing each cost about as much again
    seconds = read_seconds / len(records) * src.count * 3
    return int(per_point * src.count), seconds, payload, other


# ------------------------------------------------------------------------------------------- entry


def migrate_collection(
    client: QdrantClient,
    collection: str,
    *,
    vector: str | None = None,
    coarse_dim: int | None = None,
    sample: int = 100_000,
    target: str | None = None,
    alias: str | None = None,
    resume: bool = False,
    dry_run: bool = False,
    verify: str = "sample",
    verify_sample: int = 1000,
    recall_queries: int = 100,
    candidates: int = 100,
    adaptor: Any = None,
    adaptor_options: dict[str, Any] | None = None,
    batch_size: int = 256,
    parallel: int = 2,
    max_retries: int = 5,
    checkpoint_seconds: float = 2.0,
    shard_number: int | None = None,
    replication_factor: int | None = None,
    on_disk: bool | None = None,
    coarse_quantization: str | None = None,
    seed: int = 0,
    quiet: bool = False,
    on_batch: Callable[[BatchEvent], None] | None = None,
    in_place: bool = False,
) -> MigrationReport:
    """Turn Qdrant collection ``collection`` into a matryoshka collection ``target``; see the module docstring.

    ``in_place=True``: add only the ``coarse`` vector to ``collection`` itself (Qdrant >= 1.18) instead
    of copying it; ``target``, ``alias``, ``shard_number``, ``replication_factor`` and ``on_disk``
    belong to copy mode and are refused. ``resume`` continues (or re-verifies) an in-place migration;
    :func:`rollback_in_place` undoes one. In place, ``report.copied_*`` count points given a ``coarse``
    vector.

    ``vector``: the named vector to adapt (default: the single unnamed or the only dense named one).
    ``coarse_dim``: prefix length (default 64, or what a resumed target was created with).
    ``sample``: vectors to train the adaptor on, unless ``adaptor`` (a fitted
    :class:`~matryoshka_index.MatryoshkaAdaptor` or its directory) is given; ``adaptor_options`` go
    to its constructor. ``target``: default ``<collection>_matryoshka``. ``alias``: switched to the
    target once verification passed. ``verify``: ``"sample"`` (``verify_sample`` random points) or
    ``"full"``; recall@10 is measured on ``recall_queries`` sampled points with ``candidates``.
    ``parallel`` concurrent upserts of ``batch_size`` points (server mode); the checkpoint is written
    at most every ``checkpoint_seconds``. ``on_batch`` is called after each acknowledged batch.

    Returns a :class:`MigrationReport`; ``report.ok`` is False when verification failed (then the
    alias was not switched). Raises :class:`~matryoshka_index.errors.InputError` /
    :class:`~matryoshka_index.errors.BackendError` with one line for bad arguments, a missing
    collection or vector, a mismatched adaptor, or an unreachable server.
    """
    if verify not in ("sample", "full"):
        raise InputError(f"verify: choose 'sample' or 'full', got {verify!r}")
    sample = check_positive_int(sample, "sample", minimum=_MIN_TRAIN_ROWS)
    batch_size = check_positive_int(batch_size, "batch_size")
    parallel = check_positive_int(parallel, "parallel")
    verify_sample = check_positive_int(verify_sample, "verify_sample")
    recall_queries = check_positive_int(recall_queries, "recall_queries", minimum=0)
    candidates = check_positive_int(candidates, "candidates", minimum=10)
    if coarse_dim is not None:
        coarse_dim = check_positive_int(coarse_dim, "coarse_dim")
    _quantization(coarse_quantization, True)
    endpoint = describe_client(client)
    started = time.monotonic()
    warnings: list[str] = []
    if in_place:
        copy_only = {
            "target": target,
            "alias": alias,
            "shard_number": shard_number,
            "replication_factor": replication_factor,
            "on_disk": on_disk,
        }
        given = [name for name, value in copy_only.items() if value is not None]
        if given:
            raise InputError(
                f"{given[0]}: belongs to copy mode; an in-place migration keeps the collection (its name, shards, "
                "aliases and storage) as it is"
            )
        return _migrate_in_place(
            client,
            collection,
            endpoint=endpoint,
            started=started,
            warnings=warnings,
            vector=vector,
            coarse_dim=coarse_dim,
            sample=sample,
            resume=resume,
            dry_run=dry_run,
            verify=verify,
            verify_sample=verify_sample,
            recall_queries=recall_queries,
            candidates=candidates,
            adaptor=adaptor,
            adaptor_options=adaptor_options,
            batch_size=batch_size,
            parallel=parallel,
            max_retries=max_retries,
            checkpoint_seconds=checkpoint_seconds,
            coarse_quantization=coarse_quantization,
            seed=seed,
            quiet=quiet,
            on_batch=on_batch,
        )

    # 1. source ----------------------------------------------------------------------------
    src = _read_source(client, collection, vector, endpoint)
    full_dim = src.params.size
    target = target or f"{collection}_matryoshka"
    if target in (src.name, collection) or target.endswith(COMPANION_SUFFIX):
        raise InputError(f"target: {target!r} cannot be the source collection or a metadata collection; choose another")
    aliases = {
        a.alias_name: a.collection_name for a in call(lambda: client.get_aliases(), endpoint, "listing aliases").aliases
    }
    if target in aliases:
        raise InputError(f"target: {target!r} is an alias (of {aliases[target]!r}); choose a new collection name")
    existing = set(c.name for c in call(lambda: client.get_collections(), endpoint, "listing collections").collections)
    if alias is not None:
        if alias == src.name:
            raise InputError(
                f"alias: {alias!r} is the source collection's own name; Qdrant cannot give an alias the name of a "
                f"collection, and the migration never deletes the source. Point readers at an alias (create one, e.g. "
                f"{alias}_live -> {alias}) or choose another --alias"
            )
        if alias == target:
            raise InputError(f"alias: {alias!r} is the target's own name; choose another alias")
        if alias in existing:
            raise InputError(f"alias: a collection named {alias!r} exists; an alias cannot take its name")

    # resume state ---------------------------------------------------------------------------
    target_exists = target in existing
    record: dict[str, Any] | None = None
    store = MetadataStore(client, target, endpoint, retries=max_retries)
    if target_exists:
        record = store.read(MIGRATION_KEY)
        if record is None or record.get("format") != MIGRATION_FORMAT:
            raise InputError(
                f"target: collection {target!r} already exists at {endpoint} and was not created by mindex migrate; "
                "choose another --target"
            )
        if record.get("source") != src.name or record.get("vector") != src.vector:
            raise InputError(
                f"target: {target!r} holds a migration of {record.get('source')!r} (vector {record.get('vector')!r}), "
                f"not of {src.name!r} (vector {src.vector!r}); choose another --target"
            )
        if not resume and not dry_run:
            what = (
                "a finished migration"
                if record.get("state") == "complete"
                else f"an unfinished migration ({record.get('copied', 0):,} of {record.get('source_count', '?')} points copied)"
            )
            raise InputError(
                f"target: {target!r} already holds {what} of {src.name!r}; rerun with --resume to continue "
                "(or to re-verify), or delete the target or choose another --target"
            )
        stored_dim = int(record["coarse_dim"])
        if coarse_dim is not None and coarse_dim != stored_dim:
            raise InputError(
                f"coarse_dim: the target {target!r} was created with coarse_dim {stored_dim}, not {coarse_dim}; "
                "drop --coarse-dim to resume"
            )
        coarse_dim = stored_dim
    if coarse_dim is None:
        coarse_dim = DEFAULT_COARSE_DIM if full_dim > DEFAULT_COARSE_DIM else max(1, full_dim // 2)
    if coarse_dim >= full_dim:
        raise InputError(f"coarse_dim: {coarse_dim} must be smaller than the vectors' {full_dim} dims")

    # 2. adaptor (loaded or planned; trained below, never in a dry run) ----------------------
    model = None
    adaptor_desc: str
    train_rows = 0
    if record is not None:
        index_record = store.read(META_KEY) or {}
        if not index_record.get("adaptor"):
            raise InputError(f"target: {target!r} has no stored adaptor; delete it and start the migration again")
        stored_files = store.read_blobs(index_record["adaptor"])
        if adaptor is not None:
            given = _load_adaptor(adaptor)
            if _weights_sha(given.to_files()) != _weights_sha(stored_files):
                raise InputError(
                    f"adaptor: differs from the one the migration into {target!r} started with; drop --adaptor to resume"
                )
        from .adaptor import MatryoshkaAdaptor

        model = MatryoshkaAdaptor.from_files(stored_files)
        adaptor_desc = f"the adaptor stored with {target!r} (resuming)"
    elif adaptor is not None:
        model = _load_adaptor(adaptor)
        adaptor_desc = "given" if not isinstance(adaptor, (str, os.PathLike)) else f"loaded from {Path(adaptor)}"
    else:
        train_rows = min(sample, src.count)
        adaptor_desc = f"train (unsupervised) on {train_rows:,} randomly sampled vectors"
    if model is not None:
        _check_adaptor(model, src, coarse_dim)

    est_bytes, est_seconds, payload_bytes, other_bytes = _estimate(
        client, src, coarse_dim, batch_size, endpoint, coarse_quantization
    )
    notes = []
    if src.metric == "cosine":
        notes.append("Cosine collection: vectors are stored normalised, original norms are not recoverable")
    if not hasattr(getattr(client, "_client", None), "rest_uri"):
        notes.append("qdrant-client local mode: brute-force search and slow writes; use a server for real work")
    plan = MigrationPlan(
        endpoint=endpoint,
        source=collection,
        source_collection=src.name,
        vector=src.vector,
        metric=src.metric,
        full_dim=full_dim,
        coarse_dim=coarse_dim,
        points=src.count,
        target=target,
        target_exists=target_exists,
        resume_from=int(record.get("copied", 0)) if record else 0,
        alias=alias,
        alias_now_points_to=aliases.get(alias) if alias else None,
        other_vectors=sorted(src.others),
        sparse_vectors=sorted(src.sparse),
        payload_indexes=sorted(src.info.payload_schema or {}),
        adaptor=adaptor_desc,
        train_rows=train_rows,
        batch_size=batch_size,
        parallel=parallel,
        estimated_target_bytes=est_bytes,
        estimated_process_bytes=int(
            train_rows * full_dim * 4 * 3 + 4 * parallel * batch_size * (full_dim + coarse_dim) * 4
        ),
        estimated_copy_seconds=est_seconds,
        notes=notes,
        storage=_storage(src, coarse_dim, payload_bytes, other_bytes, on_disk, coarse_quantization),
    )
    report = MigrationReport(plan=plan, dry_run=dry_run, warnings=warnings)
    if dry_run:
        return report

    # 2b/3. train, create the target with the adaptor and the first checkpoint ---------------
    if record is None:
        if model is None:
            x = _sample_vectors(client, src, train_rows, endpoint, seed, warnings)
            model = _train_adaptor(x, full_dim, coarse_dim, seed, quiet, adaptor_options or {})
            _check_adaptor(model, src, coarse_dim)
            report.adaptor_trained = True
        record = {
            "format": MIGRATION_FORMAT,
            "format_version": MIGRATION_VERSION,
            "state": "creating",
            "source": src.name,
            "vector": src.vector,
            "coarse_dim": coarse_dim,
            "source_count": src.count,
            "offset": None,
            "copied": 0,
            "batches": 0,
            "points_without_vector": 0,
            "started": _now(),
            "updated": _now(),
            "library_version": __version__,
        }
        _create_target(
            client,
            src,
            target,
            endpoint,
            coarse_dim=coarse_dim,
            on_disk=on_disk,
            coarse_quantization=coarse_quantization,
            shard_number=shard_number,
            replication_factor=replication_factor,
            migration_record=record,
        )
        files = model.to_files()
        descriptor = store.write_blobs(files)
        store.write(
            _record(
                coarse_dim, full_dim, src.metric, manifest=_manifest(src, coarse_dim, candidates), adaptor=descriptor
            ),
            META_KEY,
        )
        _checkpoint(store, record, state="copying", adaptor_sha256=_weights_sha(files))
    report.resumed_from = int(record.get("copied", 0)) if record.get("state") != "creating" else 0
    if record.get("state") == "creating":  # crashed right after creating: the adaptor must be stored
        if not (store.read(META_KEY) or {}).get("adaptor"):
            raise InputError(f"target: {target!r} was left incomplete before copying began; delete it and start again")
        _checkpoint(store, record, state="copying")

    # 3/4. copy from the checkpoint ---------------------------------------------------------
    if record["state"] == "copying":
        copied, batches, _ = _copy(
            client,
            src,
            target,
            endpoint,
            model,
            coarse_dim,
            record,
            store,
            batch_size=batch_size,
            parallel=parallel,
            retries=max_retries,
            checkpoint_seconds=checkpoint_seconds,
            quiet=quiet,
            on_batch=on_batch,
        )
        report.copied_this_run, report.batches = copied, batches
    report.copied_total = int(record.get("copied", 0))
    report.points_without_vector = int(record.get("points_without_vector", 0))

    # 5. verify ----------------------------------------------------------------------------
    verification, ids_info = _verify(
        client,
        src,
        target,
        endpoint,
        model,
        coarse_dim,
        mode=verify,
        sample=verify_sample,
        recall_queries=recall_queries,
        candidates=candidates,
        quiet=quiet,
    )
    report.verification = verification
    if verification.id_handle_collisions:
        warnings.append(
            f"{verification.id_handle_collisions} point ids share an int64 handle in MatryoshkaIndex's view "
            "(search_points() still returns the exact ids)"
        )
    index_record = store.read(META_KEY) or {}
    manifest = {
        **(index_record.get("manifest") or _manifest(src, coarse_dim, candidates)),
        "count": verification.target_count,
    }
    store.write(
        _record(
            coarse_dim, full_dim, src.metric, manifest=manifest, adaptor=index_record.get("adaptor"), point_ids=ids_info
        ),
        META_KEY,
    )
    summary = verification.to_dict()
    summary.pop("examples", None)
    if not verification.passed:
        _checkpoint(store, record, state="verification_failed", verification=summary)
        report.state = "verification_failed"
        report.seconds = time.monotonic() - started
        return report
    _checkpoint(store, record, state="verified", verification=summary)

    # 6. alias -----------------------------------------------------------------------------
    if alias is not None:
        current = {
            a.alias_name: a.collection_name
            for a in call(lambda: client.get_aliases(), endpoint, "listing aliases").aliases
        }
        ops: list[Any] = []
        if alias in current:
            ops.append(qm.DeleteAliasOperation(delete_alias=qm.DeleteAlias(alias_name=alias)))
        ops.append(qm.CreateAliasOperation(create_alias=qm.CreateAlias(collection_name=target, alias_name=alias)))
        # one request: readers see the old collection or the new one, never neither
        call(lambda: client.update_collection_aliases(change_aliases_operations=ops), endpoint, "switching the alias")
        report.alias_switched = True
        _checkpoint(store, record, alias=alias, alias_previous=current.get(alias))
    _checkpoint(store, record, state="complete", finished=_now())
    report.state = "complete"
    report.seconds = time.monotonic() - started
    return report


def _manifest(src: _Source, coarse_dim: int, candidates: int, *, in_place: bool = False) -> dict[str, Any]:
    """The index manifest of a migrated collection (the keys ``MatryoshkaIndex._from_parts`` reads)."""
    return {
        "format": "matryoshka-index",
        "format_version": 1,
        "library_version": __version__,
        "created": _now(),
        "metric": src.metric,
        "input_dim": src.params.size,
        "coarse_dim": coarse_dim,
        "full_dim": src.params.size,
        "rerank": "original",
        "adaptor": {"kind": "matryoshka-adaptor", "directory": None},
        "count": src.count,
        "candidates": candidates,
        "calibration": {},
        "backend": {"kind": "qdrant"},
        "origin": {
            "kind": "qdrant-migration",
            "mode": "in_place" if in_place else "copy",
            "source": src.name,
            "vector": src.vector,
        },
    }


# ----------------------------------------------------------------------------------------- in place


def _migrate_in_place(
    client: QdrantClient,
    collection: str,
    *,
    endpoint: str,
    started: float,
    warnings: list[str],
    vector: str | None,
    coarse_dim: int | None,
    sample: int,
    resume: bool,
    dry_run: bool,
    verify: str,
    verify_sample: int,
    recall_queries: int,
    candidates: int,
    adaptor: Any,
    adaptor_options: dict[str, Any] | None,
    batch_size: int,
    parallel: int,
    max_retries: int,
    checkpoint_seconds: float,
    coarse_quantization: str | None,
    seed: int,
    quiet: bool,
    on_batch: Callable[[BatchEvent], None] | None,
) -> MigrationReport:
    """``migrate_collection(..., in_place=True)``: the steps of the module docstring's in-place section."""
    # 1. the server can add a named vector, the source, any migration already under way -----------
    _require_in_place_support(client, endpoint, warnings)
    src = _read_source(client, collection, vector, endpoint, in_place=True)
    full_dim = src.params.size
    full_name = src.vector or ""
    store = MetadataStore(client, src.name, endpoint, retries=max_retries)
    record = _in_place_record(client, src.name, endpoint)
    if record is not None:
        if not resume and not dry_run:
            done = record.get("state") == "complete"
            what = (
                "a finished in-place migration"
                if done
                else f"an unfinished in-place migration ({record.get('coarse_added', 0):,} of "
                f"{record.get('source_count', '?')} points updated)"
            )
            raise InputError(
                f"collection {src.name!r} already holds {what}; rerun with --resume to continue (or to re-verify), "
                "or undo it with --rollback"
            )
        stored_dim = int(record["coarse_dim"])
        if coarse_dim is not None and coarse_dim != stored_dim:
            raise InputError(
                f"coarse_dim: the in-place migration of {src.name!r} was started with coarse_dim {stored_dim}, "
                f"not {coarse_dim}; drop --coarse-dim to resume"
            )
        coarse_dim = stored_dim
    if coarse_dim is None:
        coarse_dim = DEFAULT_COARSE_DIM if full_dim > DEFAULT_COARSE_DIM else max(1, full_dim // 2)
    if coarse_dim >= full_dim:
        raise InputError(f"coarse_dim: {coarse_dim} must be smaller than the vectors' {full_dim} dims")

    # 2. adaptor: the stored one when resuming, else given or (below) trained -------------------
    model = None
    train_rows = 0
    stored_index = (store.read(META_KEY) or {}) if record is not None else {}
    if stored_index.get("adaptor"):
        stored_files = store.read_blobs(stored_index["adaptor"])
        if adaptor is not None and _weights_sha(_load_adaptor(adaptor).to_files()) != _weights_sha(stored_files):
            raise InputError(
                f"adaptor: differs from the one the in-place migration of {src.name!r} started with; "
                "drop --adaptor to resume"
            )
        from .adaptor import MatryoshkaAdaptor

        model = MatryoshkaAdaptor.from_files(stored_files)
        adaptor_desc = f"the adaptor stored with {src.name!r} (resuming)"
    elif adaptor is not None:
        model = _load_adaptor(adaptor)
        adaptor_desc = "given" if not isinstance(adaptor, (str, os.PathLike)) else f"loaded from {Path(adaptor)}"
    else:
        train_rows = min(sample, src.count)
        adaptor_desc = f"train (unsupervised) on {train_rows:,} randomly sampled vectors"
    if model is not None:
        _check_adaptor(model, src, coarse_dim)

    _, est_seconds, payload_bytes, other_bytes = _estimate(
        client, src, coarse_dim, batch_size, endpoint, coarse_quantization
    )
    quant = {"int8": coarse_dim, "binary": (coarse_dim + 7) // 8}.get(coarse_quantization or "", 0)
    notes = [
        "in place: the collection's own vector "
        + (f"{src.vector!r}" if src.vector else "(unnamed)")
        + " is the rerank vector; clients that read point vectors will also see 'coarse'"
        + (" (and the unnamed vector as {'': ...})" if src.vector is None else "")
    ]
    if src.metric == "cosine":
        notes.append("Cosine collection: vectors are stored normalised, original norms are not recoverable")
    if not hasattr(getattr(client, "_client", None), "rest_uri"):
        notes.append("qdrant-client local mode: brute-force search and slow writes; use a server for real work")
    resume_from = int(record.get("coarse_added", 0)) if record and record.get("state") != "creating" else 0
    plan = MigrationPlan(
        endpoint=endpoint,
        source=collection,
        source_collection=src.name,
        vector=src.vector,
        metric=src.metric,
        full_dim=full_dim,
        coarse_dim=coarse_dim,
        points=src.count,
        target=src.name,
        target_exists=True,
        resume_from=resume_from,
        alias=None,
        alias_now_points_to=None,
        other_vectors=sorted(src.others),
        sparse_vectors=sorted(src.sparse),
        payload_indexes=sorted(src.info.payload_schema or {}),
        adaptor=adaptor_desc,
        train_rows=train_rows,
        batch_size=batch_size,
        parallel=parallel,
        estimated_target_bytes=int(src.count * (coarse_dim * 4 + quant + 2 * 16 * 4)),
        estimated_process_bytes=int(
            train_rows * full_dim * 4 * 3 + 4 * parallel * batch_size * (full_dim + coarse_dim) * 4
        ),
        estimated_copy_seconds=None if est_seconds is None else est_seconds * 2 / 3,
        notes=notes,
        mode="in_place",
        storage=_storage(src, coarse_dim, payload_bytes, other_bytes, None, coarse_quantization),
    )
    report = MigrationReport(plan=plan, dry_run=dry_run, warnings=warnings)
    if dry_run:
        return report

    # 2b/3. record, fingerprints, adaptor and index record; then the vector ---------------------
    if record is None:
        if model is None:
            x = _sample_vectors(client, src, train_rows, endpoint, seed, warnings)
            model = _train_adaptor(x, full_dim, coarse_dim, seed, quiet, adaptor_options or {})
            _check_adaptor(model, src, coarse_dim)
            report.adaptor_trained = True
        record = {
            "format": MIGRATION_FORMAT,
            "format_version": MIGRATION_VERSION,
            "mode": "in_place",
            "state": "creating",
            "source": src.name,
            "vector": src.vector,
            "added_vector": COARSE,
            "coarse_dim": coarse_dim,
            "coarse_quantization": coarse_quantization,
            "source_count": src.count,
            "offset": None,
            "coarse_added": 0,
            "batches": 0,
            "points_without_vector": 0,
            "companion_created": not store._companion_exists(),
            "started": _now(),
            "updated": _now(),
            "library_version": __version__,
        }
        # the record goes first: from here on the collection says what is ours to roll back
        store.write(record, MIGRATION_KEY)
    if record.get("state") == "creating":
        if model is None:  # crashed before the adaptor was stored: nothing was added yet, train again
            x = _sample_vectors(client, src, min(sample, src.count), endpoint, seed, warnings)
            model = _train_adaptor(x, full_dim, coarse_dim, seed, quiet, adaptor_options or {})
            _check_adaptor(model, src, coarse_dim)
            report.adaptor_trained = True
        if store._read_companion_record(CHECK_KEY) is None:
            check = _fingerprint(client, src, endpoint, sample=verify_sample, full=verify == "full", quiet=quiet)
            store._write_companion_record(CHECK_KEY, json.dumps(check))
        if not stored_index.get("adaptor"):
            files = model.to_files()
            descriptor = store.write_blobs(files)
            store.write(
                _record(
                    coarse_dim,
                    full_dim,
                    src.metric,
                    manifest=_manifest(src, coarse_dim, candidates, in_place=True),
                    adaptor=descriptor,
                    full_vector=full_name,
                ),
                META_KEY,
            )
            record["adaptor_sha256"] = _weights_sha(files)
        if COARSE not in vector_params(call(lambda: client.get_collection(src.name), endpoint, "reading", retries=3)):
            call(
                lambda: client.create_vector_name(
                    src.name,
                    COARSE,
                    qm.DenseVectorNameConfig(dense=qm.DenseVectorConfig(size=coarse_dim, distance=src.params.distance)),
                    wait=True,
                ),
                endpoint,
                f"adding the vector {COARSE!r} to {src.name!r}",
                retries=max_retries,
            )
        quantization = _quantization(coarse_quantization, True)
        if quantization is not None:  # create_vector_name takes no quantization; it is set on the new vector
            call(
                lambda: client.update_collection(
                    src.name, vectors_config={COARSE: qm.VectorParamsDiff(quantization_config=quantization)}
                ),
                endpoint,
                f"quantizing {COARSE!r}",
                retries=max_retries,
            )
        _checkpoint(store, record, state="updating")
    report.resumed_from = resume_from

    # 4. coarse for every point, from the checkpoint ----------------------------------------------
    if record["state"] == "updating":
        updated, batches, _ = _copy(
            client,
            src,
            src.name,
            endpoint,
            model,
            coarse_dim,
            record,
            store,
            batch_size=batch_size,
            parallel=parallel,
            retries=max_retries,
            checkpoint_seconds=checkpoint_seconds,
            quiet=quiet,
            on_batch=on_batch,
            in_place=True,
        )
        report.copied_this_run, report.batches = updated, batches
    report.copied_total = int(record.get("coarse_added", 0))
    report.points_without_vector = int(record.get("points_without_vector", 0))

    # 5. verify -----------------------------------------------------------------------------------
    check = json.loads(store._read_companion_record(CHECK_KEY) or "{}")
    verification, ids_info = _verify_in_place(
        client,
        src,
        endpoint,
        model,
        coarse_dim,
        check,
        record,
        mode=verify,
        recall_queries=recall_queries,
        candidates=candidates,
        quiet=quiet,
        warnings=warnings,
    )
    report.verification = verification
    if verification.id_handle_collisions:
        warnings.append(
            f"{verification.id_handle_collisions} point ids share an int64 handle in MatryoshkaIndex's view "
            "(search_points() still returns the exact ids)"
        )
    index_record = store.read(META_KEY) or {}
    manifest = {
        **(index_record.get("manifest") or _manifest(src, coarse_dim, candidates, in_place=True)),
        "count": verification.target_count,
    }
    store.write(
        _record(
            coarse_dim,
            full_dim,
            src.metric,
            manifest=manifest,
            adaptor=index_record.get("adaptor"),
            point_ids=ids_info,
            full_vector=full_name,
        ),
        META_KEY,
    )
    summary = verification.to_dict()
    summary.pop("examples", None)
    state = "complete" if verification.passed else "verification_failed"
    _checkpoint(
        store, record, state=state, verification=summary, **({"finished": _now()} if verification.passed else {})
    )
    report.state = state
    report.seconds = time.monotonic() - started
    return report


def rollback_in_place(client: QdrantClient, collection: str, *, max_retries: int = 5) -> RollbackReport:
    """Undo ``migrate_collection(..., in_place=True)``, finished or not: remove the ``coarse`` vector, the
    index and migration metadata, and the companion collection when the migration created it.

    Only what the migration added is removed: every point, payload and original vector stays. A
    collection whose ``coarse`` vector was not added by an in-place migration (a copy-mode target, an
    index built with ``mindex build``, a vector of the user's own) is refused with one line.
    """
    started = time.monotonic()
    endpoint = describe_client(client)
    real = require_collection(client, collection, endpoint)
    record = _in_place_record(client, real, endpoint)
    if record is None:
        store = MetadataStore(client, real, endpoint)
        other = store.read(MIGRATION_KEY)
        if other is not None and other.get("format") == MIGRATION_FORMAT:
            raise InputError(
                f"collection {real!r} is the target of a copy-mode migration of {other.get('source')!r}, which was "
                "never modified; to undo it, point your alias back and delete this collection"
            )
        raise InputError(
            f"collection {real!r} at {endpoint} holds no in-place migration to roll back; --rollback only removes "
            "a 'coarse' vector that mindex migrate --in-place added"
        )
    if record.get("added_vector") != COARSE:
        raise InputError(
            f"collection {real!r}: the migration record does not name the vector it added; not touching it"
        )
    info = call(lambda: client.get_collection(real), endpoint, f"reading collection {real!r}", retries=max_retries)
    removed_vector = None
    if COARSE in vector_params(info):
        call(
            lambda: client.delete_vector_name(real, COARSE, wait=True),
            endpoint,
            f"removing the vector {COARSE!r} from {real!r}",
            retries=max_retries,
        )
        removed_vector = COARSE
    store = MetadataStore(client, real, endpoint, retries=max_retries)
    removed_companion = None
    if record.get("companion_created") and store._companion_exists():
        call(
            lambda: client.delete_collection(store.companion),
            endpoint,
            f"deleting the metadata collection {store.companion!r}",
            retries=max_retries,
        )
        removed_companion = store.companion
    elif store._companion_exists():  # a companion that was there before: take out only our records
        store.delete_other_blobs(None)
        store._write_companion_record(CHECK_KEY, None)
    removed_keys = []
    meta = info.config.metadata or {}
    for key in (META_KEY, MIGRATION_KEY):  # the migration record last: until then, a rerun finds it
        if key in meta:
            store.write(None, key)
            removed_keys.append(key)
    points = int(call(lambda: client.count(real, exact=True), endpoint, "counting", retries=3).count)
    return RollbackReport(
        endpoint=endpoint,
        collection=real,
        removed_vector=removed_vector,
        removed_metadata_keys=removed_keys,
        removed_companion=removed_companion,
        points=points,
        state_before=record.get("state"),
        seconds=time.monotonic() - started,
    )


__all__ = [
    "BatchEvent",
    "MigrationPlan",
    "MigrationReport",
    "RollbackReport",
    "VerificationResult",
    "migrate_collection",
    "rollback_in_place",
    "server_version",
]
