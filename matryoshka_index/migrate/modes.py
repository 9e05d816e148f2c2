"""What differs between the two modes, and only that: where they write, how they prepare, what they verify.

:class:`CopyMode` creates a new collection (the source's other vectors plus ``coarse`` and ``full``)
and switches an alias at the end; :class:`InPlaceMode` adds ``coarse`` to the source itself (Qdrant
>= 1.18, ``create_vector_name``) after fingerprinting what must not change. The stages they share
run in :mod:`matryoshka_index.migrate.driver`.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
from qdrant_client import QdrantClient
from qdrant_client import models as qm

from ..backends.base import COARSE, FULL, quantized_bytes
from ..backends.qdrant.collection import quantization_config
from ..backends.qdrant.errors import call
from ..backends.qdrant.metadata import COMPANION_SUFFIX, META_KEY, MIGRATION_KEY, MetadataStore, vector_params
from ..errors import BackendError, InputError
from .adapting import coarse_vectors
from .checkpoint import Checkpoint, State, is_migration_record
from .context import Run
from .fingerprint import CHECK_KEY, fingerprint
from .plan import HNSW_LINK_BYTES, READ_BASIS
from .reports import MigrationReport, VerificationResult
from .source import Source, in_place_checkpoint, vector_of
from .verify import verify_copy, verify_in_place
from .writer import WriteJob

MIN_IN_PLACE_VERSION = (1, 18)

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------- copy mode


def _target_vectors(
    src: Source, coarse_dim: int, on_disk: bool | None, coarse_quantization: str | None, prefix_only: bool = False
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
        quantization_config=quantization_config(coarse_quantization, True),
    )
    if prefix_only:  # the adapted prefix is all the target keeps of the migrated vector
        return vectors
    vectors[FULL] = qm.VectorParams(
        size=src.params.size,
        distance=src.params.distance,
        datatype=src.params.datatype,
        on_disk=src.params.on_disk if on_disk is None else on_disk,
        hnsw_config=qm.HnswConfigDiff(m=0),  # only read to rerank prefetched candidates
    )
    return vectors


def create_target(
    client: QdrantClient,
    src: Source,
    target: str,
    endpoint: str,
    *,
    coarse_dim: int,
    on_disk: bool | None,
    coarse_quantization: str | None,
    shard_number: int | None,
    replication_factor: int | None,
    migration_record: dict[str, Any],
    prefix_only: bool = False,
) -> None:
    p = src.info.config.params
    cfg = src.info.config
    kwargs: dict[str, Any] = {
        "vectors_config": _target_vectors(src, coarse_dim, on_disk, coarse_quantization, prefix_only),
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


@dataclass
class CopyMode:
    """Copy into a new collection ``target`` (default ``<collection>_matryoshka``), then switch ``alias``."""

    target: str | None
    alias: str | None
    shard_number: int | None
    replication_factor: int | None
    on_disk: bool | None
    aliases: dict[str, str] = field(default_factory=dict)
    """The server's aliases when the migration started (alias -> collection)."""
    target_exists: bool = False
    name: ClassVar[str] = "copy"
    in_place: ClassVar[bool] = False
    prefix_only: ClassVar[bool] = False
    """The target keeps the adapted prefix alone (:class:`~.prefix_only.PrefixOnlyMode`)."""
    full_vector: ClassVar[str | None] = FULL
    recall_vector: ClassVar[str | None] = None  # the backend finds `full` through the index record

    def check_server(self, run: Run) -> None:
        """Nothing to check: every supported server can copy."""

    def locate(self, run: Run, collection: str) -> tuple[MetadataStore, Checkpoint | None]:
        """Name and check the target and alias; the migration record when the target exists."""
        src, client, endpoint = run.src, run.client, run.endpoint
        target = self.target = self.target or self.default_target(collection, run)
        if target in (src.name, collection) or target.endswith(COMPANION_SUFFIX):
            raise InputError(
                f"target: {target!r} cannot be the source collection or a metadata collection; choose another"
            )
        self.aliases = {
            a.alias_name: a.collection_name
            for a in call(lambda: client.get_aliases(), endpoint, "listing aliases").aliases
        }
        if target in self.aliases:
            raise InputError(
                f"target: {target!r} is an alias (of {self.aliases[target]!r}); choose a new collection name"
            )
        existing = {c.name for c in call(lambda: client.get_collections(), endpoint, "listing collections").collections}
        self._check_alias(src, existing)
        self.target_exists = target in existing
        store = MetadataStore(client, target, endpoint, retries=run.opts.max_retries)
        if not self.target_exists:
            return store, None
        record = store.read(MIGRATION_KEY)
        if not is_migration_record(record):
            raise InputError(
                f"target: collection {target!r} already exists at {endpoint} and was not created by mindex migrate; "
                "choose another --target"
            )
        return store, self.resumable(run, record)  # type: ignore[arg-type]

    def resumable(self, run: Run, record: dict[str, Any]) -> Checkpoint:
        """The existing target's migration record, when this run may resume it (one line otherwise)."""
        src, target = run.src, self.target
        cp = Checkpoint.from_dict(record)
        if cp.source != src.name or cp.vector != src.vector:
            raise InputError(
                f"target: {target!r} holds a migration of {cp.source!r} (vector {cp.vector!r}), "
                f"not of {src.name!r} (vector {src.vector!r}); choose another --target"
            )
        if bool(cp.extra.get("prefix_only")) != self.prefix_only:
            held, flag = ("a prefix-only", "add") if cp.extra.get("prefix_only") else ("a two-stage", "drop")
            raise InputError(
                f"target: {target!r} holds {held} migration of {src.name!r}; {flag} --prefix-only to resume it, "
                "or choose another --target"
            )
        if not run.opts.resume and not run.opts.dry_run:
            what = (
                "a finished migration"
                if cp.state == State.COMPLETE
                else f"an unfinished migration ({cp.done:,} of {cp.source_count} points copied)"
            )
            raise InputError(
                f"target: {target!r} already holds {what} of {src.name!r}; rerun with --resume to continue "
                "(or to re-verify), or delete the target or choose another --target"
            )
        return cp

    def default_target(self, collection: str, run: Run) -> str:
        return f"{collection}_matryoshka"

    def _check_alias(self, src: Source, existing: set[str]) -> None:
        alias = self.alias
        if alias is None:
            return
        if alias == src.name:
            raise InputError(
                f"alias: {alias!r} is the source collection's own name; Qdrant cannot give an alias the name of a "
                f"collection, and the migration never deletes the source. Point readers at an alias (create one, e.g. "
                f"{alias}_live -> {alias}) or choose another --alias"
            )
        if alias == self.target:
            raise InputError(f"alias: {alias!r} is the target's own name; choose another alias")
        if alias in existing:
            raise InputError(f"alias: a collection named {alias!r} exists; an alias cannot take its name")

    def started_text(self) -> str:
        return f"the migration into {self.target!r}"

    def coarse_dim_text(self, stored: int, given: int) -> str:
        return (
            f"coarse_dim: the target {self.target!r} was created with coarse_dim {stored}, not {given}; "
            "drop --coarse-dim to resume"
        )

    def stored_adaptor_missing(self, cp: Checkpoint) -> None:
        """Killed between creating the target and storing the adaptor: nothing was copied yet, so the
        adaptor is given or trained again and stored by :meth:`prepare`. Any later state must have one."""
        if cp.state != State.CREATING:
            raise InputError(f"target: {self.target!r} has no stored adaptor; delete it and start the migration again")

    def plan_fields(self, run: Run, est_bytes: int, est_seconds: float | None, basis: str) -> dict[str, Any]:
        return {
            "time_basis": basis,
            "target": self.target,
            "target_exists": self.target_exists,
            "alias": self.alias,
            "alias_now_points_to": self.aliases.get(self.alias) if self.alias else None,
            "estimated_target_bytes": est_bytes,
            "estimated_copy_seconds": est_seconds,
            "notes": [],
        }

    def prepare(self, run: Run, cp: Checkpoint | None, model: Any) -> Checkpoint:
        """Create the target with the first record, store the adaptor and the index record."""
        if cp is None:
            cp = run.new_checkpoint("copy")
            cp.extra.update(self.record_extra(run))
            create_target(
                run.client,
                run.src,
                self.target,  # type: ignore[arg-type]
                run.endpoint,
                coarse_dim=run.coarse_dim,
                on_disk=self.on_disk,
                coarse_quantization=run.opts.coarse_quantization,
                shard_number=self.shard_number,
                replication_factor=self.replication_factor,
                migration_record=cp.to_dict(),
                prefix_only=self.prefix_only,
            )
            run.store_adaptor(cp, model)
            cp.state = State.WRITING
            run.save(cp)
        if cp.state == State.CREATING:  # killed right after creating the target: nothing copied yet
            if not (run.store.read(META_KEY) or {}).get("adaptor"):
                run.store_adaptor(cp, model)
            cp.state = State.WRITING
            run.save(cp)
        return cp

    def record_extra(self, run: Run) -> dict[str, Any]:
        """Keys this mode adds to the migration record (none: the record of the first version)."""
        return {}

    def write_job(self, run: Run, model: Any) -> WriteJob:
        client, src, target = run.client, run.src, self.target

        def write(points: list[Any]) -> None:
            call(
                lambda: client.upsert(target, points, wait=True),
                run.endpoint,
                "copying points",
                retries=run.opts.max_retries,
            )

        return WriteJob(
            target=target,  # type: ignore[arg-type]
            convert=lambda records: convert_copy(records, src, model, run.coarse_dim, prefix_only=self.prefix_only),
            write=write,
            with_payload=True,
            with_vectors=True,
            desc=f"copying {src.name} -> {target}",
        )

    def verify(self, run: Run, cp: Checkpoint) -> tuple[VerificationResult, list[Any]]:
        opts = run.opts
        return verify_copy(
            run.client, run.src, self.target, run.endpoint,  # type: ignore[arg-type]
            mode=opts.verify, sample=opts.verify_sample, seed=opts.verify_seed, quiet=opts.quiet,
        )  # fmt: skip

    def finish(self, run: Run, cp: Checkpoint, report: MigrationReport) -> None:
        """Verified: switch the alias to the target in one request."""
        cp.state = State.VERIFIED
        run.save(cp)
        if self.alias is None:
            return
        client, endpoint, alias = run.client, run.endpoint, self.alias
        current = {
            a.alias_name: a.collection_name
            for a in call(lambda: client.get_aliases(), endpoint, "listing aliases").aliases
        }
        ops: list[Any] = []
        if alias in current:
            ops.append(qm.DeleteAliasOperation(delete_alias=qm.DeleteAlias(alias_name=alias)))
        ops.append(qm.CreateAliasOperation(create_alias=qm.CreateAlias(collection_name=self.target, alias_name=alias)))
        # one request: readers see the old collection or the new one, never neither
        call(lambda: client.update_collection_aliases(change_aliases_operations=ops), endpoint, "switching the alias")
        report.alias_switched = True
        cp.alias, cp.alias_previous = alias, current.get(alias)
        run.save(cp)


