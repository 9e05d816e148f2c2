"""Storage backends behind one protocol (``base.SearchBackend``). Backends never import torch, except the
torch coarse engine (``torch_engine``), which imports it inside the functions that run it.

The FAISS modules are named ``faiss_*`` rather than ``faiss`` so that inside this package ``import faiss``
can never be mistaken for (or shadowed by) our own module; the Qdrant backends live in ``qdrant/``
(qdrant-client is ``qdrant_client``, so no name there can shadow it).
"""

from __future__ import annotations

from .base import (
    CAPABILITIES,
    COARSE,
    EMPTY_ID,
    FULL,
    METRICS,
    Closeable,
    PointLookup,
    ReportsTimings,
    SearchBackend,
    SearchKnob,
    StoresIndexMetadata,
    TrainableCoarse,
    empty_results,
    quantized_bytes,
)

BACKENDS = ("faiss", "qdrant", "qdrant-edge")


def get_backend_class(name: str) -> type:
    """The backend class registered under ``name`` (imported lazily: FAISS users need no Qdrant)."""
    from ..errors import InputError

    if name == "faiss":
        from .faiss_backend import FaissBackend

        return FaissBackend
    if name == "qdrant":
        from .qdrant.server import QdrantBackend

        return QdrantBackend
    if name == "qdrant-edge":
        from .qdrant.edge import QdrantEdgeBackend

        return QdrantEdgeBackend
    raise InputError(f"backend: unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")


__all__ = [
    "BACKENDS",
    "CAPABILITIES",
    "COARSE",
    "EMPTY_ID",
    "FULL",
    "METRICS",
    "Closeable",
    "PointLookup",
    "ReportsTimings",
    "SearchBackend",
    "SearchKnob",
    "StoresIndexMetadata",
    "TrainableCoarse",
    "empty_results",
    "get_backend_class",
    "quantized_bytes",
]
