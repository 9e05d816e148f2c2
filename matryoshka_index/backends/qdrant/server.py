"""Qdrant backend: named vectors ``coarse`` + ``full``, both stages inside Qdrant, metadata kept with the collection.

Layout of a collection this backend owns::

    coarse   adapted prefix, coarse_dim, HNSW (optionally quantized: ``code=``, searched without
             Qdrant's rescoring, since the rerank on ``full`` is the rescoring)
    full     full vector (the original embedding by default), HNSW off (m=0): only used to rerank
    payload  kept as given

A prefix-only collection (``MatryoshkaIndex.build(..., rerank=None)``, ``mindex migrate --prefix-only``)
has ``coarse`` alone: its index record names no full vector (``vectors.full`` null, ``full_dim`` 0) and
a search is one query on ``coarse`` (``limit=k``, ``hnsw_ef`` at least ``candidates``), its scores those
of the prefix.

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

Modules
-------
This module holds the backend; what it stands on lives beside it in this package: ``connection``
(clients), ``errors`` (one-line errors, retries), ``metadata`` (point handles, collection lookups, the
metadata store), ``snapshots`` (the in-memory snapshot), ``collection`` (the layout) and ``common``
(what the qdrant-edge backend shares). Import each name from the module that defines it.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import json
import os
import threading
import uuid
import weakref
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import numpy as np
from qdrant_client import QdrantClient
from qdrant_client import models as qm

from ...errors import FormatError, InputError
from ...progress import progress
from ...validation import check_positive_int
from ..base import EMPTY_ID, Payloads, Results, empty_results
from .collection import (
    check_index,
    check_metric,
    check_server_has,
    code_config,
    collection_layout,
    read_layout,
)
from .common import (
    COARSE,
    FULL,
    LEGACY_CODES,
    Closing,
    add_inputs,
    coarse_memory,
    membership,
    quantization_family,
    query_pairs,
    renamed_option,
    resolve_code,
)
from .connection import CONNECTION_OPTIONS, client_mode, close_quietly, connect, describe_client
from .errors import call
from .metadata import (
    COMPANION_SUFFIX,
    META_KEY,
    MIGRATION_KEY,
    MetadataStore,
    bundle_id,
    check_index_record,
    index_record,
    is_foreign_id,
    point_handle,
    vector_params,
)
from .snapshots import SNAPSHOT_DIR, SNAPSHOT_FORMAT, SNAPSHOT_VERSION, Snapshot, read_snapshot, write_snapshot

T = TypeVar("T")

DEFAULT_COLLECTION = "matryoshka_index"
_QUERY_BATCH = 64
_ID_BATCH = 1024


def _canonical_id(point_id: int | str) -> int | str:
    if isinstance(point_id, str):
        with contextlib.suppress(ValueError):
            return str(uuid.UUID(point_id))
    return point_id


def _positive(*, optional: bool = False, **values: Any) -> None:
    """Each value a positive integer (or None, when ``optional``); one line naming the first that is not."""
    for name, value in values.items():
        if optional and value is None:
            continue
        check_positive_int(value, name)


class QdrantBackend(Closing):
    """Coarse + full named vectors in a Qdrant collection; both search stages run inside Qdrant.

    Create one with :meth:`create` (a new collection), :meth:`open` (from a saved index manifest) or
    :meth:`from_collection` (an existing collection with ``coarse`` and ``full`` vectors, e.g. a migrated one).
    """

    kind: ClassVar[str] = "qdrant"
    supports_prefix_only: ClassVar[bool] = True  # full_dim=0: a collection with `coarse` alone

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
        rescore: bool | None = None,
        oversampling: float | None = None,
        ef_search: int | None = None,
        full_quantized: bool = False,
        code: str = "float",
        hnsw_m: int | None = None,
        coarse_on_disk: bool = False,
        upload_batch_size: int = 256,
        parallel: int = 1,
        max_retries: int = 5,
        quiet: bool = False,
        has_foreign_ids: bool = False,
        connection: dict[str, Any] | None = None,
        full_vector: str | None = FULL,
    ) -> None:
        self.client = client
        self.collection = collection
        self.full_vector = full_vector if full_dim else None
        """Name of the full (rerank) vector: ``"full"``, or an in-place-migrated collection's own vector
        (None: prefix only, no full vector)."""
        self.coarse_dim = int(coarse_dim)
        self.full_dim = int(full_dim)
        self.metric = check_metric(metric)
        self.index = check_index(index)
        self.code = resolve_code(code, None, "Qdrant")
        """The coarse code (one of ``CODES``); ``coarse_quantization`` is its family (int8 / binary / turbo)."""
        self.coarse_quantization = quantization_family(self.code)
        # None: Qdrant's rescoring off, since our rerank on the full vector is the rescoring
        self.rescore = bool(rescore)
        self.oversampling = oversampling
        self.hnsw_m = hnsw_m
        self.coarse_on_disk = bool(coarse_on_disk)
        self.ef_search = ef_search
        self.full_quantized = full_quantized
        self.upload_batch_size = max(1, int(upload_batch_size))
        self.max_retries = max(0, int(max_retries))
        self.quiet = quiet
        self.endpoint = describe_client(client)
        self.mode, facts = client_mode(client)
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
        self._finalizer = weakref.finalize(self, close_quietly, client if owns_client else None)

    # ---------------------------------------------------------------------------- construction
    @classmethod
    def create(
        cls,
        *,
        coarse_dim: int,
        full_dim: int,
        metric: str = "cosine",
        index: str = "hnsw",
        collection: str | None = None,
        shard_number: int | None = None,
        replication_factor: int | None = None,
        write_consistency_factor: int | None = None,
        on_disk: bool = False,
        on_disk_payload: bool | None = None,
        coarse_quantization: str | None = None,
        code: str | None = None,
        coarse_on_disk: bool | None = None,
        quantization_always_ram: bool = True,
        rescore: bool | None = None,
        oversampling: float | None = None,
        hnsw_m: int | None = None,
        ef_construction: int | None = None,
        ef_search: int | None = None,
        upload_batch_size: int = 256,
        parallel: int = 1,
        max_retries: int = 5,
        quiet: bool = False,
        hnsw_ef_construct: int | None = None,
        hnsw_ef: int | None = None,
        **connection: Any,
    ) -> QdrantBackend:
        """Create a new collection with the ``coarse`` + ``full`` layout (it must not exist yet).

        ``index``: ``"hnsw"`` (an HNSW graph on ``coarse``) or ``"flat"`` (exact coarse stage,
        ``SearchParams(exact=True)``, no graph: the same results as FAISS ``flat``).
        Connection (keywords, see :data:`CONNECTION_OPTIONS`): ``url`` (+ ``api_key``, ``https``,
        ``timeout``, ``prefer_grpc``, ``grpc_port``), ``path`` (local mode on disk), ``location=":memory:"``
        or ``client``; none of them: embedded in memory, saved as a snapshot inside the index directory. Cluster options: ``shard_number``,
        ``replication_factor``, ``write_consistency_factor``. ``on_disk`` keeps ``full`` on disk
        (memory-mapped; it is only read to rerank). ``code``: how ``coarse`` is stored, one of
        ``"float"`` (default), ``"sq8"`` (int8 scalar), ``"binary"``, ``"binary1.5"``, ``"binary2"``
        (binary quantization, 1 / 1.5 / 2 bits a dimension), ``"turbo4"``, ``"turbo2"``, ``"turbo1"``
        (TurboQuant, servers >= 1.18); the codes are kept in RAM and searched with Qdrant's rescoring
        off (``rescore=True`` turns it on: our rerank on ``full`` already is the rescoring), and the
        float coarse vectors go on disk unless ``coarse_on_disk=False``. ``coarse_quantization``
        (None, ``"int8"``, ``"binary"``) is the older name of ``code`` (``"sq8"``, ``"binary"``),
        deprecated until 0.2.
        A server quantizes a segment when its optimizer indexes it: points in segments below the
        collection's ``indexing_threshold`` are searched as floats until then. qdrant-client local
        mode keeps the config but always searches the floats (see :meth:`info`). ``hnsw_m``,
        ``ef_construction``: HNSW graph of ``coarse``; ``ef_search``: search breadth (at least
        ``candidates`` is always used), the FAISS backend's names; ``hnsw_ef_construct`` and
        ``hnsw_ef``, their former names, still work until 0.2, with a warning. ``upload_batch_size`` points per request, ``parallel``
        concurrent requests (server mode), ``max_retries`` on transient errors.
        """
        unknown = sorted(set(connection) - set(CONNECTION_OPTIONS))
        if unknown:
            raise InputError(f"Qdrant backend: unknown option(s) {', '.join(unknown)}")
        ef_construction = renamed_option("ef_construction", ef_construction, hnsw_ef_construct)
        ef_search = renamed_option("ef_search", ef_search, hnsw_ef)
        metric = check_metric(metric)
        _positive(coarse_dim=coarse_dim)
        if full_dim != 0:  # 0: prefix only, a collection with `coarse` alone
            _positive(full_dim=full_dim)
        if full_dim and coarse_dim > full_dim:
            raise InputError(f"coarse_dim: {coarse_dim} exceeds full_dim {full_dim}")
        index = check_index(index)
        code = resolve_code(code, coarse_quantization, "Qdrant")
        quant = code_config(code, quantization_always_ram)
        coarse_on_disk = code != "float" if coarse_on_disk is None else bool(coarse_on_disk)
        _positive(shard_number=shard_number, replication_factor=replication_factor, optional=True)
        if all(connection.get(k) is None for k in ("url", "path", "location", "client")):
            connection["location"] = ":memory:"
        qclient, owns = connect(**connection)
        endpoint = describe_client(qclient)
        name = collection or DEFAULT_COLLECTION
        if name.endswith(COMPANION_SUFFIX):
            raise InputError(f"collection: names ending in {COMPANION_SUFFIX!r} are reserved for index metadata")
        try:
            check_server_has(code, qclient, endpoint, client_mode(qclient)[0], max_retries)
            if call(lambda: qclient.collection_exists(name), endpoint, "checking the collection", retries=max_retries):
                raise InputError(
                    f"collection: {name!r} already exists at {endpoint}; choose another name (collection=...) "
                    "or open it with MatryoshkaIndex.from_qdrant"
                )
            vectors = collection_layout(
                int(coarse_dim), int(full_dim), metric, index, quant, hnsw_m, ef_construction, on_disk, coarse_on_disk
            )
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
                close_quietly(qclient)
            raise
        saved = {k: connection[k] for k in ("timeout", "prefer_grpc") if connection.get(k)}
        return cls(
            qclient,
            name,
            coarse_dim=int(coarse_dim),
            full_dim=int(full_dim),
            metric=metric,
            owns_client=owns,
            index=index,
            code=code,
            rescore=rescore,
            oversampling=oversampling,
            ef_search=ef_search,
            hnsw_m=hnsw_m,
            coarse_on_disk=coarse_on_disk,
            upload_batch_size=upload_batch_size,
            parallel=parallel,
            max_retries=max_retries,
            quiet=quiet,
            connection=saved,
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
        ef_search: int | None = None,
        oversampling: float | None = None,
        quiet: bool = False,
        full_vector: str | None = None,
        rescore: bool | None = None,
        hnsw_ef: int | None = None,
        **unknown: Any,
    ) -> QdrantBackend:
        """Attach to an existing collection (an alias is resolved) that has ``coarse`` and a full vector.

        ``full_vector``: the name of the full (rerank) vector; default: the one the index record
        names (``"full"``, or the original vector of a collection migrated in place; none for a
        prefix-only collection, whose record names none). The coarse code is read from the
        collection's config; ``rescore``: Qdrant's rescoring of it (default off). ``ef_search``:
        the coarse search breadth (``hnsw_ef``, its former name, still works until 0.2).
        """
        if unknown:
            raise InputError(f"Qdrant backend: unknown option(s) {', '.join(sorted(unknown))}")
        ef_search = renamed_option("ef_search", ef_search, hnsw_ef)
        real, layout = read_layout(client, collection, describe_client(client), full_vector, max_retries)
        return cls(
            client,
            real,
            **dataclasses.asdict(layout),
            owns_client=owns_client,
            rescore=rescore,
            oversampling=oversampling,
            ef_search=ef_search,
            upload_batch_size=upload_batch_size,
            parallel=parallel,
            max_retries=max_retries,
            quiet=quiet,
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
        if "rescore" not in options:
            # an index saved before codes searched its int8 / binary coarse with rescoring: keep it so
            saved_rescore = section.get("coarse_rescore", bool(section.get("coarse_quantization")))
            options["rescore"] = bool(saved_rescore)
        conn = {k: options.pop(k) for k in CONNECTION_OPTIONS if k in options}
        collection = options.pop("collection", None) or section["collection"]
        given = any(conn.get(k) is not None for k in ("url", "path", "location", "client"))
        if section.get("mode") == "memory" and not given:
            snapshot = read_snapshot(Path(directory) / section.get("snapshot", SNAPSHOT_DIR))
            return cls._from_snapshot(snapshot, collection, options)
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
                close_quietly(client)
            raise
        for name, dim in (("coarse_dim", backend.coarse_dim), ("full_dim", backend.full_dim)):
            if section.get(name) is not None and int(section[name]) != dim:
                backend.close()
                raise FormatError(
                    f"collection {collection!r} at {backend.endpoint} has {name}={dim} but the index was saved with "
                    f"{section[name]}; it was changed or replaced since"
                )
        return backend

    @property
    def prefix_only(self) -> bool:
        """No full vector (``full_dim`` 0): search is the coarse stage alone."""
        return self.full_dim == 0

    @classmethod
    def _from_snapshot(cls, snapshot: Snapshot, collection: str, options: dict[str, Any]) -> QdrantBackend:
        """A new in-memory collection loaded with a snapshot's points and metadata records."""
        meta = snapshot.meta
        create_opts = {
            k: options.pop(k) for k in list(options) if k in ("upload_batch_size", "max_retries", "quiet", "rescore")
        }
        # absent in snapshots written before codes: coarse_quantization says it
        backend = cls.create(
            index=meta.get("index", "hnsw"),
            coarse_dim=int(meta["coarse_dim"]),
            full_dim=int(meta["full_dim"]),
            metric=meta["metric"],
            collection=collection,
            code=meta.get("code") or LEGACY_CODES[meta.get("coarse_quantization")],
            coarse_on_disk=meta.get("coarse_on_disk"),
            on_disk=bool(meta.get("on_disk", False)),
            **create_opts,
        )
        if options:
            backend.close()
            raise InputError(f"Qdrant backend: unknown option(s) {', '.join(sorted(options))}")
        coarse, full = np.asarray(snapshot.coarse, np.float32), np.asarray(snapshot.full, np.float32)
        backend._upload(snapshot.ids, coarse, full, snapshot.payloads, desc="loading Qdrant snapshot")
        records = meta.get("records") or {}
        files = meta.get("adaptor_files")
        if META_KEY in records:
            rec = dict(records[META_KEY])
            # the snapshot restores the full vector as `full`, whatever the collection called it
            rec["vectors"] = {**(rec.get("vectors") or {}), "full": FULL if backend.full_vector is not None else None}
            if files:
                rec["adaptor"] = backend.metadata.write_blobs({k: base64.b64decode(v) for k, v in files.items()})
            backend.metadata.write(rec, META_KEY)
            backend._has_foreign_ids = bool((rec.get("point_ids") or {}).get("foreign"))
        if MIGRATION_KEY in records:
            backend.metadata.write(records[MIGRATION_KEY], MIGRATION_KEY)
        return backend

    # ---------------------------------------------------------------------------- lifecycle
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

    def external_ids(self, handles: np.ndarray | Sequence[int]) -> list[int | str | None]:
        """The point id of each handle exactly as Qdrant stores it (an int, or a UUID string); -1 -> None."""
        return self.point_ids(handles)

    def payloads(self, handles: np.ndarray | Sequence[int]) -> list[dict[str, Any] | None]:
        """The stored payload of each handle (None where it is -1, absent, or has no payload)."""
        point_ids = self.point_ids(handles)
        wanted = list(dict.fromkeys(p for p in point_ids if p is not None))
        got: dict[int | str, dict[str, Any] | None] = {}
        for start in range(0, len(wanted), _ID_BATCH):
            chunk = wanted[start : start + _ID_BATCH]
            for p in self._call(
                lambda c=chunk: self.client.retrieve(self.collection, c, with_payload=True, with_vectors=False),
                "reading payloads",
            ):
                got[p.id] = p.payload or None
        # UUIDs come back in Qdrant's canonical (lower-case, hyphenated) form: look up by that
        canonical = {pid: _canonical_id(pid) for pid in wanted}
        return [None if pid is None else got.get(canonical[pid]) for pid in point_ids]

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
        return membership(ids, present)

    def add(self, ids: np.ndarray, coarse: np.ndarray, full: np.ndarray, payloads: Payloads = None) -> None:
        ids, coarse, full = add_inputs(ids, coarse, full, payloads, self.coarse_dim, self.full_dim)
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
            vectors = {COARSE: coarse[sl].tolist()}
            if self.full_vector is not None:
                vectors[self.full_vector] = full[sl].tolist()
            return qm.Batch(
                ids=list(point_ids[sl]),
                vectors=vectors,
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
    def coarse_search_params(self, candidates: int) -> qm.SearchParams:
        """The ``params`` of the coarse stage (the prefetch), as a server gets them.

        With a code and rescoring off, ``flat`` is not ``exact``: Qdrant's exact search reads the float
        vectors and ignores the codes; without a graph (``m=0``) a plain search scans the codes.
        """
        quant = None
        if self.code != "float":
            quant = qm.QuantizationSearchParams(rescore=self.rescore, oversampling=self.oversampling)
        if self.index == "flat":
            return qm.SearchParams(exact=True if quant is None or self.rescore else None, quantization=quant)
        return qm.SearchParams(hnsw_ef=max(int(candidates), int(self.ef_search or 0)), quantization=quant)

    def _coarse_params(self, candidates: int) -> qm.SearchParams | None:
        if self._local:
            return None  # local mode is brute force; it warns about any search params
        return self.coarse_search_params(candidates)

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
        coarse_queries, full_queries = query_pairs(coarse_queries, full_queries)
        candidates = max(int(candidates), int(k))
        coarse_params, full_params = self._coarse_params(candidates), self._full_params()
        if self.prefix_only:  # no rerank: the coarse query itself, searched as broadly as the candidates
            return [
                qm.QueryRequest(
                    query=cq.tolist(),
                    using=COARSE,
                    limit=int(k),
                    filter=query_filter,
                    params=coarse_params,
                    with_payload=with_payload,
                )
                for cq in coarse_queries
            ]
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
        self, coarse_queries: np.ndarray, full_queries: np.ndarray, k: int, candidates: int, query_filter: Any = None
    ) -> Results:
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
        if self.prefix_only:
            raise InputError(
                f"exact_search: collection {self.collection!r} keeps no full vectors (prefix only); exact "
                "full-dimension search needs the original vectors"
            )
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
        record = index_record(
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
        check_index_record(record, self.collection)
        files = self.metadata.read_blobs(record["adaptor"]) if record.get("adaptor") else None
        return record.get("manifest"), files

    # ---------------------------------------------------------------------------- persistence
    def layout(self) -> dict[str, Any]:
        """The collection's shape and codes, as the saved section, the snapshot and :meth:`info` record them."""
        return {
            "coarse_dim": self.coarse_dim,
            "full_dim": self.full_dim,
            "metric": self.metric,
            "index": self.index,
            "coarse_quantization": self.coarse_quantization,
            "code": self.code,
        }

    def save(self, directory: Path) -> dict[str, Any]:
        """Describe where the data lives (a server URL, a local path, or a snapshot written into ``directory``)."""
        section: dict[str, Any] = {
            "format": SNAPSHOT_FORMAT,
            "format_version": SNAPSHOT_VERSION,
            "kind": self.kind,
            "mode": self.mode,
            "collection": self.collection,
            **self.layout(),
            "coarse_rescore": self.rescore,
            "coarse_on_disk": self.coarse_on_disk,
        }
        if self.mode == "remote":
            section.update({k: v for k, v in self.connection.items() if k != "api_key"})
        elif self.mode == "path":
            section["path"] = self.connection["path"]
        else:
            section["snapshot"] = SNAPSHOT_DIR
            write_snapshot(self, Path(directory) / SNAPSHOT_DIR)
        return section

    def info(self) -> dict[str, Any]:
        info = self._call(lambda: self.client.get_collection(self.collection), "reading the collection")
        params = info.config.params
        full_params = vector_params(info).get(self.full_vector) if self.full_vector is not None else None
        coarse_bytes = self.coarse_dim * 4
        applied = not self._local  # local mode is a brute-force emulation: it keeps the config, searches floats
        memory = coarse_memory(
            self.code, self.coarse_dim, self.index, self.hnsw_m, self.coarse_on_disk, applied=applied
        )
        return {
            "backend": self.kind,
            "mode": self.mode,
            "endpoint": self.endpoint,
            "collection": self.collection,
            "points": len(self),
            **self.layout(),
            "coarse_code": self.code,
            "coarse_code_applied": applied or self.code == "float",
            "coarse_rescore": self.rescore,
            "coarse_on_disk": self.coarse_on_disk,
            **memory,
            "full_vector": self.full_vector,
            "full_on_disk": bool(full_params and full_params.on_disk),
            "shard_number": params.shard_number,
            "replication_factor": params.replication_factor,
            "status": str(info.status.value if hasattr(info.status, "value") else info.status),
            # vectors only (HNSW links and payloads come on top); full is RAM unless on_disk
            "bytes_per_vector": coarse_bytes + memory["coarse_code_bytes_per_vector"] + self.full_dim * 4,
            "device": "qdrant server" if self.mode == "remote" else "cpu (qdrant-client local mode)",
        }


__all__ = ["DEFAULT_COLLECTION", "QdrantBackend"]
