"""The in-memory Qdrant backend's snapshot: ``.npy`` + JSON files in the index directory, no pickle.

An index built on an embedded in-memory Qdrant (no url, path or client) is saved as these files
and loaded back into a fresh in-memory collection by :meth:`QdrantBackend.open`. This module owns
the files only: :func:`write_snapshot` reads the backend through its public attributes
(:class:`SnapshotSource`), :func:`read_snapshot` returns what the files hold, and the backend
uploads it itself. It does not import the backend, so the backend imports this one without a circle.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from qdrant_client import QdrantClient

from ...errors import BackendError, FormatError, InputError
from ...storage import atomic_write_json, save_npy
from .common import COARSE
from .errors import call
from .metadata import MetadataStore, is_foreign_id, vector_params

SNAPSHOT_FORMAT = "matryoshka-index-qdrant-snapshot"
SNAPSHOT_VERSION = 1
SNAPSHOT_DIR = "qdrant"


class SnapshotSource(Protocol):
    """What :func:`write_snapshot` reads of a backend: public attributes only."""

    client: QdrantClient
    collection: str
    endpoint: str
    max_retries: int
    coarse_dim: int
    full_dim: int
    full_vector: str | None
    coarse_on_disk: bool
    metadata: MetadataStore

    def __len__(self) -> int: ...

    def layout(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class Snapshot:
    """The files of a snapshot, read and checked: ``meta`` is collection.json; the arrays are row-aligned."""

    meta: dict[str, Any]
    ids: list[int | str]
    coarse: np.ndarray
    full: np.ndarray
    payloads: list[Any]


def read_snapshot(snap: Path) -> Snapshot:
    """The snapshot in ``snap`` (what :func:`write_snapshot` wrote); one line on a missing or corrupt file."""
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
    return Snapshot(meta, ids, coarse, full, payloads)


def write_snapshot(backend: SnapshotSource, snap: Path) -> None:
    """Every point (ids, coarse and full vectors, payloads) and the metadata records, as files in ``snap``."""
    info = call(
        lambda: backend.client.get_collection(backend.collection),
        backend.endpoint,
        "reading the collection",
        retries=backend.max_retries,
    )
    extra = sorted(set(vector_params(info)) - {COARSE, backend.full_vector}) + sorted(
        info.config.params.sparse_vectors or {}
    )
    if extra:
        raise InputError(
            f"collection {backend.collection!r} lives in an in-memory Qdrant client and has other vectors "
            f"({', '.join(extra)}); it cannot be saved as files: use a Qdrant server or path="
        )
    n = len(backend)
    ids: list[int | str] = []
    coarse = np.empty((n, backend.coarse_dim), dtype=np.float32)
    full = np.empty((n, backend.full_dim), dtype=np.float32)
    wanted = [COARSE] if backend.full_vector is None else [COARSE, backend.full_vector]
    lines: list[str] = []
    offset = None
    row = 0
    while True:
        records, offset = call(
            lambda o=offset: backend.client.scroll(
                backend.collection, limit=1024, offset=o, with_payload=True, with_vectors=wanted
            ),
            backend.endpoint,
            "reading points",
            retries=backend.max_retries,
        )
        for r in records:
            if row >= n:
                raise BackendError(f"collection {backend.collection!r} changed while it was being saved")
            ids.append(r.id)
            coarse[row] = r.vector[COARSE]
            if backend.full_vector is not None:
                full[row] = r.vector[backend.full_vector]
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
    if backend.full_vector is not None:
        save_npy(snap / "full.npy", full[:row])
    (snap / "payloads.jsonl").write_text("".join(line + "\n" for line in lines))
    exported = backend.metadata.export()
    full_params = vector_params(info).get(backend.full_vector) if backend.full_vector is not None else None
    atomic_write_json(
        snap / "collection.json",
        {
            "format": SNAPSHOT_FORMAT,
            "format_version": SNAPSHOT_VERSION,
            "points": row,
            **backend.layout(),
            "coarse_on_disk": backend.coarse_on_disk,
            "on_disk": bool(full_params is not None and full_params.on_disk),
            **exported,
        },
    )


__all__ = [
    "SNAPSHOT_DIR",
    "SNAPSHOT_FORMAT",
    "SNAPSHOT_VERSION",
    "Snapshot",
    "SnapshotSource",
    "read_snapshot",
    "write_snapshot",
]
