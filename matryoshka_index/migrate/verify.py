"""Stage 7, verification: does the target hold exactly what the source holds, and how good is the search?

Copy mode compares the target with the source point by point (a random sample, or every point with
``verify="full"``): payloads equal, Dot and sparse vectors identical, Cosine vectors within
``FULL_VECTOR_TOLERANCE`` (Qdrant normalises them again on upsert). In place nothing is rewritten,
so the fingerprints taken before must be unchanged bit for bit. Both modes then measure recall@10
of matryoshka search against exact full-dimension search, with sampled points as queries. A
prefix-only copy has no full vector to compare: its ``coarse`` is compared with the prefix recomputed
from the source's vector, and no point or config may hold a ``full`` vector.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import numpy as np
from qdrant_client import QdrantClient
from qdrant_client import models as qm

from ..backends.base import COARSE, FULL
from ..backends.qdrant.connection import is_local_client
from ..backends.qdrant.errors import call
from ..backends.qdrant.metadata import point_handle, vector_params
from ..backends.qdrant.server import QdrantBackend
from ..progress import progress
from .adapting import coarse_vectors
from .checkpoint import Checkpoint
from .fingerprint import digest_payload, digest_vectors, full_digest, id_key, id_of
from .reports import VerificationResult
from .source import Source, random_points, retrieve, scan_handles, scroll, vector_of

FULL_VECTOR_TOLERANCE = 1e-6
PREFIX_TOLERANCE = 1e-5
"""A prefix-only target's ``coarse`` against the prefix recomputed at verification: float32 matmuls of
other batch shapes, then Qdrant's own normalisation of a Cosine vector, differ in the last bits."""
_EXAMPLES = 10

log = logging.getLogger(__name__)


def _count(client: QdrantClient, collection: str, endpoint: str, count_filter: qm.Filter | None = None) -> int:
    got = call(lambda: client.count(collection, count_filter=count_filter, exact=True), endpoint, "counting", retries=3)
    return int(got.count)


def _result(mode: str, before: int, now: int, candidates: int, tolerance: float) -> VerificationResult:
    return VerificationResult(
        mode=mode,
        source_count=before,
        target_count=now,
        counts_equal=before == now,
        checked=0,
        missing=0,
        payload_mismatches=0,
        vector_mismatches=0,
        max_full_vector_diff=0.0,
        full_vector_tolerance=tolerance,
        id_handle_collisions=0,
        recall_at_10=None,
        recall_queries=0,
        candidates=candidates,
    )


def _example(result: VerificationResult, text: str) -> None:
    if len(result.examples) < _EXAMPLES:
        result.examples.append(text)


def same_vector(a: Any, b: Any, tolerance: float) -> tuple[bool, float]:
    """(equal within ``tolerance`` per component, the largest difference); sparse vectors must be identical."""
    if a is None or b is None:
        return a is None and b is None, 0.0
    if isinstance(a, qm.SparseVector) or isinstance(b, qm.SparseVector):
        if not (isinstance(a, qm.SparseVector) and isinstance(b, qm.SparseVector)):
            return False, float("inf")
        order_a, order_b = np.argsort(a.indices), np.argsort(b.indices)
        same = np.array_equal(np.asarray(a.indices)[order_a], np.asarray(b.indices)[order_b]) and np.array_equal(
            np.asarray(a.values, np.float32)[order_a], np.asarray(b.values, np.float32)[order_b]
        )
        return bool(same), 0.0 if same else float("inf")
    x, y = np.asarray(a, dtype=np.float32), np.asarray(b, dtype=np.float32)
    if x.shape != y.shape:
        return False, float("inf")
    diff = float(np.abs(x - y).max()) if x.size else 0.0
    return diff <= tolerance, diff


def _present_points(
    src_points: list[Any], target_by_id: dict[Any, Any], result: VerificationResult
) -> Iterator[tuple[Any, dict[str, Any]]]:
    """Each source point the target holds, with the target's named vectors; counts the missing ones and
    the payloads that differ on the way."""
    for p in src_points:
        result.checked += 1
        t = target_by_id.get(p.id)
        if t is None:
            result.missing += 1
            _example(result, f"point {p.id!r} is missing from the target")
            continue
        if (p.payload or {}) != (t.payload or {}):
            result.payload_mismatches += 1
            _example(result, f"point {p.id!r}: payload differs")
        yield p, (t.vector if isinstance(t.vector, dict) else {})


