"""Labelled evaluation: nDCG@10, recall@100, MRR@10 at each prefix length, per method, and the ANN view.

Methods (the coarse representation; every metric uses cosine similarity):

* ``full``: the original embeddings at full dimension (the reference);
* ``truncation``: the first m coordinates of the original embeddings;
* ``pca``: the first m coordinates after the PCA rotation of the corpus;
* ``adaptor``: the unsupervised Matryoshka-Adaptor, trained on the corpus embeddings only;
* ``adaptor_queries``: the unsupervised adaptor given the training queries without their labels
  (``fit(corpus, queries=...)``: their full-dim neighbours as anchors, a query head);
* ``supervised``: the adaptor trained with (training query, relevant document) pairs as well.

For each method and m two things are measured on the *test* queries: the m-dim prefix alone as a
retriever (what the paper reports), and the two-stage :class:`~matryoshka_index.MatryoshkaIndex`
(coarse search on the prefix, rerank with the original full vectors) at its calibrated default
candidate count. The ANN view sweeps the candidate count: recall@10 against exact full-dim search,
nDCG@10 and queries/s of the index's real ``search`` (adapting the queries included).
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._version import __version__
from ..adaptor import MatryoshkaAdaptor
from ..adaptor.estimator import default_matryoshka_dims
from ..adaptor.pca import pca_rotation
from ..calibration import SWEEP_CANDIDATES, OperatingPoint, OperatingPoints
from ..errors import CalibrationError, InputError
from ..metrics import Qrels, mrr_at_k, ndcg_at_k, neighbour_recall, recall_at_k
from ..storage import atomic_write_json
from ..validation import best_time, check_embeddings, check_positive_int, iter_row_chunks, l2_normalize
from .data import LabelledSet, PathLike, QuerySplit, check_string_ids, read_qrels, split_queries
from .frontier import code_options, parse_codes
from .labels import METHOD_LABELS, METHODS, LabelledResults
from .labels import METRICS as METRICS  # importable from here as before

# Candidate counts of the ANN sweep (cut at the corpus size): every other step of the calibration's ladder.
DEFAULT_CANDIDATES = SWEEP_CANDIDATES

Log = Callable[[str], None]
Sides = tuple[Callable[[np.ndarray], np.ndarray], Callable[[np.ndarray], np.ndarray]]  # (documents, queries)


# ---------------------------------------------------------------------- report
@dataclass
class LabelledReport(LabelledResults):
    """Everything :func:`evaluate_labelled` measured; ``to_dict`` is JSON, ``to_markdown`` tables, ``plot`` a PNG.

    Per-dimension dicts are keyed by the int prefix length m. Metric names: ``ndcg@10``,
    ``recall@100``, ``mrr@10`` (labelled), ``recall@10`` (against exact full-dim search).
    """

    # the fields are LabelledResults' (quality/labels.py), which the report and the plot read

    # -------------------------------------------------------------- views
    def ndcg_retention(self, method: str, m: int, *, two_stage: bool = False) -> float:
        """nDCG@10 of ``method`` at prefix ``m`` as a share of the full-dim nDCG@10."""
        table = self.two_stage if two_stage else self.prefix
        return table[method][m]["ndcg@10"] / self.full["ndcg@10"]

    def to_dict(self) -> dict[str, Any]:
        def by_dim(d: Mapping[int, Any]) -> dict[str, Any]:
            return {str(m): v for m, v in d.items()}

        return {
            "format": "matryoshka-labelled-report",
            "format_version": 1,
            "name": self.name,
            "dim": self.dim,
            "dims": list(self.dims),
            "methods": list(self.methods),
            "n_corpus": self.n_corpus,
            "n_test_queries": self.n_test_queries,
            "n_train_queries": self.n_train_queries,
            "n_train_pairs": self.n_train_pairs,
            "full": dict(self.full),
            "prefix": {k: by_dim(v) for k, v in self.prefix.items()},
            "two_stage": {k: by_dim(v) for k, v in self.two_stage.items()},
            "ann": {k: by_dim(v) for k, v in self.ann.items()},
            "exact_qps": self.exact_qps,
            "exact_qps_at": {k: by_dim(v) for k, v in self.exact_qps_at.items()},
            "codes": list(self.codes),
            "training": self.training,
            "environment": self.environment,
            "notes": list(self.notes),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LabelledReport:
        if data.get("format") != "matryoshka-labelled-report":
            raise InputError("report: not a labelled report written by matryoshka-index (format field)")

        # JSON writers may sort keys ("16" < "4"): restore the method order and numeric dimension order.
        def by_dim(d: Mapping[str, Any]) -> dict[int, Any]:
            return {int(m): d[m] for m in sorted(d, key=int)}

        def by_method(d: Mapping[str, Any]) -> dict[str, dict[int, Any]]:
            return {
                k: by_dim(d[k])
                for k in sorted(d, key=lambda k: (k not in methods, methods.index(k) if k in methods else 0))
            }

        methods = list(data["methods"])

        return cls(
            name=data["name"],
            dim=int(data["dim"]),
            dims=[int(m) for m in data["dims"]],
            methods=methods,
            n_corpus=int(data["n_corpus"]),
            n_test_queries=int(data["n_test_queries"]),
            n_train_queries=int(data["n_train_queries"]),
            n_train_pairs=int(data["n_train_pairs"]),
            full=dict(data["full"]),
            prefix=by_method(data["prefix"]),
            two_stage=by_method(data.get("two_stage", {})),
            ann=by_method(data.get("ann", {})),
            exact_qps=data.get("exact_qps"),
            exact_qps_at=by_method(data.get("exact_qps_at", {})),
            codes=list(data.get("codes", [])),
            training=dict(data.get("training", {})),
            environment=dict(data.get("environment", {})),
            notes=list(data.get("notes", [])),
        )

    def save_json(self, path: PathLike) -> None:
        atomic_write_json(path, self.to_dict())

    def to_markdown(self, advice: Sequence[Any] = (), *, title: str | None = None) -> str:
        from .report import report_markdown

        return report_markdown(self, advice=advice, title=title)

    def write_markdown(self, path: PathLike, advice: Sequence[Any] = (), *, title: str | None = None) -> None:
        from ..storage import atomic_write_bytes

        atomic_write_bytes(path, self.to_markdown(advice, title=title).encode())

    def plot(self, path: PathLike, *, ann_dim: int | None = None, title: str | None = None) -> None:
        """Write the two-panel PNG (needs matplotlib, the ``plot`` extra)."""
        from .plots import plot_report

        plot_report(self, path, ann_dim=ann_dim, title=title)


# ---------------------------------------------------------------------- helpers
def ranked_rows(queries: np.ndarray, corpus: np.ndarray, k: int, m: int | None = None) -> np.ndarray:
    """Row numbers of the top-``k`` corpus rows by cosine of the first ``m`` coordinates, best first.

    The corpus (an array or a memory map) is read in chunks; each chunk's prefix is renormalised,
    as a coarse index over m-dim vectors would store them.
    """
    m = queries.shape[1] if m is None else m
    q = l2_normalize(queries[:, :m])
    k = min(k, len(corpus))
    best_s = np.full((len(q), 0), -np.inf, dtype=np.float32)
    best_r = np.zeros((len(q), 0), dtype=np.int64)
    for sl in iter_row_chunks(len(corpus), 32768):
        x = l2_normalize(np.asarray(corpus[sl, :m]))
        s = q @ x.T
        kk = min(k, s.shape[1])
        part = np.argpartition(-s, kk - 1, axis=1)[:, :kk]
        all_s = np.concatenate([best_s, np.take_along_axis(s, part, 1)], axis=1)
        all_r = np.concatenate([best_r, part + sl.start], axis=1)
        order = np.argsort(-all_s, axis=1, kind="stable")[:, :k]
        best_s, best_r = np.take_along_axis(all_s, order, 1), np.take_along_axis(all_r, order, 1)
    return best_r


def labelled_metrics(
    ranked: np.ndarray, corpus_ids: Sequence[str], query_ids: Sequence[str], qrels: Qrels
) -> dict[str, float]:
    """nDCG@10, recall@100 (when at least 100 columns, else recall@<columns>) and MRR@10 of ranked rows."""
    ids = np.asarray(corpus_ids, dtype=object)
    docs = [[ids[r] if r >= 0 else "" for r in row] for row in ranked]
    out = {"ndcg@10": ndcg_at_k(docs, query_ids, qrels, 10), "mrr@10": mrr_at_k(docs, query_ids, qrels, 10)}
    if ranked.shape[1] >= 100:
        out["recall@100"] = recall_at_k(docs, query_ids, qrels, 100)
    return out


def environment() -> dict[str, Any]:
    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), cpu)
    except OSError:
        pass
    import torch

    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": torch.__version__,
        "matryoshka_index": __version__,
        "date": time.strftime("%Y-%m-%d"),
    }


def _check_dims(dims: Sequence[int] | None, d: int) -> list[int]:
    if dims is None:
        return list(default_matryoshka_dims(d))
    if isinstance(dims, (int, np.integer)):
        dims = [int(dims)]
    out = sorted({check_positive_int(m, "dims") for m in dims})
    if not out:
        raise InputError("dims: give at least one prefix length")
    if out[-1] > d:
        raise InputError(f"dims: prefix length {out[-1]} exceeds the embedding dimension {d}")
    return out


def _default_params(corpus: np.ndarray, dims: list[int], seed: int, quiet: bool) -> dict[str, Any]:
    """Library defaults, with the prefix lengths evaluated and a batch that fits a small corpus."""
    n, d = corpus.shape
    default_batch = MatryoshkaAdaptor().batch_size
    n_train = n - min(round(n * MatryoshkaAdaptor().val_fraction), 4096)
    return {
        "matryoshka_dims": [m for m in dims if m < d] or None,
        "batch_size": max(4, min(default_batch, n_train)),
        "seed": seed,
        "quiet": quiet,
    }


def _fit_unsupervised(adaptor: MatryoshkaAdaptor | None, corpus: np.ndarray, dims: list[int], seed: int, quiet: bool):
    if adaptor is None:
        adaptor = MatryoshkaAdaptor(**_default_params(corpus, dims, seed, quiet))
    if not isinstance(adaptor, MatryoshkaAdaptor):
        raise InputError(f"adaptor: expected a MatryoshkaAdaptor or None, got {type(adaptor).__name__}")
    if hasattr(adaptor, "model_"):
        if adaptor.input_dim_ != corpus.shape[1]:
            raise InputError(
                f"adaptor: was trained on {adaptor.input_dim_}-dimensional embeddings but the corpus has "
                f"{corpus.shape[1]}; use an adaptor trained on the same model"
            )
        return adaptor, None  # fitted by the caller: used as it is
    t0 = time.perf_counter()
    adaptor.fit(corpus)
    return adaptor, time.perf_counter() - t0


# ---------------------------------------------------------------------- the evaluation
def evaluate_labelled(
    corpus: np.ndarray,
    corpus_ids: Sequence[str],
    queries: np.ndarray,
    query_ids: Sequence[str],
    qrels: Qrels | PathLike,
    train_qrels: Qrels | PathLike | None = None,
    *,
    dims: Sequence[int] | None = None,
    query_splits: Mapping[str, str] | None = None,
    methods: Sequence[str] | None = None,
    adaptor: MatryoshkaAdaptor | None = None,
    supervised_adaptor: MatryoshkaAdaptor | None = None,
    train_queries_in_corpus: bool = False,
    two_stage: bool = True,
    ann: bool = True,
    candidates: Sequence[int] | None = None,
    codes: Sequence[str] | str | None = None,
    target_recall: float = 0.99,
    calibrate_on_train_queries: bool = True,
    repeats: int = 3,
    seed: int = 0,
    name: str = "",
    quiet: bool = False,
    log: Log | None = None,
) -> LabelledReport:
    """Evaluate retrieval quality on a labelled set, at each prefix length, for each method.

    Parameters
    ----------
    corpus, corpus_ids, queries, query_ids:
        Embeddings (``(n, d)``, float16/32/64, memory maps are fine) and one string id per row.
    qrels:
        Test judgements ``{query_id: {corpus_id: score}}`` or a BEIR/TREC qrels file. The test
        queries are those with a positive judgement here; only they are evaluated.
    train_qrels:
        Training judgements (same forms). Enables the ``supervised`` method: the adaptor is trained
        on one (query, relevant document) pair per positive judgement, with the unsupervised terms
        still on and early stopping on a held-out share of the pairs. A query in both is an error.
    dims:
        Prefix lengths m (default: 32, 64, 128, 256 below the embedding dimension).
    query_splits:
        ``{query_id: "train" | "test"}`` (``queries.jsonl``'s ``split`` field): checked against both qrels.
    methods:
        Subset of ``truncation``, ``pca``, ``adaptor``, ``supervised`` (default: all that apply).
    adaptor:
        The unsupervised adaptor: ``None`` trains one with the library defaults; an unfitted
        :class:`MatryoshkaAdaptor` is fitted on the corpus; a fitted one is used as it is.
    supervised_adaptor:
        An *unfitted* :class:`MatryoshkaAdaptor` whose parameters the supervised training uses
        (default: the library defaults; ranking_weight=10 became one, benchmarks/results/supervised_ablation.md).
        A fitted one is refused:
        nothing here could prove that it never saw a test query.
    train_queries_in_corpus:
        Also feed the training queries' embeddings to the supervised adaptor's unsupervised terms.
    two_stage, ann:
        Measure the two-stage index at its default candidates (per method and m), and the
        candidates sweep (recall@10 vs exact full-dim search, nDCG@10, queries/s).
    candidates:
        The sweep's candidate counts (default :data:`DEFAULT_CANDIDATES`, cut at the corpus size;
        each index's default count is added).
    codes:
        Coarse codes of the two-stage index to measure side by side (with ``two_stage``), e.g.
        ``["float", "sq8", "pq4", "pq4x16", "binary+itq"]`` (see :mod:`.frontier`; default ``["float"]``):
        one flat index per method, m and code, each at its calibrated candidates, with its measured
        resident bytes/vector, in :attr:`LabelledReport.codes`; :func:`~.advisor.advise_frontier` reads them.
    target_recall:
        Calibration target of each index's default candidates (recall@10 against exact search).
    calibrate_on_train_queries:
        When training queries exist (``train_qrels``), re-calibrate each index's default candidates
        on them (:meth:`MatryoshkaIndex.calibrate`), as a user would with real queries: queries
        unlike the documents (short questions, long passages) need more candidates than the
        corpus rows the build calibrates on. Test queries are never used. Default True.
    repeats:
        Timed searches keep the best of this many runs.
    seed, name, quiet, log:
        Seed of every random choice; a name for the report; no progress bars; a callable that
        receives one line per step (e.g. ``print``).
    """
    run = _check_inputs(
        corpus,
        corpus_ids,
        queries,
        query_ids,
        qrels,
        train_qrels,
        query_splits,
        dims,
        methods=methods,
        supervised_adaptor=supervised_adaptor,
        repeats=repeats,
    )
    code_specs = parse_codes(codes)  # a bad spec fails before minutes of work
    return _evaluate(
        run,
        codes=code_specs,
        adaptor=adaptor,
        supervised_adaptor=supervised_adaptor,
        train_queries_in_corpus=train_queries_in_corpus,
        two_stage=two_stage,
        ann=ann,
        candidates=candidates,
        target_recall=target_recall,
        calibrate_on_train_queries=calibrate_on_train_queries,
        seed=seed,
        name=name,
        quiet=quiet,
        say=log or (lambda _msg: None),
    )


def _evaluate(
    run: _Inputs,
    *,
    codes: Sequence[str],
    adaptor: MatryoshkaAdaptor | None,
    supervised_adaptor: MatryoshkaAdaptor | None,
    train_queries_in_corpus: bool,
    two_stage: bool,
    ann: bool,
    candidates: Sequence[int] | None,
    target_recall: float,
    calibrate_on_train_queries: bool,
    seed: int,
    name: str,
    quiet: bool,
    say: Log,
) -> LabelledReport:
    """:func:`evaluate_labelled` on checked inputs: the reference, the prefixes, the two-stage index."""
    corpus, corpus_ids, queries, dims, split = run.corpus, run.corpus_ids, run.queries, run.dims, run.split
    n, d = corpus.shape
    test_q, test_ids, test_qrels = run.test_q, list(split.test_ids), run.test_qrels
    say(f"{n} documents, {len(test_ids)} test queries, {len(split.train_ids)} training queries, dims {dims}")

    # Reference: exact full-dim search over the original vectors (also the ANN ground truth).
    k_rank = min(100, n)
    full_ranked = ranked_rows(test_q, corpus, k_rank)
    full = labelled_metrics(full_ranked, corpus_ids, test_ids, test_qrels)
    say(f"full-dim: nDCG@10 {full['ndcg@10']:.4f}")

    transforms, index_adaptors, training = _coarse_methods(
        run,
        adaptor=adaptor,
        supervised_adaptor=supervised_adaptor,
        train_queries_in_corpus=train_queries_in_corpus,
        seed=seed,
        quiet=quiet,
        say=say,
    )

    prefix = _prefix_metrics(transforms, corpus, test_q, dims, k_rank, corpus_ids, test_ids, test_qrels, say)

    report = LabelledReport(
        name=name,
        dim=d,
        dims=dims,
        methods=list(transforms),
        n_corpus=n,
        n_test_queries=len(test_ids),
        n_train_queries=len(split.train_ids),
        n_train_pairs=int(training.get("supervised", {}).get("pairs", 0)),
        full=full,
        prefix=prefix,
        training=training,
        environment=environment(),
    )
    if two_stage or ann:
        calibration_queries = (
            np.asarray(queries[split.train_rows], dtype=np.float32)
            if calibrate_on_train_queries and len(split.train_rows)
            else None
        )
        _measure_index(
            report,
            corpus,
            test_q,
            test_ids,
            test_qrels,
            corpus_ids,
            full_ranked[:, : min(10, n)],
            index_adaptors,
            two_stage=two_stage,
            ann=ann,
            candidates=candidates,
            codes=codes,
            target_recall=target_recall,
            calibration_queries=calibration_queries,
            repeats=run.repeats,
            seed=seed,
            quiet=quiet,
            say=say,
        )
        report.notes.append(_calibration_note(calibration_queries, len(split.train_rows), target_recall))
        headed = [METHOD_LABELS[k] for k, a in index_adaptors.items() if getattr(a, "has_query_head_", False)]
        if headed:
            report.notes.append(
                "Query head: " + ", ".join(headed) + " transform queries with `transform_queries` in the prefix-alone "
                "rows; the two-stage index still applies `transform` to queries (the index does not call "
                "`transform_queries` yet), so its coarse stage there is not the prefix-alone row's."
            )
    return report


@dataclass
class _Inputs:
    """The checked inputs of :func:`evaluate_labelled` and the test/train split of the queries."""

    corpus: np.ndarray
    corpus_ids: list[str]
    queries: np.ndarray
    query_ids: list[str]
    dims: list[int]
    train_qrels: Qrels | None
    methods: list[str]
    repeats: int
    split: QuerySplit
    test_qrels: Qrels
    test_q: np.ndarray


def _check_inputs(
    corpus: np.ndarray,
    corpus_ids: Sequence[str],
    queries: np.ndarray,
    query_ids: Sequence[str],
    qrels: Qrels | PathLike,
    train_qrels: Qrels | PathLike | None,
    query_splits: Mapping[str, str] | None,
    dims: Sequence[int] | None,
    *,
    methods: Sequence[str] | None,
    supervised_adaptor: MatryoshkaAdaptor | None,
    repeats: int,
) -> _Inputs:
    """Every input checked, in the order a user fixes them (data, then settings), and the queries split."""
    corpus = check_embeddings(corpus, "corpus", min_rows=2)
    n, d = corpus.shape
    queries = check_embeddings(queries, "queries", dim=d)
    corpus_ids = check_string_ids(corpus_ids, n, "corpus_ids")
    query_ids = check_string_ids(query_ids, len(queries), "query_ids")
    if isinstance(qrels, (str, os.PathLike)):
        qrels = read_qrels(qrels, "qrels")
    if isinstance(train_qrels, (str, os.PathLike)):
        train_qrels = read_qrels(train_qrels, "train_qrels")
    dims = _check_dims(dims, d)
    repeats = check_positive_int(repeats, "repeats")
    methods = _check_methods(methods, train_qrels, supervised_adaptor)
    split, test_qrels = split_queries(query_ids, corpus_ids, qrels, train_qrels, query_splits)
    test_q = np.asarray(queries[split.test_rows], dtype=np.float32)
    return _Inputs(
        corpus, corpus_ids, queries, query_ids, dims, train_qrels, methods, repeats, split, test_qrels, test_q
    )


def _check_methods(
    methods: Sequence[str] | None, train_qrels: Qrels | None, supervised_adaptor: MatryoshkaAdaptor | None
) -> list[str]:
    """The methods to evaluate (default: all that apply), each known and each possible."""
    needs_train = ("adaptor_queries", "supervised")
    if methods is None:
        methods = [m for m in METHODS if m not in needs_train or train_qrels is not None]
    methods = list(dict.fromkeys(methods))
    for m in methods:
        if m not in METHODS:
            raise InputError(f"methods: unknown method {m!r}; choose from {', '.join(METHODS)}")
    for m in needs_train:
        if m in methods and train_qrels is None:
            raise InputError(f"methods: {m!r} needs train_qrels (judgements of training queries)")
    if supervised_adaptor is not None and (
        not isinstance(supervised_adaptor, MatryoshkaAdaptor) or hasattr(supervised_adaptor, "model_")
    ):
        raise InputError(
            "supervised_adaptor: pass an unfitted MatryoshkaAdaptor (its parameters are used); it is trained "
            "here on the training queries only, so that no test query can reach it"
        )
    return methods


def _coarse_methods(
    run: _Inputs,
    *,
    adaptor: MatryoshkaAdaptor | None,
    supervised_adaptor: MatryoshkaAdaptor | None,
    train_queries_in_corpus: bool,
    seed: int,
    quiet: bool,
    say: Log,
) -> tuple[dict[str, Sides], dict[str, Any], dict[str, dict[str, Any]]]:
    """``(transforms, index adaptors, training facts)`` per method: the coarse transforms, ``(for
    documents, for queries)``, return adapted rows (prefixes are taken from them); the index adaptors
    are what ``build`` receives."""
    methods, corpus, dims = run.methods, run.corpus, run.dims
    n = len(corpus)
    transforms: dict[str, Sides] = {}
    index_adaptors: dict[str, Any] = {}
    training: dict[str, dict[str, Any]] = {}
    if "truncation" in methods:
        transforms["truncation"] = _same(lambda x: np.asarray(x, dtype=np.float32))
        index_adaptors["truncation"] = None
    if "pca" in methods:
        rng = np.random.default_rng(seed)
        sample = corpus if n <= 100_000 else corpus[np.sort(rng.choice(n, 100_000, replace=False))]
        rot = pca_rotation(np.asarray(sample, dtype=np.float32))
        transforms["pca"] = _same(lambda x: np.asarray(x, dtype=np.float32) @ rot)
        index_adaptors["pca"] = "pca"
    if "adaptor" in methods:
        say("training the unsupervised adaptor on the corpus")
        unsup, secs = _fit_unsupervised(adaptor, corpus, dims, seed, quiet)
        transforms["adaptor"] = (unsup.transform, unsup.transform_queries)
        index_adaptors["adaptor"] = unsup
        training["adaptor"] = {
            "seconds": secs,
            "fitted_by_caller": secs is None,
            "params": _params(unsup),
            "history": unsup.history_.to_dict() if hasattr(unsup, "history_") else None,
        }
    if "adaptor_queries" in methods:
        train_q = np.asarray(run.queries[run.split.train_rows], dtype=np.float32)
        say(f"training the unsupervised adaptor on the corpus and {len(train_q)} training queries without labels")
        with_q = MatryoshkaAdaptor(**_default_params(corpus, dims, seed, quiet))
        t0 = time.perf_counter()
        with_q.fit(corpus, queries=train_q)
        transforms["adaptor_queries"] = (with_q.transform, with_q.transform_queries)
        index_adaptors["adaptor_queries"] = with_q
        training["adaptor_queries"] = {
            "seconds": time.perf_counter() - t0,
            "unlabelled_queries": len(train_q),
            "params": _params(with_q),
            "history": with_q.history_.to_dict(),
        }
    if "supervised" in methods:
        sup, info = _fit_supervised(
            supervised_adaptor,
            corpus,
            run.queries,
            run.query_ids,
            run.corpus_ids,
            run.split,
            dims,
            train_queries_in_corpus,
            seed,
            quiet,
        )
        say(f"trained the supervised adaptor on {info['pairs']} pairs in {info['seconds']:.0f} s")
        transforms["supervised"] = (sup.transform, sup.transform_queries)
        index_adaptors["supervised"] = sup
        training["supervised"] = info
    return transforms, index_adaptors, training


def _same(fn: Callable[[np.ndarray], np.ndarray]) -> Sides:
    return fn, fn


def _prefix_metrics(
    transforms: Mapping[str, Sides],
    corpus: np.ndarray,
    test_q: np.ndarray,
    dims: list[int],
    k_rank: int,
    corpus_ids: list[str],
    test_ids: list[str],
    test_qrels: Qrels,
    say: Log,
) -> dict[str, dict[int, dict[str, float]]]:
    """The prefix alone, per method and m (no rerank): the paper's measurement."""
    n, d = corpus.shape
    prefix: dict[str, dict[int, dict[str, float]]] = {}
    for method, (for_docs, for_queries) in transforms.items():
        # All d columns too: the "full" column of each method (the adaptor changes even full-dim vectors).
        tx = np.concatenate([for_docs(np.asarray(corpus[sl])) for sl in iter_row_chunks(n, 65536)])
        tq = for_queries(test_q)
        prefix[method] = {}
        for m in sorted({*dims, d}):
            prefix[method][m] = labelled_metrics(ranked_rows(tq, tx, k_rank, m), corpus_ids, test_ids, test_qrels)
        say(f"{METHOD_LABELS[method]}: nDCG@10 " + ", ".join(f"m={m} {prefix[method][m]['ndcg@10']:.4f}" for m in dims))
        del tx
    return prefix


def _calibration_note(calibration_queries: np.ndarray | None, n_train: int, target_recall: float) -> str:
    """The report's note on what the two-stage indexes' default candidates were calibrated on."""
    return (
        "Two-stage index: default candidates calibrated on the "
        + (
            f"{len(calibration_queries):,} training queries (never a test query)"
            if calibration_queries is not None
            else "corpus rows held out of the index at build time ("
            + ("calibrate_on_train_queries=False)" if n_train else "no training queries given)")
        )
        + f", for recall@10 >= {target_recall} against exact full-dim search."
    )


def evaluate_beir(data: LabelledSet, **kwargs: Any) -> LabelledReport:
    """:func:`evaluate_labelled` on a set from :func:`~matryoshka_index.quality.load_beir`."""
    kwargs.setdefault("name", data.name)
    kwargs.setdefault("query_splits", data.query_splits)
    return evaluate_labelled(
        data.corpus, data.corpus_ids, data.queries, data.query_ids, data.qrels, data.train_qrels, **kwargs
    )


def _params(adaptor: MatryoshkaAdaptor) -> dict[str, Any]:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in adaptor.get_params().items()}


