"""Coarse codes for the FAISS backend: which FAISS index holds a prefix for each structure x code pair.

The coarse stage is a *structure* (how candidates are found) times a *code* (how each prefix is
stored), each pair a FAISS index type of its own:

============  ==========================  ============================  ===============================
code          ``flat`` (every vector)      ``hnsw`` (graph)              ``ivf`` (inverted lists)
============  ==========================  ============================  ===============================
``float``     ``IndexIDMap(IndexFlatIP)``  ``IndexHNSWFlat``             ``IndexIVFFlat``
``sq8``       ``IndexScalarQuantizer``     ``IndexHNSWSQ``               ``IndexIVFScalarQuantizer``
``sq4``       ``IndexScalarQuantizer``     ``IndexHNSWSQ``               ``IndexIVFScalarQuantizer``
``pq4``       ``IndexPQFastScan``          ``IndexHNSWPQ`` (4-bit)       ``IndexIVFPQFastScan``
``rabitq``    ``IndexRaBitQFastScan``      refused (see below)           ``IndexIVFRaBitQFastScan``
``binary``    ``IndexBinaryFlat``          ``IndexBinaryHNSW``           ``IndexBinaryIVF``
============  ==========================  ============================  ===============================

Bytes a vector for a ``d``-dim prefix: float ``4d``, sq8 ``d``, sq4 ``d/2``, pq4 ``pq_m/2``
(default ``pq_m = d``), rabitq ``d/8`` plus 8 bytes of per-vector factors (``rabitq_bits`` > 1 adds
``(bits-1) d/8``), binary ``d/8`` (sign bits; Hamming distance, reported as the +-1 inner product
``d - 2 hamming``). Graphs add their links, IVF its 8-byte ids and centroids: the backend measures
what a built index really holds (its serialised size), never this table.

Refused: ``hnsw`` x ``rabitq``: FAISS 1.15's ``IndexHNSWRaBitQ`` accepts the L2 metric only, and
adapted prefixes are not unit-norm, so L2 order is not inner-product order.

Labels: flat-float and every IVF index store the row of each vector as its label (``IndexIDMap`` or
the lists' ids) and delete with ``remove_ids``; every other index labels a vector by its insertion
position, which the backend keeps equal to its row, so no id map costs 8 bytes a vector; removed rows
stay in such an index and are kept out of the results by the backend.
"""

from __future__ import annotations

import contextlib
import functools
import math
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import faiss
import numpy as np

from ..errors import FormatError, InputError

T = TypeVar("T")

STRUCTURES = ("flat", "hnsw", "ivf")
CODES = ("float", "sq8", "sq4", "pq4", "rabitq", "binary")
REFUSED = {
    ("hnsw", "rabitq"): "FAISS 1.15's IndexHNSWRaBitQ supports the L2 metric only, not inner product",
}
PAIRS = tuple((s, c) for s in STRUCTURES for c in CODES if (s, c) not in REFUSED)
_SQ = {"sq8": faiss.ScalarQuantizer.QT_8bit, "sq4": faiss.ScalarQuantizer.QT_4bit}
_IP = faiss.METRIC_INNER_PRODUCT
TRAIN_ROWS = 65536  # SQ ranges, PQ codebooks and the RaBitQ centroid: 64k rows train them as well as 1M


def default_pq_m(coarse_dim: int) -> int:
    """One 4-bit sub-quantizer per dimension (``coarse_dim / 2`` bytes a vector, 8x less than float32).

    Two dimensions per sub-quantizer halve the bytes again, but on a 32-dim PCA prefix they needed
    about 5x the candidates for the same recall (761 against 160; flat needed 17), which the rerank
    pays for.
    """
    return coarse_dim


