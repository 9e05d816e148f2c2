"""Qdrant backend: named vectors ``coarse`` + ``full``, both stages inside Qdrant, metadata kept with the collection.

Layout of a collection this backend owns::

    coarse   adapted prefix, coarse_dim, HNSW (optionally int8 / binary quantized, with rescoring)
    full     full vector (the original embedding by default), HNSW off (m=0): only used to rerank
    payload  kept as given

The full vector need not be named ``full``: a collection migrated in place (``mindex migrate
--in-place``) keeps its original vector under its own name (``""`` for an unnamed single vector)
and only gains ``coarse``. The index record names the full vector (``vectors.full``), and
:meth:`QdrantBackend.from_collection` reads it from there (or takes ``full_vector=``).

A search is one ``query_points`` request (``query_batch_points`` for many queries): a ``prefetch`` on
``coarse`` with ``limit=candidates`` and the final query on ``full`` with ``limit=k``, so both stages
run inside Qdrant (on every shard of a cluster). Payload filters pass through to both stages.

Where things live
-----------------
* Connection: ``url=`` (a server or cluster, with ``api_key``, ``https``, ``timeout``, ``prefer_grpc``),
  ``path=`` (qdrant-client local mode on disk: one process at a time, and it commits one SQLite
  transaction per point, ~10-20 ms/point on an ordinary disk), ``location=":memory:"`` or
  ``client=`` (an existing :class:`~qdrant_client.QdrantClient`). With none of them the backend runs
  embedded in memory and :meth:`QdrantBackend.save` writes a snapshot (``.npy`` + JSON, no pickle)
  into the index directory, which :meth:`QdrantBackend.open` loads back: local *path* mode would
  have made ``mindex build`` of 50k vectors take a quarter of an hour on this project's CI disk.
* Index metadata (the index manifest, the vector layout) is stored in the collection's own
  **metadata** (``create_collection(metadata=...)`` / ``update_collection(metadata=...)``, Qdrant
  >= 1.16 and qdrant-client local mode) under the key ``"matryoshka_index"``. On an older server,
  which keeps no collection metadata, the same record goes into the companion collection below.
* The adaptor files (binary safetensors + JSON) go into a **companion collection**
  ``<collection>__mindex_meta``: one point per chunk of at most 512 KiB, base64 in the payload,
  content-addressed by sha256. They are kept out of the collection metadata on purpose: metadata
  travels with every ``get_collection`` answer and, in a cluster, through the Raft consensus log,
  which is no place for megabytes of weights. The companion never appears in the main collection's
  searches or point counts. A new adaptor is written chunks-first, then the metadata record that
  points to it is switched (the commit point), then old chunks are deleted: a crash in between
  leaves the previous adaptor readable.

Point ids
---------
The index deals in int64 ids >= 0 and Qdrant int ids map 1:1. A migrated collection may hold UUID
ids (or unsigned ids >= 2**63): the backend reports each such point under a stable *handle*, the
first 63 bits of ``blake2b(str(id))``, the same in every process, and keeps a handle -> original id
map filled by every search, scroll and :meth:`QdrantBackend.ids` call (or, for a handle it has not
seen, by one ids-only scroll of the collection). :meth:`QdrantBackend.point_ids` maps handles back
to the original ids (UUID strings exactly as Qdrant returns them); :meth:`QdrantBackend.search_points`
returns the original ids directly. The UUIDs themselves are never rewritten.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import random
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import numpy as np
from qdrant_client import QdrantClient
from qdrant_client import models as qm

from .._version import __version__
from ..errors import BackendError, FormatError, InputError, MatryoshkaError
from ..progress import progress
from ..storage import atomic_write_json, save_npy
from .base import EMPTY_ID, empty_results

T = TypeVar("T")

COARSE = "coarse"
FULL = "full"
META_KEY = "matryoshka_index"
MIGRATION_KEY = "matryoshka_index_migration"
COMPANION_SUFFIX = "__mindex_meta"
RECORD_FORMAT = "matryoshka-index-qdrant"
RECORD_VERSION = 1
SNAPSHOT_FORMAT = "matryoshka-index-qdrant-snapshot"
SNAPSHOT_VERSION = 1
SNAPSHOT_DIR = "qdrant"
DEFAULT_COLLECTION = "matryoshka_index"
CHUNK_BYTES = 512 * 1024
_INT64_MAX = (1 << 63) - 1
_QUERY_BATCH = 64
_ID_BATCH = 1024
_METRICS = {"cosine": qm.Distance.COSINE, "ip": qm.Distance.DOT, "dot": qm.Distance.DOT}
_QUANTIZATIONS = (None, "int8", "binary")
_COMPANION_NS = uuid.UUID("6f1c3c52-54a4-4c55-9a55-6d696e646578")
_TRANSIENT_HTTP = {408, 429, 500, 502, 503, 504}


# ---------------------------------------------------------------------------------------------- ids


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


# --------------------------------------------------------------------------------------- connection


def describe_client(client: QdrantClient) -> str:
    """A short human name of where a client points: its URL, its local path, or 'in-memory Qdrant'."""
    inner = getattr(client, "_client", None)
    location = getattr(inner, "location", None)
    if location is not None and hasattr(inner, "persistent"):
        return f"local Qdrant storage {location}" if inner.persistent else "in-memory Qdrant"
    uri = getattr(inner, "rest_uri", None)
    return str(uri).rstrip("/") if uri else "Qdrant"


def _client_mode(client: QdrantClient) -> tuple[str, dict[str, Any]]:
    """('memory' | 'path' | 'remote', connection facts to save) for any QdrantClient."""
    inner = getattr(client, "_client", None)
    if hasattr(inner, "persistent") and hasattr(inner, "location"):
        if inner.persistent:
            return "path", {"path": str(Path(inner.location).absolute())}
        return "memory", {}
    opts = dict(getattr(client, "init_options", {}) or {})
    facts: dict[str, Any] = {"url": str(getattr(inner, "rest_uri", "") or opts.get("url") or "").rstrip("/")}
    for key in ("prefer_grpc", "https", "timeout", "grpc_port"):
        if opts.get(key) is not None:
            facts[key] = opts[key]
    return "remote", facts


def connect(
    *,
    url: str | None = None,
    path: str | os.PathLike[str] | None = None,
    location: str | None = None,
    client: QdrantClient | None = None,
    api_key: str | None = None,
    https: bool | None = None,
    timeout: int | None = None,
    prefer_grpc: bool = False,
    grpc_port: int | None = None,
    must_exist: bool = False,
) -> tuple[QdrantClient, bool]:
    """A QdrantClient for the given connection options, and whether the caller owns (must close) it.

    ``must_exist``: a ``path`` must already be a local Qdrant storage (for reading an existing
    collection); otherwise qdrant-client would silently create an empty one there.
    """
    given = [name for name, v in (("url", url), ("path", path), ("location", location), ("client", client)) if v]
    if len(given) > 1:
        raise InputError(f"Qdrant connection: give only one of url, path, location or client (got {', '.join(given)})")
    if client is not None:
        if not isinstance(client, QdrantClient):
            raise InputError(f"client: expected a qdrant_client.QdrantClient, got {type(client).__name__}")
        return client, False
    if path is not None:
        p = Path(path)
        if must_exist and not (p / "meta.json").is_file():
            raise InputError(f"{p}: not a Qdrant local-mode storage directory (no meta.json); check --qdrant-path")
        if p.exists() and not p.is_dir():
            raise InputError(f"{p}: exists and is not a directory; give a directory for Qdrant local mode")
        try:
            return QdrantClient(path=str(p)), True
        except RuntimeError as exc:  # portalocker: another QdrantClient holds the storage
            raise BackendError(
                f"{p}: Qdrant local storage is open in another client or process ({_first_line(exc)}); "
                "close it first (local mode allows one at a time) or use a Qdrant server"
            ) from None
    if url is not None:
        if timeout is not None and (not isinstance(timeout, (int, float)) or timeout <= 0):
            raise InputError(f"timeout: must be a positive number of seconds, got {timeout!r}")
        kwargs: dict[str, Any] = {
            "url": url,
            "api_key": api_key,
            "https": https,
            "timeout": int(timeout) if timeout is not None else None,
            "prefer_grpc": prefer_grpc,
            # our own first request gives the one-line error; the client's check only warns
            "check_compatibility": False,
        }
        if grpc_port is not None:
            kwargs["grpc_port"] = grpc_port
        try:
            return QdrantClient(**kwargs), True
        except (ValueError, TypeError) as exc:
            raise InputError(f"url: {url!r} is not a usable Qdrant URL ({_first_line(exc)})") from None
    if location not in (None, ":memory:"):
        raise InputError(f"location: only ':memory:' is supported, got {location!r}; use url= or path=")
    return QdrantClient(location=":memory:"), True


# ------------------------------------------------------------------------------------------- errors


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else exc.__class__.__name__


def _http_error_text(exc: Any) -> str:
    try:
        body = json.loads(exc.content)
        return str(body.get("status", {}).get("error") or body)[:300]
    except Exception:
        return (exc.content or b"")[:300].decode(errors="replace") or str(exc.reason_phrase)


def _grpc_code(exc: BaseException) -> Any:
    code = getattr(exc, "code", None)
    if callable(code):
        with contextlib.suppress(Exception):
            return code()
    return None


def is_transient(exc: BaseException) -> bool:
    """Whether retrying may help: connection resets, timeouts, 429/5xx, gRPC UNAVAILABLE and kin."""
    from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

    if isinstance(exc, UnexpectedResponse):
        return exc.status_code in _TRANSIENT_HTTP
    if isinstance(exc, ResponseHandlingException):
        return True
    try:
        import httpx

        if isinstance(exc, (httpx.TransportError,)):
            return True
    except ImportError:  # pragma: no cover - httpx is a qdrant-client dependency
        pass
    code = _grpc_code(exc)
    if code is not None:
        return getattr(code, "name", "") in {"UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED", "ABORTED"}
    return isinstance(exc, (ConnectionError, TimeoutError))


def translate_error(exc: BaseException, endpoint: str, what: str = "the request") -> MatryoshkaError | None:
    """A one-line :class:`MatryoshkaError` for an exception raised inside qdrant-client, or None (a bug: re-raise)."""
    from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

    if isinstance(exc, MatryoshkaError):
        return exc
    if isinstance(exc, ResponseHandlingException):
        source = getattr(exc, "source", None) or exc
        name = source.__class__.__name__
        if "Timeout" in name and "Connect" not in name:
            return BackendError(
                f"Qdrant at {endpoint} did not answer {what} in time ({name}); raise the timeout or check the server load"
            )
        return BackendError(f"cannot reach Qdrant at {endpoint}: {_first_line(source)}; is the server running?")
    if isinstance(exc, UnexpectedResponse):
        status = exc.status_code
        text = _http_error_text(exc)
        if status in (401, 403):
            return BackendError(
                f"Qdrant at {endpoint} refused {what} ({status}: {text}); pass the right API key (--api-key or QDRANT_API_KEY)"
            )
        return BackendError(f"Qdrant at {endpoint} refused {what} ({status}: {text})")
    code = _grpc_code(exc)
    if code is not None:
        details = getattr(exc, "details", lambda: "")() or _first_line(exc)
        name = getattr(code, "name", str(code))
        if name == "UNAVAILABLE":
            return BackendError(f"cannot reach Qdrant at {endpoint}: {details}; is the server running?")
        if name in ("UNAUTHENTICATED", "PERMISSION_DENIED"):
            return BackendError(f"Qdrant at {endpoint} refused {what} ({details}); pass the right API key")
        if name == "DEADLINE_EXCEEDED":
            return BackendError(f"Qdrant at {endpoint} did not answer {what} in time; raise the timeout")
        return BackendError(f"Qdrant at {endpoint} refused {what} ({name}: {details})")
    try:
        import httpx

        if isinstance(exc, httpx.TransportError):
            return BackendError(f"cannot reach Qdrant at {endpoint}: {_first_line(exc)}; is the server running?")
    except ImportError:  # pragma: no cover
        pass
    if isinstance(exc, (ValueError, RuntimeError, AssertionError, KeyError, NotImplementedError)):
        # local mode reports refusals as plain exceptions
        return BackendError(f"{endpoint} refused {what}: {_first_line(exc)}")
    return None


def call(
    fn: Callable[[], T],
    endpoint: str,
    what: str = "the request",
    *,
    retries: int = 0,
    base_delay: float = 0.5,
    max_delay: float = 10.0,
    sleep: Callable[[float], None] | None = None,
) -> T:
    """Run one qdrant-client call; retry transient failures with exponential backoff and jitter; one-line errors."""
    for attempt in range(retries + 1):
        try:
            return fn()
        except MatryoshkaError:
            raise
        except Exception as exc:
            if attempt < retries and is_transient(exc):
                (sleep or time.sleep)(min(max_delay, base_delay * 2**attempt) * (0.5 + random.random() / 2))
                continue
            err = translate_error(exc, endpoint, what)
            if err is None:
                raise
            raise err from None
    raise AssertionError("unreachable")  # pragma: no cover


# ------------------------------------------------------------------------------------ collection info


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


# ------------------------------------------------------------------------------------------ metadata


def _now() -> str:
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
        info = self._call(
            lambda: self.client.get_collection(self.collection), f"reading collection {self.collection!r}"
        )
        return dict(getattr(info.config, "metadata", None) or {})

    def read(self, key: str = META_KEY) -> dict[str, Any] | None:
        value = self.collection_metadata().get(key)
        if value is None:
            value = self._read_companion_record(key)
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
        self._write_companion_record(key, text)

    # companion collection --------------------------------------------------------------
    def _companion_exists(self) -> bool:
        return bool(self._call(lambda: self.client.collection_exists(self.companion), "checking the companion"))

    def _ensure_companion(self) -> None:
        if self._companion_exists():
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

    def _read_companion_record(self, key: str) -> Any:
        if not self._companion_exists():
            return None
        got = self._call(
            lambda: self.client.retrieve(self.companion, [self._record_point_id(key)], with_payload=True),
            "reading the metadata collection",
        )
        return got[0].payload.get("value") if got else None

    def _write_companion_record(self, key: str, text: str | None) -> None:
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
        if not self._companion_exists():
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


# ------------------------------------------------------------------------------------------ backend


def _check_metric(metric: str) -> str:
    m = str(metric).lower()
    if m not in _METRICS:
        raise InputError(f"metric: the Qdrant backend supports 'cosine' and 'ip' (inner product), got {metric!r}")
    return "ip" if m == "dot" else m


def _check_index(index: str) -> str:
    if index not in ("hnsw", "flat"):
        raise InputError(f"index: the Qdrant backend supports 'hnsw' and 'flat' (exact coarse stage), got {index!r}")
    return index


def _metric_of(distance: qm.Distance) -> str:
    if distance == qm.Distance.COSINE:
        return "cosine"
    if distance == qm.Distance.DOT:
        return "ip"
    raise InputError(
        f"vector distance {distance.value} is not supported: matryoshka search ranks by inner product (Cosine or Dot)"
    )


def _quantization(kind: str | None, always_ram: bool) -> qm.QuantizationConfig | None:
    if kind not in _QUANTIZATIONS:
        raise InputError(f"coarse_quantization: choose None, 'int8' or 'binary', got {kind!r}")
    if kind == "int8":
        return qm.ScalarQuantization(
            scalar=qm.ScalarQuantizationConfig(type=qm.ScalarType.INT8, quantile=0.99, always_ram=always_ram)
        )
    if kind == "binary":
        return qm.BinaryQuantization(binary=qm.BinaryQuantizationConfig(always_ram=always_ram))
    return None


class QdrantBackend:
    """Coarse + full named vectors in a Qdrant collection; both search stages run inside Qdrant.

    Create one with :meth:`create` (a new collection), :meth:`open` (from a saved index manifest) or
    :meth:`from_collection` (an existing collection with ``coarse`` and ``full`` vectors, e.g. a migrated one).
    """

    kind: ClassVar[str] = "qdrant"

    def __init__(
        self,
        client: QdrantClient,
        collection: str,
        *,
        coarse_dim: int,
        full_dim: int,
        metric: str,
        owns_client: bool = False,
        index: str = "hnsw",
        coarse_quantization: str | None = None,
        rescore: bool = True,
        oversampling: float | None = None,
        hnsw_ef: int | None = None,
        full_quantized: bool = False,
        upload_batch_size: int = 256,
        parallel: int = 1,
        max_retries: int = 5,
        quiet: bool = False,
        has_foreign_ids: bool = False,
        connection: dict[str, Any] | None = None,
        full_vector: str = FULL,
    ) -> None:
        self.client = client
        self.collection = collection
        self.full_vector = full_vector
        """Name of the full (rerank) vector: ``"full"``, or an in-place-migrated collection's own vector."""
        self.coarse_dim = int(coarse_dim)
        self.full_dim = int(full_dim)
        self.metric = _check_metric(metric)
        self.index = _check_index(index)
        self.coarse_quantization = coarse_quantization
        self.rescore = rescore
        self.oversampling = oversampling
        self.hnsw_ef = hnsw_ef
        self.full_quantized = full_quantized
        self.upload_batch_size = max(1, int(upload_batch_size))
        self.max_retries = max(0, int(max_retries))
        self.quiet = quiet
        self.endpoint = describe_client(client)
        self.mode, facts = _client_mode(client)
        self._local = self.mode != "remote"
        # local mode is one SQLite connection bound to its thread: no parallel uploads there
        self.parallel = 1 if self._local else max(1, int(parallel))
        self.connection = {**facts, **(connection or {})}
        self._foreign: dict[int, int | str] = {}
        self._foreign_lock = threading.Lock()
        self._has_foreign_ids = has_foreign_ids
        self._full_map_built = False
        self.metadata = MetadataStore(client, collection, self.endpoint, retries=self.max_retries)
        self._owns_client = owns_client
        self._finalizer = weakref.finalize(self, _close_quietly, client if owns_client else None)

    # ---------------------------------------------------------------------------- construction
    @classmethod
    def create(
        cls,
        *,
        coarse_dim: int,
        full_dim: int,
        metric: str = "cosine",
        index: str = "hnsw",
        url: str | None = None,
        api_key: str | None = None,
        https: bool | None = None,
        timeout: int | None = None,
        prefer_grpc: bool = False,
        grpc_port: int | None = None,
        path: str | os.PathLike[str] | None = None,
        location: str | None = None,
        client: QdrantClient | None = None,
        collection: str | None = None,
        shard_number: int | None = None,
        replication_factor: int | None = None,
        write_consistency_factor: int | None = None,
        on_disk: bool = False,
        on_disk_payload: bool | None = None,
        coarse_quantization: str | None = None,
        quantization_always_ram: bool = True,
        rescore: bool = True,
        oversampling: float | None = None,
        hnsw_m: int | None = None,
        hnsw_ef_construct: int | None = None,
        hnsw_ef: int | None = None,
        upload_batch_size: int = 256,
        parallel: int = 1,
        max_retries: int = 5,
        quiet: bool = False,
        **unknown: Any,
    ) -> QdrantBackend:
        """Create a new collection with the ``coarse`` + ``full`` layout (it must not exist yet).

        ``index``: ``"hnsw"`` (an HNSW graph on ``coarse``) or ``"flat"`` (exact coarse stage,
        ``SearchParams(exact=True)``, no graph: the same results as FAISS ``flat``).
        Connection: ``url`` (+ ``api_key``, ``https``, ``timeout``, ``prefer_grpc``), ``path`` (local
        mode on disk), ``location=":memory:"`` or ``client``; none of them: embedded in memory, saved
        as a snapshot inside the index directory. Cluster options: ``shard_number``,
        ``replication_factor``, ``write_consistency_factor``. ``on_disk`` keeps ``full`` on disk
        (memory-mapped; it is only read to rerank). ``coarse_quantization``: None, ``"int8"`` or
        ``"binary"``, searched with ``rescore`` (and optional ``oversampling``). ``hnsw_m``,
        ``hnsw_ef_construct``: HNSW graph of ``coarse``; ``hnsw_ef``: search breadth (at least
        ``candidates`` is always used). ``upload_batch_size`` points per request, ``parallel``
        concurrent requests (server mode), ``max_retries`` on transient errors.
        """
        if unknown:
            raise InputError(f"Qdrant backend: unknown option(s) {', '.join(sorted(unknown))}")
        metric = _check_metric(metric)
        for name, value in (("coarse_dim", coarse_dim), ("full_dim", full_dim)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise InputError(f"{name}: must be a positive integer, got {value!r}")
        if coarse_dim > full_dim:
            raise InputError(f"coarse_dim: {coarse_dim} exceeds full_dim {full_dim}")
        index = _check_index(index)
        quant = _quantization(coarse_quantization, quantization_always_ram)
        for name, value in (("shard_number", shard_number), ("replication_factor", replication_factor)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise InputError(f"{name}: must be a positive integer, got {value!r}")
        if url is None and path is None and location is None and client is None:
            location = ":memory:"
        qclient, owns = connect(
            url=url,
            path=path,
            location=location,
            client=client,
            api_key=api_key,
            https=https,
            timeout=timeout,
            prefer_grpc=prefer_grpc,
            grpc_port=grpc_port,
        )
        endpoint = describe_client(qclient)
        name = collection or DEFAULT_COLLECTION
        if name.endswith(COMPANION_SUFFIX):
            raise InputError(f"collection: names ending in {COMPANION_SUFFIX!r} are reserved for index metadata")
        try:
            if call(lambda: qclient.collection_exists(name), endpoint, "checking the collection", retries=max_retries):
                raise InputError(
                    f"collection: {name!r} already exists at {endpoint}; choose another name (collection=...) "
                    "or open it with MatryoshkaIndex.from_qdrant"
                )
            distance = _METRICS[metric]
            hnsw = None
            if index == "flat":  # exact coarse stage: no graph to build
                hnsw = qm.HnswConfigDiff(m=0)
            elif hnsw_m is not None or hnsw_ef_construct is not None:
                hnsw = qm.HnswConfigDiff(m=hnsw_m, ef_construct=hnsw_ef_construct)
            vectors = {
                COARSE: qm.VectorParams(
                    size=int(coarse_dim), distance=distance, hnsw_config=hnsw, quantization_config=quant
                ),
                # m=0: no graph for `full`, it is only read to rerank the prefetched candidates
                FULL: qm.VectorParams(
                    size=int(full_dim), distance=distance, hnsw_config=qm.HnswConfigDiff(m=0), on_disk=bool(on_disk)
                ),
            }
            call(
                lambda: qclient.create_collection(
                    name,
                    vectors_config=vectors,
                    shard_number=shard_number,
                    replication_factor=replication_factor,
                    write_consistency_factor=write_consistency_factor,
                    on_disk_payload=on_disk_payload,
                ),
                endpoint,
                f"creating collection {name!r}",
                retries=max_retries,
            )
        except BaseException:
            if owns:
                _close_quietly(qclient)
            raise
        connection = {k: v for k, v in (("timeout", timeout), ("prefer_grpc", prefer_grpc or None)) if v is not None}
        return cls(
            qclient,
            name,
            coarse_dim=int(coarse_dim),
            full_dim=int(full_dim),
            metric=metric,
            owns_client=owns,
            index=index,
            coarse_quantization=coarse_quantization,
            rescore=rescore,
            oversampling=oversampling,
            hnsw_ef=hnsw_ef,
            upload_batch_size=upload_batch_size,
            parallel=parallel,
            max_retries=max_retries,
            quiet=quiet,
            connection=connection,
        )

    @classmethod
    def from_collection(
        cls,
        client: QdrantClient,
        collection: str,
        *,
        owns_client: bool = False,
        upload_batch_size: int = 256,
        parallel: int = 1,
        max_retries: int = 5,
        hnsw_ef: int | None = None,
        oversampling: float | None = None,
        quiet: bool = False,
        full_vector: str | None = None,
        **unknown: Any,
    ) -> QdrantBackend:
        """Attach to an existing collection (an alias is resolved) that has ``coarse`` and a full vector.

        ``full_vector``: the name of the full (rerank) vector; default: the one the index record
        names (``"full"``, or the original vector of a collection migrated in place).
        """
        if unknown:
            raise InputError(f"Qdrant backend: unknown option(s) {', '.join(sorted(unknown))}")
        endpoint = describe_client(client)
        real = require_collection(client, collection, endpoint)
        info = call(lambda: client.get_collection(real), endpoint, f"reading collection {real!r}", retries=max_retries)
        params = vector_params(info)
        record = MetadataStore(client, real, endpoint).read(META_KEY) or {}
        if full_vector is None:
            named = (record.get("vectors") or {}).get("full", FULL)
            full_vector = named if isinstance(named, str) else FULL
        missing = [v for v in (COARSE, full_vector) if v not in params]
        if missing:
            raise InputError(
                f"collection {real!r} at {endpoint} has no {' and '.join(repr(m) for m in missing)} vector; "
                "it is not a matryoshka-index collection (migrate it with mindex migrate)"
            )
        coarse, full = params[COARSE], params[full_vector]
        if coarse.distance != full.distance:
            raise InputError(f"collection {real!r}: 'coarse' and 'full' use different distances")
        metric = _metric_of(full.distance)
        quant = coarse.quantization_config or info.config.quantization_config
        kind = None
        if isinstance(quant, qm.ScalarQuantization):
            kind = "int8"
        elif isinstance(quant, qm.BinaryQuantization):
            kind = "binary"
        ids_info = record.get("point_ids") or {}
        m = coarse.hnsw_config.m if coarse.hnsw_config is not None and coarse.hnsw_config.m is not None else None
        if m is None:
            m = info.config.hnsw_config.m
        return cls(
            client,
            real,
            coarse_dim=coarse.size,
            full_dim=full.size,
            metric=metric,
            owns_client=owns_client,
            index="flat" if m == 0 else "hnsw",
            coarse_quantization=kind,
            oversampling=oversampling,
            hnsw_ef=hnsw_ef,
            full_quantized=bool(full.quantization_config or info.config.quantization_config),
            upload_batch_size=upload_batch_size,
            parallel=parallel,
            max_retries=max_retries,
            quiet=quiet,
            has_foreign_ids=bool(ids_info.get("foreign", 0)),
            full_vector=full_vector,
        )

    @classmethod
    def open(cls, directory: Path, section: dict[str, Any], **backend_options: Any) -> QdrantBackend:
        """Reopen what :meth:`save` described. Connection options given here override the saved ones.

        The API key is never saved: pass ``api_key=`` or set ``QDRANT_API_KEY``.
        """
        section = dict(section)
        if section.get("format") != SNAPSHOT_FORMAT or section.get("format_version") != SNAPSHOT_VERSION:
            raise FormatError(
                f"{directory}: Qdrant backend section of format {section.get('format')!r} "
                f"version {section.get('format_version')!r} is not supported by this version of matryoshka-index"
            )
        options = dict(backend_options)
        conn_keys = ("url", "path", "location", "client", "api_key", "https", "timeout", "prefer_grpc", "grpc_port")
        conn = {k: options.pop(k) for k in conn_keys if k in options}
        collection = options.pop("collection", None) or section["collection"]
        given = any(conn.get(k) is not None for k in ("url", "path", "location", "client"))
        if section.get("mode") == "memory" and not given:
            return cls._open_snapshot(Path(directory) / section.get("snapshot", SNAPSHOT_DIR), collection, options)
        if not given:
            if section.get("mode") == "path":
                conn["path"] = section["path"]
            elif section.get("mode") == "remote":
                conn["url"] = section["url"]
                for k in ("https", "timeout", "prefer_grpc", "grpc_port"):
                    if k in section and k not in conn:
                        conn[k] = section[k]
            else:
                raise InputError(
                    f"{directory}: the index's Qdrant collection lived in a client passed at build time; "
                    "pass client=, url= or path= to open it"
                )
        if conn.get("url") is not None and conn.get("api_key") is None:
            conn["api_key"] = os.environ.get("QDRANT_API_KEY") or None
        client, owns = connect(**conn, must_exist=True)
        try:
            backend = cls.from_collection(client, collection, owns_client=owns, **options)
        except BaseException:
            if owns:
                _close_quietly(client)
            raise
        for name, dim in (("coarse_dim", backend.coarse_dim), ("full_dim", backend.full_dim)):
            if section.get(name) is not None and int(section[name]) != dim:
                backend.close()
                raise FormatError(
                    f"collection {collection!r} at {backend.endpoint} has {name}={dim} but the index was saved with "
                    f"{section[name]}; it was changed or replaced since"
                )
        return backend

    @classmethod
    def _open_snapshot(cls, snap: Path, collection: str, options: dict[str, Any]) -> QdrantBackend:
        meta_path = snap / "collection.json"
        if not meta_path.is_file():
            raise FormatError(f"{snap}: Qdrant snapshot is missing collection.json; the index directory is incomplete")
        meta = json.loads(meta_path.read_text())
        if meta.get("format") != SNAPSHOT_FORMAT or meta.get("format_version") != SNAPSHOT_VERSION:
            raise FormatError(f"{meta_path}: not a Qdrant snapshot of a supported version")
        ids_path = snap / "ids.npy"
        ids: list[int | str] = (
            np.load(ids_path, allow_pickle=False).tolist()
            if ids_path.is_file()
            else json.loads((snap / "ids.json").read_text())
        )
        coarse = np.load(snap / "coarse.npy", mmap_mode="r", allow_pickle=False)
        full = np.load(snap / "full.npy", mmap_mode="r", allow_pickle=False)
        payloads = [json.loads(line) for line in (snap / "payloads.jsonl").read_text().splitlines() if line]
        if not (len(ids) == len(coarse) == len(full) == len(payloads)):
            raise FormatError(
                f"{snap}: snapshot files disagree on the number of points; the index directory is corrupt"
            )
        create_opts = {k: options.pop(k) for k in list(options) if k in ("upload_batch_size", "max_retries", "quiet")}
        backend = cls.create(
            index=meta.get("index", "hnsw"),
            coarse_dim=int(meta["coarse_dim"]),
            full_dim=int(meta["full_dim"]),
            metric=meta["metric"],
            collection=collection,
            coarse_quantization=meta.get("coarse_quantization"),
            on_disk=bool(meta.get("on_disk", False)),
            **create_opts,
        )
        if options:
            backend.close()
            raise InputError(f"Qdrant backend: unknown option(s) {', '.join(sorted(options))}")
        backend._upload(
            ids, np.asarray(coarse, np.float32), np.asarray(full, np.float32), payloads, desc="loading Qdrant snapshot"
        )
        records = meta.get("records") or {}
        files = meta.get("adaptor_files")
        if META_KEY in records:
            rec = dict(records[META_KEY])
            # the snapshot restores the full vector as `full`, whatever the collection called it
            rec["vectors"] = {**(rec.get("vectors") or {}), "full": FULL}
            if files:
                rec["adaptor"] = backend.metadata.write_blobs({k: base64.b64decode(v) for k, v in files.items()})
            backend.metadata.write(rec, META_KEY)
            backend._has_foreign_ids = bool((rec.get("point_ids") or {}).get("foreign"))
        if MIGRATION_KEY in records:
            backend.metadata.write(records[MIGRATION_KEY], MIGRATION_KEY)
        return backend

    # ---------------------------------------------------------------------------- lifecycle
    def close(self) -> None:
        """Close the client if this backend opened it."""
        self._finalizer()

    def __enter__(self) -> QdrantBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, fn: Callable[[], T], what: str, *, retries: int | None = None) -> T:
        return call(fn, self.endpoint, what, retries=self.max_retries if retries is None else retries)

    # ---------------------------------------------------------------------------- ids
    def _remember(self, point_id: int | str) -> int:
        handle = point_handle(point_id)
        if is_foreign_id(point_id):
            with self._foreign_lock:
                self._foreign[handle] = point_id
            self._has_foreign_ids = True
        return handle

    def _build_id_map(self) -> None:
        """One ids-only scroll of the collection, so every handle can be mapped back."""
        if self._full_map_built:
            return
        for records in self._scroll_ids():
            for r in records:
                self._remember(r.id)
        self._full_map_built = True

    def _scroll_ids(self) -> Iterable[list[Any]]:
        offset = None
        while True:
            records, offset = self._call(
                lambda o=offset: self.client.scroll(
                    self.collection, limit=4096, offset=o, with_payload=False, with_vectors=False
                ),
                "listing point ids",
            )
            yield records
            if offset is None:
                return

    def _to_point_ids(self, ids: np.ndarray, *, must_resolve: bool = False) -> list[int | str]:
        """Qdrant point ids for int64 ids/handles (handles of foreign ids via the map)."""
        out: list[int | str] = []
        missing = [int(i) for i in ids if int(i) not in self._foreign]
        if missing and self._has_foreign_ids and not self._full_map_built:
            self._build_id_map()
        for i in ids:
            out.append(self._foreign.get(int(i), int(i)))
        return out

    def point_ids(self, ids: np.ndarray | Sequence[int]) -> list[int | str | None]:
        """Original Qdrant ids for int64 ids returned by this backend (UUID strings stay strings); -1 -> None."""
        arr = np.asarray(ids, dtype=np.int64).ravel()
        valid = arr[arr != EMPTY_ID]
        resolved = dict(zip(valid.tolist(), self._to_point_ids(valid), strict=True))
        return [None if i == EMPTY_ID else resolved[int(i)] for i in arr.tolist()]

    # ---------------------------------------------------------------------------- protocol
    def __len__(self) -> int:
        return int(self._call(lambda: self.client.count(self.collection, exact=True), "counting points").count)

    def ids(self) -> np.ndarray:
        out: list[int] = []
        for records in self._scroll_ids():
            out.extend(self._remember(r.id) for r in records)
        self._full_map_built = True
        return np.asarray(out, dtype=np.int64)

    def contains(self, ids: np.ndarray) -> np.ndarray:
        ids = np.asarray(ids, dtype=np.int64).ravel()
        point_ids = self._to_point_ids(ids)
        present: set[int] = set()
        for start in range(0, len(point_ids), _ID_BATCH):
            chunk = point_ids[start : start + _ID_BATCH]
            got = self._call(
                lambda c=chunk: self.client.retrieve(self.collection, c, with_payload=False, with_vectors=False),
                "looking up ids",
            )
            present.update(self._remember(p.id) for p in got)
        return np.fromiter((int(i) in present for i in ids), dtype=bool, count=len(ids))

    def add(
        self,
        ids: np.ndarray,
        coarse: np.ndarray,
        full: np.ndarray,
        payloads: Sequence[dict[str, Any] | None] | None = None,
    ) -> None:
        ids = np.asarray(ids, dtype=np.int64).ravel()
        coarse = np.asarray(coarse, dtype=np.float32)
        full = np.asarray(full, dtype=np.float32)
        if coarse.shape != (len(ids), self.coarse_dim) or full.shape != (len(ids), self.full_dim):
            raise InputError(
                f"add: expected coarse ({len(ids)}, {self.coarse_dim}) and full ({len(ids)}, {self.full_dim}), "
                f"got {coarse.shape} and {full.shape}"
            )
        if payloads is not None and len(payloads) != len(ids):
            raise InputError(
                f"payloads: {len(payloads)} payloads for {len(ids)} vectors; give one per vector (or None)"
            )
        self._upload(self._to_point_ids(ids), coarse, full, payloads)

    def _upload(
        self,
        point_ids: Sequence[int | str],
        coarse: np.ndarray,
        full: np.ndarray,
        payloads: Sequence[dict[str, Any] | None] | None,
        desc: str = "uploading to Qdrant",
    ) -> None:
        n = len(point_ids)
        bs = self.upload_batch_size

        def batch(start: int) -> qm.Batch:
            sl = slice(start, min(start + bs, n))
            return qm.Batch(
                ids=list(point_ids[sl]),
                vectors={COARSE: coarse[sl].tolist(), self.full_vector: full[sl].tolist()},
                payloads=None if payloads is None else [p or {} for p in payloads[sl]],
            )

        def send(start: int) -> int:
            b = batch(start)
            self._call(lambda: self.client.upsert(self.collection, b, wait=True), "uploading points")
            return len(b.ids)

        starts = list(range(0, n, bs))
        with progress(total=n, desc=desc, unit="pt", quiet=self.quiet or len(starts) < 4) as bar:
            if self.parallel == 1:
                for s in starts:
                    bar.update(send(s))
            else:
                with ThreadPoolExecutor(self.parallel) as pool:
                    for done in pool.map(send, starts):
                        bar.update(done)

    def remove(self, ids: np.ndarray) -> int:
        ids = np.asarray(ids, dtype=np.int64).ravel()
        present = self.contains(ids)
        point_ids = self._to_point_ids(ids[present])
        for start in range(0, len(point_ids), _ID_BATCH):
            chunk = point_ids[start : start + _ID_BATCH]
            self._call(
                lambda c=chunk: self.client.delete(self.collection, qm.PointIdsList(points=c), wait=True),
                "deleting points",
            )
        return len(set(point_ids))

    # ---------------------------------------------------------------------------- search
    def _coarse_params(self, candidates: int) -> qm.SearchParams | None:
        if self._local:
            return None  # local mode is brute force; it warns about any search params
        quant = None
        if self.coarse_quantization:
            quant = qm.QuantizationSearchParams(rescore=self.rescore, oversampling=self.oversampling)
        if self.index == "flat":
            return qm.SearchParams(exact=True, quantization=quant)
        return qm.SearchParams(hnsw_ef=max(int(candidates), int(self.hnsw_ef or 0)), quantization=quant)

    @property
    def _full_using(self) -> str | None:
        """``using=`` of the full vector (None addresses the unnamed default vector)."""
        return self.full_vector or None

    def _full_params(self) -> qm.SearchParams | None:
        if self._local or not self.full_quantized:
            return None
        # rerank with the original full vectors, never with a quantized copy
        return qm.SearchParams(quantization=qm.QuantizationSearchParams(ignore=True))

    def _run_queries(self, requests: list[qm.QueryRequest], what: str) -> list[list[qm.ScoredPoint]]:
        out: list[list[qm.ScoredPoint]] = []
        for start in range(0, len(requests), _QUERY_BATCH):
            chunk = requests[start : start + _QUERY_BATCH]
            responses = self._call(
                lambda c=chunk: self.client.query_batch_points(self.collection, requests=c), what, retries=2
            )
            out.extend(r.points for r in responses)
        return out

    def _results(self, hits: list[list[qm.ScoredPoint]], k: int) -> tuple[np.ndarray, np.ndarray]:
        scores, ids = empty_results(len(hits), k)
        for row, points in enumerate(hits):
            for col, p in enumerate(points[:k]):
                scores[row, col] = p.score
                ids[row, col] = self._remember(p.id)
        return scores, ids

    def _two_stage_requests(
        self,
        coarse_queries: np.ndarray,
        full_queries: np.ndarray,
        k: int,
        candidates: int,
        query_filter: Any | None,
        with_payload: bool = False,
    ) -> list[qm.QueryRequest]:
        coarse_queries = np.asarray(coarse_queries, dtype=np.float32)
        full_queries = np.asarray(full_queries, dtype=np.float32)
        if len(coarse_queries) != len(full_queries):
            raise InputError(
                f"search: {len(coarse_queries)} coarse queries but {len(full_queries)} full queries; give one of each per query"
            )
        candidates = max(int(candidates), int(k))
        coarse_params, full_params = self._coarse_params(candidates), self._full_params()
        return [
            qm.QueryRequest(
                prefetch=qm.Prefetch(
                    query=cq.tolist(), using=COARSE, limit=candidates, filter=query_filter, params=coarse_params
                ),
                query=fq.tolist(),
                using=self._full_using,
                limit=int(k),
                filter=query_filter,
                params=full_params,
                with_payload=with_payload,
            )
            for cq, fq in zip(coarse_queries, full_queries, strict=True)
        ]

    def search(
        self,
        coarse_queries: np.ndarray,
        full_queries: np.ndarray,
        k: int,
        candidates: int,
        query_filter: Any | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Prefetch ``candidates`` on ``coarse``, rerank them on ``full``; ``(scores, ids)`` best first.

        ``query_filter`` is a :class:`qdrant_client.models.Filter` (or its dict form); it applies to
        both stages, so the candidates are drawn from matching points only.
        """
        requests = self._two_stage_requests(coarse_queries, full_queries, k, candidates, query_filter)
        return self._results(self._run_queries(requests, "a search"), int(k))

    def search_points(
        self,
        coarse_queries: np.ndarray,
        full_queries: np.ndarray,
        k: int,
        candidates: int,
        query_filter: Any | None = None,
        with_payload: bool = True,
    ) -> list[list[qm.ScoredPoint]]:
        """As :meth:`search`, but Qdrant's own hits: original ids (UUIDs included), scores and payloads."""
        requests = self._two_stage_requests(coarse_queries, full_queries, k, candidates, query_filter, with_payload)
        hits = self._run_queries(requests, "a search")
        for points in hits:
            for p in points:
                self._remember(p.id)
        return hits

    def coarse_search(self, coarse_queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        params = self._coarse_params(k)
        requests = [
            qm.QueryRequest(query=q.tolist(), using=COARSE, limit=int(k), params=params)
            for q in np.asarray(coarse_queries, dtype=np.float32)
        ]
        return self._results(self._run_queries(requests, "a coarse search"), int(k))

    def exact_search(self, full_queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Brute force over ``full`` (``SearchParams(exact=True)``): the ground truth."""
        params = (
            None if self._local else qm.SearchParams(exact=True, quantization=qm.QuantizationSearchParams(ignore=True))
        )
        requests = [
            qm.QueryRequest(query=q.tolist(), using=self._full_using, limit=int(k), params=params)
            for q in np.asarray(full_queries, dtype=np.float32)
        ]
        return self._results(self._run_queries(requests, "an exact search"), int(k))

    # ---------------------------------------------------------------------------- metadata
    def attach_index_metadata(self, manifest: dict[str, Any], adaptor_files: dict[str, bytes] | None) -> None:
        """Store the index manifest (and, when given, the adaptor files) with the collection.

        ``adaptor_files=None`` keeps the adaptor stored before. Order: adaptor chunks first, then
        the record that points to them (one metadata update, the commit point), then old chunks go.
        """
        try:
            json.dumps(manifest)
        except (TypeError, ValueError) as exc:
            raise InputError(f"manifest: must be JSON-serialisable ({exc})") from None
        current = self.metadata.read(META_KEY) or {}
        adaptor = current.get("adaptor")
        if adaptor_files is not None and (adaptor or {}).get("bundle") == bundle_id(adaptor_files):
            adaptor_files = None  # the same adaptor is stored already (the index re-sends it on every change)
        if adaptor_files is not None:
            adaptor = self.metadata.write_blobs(adaptor_files)
        record = _record(
            self.coarse_dim,
            self.full_dim,
            self.metric,
            manifest=manifest,
            adaptor=adaptor,
            point_ids=current.get("point_ids"),
            full_vector=self.full_vector,
        )
        self.metadata.write(record, META_KEY)
        if adaptor_files is not None:
            self.metadata.delete_other_blobs(adaptor["bundle"] if adaptor else None)

    def read_index_metadata(self) -> tuple[dict[str, Any] | None, dict[str, bytes] | None]:
        """``(manifest, adaptor_files)`` as stored by :meth:`attach_index_metadata` (None where absent)."""
        record = self.metadata.read(META_KEY)
        if record is None:
            return None, None
        _check_record(record, self.collection)
        files = self.metadata.read_blobs(record["adaptor"]) if record.get("adaptor") else None
        return record.get("manifest"), files

    # ---------------------------------------------------------------------------- persistence
    def save(self, directory: Path) -> dict[str, Any]:
        """Describe where the data lives (a server URL, a local path, or a snapshot written into ``directory``)."""
        section: dict[str, Any] = {
            "format": SNAPSHOT_FORMAT,
            "format_version": SNAPSHOT_VERSION,
            "kind": self.kind,
            "mode": self.mode,
            "collection": self.collection,
            "coarse_dim": self.coarse_dim,
            "full_dim": self.full_dim,
            "metric": self.metric,
            "index": self.index,
            "coarse_quantization": self.coarse_quantization,
        }
        if self.mode == "remote":
            section.update({k: v for k, v in self.connection.items() if k != "api_key"})
        elif self.mode == "path":
            section["path"] = self.connection["path"]
        else:
            section["snapshot"] = SNAPSHOT_DIR
            self._write_snapshot(Path(directory) / SNAPSHOT_DIR)
        return section

    def _write_snapshot(self, snap: Path) -> None:
        info = self._call(lambda: self.client.get_collection(self.collection), "reading the collection")
        extra = sorted(set(vector_params(info)) - {COARSE, self.full_vector}) + sorted(
            info.config.params.sparse_vectors or {}
        )
        if extra:
            raise InputError(
                f"collection {self.collection!r} lives in an in-memory Qdrant client and has other vectors "
                f"({', '.join(extra)}); it cannot be saved as files: use a Qdrant server or path="
            )
        n = len(self)
        ids: list[int | str] = []
        coarse = np.empty((n, self.coarse_dim), dtype=np.float32)
        full = np.empty((n, self.full_dim), dtype=np.float32)
        lines: list[str] = []
        offset = None
        row = 0
        while True:
            records, offset = self._call(
                lambda o=offset: self.client.scroll(
                    self.collection, limit=1024, offset=o, with_payload=True, with_vectors=[COARSE, self.full_vector]
                ),
                "reading points",
            )
            for r in records:
                if row >= n:
                    raise BackendError(f"collection {self.collection!r} changed while it was being saved")
                ids.append(r.id)
                coarse[row] = r.vector[COARSE]
                full[row] = r.vector[self.full_vector]
                lines.append(json.dumps(r.payload or None, sort_keys=True))
                row += 1
            if offset is None:
                break
        snap.mkdir(parents=True, exist_ok=True)
        if all(not is_foreign_id(i) for i in ids):
            save_npy(snap / "ids.npy", np.asarray(ids, dtype=np.int64))
        else:
            atomic_write_json(snap / "ids.json", ids)
        save_npy(snap / "coarse.npy", coarse[:row])
        save_npy(snap / "full.npy", full[:row])
        (snap / "payloads.jsonl").write_text("".join(line + "\n" for line in lines))
        exported = self.metadata.export()
        full_params = vector_params(info)[self.full_vector]
        atomic_write_json(
            snap / "collection.json",
            {
                "format": SNAPSHOT_FORMAT,
                "format_version": SNAPSHOT_VERSION,
                "points": row,
                "coarse_dim": self.coarse_dim,
                "full_dim": self.full_dim,
                "metric": self.metric,
                "index": self.index,
                "coarse_quantization": self.coarse_quantization,
                "on_disk": bool(full_params.on_disk),
                **exported,
            },
        )

    def info(self) -> dict[str, Any]:
        info = self._call(lambda: self.client.get_collection(self.collection), "reading the collection")
        params = info.config.params
        full_params = vector_params(info).get(self.full_vector)
        coarse_bytes = self.coarse_dim * 4
        quant_bytes = {"int8": self.coarse_dim, "binary": (self.coarse_dim + 7) // 8}.get(
            self.coarse_quantization or "", 0
        )
        return {
            "backend": self.kind,
            "mode": self.mode,
            "endpoint": self.endpoint,
            "collection": self.collection,
            "points": len(self),
            "coarse_dim": self.coarse_dim,
            "full_dim": self.full_dim,
            "metric": self.metric,
            "index": self.index,
            "coarse_quantization": self.coarse_quantization,
            "full_vector": self.full_vector,
            "full_on_disk": bool(full_params and full_params.on_disk),
            "shard_number": params.shard_number,
            "replication_factor": params.replication_factor,
            "status": str(info.status.value if hasattr(info.status, "value") else info.status),
            # vectors only (HNSW links and payloads come on top); full is RAM unless on_disk
            "bytes_per_vector": coarse_bytes + quant_bytes + self.full_dim * 4,
            "device": "qdrant server" if self.mode == "remote" else "cpu (qdrant-client local mode)",
        }


def _close_quietly(client: QdrantClient | None) -> None:
    if client is not None:
        with contextlib.suppress(Exception):
            client.close()


def _record(
    coarse_dim: int,
    full_dim: int,
    metric: str,
    *,
    manifest: dict[str, Any] | None,
    adaptor: dict[str, Any] | None,
    point_ids: dict[str, Any] | None = None,
    full_vector: str = FULL,
) -> dict[str, Any]:
    return {
        "format": RECORD_FORMAT,
        "format_version": RECORD_VERSION,
        "vectors": {"coarse": COARSE, "full": full_vector, "coarse_dim": int(coarse_dim), "full_dim": int(full_dim)},
        "metric": metric,
        "manifest": manifest,
        "adaptor": adaptor,
        "point_ids": point_ids,
        "library_version": __version__,
        "updated": _now(),
    }


def _check_record(record: dict[str, Any], collection: str) -> None:
    if record.get("format") != RECORD_FORMAT:
        raise FormatError(
            f"collection {collection!r}: metadata {META_KEY!r} has format {record.get('format')!r}, not {RECORD_FORMAT!r}"
        )
    if record.get("format_version") != RECORD_VERSION:
        raise FormatError(
            f"collection {collection!r}: index metadata format version {record.get('format_version')!r} is not "
            f"supported by this version of matryoshka-index (supported: {RECORD_VERSION}); upgrade matryoshka-index"
        )


# ------------------------------------------------------------------------------------ from_qdrant


def open_index_from_qdrant(
    index_cls: Any,
    collection: str,
    url: str | None = None,
    path: str | os.PathLike[str] | None = None,
    client: QdrantClient | None = None,
    *,
    api_key: str | None = None,
    https: bool | None = None,
    timeout: int | None = None,
    prefer_grpc: bool = False,
    device: str = "auto",
    allow_unverified: bool = False,
    **backend_options: Any,
) -> Any:
    """Open the index stored in a Qdrant collection (or alias): ``index_cls._from_parts(adaptor, backend, manifest)``.

    Reads the index record from the collection metadata (or the companion collection), loads the
    adaptor from the companion collection, and refuses a collection whose ``coarse``/``full``
    vectors do not match the adaptor and the record, or a migration that has not been verified
    (``allow_unverified=True`` opens it anyway, e.g. to inspect it). With neither ``url``, ``path``
    nor ``client``, ``QDRANT_URL`` is used if set.
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
        store = MetadataStore(qclient, real, endpoint)
        record = store.read(META_KEY)
        if record is None:
            raise InputError(
                f"collection {real!r} at {endpoint} has no matryoshka-index metadata; build one with "
                "mindex build --backend qdrant, or migrate this collection with mindex migrate"
            )
        _check_record(record, real)
        migration = store.read(MIGRATION_KEY)
        if migration and migration.get("state") not in ("verified", "complete") and not allow_unverified:
            if migration.get("mode") == "in_place":
                raise InputError(
                    f"collection {real!r} at {endpoint} is an unfinished in-place migration (state "
                    f"{migration.get('state')!r}, {migration.get('coarse_added', 0)} of {migration.get('source_count', '?')} "
                    "points given a coarse vector); finish it with mindex migrate --in-place --resume, or undo it "
                    "with mindex migrate --rollback"
                )
            raise InputError(
                f"collection {real!r} at {endpoint} is an unfinished migration (state {migration.get('state')!r}, "
                f"{migration.get('copied', 0)} of {migration.get('source_count', '?')} points copied); "
                "finish it with mindex migrate --resume"
            )
        manifest = record.get("manifest") or {}
        kind = (manifest.get("adaptor") or {}).get("kind", "matryoshka-adaptor")
        adaptor = _adaptor_from_files(
            kind, store.read_blobs(record["adaptor"]) if record.get("adaptor") else None, device
        )
        if adaptor is None and kind != "none":
            raise FormatError(f"collection {real!r} at {endpoint}: the index metadata names no adaptor files")
        backend = QdrantBackend.from_collection(qclient, real, owns_client=owns, **backend_options)
        vec = record.get("vectors") or {}
        input_dim = adaptor.input_dim_ if adaptor is not None else int(manifest.get("input_dim", backend.full_dim))
        problems = []
        if int(vec.get("coarse_dim", backend.coarse_dim)) != backend.coarse_dim:
            problems.append(
                f"'coarse' has {backend.coarse_dim} dims but the index metadata says {vec.get('coarse_dim')}"
            )
        full_name = repr(backend.full_vector) if backend.full_vector else "the unnamed vector"
        if int(vec.get("full_dim", backend.full_dim)) != backend.full_dim:
            problems.append(
                f"{full_name} has {backend.full_dim} dims but the index metadata says {vec.get('full_dim')}"
            )
        if input_dim != backend.full_dim:
            problems.append(f"{full_name} has {backend.full_dim} dims but the adaptor takes {input_dim}-dim embeddings")
        if int(manifest.get("input_dim", input_dim)) != input_dim:
            problems.append(
                f"the index metadata says input_dim {manifest.get('input_dim')}, the adaptor takes {input_dim}"
            )
        if backend.coarse_dim > input_dim:
            problems.append(f"'coarse' has {backend.coarse_dim} dims, more than the adaptor's {input_dim}")
        if record.get("metric") and record["metric"] != backend.metric:
            problems.append(f"the vectors use {backend.metric} but the index metadata says {record['metric']}")
        if problems:
            raise InputError(f"collection {real!r} at {endpoint} does not match its adaptor: {'; '.join(problems)}")
        backend._has_foreign_ids = bool((record.get("point_ids") or {}).get("foreign"))
        return index_cls._from_parts(adaptor, backend, manifest)
    except BaseException:
        if owns:
            _close_quietly(qclient)
        raise


def _adaptor_from_files(kind: str, files: dict[str, bytes] | None, device: str) -> Any:
    """The adaptor object of the manifest's kind (imported lazily: the backend itself never imports torch)."""
    if kind == "none":
        return None
    if files is None:
        return None
    if kind == "pca":
        from ..adaptor.pca import PCARotation

        return PCARotation.from_files(files)
    if kind == "matryoshka-adaptor":
        from ..adaptor import MatryoshkaAdaptor

        return MatryoshkaAdaptor.from_files(files, device=device)
    raise FormatError(f"index metadata: unknown adaptor kind {kind!r}; upgrade matryoshka-index")
