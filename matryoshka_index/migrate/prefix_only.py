"""Prefix-only copy mode (``mindex migrate --prefix-only --dim M``): the target keeps the adapted prefix alone.

The target gets the source's other named and sparse vectors, its payloads and every point with its
id, plus ``coarse`` (the ``M``-dim adapted prefix); there is no ``full`` vector, so the migrated vector
itself is given up for good (the source is never modified: it still has it). Everything else is copy
mode's: checkpoints in the target's metadata, ``--resume``, the alias switched only after verification.

What it keeps is measured **at plan time**, before anything is written (a dry run too; it therefore
trains the adaptor when none is given): on the user's labelled sample when given (query embeddings
with BEIR qrels whose corpus ids are the point ids), nDCG@10 of the prefix alone, beside the
full-dimension nDCG@10 of the same queries; else recall@10 of the prefix alone against exact
full-dimension search, sampled points as queries (the point itself left out of both lists). The
corpus is every point when the collection has at most ``sample`` of them (the prediction is then
exact up to the target's own search), else the first ``sample`` points by id (an estimate, said so).

Verification, with no full vector to compare: counts; the sampled (or every) point's payload, other
vectors, and ``coarse`` against the prefix recomputed from the source's vector; that the target's
config has no ``full`` vector and no point carries one; and the same quality metric on the target's
own search for the plan's queries, beside the prediction.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from qdrant_client import QdrantClient
from qdrant_client import models as qm

from ..backends.base import COARSE
from ..backends.qdrant.connection import is_local_client
from ..backends.qdrant.errors import call
from ..errors import InputError
from ..metrics import ndcg_at_k
from ..progress import progress
from ..storage import human_bytes, load_vectors
from ..validation import check_embeddings
from .adapting import coarse_vectors
from .checkpoint import Checkpoint
from .context import Run
from .modes import CopyMode
from .plan import value_bytes
from .reports import VerificationResult
from .source import random_points, retrieve, scroll, vector_of
from .verify import PrefixTarget, verify_prefix_only

K = 10
_PAGE = 2048


# ---------------------------------------------------------------------------------- labelled sample
@dataclass
class LabelledSample:
    """The user's labelled queries: embeddings, their ids, and qrels whose corpus ids are point ids."""

    queries: np.ndarray
    query_ids: list[str]
    qrels: dict[str, dict[str, float]]

    @classmethod
    def load(cls, queries: Any, qrels: Any, query_ids: Any = None) -> LabelledSample:
        """From arrays or files (``queries.npy`` / ``.fvecs``; a BEIR qrels TSV or ``{query: {doc: rel}}``;
        query ids as a list, a JSON list or one id a line, default the row numbers ``"0"``, ``"1"``, ...)."""
        from ..quality.data import check_string_ids, read_ids, read_qrels

        if queries is None or qrels is None:
            raise InputError("qrels: a labelled sample needs both queries (their embeddings) and qrels")
        q = load_vectors(queries) if isinstance(queries, (str, os.PathLike)) else queries
        q = check_embeddings(q, "queries")
        if query_ids is None:
            ids = [str(i) for i in range(len(q))]
        else:
            ids = read_ids(query_ids, "query_ids") if isinstance(query_ids, (str, os.PathLike)) else list(query_ids)
        ids = check_string_ids(ids, len(q), "query_ids")
        judged = read_qrels(qrels, "qrels") if isinstance(qrels, (str, os.PathLike)) else qrels
        if not isinstance(judged, Mapping):
            raise InputError("qrels: expected a qrels file path or a mapping {query_id: {point_id: relevance}}")
        known = set(ids)
        out = {str(k): {str(d): float(r) for d, r in v.items()} for k, v in judged.items() if str(k) in known}
        if not any(r > 0 for docs in out.values() for r in docs.values()):
            raise InputError(
                "qrels: no judged query is among the query ids (default: row numbers 0, 1, ...); give --query-ids"
            )
        return cls(np.asarray(q, dtype=np.float32), ids, out)

    def judged_docs(self) -> set[str]:
        return {d for docs in self.qrels.values() for d, r in docs.items() if r > 0}


def _point_id(text: str) -> int | str:
    """A qrels corpus id as a Qdrant point id (an unsigned int, else the UUID string as given)."""
    return int(text) if text.isdigit() else text