def default_nlist(n: int) -> int:
    """IVF list count for ``n`` vectors: about 4 sqrt(n), and at least 39 training points per list."""
    return int(max(1, min(round(4 * math.sqrt(max(n, 1))), n // 39)))


def nprobe_ladder(nlist: int) -> list[int]:
    ladder = [1]
    while ladder[-1] * 2 < nlist:
        ladder.append(ladder[-1] * 2)
    if ladder[-1] != nlist:
        ladder.append(nlist)
    return ladder


_BLAS_THRESHOLD = 20 * 64
_FAISS_DEFAULT_BLAS_THRESHOLD = 128000
_blas_lock = threading.Lock()
_blas_users = 0
_blas_saved: int | None = None


@contextlib.contextmanager
def flat_search_blas() -> Iterator[None]:
    """Let FAISS's exhaustive search use BLAS from about 20 queries of 64 dimensions on, for this call only.

    FAISS takes its sequential (non-BLAS) kernel while ``n_queries * dim < 128000``: for a 64-dim
    coarse index that is every batch under 2,000 queries, and a batch of 1,000 then runs about 6x
    slower than with BLAS (measured on 49k x 64, 2 cores). The setting is a process-wide FAISS
    global, so it is lowered while one of our searches runs and put back when the last one ends
    (concurrent searches share one change), and only from FAISS's own default: a value the user
    set is kept, and code of the user's beside ours never sees ours.
    """
    global _blas_users, _blas_saved
    with _blas_lock:
        if _blas_users == 0:
            current = int(faiss.cvar.distance_compute_blas_threshold)
            _blas_saved = current if current == _FAISS_DEFAULT_BLAS_THRESHOLD else None
            if _blas_saved is not None:
                faiss.cvar.distance_compute_blas_threshold = _BLAS_THRESHOLD
        _blas_users += 1
    try:
        yield
    finally:
        with _blas_lock:
            _blas_users -= 1
            if _blas_users == 0 and _blas_saved is not None:
                faiss.cvar.distance_compute_blas_threshold = _blas_saved
                _blas_saved = None


def with_flat_search_blas(method: Callable[..., T]) -> Callable[..., T]:
    """Decorator: run ``method`` inside :func:`flat_search_blas`."""

    @functools.wraps(method)
    def wrapped(*args: Any, **kwargs: Any) -> T:
        with flat_search_blas():
            return method(*args, **kwargs)

    return wrapped


def pairs_line() -> str:
    return ", ".join(f"{s}+{c}" for s, c in PAIRS)


def check_pair(structure: str, code: str, coarse_dim: int) -> None:
    """Raise one line when FAISS cannot hold ``code`` in ``structure`` for a ``coarse_dim`` prefix."""
    if code not in CODES:
        raise InputError(f"code: unknown coarse code {code!r}; choose one of {', '.join(CODES)}")
    if (structure, code) in REFUSED:
        raise InputError(
            f"index={structure!r} with code={code!r}: {REFUSED[structure, code]}; pairs FAISS can do: {pairs_line()}"
        )
    if code == "binary" and coarse_dim % 8:
        raise InputError(
            f"code='binary': coarse_dim must be a multiple of 8 (sign bits pack in bytes), got {coarse_dim}"
        )


def labels_are_rows_given(structure: str, code: str) -> bool:
    """True when the index labels vectors itself (flat-float via IndexIDMap, IVF via its lists)."""
    return structure == "ivf" or (structure, code) == ("flat", "float")


def needs_training(structure: str, code: str) -> bool:
    return structure == "ivf" or code in ("sq8", "sq4", "pq4", "rabitq")


def encode(code: str, x: np.ndarray) -> np.ndarray:
    """What the FAISS index takes for float prefixes ``x``: sign bits for binary, else ``x`` itself."""
    if code == "binary":
        return np.packbits(x > 0, axis=1)
    return x


def make_index(
    structure: str, code: str, dim: int, params: dict[str, Any], nlist: int = 0, *, fast_scan: bool = True
) -> Any:
    """An empty (untrained) FAISS index for the pair; ``params`` holds hnsw_m, ef_construction, pq_m, rabitq_bits.

    ``fast_scan=False`` (IVF with pq4 only): FAISS's ordinary 4-bit ``IndexIVFPQ`` layout, whose scanner takes
    ``store_pairs`` (implicit ids, :mod:`.ivf_lists`), instead of the fast-scan one that refuses it."""
    m_links = int(params.get("hnsw_m", 32))
    pq_m = int(params.get("pq_m") or dim)
    bits = int(params.get("rabitq_bits", 1))
    if structure == "ivf":
        if code == "binary":
            index = faiss.IndexBinaryIVF(faiss.IndexBinaryFlat(dim), dim, nlist)
        else:
            quantizer = faiss.IndexFlatIP(dim)
            if code == "float":
                index = faiss.IndexIVFFlat(quantizer, dim, nlist, _IP)
            elif code in _SQ:
                index = faiss.IndexIVFScalarQuantizer(quantizer, dim, nlist, _SQ[code], _IP)
            elif code == "pq4" and fast_scan:
                index = faiss.IndexIVFPQFastScan(quantizer, dim, nlist, pq_m, 4, _IP)
            elif code == "pq4":
                index = faiss.IndexIVFPQ(quantizer, dim, nlist, pq_m, 4, _IP)
            else:
                index = faiss.IndexIVFRaBitQFastScan(quantizer, dim, nlist, _IP, 32, True, bits)
            index.own_fields = True
            quantizer.this.disown()  # the IVF index owns (and frees) its quantizer
        index.cp.seed = 1234
        index.cp.max_points_per_centroid = 64  # k-means on at most 64 points per list: time, not quality, limits
        return index
    if structure == "hnsw":
        if code == "float":
            index = faiss.IndexHNSWFlat(dim, m_links, _IP)
        elif code in _SQ:
            index = faiss.IndexHNSWSQ(dim, _SQ[code], m_links, _IP)
        elif code == "pq4":
            index = faiss.IndexHNSWPQ(dim, pq_m, m_links, 4, _IP)
        else:
            index = faiss.IndexBinaryHNSW(dim, m_links)
        index.hnsw.efConstruction = int(params.get("ef_construction", 80))
        return index
    if code == "float":
        flat = faiss.IndexFlatIP(dim)
        index = faiss.IndexIDMap(flat)
        index.own_fields = True
        flat.this.disown()
        return index
    if code in _SQ:
        return faiss.IndexScalarQuantizer(dim, _SQ[code], _IP)
    if code == "pq4":
        return faiss.IndexPQFastScan(dim, pq_m, 4, _IP)
    if code == "rabitq":
        return faiss.IndexRaBitQFastScan(dim, _IP, 32, bits)
    return faiss.IndexBinaryFlat(dim)


def train(index: Any, code: str, sample: np.ndarray, structure: str) -> None:
    """Train on the build sample (k-means lists on all of it; code parameters on at most 64k rows)."""
    if structure != "ivf" and len(sample) > TRAIN_ROWS:
        rows = np.sort(np.random.default_rng(1234).permutation(len(sample))[:TRAIN_ROWS])
        sample = sample[rows]
    index.train(np.ascontiguousarray(encode(code, sample)))


def search_params(structure: str, code: str, ef: int, nprobe: int, sel: Any = None) -> Any:
    """FAISS search parameters for one search (``None`` where the index takes none)."""
    if structure == "hnsw":
        return (
            faiss.SearchParametersHNSW(efSearch=ef, sel=sel)
            if sel is not None
            else faiss.SearchParametersHNSW(efSearch=ef)
        )
    if structure == "ivf":
        if code == "rabitq":
            params = faiss.IVFRaBitQSearchParameters()
            params.nprobe = nprobe
            params.qb = 8  # 8-bit queries: the estimate's error is the codes', not the query's
            return params
        return faiss.SearchParametersIVF(nprobe=nprobe)
    return None


def scores_from(code: str, distances: np.ndarray, dim: int) -> np.ndarray:
    """Coarse scores, higher better: inner products, or the +-1 inner product ``d - 2 hamming`` for binary."""
    if code == "binary":
        return (dim - 2 * distances.astype(np.int64)).astype(np.float32)
    return distances


def supports_selector(structure: str, code: str) -> bool:
    """Whether searches filter removed rows with an ``IDSelector`` (else the backend over-fetches and drops them)."""
    return structure == "hnsw" and code != "binary"


def write(index: Any, path: Path) -> None:
    if isinstance(index, faiss.IndexBinary):
        faiss.write_index_binary(index, str(path))
    else:
        faiss.write_index(index, str(path))


def read(path: Path, code: str) -> Any:
    return faiss.read_index_binary(str(path)) if code == "binary" else faiss.read_index(str(path))


def serialized_bytes(index: Any) -> int:
    """What the index holds, measured: the size of its FAISS serialisation (codes, links, lists, ids, factors)."""
    if index is None:
        return 0
    if isinstance(index, faiss.IndexBinary):
        return int(faiss.serialize_index_binary(index).size)
    return int(faiss.serialize_index(index).size)


def ivf_exhaustive_hits(index: Any, coarse_queries: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``(scores, rows)`` of a float IVF index probed in every list, as one BLAS flat search over the lists'
    vectors (the same rows up to float rounding, ~10x faster at 1M vectors; the calibration asks for it to
    find how many candidates an exact coarse stage needs). ``-1`` rows (score ``-inf``) where fewer exist."""
    invlists = faiss.extract_index_ivf(index).invlists
    vecs, labels = [], []
    for lst in range(invlists.nlist):
        size = invlists.list_size(lst)
        if size:
            raw = faiss.rev_swig_ptr(invlists.get_codes(lst), size * invlists.code_size)
            vecs.append(np.frombuffer(raw, dtype=np.float32).reshape(size, index.d).copy())
            labels.append(faiss.rev_swig_ptr(invlists.get_ids(lst), size).copy())
    if not vecs:
        return np.full((len(coarse_queries), n), -np.inf, np.float32), np.full((len(coarse_queries), n), -1, np.int64)
    scores, pos = faiss.knn(coarse_queries, np.concatenate(vecs), n, metric=_IP)
    all_labels = np.concatenate(labels)
    return scores, np.where(pos >= 0, all_labels[np.maximum(pos, 0)], -1)


BALANCES = ("none", "itq")
BALANCE_FILE = "balance.npy"


def itq_balance(sample: np.ndarray, iterations: int = 50, seed: int = 1234) -> np.ndarray:
    """ITQ (Gong & Lazebnik 2011) inside the prefix: ``(dim + 1, dim)``, row 0 the sample mean, rows 1: an
    orthogonal ``R`` minimising ``||sign(V R) - V R||_F`` over the centred sample ``V``.

    Stored prefixes become ``(x - mean) R`` and queries ``q R``: ``q R . (x - mean) R = q . x - q . mean``
    differs from the prefix inner product by a per-query constant, so every query's coarse order on
    float prefixes is unchanged, while sign bits (and uniform scalar cells) stop spending themselves
    on the few high-variance directions a PCA-like prefix puts first. Alternating minimisation:
    ``B = sign(V R)``, then ``R = U W^T`` from the SVD ``V^T B = U S W^T`` (orthogonal Procrustes).
    """
    x = np.asarray(sample, dtype=np.float64)
    if len(x) > TRAIN_ROWS:
        x = x[np.sort(np.random.default_rng(seed).permutation(len(x))[:TRAIN_ROWS])]
    mean = x.mean(axis=0)
    v = x - mean
    rng = np.random.default_rng(seed)
    r = np.linalg.qr(rng.standard_normal((x.shape[1], x.shape[1])))[0]
    for _ in range(iterations):
        b = np.where(v @ r >= 0, 1.0, -1.0)
        u, _, wt = np.linalg.svd(v.T @ b)
        r = u @ wt
    return np.vstack([mean[None, :], r]).astype(np.float32)


def balance_stored(balance: np.ndarray | None, x: np.ndarray) -> np.ndarray:
    return x if balance is None else np.ascontiguousarray((x - balance[0]) @ balance[1:], dtype=np.float32)


def balance_queries(balance: np.ndarray | None, q: np.ndarray) -> np.ndarray:
    return q if balance is None else np.ascontiguousarray(q @ balance[1:], dtype=np.float32)


def read_balance(directory: Path, coarse_dim: int) -> np.ndarray:
    """The saved balance rotation of an index directory, checked (one-line :class:`FormatError` if bad)."""
    path = Path(directory) / BALANCE_FILE
    try:
        matrix = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise FormatError(f"{path}: cannot read the balance rotation ({exc})") from None
    if matrix.dtype != np.float32 or matrix.shape != (coarse_dim + 1, coarse_dim):
        raise FormatError(
            f"{path}: expected float32 ({coarse_dim + 1}, {coarse_dim}), found {matrix.dtype} {matrix.shape}"
        )
    return matrix
