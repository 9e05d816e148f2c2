"""The qdrant-client side of a collection this index owns: metrics, the named-vector layout, coarse codes.

A coarse code (:data:`~.common.CODES`) is one of Qdrant's quantization configs on ``coarse``:
``sq8`` is :class:`~qdrant_client.models.ScalarQuantization` (int8), ``binary`` / ``binary1.5`` /
``binary2`` :class:`~qdrant_client.models.BinaryQuantization` with the one-bit / one-and-half-bits /
two-bits encoding, ``turbo4`` / ``turbo2`` / ``turbo1`` :class:`~qdrant_client.models.TurboQuantization`
(servers >= 1.18). :func:`code_of` reads a collection's config back into a code, and
:func:`read_layout` an existing collection's whole layout (what a backend attached to it needs).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from qdrant_client import QdrantClient
from qdrant_client import models as qm

from ...errors import InputError
from .common import BINARY_BITS, COARSE, CODES, FULL, LEGACY_CODES, TURBO_BITS, TURBO_MIN_SERVER, resolve_code
from .errors import call
from .metadata import META_KEY, MetadataStore, require_collection, vector_params

_METRICS = {"cosine": qm.Distance.COSINE, "ip": qm.Distance.DOT, "dot": qm.Distance.DOT}


def check_metric(metric: str) -> str:
    m = str(metric).lower()
    if m not in _METRICS:
        raise InputError(f"metric: the Qdrant backend supports 'cosine' and 'ip' (inner product), got {metric!r}")
    return "ip" if m == "dot" else m


def check_index(index: str) -> str:
    if index not in ("hnsw", "flat"):
        raise InputError(f"index: the Qdrant backend supports 'hnsw' and 'flat' (exact coarse stage), got {index!r}")
    return index


def metric_of(distance: qm.Distance) -> str:
    if distance == qm.Distance.COSINE:
        return "cosine"
    if distance == qm.Distance.DOT:
        return "ip"
    raise InputError(
        f"vector distance {distance.value} is not supported: matryoshka search ranks by inner product (Cosine or Dot)"
    )


_ENCODINGS = {
    "binary": qm.BinaryQuantizationEncoding.ONE_BIT,
    "binary1.5": qm.BinaryQuantizationEncoding.ONE_AND_HALF_BITS,
    "binary2": qm.BinaryQuantizationEncoding.TWO_BITS,
}
_TURBO = {
    "turbo4": qm.TurboQuantBitSize.BITS4,
    "turbo2": qm.TurboQuantBitSize.BITS2,
    "turbo1": qm.TurboQuantBitSize.BITS1,
}


def code_config(code: str, always_ram: bool) -> qm.QuantizationConfig | None:
    """Qdrant's quantization config of a coarse code (one of :data:`~.common.CODES`; None for float)."""
    if code == "sq8":
        return qm.ScalarQuantization(
            scalar=qm.ScalarQuantizationConfig(type=qm.ScalarType.INT8, quantile=0.99, always_ram=always_ram)
        )
    if code in _ENCODINGS:
        # one-bit keeps the server's default encoding field unset, as before codes existed
        encoding = None if code == "binary" else _ENCODINGS[code]
        return qm.BinaryQuantization(binary=qm.BinaryQuantizationConfig(always_ram=always_ram, encoding=encoding))
    if code in _TURBO:
        return qm.TurboQuantization(turbo=qm.TurboQuantQuantizationConfig(bits=_TURBO[code], always_ram=always_ram))
    return None


def quantization_config(kind: str | None, always_ram: bool) -> qm.QuantizationConfig | None:
    """Qdrant's quantization config of a ``coarse_quantization`` (None, ``"int8"``, ``"binary"``) or a code.

    The migration's own ``coarse_quantization`` option comes here: it is no alias there (a migration
    takes no ``code``), so it maps without the backends' deprecation warning.
    """
    if kind in LEGACY_CODES:
        return code_config(LEGACY_CODES[kind], always_ram)
    code = kind if kind in CODES else resolve_code(None, kind, "Qdrant")
    return code_config(str(code), always_ram)


def code_of(quant: Any) -> str:
    """The coarse code a collection's quantization config stores (``"float"`` for none)."""
    if isinstance(quant, qm.ScalarQuantization):
        return "sq8"
    if isinstance(quant, qm.BinaryQuantization):
        encoding = quant.binary.encoding
        return next((c for c, e in _ENCODINGS.items() if e == encoding), "binary")
    if isinstance(quant, qm.TurboQuantization):
        bits = quant.turbo.bits or qm.TurboQuantBitSize.BITS4
        found = next((c for c, b in _TURBO.items() if b == bits), None)
        if found is None:
            raise InputError(
                f"coarse: TurboQuant {bits.value} is not a code of this index; use turbo4, turbo2 or turbo1"
            )
        return found
    if quant is not None:
        raise InputError(
            f"coarse: {type(quant).__name__} is not a code of this index (codes: float, sq8, binary*, turbo*)"
        )
    return "float"