# --------------------------------------------------------------------------------------- in place


def convert_copy(
    records: list[Any], src: Source, adaptor: Any, coarse_dim: int, *, prefix_only: bool = False
) -> tuple[list[qm.PointStruct], int]:
    """Each record as the target stores it: its other vectors, ``coarse`` and (unless ``prefix_only``) ``full``."""
    fulls: list[Any] = []
    which: list[int] = []
    for i, r in enumerate(records):
        v = vector_of(r, src.vector)
        if v is not None:
            fulls.append(v)
            which.append(i)
    coarse = None
    if fulls:
        coarse = coarse_vectors(adaptor, np.asarray(fulls, dtype=np.float32), coarse_dim, src.metric)
    slot = {i: j for j, i in enumerate(which)}
    points = []
    for i, r in enumerate(records):
        vec = r.vector if isinstance(r.vector, dict) else {}
        vectors: dict[str, Any] = {k: v for k, v in vec.items() if k in src.others or k in src.sparse}
        if i in slot:
            if not prefix_only:
                vectors[FULL] = fulls[slot[i]]
            vectors[COARSE] = coarse[slot[i]].tolist()  # type: ignore[index]
        points.append(qm.PointStruct(id=r.id, vector=vectors, payload=r.payload or {}))
    return points, len(records) - len(which)


