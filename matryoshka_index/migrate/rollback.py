"""Undo an in-place migration (``mindex migrate --rollback``): remove what it added and nothing else."""

from __future__ import annotations

import time

from qdrant_client import QdrantClient

from ..backends.base import COARSE
from ..backends.qdrant.connection import client_engine, describe_client, save_local_collections
from ..backends.qdrant.errors import call
from ..backends.qdrant.metadata import META_KEY, MIGRATION_KEY, MetadataStore, require_collection, vector_params
from ..errors import InputError
from .checkpoint import is_migration_record, stored_state
from .fingerprint import CHECK_KEY
from .reports import RollbackReport
from .source import in_place_checkpoint


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
    cp = in_place_checkpoint(client, real, endpoint)
    if cp is None:
        store = MetadataStore(client, real, endpoint)
        other = store.read(MIGRATION_KEY)
        if is_migration_record(other):
            raise InputError(
                f"collection {real!r} is the target of a copy-mode migration of {other.get('source')!r}, which was "
                "never modified; to undo it, point your alias back and delete this collection"
            )
        raise InputError(
            f"collection {real!r} at {endpoint} holds no in-place migration to roll back; --rollback only removes "
            "a 'coarse' vector that mindex migrate --in-place added"
        )
    if cp.added_vector != COARSE:
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
        if cp.vector is None and cp.unnamed_form != "named":
            _restore_single_vector(client, real)
    store = MetadataStore(client, real, endpoint, retries=max_retries)
    removed_companion = None
    if cp.companion_created and store.companion_exists():
        call(
            lambda: client.delete_collection(store.companion),
            endpoint,
            f"deleting the metadata collection {store.companion!r}",
            retries=max_retries,
        )
        removed_companion = store.companion
    elif store.companion_exists():  # a companion that was there before: take out only our records
        store.delete_other_blobs(None)
        store.write_companion_record(CHECK_KEY, None)
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
        state_before=stored_state(cp.mode, cp.state),
        seconds=time.monotonic() - started,
    )


def _restore_single_vector(client: QdrantClient, collection: str) -> None:
    """Give an unnamed vector back its single ``VectorParams`` form after ``coarse`` is gone.

    qdrant-client's local mode turns ``VectorParams`` into ``{"": VectorParams}`` when a named vector
    is added and keeps the dict when it is deleted, so the config would not read as before. Its
    collections are plain Python objects saved to ``meta.json``: set the single form back and save.
    (A server's config is whatever the server keeps; there is no request that changes the form.)
    """
    inner = client_engine(client)
    coll = (getattr(inner, "collections", None) or {}).get(collection)
    vectors = getattr(getattr(coll, "config", None), "vectors", None)
    if isinstance(vectors, dict) and set(vectors) == {""}:
        coll.config.vectors = vectors[""]  # type: ignore[union-attr]
        save_local_collections(client)


__all__ = ["rollback_in_place"]
