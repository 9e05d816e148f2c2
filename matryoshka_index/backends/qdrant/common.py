"""What both Qdrant backends (``qdrant`` and ``qdrant-edge``) share: vector names, input checks, sizes.

Imports neither qdrant-client nor qdrant-edge, so each backend takes it without the other's package.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np

from ...errors import InputError
from ..base import COARSE, FULL, Payloads, quantized_bytes

QUANTIZATIONS = (None, "int8", "binary")
"""The older ``coarse_quantization`` vocabulary; each is one of :data:`CODES` (see :data:`LEGACY_CODES`)."""

CODES = ("float", "sq8", "binary", "binary1.5", "binary2", "turbo4", "turbo2", "turbo1")
"""Coarse codes both Qdrant backends store (the FAISS backend's vocabulary, where Qdrant has the code):
``float`` (no quantization), ``sq8`` (Qdrant's int8 scalar quantization), ``binary`` / ``binary1.5`` /
``binary2`` (binary quantization with the one-bit, one-and-half-bits and two-bits encodings) and
``turbo4`` / ``turbo2`` / ``turbo1`` (TurboQuant, Qdrant >= 1.18)."""
LEGACY_CODES = {None: "float", "int8": "sq8", "binary": "binary"}
"""``coarse_quantization`` -> ``code``."""
FAISS_ONLY_CODES = {
    "sq4": "Qdrant's scalar quantization is int8 only",
    "pq4": "Qdrant's product quantization has 256-centroid (8-bit) codes, not 4-bit ones",
    "rabitq": "Qdrant has no RaBitQ",
}
TURBO_MIN_SERVER = (1, 18)
"""TurboQuant needs a Qdrant server of at least this version."""
BINARY_BITS = {"binary": 1.0, "binary1.5": 1.5, "binary2": 2.0}
TURBO_BITS = {"turbo4": 4, "turbo2": 2, "turbo1": 1}
ID_BYTES = 21
"""Qdrant's per-point id bookkeeping (id mapping ~13 + version 8 bytes), as qdrant-edge 0.9 writes it."""


class Closing:
    """``close()`` (idempotent: it runs the backend's ``weakref.finalize``) and use as a context manager."""

    _finalizer: Any

    def close(self) -> None:
        """Release what the backend holds: its client (if it opened it), or its shard, lock and working copy."""
        self._finalizer()

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def first_line(exc: BaseException) -> str:
    """The first line of an exception's text (its class name when it has none)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else exc.__class__.__name__


def resolve_code(code: str | None, coarse_quantization: str | None, backend: str) -> str:
    """The coarse code of ``create(code=..., coarse_quantization=...)``: one of :data:`CODES`.

    ``coarse_quantization`` (the older option, deprecated until 0.2: it warns) maps onto the same
    thing (``int8`` -> ``sq8``, ``binary`` -> ``binary``); given both, they must agree. One line for a
    code Qdrant cannot store.
    """
    if coarse_quantization not in QUANTIZATIONS:
        raise InputError(f"coarse_quantization: choose None, 'int8' or 'binary', got {coarse_quantization!r}")
    if coarse_quantization is not None:
        warnings.warn(
            "coarse_quantization= is deprecated and will be removed in 0.2; give code= "
            f"(coarse_quantization={coarse_quantization!r} is code={LEGACY_CODES[coarse_quantization]!r})",
            DeprecationWarning,
            stacklevel=3,
        )
    legacy = LEGACY_CODES[coarse_quantization]
    if code is None:
        return legacy
    if code not in CODES:
        why = FAISS_ONLY_CODES.get(code) if isinstance(code, str) else None
        reason = f" ({why}; backend='faiss' has it)" if why else ""
        raise InputError(f"code: the {backend} backend stores coarse as {', '.join(CODES)}; got {code!r}{reason}")
    if coarse_quantization is not None and legacy != code:
        raise InputError(
            f"code={code!r} and coarse_quantization={coarse_quantization!r} disagree "
            f"(coarse_quantization={coarse_quantization!r} means code={legacy!r}); give only code="
        )
    return code


RENAMED_OPTIONS = {"hnsw_ef_construct": "ef_construction", "hnsw_ef": "ef_search"}
"""Former Qdrant names of settings -> the one name every backend uses (the FAISS backend's and
``mindex build``'s ``--ef-construction`` / ``--ef-search``). The former names still work, with a
:class:`DeprecationWarning`, until 0.2; saved manifest sections keep their keys (the file format)."""


def renamed_option(new: str, value: Any, old_value: Any) -> Any:
    """The value of setting ``new`` given as ``new=value`` or by its former name (with a DeprecationWarning).

    ``None`` means not given. Given both ways with different values: one line.
    """
    if old_value is None:
        return value
    old = next(k for k, v in RENAMED_OPTIONS.items() if v == new)
    warnings.warn(f"{old}= is deprecated and will be removed in 0.2; give {new}=", DeprecationWarning, stacklevel=3)
    if value is not None and value != old_value:
        raise InputError(
            f"{old}={old_value!r} and {new}={value!r} disagree ({old} is the former name); give only {new}="
        )
    return old_value


def quantization_family(code: str) -> str | None:
    """``coarse_quantization`` of a code: ``"int8"``, ``"binary"``, ``"turbo"`` or None (float)."""
    if code == "sq8":
        return "int8"
    if code in BINARY_BITS:
        return "binary"
    if code in TURBO_BITS:
        return "turbo"
    return None


def qdrant_code_bytes(code: str, dim: int) -> int:
    """Bytes a ``dim``-dim vector takes in the code's storage, as Qdrant's engine lays it out (checked
    against qdrant-edge 0.9's ``quantized.data`` files): float ``4 dim``; sq8 ``dim + 4`` (an f32 offset a
    vector); binary ``bits dim`` bits in whole 128-bit words; TurboQuant ``bits dim / 8`` bytes plus 8
    bytes of per-vector factors."""
    if code == "sq8":
        return dim + 4
    if code in BINARY_BITS:
        return math.ceil(BINARY_BITS[code] * dim / 128) * 16
    if code in TURBO_BITS:
        return math.ceil(TURBO_BITS[code] * dim / 8) + 8
    return 4 * dim


def coarse_memory(
    code: str, coarse_dim: int, index: str, hnsw_m: int | None, coarse_on_disk: bool, *, applied: bool = True
) -> dict[str, Any]:
    """Resident bytes a vector of the coarse stage, estimated from the code's size and Qdrant's per-point
    overheads: the code (or the floats, for ``float``), the float coarse vectors unless on disk, level-0
    HNSW links uncompressed (``2 m`` u32; Qdrant compresses them, so this is an upper bound) and the id
    bookkeeping. Where the code is not applied (qdrant-client local mode) the floats are what is held."""
    floats = 4 * coarse_dim
    codes = qdrant_code_bytes(code, coarse_dim) if code != "float" and applied else 0
    originals = 0 if codes and coarse_on_disk else floats
    links = 0 if index == "flat" else 2 * int(hnsw_m or 16) * 4
    return {
        "coarse_code_bytes_per_vector": codes,
        "coarse_float_bytes_per_vector_resident": originals,
        "coarse_links_bytes_per_vector": links,
        "id_bytes_per_vector": ID_BYTES,
        "coarse_resident_bytes_per_vector": codes + originals + links + ID_BYTES,
        "coarse_resident_measured_as": "estimated (code size + Qdrant's per-point overheads, links uncompressed)",
    }


def add_inputs(
    ids: Any, coarse: Any, full: Any, payloads: Payloads, coarse_dim: int, full_dim: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``add``'s inputs as int64 ids and contiguous float32 rows, checked to agree: one coarse and one
    full row (and payload, when given) per id."""
    ids = np.asarray(ids, dtype=np.int64).ravel()
    coarse = np.ascontiguousarray(coarse, dtype=np.float32)
    full = np.ascontiguousarray(full, dtype=np.float32)
    if coarse.shape != (len(ids), coarse_dim) or full.shape != (len(ids), full_dim):
        raise InputError(
            f"add: expected coarse ({len(ids)}, {coarse_dim}) and full ({len(ids)}, {full_dim}), "
            f"got {coarse.shape} and {full.shape}"
        )
    if payloads is not None and len(payloads) != len(ids):
        raise InputError(f"payloads: {len(payloads)} payloads for {len(ids)} vectors; give one per vector (or None)")
    return ids, coarse, full


def membership(ids: np.ndarray, present: set[int]) -> np.ndarray:
    """``contains``'s answer: for each id, whether it is in ``present``."""
    return np.fromiter((int(i) in present for i in ids), dtype=bool, count=len(ids))


def query_pairs(coarse_queries: np.ndarray, full_queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both query sets as float32, one coarse and one full query per row."""
    coarse_queries = np.asarray(coarse_queries, dtype=np.float32)
    full_queries = np.asarray(full_queries, dtype=np.float32)
    if len(coarse_queries) != len(full_queries):
        raise InputError(
            f"search: {len(coarse_queries)} coarse queries but {len(full_queries)} full queries; "
            "give one of each per query"
        )
    return coarse_queries, full_queries


__all__ = [
    "BINARY_BITS",
    "COARSE",
    "CODES",
    "FAISS_ONLY_CODES",
    "FULL",
    "LEGACY_CODES",
    "QUANTIZATIONS",
    "RENAMED_OPTIONS",
    "TURBO_BITS",
    "TURBO_MIN_SERVER",
    "Payloads",
    "add_inputs",
    "coarse_memory",
    "first_line",
    "membership",
    "qdrant_code_bytes",
    "quantization_family",
    "quantized_bytes",
    "query_pairs",
    "renamed_option",
    "resolve_code",
]