# ---------------------------------------------------------------------------------- ranking
class _TopK:
    """Running top-``k`` (by score, ties by arrival) of each query over pages of points."""

    def __init__(self, n_queries: int, k: int) -> None:
        self.k = k
        self.scores = np.full((n_queries, 0), -np.inf, dtype=np.float32)
        self.rows = np.zeros((n_queries, 0), dtype=np.int64)

    def push(self, scores: np.ndarray, first_row: int) -> None:
        rows = np.broadcast_to(np.arange(first_row, first_row + scores.shape[1]), scores.shape)
        all_s = np.concatenate([self.scores, scores.astype(np.float32)], axis=1)
        all_r = np.concatenate([self.rows, rows], axis=1)
        order = np.argsort(-all_s, axis=1, kind="stable")[:, : self.k]
        self.scores = np.take_along_axis(all_s, order, axis=1)
        self.rows = np.take_along_axis(all_r, order, axis=1)


def _unit(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)


@dataclass
class QualityQueries:
    """The queries the plan measured and the verification measures again on the target."""

    metric: str
    """``"ndcg@10"`` (a labelled sample) or ``"recall@10"`` (against exact full-dim search)."""
    queries: np.ndarray
    """Full-dimension query vectors (unit length for Cosine)."""
    labels: list[Any]
    """Recall: each query's own point id (left out of its results); nDCG: the query ids."""
    qrels: dict[str, dict[str, float]] | None
    truth: list[list[str]] | None = None
    """Recall: each query's exact full-dim top 10 (point ids as text), over the scanned corpus."""
    exhaustive: bool = False


def _queries(run: Run) -> QualityQueries:
    src, opts = run.src, run.opts
    labelled: LabelledSample | None = opts.labelled
    if labelled is not None:
        if labelled.queries.shape[1] != src.params.size:
            raise InputError(
                f"queries: have {labelled.queries.shape[1]} dims but the collection's vector has {src.params.size}; "
                "give query embeddings of the same model"
            )
        q = labelled.queries
        return QualityQueries("ndcg@10", _unit(q) if src.metric == "cosine" else q, labelled.query_ids, labelled.qrels)
    seed = opts.verify_seed if opts.verify_seed is not None else opts.seed
    points = random_points(run.client, src.name, max(1, opts.recall_queries), run.endpoint, seed)
    chosen = [(p.id, v) for p in points if (v := vector_of(p, src.vector)) is not None and np.any(v)]
    chosen = chosen[: opts.recall_queries]
    q = np.asarray([v for _, v in chosen], dtype=np.float32).reshape(-1, src.params.size)
    return QualityQueries("recall@10", _unit(q) if src.metric == "cosine" else q, [pid for pid, _ in chosen], None)


def _score_metric(qq: QualityQueries, ranked: list[list[str]]) -> float:
    """The metric of rankings ``ranked`` (point ids as text, best first), one list per query."""
    if qq.metric == "ndcg@10":
        return float(ndcg_at_k(ranked, [str(x) for x in qq.labels], qq.qrels or {}, K))
    assert qq.truth is not None
    hits = [len(set(f[:K]) & set(t[:K])) / max(1, len(t[:K])) for f, t in zip(ranked, qq.truth, strict=True)]
    return float(np.mean(hits)) if hits else float("nan")


def _drop_self(qq: QualityQueries, ranked: list[list[str]]) -> list[list[str]]:
    if qq.metric == "ndcg@10":
        return [r[:K] for r in ranked]
    return [[d for d in r if d != str(own)][:K] for r, own in zip(ranked, qq.labels, strict=True)]