def check_server_has(code: str, client: QdrantClient, endpoint: str, mode: str, retries: int) -> None:
    """TurboQuant needs Qdrant >= 1.18: one line naming the version when a server is older."""
    if code not in TURBO_BITS or mode != "remote":
        return
    version = str(call(lambda: client.info(), endpoint, "reading the server version", retries=retries).version)
    try:
        found = tuple(int(x) for x in version.split("-")[0].split(".")[:2])
    except ValueError:
        return  # a development build: let the server decide
    if found < TURBO_MIN_SERVER:
        need = ".".join(map(str, TURBO_MIN_SERVER))
        raise InputError(
            f"code={code!r}: TurboQuant needs a Qdrant server >= {need}; {endpoint} runs {version} "
            f"(upgrade it, or use code='sq8' / {', '.join(repr(c) for c in BINARY_BITS)})"
        )


def collection_layout(
    coarse_dim: int,
    full_dim: int,
    metric: str,
    index: str,
    quant: qm.QuantizationConfig | None,
    hnsw_m: int | None,
    ef_construction: int | None,
    on_disk: bool,
    coarse_on_disk: bool = False,
) -> dict[str, qm.VectorParams]:
    """The two named vectors of a new collection: ``coarse`` (searched) and ``full`` (rerank only; none
    when ``full_dim`` is 0: a prefix-only collection)."""
    distance = _METRICS[metric]
    hnsw = None
    if index == "flat":  # exact coarse stage: no graph to build
        hnsw = qm.HnswConfigDiff(m=0)
    elif hnsw_m is not None or ef_construction is not None:
        hnsw = qm.HnswConfigDiff(m=hnsw_m, ef_construct=ef_construction)
    layout = {
        # with a code the search reads only the codes (kept in RAM): the floats may stay on disk
        COARSE: qm.VectorParams(
            size=coarse_dim,
            distance=distance,
            hnsw_config=hnsw,
            quantization_config=quant,
            on_disk=True if coarse_on_disk else None,
        ),
    }
    if full_dim:
        # m=0: no graph for `full`, it is only read to rerank the prefetched candidates
        layout[FULL] = qm.VectorParams(
            size=full_dim, distance=distance, hnsw_config=qm.HnswConfigDiff(m=0), on_disk=bool(on_disk)
        )
    return layout


@dataclass(frozen=True)
class ExistingLayout:
    """What an existing collection holds, as :class:`~.server.QdrantBackend` takes it (its keyword names)."""

    coarse_dim: int
    full_dim: int
    metric: str
    index: str
    code: str
    hnsw_m: int | None
    coarse_on_disk: bool
    full_quantized: bool
    has_foreign_ids: bool
    full_vector: str | None


def read_layout(
    client: QdrantClient, collection: str, endpoint: str, full_vector: str | None, retries: int
) -> tuple[str, ExistingLayout]:
    """The real name of ``collection`` (an alias resolved) and its layout; one line unless it has ``coarse``
    and a full vector of one distance.

    ``full_vector``: the name of the full (rerank) vector; None: the one the index record names
    (``"full"``, a collection migrated in place's own vector, or none for a prefix-only collection).
    """
    real = require_collection(client, collection, endpoint)
    info = call(lambda: client.get_collection(real), endpoint, f"reading collection {real!r}", retries=retries)
    params = vector_params(info)
    record = MetadataStore(client, real, endpoint).read(META_KEY) or {}
    named = record.get("vectors") or {}
    prefix_only = full_vector is None and "full" in named and named["full"] is None
    if full_vector is None and not prefix_only:
        given = named.get("full", FULL)
        full_vector = given if isinstance(given, str) else FULL
    missing = [v for v in (COARSE, full_vector) if v is not None and v not in params]
    if missing:
        raise InputError(
            f"collection {real!r} at {endpoint} has no {' and '.join(repr(m) for m in missing)} vector; "
            "it is not a matryoshka-index collection (migrate it with mindex migrate)"
        )
    coarse = params[COARSE]
    full = coarse if full_vector is None else params[full_vector]  # prefix only: coarse says the metric
    if coarse.distance != full.distance:
        raise InputError(f"collection {real!r}: 'coarse' and 'full' use different distances")
    m = coarse.hnsw_config.m if coarse.hnsw_config is not None and coarse.hnsw_config.m is not None else None
    if m is None:
        m = info.config.hnsw_config.m
    return real, ExistingLayout(
        coarse_dim=coarse.size,
        full_dim=0 if full_vector is None else full.size,
        metric=metric_of(full.distance),
        index="flat" if m == 0 else "hnsw",
        code=code_of(coarse.quantization_config or info.config.quantization_config),
        hnsw_m=m,
        coarse_on_disk=bool(coarse.on_disk),
        full_quantized=full_vector is not None and bool(full.quantization_config or info.config.quantization_config),
        has_foreign_ids=bool((record.get("point_ids") or {}).get("foreign", 0)),
        full_vector=full_vector,
    )


__all__ = [
    "ExistingLayout",
    "check_index",
    "check_metric",
    "check_server_has",
    "code_config",
    "code_of",
    "collection_layout",
    "metric_of",
    "quantization_config",
    "read_layout",
]
