"""Open what an index stored in a Qdrant collection is made of: its backend, its manifest, its adaptor files.

The backend's half of ``MatryoshkaIndex.from_qdrant``: it connects, reads the index record (from the
collection metadata or the companion collection), refuses a migration that has not been verified,
reads the adaptor files and attaches a :class:`~.server.QdrantBackend`, checking the collection's
vectors against the record. Turning the files into an adaptor, checking it against the vectors and
building the index is done above the backends (:mod:`matryoshka_index.qdrant_open`), since a backend
imports neither the adaptor nor the index.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from qdrant_client import QdrantClient

from ...errors import FormatError, InputError
from .connection import close_quietly, connect, describe_client
from .metadata import META_KEY, MIGRATION_KEY, MetadataStore, check_index_record, require_collection
from .server import QdrantBackend


@dataclass(frozen=True)
class StoredIndex:
    """The parts of an index stored in a Qdrant collection; closing ``backend`` releases the client it opened."""

    backend: QdrantBackend
    manifest: dict[str, Any]
    """The index manifest of the record (``{}`` when the record has none)."""
    adaptor_kind: str
    """``"matryoshka-adaptor"``, ``"pca"`` or ``"none"``, as the manifest names it."""
    adaptor_files: dict[str, bytes] | None
    """The adaptor's files from the companion collection (None for ``"none"``)."""
    where: str
    """``collection 'name' at endpoint``, for messages."""


def open_stored_index(
    collection: str,
    url: str | None = None,
    path: str | os.PathLike[str] | None = None,
    client: QdrantClient | None = None,
    *,
    api_key: str | None = None,
    https: bool | None = None,
    timeout: int | None = None,
    prefer_grpc: bool = False,
    allow_unverified: bool = False,
    **backend_options: Any,
) -> StoredIndex:
    """The parts of the index stored in ``collection`` (or an alias); one line for anything wrong.

    With neither ``url``, ``path`` nor ``client``, ``QDRANT_URL`` is used if set (and
    ``QDRANT_API_KEY`` with a URL). ``allow_unverified=True`` opens an unfinished migration anyway
    (e.g. to inspect it). ``backend_options`` go to :meth:`QdrantBackend.from_collection`.
    """
    if url is None and path is None and client is None:
        url = os.environ.get("QDRANT_URL") or None
        if url is None:
            raise InputError("from_qdrant: give url=, path= or client= (or set QDRANT_URL)")
    if url is not None and api_key is None:
        api_key = os.environ.get("QDRANT_API_KEY") or None
    qclient, owns = connect(
        url=url,
        path=path,
        client=client,
        api_key=api_key,
        https=https,
        timeout=timeout,
        prefer_grpc=prefer_grpc,
        must_exist=True,
    )
    try:
        endpoint = describe_client(qclient)
        real = require_collection(qclient, collection, endpoint)
        where = f"collection {real!r} at {endpoint}"
        store = MetadataStore(qclient, real, endpoint)
        record = store.read(META_KEY)
        if record is None:
            raise InputError(
                f"{where} has no matryoshka-index metadata; build one with "
                "mindex build --backend qdrant, or migrate this collection with mindex migrate"
            )
        check_index_record(record, real)
        _check_migration_finished(store.read(MIGRATION_KEY), where, allow_unverified)
        manifest = record.get("manifest") or {}
        kind = (manifest.get("adaptor") or {}).get("kind", "matryoshka-adaptor")
        files = store.read_blobs(record["adaptor"]) if record.get("adaptor") and kind != "none" else None
        if files is None and kind != "none":
            raise FormatError(f"{where}: the index metadata names no adaptor files")
        backend = QdrantBackend.from_collection(qclient, real, owns_client=owns, **backend_options)
    except BaseException:
        if owns:
            close_quietly(qclient)
        raise
    try:
        _check_vectors(backend, record, where)
    except BaseException:
        backend.close()
        raise
    return StoredIndex(backend=backend, manifest=manifest, adaptor_kind=kind, adaptor_files=files, where=where)


def _check_migration_finished(migration: dict[str, Any] | None, where: str, allow_unverified: bool) -> None:
    if not migration or migration.get("state") in ("verified", "complete") or allow_unverified:
        return
    if migration.get("mode") == "in_place":
        raise InputError(
            f"{where} is an unfinished in-place migration (state "
            f"{migration.get('state')!r}, {migration.get('coarse_added', 0)} of {migration.get('source_count', '?')} "
            "points given a coarse vector); finish it with mindex migrate --in-place --resume, or undo it "
            "with mindex migrate --rollback"
        )
    raise InputError(
        f"{where} is an unfinished migration (state {migration.get('state')!r}, "
        f"{migration.get('copied', 0)} of {migration.get('source_count', '?')} points copied); "
        "finish it with mindex migrate --resume"
    )


def _check_vectors(backend: QdrantBackend, record: dict[str, Any], where: str) -> None:
    """The collection's ``coarse`` / full vectors and metric against the index record; one line listing each mismatch."""
    vec = record.get("vectors") or {}
    problems = []
    if int(vec.get("coarse_dim", backend.coarse_dim)) != backend.coarse_dim:
        problems.append(f"'coarse' has {backend.coarse_dim} dims but the index metadata says {vec.get('coarse_dim')}")
    if int(vec.get("full_dim", backend.full_dim)) != backend.full_dim:
        problems.append(
            f"{full_vector_name(backend)} has {backend.full_dim} dims but the index metadata says {vec.get('full_dim')}"
        )
    if record.get("metric") and record["metric"] != backend.metric:
        problems.append(f"the vectors use {backend.metric} but the index metadata says {record['metric']}")
    if problems:
        raise InputError(f"{where} does not match its index metadata: {'; '.join(problems)}")


def full_vector_name(backend: QdrantBackend) -> str:
    """How messages name the backend's full vector: ``'full'``, its own name, or "the unnamed vector"."""
    return repr(backend.full_vector) if backend.full_vector else "the unnamed vector"


__all__ = ["StoredIndex", "full_vector_name", "open_stored_index"]
