"""The protocol every storage backend implements. Backends know nothing of training.

A backend stores, per external int64 id, a *coarse* vector (the adapted low-dim prefix, already
normalised by the index when the metric is cosine) and a *full* vector (by default the original
embedding, normalised likewise), and runs the two-stage query: top ``candidates`` by inner product
on ``coarse``, then those candidates reranked by inner product on ``full``, returning the best ``k``.
FAISS runs both stages in this process; Qdrant runs them server-side with a ``prefetch`` query.

Conventions shared by all backends:

* ids are int64 >= 0; result slots with no hit hold id ``-1`` and score ``-inf``;
* scores are float32 inner products of the full vectors (what the final stage ranks by);
* inputs arrive validated (shapes, dtypes float32, finiteness) from :class:`MatryoshkaIndex`;
* errors a user can cause are :class:`~matryoshka_index.errors.MatryoshkaError` with one-line messages.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np

EMPTY_ID = -1


@runtime_checkable
class SearchBackend(Protocol):
    """Stores coarse + full vectors under int64 ids and runs two-stage (coarse, then full) search."""

    kind: ClassVar[str]
    """Registry name: ``"faiss"``, ``"qdrant"`` or ``"qdrant-edge"``."""

    coarse_dim: int
    full_dim: int

    @classmethod
    def create(cls, *, coarse_dim: int, full_dim: int, metric: str, **options: Any) -> SearchBackend:
        """A new, empty backend. ``options`` are the backend's own (``backend_options`` of the index)."""
        ...

    @classmethod
    def open(cls, directory: Path, section: dict[str, Any], **options: Any) -> SearchBackend:
        """Reopen a backend; ``section`` is what :meth:`save` returned (stored in the index manifest)."""
        ...

    def __len__(self) -> int:
        """Number of stored vectors."""
        ...

    def ids(self) -> np.ndarray:
        """All stored ids (int64, any order)."""
        ...

    def contains(self, ids: np.ndarray) -> np.ndarray:
        """Boolean mask: which of ``ids`` are stored."""
        ...

    def add(
        self,
        ids: np.ndarray,
        coarse: np.ndarray,
        full: np.ndarray,
        payloads: Sequence[dict[str, Any] | None] | None = None,
    ) -> None:
        """Store new vectors. ``ids`` are new (the index checks duplicates first)."""
        ...

    def remove(self, ids: np.ndarray) -> int:
        """Delete ``ids``; returns how many were present and removed."""
        ...

    def search(
        self,
        coarse_queries: np.ndarray,
        full_queries: np.ndarray,
        k: int,
        candidates: int,
        query_filter: Any | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Two-stage search: ``(scores, ids)``, each ``(n_queries, k)``, best first."""
        ...

    def coarse_search(self, coarse_queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Stage one alone (coarse vectors only): ``(scores, ids)``, each ``(n_queries, k)``."""
        ...

    def exact_search(self, full_queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact brute-force search on the full vectors: the ground truth for calibration and eval."""
        ...

    def save(self, directory: Path) -> dict[str, Any]:
        """Persist into ``directory`` (an empty temp dir the index renames into place).

        Returns the backend's section of the index manifest (JSON-serialisable), which :meth:`open`
        receives back.
        """
        ...

    def info(self) -> dict[str, Any]:
        """Facts for ``mindex info``: device, index type, RAM and disk bytes per vector, ..."""
        ...


def empty_results(n_queries: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Result arrays with every slot empty (score -inf, id -1)."""
    return (
        np.full((n_queries, k), -np.inf, dtype=np.float32),
        np.full((n_queries, k), EMPTY_ID, dtype=np.int64),
    )