def plan_quality(run: Run, adaptor: Any) -> tuple[QualityQueries, dict[str, Any]]:
    """What the prefix alone keeps, measured on the source before anything is written (see the module
    docstring): the queries (kept for the verification) and the plan's record."""
    src, opts, dim = run.src, run.opts, run.coarse_dim
    qq = _queries(run)
    if not len(qq.queries):
        return qq, {"metric": qq.metric, "predicted": None, "queries": 0, "note": "no query could be drawn"}
    limit = opts.sample
    qq.exhaustive = src.count <= limit
    cq = coarse_vectors(adaptor, qq.queries, dim, src.metric, queries=qq.qrels is not None)  # else stored points
    depth = K + (qq.metric == "recall@10")  # room for the query point itself
    full_top, prefix_top = _TopK(len(cq), depth), _TopK(len(cq), depth)
    ids: list[str] = []
    wanted = set() if qq.qrels is None else {d for docs in qq.qrels.values() for d, r in docs.items() if r > 0}

    def take(records: list[Any]) -> None:
        rows = [(str(r.id), v) for r in records if (v := vector_of(r, src.vector)) is not None]
        if not rows:
            return
        x = np.asarray([v for _, v in rows], dtype=np.float32)
        full = _unit(x) if src.metric == "cosine" else x
        start = len(ids)
        ids.extend(pid for pid, _ in rows)
        full_top.push(qq.queries @ full.T, start)
        prefix_top.push(cq @ coarse_vectors(adaptor, x, dim, src.metric).T, start)

    desc = "measuring the prefix's quality"
    with progress(total=min(src.count, limit), desc=desc, unit="pt", quiet=opts.quiet) as bar:
        for records, _ in scroll(
            run.client, src.name, run.endpoint, limit=_PAGE, with_payload=False, with_vectors=src.with_vector,
            what="reading vectors",
        ):  # fmt: skip
            records = records[: max(0, limit - len(ids))]
            take(records)
            bar.update(len(records))
            if len(ids) >= limit:
                break
    missing = wanted - set(ids)
    if missing and not qq.exhaustive:  # judged documents beyond the first `sample` points join the corpus
        take(list(retrieve(run.client, src.name, [_point_id(d) for d in sorted(missing)], run.endpoint).values()))
        missing = wanted - set(ids)
    if missing:
        example = sorted(missing)[0]
        raise InputError(
            f"qrels: corpus id {example!r} is not a point id of collection {src.name!r} with the vector "
            f"({len(missing)} judged document(s) missing); the qrels' corpus ids must be the points' ids"
        )
    text = np.asarray(ids, dtype=object)
    ranked_full = _drop_self(qq, [list(text[r]) for r in full_top.rows])
    ranked_prefix = _drop_self(qq, [list(text[r]) for r in prefix_top.rows])
    record: dict[str, Any] = {"metric": qq.metric, "dim": dim, "queries": len(cq), "corpus_points": len(ids)}
    if qq.metric == "recall@10":
        qq.truth = ranked_full
        record["query_points"] = list(qq.labels)  # which points were the queries (to measure them again)
        record["predicted"] = round(_score_metric(qq, ranked_prefix), 4)
        record["full_dim"] = 1.0
    else:
        record["predicted"] = round(_score_metric(qq, ranked_prefix), 4)
        record["full_dim"] = round(_score_metric(qq, ranked_full), 4)
        record["kept"] = round(record["predicted"] / record["full_dim"], 4) if record["full_dim"] else None
    corpus = "every point" if qq.exhaustive else f"the first {len(ids):,} points by id (an estimate)"
    truth = "the user's qrels" if qq.metric == "ndcg@10" else "exact full-dim search"
    record["basis"] = f"the {dim}-dim prefix alone vs {truth}, {len(cq)} queries, over {corpus}"
    return qq, record


def measure_target(
    run: Run,
    qq: QualityQueries,
    adaptor: Any,
    target: str,
    candidates: int,
    search: Callable[[np.ndarray, int, int], list[list[str]]] | None = None,
) -> float | None:
    """The same metric on the target's own search of its ``coarse`` vectors (truth re-read from the whole
    source when the plan's corpus was a sample). ``search(coarse queries, k, candidates)``: the target's
    top ``k`` point ids as text (default: collection ``target``'s search through the run's client)."""
    if not len(qq.queries):
        return None
    if qq.metric == "recall@10" and not qq.exhaustive:
        full_top, ids = _TopK(len(qq.queries), K + 1), []
        for records, _ in scroll(
            run.client, run.src.name, run.endpoint, limit=_PAGE, with_payload=False,
            with_vectors=run.src.with_vector, what="reading vectors",
        ):  # fmt: skip
            rows = [(str(r.id), v) for r in records if (v := vector_of(r, run.src.vector)) is not None]
            if rows:
                x = np.asarray([v for _, v in rows], dtype=np.float32)
                start = len(ids)
                ids.extend(pid for pid, _ in rows)
                full_top.push(qq.queries @ (_unit(x) if run.src.metric == "cosine" else x).T, start)
        text = np.asarray(ids, dtype=object)
        qq.truth = _drop_self(qq, [list(text[r]) for r in full_top.rows])
        qq.exhaustive = True
    cq = coarse_vectors(adaptor, qq.queries, run.coarse_dim, run.src.metric, queries=qq.qrels is not None)
    depth = K + (qq.metric == "recall@10")
    if search is None:
        found = _search_coarse(run.client, target, run.endpoint, cq, depth, candidates)
    else:
        found = search(cq, depth, candidates)
    return _score_metric(qq, _drop_self(qq, found))


