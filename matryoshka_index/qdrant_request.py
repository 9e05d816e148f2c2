"""Deprecated path, kept until 0.2: the raw two-stage Qdrant request now lives in
:mod:`matryoshka_index.backends.qdrant.request`. The README documented this path, so user code may
import it; it re-exports the same functions and warns once on import.
"""

from __future__ import annotations

import warnings

from .backends.qdrant.request import query_path, query_request, query_vectors

warnings.warn(
    "matryoshka_index.qdrant_request is deprecated and will be removed in 0.2; "
    "import from matryoshka_index.backends.qdrant.request instead",
    DeprecationWarning,
    stacklevel=2,
)

__all__ = ["query_path", "query_request", "query_vectors"]
