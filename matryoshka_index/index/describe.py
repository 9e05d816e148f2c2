"""What ``mindex info`` shows about an index: counts, dims, adaptor, calibration, device, memory."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from ..adaptor import MatryoshkaAdaptor
from ..calibration import CalibrationRecord
from ..manifest import FORMAT, FORMAT_VERSION
from ..storage import allocated_bytes
from .device_stage import stages
from .parts import Adaptor, adaptor_kind


def _adaptor_facts(adaptor: Any) -> dict[str, Any]:
    facts: dict[str, Any] = {"kind": adaptor_kind(adaptor)}
    if isinstance(adaptor, MatryoshkaAdaptor):
        meta = adaptor.metadata_
        facts["matryoshka_dims"] = list(adaptor.matryoshka_dims_)
        facts["trained_rows"] = meta.get("training", {}).get("rows")
        with contextlib.suppress(StopIteration, AttributeError):
            facts["device"] = str(next(adaptor.model_.parameters()).device)
    return facts


def describe(
    *,
    adaptor: Adaptor,
    metric: str,
    rerank: str | None,
    dims: tuple[int, int, int],
    candidates: int,
    calibration: CalibrationRecord,
    backend_info: dict[str, Any],
    count: int,
    path: Path | None,
    saved_as_is: bool,
) -> dict[str, Any]:
    """Facts for ``mindex info`` (see ``MatryoshkaIndex.info``): ``dims`` are (input, coarse, full),
    ``backend_info`` and ``count`` the backend's, read under the index's lock; ``saved_as_is``: ``path``
    holds the index as it is now (its files then say what it takes on disk)."""
    input_dim, coarse_dim, full_dim = dims
    b = backend_info
    memory = {
        "ram_bytes_per_vector": b.get("ram_bytes_per_vector"),
        "disk_bytes_per_vector": b.get("disk_bytes_per_vector"),
        "full_vectors": b.get("full_vectors"),
        "exact_search_ram_bytes_per_vector": input_dim * 4,
    }
    if "memory" in b:  # measured by the backend (FAISS): per-vector part, fixed part, page cache
        m = b["memory"]
        memory.update({k: m[k] for k in ("per_vector_bytes", "fixed_bytes", "page_cache_bytes_per_vector")})
    if path is not None and saved_as_is and count:
        disk = allocated_bytes(path)  # sparse files (qdrant-edge) count what they really use
        memory["disk_bytes_per_vector"] = round(disk / count, 1)
        memory["disk_bytes"] = disk
    cal = calibration
    adaptor_facts = _adaptor_facts(adaptor)
    prefix_only = rerank is None
    if prefix_only:  # what a user gives up and what they keep, in the index's own words
        memory["full_vectors"] = "none (prefix only: rerank=None)"
        memory["bytes_saved_per_vector"] = (input_dim - coarse_dim) * 4
    return {
        "path": str(path) if path is not None else None,
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "count": count,
        "input_dim": input_dim,
        "coarse_dim": coarse_dim,
        "full_dim": full_dim,
        "metric": metric,
        "rerank": rerank,
        "prefix_only": prefix_only,
        "search": (
            "the coarse stage alone (rerank=None): scores are inner products of the adapted prefix"
            if prefix_only
            else "coarse stage, then a rerank of the candidates at full dimension"
        ),
        "adaptor": adaptor_facts,
        "candidates": {
            "default": candidates,
            "calibrated_recall": cal.recall,
            "at_k": cal.k,
            "target_recall": cal.target_recall,
            "reached": cal.reached,
            "knob": cal.knob,
            "calibration_queries": cal.queries,
            **({"note": cal.skipped} if cal.skipped is not None else {}),
        },
        "code": b.get("code"),
        "ram_budget": cal.budget,
        "device": b.get("device"),
        "stages": stages(adaptor, rerank, b, adaptor_facts),
        "memory": memory,
        "backend": b,
    }
