"""Building an index: adaptor resolution, the backend's choice and the named steps of ``MatryoshkaIndex.build``.

:func:`build_index` reads as the recipe: check the arguments, choose the backend, draw the training
sample, resolve (or train) the adaptor, create the backend, train its coarse index when it needs it,
hold calibration queries out, add the rest, calibrate on the held-out rows, add them too.
"""

from __future__ import annotations

import inspect
import os
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..adaptor import MatryoshkaAdaptor
from ..adaptor.pca import PCARotation
from ..backends import get_backend_class
from ..backends.base import METRICS, TrainableCoarse, stores_prefix_only
from ..calibration import (
    CALIBRATION_K,
    MAX_CANDIDATES,
    CalibrationRecord,
    calibrate_search,
    held_out_truth,
    prefix_only_record,
    skipped_record,
    too_few_queries,
)
from ..errors import CalibrationWarning, InputError
from ..manifest import PREFIX_ONLY, RERANKS
from ..progress import progress
from ..validation import check_embeddings, check_fraction, check_ids, check_positive_int, iter_row_chunks
from .budget import MeasuresMemory, check_budget, check_built_bytes, choose_configuration
from .device_stage import attach_device, resolve_index_device
from .parts import IndexParts, StageVectors
from .points import PayloadStore, index_keeps_payloads

INDEX_TYPES = ("flat", "hnsw", "ivf", "pq")
BUILD_CHUNK_ROWS = 16384


def is_fitted(adaptor: MatryoshkaAdaptor | PCARotation) -> bool:
    return adaptor.rotation_ is not None if isinstance(adaptor, PCARotation) else hasattr(adaptor, "model_")


def accepts(func: Callable[..., Any], name: str) -> bool:
    """Whether ``func`` takes a keyword ``name`` (by name or through ``**kwargs``)."""
    params = inspect.signature(func).parameters
    return name in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def accepts_by_name(func: Callable[..., Any], name: str) -> bool:
    """Whether ``func`` names a parameter ``name`` (not just ``**kwargs``: a backend option it knows)."""
    return name in inspect.signature(func).parameters


def check_backend_options(func: Callable[..., Any], options: dict[str, Any], backend: str) -> None:
    """One line naming the options ``func`` (a backend's ``create`` or ``open``) does not take."""
    params = inspect.signature(func).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    unknown = sorted(set(options) - set(params))
    if unknown:
        fixed = ("cls", "self", "coarse_dim", "full_dim", "metric", "directory", "section")
        accepted = [n for n in params if n not in fixed]
        raise InputError(
            f"backend_options: unknown option(s) {', '.join(map(repr, unknown))} for backend {backend!r}; "
            f"accepted: {', '.join(accepted) or 'none'}"
        )


QDRANT_LOCATIONS = ("url", "host", "path", "location", "client")
"""Options that name a Qdrant server or a local-mode location (without them, ``"qdrant"`` is embedded)."""


def embedded_qdrant_backend(options: dict[str, Any], *, stacklevel: int = 3) -> str:
    """Which backend ``backend="qdrant"`` means for these options: ``"qdrant-edge"`` or ``"qdrant"``.

    With no server and no local-mode location (none of ``url``, ``host``, ``path``, ``location``,
    ``client``), ``"qdrant"`` asks for an embedded Qdrant. Qdrant's own engine in-process
    (qdrant-edge, the ``edge`` extra) answered the two-stage query about 100x (exact coarse stage) to
    360x (HNSW coarse stage) faster than qdrant-client's local mode, on 2.5x the points
    (benchmarks/results/qdrant_search.md), so it is used when installed and when it accepts every
    option given; otherwise local mode, in memory, with a warning about its speed.
    """
    if any(options.get(k) is not None for k in QDRANT_LOCATIONS):
        return "qdrant"
    try:
        edge = get_backend_class("qdrant-edge")
    except InputError:
        edge = None
    if edge is not None and all(accepts(edge.create, name) for name in options):
        return "qdrant-edge"
    warnings.warn(
        "backend='qdrant' without a server runs qdrant-client's local mode, a slow Python emulation (about 10 "
        'queries/s at 20k points); pip install "matryoshka-index[edge]" to embed Qdrant\'s engine instead, '
        "or pass url=... for a server",
        stacklevel=stacklevel,
    )
    return "qdrant"


