"""``MatryoshkaIndex``: an adaptor composed with a storage backend, and the calibration of candidates.

Search is two-stage. A query ``q`` is adapted as the stored vectors are (through the adaptor's query
head when it has one): its *coarse* vector is the first ``coarse_dim`` columns of ``adaptor.transform_queries(q)``, its *full* vector is ``q`` itself (default,
``rerank="original"``) or the whole adapted vector (``rerank="adapted"``); with ``metric="cosine"``
both are L2-normalised (the coarse prefix after truncation). The backend finds the top
``candidates`` by inner product of coarse vectors, then reranks them by inner product of full
vectors and returns the best ``k``. With the original vectors in the rerank, every returned score
is the exact full-dimension score of that item. ``rerank=None`` keeps the prefix alone (no full
vector on disk or in RAM): a search is then the coarse stage alone, its scores those of the prefix.

Adaptors: ``None`` is the identity (plain truncation of the original vectors: right for models
trained Matryoshka-style), ``"pca"`` a fitted PCA rotation (:class:`PCARotation`, a strong
training-free baseline), ``"train"`` or an unfitted :class:`~matryoshka_index.MatryoshkaAdaptor`
trains on a sample of the corpus, a fitted one is used as it is.

The package, by concern: :mod:`.core` (this class: search, add/remove, the lock, and the only module
that touches the index's state), :mod:`.parts` (what an index holds, and the vectors each stage
compares), :mod:`.build` (the named steps of a build, returning the parts), :mod:`.persistence`
(save/load), :mod:`.describe` (``info()``), :mod:`.locking` (the readers-writer lock); the manifest's
format is :mod:`matryoshka_index.manifest`, the calibration :mod:`matryoshka_index.calibration`.

Saved index layout (a directory, written atomically)::

    manifest.json   the manifest below
    adaptor/        the adaptor's files (absent for the identity)
    ...             the backend's files (FAISS: coarse.faiss, full.npy, ids.npy)

Manifest keys (``manifest.json``; the same dict is handed to backends that store it themselves and
to :meth:`MatryoshkaIndex.from_parts`):

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

import math
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..adaptor import MatryoshkaAdaptor
from ..adaptor.pca import PCARotation
from ..backends.base import Closeable, ReportsTimings, StoresIndexMetadata
from ..calibration import (
    CALIBRATION_K,
    MAX_CANDIDATES,
    CalibrationRecord,
    calibrate_search,
    check_calibration_queries,
)
from ..errors import FormatError, InputError
from ..manifest import ADAPTOR_DIR, PREFIX_ONLY, make_manifest, now_utc
from ..progress import progress
from ..threads import limited as limited_threads
from ..validation import check_embeddings, check_fraction, check_ids, check_positive_int, iter_row_chunks
from .build import BUILD_CHUNK_ROWS, METRICS, RERANKS, build_index
from .describe import describe
from .locking import ReadWriteLock
from .parts import Adaptor, IndexParts, adaptor_kind
from .persistence import load_index, save_index
from .points import Hit, PayloadStore, index_keeps_payloads, store_vectors, to_hits
from .rerank_stop import calibrate_stop

_SEARCH_CHUNK_ROWS = 4096


# ---------------------------------------------------------------------- the index
class MatryoshkaIndex:
    """Vector index: coarse search on an adapted low-dim prefix, rerank at full dimension.

    Create with :meth:`build`, reopen with :meth:`load` (or :meth:`from_qdrant`). See the module
    docstring for the search model, the saved layout and the manifest.
    """

    def __init__(self) -> None:  # use build(), load() or from_parts()
        raise TypeError(
            "use MatryoshkaIndex.build(...), MatryoshkaIndex.load(path) or MatryoshkaIndex.from_qdrant(...)"
        )

    # ------------------------------------------------------------------ construction
    @classmethod
    @limited_threads()  # thread counts for this call only, re-read each call
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
        rerank: str | None = "original",
        payloads: Sequence[dict[str, Any] | None] | None = None,
        backend_options: dict[str, Any] | None = None,
        sample_size: int = 100_000,
        *,
        candidates: int | None = None,
        calibration_queries: int = 1000,
        seed: int = 0,
        quiet: bool = False,
        code: str | None = None,
        ram_budget: float | None = None,
        optimize: str = "speed",
        device: str = "auto",
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
            exact full-dim scores. ``"adapted"``: rerank with the adapted full vectors. ``None``: keep
            only the adapted prefix (no full vectors on disk or in RAM; FAISS): a search is the coarse
            stage alone and returns prefix scores; nothing is calibrated, the recall@10 the prefix
            reaches against exact full-dim search is measured at build and shown by :meth:`info`.
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
        code:
            How the coarse prefixes are stored (FAISS): ``"float"`` (default), ``"sq8"``, ``"sq4"``,
            ``"pq4"``, ``"rabitq"`` or ``"binary"``, with any ``index`` structure FAISS supports
            (see :mod:`matryoshka_index.backends.faiss_codes`; ``index="pq"`` is ``"flat"`` + ``"pq4"``).
            The Qdrant backends take ``"float"``, ``"sq8"``, ``"binary"``, ``"binary1.5"``, ``"binary2"``
            and ``"turbo4"``/``"turbo2"``/``"turbo1"`` (searched with Qdrant's rescoring off: the rerank is ours).
        ram_budget, optimize:
            Resident bytes a vector may keep (FAISS). The index then picks ``coarse_dim``, ``code`` and
            ``index`` itself (those given are ignored): trial indexes on a sample measure each option's
            bytes, recall and queries/s, and the fastest within the budget is built
            (``optimize="memory"``: the fewest bytes at ``target_recall``); an impossible budget is
            refused with the smallest feasible one. See :mod:`matryoshka_index.index.budget`.
        device:
            ``"auto"`` (default: GPU 0 when one is visible, else the CPU), ``"cpu"``, ``"cuda"`` or
            ``"cuda:N"``: the adaptor trains and transforms there, the FAISS coarse stage runs there
            (faiss-gpu, or the torch engine for a flat index when faiss cannot use the GPU) and so
            does the rerank with the torch engine. ``info()["stages"]`` says where each stage runs.
            The saved index is the same on every device.
        """
        parts = build_index(
            vectors,
            coarse_dim=coarse_dim,
            ids=ids,
            adaptor=adaptor,
            backend=backend,
            index=index,
            target_recall=target_recall,
            metric=metric,
            rerank=rerank,
            payloads=payloads,
            backend_options=backend_options,
            sample_size=sample_size,
            candidates=candidates,
            calibration_queries=calibration_queries,
            seed=seed,
            quiet=quiet,
            code=code,
            ram_budget=ram_budget,
            optimize=optimize,
            device=device,
        )
        index = cls._assemble(parts)
        index._attach_metadata()
        return index

    @classmethod
    def _assemble(cls, parts: IndexParts) -> MatryoshkaIndex:
        """The index that owns ``parts`` from now on."""
        self = object.__new__(cls)
        self._adaptor = parts.adaptor
        self._backend = parts.backend
        self.metric = parts.metric
        self.rerank = parts.rerank
        self.input_dim = parts.input_dim
        self.coarse_dim = parts.coarse_dim
        self.full_dim = parts.full_dim
        self._vectors = parts.vectors
        self._candidates = int(parts.candidates)
        self._calibration = parts.calibration
        self._created = parts.created or now_utc()
        self._path = parts.path
        self._modified_since_load = parts.path is None
        self._lock = ReadWriteLock()
        self._payloads = parts.payloads  # used only where the backend keeps no payloads (FAISS)
        return self

    @classmethod
    def from_parts(
        cls,
        adaptor: Adaptor,
        backend: Any,
        manifest: dict[str, Any],
        *,
        payloads: PayloadStore | None = None,
        path: Path | None = None,
    ) -> MatryoshkaIndex:
        """An index around an already-open ``backend`` and ``adaptor`` (or None / a PCARotation), as
        described by ``manifest`` (the dict documented in the module docstring; ``backend`` and
        ``files`` keys are optional here), with the ``payloads`` it keeps itself (FAISS) and the ``path``
        it was loaded from. Internal but public: :meth:`load` and :meth:`from_qdrant` open an index
        through it; an application opens one with those."""
        try:
            metric, rerank = manifest["metric"], manifest["rerank"]
            input_dim, coarse_dim, full_dim = (int(manifest[k]) for k in ("input_dim", "coarse_dim", "full_dim"))
            candidates = int(manifest["candidates"])
            calibration = CalibrationRecord.from_dict(manifest.get("calibration"))
            kind = manifest.get("adaptor", {}).get("kind", adaptor_kind(adaptor))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise FormatError(f"index manifest is incomplete or malformed ({exc.__class__.__name__}: {exc})") from None
        if metric not in METRICS or (rerank is not PREFIX_ONLY and rerank not in RERANKS):
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
        parts = IndexParts(
            adaptor=adaptor,
            backend=backend,
            metric=metric,
            rerank=rerank,
            input_dim=input_dim,
            coarse_dim=coarse_dim,
            full_dim=full_dim,
            candidates=candidates,
            calibration=calibration,
            payloads=payloads if payloads is not None else PayloadStore(),
            created=manifest.get("created"),
            path=path,
        )
        return cls._assemble(parts)

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
        from ..qdrant_open import open_index_from_qdrant

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
        """How the default candidates were chosen: the manifest's ``calibration`` section (a fresh dict)."""
        return self._calibration.to_dict()

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

    def _prepare(self, x: np.ndarray, *, queries: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """(coarse, full) float32 vectors of validated rows ``x``, as stored or as queried (:class:`.parts.StageVectors`)."""
        return self._vectors.prepare(x, queries=queries)

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
        if payloads is not None and index_keeps_payloads(self._backend):
            payloads = PayloadStore.check(payloads)
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
            with progress(total=len(x), desc="adding", unit="vec", quiet=quiet or len(x) < 4 * BUILD_CHUNK_ROWS) as bar:
                for sl in iter_row_chunks(len(x), BUILD_CHUNK_ROWS):
                    coarse, full = self._prepare(x[sl])
                    chunk_payloads = None if payloads is None else list(payloads[sl])
                    store_vectors(self._backend, self._payloads, id_arr[sl], coarse, full, chunk_payloads)
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
            self._payloads.remove(id_arr[present].tolist())
            self._modified_since_load = True
            self._attach_metadata()
        return removed

    def _attach_metadata(self) -> None:
        if not isinstance(self._backend, StoresIndexMetadata):
            return
        files = self._adaptor.to_files() if self._adaptor is not None else None
        self._backend.attach_index_metadata(self._manifest(), files)

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
        if timings is not None and isinstance(self._backend, ReportsTimings) and self._backend.supports_timings:
            kw["timings"] = timings
        if query_filter is not None:
            kw["query_filter"] = query_filter
        scores = np.empty((len(q), k), dtype=np.float32)
        ids = np.empty((len(q), k), dtype=np.int64)
        with self._lock.read(), limited_threads():  # thread counts for this call only, re-read each call
            for sl in iter_row_chunks(len(q), _SEARCH_CHUNK_ROWS):
                t0 = time.perf_counter()
                coarse, full = self._prepare(q[sl], queries=True)
                if timings is not None:
                    timings["adapt"] = timings.get("adapt", 0.0) + time.perf_counter() - t0
                scores[sl], ids[sl] = self._backend.search(coarse, full, k, c, **kw)
        return scores, ids

    def query(
        self,
        queries: np.ndarray,
        k: int = 10,
        *,
        with_payload: bool = False,
        query_filter: Any | None = None,
        candidates: int | None = None,
    ) -> list[list[Hit]]:
        """Top-``k`` per query as :class:`~matryoshka_index.index.points.Hit` lists (``id``, ``score``, ``payload``).

        Like qdrant-client's ``query_points``: ``id`` is the point's own id exactly as stored (an int,
        or a UUID string in a migrated Qdrant collection), ``payload`` its payload when
        ``with_payload`` (FAISS: the ``payloads=`` given to ``build``/``add``). ``query_filter`` and
        ``candidates`` as in :meth:`search`, which stays the array-shaped call for numeric work.
        A 1-d ``queries`` is one query (the result is still a list of one list).
        """
        q = np.asarray(queries)
        q = q[None] if q.ndim == 1 else q
        scores, handles = self.search(q, k, candidates, query_filter=query_filter)
        with self._lock.read():
            return to_hits(self._backend, self._payloads, scores, handles, with_payload=with_payload)

    def exact_search(self, queries: np.ndarray, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """Exact brute-force search over the full (rerank) vectors: the ground truth for recall."""
        q = self._check_vectors(queries, "queries")
        k = check_positive_int(k, "k")
        scores = np.empty((len(q), k), dtype=np.float32)
        ids = np.empty((len(q), k), dtype=np.int64)
        with self._lock.read():
            for sl in iter_row_chunks(len(q), _SEARCH_CHUNK_ROWS):
                scores[sl], ids[sl] = self._backend.exact_search(self._vectors.prepare_full(q[sl]), k)
        return scores, ids

    # ------------------------------------------------------------------ calibration
    def calibrate(
        self,
        queries: np.ndarray,
        *,
        target_recall: float | None = None,
        max_candidates: int = MAX_CANDIDATES,
        quiet: bool = False,
    ) -> dict[str, Any]:
        """Re-calibrate the default candidate count on your own queries (e.g. real user queries,
        which may differ from corpus rows) so recall@10 against exact search reaches
        ``target_recall`` (default: the build's target). Stores and returns the calibration record;
        save the index to keep it.

        The criterion is the recall's one-sided 95% lower confidence bound, which needs enough
        queries to mean anything (:func:`~matryoshka_index.calibration.min_queries`: 27 for 0.99,
        265 for 0.999); fewer, or a target of 1.0, are refused with an :class:`InputError`. A target
        not reached within ``max_candidates`` raises :class:`~matryoshka_index.errors.CalibrationError`
        (its ``record`` holds every step measured) and the index keeps the default it had."""
        if self.rerank is PREFIX_ONLY:
            raise InputError(
                "calibrate: this index keeps only the prefix (rerank=None): there are no rerank candidates to "
                "calibrate, its search is the coarse stage alone"
            )
        q = self._check_vectors(queries, "queries")
        target = check_fraction(
            (self._calibration.target_recall or 0.99) if target_recall is None else target_recall, "target_recall"
        )
        max_candidates = check_positive_int(max_candidates, "max_candidates")
        check_calibration_queries(len(q), target, max(1, min(CALIBRATION_K, len(self._backend))))
        with self._lock.write(), limited_threads():
            started = time.perf_counter()
            coarse_q, full_q = self._prepare(q, queries=True)
            be = self._backend
            record = calibrate_search(
                be,
                coarse_q,
                full_q,
                target=target,
                max_candidates=max_candidates,
                truth_note="exact inner-product search over the index's full vectors, for the given queries",
                query_source="caller's queries",
                quiet=quiet,
                if_not_reached="raise",
                candidates_now=self._candidates,
                started=started,
            )
            self._candidates = int(record.candidates)  # type: ignore[arg-type]  # a calibration always sets it
            self._calibration = record
            self._modified_since_load = True
            self._attach_metadata()
        return record.to_dict()

    def calibrate_rerank_stop(
        self, queries: np.ndarray, *, target_recall: float | None = None, candidates: int | None = None
    ) -> dict[str, Any]:
        """Calibrate the rerank's per-query stop (FAISS backend; issue 22) on ``queries``: each query stops
        reranking once its remaining candidates cannot enter its top 10 at the calibrated margin, so easy
        queries read fewer full vectors. Kept (and saved with the index) only where its recall@10's lower bound
        reaches ``target_recall`` (default: the build's target) at ``candidates`` (default: the calibrated
        ones) while reranking fewer candidates on average than without it; returns the record
        (:mod:`.rerank_stop`). :class:`~matryoshka_index.errors.CalibrationError` when no stop reaches it."""
        if self.rerank is PREFIX_ONLY:
            raise InputError("calibrate_rerank_stop: this index keeps only the prefix (rerank=None): nothing to rerank")
        q = self._check_vectors(queries, "queries")
        target = check_fraction(
            (self._calibration.target_recall or 0.99) if target_recall is None else target_recall, "target_recall"
        )
        k = max(1, min(CALIBRATION_K, len(self._backend)))
        check_calibration_queries(len(q), target, k)
        c = self.resolve_candidates(k, candidates)
        with self._lock.write(), limited_threads():
            coarse_q, full_q = self._prepare(q, queries=True)
            _, truth = self._backend.exact_search(full_q, k)
            record = calibrate_stop(self._backend, coarse_q, full_q, truth, k=k, target=target, candidates=c)
            self._modified_since_load = True
        return record

    # ------------------------------------------------------------------ persistence
    def _manifest(self, backend_section: dict[str, Any] | None = None, files: dict[str, str] | None = None) -> dict:
        return make_manifest(
            created=self._created,
            metric=self.metric,
            input_dim=self.input_dim,
            coarse_dim=self.coarse_dim,
            full_dim=self.full_dim,
            rerank=self.rerank,
            adaptor_kind=adaptor_kind(self._adaptor),
            adaptor_directory=ADAPTOR_DIR if self._adaptor is not None else None,
            count=len(self._backend),
            candidates=self._candidates,
            calibration=self._calibration.to_dict(),
            backend=backend_section if backend_section is not None else {"kind": self._backend.kind},
            files=files,
        )

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the index to directory ``path`` atomically: everything goes into a temporary sibling
        that is renamed into place, so an interrupted save leaves any previous index at ``path`` intact.

        An existing index at ``path`` is replaced; any other existing, non-empty path is an error."""
        with self._lock.read():
            path = save_index(
                path, backend=self._backend, adaptor=self._adaptor, payloads=self._payloads, manifest=self._manifest
            )
        self._path = path.absolute()
        self._modified_since_load = False

    @classmethod
    def load(
        cls, path: str | os.PathLike[str], *, verify: bool = True, device: str = "auto", **backend_options: Any
    ) -> MatryoshkaIndex:
        """Open an index saved by :meth:`save`.

        ``device``: where the adaptor, the coarse stage and the rerank run, as in :meth:`build`
        (``"gpu"``, the FAISS backend's older spelling, still means "the GPU when one works").

        ``verify`` (default) checks every file's sha256 against the manifest (reads every byte once;
        ``verify=False`` only checks the files exist). ``backend_options`` go to the backend's
        ``open`` (FAISS: ``mmap=True`` to memory-map the full vectors, ``device``, ``spill_dir``).
        Any missing, corrupt, foreign or newer-format file fails with one :class:`FormatError` line.
        """
        return load_index(cls.from_parts, path, verify=verify, backend_options=backend_options, device=device)

    # ------------------------------------------------------------------ facts
    def info(self) -> dict[str, Any]:
        """Facts for ``mindex info``: counts, dims, adaptor, calibration, device, memory per vector."""
        with self._lock.read():
            backend_info = self._backend.info()
            count = len(self._backend)
        return describe(
            adaptor=self._adaptor,
            metric=self.metric,
            rerank=self.rerank,
            dims=(self.input_dim, self.coarse_dim, self.full_dim),
            candidates=self._candidates,
            calibration=self._calibration,
            backend_info=backend_info,
            count=count,
            path=self._path,
            saved_as_is=self._path is not None and not self._modified_since_load,
        )

    # ------------------------------------------------------------------ lifecycle
    def close(self) -> None:
        """Release what the backend holds (a Qdrant client it opened, a qdrant-edge shard and its lock).

        Backends without anything to release (FAISS) need no call. Idempotent; the index is unusable
        afterwards for backends that close something. ``with MatryoshkaIndex.load(path) as index:``
        closes it on leaving the block.
        """
        if isinstance(self._backend, Closeable):
            self._backend.close()

    def __enter__(self) -> MatryoshkaIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