def _fit_supervised(
    template: MatryoshkaAdaptor | None,
    corpus: np.ndarray,
    queries: np.ndarray,
    query_ids: Sequence[str],
    corpus_ids: Sequence[str],
    split: QuerySplit,
    dims: list[int],
    train_queries_in_corpus: bool,
    seed: int,
    quiet: bool,
) -> tuple[MatryoshkaAdaptor, dict[str, Any]]:
    """Train the supervised adaptor on the training pairs only (never a test query)."""
    if template is None:
        params = _default_params(corpus, dims, seed, quiet)
    else:
        params = template.get_params()
    params["quiet"] = quiet or params.get("quiet", False)
    sup = MatryoshkaAdaptor(**params)
    q_rows, d_rows = split.training_pairs(query_ids, corpus_ids)
    if len(q_rows) < 2:
        raise InputError(f"train_qrels: {len(q_rows)} (query, relevant document) pair(s); at least 2 are needed")
    # Belt and braces: the rows handed to fit are training rows, whatever happened above.
    assert np.isin(q_rows, split.train_rows).all() and not np.isin(q_rows, split.test_rows).any()
    pair_q = np.asarray(queries[q_rows], dtype=np.float32)
    pair_d = np.asarray(corpus[d_rows], dtype=np.float32)
    rows = np.asarray(corpus, dtype=np.float32)
    if train_queries_in_corpus:
        rows = np.concatenate([rows, np.asarray(queries[split.train_rows], dtype=np.float32)])
    t0 = time.perf_counter()
    sup.fit(rows, pair_q, pair_d)
    return sup, {
        "seconds": time.perf_counter() - t0,
        "pairs": len(q_rows),
        "train_queries": len(split.train_ids),
        "train_queries_in_corpus": train_queries_in_corpus,
        "params": _params(sup),
        "history": sup.history_.to_dict(),
        "validation": "fit() holds out val_fraction of the pairs (and of the rows) and keeps the best epoch",
    }


