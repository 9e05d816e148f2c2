"""What an index is made of, as its rooms hand it to each other: the vectors each stage compares, and the parts.

:class:`StageVectors` turns validated rows into the two vectors the backend compares: the *coarse*
prefix and the *full* rerank vector (see :mod:`.core` for the search model). The index, its build and
its calibration prepare vectors through it, so the rule is written once.

:class:`IndexParts` is everything an index holds besides its lock: what :func:`.build.build_index`
returns and :meth:`MatryoshkaIndex.from_parts <matryoshka_index.MatryoshkaIndex.from_parts>` reads
from a manifest; the index is assembled from it and owns it from then on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..adaptor import MatryoshkaAdaptor
from ..adaptor.pca import PCARotation
from ..calibration import CalibrationRecord
from ..manifest import PREFIX_ONLY
from ..validation import l2_normalize
from .points import PayloadStore, store_vectors

Adaptor = MatryoshkaAdaptor | PCARotation | None


def adaptor_kind(adaptor: Adaptor) -> str:
    """``"none"``, ``"pca"`` or ``"matryoshka-adaptor"`` (as written in the manifest)."""
    if adaptor is None:
        return "none"
    return "pca" if isinstance(adaptor, PCARotation) else "matryoshka-adaptor"


@dataclass(frozen=True)
class StageVectors:
    """The coarse and full vectors of rows, as stored or as queried, for one index's settings."""

    adaptor: Adaptor
    metric: str
    rerank: str | None
    coarse_dim: int

    def prepare(self, x: np.ndarray, *, queries: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """(coarse, full) float32 vectors of validated rows ``x``: as stored, or with ``queries`` as queried.

        An adaptor with a query head (fitted with queries) sends queries through its own head
        (``transform_queries``) and documents through ``transform``; any other adaptor is one function.
        """
        x = np.asarray(x, dtype=np.float32)
        cd = self.coarse_dim
        adapted_full = x
        if self.adaptor is None:
            coarse = x[:, :cd]
        else:
            need_full = self.rerank == "adapted"
            adapt = self.adaptor.transform_queries if queries else self.adaptor.transform
            a = adapt(x, None if need_full else cd, batch_size=max(1, len(x)))
            coarse = a[:, :cd]
            adapted_full = a
        if self.rerank is PREFIX_ONLY:  # nothing to rerank with: empty full vectors
            full = np.empty((len(x), 0), dtype=np.float32)
        else:
            full = x if self.rerank == "original" else adapted_full
        if self.metric == "cosine":
            return l2_normalize(coarse), (l2_normalize(full) if full.shape[1] else full)
        return np.ascontiguousarray(coarse, dtype=np.float32), np.ascontiguousarray(full, dtype=np.float32)

    def prepare_full(self, x: np.ndarray) -> np.ndarray:
        """Full query vectors (exact search compares them with the stored full vectors)."""
        if self.rerank == "adapted" and self.adaptor is not None:
            return self.prepare(x, queries=True)[1]
        x = np.asarray(x, dtype=np.float32)
        return l2_normalize(x) if self.metric == "cosine" else np.ascontiguousarray(x)


@dataclass
class IndexParts:
    """An index's state: the adaptor, the open backend, the settings, the default candidates and their
    record, the payloads an index keeps itself (FAISS), and where it was loaded from (None: not saved)."""

    adaptor: Adaptor
    backend: Any
    metric: str
    rerank: str | None
    input_dim: int
    coarse_dim: int
    full_dim: int
    candidates: int
    calibration: CalibrationRecord
    payloads: PayloadStore = field(default_factory=PayloadStore)
    created: str | None = None
    path: Path | None = None

    @property
    def vectors(self) -> StageVectors:
        return StageVectors(self.adaptor, self.metric, self.rerank, self.coarse_dim)

    def add(self, ids: np.ndarray, rows: np.ndarray, payloads: list[dict[str, Any] | None] | None) -> None:
        """Adapt validated ``rows`` as documents and store them, with their ids and payloads."""
        coarse, full = self.vectors.prepare(rows)
        store_vectors(self.backend, self.payloads, ids, coarse, full, payloads)


__all__ = ["Adaptor", "IndexParts", "StageVectors", "adaptor_kind"]
