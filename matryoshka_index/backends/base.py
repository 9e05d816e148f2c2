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

Optional capabilities are small runtime-checkable protocols below :class:`SearchBackend`; the index
asks ``isinstance(backend, Capability)`` and never probes for attribute names itself. A protocol
checks that the names exist, so a backend conforms by defining them (no base class to inherit):

* :class:`TrainableCoarse`: a coarse index that must be trained on a sample first (IVF);
* :class:`SearchKnob`: a search-time parameter calibrated together with candidates (``nprobe``);
* :class:`StoresIndexMetadata`: the backend keeps the index manifest and adaptor itself (Qdrant);
* :class:`ReportsTimings`: ``search(..., timings=)`` accumulates per-stage seconds;
* :class:`Closeable`: ``close()`` releases a client, a shard, a lock;
* :class:`PointLookup`: maps result handles back to the stored points' own ids and payloads.

A backend whose class sets ``supports_prefix_only = True`` can be created with ``full_dim=0``: it then
keeps the coarse vectors alone (``MatryoshkaIndex.build(..., rerank=None)``), its ``search`` is the coarse
stage alone (the best ``k`` of the ``candidates`` by coarse score) and ``exact_search`` refuses;
:func:`stores_prefix_only` asks a class before one is created.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np

from ..errors import InputError

EMPTY_ID = -1
Payloads = Sequence[dict[str, Any] | None] | None
"""One payload (or None) per vector, or None for none at all."""
Results = tuple[np.ndarray, np.ndarray]
"""``(scores, ids)``, each ``(n_queries, k)``, best first; score ``-inf`` and id ``-1`` where there is no hit."""
METRICS = ("cosine", "ip")
"""The metrics every backend supports: cosine (inner product of vectors the index L2-normalised) and ip."""
COARSE = "coarse"
FULL = "full"
"""Names of the two stored vectors (Qdrant's named vectors; FAISS keeps them apart by file)."""


def quantized_bytes(dim: int, quantization: str | None) -> int:
    """Bytes per vector of the quantized copy Qdrant keeps beside a ``dim``-float vector (0 for none):
    ``dim`` for int8, ``ceil(dim / 8)`` for binary, in the older ``coarse_quantization`` vocabulary (a
    migration's estimate). A code's size as Qdrant's engine lays it out (offsets, word padding) is
    :func:`~matryoshka_index.backends.qdrant.common.qdrant_code_bytes`."""
    if quantization == "int8":
        return dim
    if quantization == "binary":
        return (dim + 7) // 8
    return 0


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

    def add(self, ids: np.ndarray, coarse: np.ndarray, full: np.ndarray, payloads: Payloads = None) -> None:
        """Store new vectors. ``ids`` are new (the index checks duplicates first)."""
        ...

    def remove(self, ids: np.ndarray) -> int:
        """Delete ``ids``; returns how many were present and removed."""
        ...

    def search(
        self, coarse_queries: np.ndarray, full_queries: np.ndarray, k: int, candidates: int, query_filter: Any = None
    ) -> Results:
        """Two-stage search: ``(scores, ids)``, each ``(n_queries, k)``, best first."""
        ...

    def coarse_search(self, coarse_queries: np.ndarray, k: int) -> Results:
        """Stage one alone (coarse vectors only): ``(scores, ids)``, each ``(n_queries, k)``."""
        ...

    def exact_search(self, full_queries: np.ndarray, k: int) -> Results:
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


def stores_prefix_only(backend_cls: type) -> bool:
    """Whether ``backend_cls`` can be created with ``full_dim=0`` (coarse vectors only, see the module docstring)."""
    return bool(getattr(backend_cls, "supports_prefix_only", False))


def reject_query_filter(query_filter: Any | None, backend: str) -> None:
    """A backend that stores no payloads refuses a search with a filter (FAISS, and the device stage over it)."""
    if query_filter is not None:
        raise InputError(f"query_filter: the {backend} backend has no payload filters; use backend='qdrant'")


def add_timings(timings: dict[str, float] | None, **seconds: float) -> None:
    """Add each stage's ``seconds`` to a caller's ``timings`` (None: not asked for); the per-stage timings capability."""
    if timings is not None:
        for stage, value in seconds.items():
            timings[stage] = timings.get(stage, 0.0) + value


def empty_results(n_queries: int, k: int) -> Results:
    """Result arrays with every slot empty (score -inf, id -1)."""
    return (
        np.full((n_queries, k), -np.inf, dtype=np.float32),
        np.full((n_queries, k), EMPTY_ID, dtype=np.int64),
    )


# ---------------------------------------------------------------------- optional capabilities
@runtime_checkable
class TrainableCoarse(Protocol):
    """A coarse index that learns from data before vectors are added (IVF's quantizer)."""

    def train(self, coarse_sample: np.ndarray, n_total: int) -> None:
        """Train on coarse vectors of a sample; ``n_total`` is the corpus size to come (sizes nlist)."""
        ...


@runtime_checkable
class SearchKnob(Protocol):
    """A search-time parameter the calibration chooses together with candidates (IVF's ``nprobe``)."""

    def search_knob(self) -> tuple[str, Sequence[int]] | None:
        """``(name, values)`` with values ascending and the last one exhaustive; None when there is none now."""
        ...

    def set_search_knob(self, value: int) -> None: ...

    def get_search_knob(self) -> int | None: ...

    def search_cost(self, candidates: int, knob: int | None = None) -> float:
        """Relative cost of one query at this setting (to pick the cheapest setting reaching a target)."""
        ...


@runtime_checkable
class StoresIndexMetadata(Protocol):
    """The backend stores the index manifest (and the adaptor's files) with the vectors (Qdrant)."""

    def attach_index_metadata(self, manifest: dict[str, Any], adaptor_files: dict[str, bytes] | None) -> None: ...


@runtime_checkable
class ReportsTimings(Protocol):
    """``search`` accepts ``timings=`` (a dict it adds per-stage seconds to) when ``supports_timings``."""

    supports_timings: bool


@runtime_checkable
class Closeable(Protocol):
    """Holds something to release (a client, a shard and its lock); ``close()`` is idempotent."""

    def close(self) -> None: ...


@runtime_checkable
class PointLookup(Protocol):
    """Maps result handles (the int64 ids a search returns) back to the stored points.

    ``external_ids``: each point's own id (an int, or a UUID string for points a migration did not
    number), None for a handle not stored (such as ``-1``). ``payloads``: each point's payload dict,
    None likewise.
    """

    def external_ids(self, handles: np.ndarray) -> list[int | str | None]: ...

    def payloads(self, handles: np.ndarray) -> list[dict | None]: ...


CAPABILITIES: tuple[type, ...] = (
    TrainableCoarse,
    SearchKnob,
    StoresIndexMetadata,
    ReportsTimings,
    Closeable,
    PointLookup,
)
"""Every optional capability protocol, for introspection (``mindex info``, tests)."""
