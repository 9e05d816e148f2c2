"""What both Qdrant backends (``qdrant`` and ``qdrant-edge``) share: vector names, input checks, sizes.

Imports neither qdrant-client nor qdrant-edge, so each backend takes it without the other's package.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import InputError

COARSE = "coarse"
FULL = "full"
QUANTIZATIONS = (None, "int8", "binary")


class Closing:
    """``close()`` (idempotent: it runs the backend's ``weakref.finalize``) and use as a context manager."""

    _finalizer: Any

    def close(self) -> None:
        """Release what the backend holds: its client (if it opened it), or its shard, lock and working copy."""
        self._finalizer()

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def first_line(exc: BaseException) -> str:
    """The first line of an exception's text (its class name when it has none)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else exc.__class__.__name__


def quantized_bytes(coarse_dim: int, kind: str | None) -> int:
    """Bytes per point of the quantized copy of ``coarse`` (int8: one per dim, binary: one bit per dim)."""
    return {"int8": coarse_dim, "binary": (coarse_dim + 7) // 8}.get(kind or "", 0)


Payloads = Sequence[dict[str, Any] | None] | None
"""One payload (or None) per point, or None for none at all."""


def add_inputs(
    ids: Any, coarse: Any, full: Any, payloads: Payloads, coarse_dim: int, full_dim: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``add``'s inputs as int64 ids and contiguous float32 rows, checked to agree: one coarse and one
    full row (and payload, when given) per id."""
    ids = np.asarray(ids, dtype=np.int64).ravel()
    coarse = np.ascontiguousarray(coarse, dtype=np.float32)
    full = np.ascontiguousarray(full, dtype=np.float32)
    if coarse.shape != (len(ids), coarse_dim) or full.shape != (len(ids), full_dim):
        raise InputError(
            f"add: expected coarse ({len(ids)}, {coarse_dim}) and full ({len(ids)}, {full_dim}), "
            f"got {coarse.shape} and {full.shape}"
        )
    if payloads is not None and len(payloads) != len(ids):
        raise InputError(f"payloads: {len(payloads)} payloads for {len(ids)} vectors; give one per vector (or None)")
    return ids, coarse, full


def membership(ids: np.ndarray, present: set[int]) -> np.ndarray:
    """``contains``'s answer: for each id, whether it is in ``present``."""
    return np.fromiter((int(i) in present for i in ids), dtype=bool, count=len(ids))


def query_pairs(coarse_queries: np.ndarray, full_queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both query sets as float32, one coarse and one full query per row."""
    coarse_queries = np.asarray(coarse_queries, dtype=np.float32)
    full_queries = np.asarray(full_queries, dtype=np.float32)
    if len(coarse_queries) != len(full_queries):
        raise InputError(
            f"search: {len(coarse_queries)} coarse queries but {len(full_queries)} full queries; "
            "give one of each per query"
        )
    return coarse_queries, full_queries


__all__ = [
    "COARSE",
    "FULL",
    "QUANTIZATIONS",
    "Payloads",
    "add_inputs",
    "first_line",
    "membership",
    "quantized_bytes",
    "query_pairs",
]