def _compare(src_points: list[Any], target_by_id: dict[Any, Any], src: Source, result: VerificationResult) -> None:
    full_tol = FULL_VECTOR_TOLERANCE if src.metric == "cosine" else 0.0
    for p, tvec in _present_points(src_points, target_by_id, result):
        ok, diff = same_vector(vector_of(p, src.vector), tvec.get(FULL), full_tol)
        if np.isfinite(diff):
            result.max_full_vector_diff = max(result.max_full_vector_diff, diff)
        bad = [] if ok else ["full"]
        if (tvec.get(COARSE) is None) != (tvec.get(FULL) is None):
            bad.append("coarse")
        bad += other_vectors_that_differ(src, p, tvec)
        if bad:
            result.vector_mismatches += 1
            _example(result, f"point {p.id!r}: vector(s) {', '.join(bad)} differ")


def other_vectors_that_differ(src: Source, point: Any, target_vectors: dict[str, Any]) -> list[str]:
    """Names of the source's other named and sparse vectors that the target's copy of ``point`` changed."""
    source_vectors = point.vector if isinstance(point.vector, dict) else {}
    bad = []
    for name in list(src.others) + list(src.sparse):
        other = src.others.get(name)
        tol = FULL_VECTOR_TOLERANCE if other is not None and other.distance == qm.Distance.COSINE else 0.0
        if not same_vector(source_vectors.get(name), target_vectors.get(name), tol)[0]:
            bad.append(name)
    return bad


def verify_copy(
    client: QdrantClient,
    src: Source,
    target: str,
    endpoint: str,
    *,
    mode: str,
    sample: int,
    seed: int | None,
    quiet: bool,
) -> tuple[VerificationResult, list[Any]]:
    """Copy mode: counts, then sampled (or every) points compared; returns the result and the sampled points."""
    before, now = _count(client, src.name, endpoint), _count(client, target, endpoint)
    tolerance = FULL_VECTOR_TOLERANCE if src.metric == "cosine" else 0.0
    result = _result(mode, before, now, 0, tolerance)
    if not result.counts_equal:
        result.examples.append(f"source has {before:,} points, target {now:,}")
    sampled = random_points(client, src.name, min(sample, max(before, 1)), endpoint, seed)
    if mode == "full":
        with progress(total=before, desc="verifying", unit="pt", quiet=quiet) as bar:
            for records, _ in scroll(client, src.name, endpoint, limit=256):
                _compare(records, retrieve(client, target, [r.id for r in records], endpoint), src, result)
                bar.update(len(records))
    else:
        _compare(sampled, retrieve(client, target, [p.id for p in sampled], endpoint), src, result)
    return result, sampled


def verify_in_place(
    client: QdrantClient,
    src: Source,
    endpoint: str,
    check: dict[str, Any],
    checkpoint: Checkpoint,
    *,
    mode: str,
    quiet: bool,
) -> tuple[VerificationResult, list[Any]]:
    """In place: nothing but ``coarse`` changed, and every point with the vector has ``coarse``."""
    now = _count(client, src.name, endpoint)
    before = int(check.get("count", checkpoint.source_count))
    result = _result(mode, before, now, 0, 0.0)
    if not result.counts_equal:
        result.examples.append(f"the collection had {before:,} points before the migration and has {now:,} now")
    with_coarse = _count(client, src.name, endpoint, qm.Filter(must=[qm.HasVectorCondition(has_vector=COARSE)]))
    expected = now - checkpoint.points_without_vector
    result.coarse_missing = abs(expected - with_coarse)
    if result.coarse_missing:
        result.examples.append(
            f"{with_coarse:,} points have 'coarse' but {expected:,} have the {src.vector or 'unnamed'!r} vector "
            "(points written during the migration?)"
        )
    wanted = {key: (pd, vd) for key, pd, vd in check.get("sample") or []}
    points = retrieve(client, src.name, [id_of(k) for k in wanted], endpoint)
    by_key = {id_key(pid): p for pid, p in points.items()}
    for key, (pd, vd) in wanted.items():
        result.checked += 1
        p = by_key.get(key)
        if p is None:
            result.missing += 1
            _example(result, f"point {id_of(key)!r} is gone")
            continue
        if digest_payload(p).hex() != pd:
            result.payload_mismatches += 1
            _example(result, f"point {p.id!r}: payload changed")
        if digest_vectors(p).hex() != vd:
            result.vector_mismatches += 1
            _example(result, f"point {p.id!r}: a vector other than 'coarse' changed")
    if mode == "full":
        if check.get("full"):
            after = full_digest(client, src, endpoint, quiet, "verifying")
            result.full_digest_equal = after == check["full"]
            if not result.full_digest_equal:
                what = [k for k in ("count", "payloads", "vectors") if after[k] != check["full"][k]]
                result.examples.append(
                    f"the digest of every point differs from before the migration ({', '.join(what)})"
                )
        else:
            log.warning(
                "verify='full' needs the digest taken before the migration started, and this migration began with "
                "verify='sample'; the sampled points were compared"
            )
    return result, list(points.values())