def _search_coarse(
    client: QdrantClient, target: str, endpoint: str, cq: np.ndarray, k: int, candidates: int
) -> list[list[str]]:
    """Top ``k`` point ids (as text) of the target's ``coarse`` search for each query."""
    if is_local_client(client):
        # local mode normalises stored Cosine vectors in place on a search (see verify.py): numpy instead
        top, ids = _TopK(len(cq), k), []
        for records, _ in scroll(
            client, target, endpoint, limit=_PAGE, with_payload=False, with_vectors=[COARSE], what="reading coarse"
        ):
            rows = [(str(r.id), r.vector[COARSE]) for r in records if COARSE in (r.vector or {})]
            if rows:
                start = len(ids)
                ids.extend(pid for pid, _ in rows)
                top.push(cq @ np.asarray([v for _, v in rows], dtype=np.float32).T, start)
        text = np.asarray(ids, dtype=object)
        return [list(text[r]) for r in top.rows]
    params = qm.SearchParams(hnsw_ef=max(int(candidates), k))
    out: list[list[str]] = []
    for start in range(0, len(cq), 64):
        requests = [
            qm.QueryRequest(query=q.tolist(), using=COARSE, limit=k, params=params) for q in cq[start : start + 64]
        ]
        answers = call(
            lambda r=requests: client.query_batch_points(target, requests=r),
            endpoint,
            "searching the target",
            retries=3,
        )
        out.extend([str(p.id) for p in a.points] for a in answers)
    return out


# ---------------------------------------------------------------------------------- the mode
class PrefixOnlyMode(CopyMode):
    """Copy mode whose target keeps ``coarse`` (the ``M``-dim adapted prefix) instead of ``coarse`` + ``full``."""

    name: ClassVar[str] = "prefix_only"
    prefix_only: ClassVar[bool] = True
    full_vector: ClassVar[str | None] = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.quality_queries: QualityQueries | None = None
        self.predicted: dict[str, Any] | None = None

    def default_target(self, collection: str, run: Run) -> str:
        return f"{collection}_prefix{run.opts.coarse_dim}"

    def record_extra(self, run: Run) -> dict[str, Any]:
        # the prediction without its list of query points: the record travels in the collection's metadata
        predicted = {k: v for k, v in (self.predicted or {}).items() if k != "query_points"}
        return {"prefix_only": {"dim": run.coarse_dim, "predicted": predicted or None}}

    def plan_fields(self, run: Run, est_bytes: int, est_seconds: float | None, basis: str) -> dict[str, Any]:
        fields = super().plan_fields(run, est_bytes, est_seconds, basis)
        src, dim = run.src, run.coarse_dim
        source_bytes, prefix_bytes = value_bytes(src.params), dim * 4
        fields["estimated_target_bytes"] = max(0, est_bytes - src.count * source_bytes)
        self.quality_queries, self.predicted = plan_quality(run, run.ensure_model())
        fields["prefix_only"] = {
            "dim": dim,
            "source_vector_bytes": source_bytes,
            "target_vector_bytes": prefix_bytes,
            "bytes_saved_per_point": source_bytes - prefix_bytes,
            "bytes_saved": int(src.count * (source_bytes - prefix_bytes)),
            "quality": self.predicted,
        }
        fields["notes"].append(
            f"prefix only: the target keeps {src.vector or 'the unnamed vector'!r} as its {dim}-dim adapted prefix "
            f"'coarse' alone, no full vector ({human_bytes(source_bytes)} -> {human_bytes(prefix_bytes)} a point); "
            "search is the coarse stage alone, the source keeps the full vectors"
        )
        return fields

    def target_reader(self, run: Run) -> PrefixTarget | None:
        """How the verification reads the target (None: the collection, through the run's client)."""
        return None

    def target_search(self, run: Run) -> Callable[[np.ndarray, int, int], list[list[str]]] | None:
        """How the verification searches the target's ``coarse`` (None: the collection's own search)."""
        return None

    def verify(self, run: Run, cp: Checkpoint) -> tuple[VerificationResult, list[Any]]:
        model, opts = run.ensure_model(), run.opts
        result, sampled = verify_prefix_only(
            run.client, run.src, self.target, run.endpoint, model, run.coarse_dim,  # type: ignore[arg-type]
            mode=opts.verify, sample=opts.verify_sample, seed=opts.verify_seed, quiet=opts.quiet,
            reader=self.target_reader(run),
        )  # fmt: skip
        qq = self.quality_queries
        if qq is not None and self.predicted is not None and self.predicted.get("predicted") is not None:
            search = self.target_search(run)
            measured = measure_target(run, qq, model, self.target, run.opts.candidates, search)  # type: ignore[arg-type]
            predicted = float(self.predicted["predicted"])
            result.quality = {
                "metric": qq.metric,
                "predicted": predicted,
                "measured": None if measured is None else round(measured, 4),
                "difference": None if measured is None else round(measured - predicted, 4),
                "queries": len(qq.queries),
            }
            if qq.metric == "recall@10" and measured is not None:
                result.recall_at_10, result.recall_queries = measured, len(qq.queries)
        return result, sampled


__all__ = ["LabelledSample", "PrefixOnlyMode", "QualityQueries", "measure_target", "plan_quality"]
