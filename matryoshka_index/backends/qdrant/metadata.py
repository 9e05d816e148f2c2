"""What a Qdrant collection keeps about its index: point handles, collection lookups, the metadata store.

See :mod:`matryoshka_index.backends.qdrant.server` for where records and adaptor files live.
"""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any, TypeVar

import numpy as np
from qdrant_client import QdrantClient
from qdrant_client import models as qm

from ..._version import __version__
from ...errors import BackendError, FormatError, InputError
from .common import COARSE, FULL
from .errors import call

T = TypeVar("T")

META_KEY = "matryoshka_index"
MIGRATION_KEY = "matryoshka_index_migration"
COMPANION_SUFFIX = "__mindex_meta"
RECORD_FORMAT = "matryoshka-index-qdrant"
RECORD_VERSION = 1
CHUNK_BYTES = 512 * 1024
_INT64_MAX = (1 << 63) - 1
_COMPANION_NS = uuid.UUID("6f1c3c52-54a4-4c55-9a55-6d696e646578")


def point_handle(point_id: int | str) -> int:
    """The int64 the index sees for a Qdrant point id: the id itself for ints in [0, 2**63), else a stable hash.

    The hash (63 bits of blake2b of the id's text) is the same in every process; collisions between
    n UUIDs have probability about n**2 / 2**64 (1e-7 at a million points). ``mindex migrate``
    checks a migrated collection for them and reports any.
    """
    if isinstance(point_id, (int, np.integer)) and 0 <= int(point_id) <= _INT64_MAX:
        return int(point_id)
    digest = hashlib.blake2b(str(point_id).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") & _INT64_MAX


def is_foreign_id(point_id: int | str) -> bool:
    """Whether a Qdrant id needs a handle (a UUID, or an int outside int64)."""
    return not (isinstance(point_id, (int, np.integer)) and 0 <= int(point_id) <= _INT64_MAX)


def resolve_alias(client: QdrantClient, name: str, endpoint: str) -> str:
    """The collection an alias points to, or ``name`` itself."""
    aliases = call(lambda: client.get_aliases(), endpoint, "listing aliases").aliases
    for a in aliases:
        if a.alias_name == name:
            return a.collection_name
    return name


def collection_names(client: QdrantClient, endpoint: str) -> list[str]:
    return sorted(c.name for c in call(lambda: client.get_collections(), endpoint, "listing collections").collections)


def require_collection(client: QdrantClient, name: str, endpoint: str, *, flag: str = "collection") -> str:
    """Resolve an alias and check the collection exists; a one-line InputError naming what does exist."""
    real = resolve_alias(client, name, endpoint)
    names = collection_names(client, endpoint)
    if real not in names:
        shown = [n for n in names if not n.endswith(COMPANION_SUFFIX)]
        listing = ", ".join(shown[:20]) + (" ..." if len(shown) > 20 else "") if shown else "none"
        raise InputError(f"{flag}: no collection or alias named {name!r} at {endpoint} (collections there: {listing})")
    return real


def vector_params(info: qm.CollectionInfo) -> dict[str, qm.VectorParams]:
    """Dense vector params by name ('' for an unnamed single vector)."""
    vectors = info.config.params.vectors
    if vectors is None:
        return {}
    if isinstance(vectors, qm.VectorParams):
        return {"": vectors}
    return dict(vectors)


def utc_now() -> str:
    """Now, in UTC, to the second (ISO 8601): the timestamps of records."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def bundle_id(files: dict[str, bytes]) -> str:
    """Content address of a set of files (names and bytes)."""
    digest = hashlib.sha256()
    for name in sorted(files):
        digest.update(name.encode() + b"\0" + hashlib.sha256(files[name]).digest())
    return digest.hexdigest()


class MetadataStore:
    """Records (small JSON) and blobs (adaptor files) kept with a collection; see the module docstring."""

    def __init__(self, client: QdrantClient, collection: str, endpoint: str, *, retries: int = 3) -> None:
        self.client = client
        self.collection = collection
        self.endpoint = endpoint
        self.companion = collection + COMPANION_SUFFIX
        self.retries = retries
        self._metadata_supported: bool | None = None

    def _call(self, fn: Callable[[], T], what: str) -> T:
        return call(fn, self.endpoint, what, retries=self.retries)

    # records ---------------------------------------------------------------------------
    def collection_metadata(self) -> dict[str, Any]:
        """The collection's own metadata (empty when it has none)."""
        info = self._call(
            lambda: self.client.get_collection(self.collection), f"reading collection {self.collection!r}"
        )
        return dict(getattr(info.config, "metadata", None) or {})

    def read(self, key: str = META_KEY) -> dict[str, Any] | None:
        """The record under ``key``: from the collection metadata, else the companion (None when absent)."""
        value = self.collection_metadata().get(key)
        if value is None:
            value = self.read_companion_record(key)
        if value is None:
            return None
        if isinstance(value, str):  # records are stored as JSON text so nothing reshapes them
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                raise FormatError(
                    f"collection {self.collection!r}: metadata {key!r} is not valid JSON; it was not written by matryoshka-index"
                ) from None
        if not isinstance(value, dict):
            raise FormatError(f"collection {self.collection!r}: metadata {key!r} is not a JSON object")
        return value

    def write(self, record: dict[str, Any] | None, key: str = META_KEY) -> None:
        """Store (or with None delete) one record, atomically: one metadata update is one request."""
        text = None if record is None else json.dumps(record, sort_keys=True)
        if self._metadata_supported is not False:
            try:
                self._call(
                    lambda: self.client.update_collection(self.collection, metadata={key: text}),
                    f"writing metadata of {self.collection!r}",
                )
            except BackendError:
                if self._metadata_supported:
                    raise
                self._metadata_supported = False  # a server older than 1.16 rejects the field
            else:
                if self._metadata_supported is None:
                    self._metadata_supported = self.collection_metadata().get(key) == text
                if self._metadata_supported:
                    return
        self.write_companion_record(key, text)

    # companion collection --------------------------------------------------------------
    def companion_exists(self) -> bool:
        """Whether the companion collection ``<collection>__mindex_meta`` exists."""
        return bool(self._call(lambda: self.client.collection_exists(self.companion), "checking the companion"))

    def _ensure_companion(self) -> None:
        if self.companion_exists():
            return
        # one tiny dense vector: payload-only points are not accepted by every server version
        self._call(
            lambda: self.client.create_collection(
                self.companion,
                vectors_config={"_": qm.VectorParams(size=1, distance=qm.Distance.DOT)},
                metadata={"matryoshka_index_companion_of": self.collection},
            ),
            f"creating the metadata collection {self.companion!r}",
        )

    def _record_point_id(self, key: str) -> str:
        return str(uuid.uuid5(_COMPANION_NS, f"record/{key}"))

    def read_companion_record(self, key: str) -> Any:
        """The text stored under ``key`` in the companion collection (None when absent)."""
        if not self.companion_exists():
            return None
        got = self._call(
            lambda: self.client.retrieve(self.companion, [self._record_point_id(key)], with_payload=True),
            "reading the metadata collection",
        )
        return got[0].payload.get("value") if got else None

    def write_companion_record(self, key: str, text: str | None) -> None:
        """Store ``text`` under ``key`` in the companion collection (None deletes it); kept out of the
        collection metadata because it may be large (the in-place migration's fingerprints)."""
        self._ensure_companion()
        pid = self._record_point_id(key)
        if text is None:
            self._call(
                lambda: self.client.delete(self.companion, qm.PointIdsList(points=[pid]), wait=True),
                "deleting a metadata record",
            )
            return
        self._call(
            lambda: self.client.upsert(
                self.companion,
                [qm.PointStruct(id=pid, vector={"_": [1.0]}, payload={"kind": "record", "key": key, "value": text})],
                wait=True,
            ),
            "writing a metadata record",
        )

    # blobs -----------------------------------------------------------------------------
    def write_blobs(self, files: dict[str, bytes]) -> dict[str, Any]:
        """Store files in the companion collection; returns the descriptor a record keeps to find them."""
        self._ensure_companion()
        bundle = bundle_id(files)
        described: dict[str, Any] = {}
        points: list[qm.PointStruct] = []
        for name, data in sorted(files.items()):
            chunks = [data[i : i + CHUNK_BYTES] for i in range(0, len(data), CHUNK_BYTES)] or [b""]
            described[name] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest(), "chunks": len(chunks)}
            for i, chunk in enumerate(chunks):
                points.append(
                    qm.PointStruct(
                        id=str(uuid.uuid5(_COMPANION_NS, f"blob/{bundle}/{name}/{i}")),
                        vector={"_": [1.0]},
                        payload={
                            "kind": "blob",
                            "bundle": bundle,
                            "file": name,
                            "chunk": i,
                            "data": base64.b64encode(chunk).decode(),
                        },
                    )
                )
        for start in range(0, len(points), 4):  # a few MiB per request at most
            batch = points[start : start + 4]
            self._call(lambda b=batch: self.client.upsert(self.companion, b, wait=True), "writing the adaptor")
        return {"collection": self.companion, "bundle": bundle, "files": described}

    def read_blobs(self, descriptor: dict[str, Any]) -> dict[str, bytes]:
        companion = descriptor.get("collection", self.companion)
        bundle = descriptor["bundle"]
        out: dict[str, bytes] = {}
        for name, desc in descriptor["files"].items():
            ids = [str(uuid.uuid5(_COMPANION_NS, f"blob/{bundle}/{name}/{i}")) for i in range(int(desc["chunks"]))]
            got = self._call(
                lambda ids=ids: self.client.retrieve(companion, ids, with_payload=True), "reading the adaptor"
            )
            by_chunk = {int(p.payload["chunk"]): p.payload["data"] for p in got}
            if len(by_chunk) != len(ids):
                raise FormatError(
                    f"collection {self.collection!r}: adaptor file {name} is incomplete in {companion!r} "
                    f"({len(by_chunk)} of {len(ids)} chunks); restore the companion collection or rebuild the index"
                )
            data = b"".join(base64.b64decode(by_chunk[i]) for i in range(len(ids)))
            if hashlib.sha256(data).hexdigest() != desc["sha256"]:
                raise FormatError(
                    f"collection {self.collection!r}: adaptor file {name} in {companion!r} does not match its checksum"
                )
            out[name] = data
        return out

    def delete_other_blobs(self, keep_bundle: str | None) -> None:
        """Garbage-collect chunks of adaptors no record points to any more."""
        if not self.companion_exists():
            return
        must_not = [qm.FieldCondition(key="bundle", match=qm.MatchValue(value=keep_bundle))] if keep_bundle else []
        flt = qm.Filter(must=[qm.FieldCondition(key="kind", match=qm.MatchValue(value="blob"))], must_not=must_not)
        self._call(
            lambda: self.client.delete(self.companion, qm.FilterSelector(filter=flt), wait=True),
            "cleaning old adaptor chunks",
        )

    def export(self) -> dict[str, Any]:
        """Everything stored for this collection, as JSON (for the in-memory snapshot)."""
        records = {}
        for key in (META_KEY, MIGRATION_KEY):
            value = self.read(key)
            if value is not None:
                records[key] = value
        blobs = None
        desc = (records.get(META_KEY) or {}).get("adaptor")
        if desc:
            blobs = {name: base64.b64encode(data).decode() for name, data in self.read_blobs(desc).items()}
        return {"records": records, "adaptor_files": blobs}


