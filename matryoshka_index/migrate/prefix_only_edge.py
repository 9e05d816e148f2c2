"""A prefix-only migration into a qdrant-edge shard (``mindex migrate --prefix-only --dim M --edge-path DIR``).

The target is a directory that ``qdrant_edge.EdgeShard.load(DIR)`` opens: the source's points with
their ids (ints or UUIDs), payloads, other named and sparse vectors and payload indexes, plus
``coarse`` (the ``M``-dim adapted prefix, the source vector's distance); no full vector. What the
migration keeps beside the shard goes into ``DIR/mindex/`` (the shard's engine ignores it): the
migration record and checkpoint (``matryoshka_index_migration.json``), the index record
(``matryoshka_index.json``) and the adaptor's files (``adaptor/``, load them with
``MatryoshkaAdaptor.load(DIR/mindex/adaptor)`` to adapt queries), each written atomically.

Everything else is :class:`~.prefix_only.PrefixOnlyMode`'s: the plan's quality measured before
anything is written, batches with checkpoints and ``--resume``, the verification (counts; payloads,
other vectors and ``coarse`` against the recomputed prefix; no vector beside ``coarse`` and the
carried ones; the plan's metric measured again on the shard's own search, after the engine built its
indexes). Before a checkpoint is written the shard is flushed, so the checkpoint never runs ahead of
the points on disk. One process at a time: the directory is locked (``flock``) while the migration
runs. The source is only read: a collection through its client, or a qdrant-edge shard through
:class:`EdgeSourceClient` (``--edge-source``), which opens a copy of it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import threading
from pathlib import Path
from typing import IO, Any, ClassVar

import numpy as np
import qdrant_edge as qe
from qdrant_client import models as qm

from ..backends.base import COARSE
from ..backends.qdrant.edge import LOCK_FILE
from ..backends.qdrant.metadata import MIGRATION_KEY, bundle_id, is_foreign_id, point_handle
from ..errors import BackendError, FormatError, InputError, MatryoshkaError
from ..storage import atomic_write_bytes, atomic_write_json, owned_temp_dir, remove_temp_dir
from .checkpoint import Checkpoint, State, is_migration_record
from .context import Run
from .modes import convert_copy
from .prefix_only import PrefixOnlyMode
from .reports import MigrationReport
from .source import Source
from .writer import WriteJob

RECORDS_DIR = "mindex"
"""Beside the shard's own files: the migration's records and the adaptor."""
CONFIG_FILE = "edge_config.json"
_ADAPTOR_DIR = "adaptor"
_PAGE = 4096
_DISTANCES = {
    qm.Distance.COSINE: qe.Distance.Cosine,
    qm.Distance.DOT: qe.Distance.Dot,
    qm.Distance.EUCLID: qe.Distance.Euclid,
    qm.Distance.MANHATTAN: qe.Distance.Manhattan,
}
_DATATYPES = {qm.Datatype.FLOAT16: "Float16", qm.Datatype.UINT8: "Uint8", qm.Datatype.FLOAT32: "Float32"}


def _engine(fn: Any, what: str) -> Any:
    """One qdrant-edge call; its errors (plain ``Exception`` with the engine's text) become one line."""
    try:
        return fn()
    except MatryoshkaError:
        raise
    except Exception as exc:
        text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise BackendError(f"qdrant-edge refused {what}: {text}") from None


# ------------------------------------------------------------------------------------ the shard
def edge_config(src: Source, coarse_dim: int) -> Any:
    """The target shard's config: the source's other dense and sparse vectors as they are, plus ``coarse``."""
    vectors = {COARSE: qe.EdgeVectorParams(size=coarse_dim, distance=_DISTANCES[src.params.distance])}
    for name, p in src.others.items():
        multi = None
        if p.multivector_config is not None:
            multi = qe.MultiVectorConfig(qe.MultiVectorComparator.MaxSim)
        datatype = _DATATYPES.get(p.datatype) if p.datatype is not None else None
        vectors[name] = qe.EdgeVectorParams(
            size=p.size,
            distance=_DISTANCES[p.distance],
            multivector_config=multi,
            datatype=None if datatype is None else getattr(qe.VectorStorageDatatype, datatype),
        )
    sparse = {
        name: qe.EdgeSparseVectorParams(modifier=qe.Modifier.Idf if p.modifier == qm.Modifier.IDF else None)
        for name, p in src.sparse.items()
    }
    return qe.EdgeConfig(vectors=vectors, sparse_vectors=sparse or None)


def _edge_vector(value: Any) -> Any:
    if isinstance(value, qm.SparseVector):
        return qe.SparseVector(indices=list(value.indices), values=list(value.values))
    return value


def _client_vector(value: Any) -> Any:
    """A vector read from the shard in qdrant-client's form (sparse as ``qm.SparseVector``)."""
    if isinstance(value, qe.SparseVector):
        return qm.SparseVector(indices=list(value.indices), values=list(value.values))
    return value


def _client_id(point_id: Any) -> int | str:
    """The shard gives UUIDs back as ``uuid.UUID``; qdrant-client as their text."""
    return point_id if isinstance(point_id, int) else str(point_id)


class EdgeRecord:
    """A point read from the shard, shaped as qdrant-client's ``Record`` (what the verification compares)."""

    def __init__(self, record: Any) -> None:
        self.id = _client_id(record.id)
        self.payload = record.payload or None
        self.vector = {k: _client_vector(v) for k, v in (record.vector or {}).items()}


class EdgeTarget:
    """The target directory: the shard (created or loaded), its lock, and the records beside it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.shard: Any = None
        self._lock_fh: IO[str] | None = None
        self._write_lock = threading.Lock()

    @property
    def records(self) -> Path:
        return self.path / RECORDS_DIR

    def has_shard(self) -> bool:
        return (self.path / CONFIG_FILE).is_file()

    def lock(self) -> None:
        """Create the directory and hold its lock (one migration at a time); one line when it is held."""
        if self._lock_fh is not None:
            return
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            fh = open(self.path / LOCK_FILE, "a+")
        except OSError as exc:
            raise InputError(f"edge_path: cannot create {self.path} ({exc.strerror or exc})") from None
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.close()
            raise BackendError(
                f"{self.path}: this qdrant-edge shard is open in another process or migration; wait for it to finish"
            ) from None
        self._lock_fh = fh

    def create(self, config: Any) -> None:
        self.lock()
        self.shard = _engine(lambda: qe.EdgeShard.create(str(self.path), config), "creating the shard")

    def open(self) -> Any:
        if self.shard is None:
            self.lock()
            self.shard = _engine(lambda: qe.EdgeShard.load(str(self.path)), "opening the shard")
        return self.shard

    def upsert(self, points: list[Any]) -> None:
        shard = self.open()
        with self._write_lock:  # one writer into the engine
            _engine(lambda: shard.update(qe.UpdateOperation.upsert_points(points)), "writing points")

    def create_payload_index(self, field_name: str, data_type: Any) -> None:
        kind = getattr(qe.PayloadSchemaType, str(getattr(data_type, "value", data_type)).capitalize(), None)
        if kind is None:
            raise InputError(f"payload index {field_name!r}: qdrant-edge has no {data_type!r} index")
        shard = self.open()
        _engine(lambda: shard.update(qe.UpdateOperation.create_field_index(field_name, kind)), "a payload index")

    def flush(self) -> None:
        if self.shard is not None:
            _engine(self.shard.flush, "flushing the shard")

    def close(self) -> None:
        shard, self.shard = self.shard, None
        if shard is not None:
            with contextlib.suppress(Exception):
                shard.flush()
            with contextlib.suppress(Exception):
                shard.close()
        fh, self._lock_fh = self._lock_fh, None
        if fh is not None:
            with contextlib.suppress(OSError):
                fh.close()

    # what the verification reads (:class:`~.verify.PrefixTarget`) ---------------------------
    def count(self) -> int:
        shard = self.open()
        return int(_engine(lambda: shard.count(qe.CountRequest(exact=True)), "counting points"))

    def dense_vector_names(self) -> set[str]:
        try:
            config = json.loads((self.path / CONFIG_FILE).read_text())
        except (OSError, ValueError):
            raise FormatError(f"{self.path}: no readable qdrant-edge shard configuration ({CONFIG_FILE})") from None
        return set(config.get("vectors") or {})

    def retrieve(self, ids: list[Any]) -> dict[Any, Any]:
        shard, out = self.open(), {}
        for start in range(0, len(ids), _PAGE):
            chunk = list(ids[start : start + _PAGE])
            for r in _engine(lambda c=chunk: shard.retrieve(c, True, True), "reading points back"):
                record = EdgeRecord(r)
                out[record.id] = record
        return out

    def scan_ids(self) -> tuple[int, dict[str, int]]:
        """(int64 handles shared by two ids, {"int": n, "foreign": n}), as :func:`~.source.scan_handles`."""
        shard, offset, handles, foreign = self.open(), None, [], 0
        while True:
            records, offset = _engine(
                lambda o=offset: shard.scroll(qe.ScrollRequest(offset=o, limit=_PAGE, with_payload=False)),
                "listing point ids",
            )
            for r in records:
                pid = _client_id(r.id)
                handles.append(point_handle(pid))
                foreign += is_foreign_id(pid)
            if offset is None:
                break
        collisions = len(handles) - len(np.unique(np.asarray(handles, dtype=np.int64)))
        return collisions, {"int": len(handles) - foreign, "foreign": foreign}

    def search(self, coarse_queries: np.ndarray, k: int, candidates: int) -> list[list[str]]:
        """Top ``k`` ids (as text) of the shard's own search on ``coarse``, after its indexes are built."""
        shard = self.open()
        _engine(shard.optimize, "optimizing the shard")
        params = qe.SearchParams(hnsw_ef=max(int(candidates), k))
        out: list[list[str]] = []
        for start in range(0, len(coarse_queries), 256):
            requests = [
                qe.QueryRequest(limit=k, query=qe.Query.Nearest(q.tolist(), using=COARSE), params=params)
                for q in coarse_queries[start : start + 256]
            ]
            hits = _engine(lambda r=requests: shard.query_batch(qe.QueryBatchRequest(r)), "a search")
            out.extend([str(_client_id(p.id)) for p in points] for points in hits)
        return out


class EdgeRecordStore:
    """:class:`~matryoshka_index.backends.qdrant.metadata.MetadataStore`'s records and blobs, as files in
    ``DIR/mindex/`` (a record is ``<key>.json``, written atomically)."""

    def __init__(self, target: EdgeTarget) -> None:
        self.target = target

    def read(self, key: str) -> dict[str, Any] | None:
        path = self.target.records / f"{key}.json"
        if not path.is_file():
            return None
        try:
            value = json.loads(path.read_text())
        except (OSError, ValueError):
            raise FormatError(f"{path}: not a readable JSON record; it was not written by matryoshka-index") from None
        if not isinstance(value, dict):
            raise FormatError(f"{path}: not a JSON object")
        return value

    def write(self, record: dict[str, Any] | None, key: str) -> None:
        """Flush the shard, then write the record: a checkpoint never counts points not yet on disk."""
        self.target.flush()
        path = self.target.records / f"{key}.json"
        if record is None:
            path.unlink(missing_ok=True)
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, record)

    def write_blobs(self, files: dict[str, bytes]) -> dict[str, Any]:
        directory = self.target.records / _ADAPTOR_DIR
        directory.mkdir(parents=True, exist_ok=True)
        for name, data in files.items():
            atomic_write_bytes(directory / name, data)
        described = {n: {"size": len(d), "sha256": hashlib.sha256(d).hexdigest()} for n, d in sorted(files.items())}
        return {"directory": f"{RECORDS_DIR}/{_ADAPTOR_DIR}", "bundle": bundle_id(files), "files": described}

    def read_blobs(self, descriptor: dict[str, Any]) -> dict[str, bytes]:
        directory = self.target.path / str(descriptor.get("directory", f"{RECORDS_DIR}/{_ADAPTOR_DIR}"))
        out = {}
        for name, desc in descriptor["files"].items():
            try:
                data = (directory / name).read_bytes()
            except OSError:
                raise FormatError(f"{directory / name}: the migration's adaptor file is missing") from None
            if hashlib.sha256(data).hexdigest() != desc["sha256"]:
                raise FormatError(f"{directory / name}: the migration's adaptor file does not match its checksum")
            out[name] = data
        return out


