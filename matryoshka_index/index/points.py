"""Results a user can use: hits with the points' own ids and payloads, and the payloads a FAISS index keeps.

``MatryoshkaIndex.search`` returns arrays of int64 *handles* (fast, for numeric work).
``MatryoshkaIndex.query`` turns them into :class:`Hit` objects, named as qdrant-client names its
``ScoredPoint`` fields (``id``, ``score``, ``payload``):

* on a backend that maps handles back to its points (:class:`~matryoshka_index.backends.base.PointLookup`,
  the Qdrant backends), ``id`` is the point's own id, an int or a UUID string exactly as stored, and
  ``payload`` its payload;
* on FAISS, which stores vectors only, the ids are the int64 ids of the index and the payloads are
  the ones given to ``build``/``add`` (``payloads=``, one JSON-serialisable dict or None per row), kept
  by the index itself in a :class:`PayloadStore` and saved as ``payloads.jsonl`` beside the backend's
  files (inside the atomic save, checksummed by the manifest like every file).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..backends.base import EMPTY_ID, PointLookup
from ..errors import FormatError, InputError

__all__ = ["PAYLOADS_FILE", "Hit", "PayloadStore", "index_keeps_payloads", "maps_points", "store_vectors", "to_hits"]

PAYLOADS_FILE = "payloads.jsonl"
# Backends that store no payloads themselves: the index keeps them (by backend kind, since the
# backends' protocol has no capability for "stores payloads" yet; Qdrant's stores them natively).
_INDEX_KEEPS_PAYLOADS = frozenset({"faiss"})


def index_keeps_payloads(backend: Any) -> bool:
    """Whether the index keeps the payloads of this backend (or backend class) itself."""
    return backend.kind in _INDEX_KEEPS_PAYLOADS


def maps_points(backend: Any) -> bool:
    """Whether ``to_hits`` can give this backend's results their stored ids (and payloads)."""
    return isinstance(backend, PointLookup) or index_keeps_payloads(backend)


def store_vectors(
    backend: Any,
    payload_store: PayloadStore,
    ids: np.ndarray,
    coarse: np.ndarray,
    full: np.ndarray,
    payloads: list[dict[str, Any] | None] | None,
) -> None:
    """Hand prepared vectors to the backend; their payloads too, or to the index's own store (FAISS)."""
    if payloads is not None and index_keeps_payloads(backend):
        backend.add(ids, coarse, full, None)
        payload_store.set(ids, payloads)
    else:
        backend.add(ids, coarse, full, payloads)


@dataclass(frozen=True)
class Hit:
    """One result: the point's own ``id`` (int, or UUID string), its full-dim ``score``, its ``payload``
    (None unless asked for with ``with_payload=True``, or when the point has none)."""

    id: int | str
    score: float
    payload: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "score": self.score, "payload": self.payload}


class PayloadStore:
    """Payload dicts by int64 id, for backends that keep none (FAISS)."""

    def __init__(self) -> None:
        self._by_id: dict[int, dict[str, Any]] = {}

    def __len__(self) -> int:
        return len(self._by_id)

    @staticmethod
    def check(payloads: Sequence[Any], name: str = "payloads") -> list[dict[str, Any] | None]:
        """Each entry a JSON-serialisable dict or None; a copy made through JSON (what a reload gives)."""
        out: list[dict[str, Any] | None] = []
        for i, p in enumerate(payloads):
            if p is None:
                out.append(None)
                continue
            if not isinstance(p, dict):
                raise InputError(f"{name}: entry {i} is a {type(p).__name__}; give a dict (or None) per row")
            try:
                out.append(json.loads(json.dumps(p, allow_nan=False)))
            except (TypeError, ValueError) as exc:
                raise InputError(
                    f"{name}: entry {i} is not JSON-serialisable ({exc}); use str/int/float/bool/list/dict"
                ) from None
        return out

    def set(self, ids: np.ndarray, payloads: Sequence[dict[str, Any] | None]) -> None:
        for i, p in zip(np.asarray(ids).tolist(), payloads, strict=True):
            if p is None:
                self._by_id.pop(int(i), None)
            else:
                self._by_id[int(i)] = p

    def remove(self, ids: Iterable[int]) -> None:
        for i in ids:
            self._by_id.pop(int(i), None)

    def get(self, ids: Iterable[int]) -> list[dict[str, Any] | None]:
        return [self._by_id.get(int(i)) for i in ids]

    def save(self, directory: Path) -> str | None:
        """Write ``payloads.jsonl`` (``{"id": ..., "payload": {...}}`` a line, by id) into ``directory``
        (the temporary directory of an atomic save); nothing when there are no payloads."""
        if not self._by_id:
            return None
        lines = (json.dumps({"id": i, "payload": self._by_id[i]}, sort_keys=True) for i in sorted(self._by_id))
        (Path(directory) / PAYLOADS_FILE).write_text("\n".join(lines) + "\n")
        return PAYLOADS_FILE

    @classmethod
    def load(cls, path: Path) -> PayloadStore:
        store = cls()
        try:
            lines = path.read_text().splitlines()
        except OSError as exc:
            raise FormatError(f"{path}: unreadable ({exc})") from None
        for n, line in enumerate(lines, 1):
            if not line:
                continue
            try:
                row = json.loads(line)
                store._by_id[int(row["id"])] = dict(row["payload"])
            except (ValueError, KeyError, TypeError) as exc:
                raise FormatError(f"{path}: line {n} is not a payload record ({exc}); the index is corrupt") from None
        return store


def to_hits(
    backend: Any, store: PayloadStore, scores: np.ndarray, handles: np.ndarray, *, with_payload: bool
) -> list[list[Hit]]:
    """Per query, its hits best first (empty result slots dropped), ids and payloads as stored."""
    keep = handles != EMPTY_ID
    flat = handles[keep]
    if isinstance(backend, PointLookup):
        ids: list[Any] = list(backend.external_ids(flat))
        payloads = list(backend.payloads(flat)) if with_payload else [None] * len(ids)
    elif maps_points(backend):
        ids = [int(h) for h in flat]
        payloads = store.get(ids) if with_payload else [None] * len(ids)
    else:
        raise InputError(
            f"query: the {backend.kind} backend of this version cannot map results to its points' "
            "own ids and payloads; use search() (int64 handles) instead"
        )
    out: list[list[Hit]] = []
    pos = 0
    for row in range(len(handles)):
        n = int(keep[row].sum())
        out.append(
            [
                Hit(id=ids[pos + j], score=float(s), payload=payloads[pos + j])
                for j, s in enumerate(scores[row][keep[row]])
            ]
        )
        pos += n
    return out
