"""``MatryoshkaIndex``: an adaptor composed with a storage backend, and the calibration of candidates.

Search is two-stage. A query ``q`` is adapted like every stored vector: its *coarse* vector is the
first ``coarse_dim`` columns of ``adaptor.transform(q)``, its *full* vector is ``q`` itself (default,
``rerank="original"``) or the whole adapted vector (``rerank="adapted"``); with ``metric="cosine"``
both are L2-normalised (the coarse prefix after truncation). The backend finds the top
``candidates`` by inner product of coarse vectors, then reranks them by inner product of full
vectors and returns the best ``k``. With the original vectors in the rerank, every returned score
is the exact full-dimension score of that item.

Adaptors: ``None`` is the identity (plain truncation of the original vectors: right for models
trained Matryoshka-style), ``"pca"`` a fitted PCA rotation (:class:`PCARotation`, a strong
training-free baseline), ``"train"`` or an unfitted :class:`~matryoshka_index.MatryoshkaAdaptor`
trains on a sample of the corpus, a fitted one is used as it is.

Saved index layout (a directory, written atomically)::

    manifest.json   the manifest below
    adaptor/        the adaptor's files (absent for the identity)
    ...             the backend's files (FAISS: coarse.faiss, full.npy, ids.npy)

Manifest keys (``manifest.json``; the same dict is handed to backends that store it themselves and
to :meth:`MatryoshkaIndex._from_parts`):

* ``format`` ``"matryoshka-index"``, ``format_version`` (1), ``library_version``, ``created`` (UTC);
* ``metric`` (``"cosine"`` or ``"ip"``), ``input_dim``, ``coarse_dim``, ``full_dim``, ``rerank``;
* ``adaptor``: ``{"kind": "none" | "pca" | "matryoshka-adaptor", "directory": "adaptor" | null}``;
* ``count``: stored (live) vectors;
* ``candidates``: the default candidate count of :meth:`MatryoshkaIndex.search`;
* ``calibration``: how that default was chosen: ``k``, ``target_recall``, ``recall`` (achieved
  recall@k), ``recall_lower_bound`` (its one-sided 95% lower confidence bound over the queries,
  which must reach the target), ``reached``, ``queries``, ``knob`` (e.g. ``{"nprobe": 16}`` or null), ``truth``,
  ``method``, ``steps`` (every ``[candidates, knob, recall, lower bound]`` measured), ``seconds``;
* ``backend``: the backend's own section (what ``backend.save`` returned, with ``kind``);
* ``files``: ``{relative path: sha256}`` of every file of a saved directory, checked on load.

Concurrency: any number of threads may call :meth:`~MatryoshkaIndex.search` at once; ``add``,
``remove``, ``calibrate`` and ``save`` take an exclusive lock (a readers-writer lock), so a search
never sees a half-applied mutation.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import math
import os
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from ._version import __version__
from .adaptor import MatryoshkaAdaptor
from .adaptor.pca import PCARotation
from .backends import BACKENDS, get_backend_class
from .errors import FormatError, InputError
from .evaluation import exact_topk
from .progress import progress
from .storage import allocated_bytes, atomic_directory, atomic_write_bytes, read_versioned_json, sha256_file
from .validation import (
    check_embeddings,
    check_fraction,
    check_ids,
    check_positive_int,
    iter_row_chunks,
    l2_normalize,
)

FORMAT = "matryoshka-index"
FORMAT_VERSION = 1
MANIFEST_FILE = "manifest.json"
ADAPTOR_DIR = "adaptor"
METRICS = ("cosine", "ip")
RERANKS = ("original", "adapted")
INDEX_TYPES = ("flat", "hnsw", "ivf", "pq")
_CONFIDENCE_Z = 1.645  # calibration: one-sided 95% lower confidence bound of the recall must reach the target
CALIBRATION_K = 10
_BUILD_CHUNK_ROWS = 16384
_SEARCH_CHUNK_ROWS = 4096
_MAX_CANDIDATES = 4096


Adaptor = MatryoshkaAdaptor | PCARotation | None


def recall_with_lower_bound(found: np.ndarray, truth: np.ndarray, z: float = _CONFIDENCE_Z) -> tuple[float, float]:
    """Mean recall of ``found`` against ``truth`` (``(n_queries, k)`` ids, ``-1`` = none) and its
    one-sided lower confidence bound ``mean - z * std / sqrt(n_queries)`` (z = 1.645: 95%)."""
    valid = truth >= 0
    hits = ((found[:, :, None] == truth[:, None, :]) & valid[:, None, :] & (found[:, :, None] >= 0)).any(axis=1)
    sizes = valid.sum(axis=1)
    keep = sizes > 0
    if not keep.any():
        return 1.0, 1.0
    per_query = (hits & valid).sum(axis=1)[keep] / sizes[keep]
    mean = float(per_query.mean())
    if len(per_query) < 2:
        return mean, mean
    return mean, mean - z * float(per_query.std(ddof=1)) / float(np.sqrt(len(per_query)))


def adaptor_kind(adaptor: Adaptor) -> str:
    """``"none"``, ``"pca"`` or ``"matryoshka-adaptor"`` (as written in the manifest)."""
    if adaptor is None:
        return "none"
    return "pca" if isinstance(adaptor, PCARotation) else "matryoshka-adaptor"


def _is_fitted(adaptor: MatryoshkaAdaptor | PCARotation) -> bool:
    return adaptor.rotation_ is not None if isinstance(adaptor, PCARotation) else hasattr(adaptor, "model_")


# ---------------------------------------------------------------------- locking
class _ReadWriteLock:
    """Many readers or one writer. Re-entrant for the writer (which may also read); new readers wait
    while a writer waits, so a stream of searches cannot starve a mutation."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._readers = 0
        self._writer: int | None = None
        self._depth = 0
        self._writers_waiting = 0

    @contextlib.contextmanager
    def read(self) -> Iterator[None]:
        me = threading.get_ident()
        with self._cond:
            if self._writer == me:
                self._depth += 1
                owned = True
            else:
                while self._writer is not None or self._writers_waiting:
                    self._cond.wait()
                self._readers += 1
                owned = False
        try:
            yield
        finally:
            with self._cond:
                if owned:
                    self._depth -= 1
                else:
                    self._readers -= 1
                    if not self._readers:
                        self._cond.notify_all()

    @contextlib.contextmanager
    def write(self) -> Iterator[None]:
        me = threading.get_ident()
        with self._cond:
            if self._writer == me:
                self._depth += 1
            else:
                self._writers_waiting += 1
                try:
                    while self._writer is not None or self._readers:
                        self._cond.wait()
                finally:
                    self._writers_waiting -= 1
                self._writer, self._depth = me, 1
        try:
            yield
        finally:
            with self._cond:
                self._depth -= 1
                if not self._depth:
                    self._writer = None
                    self._cond.notify_all()