def _compare_prefix_only(
    src_points: list[Any], target_by_id: dict[Any, Any], src: Source, adaptor: Any, dim: int, result: VerificationResult
) -> None:
    """Payloads, other vectors, ``coarse`` against the recomputed prefix, and no ``full`` on any point."""
    with_vec = [(p, v) for p in src_points if (v := vector_of(p, src.vector)) is not None]
    expected = {}
    if with_vec:
        prefixes = coarse_vectors(adaptor, np.asarray([v for _, v in with_vec], np.float32), dim, src.metric)
        expected = {p.id: c for (p, _), c in zip(with_vec, prefixes, strict=True)}
    for p, tvec in _present_points(src_points, target_by_id, result):
        bad = []
        if FULL in tvec:
            bad.append("full (must be absent)")
            result.full_vector_absent = False
        ok, diff = same_vector(
            None if p.id not in expected else expected[p.id].tolist(), tvec.get(COARSE), PREFIX_TOLERANCE
        )
        if np.isfinite(diff):
            result.max_full_vector_diff = max(result.max_full_vector_diff, diff)
        if not ok:
            bad.append("coarse")
        bad += other_vectors_that_differ(src, p, tvec)
        if bad:
            result.vector_mismatches += 1
            _example(result, f"point {p.id!r}: vector(s) {', '.join(bad)} differ")


class PrefixTarget(Protocol):
    """What :func:`verify_prefix_only` reads of a target: a collection (:class:`CollectionTarget`) or a
    qdrant-edge shard (:mod:`.prefix_only_edge`)."""

    def count(self) -> int: ...

    def dense_vector_names(self) -> set[str]: ...

    def retrieve(self, ids: list[Any]) -> dict[Any, Any]: ...


class CollectionTarget:
    """A target collection read through qdrant-client."""

    def __init__(self, client: QdrantClient, collection: str, endpoint: str) -> None:
        self.client, self.collection, self.endpoint = client, collection, endpoint

    def count(self) -> int:
        return _count(self.client, self.collection, self.endpoint)

    def dense_vector_names(self) -> set[str]:
        info = call(lambda: self.client.get_collection(self.collection), self.endpoint, "reading the target", retries=3)
        return set(vector_params(info))

    def retrieve(self, ids: list[Any]) -> dict[Any, Any]:
        return retrieve(self.client, self.collection, ids, self.endpoint)


def verify_prefix_only(
    client: QdrantClient,
    src: Source,
    target: str,
    endpoint: str,
    adaptor: Any,
    coarse_dim: int,
    *,
    mode: str,
    sample: int,
    seed: int | None,
    quiet: bool,
    reader: PrefixTarget | None = None,
) -> tuple[VerificationResult, list[Any]]:
    """A prefix-only copy: counts, no vector in the target's config but ``coarse`` and the carried ones,
    then sampled (or every) points compared; returns the result and the sampled points. ``reader``:
    how the target is read (default: collection ``target`` through ``client``)."""
    reader = reader if reader is not None else CollectionTarget(client, target, endpoint)
    before, now = _count(client, src.name, endpoint), reader.count()
    result = _result(mode, before, now, 0, PREFIX_TOLERANCE)
    result.full_vector_absent = True
    if not result.counts_equal:
        result.examples.append(f"source has {before:,} points, target {now:,}")
    extra = {name for name in reader.dense_vector_names() if name not in src.others and name != COARSE}
    if extra:
        result.full_vector_absent = False
        result.examples.append(f"the target's config has vector(s) {', '.join(sorted(extra))} beside coarse")
    sampled = random_points(client, src.name, min(sample, max(before, 1)), endpoint, seed)
    if mode == "full":
        with progress(total=before, desc="verifying", unit="pt", quiet=quiet) as bar:
            for records, _ in scroll(client, src.name, endpoint, limit=256):
                got = reader.retrieve([r.id for r in records])
                _compare_prefix_only(records, got, src, adaptor, coarse_dim, result)
                bar.update(len(records))
    else:
        got = reader.retrieve([p.id for p in sampled])
        _compare_prefix_only(sampled, got, src, adaptor, coarse_dim, result)
    return result, sampled


