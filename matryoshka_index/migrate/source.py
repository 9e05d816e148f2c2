"""Stage 1, reading the source: its config (which vector, what else it carries), and its points.

Every read goes through :func:`scroll` (one ``scroll`` request at a time, with retries), so the
stages share one loop over the collection.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from qdrant_client import QdrantClient
from qdrant_client import models as qm

from ..backends.base import COARSE, FULL
from ..backends.qdrant.collection import metric_of
from ..backends.qdrant.errors import call
from ..backends.qdrant.metadata import (
    COMPANION_SUFFIX,
    META_KEY,
    MIGRATION_KEY,
    MetadataStore,
    is_foreign_id,
    point_handle,
    require_collection,
    vector_params,
)
from ..errors import BackendError, InputError
from .checkpoint import Checkpoint, is_migration_record

log = logging.getLogger(__name__)


@dataclass
class Source:
    """The source collection as the migration sees it."""

    name: str
    info: qm.CollectionInfo
    vector: str | None
    """The adapted vector (None: the single unnamed vector)."""
    params: qm.VectorParams
    metric: str
    others: dict[str, qm.VectorParams]
    """Other dense (and multi) vectors, carried over unchanged in copy mode."""
    sparse: dict[str, qm.SparseVectorParams]
    count: int

    @property
    def with_vector(self) -> Any:
        """``with_vectors=`` that reads the adapted vector alone."""
        return True if self.vector is None else [self.vector]


def scroll(
    client: QdrantClient,
    collection: str,
    endpoint: str,
    *,
    limit: int,
    with_payload: bool = True,
    with_vectors: Any = True,
    offset: Any = None,
    retries: int = 3,
    what: str = "reading points",
) -> Iterator[tuple[list[Any], Any]]:
    """Every page of a collection from ``offset`` on: ``(records, next offset)`` (None after the last)."""
    while True:
        records, offset = call(
            lambda o=offset: client.scroll(
                collection, limit=limit, offset=o, with_payload=with_payload, with_vectors=with_vectors
            ),
            endpoint,
            what,
            retries=retries,
        )
        yield records, offset
        if offset is None:
            return


def vector_of(record: Any, name: str | None) -> Any:
    """The vector ``name`` of a point (None: its unnamed vector), or None when it has none."""
    vec = record.vector
    if isinstance(vec, dict):
        return vec.get("" if name is None else name)
    return vec if name is None else None


def in_place_checkpoint(client: QdrantClient, collection: str, endpoint: str) -> Checkpoint | None:
    """The record of an in-place migration of ``collection`` (None when there is none)."""
    record = MetadataStore(client, collection, endpoint).read(MIGRATION_KEY)
    if not is_migration_record(record) or record.get("mode") != "in_place":  # type: ignore[union-attr]
        return None
    return Checkpoint.from_dict(record)  # type: ignore[arg-type]


def _choose_vector(real: str, params: dict[str, qm.VectorParams], sparse: dict, vector: str | None) -> str | None:
    """The adapted vector's name (None: the unnamed one), or one line saying why there is none to adapt."""
    if "" in params:
        if vector not in (None, ""):
            raise InputError(
                f"vector: collection {real!r} has a single unnamed vector, no vector named {vector!r}; drop --vector"
            )
        return None
    dense = [n for n, p in params.items() if p.multivector_config is None]
    if vector is None:
        if len(dense) != 1:
            what = "no dense vectors" if not dense else f"several named vectors ({', '.join(sorted(dense))})"
            raise InputError(f"vector: collection {real!r} has {what}; choose the one to migrate with --vector NAME")
        vector = dense[0]
    if vector not in params:
        kind = " (a sparse vector; choose a dense one)" if vector in sparse else ""
        have = ", ".join(sorted(params)) or "none"
        raise InputError(f"vector: collection {real!r} has no dense vector named {vector!r}{kind}; it has: {have}")
    if params[vector].multivector_config is not None:
        raise InputError(f"vector: {vector!r} of collection {real!r} is a multivector, which cannot be adapted")
    return vector