def index_record(
    coarse_dim: int,
    full_dim: int,
    metric: str,
    *,
    manifest: dict[str, Any] | None,
    adaptor: dict[str, Any] | None,
    point_ids: dict[str, Any] | None = None,
    full_vector: str | None = FULL,
) -> dict[str, Any]:
    """The index record (key ``matryoshka_index``) of a collection: vector layout, manifest, adaptor files
    (``full_vector`` None, ``full_dim`` 0: the collection keeps the prefix alone)."""
    return {
        "format": RECORD_FORMAT,
        "format_version": RECORD_VERSION,
        "vectors": {"coarse": COARSE, "full": full_vector, "coarse_dim": int(coarse_dim), "full_dim": int(full_dim)},
        "metric": metric,
        "manifest": manifest,
        "adaptor": adaptor,
        "point_ids": point_ids,
        "library_version": __version__,
        "updated": utc_now(),
    }


def check_index_record(record: dict[str, Any], collection: str) -> None:
    """One FormatError line unless ``record`` is an index record of a version this code reads."""
    if record.get("format") != RECORD_FORMAT:
        raise FormatError(
            f"collection {collection!r}: metadata {META_KEY!r} has format {record.get('format')!r}, not {RECORD_FORMAT!r}"
        )
    if record.get("format_version") != RECORD_VERSION:
        raise FormatError(
            f"collection {collection!r}: index metadata format version {record.get('format_version')!r} is not "
            f"supported by this version of matryoshka-index (supported: {RECORD_VERSION}); upgrade matryoshka-index"
        )


__all__ = [
    "COMPANION_SUFFIX",
    "META_KEY",
    "MIGRATION_KEY",
    "MetadataStore",
    "bundle_id",
    "check_index_record",
    "collection_names",
    "index_record",
    "is_foreign_id",
    "point_handle",
    "require_collection",
    "resolve_alias",
    "utc_now",
    "vector_params",
]