def resolve_adaptor(
    adaptor: Any, sample: np.ndarray, dim: int, coarse_dim: int, *, seed: int, quiet: bool, device: str = "auto"
) -> MatryoshkaAdaptor | PCARotation | None:
    """The fitted adaptor ``build`` was asked for (see its ``adaptor`` parameter), fitted on ``sample``;
    ``device`` (a torch device string) is where ``"train"`` trains and where a loaded adaptor runs."""
    if adaptor is None:
        return None
    if isinstance(adaptor, str) and adaptor == "pca":
        if len(sample) < 2:
            raise InputError("adaptor: 'pca' needs at least 2 vectors; use adaptor=None")
        return PCARotation().fit(sample)
    if isinstance(adaptor, str) and adaptor == "train":
        n_val = min(round(len(sample) * MatryoshkaAdaptor().val_fraction), 4096)
        batch = min(MatryoshkaAdaptor().batch_size, len(sample) - n_val)
        if batch < 4:
            raise InputError(f"adaptor: 'train' needs at least 5 vectors, got {len(sample)}; use adaptor=None or 'pca'")
        adaptor = MatryoshkaAdaptor(
            batch_size=batch, max_samples=max(2, len(sample)), seed=seed, quiet=quiet, device=device
        )
    elif isinstance(adaptor, (str, os.PathLike)):
        if not Path(adaptor).is_dir():
            raise InputError(
                f"adaptor: expected None, 'pca', 'train', a MatryoshkaAdaptor or an adaptor directory, got {adaptor!r}"
            )
        adaptor = MatryoshkaAdaptor.load(adaptor, device=device)
    if not isinstance(adaptor, (MatryoshkaAdaptor, PCARotation)):
        raise InputError(
            f"adaptor: expected None, 'pca', 'train', a MatryoshkaAdaptor or PCARotation, got {type(adaptor).__name__}"
        )
    if not is_fitted(adaptor):
        adaptor.fit(sample)
    if adaptor.input_dim_ != dim:
        raise InputError(
            f"adaptor: was trained on {adaptor.input_dim_}-dimensional embeddings but vectors have {dim}; "
            "use an adaptor trained on the same model"
        )
    if coarse_dim > adaptor.input_dim_:
        raise InputError(f"coarse_dim: {coarse_dim} exceeds the adaptor's dimension {adaptor.input_dim_}")
    return adaptor


# ---------------------------------------------------------------------- the steps of build
def check_build_arguments(
    vectors: Any,
    *,
    metric: str,
    rerank: str | None,
    index: str | None,
    coarse_dim: Any,
    ids: Any,
    target_recall: Any,
    sample_size: Any,
    calibration_queries: Any,
    candidates: Any,
    payloads: Sequence[Any] | None,
    backend_options: Any,
) -> dict[str, Any]:
    """Every argument of ``build`` checked (one line per problem); returns the normalised ones."""
    if metric not in METRICS:
        raise InputError(f"metric: unknown metric {metric!r}; choose one of {', '.join(METRICS)}")
    if rerank is not PREFIX_ONLY and rerank not in RERANKS:
        raise InputError(
            f"rerank: unknown rerank {rerank!r}; choose one of {', '.join(RERANKS)} or None (keep only the prefix)"
        )
    if index is not None and not isinstance(index, str):
        raise InputError(f"index: expected one of {', '.join(INDEX_TYPES)}, got {index!r}")
    vectors = check_embeddings(vectors, "vectors", allow_zero_rows=metric == "ip")
    n, dim = vectors.shape
    coarse_dim = check_positive_int(coarse_dim, "coarse_dim")
    if coarse_dim > dim:
        raise InputError(f"coarse_dim: {coarse_dim} exceeds the embedding dimension {dim}; choose at most {dim}")
    checked = {
        "vectors": vectors,
        "coarse_dim": coarse_dim,
        "id_arr": np.arange(n, dtype=np.int64) if ids is None else check_ids(ids, n, "ids"),
        "target_recall": check_fraction(target_recall, "target_recall"),
        "sample_size": check_positive_int(sample_size, "sample_size"),
        "calibration_queries": check_positive_int(calibration_queries, "calibration_queries"),
        "candidates": None if candidates is None else check_positive_int(candidates, "candidates"),
    }
    if payloads is not None and len(payloads) != n:
        raise InputError(f"payloads: has {len(payloads)} entries for {n} vectors; give one per row (or None)")
    if backend_options is not None and not isinstance(backend_options, dict):
        raise InputError(f"backend_options: expected a dict, got {type(backend_options).__name__}")
    return checked