def _measure_index(
    report: LabelledReport,
    corpus: np.ndarray,
    test_q: np.ndarray,
    test_ids: list[str],
    test_qrels: Qrels,
    corpus_ids: list[str],
    truth10: np.ndarray,
    index_adaptors: Mapping[str, Any],
    *,
    two_stage: bool,
    ann: bool,
    candidates: Sequence[int] | None,
    target_recall: float,
    calibration_queries: np.ndarray | None,
    repeats: int,
    seed: int,
    quiet: bool,
    say: Log,
    codes: Sequence[str],
) -> None:
    from ..index import MatryoshkaIndex  # lazily: the labelled metrics alone need no faiss
    from ..index.budget import resident_bytes_per_vector

    n = len(corpus)
    ladder = sorted({check_positive_int(c, "candidates") for c in (candidates or DEFAULT_CANDIDATES)})
    k10 = min(10, n)
    not_reached: dict[tuple[str, int], dict[str, Any]] = {}  # calibrations on the queries that missed the target
    for method, spec in index_adaptors.items():
        report.two_stage.setdefault(method, {})
        report.ann.setdefault(method, {})
        for m in report.dims:

            def build(options: dict[str, Any] | None = None, m: int = m, spec: Any = spec, method: str = method) -> Any:
                opts = dict(options or {})
                built = MatryoshkaIndex.build(
                    corpus, coarse_dim=m, adaptor=spec, target_recall=target_recall, seed=seed, quiet=quiet,
                    **({"index": opts.pop("index"), "backend_options": opts} if opts else {}),
                )  # fmt: skip
                if calibration_queries is not None:
                    try:
                        built.calibrate(calibration_queries, target_recall=target_recall, quiet=quiet)
                    except CalibrationError as exc:  # a short truncated prefix may never reach the target
                        say(f"{METHOD_LABELS[method]} m={m}: {exc}")
                        not_reached[(method, m)] = exc.record
                return built

            idx = build()
            t_exact, _ = best_time(lambda idx=idx: idx.exact_search(test_q, k=k10), repeats)
            report.exact_qps_at.setdefault(method, {})[m] = len(test_q) / max(t_exact, 1e-9)
            report.exact_qps = float(np.median([v for d in report.exact_qps_at.values() for v in d.values()]))

            def run(c: int | None, k: int = k10, idx: Any = idx) -> tuple[float, np.ndarray]:
                secs, (_, ids) = best_time(lambda: idx.search(test_q, k=k, candidates=c), repeats)
                return len(test_q) / max(secs, 1e-9), ids

            default_c = int(idx.candidates)
            mem = idx.info()["memory"]
            if two_stage:
                qps, ids10 = run(None)
                entry: dict[str, Any] = labelled_metrics(ids10, corpus_ids, test_ids, test_qrels)
                if n >= 100:
                    _, ids100 = run(None, 100)
                    entry["recall@100"] = labelled_metrics(ids100, corpus_ids, test_ids, test_qrels)["recall@100"]
                entry.update(
                    {
                        "recall@10": neighbour_recall(ids10, truth10, k10),
                        "candidates": default_c,
                        "calibrated_recall": idx.calibration.get("recall"),
                        "calibration_queries": idx.calibration.get("query_source"),
                        # the training queries' calibration missed the target: the build's candidates stay
                        "calibration_on_queries_reached": (method, m) not in not_reached,
                        "calibration_on_queries_recall": not_reached.get((method, m), {}).get("recall"),
                        "qps": qps,
                        "ram_bytes_per_vector": mem.get("ram_bytes_per_vector"),
                        "coarse_bytes_per_vector": 4 * m,
                    }
                )
                report.two_stage[method][m] = entry
                for code in codes:
                    options = code_options(code, m)
                    if options is None:
                        say(f"code {code} does not apply at m={m}: skipped")
                        continue
                    if code == "float":  # the two-stage index just measured
                        code_idx, measured = idx, entry
                    else:
                        code_idx = build(options)
                        qps_c, ids_c = run(None, k10, code_idx)
                        measured = {
                            "recall@10": neighbour_recall(ids_c, truth10, k10),
                            "ndcg@10": labelled_metrics(ids_c, corpus_ids, test_ids, test_qrels)["ndcg@10"],
                            "qps": qps_c,
                        }
                    report.codes.append(
                        {
                            "method": method,
                            "coarse_dim": m,
                            "code": code,
                            "bytes_per_vector": resident_bytes_per_vector(code_idx.backend.memory()),
                            "candidates": int(code_idx.candidates),
                            "calibrated_recall": code_idx.calibration.get("recall"),
                            **{key: measured[key] for key in ("recall@10", "ndcg@10", "qps")},
                        }
                    )
            if ann:
                points = OperatingPoints()
                for c in sorted({c for c in ladder if k10 <= c <= n} | {min(default_c, n)}):
                    qps, ids = run(c)
                    ndcg = labelled_metrics(ids, corpus_ids, test_ids, test_qrels)["ndcg@10"]
                    points.add(
                        OperatingPoint(
                            c, recall=neighbour_recall(ids, truth10, k10), extra={"ndcg@10": ndcg, "qps": qps}
                        )
                    )
                report.ann[method][m] = [p.to_dict() for p in points]
            if two_stage:
                e = report.two_stage[method][m]
                say(
                    f"two-stage {METHOD_LABELS[method]} m={m}: C={default_c} nDCG@10 {e['ndcg@10']:.4f} "
                    f"recall@10 {e['recall@10']:.3f} {e['qps']:.0f} q/s"
                )
            del idx