def read_source(
    client: QdrantClient, collection: str, vector: str | None, endpoint: str, *, in_place: bool = False
) -> Source:
    """The source's config. ``in_place``: a ``coarse`` vector our own in-place migration added is expected."""
    real = require_collection(client, collection, endpoint)
    if real.endswith(COMPANION_SUFFIX):
        raise InputError(f"collection: {real!r} holds matryoshka-index metadata, not points to migrate")
    info = call(lambda: client.get_collection(real), endpoint, f"reading collection {real!r}", retries=3)
    params = vector_params(info)
    sparse = dict(info.config.params.sparse_vectors or {})
    if getattr(info.config.params, "sharding_method", None) == qm.ShardingMethod.CUSTOM:
        raise InputError(
            f"collection {real!r} uses custom sharding (shard keys), which mindex migrate does not support yet"
        )
    meta = info.config.metadata or {}
    own = in_place_checkpoint(client, real, endpoint) if MIGRATION_KEY in meta or META_KEY in meta else None
    if own is not None and not in_place:
        raise InputError(
            f"collection {real!r} holds an in-place migration (state {own.to_dict()['state']!r}); continue or "
            "re-verify it with --in-place --resume, or undo it with --rollback"
        )
    if own is None and (META_KEY in meta or (COARSE in params and FULL in params)):
        raise InputError(
            f"collection {real!r} already has the matryoshka layout; open it with MatryoshkaIndex.from_qdrant"
        )
    if own is not None:
        if vector is None:
            vector = own.vector
        elif vector != own.vector:
            raise InputError(
                f"vector: the in-place migration of {real!r} adapts vector {own.vector!r}, not {vector!r}; "
                "drop --vector to resume it"
            )
        params = {n: p for n, p in params.items() if n != COARSE}
    chosen = _choose_vector(real, params, sparse, vector)
    vp = params["" if chosen is None else chosen]
    try:
        metric = metric_of(vp.distance)
    except InputError:
        raise InputError(
            f"vector: {chosen or 'the vector'!r} of collection {real!r} uses {vp.distance.value} distance; "
            "matryoshka search ranks by inner product, so only Cosine and Dot collections can be migrated"
        ) from None
    others = {n: p for n, p in params.items() if n not in ("", chosen)}
    clash = sorted(({COARSE} if in_place else {COARSE, FULL}) & (set(others) | set(sparse)))
    if clash:
        raise InputError(
            f"collection {real!r} already has a vector named {', '.join(map(repr, clash))}, which the matryoshka layout "
            "needs for itself; mindex migrate cannot " + ("add its own next to it" if in_place else "carry it over")
        )
    count = int(call(lambda: client.count(real, exact=True), endpoint, "counting points", retries=3).count)
    return Source(real, info, chosen, vp, metric, others, sparse, count)


def _sample(
    client: QdrantClient, collection: str, endpoint: str, n: int, *, with_payload: bool, with_vectors: Any, rounds: int
) -> Iterator[Any]:
    """Points from Qdrant's random sample query, ``n`` at most per round; raises BackendError before 1.11."""
    for _ in range(rounds):
        yield from call(
            lambda: client.query_points(
                collection,
                query=qm.SampleQuery(sample=qm.Sample.RANDOM),
                limit=n,
                with_payload=with_payload,
                with_vectors=with_vectors,
            ),
            endpoint,
            "sampling points",
            retries=3,
        ).points