def finish_verification(
    client: QdrantClient,
    src: Source,
    collection: str,
    endpoint: str,
    adaptor: Any,
    coarse_dim: int,
    result: VerificationResult,
    sampled: list[Any],
    *,
    recall_queries: int,
    candidates: int,
    full_vector: str | None,
    scan: Callable[[], tuple[int, dict[str, int]]] | None = None,
) -> dict[str, int]:
    """What both modes measure last: int64 handles shared by two ids, and recall@10; returns the id counts.
    ``scan``: how the target's ids are listed (default :func:`~.source.scan_handles` of ``collection``)."""
    result.candidates = candidates
    result.id_handle_collisions, ids_info = scan() if scan is not None else scan_handles(client, collection, endpoint)
    _measure_recall(
        client, src, collection, adaptor, coarse_dim, sampled, result, recall_queries, candidates, full_vector
    )
    if result.id_handle_collisions:
        log.warning(
            "%d point ids share an int64 handle in MatryoshkaIndex's view (search_points() still returns the exact ids)",
            result.id_handle_collisions,
        )
    return ids_info


def _measure_recall(
    client: QdrantClient,
    src: Source,
    collection: str,
    adaptor: Any,
    coarse_dim: int,
    sampled: list[Any],
    result: VerificationResult,
    recall_queries: int,
    candidates: int,
    full_vector: str | None = None,
) -> None:
    """recall@10 of matryoshka search against exact full-dim search, the sampled points as queries."""
    queries = [(p.id, vector_of(p, src.vector)) for p in sampled]
    queries = [(pid, v) for pid, v in queries if v is not None and np.any(v)][:recall_queries]
    if not queries or result.target_count <= 1:
        return
    q = np.asarray([v for _, v in queries], dtype=np.float32)
    if src.metric == "cosine":
        q /= np.linalg.norm(q, axis=1, keepdims=True)
    k = min(11, result.target_count)
    cq = coarse_vectors(adaptor, q, coarse_dim, src.metric)
    if full_vector is not None and is_local_client(client) and src.metric == "cosine":
        # qdrant-client local mode normalises the stored vectors *in place* on every Cosine search
        # (local/distances.py, cosine_similarity), which changes the last bit of some of them: the
        # user's own vectors must not be touched, so local mode measures with numpy instead
        found, truth = _numpy_two_stage(client, collection, full_vector, cq, q, k, candidates)
    else:
        backend = QdrantBackend.from_collection(client, collection, full_vector=full_vector)
        _, found = backend.search(cq, q, k, candidates)
        _, truth = backend.exact_search(q, k)
    hits = 0.0
    for (pid, _), f_row, t_row in zip(queries, found, truth, strict=True):
        own = point_handle(pid)  # the query point itself is trivially found: leave it out of both lists
        f = [i for i in f_row.tolist() if i != own and i >= 0][:10]
        t = [i for i in t_row.tolist() if i != own and i >= 0][:10]
        hits += len(set(f) & set(t)) / max(1, len(t))
    result.recall_at_10 = hits / len(queries)
    result.recall_queries = len(queries)


def _numpy_two_stage(
    client: QdrantClient,
    collection: str,
    full_vector: str,
    coarse_q: np.ndarray,
    q: np.ndarray,
    k: int,
    candidates: int,
) -> tuple[np.ndarray, np.ndarray]:
    """(two-stage ids, exact ids) by numpy over every point's vectors: local mode only (small by nature)."""
    handles: list[int] = []
    coarse_rows: list[Any] = []
    full_rows: list[Any] = []
    for records, _ in scroll(
        client, collection, "local mode", limit=1024, with_payload=False, with_vectors=[COARSE, full_vector]
    ):
        for r in records:
            vec = r.vector if isinstance(r.vector, dict) else {}
            if vec.get(COARSE) is not None and vec.get(full_vector) is not None:
                handles.append(point_handle(r.id))
                coarse_rows.append(vec[COARSE])
                full_rows.append(vec[full_vector])
    ids = np.asarray(handles, dtype=np.int64)
    coarse = np.asarray(coarse_rows, dtype=np.float32).reshape(len(ids), -1)
    full = np.asarray(full_rows, dtype=np.float32).reshape(len(ids), -1)
    k = min(k, len(ids))
    exact = np.argsort(-(q @ full.T), axis=1, kind="stable")[:, :k]
    cand = np.argsort(-(coarse_q @ coarse.T), axis=1, kind="stable")[:, : max(candidates, k)]
    rerank = np.take_along_axis(q @ full.T, cand, axis=1)
    two_stage = np.take_along_axis(cand, np.argsort(-rerank, axis=1, kind="stable")[:, :k], axis=1)
    return ids[two_stage], ids[exact]


__all__ = [
    "FULL_VECTOR_TOLERANCE",
    "PREFIX_TOLERANCE",
    "CollectionTarget",
    "PrefixTarget",
    "finish_verification",
    "same_vector",
    "verify_copy",
    "verify_in_place",
    "verify_prefix_only",
]
