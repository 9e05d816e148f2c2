"""The in-memory Qdrant backend's snapshot: ``.npy`` + JSON files in the index directory, no pickle.

The functions take the backend (its class, or one) as their first argument; this module does not
import it, so the backend can import this one without a circle.

An index built on an embedded in-memory Qdrant (no url, path or client) is saved as these files
and loaded back into a fresh in-memory collection by :meth:`QdrantBackend.open`.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import BackendError, FormatError, InputError
from ...storage import atomic_write_json, save_npy
from .common import COARSE, FULL
from .metadata import META_KEY, MIGRATION_KEY, is_foreign_id, vector_params

SNAPSHOT_FORMAT = "matryoshka-index-qdrant-snapshot"
SNAPSHOT_VERSION = 1
SNAPSHOT_DIR = "qdrant"


def open_snapshot(cls: Any, snap: Path, collection: str, options: dict[str, Any]) -> Any:
    """A new in-memory collection loaded with the snapshot in ``snap`` (what :func:`write_snapshot` wrote)."""
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
    if int(meta["full_dim"]) == 0:  # prefix only: no full vectors were written
        full = np.empty((len(coarse), 0), dtype=np.float32)
    else:
        full = np.load(snap / "full.npy", mmap_mode="r", allow_pickle=False)
    payloads = [json.loads(line) for line in (snap / "payloads.jsonl").read_text().splitlines() if line]
    if not (len(ids) == len(coarse) == len(full) == len(payloads)):
        raise FormatError(f"{snap}: snapshot files disagree on the number of points; the index directory is corrupt")
    create_opts = {
        k: options.pop(k) for k in list(options) if k in ("upload_batch_size", "max_retries", "quiet", "rescore")
    }
    code = meta.get("code")  # absent in snapshots written before codes: coarse_quantization says it
    backend = cls.create(
        index=meta.get("index", "hnsw"),
        coarse_dim=int(meta["coarse_dim"]),
        full_dim=int(meta["full_dim"]),
        metric=meta["metric"],
        collection=collection,
        coarse_quantization=None if code else meta.get("coarse_quantization"),
        code=code,
        coarse_on_disk=meta.get("coarse_on_disk"),
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
        rec["vectors"] = {**(rec.get("vectors") or {}), "full": FULL if backend.full_vector is not None else None}
        if files:
            rec["adaptor"] = backend.metadata.write_blobs({k: base64.b64decode(v) for k, v in files.items()})
        backend.metadata.write(rec, META_KEY)
        backend._has_foreign_ids = bool((rec.get("point_ids") or {}).get("foreign"))
    if MIGRATION_KEY in records:
        backend.metadata.write(records[MIGRATION_KEY], MIGRATION_KEY)
    return backend


def write_snapshot(self: Any, snap: Path) -> None:
    """Every point (ids, coarse and full vectors, payloads) and the metadata records, as files in ``snap``."""
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
    wanted = [COARSE] if self.full_vector is None else [COARSE, self.full_vector]
    lines: list[str] = []
    offset = None
    row = 0
    while True:
        records, offset = self._call(
            lambda o=offset: self.client.scroll(
                self.collection, limit=1024, offset=o, with_payload=True, with_vectors=wanted
            ),
            "reading points",
        )
        for r in records:
            if row >= n:
                raise BackendError(f"collection {self.collection!r} changed while it was being saved")
            ids.append(r.id)
            coarse[row] = r.vector[COARSE]
            if self.full_vector is not None:
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
    if self.full_vector is not None:
        save_npy(snap / "full.npy", full[:row])
    (snap / "payloads.jsonl").write_text("".join(line + "\n" for line in lines))
    exported = self.metadata.export()
    full_params = vector_params(info).get(self.full_vector) if self.full_vector is not None else None
    atomic_write_json(
        snap / "collection.json",
        {
            "format": SNAPSHOT_FORMAT,
            "format_version": SNAPSHOT_VERSION,
            "points": row,
            **self.layout(),
            "coarse_on_disk": self.coarse_on_disk,
            "on_disk": bool(full_params is not None and full_params.on_disk),
            **exported,
        },
    )


__all__ = ["SNAPSHOT_DIR", "SNAPSHOT_FORMAT", "SNAPSHOT_VERSION", "open_snapshot", "write_snapshot"]