# ---------------------------------------------------------------------- helpers
def _candidate_ladder(k: int, cap: int) -> list[int]:
    """Geometric ladder k, k*2^(1/4), k*2^(2/4), ... (rounded, distinct) up to and including ``cap``."""
    cap = max(k, cap)
    out: list[int] = []
    i = 0
    while True:
        v = min(cap, round(k * 2 ** (i / 4)))
        if not out or v > out[-1]:
            out.append(v)
        if v >= cap:
            return out
        i += 1


def _smallest(ladder: Sequence[int], ok: Callable[[int], bool]) -> int | None:
    """Smallest ladder value for which ``ok`` holds, by binary search (``ok`` assumed monotone); None if none."""
    if not ok(ladder[-1]):
        return None
    lo, hi = 0, len(ladder) - 1
    while lo < hi:
        mid = (lo + hi) // 2
        if ok(ladder[mid]):
            hi = mid
        else:
            lo = mid + 1
    return ladder[lo]


def _accepts(func: Callable[..., Any], name: str) -> bool:
    params = inspect.signature(func).parameters
    return name in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def _check_backend_options(func: Callable[..., Any], options: dict[str, Any], backend: str) -> None:
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


_QDRANT_LOCATIONS = ("url", "host", "path", "location", "client")


def embedded_qdrant_backend(options: dict[str, Any]) -> str:
    """Which backend ``backend="qdrant"`` means for these options: ``"qdrant-edge"`` or ``"qdrant"``.

    With no server and no local-mode location (none of ``url``, ``host``, ``path``, ``location``,
    ``client``), ``"qdrant"`` asks for an embedded Qdrant. Qdrant's own engine in-process
    (qdrant-edge, the ``edge`` extra) answered the two-stage query about 100x (exact coarse stage) to
    360x (HNSW coarse stage) faster than qdrant-client's local mode, on 2.5x the points
    (benchmarks/results/qdrant_search.md), so it is used when installed and when it accepts every
    option given; otherwise local mode, in memory, with a warning about its speed.
    """
    if any(options.get(k) is not None for k in _QDRANT_LOCATIONS):
        return "qdrant"
    try:
        edge = get_backend_class("qdrant-edge")
    except InputError:
        edge = None
    if edge is not None and all(_accepts(edge.create, name) for name in options):
        return "qdrant-edge"
    warnings.warn(
        "backend='qdrant' without a server runs qdrant-client's local mode, a slow Python emulation (about 10 "
        'queries/s at 20k points); pip install "matryoshka-index[edge]" to embed Qdrant\'s engine instead, '
        "or pass url=... for a server",
        stacklevel=3,
    )
    return "qdrant"


def check_output_path(path: str | os.PathLike[str]) -> Path:
    """Refuse to save over anything but nothing, an empty directory or an index (saving replaces the
    directory whole, so a typo such as ``-o ~/Documents`` must not delete a folder of other files)."""
    path = Path(path)
    if not path.exists():
        return path
    if not path.is_dir():
        raise InputError(f"{path}: exists and is not a directory; choose another output path")
    if any(path.iterdir()):
        try:
            is_index = json.loads((path / MANIFEST_FILE).read_text()).get("format") == FORMAT
        except (OSError, ValueError, AttributeError):
            is_index = False
        if not is_index:
            raise InputError(
                f"{path}: exists and is not a matryoshka index; refusing to replace it, choose another output path"
            )
    return path


def _fsync_tree(root: Path) -> None:
    for p in root.rglob("*"):
        if p.is_file():
            with open(p, "rb") as fh:
                os.fsync(fh.fileno())