def sample_vectors(client: QdrantClient, src: Source, n: int, endpoint: str, seed: int) -> np.ndarray:
    """Up to ``n`` of the source's vectors to train on, drawn at random (Qdrant's random sample query)."""
    rows: dict[Any, Any] = {}
    if n < src.count // 2:
        try:
            for _ in range(4 * (n // 1000 + 1) + 10):
                if len(rows) >= n:
                    break
                for p in _sample(
                    client, src.name, endpoint, min(2000, n - len(rows)), with_payload=False,
                    with_vectors=src.with_vector, rounds=1,
                ):  # fmt: skip
                    v = vector_of(p, src.vector)
                    if v is not None:
                        rows[p.id] = v
        except BackendError as exc:  # servers before 1.11 have no random sampling
            log.warning("random sampling failed (%s); trained on the first points by id instead", exc)
            rows = {}
    if not rows:
        scan_all = n >= src.count // 2
        for records, _ in scroll(
            client, src.name, endpoint, limit=2048, with_payload=False, with_vectors=src.with_vector,
            what="reading vectors",
        ):  # fmt: skip
            rows.update((r.id, v) for r in records if (v := vector_of(r, src.vector)) is not None)
            if not scan_all and len(rows) >= n:
                break
    x = np.asarray(list(rows.values()), dtype=np.float32).reshape(-1, src.params.size)
    if len(x) > n:
        x = x[np.sort(np.random.default_rng(seed).choice(len(x), size=n, replace=False))]
    return x


def random_points(client: QdrantClient, collection: str, n: int, endpoint: str, seed: int | None = None) -> list[Any]:
    """About ``n`` distinct random points with payloads and vectors.

    With ``seed`` (or where the server has no random sampling) they are drawn reproducibly from the
    ids instead: the seeded choice among every id of the collection (one ids-only scan).
    """
    seen: dict[Any, Any] = {}
    if seed is None:
        try:
            for p in _sample(
                client, collection, endpoint, min(500, n), with_payload=True, with_vectors=True,
                rounds=3 * (n // 500 + 1) + 5,
            ):  # fmt: skip
                seen.setdefault(p.id, p)
                if len(seen) >= n:
                    break
        except BackendError:
            seen = {}
    if not seen and seed is None:
        records, _ = next(scroll(client, collection, endpoint, limit=n))
        seen = {r.id: r for r in records}
    elif not seen:
        ids = [r.id for records, _ in scroll(client, collection, endpoint, limit=4096, with_payload=False,
                                             with_vectors=False, what="listing ids") for r in records]  # fmt: skip
        chosen = np.random.default_rng(seed).choice(len(ids), size=min(n, len(ids)), replace=False) if ids else []
        seen = retrieve(client, collection, [ids[i] for i in sorted(chosen)], endpoint)
    return list(seen.values())[:n]


def retrieve(client: QdrantClient, collection: str, ids: list[Any], endpoint: str) -> dict[Any, Any]:
    """The points with these ids (payloads and vectors), by id; absent ones are left out."""
    out: dict[Any, Any] = {}
    for start in range(0, len(ids), 256):
        chunk = ids[start : start + 256]
        got = call(
            lambda c=chunk: client.retrieve(collection, c, with_payload=True, with_vectors=True),
            endpoint,
            "reading points back",
            retries=3,
        )
        out.update((p.id, p) for p in got)
    return out


def scan_handles(client: QdrantClient, collection: str, endpoint: str) -> tuple[int, dict[str, int]]:
    """Every id once: (int64 handles shared by two ids, {"int": n, "foreign": n}); handles must be unique
    for the int64 view of the index."""
    handles = []
    n_foreign = 0
    for records, _ in scroll(
        client, collection, endpoint, limit=4096, with_payload=False, with_vectors=False, what="listing ids"
    ):
        for r in records:
            handles.append(point_handle(r.id))
            n_foreign += is_foreign_id(r.id)
    collisions = len(handles) - len(np.unique(np.asarray(handles, dtype=np.int64)))
    return collisions, {"int": len(handles) - n_foreign, "foreign": n_foreign}


__all__ = [
    "Source",
    "in_place_checkpoint",
    "random_points",
    "read_source",
    "retrieve",
    "sample_vectors",
    "scan_handles",
    "scroll",
    "vector_of",
]
