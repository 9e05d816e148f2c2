"""Stage 4, the plan: what a migration will do, and the disk, RAM and time it will take (estimates).

Sizes are points x dims x bytes per value (4 for float32), payloads measured on a sampled batch;
HNSW links, payload indexes and the write-ahead log come on top.
"""

from __future__ import annotations

import json
import time
from typing import Any

import numpy as np
from qdrant_client import QdrantClient

from .._version import __version__
from ..backends.base import quantized_bytes
from ..backends.qdrant.connection import client_mode
from ..backends.qdrant.errors import call
from ..backends.qdrant.metadata import utc_now
from ..storage import owned_temp_dir, remove_temp_dir
from .source import Source, vector_of

ESTIMATE_BASIS = (
    "estimates: points x dims x bytes per value (4 for float32), payloads measured on a sampled batch; "
    "HNSW links, payload indexes and the write-ahead log come on top"
)
_DTYPE_BYTES = {"float32": 4, "float16": 2, "uint8": 1}
HNSW_LINK_BYTES = 2 * 16 * 4  # level-0 links of the coarse graph, m=16


def value_bytes(params: Any) -> int:
    """Bytes per point of one dense vector of these params (its datatype times its size)."""
    return _DTYPE_BYTES.get(getattr(params.datatype, "value", None) or "float32", 4) * params.size


def storage_estimate(
    src: Source,
    coarse_dim: int,
    payload_bytes: float,
    other_bytes: float,
    on_disk: bool | None,
    coarse_quantization: str | None,
) -> dict[str, Any]:
    """Extra server disk and RAM of each mode: points x dims x bytes per value (estimates)."""
    n = src.count
    full = value_bytes(src.params)
    coarse = coarse_dim * 4 + quantized_bytes(coarse_dim, coarse_quantization)
    full_on_disk = bool(src.params.on_disk if on_disk is None else on_disk)
    return {
        "basis": ESTIMATE_BASIS,
        "copy": {
            "disk_bytes": int(n * (coarse + full + other_bytes + payload_bytes)),
            "ram_bytes": int(n * (coarse + (0 if full_on_disk else full) + other_bytes)),
        },
        "in_place": {"disk_bytes": int(n * coarse), "ram_bytes": int(n * coarse)},
    }


READ_BASIS = "rough: measured read speed x 3"
LOCAL_BASIS = "measured: a sample read, and written into a scratch local-mode storage"


def local_write_seconds(records: list[Any], src: Source, coarse_dim: int) -> float:
    """Seconds per point to write these points into a scratch qdrant-client local-mode storage on disk.

    Local mode commits one SQLite transaction per point, which costs far more than reading (the
    disk's sync time): measuring it on the sample is the only estimate that holds. The scratch
    storage is a temporary directory, deleted after; the user's storage is not touched.
    """
    from qdrant_client import models as qm

    from .writer import local_write_ahead_log

    scratch = owned_temp_dir("mindex-estimate-")  # pid-locked: swept by the next run if we are killed
    try:
        probe = QdrantClient(path=str(scratch))
        try:
            probe.create_collection(
                "probe",
                vectors_config={
                    "full": qm.VectorParams(size=src.params.size, distance=src.params.distance),
                    "coarse": qm.VectorParams(size=coarse_dim, distance=src.params.distance),
                },
            )
            zeros = [0.0] * coarse_dim
            points = [
                qm.PointStruct(id=i, vector={"full": v, "coarse": zeros}, payload=r.payload or {})
                for i, r in enumerate(records)
                if (v := vector_of(r, src.vector)) is not None
            ]
            with local_write_ahead_log(probe, "probe"):  # as the migration writes
                t0 = time.perf_counter()
                probe.upsert("probe", points, wait=True)
                seconds = time.perf_counter() - t0
        finally:
            probe.close()
    finally:
        remove_temp_dir(scratch)
    return seconds / max(1, len(points))


def measure_sample(
    client: QdrantClient, src: Source, coarse_dim: int, batch_size: int, endpoint: str, coarse_quantization: str | None
) -> tuple[int, float | None, float, float, str]:
    """(target bytes, copy seconds, payload bytes per point, other vectors' bytes per point, how the
    seconds were estimated), from one sampled batch: read speed x 3 on a server, read plus a measured
    write in local path mode."""
    n = min(batch_size, 64, max(src.count, 1))
    t0 = time.perf_counter()
    records, _ = call(
        lambda: client.scroll(src.name, limit=n, with_payload=True, with_vectors=True),
        endpoint,
        "reading points",
        retries=3,
    )
    read_seconds = time.perf_counter() - t0
    if not records:
        return 0, 0.0, 0.0, 0.0, READ_BASIS
    payload = float(np.mean([len(json.dumps(r.payload or {})) for r in records]))
    other = 0.0
    for name, p in src.others.items():
        per = value_bytes(p)
        if p.multivector_config is not None:
            lens = [len((r.vector or {}).get(name) or []) for r in records if isinstance(r.vector, dict)]
            per *= float(np.mean(lens)) if lens else 1.0
        other += per
    for name in src.sparse:
        nnz = [len(v.indices) for r in records if isinstance(r.vector, dict) and (v := r.vector.get(name)) is not None]
        other += 8 * (float(np.mean(nnz)) if nnz else 0.0)
    full = value_bytes(src.params)
    quant = quantized_bytes(coarse_dim, coarse_quantization)
    per_point = coarse_dim * 4 + quant + full + other + payload + HNSW_LINK_BYTES
    if is_local_path_client(client):
        seconds, basis = (
            (read_seconds / len(records) + local_write_seconds(records, src, coarse_dim)) * src.count,
            LOCAL_BASIS,
        )
    else:  # reading dominates on a server; adapting and writing each cost about as much again
        seconds, basis = read_seconds / len(records) * src.count * 3, READ_BASIS
    return int(per_point * src.count), seconds, payload, other, basis


def is_local_path_client(client: QdrantClient) -> bool:
    """qdrant-client local mode on disk (not in memory): one SQLite transaction per point written."""
    return client_mode(client)[0] == "path"


def index_manifest(
    src: Source, coarse_dim: int, candidates: int, *, in_place: bool = False, prefix_only: bool = False
) -> dict[str, Any]:
    """The index manifest of a migrated collection (the keys ``MatryoshkaIndex.from_parts`` reads);
    ``prefix_only``: no full vector (``rerank`` null, ``full_dim`` 0), as ``build(..., rerank=None)``."""
    if prefix_only:
        return {
            **index_manifest(src, coarse_dim, 10, in_place=in_place),
            "full_dim": 0,
            "rerank": None,
            "calibration": {"skipped": "prefix only: no full vector to rerank with, nothing to calibrate"},
            "origin": {"kind": "qdrant-migration", "mode": "prefix_only", "source": src.name, "vector": src.vector},
        }
    return {
        "format": "matryoshka-index",
        "format_version": 1,
        "library_version": __version__,
        "created": utc_now(),
        "metric": src.metric,
        "input_dim": src.params.size,
        "coarse_dim": coarse_dim,
        "full_dim": src.params.size,
        "rerank": "original",
        "adaptor": {"kind": "matryoshka-adaptor", "directory": None},
        "count": src.count,
        "candidates": candidates,
        "calibration": {},
        "backend": {"kind": "qdrant"},
        "origin": {
            "kind": "qdrant-migration",
            "mode": "in_place" if in_place else "copy",
            "source": src.name,
            "vector": src.vector,
        },
    }


__all__ = ["ESTIMATE_BASIS", "index_manifest", "measure_sample", "storage_estimate", "value_bytes"]
