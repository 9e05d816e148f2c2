"""What ``mindex info`` shows about an index: counts, dims, adaptor, calibration, device, memory."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

from ..adaptor import MatryoshkaAdaptor
from ..manifest import FORMAT, FORMAT_VERSION
from ..storage import allocated_bytes
from .build import adaptor_kind
from .device_stage import stages

if TYPE_CHECKING:
    from .core import MatryoshkaIndex


def _adaptor_facts(adaptor: Any) -> dict[str, Any]:
    facts: dict[str, Any] = {"kind": adaptor_kind(adaptor)}
    if isinstance(adaptor, MatryoshkaAdaptor):
        meta = getattr(adaptor, "metadata_", {})
        facts["matryoshka_dims"] = list(adaptor.matryoshka_dims_)
        facts["trained_rows"] = meta.get("training", {}).get("rows")
        with contextlib.suppress(StopIteration, AttributeError):
            facts["device"] = str(next(adaptor.model_.parameters()).device)
    return facts


def describe(index: MatryoshkaIndex) -> dict[str, Any]:
    """Facts for ``mindex info`` (see ``MatryoshkaIndex.info``)."""
    with index._lock.read():
        b = index.backend.info()
        count = len(index.backend)
    memory = {
        "ram_bytes_per_vector": b.get("ram_bytes_per_vector"),
        "disk_bytes_per_vector": b.get("disk_bytes_per_vector"),
        "full_vectors": b.get("full_vectors"),
        "exact_search_ram_bytes_per_vector": index.input_dim * 4,
    }
    if "memory" in b:  # measured by the backend (FAISS): per-vector part, fixed part, page cache
        m = b["memory"]
        memory.update({k: m[k] for k in ("per_vector_bytes", "fixed_bytes", "page_cache_bytes_per_vector")})
    path = index._path
    if path is not None and not index._modified_since_load and count:
        disk = allocated_bytes(path)  # sparse files (qdrant-edge) count what they really use
        memory["disk_bytes_per_vector"] = round(disk / count, 1)
        memory["disk_bytes"] = disk
    cal = index._calibration
    adaptor = _adaptor_facts(index.adaptor)
    prefix_only = index.rerank is None
    if prefix_only:  # what a user gives up and what they keep, in the index's own words
        memory["full_vectors"] = "none (prefix only: rerank=None)"
        memory["bytes_saved_per_vector"] = (index.input_dim - index.coarse_dim) * 4
    return {
        "path": str(path) if path is not None else None,
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "count": count,
        "input_dim": index.input_dim,
        "coarse_dim": index.coarse_dim,
        "full_dim": index.full_dim,
        "metric": index.metric,
        "rerank": index.rerank,
        "prefix_only": prefix_only,
        "search": (
            "the coarse stage alone (rerank=None): scores are inner products of the adapted prefix"
            if prefix_only
            else "coarse stage, then a rerank of the candidates at full dimension"
        ),
        "adaptor": adaptor,
        "candidates": {
            "default": index._candidates,
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
        "stages": stages(index, b, adaptor),
        "memory": memory,
        "backend": b,
    }