# ------------------------------------------------------------------------------------ an edge source
class EdgeSourceClient:
    """A qdrant-edge shard as the source of a migration: the read-only part of qdrant-client's API that
    the migration's readers call (:mod:`.source`, :mod:`.plan`, :mod:`.verify`), answered from the shard.

    The shard at ``path`` is never opened in place (opening replays its write-ahead log and may rewrite
    its files): a copy is, in an owned temporary directory that :meth:`close` removes. It holds one
    collection, named ``collection`` (what the migration's records call the source).
    """

    def __init__(self, path: str | Path, collection: str) -> None:
        from ..backends.qdrant.edge import copy_shard

        self.path, self.collection = Path(path).absolute(), collection
        if not (self.path / CONFIG_FILE).is_file():
            raise InputError(f"edge_source: {self.path} is not a qdrant-edge shard ({CONFIG_FILE} missing)")
        self._work = owned_temp_dir("mindex-edge-source-")
        try:
            copy_shard(self.path, self._work)
            self.shard = _engine(lambda: qe.EdgeShard.load(str(self._work)), "opening the source shard")
        except BaseException:
            remove_temp_dir(self._work)
            raise
        self.config = json.loads((self._work / CONFIG_FILE).read_text())

    def describe_source(self) -> str:
        return f"qdrant-edge shard {self.path}"

    def close(self) -> None:
        shard, self.shard = self.shard, None
        if shard is not None:
            with contextlib.suppress(Exception):
                shard.close()
            remove_temp_dir(self._work)

    def _check(self, name: str) -> None:
        if name != self.collection:
            raise InputError(f"collection: the qdrant-edge source holds {self.collection!r}, not {name!r}")

    # the collection: config, aliases, counts ---------------------------------------------
    def get_aliases(self) -> qm.CollectionsAliasesResponse:
        return qm.CollectionsAliasesResponse(aliases=[])

    def get_collections(self) -> qm.CollectionsResponse:
        return qm.CollectionsResponse(collections=[qm.CollectionDescription(name=self.collection)])

    def get_collection(self, name: str) -> qm.CollectionInfo:
        self._check(name)
        vectors = {}
        for vname, v in (self.config.get("vectors") or {}).items():
            multi = v.get("multivector_config")
            vectors[vname] = qm.VectorParams(
                size=int(v["size"]),
                distance=qm.Distance(v["distance"]),
                multivector_config=None
                if not multi
                else qm.MultiVectorConfig(comparator=qm.MultiVectorComparator.MAX_SIM),
                datatype=None if v.get("datatype") is None else qm.Datatype(v["datatype"]),
            )
        sparse = {
            sname: qm.SparseVectorParams(modifier=qm.Modifier.IDF if (v or {}).get("modifier") == "idf" else None)
            for sname, v in (self.config.get("sparse_vectors") or {}).items()
        }
        info = _engine(self.shard.info, "reading the source shard")
        schema = {
            field: qm.PayloadIndexInfo(
                data_type=qm.PayloadSchemaType(str(index.data_type).rsplit(".", 1)[-1].lower()), points=0
            )
            for field, index in (info.payload_schema or {}).items()
        }
        return qm.CollectionInfo(
            status=qm.CollectionStatus.GREEN,
            optimizer_status=qm.OptimizersStatusOneOf.OK,
            points_count=int(info.points_count),
            segments_count=int(info.segments_count),
            config=qm.CollectionConfig(
                params=qm.CollectionParams(vectors=vectors, sparse_vectors=sparse or None),
                hnsw_config=qm.HnswConfig(m=16, ef_construct=100, full_scan_threshold=10_000),
                optimizer_config=qm.OptimizersConfig(
                    deleted_threshold=0.2, vacuum_min_vector_number=1000, default_segment_number=0, flush_interval_sec=5
                ),
            ),
            payload_schema=schema,
        )

    def count(self, name: str, count_filter: Any = None, exact: bool = True) -> qm.CountResult:
        self._check(name)
        if count_filter is not None:
            raise BackendError("qdrant-edge source: counting with a filter is not supported here")
        return qm.CountResult(count=int(_engine(lambda: self.shard.count(qe.CountRequest(exact=True)), "counting")))

    # points ---------------------------------------------------------------------------------
    def _record(self, r: Any, with_payload: bool) -> qm.Record:
        vector = {k: _client_vector(v) for k, v in (r.vector or {}).items()} if r.vector is not None else None
        return qm.Record(id=_client_id(r.id), payload=(r.payload or {}) if with_payload else None, vector=vector)

    def scroll(
        self, name: str, limit: int = 10, offset: Any = None, with_payload: bool = True, with_vectors: Any = False
    ) -> tuple[list[qm.Record], Any]:
        self._check(name)
        request = qe.ScrollRequest(offset=offset, limit=int(limit), with_payload=with_payload, with_vector=with_vectors)
        records, next_offset = _engine(lambda: self.shard.scroll(request), "reading the source shard")
        return [self._record(r, with_payload) for r in records], None if next_offset is None else _client_id(
            next_offset
        )

    def retrieve(self, name: str, ids: list[Any], with_payload: bool = True, with_vectors: Any = False) -> list[Any]:
        self._check(name)
        got = _engine(lambda: self.shard.retrieve(list(ids), with_payload, with_vectors), "reading source points")
        return [self._record(r, with_payload) for r in got]

    def query_points(self, name: str, **_: Any) -> Any:
        # the readers sample with Qdrant's random sample query; without it they read by id instead
        raise BackendError("qdrant-edge source: no random sample query; reading points by id")


