"""Migrate an existing Qdrant collection to the matryoshka layout (copy mode), losing nothing.

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

Cosine collections store their vectors normalised (Qdrant normalises on upsert), so the original
norms are not recoverable, and writing an already-normalised vector into the Cosine ``full`` vector
normalises it again, which may change its last bits: full vectors (and other Cosine vectors) are
compared within ``1e-6`` per component; Dot vectors, sparse vectors and payloads must be identical.
Only Cosine and Dot sources are supported (matryoshka search ranks by inner product). The source
should not be written to during a migration: points added behind the copy cursor would be missed,
which verification then reports as a count mismatch.
"""

from __future__ import annotations

import json
import os
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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        """The plan as readable lines (what ``mindex migrate --dry-run`` prints)."""
        vec = "its unnamed vector" if self.vector is None else f"vector {self.vector!r}"
        lines = [
            f"source:   {self.source_collection!r}"
            + (f" (via alias {self.source!r})" if self.source != self.source_collection else "")
            + f" at {self.endpoint}: {self.points:,} points, {vec}, {self.full_dim} dims, {self.metric}",
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
            "time:     "
            + (
                f"copy ~{_human_seconds(self.estimated_copy_seconds)} (rough: measured read speed x 3)"
                if self.estimated_copy_seconds is not None
                else "copy: not estimated"
            )
            + ("; adaptor training not estimated (depends on the device)" if self.train_rows else ""),
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

    @property
    def passed(self) -> bool:
        return self.counts_equal and self.missing == 0 and self.payload_mismatches == 0 and self.vector_mismatches == 0

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
        lines = [
            f"copied {self.copied_this_run:,} points this run"
            + (f" (resumed after {self.resumed_from:,})" if self.resumed_from else "")
            + f" into {self.plan.target!r}; {self.copied_total:,} of {self.plan.points:,} in total, {self.seconds:.1f} s"
        ]
        if self.points_without_vector:
            lines.append(
                f"{self.points_without_vector:,} points have no {self.plan.vector!r} vector: copied without coarse/full"
            )
        v = self.verification
        if v is not None:
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


def _read_source(client: QdrantClient, collection: str, vector: str | None, endpoint: str) -> _Source:
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
    if META_KEY in meta or (COARSE in params and FULL in params):
        raise InputError(
            f"collection {real!r} already has the matryoshka layout; open it with MatryoshkaIndex.from_qdrant"
        )
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
    clash = sorted({COARSE, FULL} & (set(others) | set(sparse)))
    if clash:
        raise InputError(
            f"collection {real!r} already has a vector named {', '.join(map(repr, clash))}, which the matryoshka layout "
            "needs for itself; mindex migrate cannot carry it over"
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
    """Upserts batches, concurrently on a server; synchronously in local mode (one SQLite thread)."""

    def __init__(self, client: QdrantClient, collection: str, endpoint: str, parallel: int, retries: int) -> None:
        self.client, self.collection, self.endpoint, self.retries = client, collection, endpoint, retries
        local = hasattr(getattr(client, "_client", None), "persistent")
        self.pool = ThreadPoolExecutor(parallel) if parallel > 1 and not local else None
        self.parallel = 1 if self.pool is None else parallel

    def _write(self, points: list[qm.PointStruct]) -> None:
        call(
            lambda: self.client.upsert(self.collection, points, wait=True),
            self.endpoint,
            "copying points",
            retries=self.retries,
        )

    def submit(self, points: list[qm.PointStruct]) -> Future:
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
) -> tuple[int, int, int]:
    """Copy from the checkpoint to the end; returns (points copied now, batches, points without the vector)."""
    offset = record.get("offset")
    copied = int(record.get("copied", 0))
    start_copied = copied
    batches = int(record.get("batches", 0))
    no_vector = int(record.get("points_without_vector", 0))
    writer = _Writer(client, target, endpoint, parallel, retries)
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
                copied=state["copied"],
                batches=state["batches"],
                points_without_vector=state["no_vector"],
            )
            flushed = (state["offset"], state["copied"])

    with_vectors = True
    bar = progress(total=src.count, initial=copied, desc=f"copying {src.name} -> {target}", unit="pt", quiet=quiet)
    try:
        while True:
            records, next_offset = call(
                lambda o=offset: client.scroll(
                    src.name, limit=batch_size, offset=o, with_payload=True, with_vectors=with_vectors
                ),
                endpoint,
                "reading points",
                retries=retries,
            )
            if records:
                points, missing = _convert(records, src, adaptor, coarse_dim)
                pending.append((writer.submit(points), next_offset, len(records), missing))
            commit(block=len(pending) > 2 * writer.parallel)
            if next_offset is None:
                break
            offset = next_offset
        while pending:
            commit(block=True)
        _checkpoint(
            store,
            record,
            state="copied",
            offset=None,
            copied=state["copied"],
            batches=state["batches"],
            points_without_vector=state["no_vector"],
        )
        flushed = (None, state["copied"])
    finally:
        writer.close()
        bar.close()
        if record.get("state") == "copying":
            try:  # best effort: on a dead server this fails too, and the last checkpoint stands
                flush()
            except Exception:
                pass
    return state["copied"] - start_copied, state["batches"], state["no_vector"]


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

    # every target id once: handles must be unique for the int64 view of the index
    handles = []
    n_foreign = 0
    offset = None
    while True:
        records, offset = call(
            lambda o=offset: client.scroll(target, limit=4096, offset=o, with_payload=False, with_vectors=False),
            endpoint,
            "listing ids",
            retries=3,
        )
        for r in records:
            handles.append(point_handle(r.id))
            n_foreign += is_foreign_id(r.id)
        if offset is None:
            break
    result.id_handle_collisions = len(handles) - len(np.unique(np.asarray(handles, dtype=np.int64)))
    ids_info = {"int": len(handles) - n_foreign, "foreign": n_foreign}

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

    queries = [(p.id, _vector_of(p, src.vector)) for p in sampled]
    queries = [(pid, v) for pid, v in queries if v is not None and np.any(v)][:recall_queries]
    if queries and target_count > 1:
        q = np.asarray([v for _, v in queries], dtype=np.float32)
        if src.metric == "cosine":
            q /= np.linalg.norm(q, axis=1, keepdims=True)
        backend = QdrantBackend.from_collection(client, target)
        k = min(11, target_count)
        _, found = backend.search(_coarse_vectors(adaptor, q, coarse_dim, src.metric), q, k, candidates)
        _, truth = backend.exact_search(q, k)
        hits = 0
        for (pid, _), f_row, t_row in zip(queries, found, truth, strict=True):
            own = point_handle(pid)  # the query point itself is trivially found: leave it out of both lists
            f = [i for i in f_row.tolist() if i != own and i >= 0][:10]
            t = [i for i in t_row.tolist() if i != own and i >= 0][:10]
            hits += len(set(f) & set(t)) / max(1, len(t))
        result.recall_at_10 = hits / len(queries)
        result.recall_queries = len(queries)
    return result, ids_info


# ---------------------------------------------------------------------------------------- estimates


def _estimate(
    client: QdrantClient, src: _Source, coarse_dim: int, batch_size: int, endpoint: str, coarse_quantization: str | None
) -> tuple[int, float | None]:
    """(target bytes, copy seconds), from one sampled batch read: rough by design."""
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
        return 0, 0.0
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
    return int(per_point * src.count), seconds


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
) -> MigrationReport:
    """Turn Qdrant collection ``collection`` into a matryoshka collection ``target``; see the module docstring.

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

    est_bytes, est_seconds = _estimate(client, src, coarse_dim, batch_size, endpoint, coarse_quantization)
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


def _manifest(src: _Source, coarse_dim: int, candidates: int) -> dict[str, Any]:
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
        "origin": {"kind": "qdrant-migration", "source": src.name, "vector": src.vector},
    }


__all__ = ["BatchEvent", "MigrationPlan", "MigrationReport", "VerificationResult", "migrate_collection"]