def resolve_backend(
    backend: Any, index: str | None, backend_options: dict[str, Any] | None, *, stacklevel: int = 3
) -> tuple[type, str, dict[str, Any]]:
    """``(backend class, backend name, options for its create)``; ``"qdrant"`` without a server is
    resolved to an embedded Qdrant (:func:`embedded_qdrant_backend`, whose warning names the frame
    ``stacklevel`` levels up from there)."""
    if backend == "qdrant":
        backend = embedded_qdrant_backend(backend_options or {}, stacklevel=stacklevel)
    backend_cls = get_backend_class(backend) if isinstance(backend, str) else None
    if backend_cls is None:
        raise InputError(f"backend: expected a backend name such as 'faiss', got {backend!r}")
    options = dict(backend_options or {})
    if accepts(backend_cls.create, "index"):
        if index is not None:
            options.setdefault("index", index)
    elif index not in (None, "flat"):
        raise InputError(f"index: the {backend} backend chooses its own coarse index; leave index='flat'")
    check_backend_options(backend_cls.create, options, backend)
    return backend_cls, backend, options


def check_prefix_only(backend_cls: type, name: str, budget: Any) -> None:
    """``rerank=None`` needs a backend that can store the prefix alone, and no memory budget (whose trial
    indexes are calibrated for a rerank's recall)."""
    if not stores_prefix_only(backend_cls):
        raise InputError(f"rerank: None (prefix only) is not supported by the {name} backend yet; use backend='faiss'")
    if budget is not None:
        raise InputError(
            "ram_budget: not with rerank=None (the budget's options are calibrated for a rerank); "
            "give coarse_dim= and code= yourself"
        )


def draw_sample(
    vectors: np.ndarray, sample_size: int, rng: np.random.Generator
) -> tuple[np.ndarray | None, np.ndarray]:
    """``(sorted sample rows or None for all, the sample as float32)``: what the adaptor trains on."""
    n = len(vectors)
    rows = np.sort(rng.choice(n, size=sample_size, replace=False)) if n > sample_size else None
    return rows, np.asarray(vectors if rows is None else vectors[rows], dtype=np.float32)


def train_coarse_index(backend: Any, stage: StageVectors, vectors: np.ndarray, sample_rows: np.ndarray | None) -> None:
    """IVF picks its list count from n and trains on coarse vectors of the sample; others need nothing."""
    if not isinstance(backend, TrainableCoarse):
        return
    n = len(vectors)
    train_rows = sample_rows if sample_rows is not None else np.arange(n)
    coarse_sample = np.concatenate(
        [stage.prepare(vectors[train_rows[sl]])[0] for sl in iter_row_chunks(len(train_rows), 65536)]
    )
    backend.train(coarse_sample, n)