# ------------------------------------------------------------------------------------ the mode
class EdgePrefixOnlyMode(PrefixOnlyMode):
    """Prefix only, into a qdrant-edge shard in directory ``edge_path`` instead of a collection."""

    name: ClassVar[str] = "prefix_only_edge"

    def __init__(self, edge_path: str | Path) -> None:
        super().__init__(str(Path(edge_path).absolute()), None, None, None, None)
        self.edge = EdgeTarget(Path(edge_path).absolute())

    def locate(self, run: Run, collection: str) -> tuple[EdgeRecordStore, Checkpoint | None]:  # type: ignore[override]
        """The target directory: absent or empty (a new migration), or one this kind of migration wrote."""
        path, store = self.edge.path, EdgeRecordStore(self.edge)
        if path.exists() and not path.is_dir():
            raise InputError(f"edge_path: {path} exists and is not a directory; give a directory for the shard")
        entries = sorted(p.name for p in path.iterdir() if p.name != LOCK_FILE) if path.is_dir() else []
        self.target_exists = bool(entries)
        if not entries:
            return store, None
        record = store.read(MIGRATION_KEY)
        if not is_migration_record(record):
            shown = ", ".join(entries[:5]) + (" ..." if len(entries) > 5 else "")
            raise InputError(
                f"edge_path: {path} is not empty ({shown}) and holds no migration by mindex migrate; give an "
                "absent or empty directory"
            )
        if not run.opts.dry_run:
            self.edge.lock()
        return store, self.resumable(run, record)  # type: ignore[arg-type]

    def started_text(self) -> str:
        return f"the migration into {self.edge.path}"

    def coarse_dim_text(self, stored: int, given: int) -> str:
        return f"coarse_dim: the shard in {self.edge.path} was created with --dim {stored}, not {given}; drop --dim"

    def record_extra(self, run: Run) -> dict[str, Any]:
        extra = super().record_extra(run)
        extra["prefix_only"]["target_kind"] = "qdrant-edge"
        return extra

    def plan_fields(self, run: Run, est_bytes: int, est_seconds: float | None, basis: str) -> dict[str, Any]:
        fields = super().plan_fields(run, est_bytes, est_seconds, basis)
        fields["prefix_only"]["target_kind"] = "qdrant-edge"
        fields["notes"].append(
            f"qdrant-edge target: a shard in {self.edge.path} (qdrant_edge.EdgeShard.load opens it); the adaptor "
            f"and the migration's records in {self.edge.records}"
        )
        return fields

    def prepare(self, run: Run, cp: Checkpoint | None, model: Any) -> Checkpoint:
        """The record first (the directory is then recognisably ours), the shard, the adaptor."""
        if cp is None:
            self.edge.lock()
            cp = run.new_checkpoint("copy")
            cp.extra.update(self.record_extra(run))
            run.save(cp)
        if cp.state == State.CREATING:  # a new migration, or one killed before its first batch
            if self.edge.has_shard():
                self.edge.open()
            else:
                self.edge.create(edge_config(run.src, run.coarse_dim))
            for field_name, schema in (run.src.info.payload_schema or {}).items():
                self.edge.create_payload_index(field_name, schema.data_type)
            run.store_adaptor(cp, model)
            cp.state = State.WRITING
            run.save(cp)
        else:
            self.edge.open()
        return cp

    def write_job(self, run: Run, model: Any) -> WriteJob:
        src = run.src

        def convert(records: list[Any]) -> tuple[list[Any], int]:
            points, missing = convert_copy(records, src, model, run.coarse_dim, prefix_only=True)
            edge = [
                qe.Point(p.id, {k: _edge_vector(v) for k, v in (p.vector or {}).items()}, p.payload or None)
                for p in points
            ]
            return edge, missing

        return WriteJob(
            target=str(self.edge.path),
            convert=convert,
            write=self.edge.upsert,
            with_payload=True,
            with_vectors=True,
            desc=f"copying {src.name} -> {self.edge.path.name} (qdrant-edge)",
        )

    def target_reader(self, run: Run) -> EdgeTarget:
        return self.edge

    def target_search(self, run: Run) -> Any:
        return self.edge.search

    def scan_target_ids(self) -> tuple[int, dict[str, int]]:
        return self.edge.scan_ids()

    def finish(self, run: Run, cp: Checkpoint, report: MigrationReport) -> None:
        """Verified: nothing to switch (a shard has no aliases)."""
        cp.state = State.VERIFIED
        run.save(cp)

    def close(self) -> None:
        self.edge.close()


__all__ = ["RECORDS_DIR", "EdgePrefixOnlyMode", "EdgeRecordStore", "EdgeSourceClient", "EdgeTarget", "edge_config"]
