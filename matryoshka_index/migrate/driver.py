"""The one driver both modes share: read the source, resume or start, resolve the adaptor, plan (a dry
run stops here), prepare the target, write batches with checkpoints, verify, finish.

What differs between copy mode and in place lives in :mod:`matryoshka_index.migrate.modes`.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from qdrant_client import QdrantClient

from ..backends.qdrant.collection import quantization_config
from ..backends.qdrant.connection import connect, describe_client, is_local_client
from ..backends.qdrant.metadata import META_KEY, index_record, utc_now
from ..calibration import UNCALIBRATED_CANDIDATES
from ..errors import InputError
from ..validation import check_positive_int
from .adapting import MIN_TRAIN_ROWS, resolve_adaptor
from .checkpoint import Checkpoint, State
from .context import Options, Run
from .modes import CopyMode, InPlaceMode
from .plan import index_manifest, measure_sample, storage_estimate
from .prefix_only import LabelledSample, PrefixOnlyMode
from .reports import BatchEvent, MigrationPlan, MigrationReport
from .source import read_source
from .verify import finish_verification
from .writer import write_batches

DEFAULT_COARSE_DIM = 64
_PACKAGE_LOGGER = "matryoshka_index.migrate"


class _Collect(logging.Handler):
    """Warnings of this thread's migration, for its report (the writer's pool threads log none)."""

    def __init__(self, into: list[str]) -> None:
        super().__init__(logging.WARNING)
        self.into = into
        self.thread = threading.get_ident()

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread == self.thread:
            self.into.append(record.getMessage())


@contextmanager
def collected_warnings(into: list[str]) -> Iterator[None]:
    """Every warning the migration's modules log meanwhile also goes to ``into`` (the report's list)."""
    logger = logging.getLogger(_PACKAGE_LOGGER)
    handler = _Collect(into)
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)


def connect_source(
    *,
    url: str | None = None,
    path: str | None = None,
    api_key: str | None = None,
    timeout: int | None = None,
    prefer_grpc: bool = False,
) -> QdrantClient:
    """A client for the collection to migrate: a server ``url`` or an existing local-mode storage ``path``.

    The caller closes it. A ``path`` that is not a local-mode storage is refused with one line (no
    empty storage is created there).
    """
    client, _ = connect(
        url=url, path=path, api_key=api_key, timeout=timeout, prefer_grpc=prefer_grpc, must_exist=path is not None
    )
    return client


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
    candidates: int = UNCALIBRATED_CANDIDATES,
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
    verify_seed: int | None = None,
    quiet: bool = False,
    on_batch: Callable[[BatchEvent], None] | None = None,
    in_place: bool = False,
    prefix_only: bool = False,
    queries: Any = None,
    qrels: Any = None,
    query_ids: Any = None,
    edge_path: str | os.PathLike[str] | None = None,
) -> MigrationReport:
    """Turn Qdrant collection ``collection`` into a matryoshka collection ``target``; see the package docstring.

    ``in_place=True``: add only the ``coarse`` vector to ``collection`` itself (Qdrant >= 1.18) instead
    of copying it; ``target``, ``alias``, ``shard_number``, ``replication_factor`` and ``on_disk``
    belong to copy mode and are refused. ``resume`` continues (or re-verifies) an in-place migration;
    :func:`rollback_in_place` undoes one. In place, ``report.copied_*`` count points given a ``coarse``
    vector.

    ``vector``: the named vector to adapt (default: the single unnamed or the only dense named one).
    ``coarse_dim``: prefix length (default 64, or what a resumed target was created with).
    ``sample``: vectors to train the adaptor on, unless ``adaptor`` (a fitted
    :class:`~matryoshka_index.MatryoshkaAdaptor` or its directory) is given; ``adaptor_options`` go
    to its constructor; ``seed`` seeds the training sample and the training. ``target``: default
    ``<collection>_matryoshka``. ``alias``: switched to the target once verification passed.
    ``verify``: ``"sample"`` (``verify_sample`` random points) or ``"full"``; recall@10 is measured on
    ``recall_queries`` sampled points with ``candidates`` (default
    :data:`~matryoshka_index.calibration.UNCALIBRATED_CANDIDATES`: a migration calibrates nothing, and the
    collection's index record keeps this count as its default until the index's ``calibrate`` runs on
    real queries). ``verify_seed``: draw those points
    reproducibly (seeded, from the ids) instead of with Qdrant's random sample. ``parallel``
    concurrent upserts of ``batch_size`` points (server mode); the checkpoint is written at most every
    ``checkpoint_seconds``. ``on_batch`` is called after each acknowledged batch.

    ``prefix_only=True`` (``--prefix-only --dim M``, ``coarse_dim`` required): the target keeps the
    ``coarse_dim``-dim adapted prefix alone, no full vector (see :mod:`.prefix_only`); the plan measures
    the quality it keeps: nDCG@10 on ``queries`` (embeddings: an array or a ``.npy``) judged by ``qrels``
    (a BEIR qrels TSV or ``{query_id: {point_id: relevance}}``; ``query_ids`` default to the row
    numbers), else recall@10 against exact full-dim search on ``recall_queries`` sampled points; the
    verification measures the same on the target. Default ``target``: ``<collection>_prefix<M>``.
    ``edge_path`` (prefix only): write the target as a qdrant-edge shard in that directory (absent, empty,
    or the one a migration of this kind left, to resume) instead of a collection; see
    :mod:`.prefix_only_edge`.

    Returns a :class:`MigrationReport`; ``report.ok`` is False when verification failed (then the
    alias was not switched). Raises :class:`~matryoshka_index.errors.InputError` /
    :class:`~matryoshka_index.errors.BackendError` with one line for bad arguments, a missing
    collection or vector, a mismatched adaptor, or an unreachable server.
    """
    if verify not in ("sample", "full"):
        raise InputError(f"verify: choose 'sample' or 'full', got {verify!r}")
    if coarse_dim is not None:
        coarse_dim = check_positive_int(coarse_dim, "coarse_dim")
    labelled = None
    if prefix_only:
        if in_place:
            raise InputError(
                "prefix_only: not in place (it would take the collection's own vector away); a prefix-only "
                "migration copies into a new collection, drop --in-place"
            )
        if coarse_dim is None:
            raise InputError("prefix_only: give the prefix length (--dim M, coarse_dim=M)")
        if qrels is not None or queries is not None or query_ids is not None:
            labelled = LabelledSample.load(queries, qrels, query_ids)  # one line for a bad file, before any read
    elif qrels is not None or queries is not None or query_ids is not None:
        raise InputError("qrels: a labelled sample (queries, qrels, query_ids) is measured only with --prefix-only")
    if edge_path is not None:
        _check_edge_options(
            prefix_only, target=target, alias=alias, shard_number=shard_number,
            replication_factor=replication_factor, on_disk=on_disk, coarse_quantization=coarse_quantization,
        )  # fmt: skip
    if verify_seed is not None:
        verify_seed = check_positive_int(verify_seed, "verify_seed", minimum=0)
    opts = Options(
        vector=vector,
        coarse_dim=coarse_dim,
        sample=check_positive_int(sample, "sample", minimum=MIN_TRAIN_ROWS),
        resume=resume,
        dry_run=dry_run,
        verify=verify,
        verify_sample=check_positive_int(verify_sample, "verify_sample"),
        verify_seed=verify_seed,
        recall_queries=check_positive_int(recall_queries, "recall_queries", minimum=0),
        candidates=check_positive_int(candidates, "candidates", minimum=10),
        adaptor=adaptor,
        adaptor_options=dict(adaptor_options or {}),
        batch_size=check_positive_int(batch_size, "batch_size"),
        parallel=check_positive_int(parallel, "parallel"),
        max_retries=max_retries,
        checkpoint_seconds=checkpoint_seconds,
        coarse_quantization=coarse_quantization,
        seed=seed,
        quiet=quiet,
        on_batch=on_batch,
        labelled=labelled,
    )
    quantization_config(coarse_quantization, True)  # one line for an unknown kind, before anything is read
    mode: CopyMode | InPlaceMode
    if edge_path is not None:
        from .prefix_only_edge import EdgePrefixOnlyMode  # needs qdrant-edge-py (one line without it)

        mode = EdgePrefixOnlyMode(edge_path)
    elif prefix_only:
        mode = PrefixOnlyMode(target, alias, shard_number, replication_factor, on_disk)
    elif in_place:
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
        mode = InPlaceMode()
    else:
        mode = CopyMode(target, alias, shard_number, replication_factor, on_disk)
    describe_source = getattr(client, "describe_source", None)  # a qdrant-edge source (EdgeSourceClient)
    endpoint = describe_source() if describe_source is not None else describe_client(client)
    run = Run(client=client, endpoint=endpoint, opts=opts, mode=mode)
    try:
        with collected_warnings(run.warnings):
            return _drive(run, collection)
    finally:
        close = getattr(mode, "close", None)  # a qdrant-edge target: the shard and its lock
        if close is not None:
            close()


def _check_edge_options(prefix_only: bool, **copy_mode: Any) -> None:
    """One line for what a qdrant-edge target cannot take."""
    if not prefix_only:
        raise InputError("edge_path: a qdrant-edge target is written by a prefix-only migration; add --prefix-only")
    given = [name for name, value in copy_mode.items() if value is not None]
    if given:
        raise InputError(
            f"{given[0]}: belongs to a target collection; a qdrant-edge target is the shard in --edge-path "
            "(no target name, alias, shards, replicas, on-disk or quantization settings)"
        )


def _drive(run: Run, collection: str) -> MigrationReport:
    """The stages, in order; see the package docstring."""
    started = time.monotonic()
    opts, mode = run.opts, run.mode
    # 1. the server can do it (in place: Qdrant >= 1.18), the source ---------------------------
    mode.check_server(run)
    run.src = src = read_source(run.client, collection, opts.vector, run.endpoint, in_place=mode.in_place)
    # 2. resume or start -----------------------------------------------------------------------
    run.store, cp = mode.locate(run, collection)
    run.coarse_dim = _coarse_dim(run, cp)
    resume_from = cp.done if cp is not None and cp.state != State.CREATING else 0
    # 3. the adaptor: stored, given, or (below, never in a dry run) trained ----------------------
    stored = _stored_adaptor_files(run, cp)
    run.adaptor_was_stored = stored is not None
    run.choice = resolve_adaptor(
        stored, opts.adaptor, src, run.coarse_dim, opts.sample, stored_with=mode.target, started=mode.started_text()
    )  # type: ignore[arg-type]
    # 4. the plan (prefix only: with the quality it keeps, measured with the adaptor) -------------
    plan = _plan(run, collection, resume_from)
    report = run.report = MigrationReport(plan=plan, dry_run=opts.dry_run, warnings=run.warnings)
    report.adaptor_trained = run.adaptor_trained
    if opts.dry_run:
        return report
    # 5. prepare the target ------------------------------------------------------------------------
    if cp is None:
        run.ensure_model()
    cp = mode.prepare(run, cp, run.choice.model)
    model = run.ensure_model()
    report.resumed_from = resume_from
    # 6. write every point from the checkpoint ---------------------------------------------------
    if cp.state == State.WRITING:
        report.copied_this_run, report.batches = write_batches(
            run.client, src, run.endpoint, mode.write_job(run, model), cp, run.save,
            batch_size=opts.batch_size, parallel=opts.parallel, retries=opts.max_retries,
            checkpoint_seconds=opts.checkpoint_seconds, quiet=opts.quiet, on_batch=opts.on_batch,
        )  # fmt: skip
    report.copied_total, report.points_without_vector = cp.done, cp.points_without_vector
    # 7. verify ----------------------------------------------------------------------------------
    verification, sampled = mode.verify(run, cp)
    ids_info = finish_verification(
        run.client, src, mode.target, run.endpoint, model, run.coarse_dim, verification, sampled,  # type: ignore[arg-type]
        recall_queries=0 if mode.prefix_only else opts.recall_queries,  # prefix only: measured by mode.verify
        candidates=opts.candidates, full_vector=mode.recall_vector, scan=getattr(mode, "scan_target_ids", None),
    )  # fmt: skip
    report.verification = verification
    _record_point_ids(run, verification.target_count, ids_info)
    summary = verification.to_dict()
    summary.pop("examples", None)
    cp.verification = summary
    # 8. finish: the alias (copy mode), or nothing ------------------------------------------------
    if verification.passed:
        mode.finish(run, cp, report)
        cp.state, cp.finished = State.COMPLETE, utc_now()
    else:
        cp.state = State.VERIFICATION_FAILED
    run.save(cp)
    report.state = cp.state.value
    report.seconds = time.monotonic() - started
    return report


def _coarse_dim(run: Run, cp: Checkpoint | None) -> int:
    full_dim, given = run.src.params.size, run.opts.coarse_dim
    coarse_dim = given
    if cp is not None:
        if given is not None and given != cp.coarse_dim:
            raise InputError(run.mode.coarse_dim_text(cp.coarse_dim, given))
        coarse_dim = cp.coarse_dim
    if coarse_dim is None:
        coarse_dim = DEFAULT_COARSE_DIM if full_dim > DEFAULT_COARSE_DIM else max(1, full_dim // 2)
    if coarse_dim >= full_dim:
        raise InputError(f"coarse_dim: {coarse_dim} must be smaller than the vectors' {full_dim} dims")
    return coarse_dim


def _stored_adaptor_files(run: Run, cp: Checkpoint | None) -> dict[str, bytes] | None:
    """The adaptor stored by the migration under way (None when there is none yet)."""
    if cp is None:
        return None
    descriptor = (run.store.read(META_KEY) or {}).get("adaptor")
    if not descriptor:
        run.mode.stored_adaptor_missing(cp)
        return None
    return run.store.read_blobs(descriptor)


def _plan(run: Run, collection: str, resume_from: int) -> MigrationPlan:
    src, opts, choice = run.src, run.opts, run.choice
    assert choice is not None
    est_bytes, est_seconds, payload_bytes, other_bytes, basis = measure_sample(
        run.client, src, run.coarse_dim, opts.batch_size, run.endpoint, opts.coarse_quantization
    )
    fields = run.mode.plan_fields(run, est_bytes, est_seconds, basis)
    notes = fields.pop("notes")
    if src.metric == "cosine":
        notes.append("Cosine collection: vectors are stored normalised, original norms are not recoverable")
    if is_local_client(run.client):
        notes.append("qdrant-client local mode: brute-force search and slow writes; use a server for real work")
    full_dim = src.params.size
    return MigrationPlan(
        endpoint=run.endpoint,
        source=collection,
        source_collection=src.name,
        vector=src.vector,
        metric=src.metric,
        full_dim=full_dim,
        coarse_dim=run.coarse_dim,
        points=src.count,
        resume_from=resume_from,
        other_vectors=sorted(src.others),
        sparse_vectors=sorted(src.sparse),
        payload_indexes=sorted(src.info.payload_schema or {}),
        adaptor=choice.description,
        train_rows=choice.train_rows,
        batch_size=opts.batch_size,
        parallel=opts.parallel,
        estimated_process_bytes=int(
            choice.train_rows * full_dim * 4 * 3 + 4 * opts.parallel * opts.batch_size * (full_dim + run.coarse_dim) * 4
        ),
        notes=notes,
        storage=storage_estimate(
            src, run.coarse_dim, payload_bytes, other_bytes, run.mode.on_disk, opts.coarse_quantization
        ),
        **fields,
    )


def _record_point_ids(run: Run, count: int, ids_info: dict[str, int]) -> None:
    """The index record again, with the verified count and the kinds of ids the collection holds."""
    src = run.src
    stored = run.store.read(META_KEY) or {}
    manifest = {
        **(
            stored.get("manifest")
            or index_manifest(
                src, run.coarse_dim, run.opts.candidates, in_place=run.mode.in_place, prefix_only=run.mode.prefix_only
            )
        ),
        "count": count,
    }
    record = index_record(
        run.coarse_dim,
        run.full_dim,
        src.metric,
        manifest=manifest,
        adaptor=stored.get("adaptor"),
        point_ids=ids_info,
        full_vector=run.mode.full_vector,
    )
    run.store.write(record, META_KEY)


__all__ = ["DEFAULT_COARSE_DIM", "connect_source", "migrate_collection"]