def held_out_rows(n: int, calibration_queries: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted rows held out as calibration queries: at most ``calibration_queries`` and a tenth of n."""
    # Querying rows that are in the index would flatter the search (a graph index finds its way to
    # the query's own node and its neighbourhood far more easily than to a new point's), so held-out
    # rows are the honest stand-in for real queries.
    n_cal = min(calibration_queries, max(1, n // 10)) if n >= 2 else 0
    return np.sort(rng.choice(n, size=n_cal, replace=False)) if n_cal else np.empty(0, dtype=np.int64)


def add_rows(
    parts: IndexParts,
    vectors: np.ndarray,
    id_arr: np.ndarray,
    payloads: Sequence[Any] | None,
    rows: slice | np.ndarray,
) -> None:
    """Adapt and store ``vectors[rows]`` (with their ids and payloads)."""
    if payloads is None:
        chunk_payloads = None
    elif isinstance(rows, slice):
        chunk_payloads = list(payloads[rows])
    else:
        chunk_payloads = [payloads[int(r)] for r in rows]
    parts.add(id_arr[rows], vectors[rows], chunk_payloads)


def calibrate_held_out(
    parts: IndexParts,
    vectors: np.ndarray,
    id_arr: np.ndarray,
    held: np.ndarray,
    indexed: np.ndarray,
    *,
    target_recall: float,
    fixed: int | None,
    quiet: bool,
) -> CalibrationRecord:
    """Build-time calibration: the ``held`` rows (not yet in the index) are the queries, adapted as the
    documents they are.

    The ground truth is exact search over the indexed rows; queries unlike the corpus (short
    questions against long documents) may need more candidates: see ``MatryoshkaIndex.calibrate``.
    """
    started = time.perf_counter()
    q = np.asarray(vectors[held], dtype=np.float32)
    truth = None
    note = "exact inner-product search over the original full vectors (the rerank vectors)"
    backend = parts.backend
    k = min(CALIBRATION_K, len(backend))
    if parts.rerank == "adapted" and parts.adaptor is not None:
        # The backend holds adapted vectors; recall is promised against search over the originals.
        truth = held_out_truth(q, vectors, id_arr, indexed, k, metric=parts.metric)
        note = "exact inner-product search over the original vectors (rerank uses the adapted ones)"
    fallback = None
    if fixed is None and (few := too_few_queries(len(q), target_recall, k, len(vectors))) is not None:
        fixed, fallback = few
    coarse_q, full_q = parts.vectors.prepare(q)
    record = calibrate_search(
        backend,
        coarse_q,
        full_q,
        target=target_recall,
        truth=truth,
        fixed=fixed,
        max_candidates=MAX_CANDIDATES,
        truth_note=note,
        query_source="random corpus rows held out of the index while calibrating, then added",
        k=k,
        quiet=quiet,
        fallback=fallback,
        started=started,
    )
    if record.warning is not None:  # the index is usable; the build says loudly that the target was missed
        warnings.warn(record.warning, CalibrationWarning, stacklevel=5)
    return record


def measure_prefix_only(
    parts: IndexParts, vectors: np.ndarray, id_arr: np.ndarray, held: np.ndarray, indexed: np.ndarray
) -> CalibrationRecord:
    """A prefix-only index's record: the recall@10 its coarse stage alone reaches against exact
    full-dimension search, measured on the held-out rows (searched as queries are) while the full
    vectors are still at hand (the index keeps none)."""
    q = np.asarray(vectors[held], dtype=np.float32)
    k = min(CALIBRATION_K, int(indexed.sum()))
    truth = held_out_truth(q, vectors, id_arr, indexed, k, metric=parts.metric)
    coarse_q, full_q = parts.vectors.prepare(q, queries=True)
    _, found = parts.backend.search(coarse_q, full_q, k, max(k, parts.candidates))
    return prefix_only_record(found, truth, k)


def fill_and_calibrate(
    parts: IndexParts,
    vectors: np.ndarray,
    id_arr: np.ndarray,
    payloads: Sequence[Any] | None,
    held: np.ndarray,
    *,
    target_recall: float,
    candidates: int | None,
    quiet: bool,
) -> None:
    """Add every row but the ``held`` ones, calibrate on those (setting ``parts``' candidates and record),
    then add them too."""
    n = len(vectors)
    is_held = np.zeros(n, dtype=bool)
    is_held[held] = True
    with progress(total=n, desc="indexing", unit="vec", quiet=quiet) as bar:
        for sl in iter_row_chunks(n, BUILD_CHUNK_ROWS):
            keep = np.flatnonzero(~is_held[sl]) + sl.start
            add_rows(parts, vectors, id_arr, payloads, keep if len(keep) < sl.stop - sl.start else sl)
            bar.update(sl.stop - sl.start)
        if len(held) and parts.rerank is PREFIX_ONLY:
            parts.calibration = measure_prefix_only(parts, vectors, id_arr, held, ~is_held)
        elif len(held):
            parts.calibration = calibrate_held_out(
                parts, vectors, id_arr, held, ~is_held, target_recall=target_recall, fixed=candidates, quiet=quiet
            )
            parts.candidates = int(parts.calibration.candidates)  # type: ignore[arg-type]  # a calibration sets it
        else:
            parts.calibration = skipped_record(f"{n} vector(s); calibration needs at least 2")
        for sl in iter_row_chunks(len(held), BUILD_CHUNK_ROWS):
            add_rows(parts, vectors, id_arr, payloads, held[sl])


def build_index(
    vectors: np.ndarray,
    *,
    coarse_dim: int,
    ids: Any,
    adaptor: Any,
    backend: Any,
    index: str | None,
    target_recall: float,
    metric: str,
    rerank: str | None,
    payloads: Sequence[dict[str, Any] | None] | None,
    backend_options: dict[str, Any] | None,
    sample_size: int,
    candidates: int | None,
    calibration_queries: int,
    seed: int,
    quiet: bool,
    code: str | None,
    ram_budget: float | None,
    optimize: str,
    device: str,
) -> IndexParts:
    """``MatryoshkaIndex.build`` (whose docstring documents the arguments), step by step: the parts of the
    built index, its backend filled and its default candidates calibrated."""
    # first: a GPU asked for and missing fails before any work
    dev, faiss_device, adaptor_device = resolve_index_device(device)
    args = check_build_arguments(
        vectors,
        metric=metric,
        rerank=rerank,
        index=index,
        coarse_dim=1 if ram_budget is not None else coarse_dim,  # a budget picks coarse_dim itself
        ids=ids,
        target_recall=target_recall,
        sample_size=sample_size,
        calibration_queries=calibration_queries,
        candidates=candidates,
        payloads=payloads,
        backend_options=backend_options,
    )
    vectors, coarse_dim, candidates = args["vectors"], args["coarse_dim"], args["candidates"]
    budget = None if ram_budget is None else check_budget(ram_budget, optimize)
    backend_cls, name, options = resolve_backend(backend, index, backend_options, stacklevel=5)
    if rerank is PREFIX_ONLY:
        check_prefix_only(backend_cls, name, budget)
    if code is not None or budget is not None:
        if not accepts_by_name(backend_cls.create, "code"):
            what = "code" if budget is None else "ram_budget"
            raise InputError(
                f"{what}: the {name} backend has no coarse codes; use backend='faiss' (or leave {what} unset)"
            )
        if budget is not None and not issubclass(backend_cls, MeasuresMemory):
            raise InputError(
                f"ram_budget: the {name} backend does not measure its memory yet; use backend='faiss', or give "
                "code= and coarse_dim= yourself"
            )
        if code is not None:
            options["code"] = code
    if payloads is not None and index_keeps_payloads(backend_cls):
        payloads = PayloadStore.check(payloads)  # before any training: a bad payload fails at once
    if accepts_by_name(backend_cls.create, "device"):  # named, not just **kwargs (Qdrant)
        options.setdefault("device", faiss_device)
    dim = vectors.shape[1]
    rng = np.random.default_rng(seed)
    sample_rows, sample = draw_sample(vectors, args["sample_size"], rng)
    fitted = resolve_adaptor(adaptor, sample, dim, coarse_dim, seed=seed, quiet=quiet, device=adaptor_device)
    del sample  # not needed any more: free it before the corpus is streamed through
    choice = None
    if budget is not None:

        def trial_build(rows: np.ndarray, **setting: Any) -> IndexParts:
            """A trial index for the budget: this build's adaptor, backend, metric and target on ``rows``, at
            one ``setting`` (coarse_dim, index, backend_options), calibrated on held-out rows as a build is."""
            return build_index(
                rows, adaptor=fitted, backend=name, target_recall=args["target_recall"], metric=metric, rerank=rerank,
                ids=None, payloads=None, sample_size=len(rows), candidates=None, calibration_queries=calibration_queries,
                seed=seed, quiet=True, code=None, ram_budget=None, optimize=optimize, device=device, **setting,
            )  # fmt: skip

        choice = choose_configuration(
            trial_build, vectors, ram_budget=budget, optimize=optimize, target_recall=args["target_recall"],
            backend_options=options, seed=seed,
        )  # fmt: skip
        coarse_dim = choice["coarse_dim"]
        options = {**options, "index": choice["index"], **choice["options"]}
    if device == "auto":  # training may have loaded torch, which can now say whether there is a GPU
        dev = resolve_index_device(device)[0]
    full_dim = 0 if rerank is PREFIX_ONLY else dim  # prefix only: the backend keeps no full vector
    parts = IndexParts(
        adaptor=fitted,
        backend=attach_device(
            backend_cls.create(coarse_dim=coarse_dim, full_dim=full_dim, metric=metric, **options), dev
        ),
        metric=metric,
        rerank=rerank,
        input_dim=dim,
        coarse_dim=coarse_dim,
        full_dim=full_dim,
        candidates=candidates or CALIBRATION_K,
        calibration=CalibrationRecord(),
    )
    train_coarse_index(parts.backend, parts.vectors, vectors, sample_rows)
    held = held_out_rows(len(vectors), args["calibration_queries"], rng)
    fill_and_calibrate(
        parts,
        vectors,
        args["id_arr"],
        payloads,
        held,
        target_recall=args["target_recall"],
        candidates=candidates,
        quiet=quiet,
    )
    if choice is not None:
        parts.calibration = parts.calibration.with_budget(check_built_bytes(choice["record"], parts.backend.memory()))
    return parts