# ---------------------------------------------------------------------- the index
class MatryoshkaIndex:
    """Vector index: coarse search on an adapted low-dim prefix, rerank at full dimension.

    Create with :meth:`build`, reopen with :meth:`load` (or :meth:`from_qdrant`). See the module
    docstring for the search model, the saved layout and the manifest.
    """

    def __init__(self) -> None:  # use build(), load() or _from_parts()
        raise TypeError(
            "use MatryoshkaIndex.build(...), MatryoshkaIndex.load(path) or MatryoshkaIndex.from_qdrant(...)"
        )

    # ------------------------------------------------------------------ construction
    @classmethod
    def build(
        cls,
        vectors: np.ndarray,
        coarse_dim: int = 64,
        ids: np.ndarray | Sequence[int] | None = None,
        adaptor: str | MatryoshkaAdaptor | PCARotation | os.PathLike[str] | None = None,
        backend: str = "faiss",
        index: str | None = None,
        target_recall: float = 0.99,
        metric: str = "cosine",
        rerank: str = "original",
        payloads: Sequence[dict[str, Any] | None] | None = None,
        backend_options: dict[str, Any] | None = None,
        sample_size: int = 100_000,
        *,
        candidates: int | None = None,
        calibration_queries: int = 1000,
        seed: int = 0,
        quiet: bool = False,
    ) -> MatryoshkaIndex:
        """Build an index over ``vectors`` (``(n, d)`` float16/32/64; a memory map is read in batches).

        Parameters
        ----------
        vectors:
            The corpus embeddings. With ``metric="cosine"`` they need not be normalised.
        coarse_dim:
            Length of the adapted prefix searched in stage one (``<= d``).
        ids:
            External int64 ids (``>= 0``, unique), one per row; ``None`` means ``0..n-1``.
        adaptor:
            ``None``: the identity (coarse = plain truncation of the original vectors).
            ``"pca"``: a :class:`PCARotation` fitted on the sample. ``"train"``: a
            :class:`~matryoshka_index.MatryoshkaAdaptor` with the library defaults trained on the
            sample. A :class:`~matryoshka_index.MatryoshkaAdaptor` or :class:`PCARotation`: used as
            is when fitted, else fitted on the sample. A path: an adaptor directory to load.
        backend, backend_options:
            ``"faiss"`` (default), ``"qdrant"`` or ``"qdrant-edge"``; options go to the backend's ``create``.
            ``"qdrant"`` with no ``url``/``client``/``path``/``location`` means an embedded Qdrant:
            qdrant-edge when the ``edge`` extra is installed (see :func:`embedded_qdrant_backend`),
            else qdrant-client's local mode
            (FAISS: ``hnsw_m``, ``ef_construction``, ``ef_search``, ``nlist``, ``nprobe``,
            ``device``, ``spill_dir``).
        index:
            Coarse index type: ``"flat"`` (exact), ``"hnsw"``, ``"ivf"`` or ``"pq"`` (exhaustive scan of
            4-bit product-quantized codes: 8x less RAM than flat and faster, approximate; FAISS
            only). ``None`` (default): the
            backend's own default, ``"flat"`` for FAISS and ``"hnsw"`` for the Qdrant backends
            (whose servers are built for graph search).
        target_recall:
            The default candidate count is calibrated so recall@10 against exact full-dim search
            reaches this (see :meth:`calibrate`).
        metric:
            ``"cosine"`` (default; inner product of L2-normalised vectors) or ``"ip"``.
        rerank:
            ``"original"`` (default): rerank with the original vectors, so returned scores are
            exact full-dim scores. ``"adapted"``: rerank with the adapted full vectors.
        payloads:
            Per-row dicts (backends that store payloads only).
        sample_size:
            The adaptor (and an IVF quantizer) train on a random sample of at most this many rows;
            the whole corpus is then transformed in streaming batches.
        candidates:
            Fix the default candidate count instead of calibrating it (its recall is still measured).
        calibration_queries:
            Corpus rows held out as calibration queries: at most this many (default 1,000) and at
            most a tenth of the corpus. They are added to the index after the calibration.
        seed:
            Seeds the sample and the calibration queries.
        quiet:
            No progress bars.
        """
        if metric not in METRICS:
            raise InputError(f"metric: unknown metric {metric!r}; choose one of {', '.join(METRICS)}")
        if rerank not in RERANKS:
            raise InputError(f"rerank: unknown rerank {rerank!r}; choose one of {', '.join(RERANKS)}")
        if index is not None and not isinstance(index, str):
            raise InputError(f"index: expected one of {', '.join(INDEX_TYPES)}, got {index!r}")
        vectors = check_embeddings(vectors, "vectors", allow_zero_rows=metric == "ip")
        n, dim = vectors.shape
        coarse_dim = check_positive_int(coarse_dim, "coarse_dim")
        if coarse_dim > dim:
            raise InputError(f"coarse_dim: {coarse_dim} exceeds the embedding dimension {dim}; choose at most {dim}")
        id_arr = np.arange(n, dtype=np.int64) if ids is None else check_ids(ids, n, "ids")
        target_recall = check_fraction(target_recall, "target_recall")
        sample_size = check_positive_int(sample_size, "sample_size")
        calibration_queries = check_positive_int(calibration_queries, "calibration_queries")
        if candidates is not None:
            candidates = check_positive_int(candidates, "candidates")
        if payloads is not None and len(payloads) != n:
            raise InputError(f"payloads: has {len(payloads)} entries for {n} vectors; give one per row (or None)")
        if backend_options is not None and not isinstance(backend_options, dict):
            raise InputError(f"backend_options: expected a dict, got {type(backend_options).__name__}")
        if backend == "qdrant":
            backend = embedded_qdrant_backend(backend_options or {})
        backend_cls = get_backend_class(backend) if isinstance(backend, str) else None
        if backend_cls is None:
            raise InputError(f"backend: expected a backend name such as 'faiss', got {backend!r}")
        options = dict(backend_options or {})
        if _accepts(backend_cls.create, "index"):
            if index is not None:
                options.setdefault("index", index)
        elif index not in (None, "flat"):
            raise InputError(f"index: the {backend} backend chooses its own coarse index; leave index='flat'")
        _check_backend_options(backend_cls.create, options, backend)

        rng = np.random.default_rng(seed)
        sample_rows = np.sort(rng.choice(n, size=sample_size, replace=False)) if n > sample_size else None
        sample = np.asarray(vectors if sample_rows is None else vectors[sample_rows], dtype=np.float32)
        fitted = cls._resolve_adaptor(adaptor, sample, dim, coarse_dim, seed=seed, quiet=quiet)
        del sample  # not needed any more: free it before the corpus is streamed through

        be = backend_cls.create(coarse_dim=coarse_dim, full_dim=dim, metric=metric, **options)
        self = cls._new(
            adaptor=fitted,
            backend=be,
            metric=metric,
            rerank=rerank,
            input_dim=dim,
            coarse_dim=coarse_dim,
            full_dim=dim,
            candidates=candidates or CALIBRATION_K,
            calibration={},
        )
        if hasattr(be, "train"):  # IVF picks its list count from n and trains on coarse vectors of the sample
            train_rows = sample_rows if sample_rows is not None else np.arange(n)
            coarse_sample = np.concatenate(
                [self._prepare(vectors[train_rows[sl]])[0] for sl in iter_row_chunks(len(train_rows), 65536)]
            )
            be.train(coarse_sample, n)
            del coarse_sample
        # Calibration queries are held out: corpus rows left out of the index while candidates are
        # calibrated, then added. Querying rows that are in the index would flatter the search (a
        # graph index finds its way to the query's own node and its neighbourhood far more easily
        # than to a new point's), so held-out rows are the honest stand-in for real queries.
        n_cal = min(calibration_queries, max(1, n // 10)) if n >= 2 else 0
        held = np.sort(rng.choice(n, size=n_cal, replace=False)) if n_cal else np.empty(0, dtype=np.int64)
        is_held = np.zeros(n, dtype=bool)
        is_held[held] = True
        with progress(total=n, desc="indexing", unit="vec", quiet=quiet) as bar:
            for sl in iter_row_chunks(n, _BUILD_CHUNK_ROWS):
                keep = np.flatnonzero(~is_held[sl]) + sl.start
                self._add_rows(vectors, id_arr, payloads, keep if len(keep) < sl.stop - sl.start else sl)
                bar.update(sl.stop - sl.start)
            if n_cal:
                self._calibrate_held_out(
                    vectors, id_arr, held, ~is_held, target_recall=target_recall, fixed=candidates, quiet=quiet
                )
            else:
                self._calibration = {"skipped": f"{n} vector(s); calibration needs at least 2"}
            for sl in iter_row_chunks(n_cal, _BUILD_CHUNK_ROWS):
                self._add_rows(vectors, id_arr, payloads, held[sl])
        self._attach_metadata()
        return self

    def _add_rows(
        self, vectors: np.ndarray, id_arr: np.ndarray, payloads: Sequence[Any] | None, rows: slice | np.ndarray
    ) -> None:
        coarse, full = self._prepare(vectors[rows])
        if payloads is None:
            chunk_payloads = None
        elif isinstance(rows, slice):
            chunk_payloads = list(payloads[rows])
        else:
            chunk_payloads = [payloads[int(r)] for r in rows]
        self._backend.add(id_arr[rows], coarse, full, chunk_payloads)

    @staticmethod
    def _resolve_adaptor(
        adaptor: Any, sample: np.ndarray, dim: int, coarse_dim: int, *, seed: int, quiet: bool
    ) -> MatryoshkaAdaptor | PCARotation | None:
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
                raise InputError(
                    f"adaptor: 'train' needs at least 5 vectors, got {len(sample)}; use adaptor=None or 'pca'"
                )
            adaptor = MatryoshkaAdaptor(batch_size=batch, max_samples=max(2, len(sample)), seed=seed, quiet=quiet)
        elif isinstance(adaptor, (str, os.PathLike)):
            if not Path(adaptor).is_dir():
                raise InputError(
                    f"adaptor: expected None, 'pca', 'train', a MatryoshkaAdaptor or an adaptor directory, got {adaptor!r}"
                )
            adaptor = MatryoshkaAdaptor.load(adaptor)
        if not isinstance(adaptor, (MatryoshkaAdaptor, PCARotation)):
            raise InputError(
                f"adaptor: expected None, 'pca', 'train', a MatryoshkaAdaptor or PCARotation, got {type(adaptor).__name__}"
            )
        if not _is_fitted(adaptor):
            adaptor.fit(sample)
        if adaptor.input_dim_ != dim:
            raise InputError(
                f"adaptor: was trained on {adaptor.input_dim_}-dimensional embeddings but vectors have {dim}; "
                "use an adaptor trained on the same model"
            )
        if coarse_dim > adaptor.input_dim_:
            raise InputError(f"coarse_dim: {coarse_dim} exceeds the adaptor's dimension {adaptor.input_dim_}")
        return adaptor

    @classmethod
    def _new(
        cls,
        *,
        adaptor: Adaptor,
        backend: Any,
        metric: str,
        rerank: str,
        input_dim: int,
        coarse_dim: int,
        full_dim: int,
        candidates: int,
        calibration: dict[str, Any],
        created: str | None = None,
        path: Path | None = None,
    ) -> MatryoshkaIndex:
        self = object.__new__(cls)
        self._adaptor = adaptor
        self._backend = backend
        self.metric = metric
        self.rerank = rerank
        self.input_dim = input_dim
        self.coarse_dim = coarse_dim
        self.full_dim = full_dim
        self._candidates = int(candidates)
        self._calibration = dict(calibration)
        self._created = created or datetime.now(timezone.utc).isoformat(timespec="seconds")
        self._path = path
        self._modified_since_load = path is None
        self._lock = _ReadWriteLock()
        return self

    @classmethod
    def _from_parts(cls, adaptor: Adaptor, backend: Any, manifest: dict[str, Any]) -> MatryoshkaIndex:
        """An index around an already-open ``backend`` and ``adaptor`` (or None / a PCARotation), as
        described by ``manifest`` (the dict documented in the module docstring; ``backend`` and
        ``files`` keys are optional here). Used by :meth:`load` and by the Qdrant backend."""
        try:
            metric, rerank = manifest["metric"], manifest["rerank"]
            input_dim, coarse_dim, full_dim = (int(manifest[k]) for k in ("input_dim", "coarse_dim", "full_dim"))
            candidates = int(manifest["candidates"])
            calibration = dict(manifest.get("calibration") or {})
            kind = manifest.get("adaptor", {}).get("kind", adaptor_kind(adaptor))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise FormatError(f"index manifest is incomplete or malformed ({exc.__class__.__name__}: {exc})") from None
        if metric not in METRICS or rerank not in RERANKS:
            raise FormatError(f"index manifest: unknown metric {metric!r} or rerank {rerank!r}")
        if kind != adaptor_kind(adaptor):
            raise FormatError(f"index manifest: adaptor kind {kind!r} does not match the adaptor given")
        if adaptor is not None and adaptor.input_dim_ != input_dim:
            raise FormatError(f"index manifest: input_dim {input_dim} but the adaptor takes {adaptor.input_dim_}")
        if backend.coarse_dim != coarse_dim or backend.full_dim != full_dim:
            raise FormatError(
                f"index manifest: dims coarse={coarse_dim} full={full_dim} but the backend stores "
                f"coarse={backend.coarse_dim} full={backend.full_dim}"
            )
        return cls._new(
            adaptor=adaptor,
            backend=backend,
            metric=metric,
            rerank=rerank,
            input_dim=input_dim,
            coarse_dim=coarse_dim,
            full_dim=full_dim,
            candidates=candidates,
            calibration=calibration,
            created=manifest.get("created"),
        )

    @classmethod
    def from_qdrant(
        cls,
        collection: str,
        url: str | None = None,
        path: str | None = None,
        client: Any | None = None,
        **kw: Any,
    ) -> MatryoshkaIndex:
        """Open an index stored in a Qdrant collection (built with ``backend="qdrant"`` or migrated)."""
        from .qdrant_open import open_index_from_qdrant

        return open_index_from_qdrant(cls, collection, url=url, path=path, client=client, **kw)

    # ------------------------------------------------------------------ properties
    @property
    def adaptor(self) -> Adaptor:
        return self._adaptor

    @property
    def backend(self) -> Any:
        return self._backend

    @property
    def candidates(self) -> int:
        """The calibrated default candidate count (for k = 10)."""
        return self._candidates

    @property
    def calibration(self) -> dict[str, Any]:
        return dict(self._calibration)

    def __len__(self) -> int:
        return len(self._backend)

    def ids(self) -> np.ndarray:
        """All stored ids (int64)."""
        with self._lock.read():
            return self._backend.ids()

    def __repr__(self) -> str:
        return (
            f"MatryoshkaIndex(count={len(self)}, dims={self.input_dim}->{self.coarse_dim}, metric={self.metric!r}, "
            f"adaptor={adaptor_kind(self._adaptor)!r}, backend={self._backend.kind!r}, candidates={self._candidates})"
        )

    # ------------------------------------------------------------------ vectors
    def _check_vectors(self, x: object, name: str) -> np.ndarray:
        return check_embeddings(x, name, dim=self.input_dim, allow_zero_rows=self.metric == "ip")

    def _prepare(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(coarse, full) float32 vectors of validated rows ``x``, as stored and as queried."""
        x = np.asarray(x, dtype=np.float32)
        cd = self.coarse_dim
        adapted_full = x
        if self._adaptor is None:
            coarse = x[:, :cd]
        else:
            need_full = self.rerank == "adapted"
            a = self._adaptor.transform(x, None if need_full else cd, batch_size=max(1, len(x)))
            coarse = a[:, :cd]
            adapted_full = a
        full = x if self.rerank == "original" else adapted_full
        if self.metric == "cosine":
            return l2_normalize(coarse), l2_normalize(full)
        return np.ascontiguousarray(coarse, dtype=np.float32), np.ascontiguousarray(full, dtype=np.float32)

    def _prepare_full(self, x: np.ndarray) -> np.ndarray:
        if self.rerank == "adapted" and self._adaptor is not None:
            return self._prepare(x)[1]
        x = np.asarray(x, dtype=np.float32)
        return l2_normalize(x) if self.metric == "cosine" else np.ascontiguousarray(x)

    # ------------------------------------------------------------------ mutation
    def add(
        self,
        vectors: np.ndarray,
        ids: np.ndarray | Sequence[int] | None = None,
        payloads: Sequence[dict[str, Any] | None] | None = None,
        *,
        quiet: bool = False,
    ) -> np.ndarray:
        """Add vectors (through the frozen adaptor). ``ids=None`` continues after the largest stored id.

        Returns the ids added. Ids already in the index are an error (remove them first). The
        calibrated candidate default is kept; call :meth:`calibrate` after large changes.
        """
        x = self._check_vectors(vectors, "vectors")
        if payloads is not None and len(payloads) != len(x):
            raise InputError(f"payloads: has {len(payloads)} entries for {len(x)} vectors; give one per row (or None)")
        with self._lock.write():
            if ids is None:
                existing = self._backend.ids()
                start = int(existing.max()) + 1 if len(existing) else 0
                id_arr = np.arange(start, start + len(x), dtype=np.int64)
            else:
                id_arr = check_ids(ids, len(x), "ids")
            present = self._backend.contains(id_arr)
            if present.any():
                raise InputError(
                    f"ids: {int(present.sum())} id(s) already in the index, e.g. {int(id_arr[present][0])}; "
                    "remove them first or use new ids"
                )
            with progress(
                total=len(x), desc="adding", unit="vec", quiet=quiet or len(x) < 4 * _BUILD_CHUNK_ROWS
            ) as bar:
                for sl in iter_row_chunks(len(x), _BUILD_CHUNK_ROWS):
                    coarse, full = self._prepare(x[sl])
                    self._backend.add(id_arr[sl], coarse, full, None if payloads is None else list(payloads[sl]))
                    bar.update(sl.stop - sl.start)
            self._modified_since_load = True
            self._attach_metadata()
        return id_arr

    def remove(self, ids: np.ndarray | Sequence[int], *, missing_ok: bool = False) -> int:
        """Remove vectors by id; returns how many were removed. Removed ids are never returned again.

        Ids not in the index are an error unless ``missing_ok``.
        """
        arr = np.asarray(ids)
        if arr.ndim == 0:
            arr = arr[None]
        id_arr = check_ids(arr, len(arr), "ids")
        with self._lock.write():
            present = self._backend.contains(id_arr)
            if not missing_ok and not present.all():
                raise InputError(
                    f"ids: {int((~present).sum())} id(s) not in the index, e.g. {int(id_arr[~present][0])}; "
                    "pass missing_ok=True to ignore them"
                )
            removed = int(self._backend.remove(id_arr[present])) if present.any() else 0
            self._modified_since_load = True
            self._attach_metadata()
        return removed

    def _attach_metadata(self) -> None:
        attach = getattr(self._backend, "attach_index_metadata", None)
        if attach is None:
            return
        files = self._adaptor.to_files() if self._adaptor is not None else None
        attach(self._manifest(), files)

    # ------------------------------------------------------------------ search
    def resolve_candidates(self, k: int, candidates: int | None = None) -> int:
        """The candidate count a search with this ``k`` uses: ``candidates`` when given (>= k), else
        the calibrated default, scaled by ``k / 10`` for ``k > 10`` (the default was calibrated for
        recall@10)."""
        k = check_positive_int(k, "k")
        if candidates is None:
            return max(k, math.ceil(self._candidates * max(1.0, k / CALIBRATION_K)))
        c = check_positive_int(candidates, "candidates")
        if c < k:
            raise InputError(
                f"candidates: must be >= k (got candidates={c}, k={k}); the rerank can only return what stage one found"
            )
        return c

    def search(
        self,
        queries: np.ndarray,
        k: int = 10,
        candidates: int | None = None,
        *,
        query_filter: Any | None = None,
        timings: dict[str, float] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` for each query: ``(scores, ids)``, each ``(n_queries, k)``, best first.

        ``candidates``: how many coarse hits to rerank (default: the calibrated value). Missing
        results (fewer than ``k`` stored vectors) have id ``-1`` and score ``-inf``. Many queries are
        processed in batches; calls from several threads may run concurrently. ``timings``, when
        given, accumulates seconds spent under ``"adapt"``, ``"coarse"`` and ``"rerank"``.
        ``query_filter`` is passed to backends that support filters (Qdrant).
        """
        q = self._check_vectors(queries, "queries")
        k = check_positive_int(k, "k")
        c = self.resolve_candidates(k, candidates)
        kw: dict[str, Any] = {}
        if timings is not None and getattr(self._backend, "supports_timings", False):
            kw["timings"] = timings
        if query_filter is not None:
            kw["query_filter"] = query_filter
        scores = np.empty((len(q), k), dtype=np.float32)
        ids = np.empty((len(q), k), dtype=np.int64)
        with self._lock.read():
            for sl in iter_row_chunks(len(q), _SEARCH_CHUNK_ROWS):
                t0 = time.perf_counter()
                coarse, full = self._prepare(q[sl])
                if timings is not None:
                    timings["adapt"] = timings.get("adapt", 0.0) + time.perf_counter() - t0
                scores[sl], ids[sl] = self._backend.search(coarse, full, k, c, **kw)
        return scores, ids

    def exact_search(self, queries: np.ndarray, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """Exact brute-force search over the full (rerank) vectors: the ground truth for recall."""
        q = self._check_vectors(queries, "queries")
        k = check_positive_int(k, "k")
        scores = np.empty((len(q), k), dtype=np.float32)
        ids = np.empty((len(q), k), dtype=np.int64)
        with self._lock.read():
            for sl in iter_row_chunks(len(q), _SEARCH_CHUNK_ROWS):
                scores[sl], ids[sl] = self._backend.exact_search(self._prepare_full(q[sl]), k)
        return scores, ids

    # ------------------------------------------------------------------ calibration
    def calibrate(
        self,
        queries: np.ndarray,
        *,
        target_recall: float | None = None,
        max_candidates: int = _MAX_CANDIDATES,
        quiet: bool = False,
    ) -> dict[str, Any]:
        """Re-calibrate the default candidate count on your own queries (e.g. real user queries,
        which may differ from corpus rows) so recall@10 against exact search reaches
        ``target_recall`` (default: the build's target). Stores and returns the calibration record;
        save the index to keep it."""
        q = self._check_vectors(queries, "queries")
        target = check_fraction(
            self._calibration.get("target_recall", 0.99) if target_recall is None else target_recall, "target_recall"
        )
        max_candidates = check_positive_int(max_candidates, "max_candidates")
        with self._lock.write():
            record = self._calibrate(
                q,
                target=target,
                truth=None,
                fixed=None,
                max_candidates=max_candidates,
                truth_note="exact inner-product search over the index's full vectors, for the given queries",
                query_source="caller's queries",
                quiet=quiet,
            )
            self._modified_since_load = True
            self._attach_metadata()
        return record

    def _calibrate_held_out(
        self,
        vectors: np.ndarray,
        id_arr: np.ndarray,
        held: np.ndarray,
        indexed: np.ndarray,
        *,
        target_recall: float,
        fixed: int | None,
        quiet: bool,
    ) -> None:
        """Build-time calibration: the ``held`` rows (not yet in the index) are the queries.

        The ground truth is exact search over the indexed rows; queries unlike the corpus (short
        questions against long documents) may need more candidates: see :meth:`calibrate`.
        """
        q = np.asarray(vectors[held], dtype=np.float32)
        truth = None
        note = "exact inner-product search over the original full vectors (the rerank vectors)"
        k = min(CALIBRATION_K, len(self._backend))
        if self.rerank == "adapted" and self._adaptor is not None:
            # The backend holds adapted vectors; recall is promised against search over the originals.
            orig_q = l2_normalize(q) if self.metric == "cosine" else q
            _, rows = exact_topk(orig_q, vectors, k, normalize=self.metric == "cosine", include=indexed)
            truth = np.where(rows >= 0, id_arr[np.maximum(rows, 0)], -1)
            note = "exact inner-product search over the original vectors (rerank uses the adapted ones)"
        self._calibrate(
            q,
            target=target_recall,
            truth=truth,
            fixed=fixed,
            max_candidates=_MAX_CANDIDATES,
            truth_note=note,
            query_source="random corpus rows held out of the index while calibrating, then added",
            k=k,
            quiet=quiet,
        )

    def _calibrate(
        self,
        q: np.ndarray,
        *,
        target: float,
        truth: np.ndarray | None,
        fixed: int | None,
        max_candidates: int,
        truth_note: str,
        query_source: str,
        k: int = CALIBRATION_K,
        quiet: bool = False,
    ) -> dict[str, Any]:
        t_start = time.perf_counter()
        be = self._backend
        n = len(be)
        k = max(1, min(k, n))
        coarse_q, full_q = self._prepare(q)
        if truth is None:
            _, truth = be.exact_search(full_q, k)
        knob = be.search_knob() if hasattr(be, "search_knob") else None
        steps: list[list[Any]] = []
        cache: dict[tuple[int, int | None], float] = {}
        bar = progress(desc="calibrating", unit="search", quiet=quiet)

        def measure(c: int, knob_value: int | None = None) -> tuple[float, float]:
            key = (c, knob_value)
            if key not in cache:
                if knob_value is not None:
                    be.set_search_knob(knob_value)
                _, found = be.search(coarse_q, full_q, k, c)
                cache[key] = recall_with_lower_bound(found, truth)
                steps.append([c, knob_value, round(cache[key][0], 5), round(cache[key][1], 5)])
                bar.update(1)
            return cache[key]

        def recall(c: int, knob_value: int | None = None) -> float:
            # the criterion is the lower confidence bound, so that fresh queries of the same kind
            # reach the target too (the mean alone lands below it about half the time)
            return measure(c, knob_value)[1]

        ladder = _candidate_ladder(k, min(n, max_candidates))
        chosen_knob: int | None = None
        knob_name = knob[0] if knob else None
        try:
            if fixed is not None:
                chosen = fixed
                if knob:
                    chosen_knob = be.get_search_knob() or knob[1][-1]
                method = "fixed by the caller; recall measured"
            elif knob is None:
                found_c = _smallest(ladder, lambda c: recall(c) >= target)
                chosen = found_c if found_c is not None else ladder[-1]
                method = "smallest value of a geometric candidates ladder (x2^(1/4)) reaching the target, by bisection"
            else:
                exhaustive = knob[1][-1]
                c0 = _smallest(ladder, lambda c: recall(c, exhaustive) >= target)
                if c0 is None:
                    chosen, chosen_knob = ladder[-1], exhaustive
                else:
                    # More candidates let a cheaper probe reach the target: try candidates from c0 up to
                    # 4*c0 (every other ladder step) and keep the pair the backend's cost model rates cheapest.
                    best: tuple[float, int, int] | None = None
                    for c in [v for v in ladder if c0 <= v <= 4 * c0][::2]:
                        p = _smallest(knob[1], lambda p, c=c: recall(c, p) >= target)
                        if p is None:
                            continue
                        cost = be.search_cost(c, p)
                        if best is None or cost < best[0]:
                            best = (cost, c, p)
                    assert best is not None  # c0 reached the target with the exhaustive probe
                    _, chosen, chosen_knob = best
                method = (
                    f"smallest candidates reaching the target with exhaustive {knob_name}, then the cheapest "
                    f"({knob_name}, candidates) pair reaching it for candidates up to 4x that"
                )
            achieved, lower = measure(chosen, chosen_knob)
        finally:
            bar.close()
        if knob is not None and chosen_knob is not None:
            be.set_search_knob(chosen_knob)
        self._candidates = int(chosen)
        self._calibration = {
            "k": k,
            "target_recall": target,
            "recall": round(achieved, 5),
            "recall_lower_bound": round(lower, 5),
            "reached": bool(lower >= target),
            "queries": len(q),
            "candidates": int(chosen),
            "knob": {knob_name: int(chosen_knob)} if knob_name and chosen_knob is not None else None,
            "truth": truth_note,
            "method": method,
            "query_source": query_source,
            "steps": steps,
            "seconds": round(time.perf_counter() - t_start, 3),
        }
        return dict(self._calibration)

    # ------------------------------------------------------------------ persistence
    def _manifest(self, backend_section: dict[str, Any] | None = None, files: dict[str, str] | None = None) -> dict:
        manifest: dict[str, Any] = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "library_version": __version__,
            "created": self._created,
            "metric": self.metric,
            "input_dim": self.input_dim,
            "coarse_dim": self.coarse_dim,
            "full_dim": self.full_dim,
            "rerank": self.rerank,
            "adaptor": {
                "kind": adaptor_kind(self._adaptor),
                "directory": ADAPTOR_DIR if self._adaptor is not None else None,
            },
            "count": len(self._backend),
            "candidates": self._candidates,
            "calibration": self._calibration,
            "backend": backend_section if backend_section is not None else {"kind": self._backend.kind},
        }
        if files is not None:
            manifest["files"] = files
        return manifest

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the index to directory ``path`` atomically: everything goes into a temporary sibling
        that is renamed into place, so an interrupted save leaves any previous index at ``path`` intact.

        An existing index at ``path`` is replaced; any other existing, non-empty path is an error."""
        path = check_output_path(path)
        with self._lock.read(), atomic_directory(path) as tmp:
            section = dict(self._backend.save(tmp))
            section.setdefault("kind", self._backend.kind)
            if self._adaptor is not None:
                self._adaptor.save(tmp / ADAPTOR_DIR)
            files = {
                p.relative_to(tmp).as_posix(): sha256_file(p)
                for p in sorted(tmp.rglob("*"))
                if p.is_file() and p.name != MANIFEST_FILE
            }
            manifest = self._manifest(section, files)
            atomic_write_bytes(tmp / MANIFEST_FILE, (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode())
            _fsync_tree(tmp)
        self._path = path.absolute()
        self._modified_since_load = False

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, verify: bool = True, **backend_options: Any) -> MatryoshkaIndex:
        """Open an index saved by :meth:`save`.

        ``verify`` (default) checks every file's sha256 against the manifest (reads every byte once;
        ``verify=False`` only checks the files exist). ``backend_options`` go to the backend's
        ``open`` (FAISS: ``mmap=True`` to memory-map the full vectors, ``device``, ``spill_dir``).
        Any missing, corrupt, foreign or newer-format file fails with one :class:`FormatError` line.
        """
        path = Path(path)
        if not path.exists():
            raise FormatError(f"{path}: no index here (not found)")
        if not path.is_dir():
            raise FormatError(f"{path}: not an index directory (a matryoshka index is a folder with {MANIFEST_FILE})")
        manifest = read_versioned_json(path / MANIFEST_FILE, kind=FORMAT, supported_versions=(FORMAT_VERSION,))
        files = manifest.get("files")
        if not isinstance(files, dict) or not all(isinstance(v, str) for v in files.values()):
            raise FormatError(f"{path / MANIFEST_FILE}: has no valid 'files' checksum table; the manifest is corrupt")
        for rel, digest in files.items():
            target = (path / rel).resolve()
            if Path(rel).is_absolute() or ".." in Path(rel).parts or path.resolve() not in target.parents:
                raise FormatError(f"{path / MANIFEST_FILE}: file entry {rel!r} points outside the index directory")
            if not target.is_file():
                raise FormatError(f"{path / rel}: missing; the index directory is incomplete")
            if verify and sha256_file(target) != digest:
                raise FormatError(
                    f"{path / rel}: checksum does not match the manifest; the file is corrupt or replaced"
                )
        adaptor_meta = manifest.get("adaptor")
        kind = adaptor_meta.get("kind") if isinstance(adaptor_meta, dict) else None
        adaptor: Adaptor
        if kind == "none":
            adaptor = None
        elif kind == "pca":
            adaptor = PCARotation.load(path / ADAPTOR_DIR)
        elif kind == "matryoshka-adaptor":
            adaptor = MatryoshkaAdaptor.load(path / ADAPTOR_DIR)
        else:
            raise FormatError(f"{path / MANIFEST_FILE}: unknown adaptor kind {kind!r}")
        section = manifest.get("backend")
        if not isinstance(section, dict) or not isinstance(section.get("kind"), str):
            raise FormatError(f"{path / MANIFEST_FILE}: has no valid 'backend' section")
        if section["kind"] not in BACKENDS:
            raise FormatError(f"{path / MANIFEST_FILE}: names an unknown backend {section['kind']!r}")
        backend_cls = get_backend_class(section["kind"])  # a missing optional extra says what to install
        _check_backend_options(backend_cls.open, backend_options, section["kind"])
        backend = backend_cls.open(path, section, **backend_options)
        self = cls._from_parts(adaptor, backend, manifest)
        self._path = path.absolute()
        self._modified_since_load = False
        return self

    # ------------------------------------------------------------------ facts
    def info(self) -> dict[str, Any]:
        """Facts for ``mindex info``: counts, dims, adaptor, calibration, device, memory per vector."""
        with self._lock.read():
            b = self._backend.info()
            count = len(self._backend)
        memory = {
            "ram_bytes_per_vector": b.get("ram_bytes_per_vector"),
            "disk_bytes_per_vector": b.get("disk_bytes_per_vector"),
            "full_vectors": b.get("full_vectors"),
            "exact_search_ram_bytes_per_vector": self.full_dim * 4,
        }
        if self._path is not None and not self._modified_since_load and count:
            disk = allocated_bytes(self._path)  # sparse files (qdrant-edge) count what they really use
            memory["disk_bytes_per_vector"] = round(disk / count, 1)
            memory["disk_bytes"] = disk
        adaptor: dict[str, Any] = {"kind": adaptor_kind(self._adaptor)}
        if isinstance(self._adaptor, MatryoshkaAdaptor):
            meta = getattr(self._adaptor, "metadata_", {})
            adaptor["matryoshka_dims"] = list(self._adaptor.matryoshka_dims_)
            adaptor["trained_rows"] = meta.get("training", {}).get("rows")
            with contextlib.suppress(StopIteration, AttributeError):
                adaptor["device"] = str(next(self._adaptor.model_.parameters()).device)
        cal = self._calibration
        return {
            "path": str(self._path) if self._path is not None else None,
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "count": count,
            "input_dim": self.input_dim,
            "coarse_dim": self.coarse_dim,
            "full_dim": self.full_dim,
            "metric": self.metric,
            "rerank": self.rerank,
            "adaptor": adaptor,
            "candidates": {
                "default": self._candidates,
                "calibrated_recall": cal.get("recall"),
                "at_k": cal.get("k"),
                "target_recall": cal.get("target_recall"),
                "reached": cal.get("reached"),
                "knob": cal.get("knob"),
                "calibration_queries": cal.get("queries"),
            },
            "device": b.get("device"),
            "memory": memory,
            "backend": b,
        }