def convert_in_place(
    records: list[Any], src: Source, adaptor: Any, coarse_dim: int
) -> tuple[list[qm.PointVectors], int]:
    """``coarse`` alone for every record that has the adapted vector (nothing else is sent back)."""
    ids: list[Any] = []
    fulls: list[Any] = []
    for r in records:
        v = vector_of(r, src.vector)
        if v is not None:
            ids.append(r.id)
            fulls.append(v)
    if not fulls:
        return [], len(records)
    coarse = coarse_vectors(adaptor, np.asarray(fulls, dtype=np.float32), coarse_dim, src.metric)
    points = [qm.PointVectors(id=pid, vector={COARSE: c.tolist()}) for pid, c in zip(ids, coarse, strict=True)]
    return points, len(records) - len(points)


class InPlaceMode:
    """Add ``coarse`` to the collection itself; its own vector (named or unnamed) is the rerank vector."""

    name = "in_place"
    in_place = True
    prefix_only = False
    on_disk = None
    alias = None

    def __init__(self) -> None:
        self.target: str | None = None
        self.full_vector = ""
        self.recall_vector: str | None = ""

    def check_server(self, run: Run) -> None:
        require_in_place_support(run.client, run.endpoint)

    def locate(self, run: Run, collection: str) -> tuple[MetadataStore, Checkpoint | None]:
        src = run.src
        self.target = src.name
        self.full_vector = self.recall_vector = src.vector or ""
        store = MetadataStore(run.client, src.name, run.endpoint, retries=run.opts.max_retries)
        cp = in_place_checkpoint(run.client, src.name, run.endpoint)
        if cp is not None and not run.opts.resume and not run.opts.dry_run:
            what = (
                "a finished in-place migration"
                if cp.state == State.COMPLETE
                else f"an unfinished in-place migration ({cp.done:,} of {cp.source_count} points updated)"
            )
            raise InputError(
                f"collection {src.name!r} already holds {what}; rerun with --resume to continue (or to re-verify), "
                "or undo it with --rollback"
            )
        return store, cp

    def started_text(self) -> str:
        return f"the in-place migration of {self.target!r}"

    def coarse_dim_text(self, stored: int, given: int) -> str:
        return (
            f"coarse_dim: the in-place migration of {self.target!r} was started with coarse_dim {stored}, "
            f"not {given}; drop --coarse-dim to resume"
        )

    def stored_adaptor_missing(self, cp: Checkpoint) -> None:
        """Crashed before the adaptor was stored: nothing was added yet, it is trained (or given) again."""

    def plan_fields(self, run: Run, est_bytes: int, est_seconds: float | None, basis: str) -> dict[str, Any]:
        src, coarse_dim = run.src, run.coarse_dim
        if est_seconds is not None and basis == READ_BASIS:  # no full point is written, only coarse
            est_seconds, basis = est_seconds * 2 / 3, "rough: measured read speed x 2"
        quant = quantized_bytes(coarse_dim, run.opts.coarse_quantization)
        notes = [
            "in place: the collection's own vector "
            + (f"{src.vector!r}" if src.vector else "(unnamed)")
            + " is the rerank vector; clients that read point vectors will also see 'coarse'"
            + (" (and the unnamed vector as {'': ...})" if src.vector is None else "")
        ]
        if src.vector is None:
            notes.append(UNNAMED_NOTE)
        return {
            "target": src.name,
            "target_exists": True,
            "alias": None,
            "alias_now_points_to": None,
            "estimated_target_bytes": int(src.count * (coarse_dim * 4 + quant + HNSW_LINK_BYTES)),
            "estimated_copy_seconds": est_seconds,
            "time_basis": basis,
            "notes": notes,
            "mode": "in_place",
        }

    def prepare(self, run: Run, cp: Checkpoint | None, model: Any) -> Checkpoint:
        """The record first (from then on the collection says what is ours to roll back), the fingerprints,
        the adaptor and the index record, then ``coarse`` itself."""
        client, src, store, endpoint, opts = run.client, run.src, run.store, run.endpoint, run.opts
        if cp is None:
            cp = run.new_checkpoint("in_place")
            cp.added_vector, cp.coarse_quantization = COARSE, opts.coarse_quantization
            cp.companion_created = not store.companion_exists()
            if src.vector is None:  # rollback gives the unnamed vector back in the form it had
                single = isinstance(src.info.config.params.vectors, qm.VectorParams)
                cp.unnamed_form = "single" if single else "named"
            store.write(cp.to_dict(), MIGRATION_KEY)
        if cp.state != State.CREATING:
            return cp
        model = run.ensure_model()
        if store.read_companion_record(CHECK_KEY) is None:
            check = fingerprint(
                client, src, endpoint, sample=opts.verify_sample, full=opts.verify == "full", quiet=opts.quiet,
                seed=opts.verify_seed,
            )  # fmt: skip
            store.write_companion_record(CHECK_KEY, json.dumps(check))
        if not run.adaptor_was_stored:
            run.store_adaptor(cp, model)
        if COARSE not in vector_params(call(lambda: client.get_collection(src.name), endpoint, "reading", retries=3)):
            config = qm.DenseVectorNameConfig(
                dense=qm.DenseVectorConfig(size=run.coarse_dim, distance=src.params.distance)
            )
            call(
                lambda: client.create_vector_name(src.name, COARSE, config, wait=True),
                endpoint,
                f"adding the vector {COARSE!r} to {src.name!r}",
                retries=opts.max_retries,
            )
        quantization = quantization_config(opts.coarse_quantization, True)
        if quantization is not None:  # create_vector_name takes no quantization; it is set on the new vector
            call(
                lambda: client.update_collection(
                    src.name, vectors_config={COARSE: qm.VectorParamsDiff(quantization_config=quantization)}
                ),
                endpoint,
                f"quantizing {COARSE!r}",
                retries=opts.max_retries,
            )
        cp.state = State.WRITING
        run.save(cp)
        return cp

    def write_job(self, run: Run, model: Any) -> WriteJob:
        client, src = run.client, run.src

        def write(points: list[Any]) -> None:
            call(
                lambda: client.update_vectors(src.name, points, wait=True),
                run.endpoint,
                "adding coarse vectors",
                retries=run.opts.max_retries,
            )

        # only the adapted vector is read back (and no payload): nothing else is rewritten
        return WriteJob(
            target=src.name,
            convert=lambda records: convert_in_place(records, src, model, run.coarse_dim),
            write=write,
            with_payload=False,
            with_vectors=src.with_vector,
            desc=f"adding coarse to {src.name}",
        )

    def verify(self, run: Run, cp: Checkpoint) -> tuple[VerificationResult, list[Any]]:
        check = json.loads(run.store.read_companion_record(CHECK_KEY) or "{}")
        return verify_in_place(run.client, run.src, run.endpoint, check, cp, mode=run.opts.verify, quiet=run.opts.quiet)

    def finish(self, run: Run, cp: Checkpoint, report: MigrationReport) -> None:
        """Nothing to switch: the collection is the index."""


UNNAMED_NOTE = (
    "the collection's vector is unnamed: once it has 'coarse' too, Qdrant refuses upserts with an unnamed vector "
    "('Unnamed vectors are not allowed when a collection has named vectors'); the application must send it "
    "as vector={'': v} (in PointStruct and upsert), and give new points 'coarse' (add them through MatryoshkaIndex)"
)


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


def require_in_place_support(client: QdrantClient, endpoint: str) -> None:
    """One line unless the server can add a named vector to a collection (Qdrant >= 1.18)."""
    text, version = server_version(client, endpoint)
    if version is None:
        log.warning("could not read the server version (%r); assuming it can add named vectors (Qdrant >= 1.18)", text)
        return
    if version[:2] < MIN_IN_PLACE_VERSION:
        need = ".".join(map(str, MIN_IN_PLACE_VERSION))
        raise InputError(
            f"in-place migration needs Qdrant >= {need} (it adds the coarse vector with create_vector_name), but "
            f"{endpoint} runs {text}; upgrade the server, or migrate in copy mode (drop --in-place)"
        )


__all__ = ["MIN_IN_PLACE_VERSION", "CopyMode", "InPlaceMode", "server_version"]
