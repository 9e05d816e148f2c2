"""The raw Qdrant request of a two-stage query, from an index manifest: what a non-Python client sends.

Pure: no qdrant-client import, no network. The body is what :class:`~matryoshka_index.backends.qdrant.server.QdrantBackend`
sends through qdrant-client, written as Qdrant's REST API takes it::

    POST /collections/{collection}/points/query
    {
      "prefetch": {"query": [coarse...], "using": "coarse", "limit": candidates, "params": {...}},
      "query": [full...], "using": "full", "limit": k, "with_payload": false
    }

``coarse`` is the adapted query prefix (``coarse_dim`` floats; L2-normalised for a cosine index) and
``full`` the query at full dimension (the original embedding with ``rerank="original"``, the default;
normalised likewise). A filter, when given, applies to both stages, as the backend applies it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ...errors import InputError
from ...validation import l2_normalize
from ..base import COARSE, FULL
from .common import renamed_option

__all__ = ["query_path", "query_request", "query_vectors"]


def _section(manifest: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(manifest, dict):
        raise InputError(f"manifest: expected the index manifest (a dict), got {type(manifest).__name__}")
    section = manifest.get("backend") or {}
    if section.get("kind") == "faiss":
        raise InputError("manifest: a FAISS index is searched in-process; there is no Qdrant request to make")
    return section


def query_path(manifest: dict[str, Any], collection: str | None = None) -> str:
    """``/collections/{name}/points/query`` for the index's collection (or ``collection`` when given)."""
    name = collection or _section(manifest).get("collection")
    if not name:
        raise InputError("manifest: names no Qdrant collection; pass collection=")
    return f"/collections/{name}/points/query"


def _vector(v: Sequence[float] | np.ndarray | None, length: int, what: str) -> list[float] | str:
    if v is None:
        return f"<{what}: {length} floats>"  # a template for documentation
    arr = np.asarray(v, dtype=np.float32)
    if arr.ndim != 1 or arr.shape[0] != length:
        raise InputError(f"{what}: expected {length} floats, got shape {tuple(arr.shape)}")
    if not np.all(np.isfinite(arr)):
        raise InputError(f"{what}: contains NaN or Inf")
    return [float(x) for x in arr]


def query_request(
    manifest: dict[str, Any],
    coarse: Sequence[float] | np.ndarray | None = None,
    full: Sequence[float] | np.ndarray | None = None,
    *,
    k: int = 10,
    candidates: int | None = None,
    with_payload: bool | list[str] = False,
    query_filter: dict[str, Any] | None = None,
    full_vector: str | None = None,
    ef_search: int | None = None,
    rescore: bool | None = None,
    oversampling: float | None = None,
    hnsw_ef: int | None = None,
) -> dict[str, Any]:
    """The JSON body of ``POST /collections/{name}/points/query`` for one two-stage query.

    Reads from ``manifest`` (the index's ``manifest.json``): ``coarse_dim``, ``full_dim``,
    ``candidates`` (the calibrated default, when ``candidates`` is not given), ``backend.index``
    (``"flat"``: an exact coarse stage) and the coarse code (``backend.code``;
    ``backend.coarse_quantization`` in manifests written before codes). With a code the coarse stage
    searches the codes with Qdrant's rescoring off (``"quantization": {"rescore": false}``; a flat
    index is then a plain scan of the codes, not ``exact``, which would read the floats), as the
    backend sends it; ``rescore`` (default: the index's ``backend.coarse_rescore``, else on for a
    pre-code manifest) overrides it. ``full_vector``: the name of the full vector (default
    ``backend.full_vector``, else ``"full"``; ``""`` for a collection migrated in place whose vector
    is unnamed, which then sends no ``using``). ``ef_search``: the coarse search breadth (Qdrant's
    ``hnsw_ef``, at least the candidates; ``hnsw_ef=``, its former name here, works until 0.2). With ``coarse`` or
    ``full`` left out the body is a template (a placeholder string where the floats go).

    A prefix-only index (``full_dim`` 0, ``rerank=None``) has no second stage: the body is the query on
    ``coarse`` itself (``limit=k``, searched as broadly as the candidates), as the backend sends it;
    ``full`` is then ignored.
    """
    ef_search = renamed_option("ef_search", ef_search, hnsw_ef)
    section = _section(manifest)
    try:
        coarse_dim, full_dim = int(manifest["coarse_dim"]), int(manifest["full_dim"])
    except (KeyError, TypeError, ValueError):
        raise InputError("manifest: needs coarse_dim and full_dim (give the index's manifest.json)") from None
    k = int(k)
    if k < 1:
        raise InputError(f"k: must be >= 1, got {k}")
    cands = candidates if candidates is not None else manifest.get("candidates") or k
    cands = max(int(cands), k)
    code = section.get("code") or ("quantized" if section.get("coarse_quantization") else "float")
    if rescore is None:  # an index saved before codes rescored its int8 / binary coarse stage
        rescore = bool(section.get("coarse_rescore", section.get("rescore", "code" not in section)))
    coarse_params: dict[str, Any] = {}
    if section.get("index") == "flat":
        if code == "float" or rescore:
            coarse_params["exact"] = True
    else:
        coarse_params["hnsw_ef"] = max(cands, int(ef_search or 0))
    if code != "float":
        quant: dict[str, Any] = {"rescore": bool(rescore)}
        if oversampling is not None:
            quant["oversampling"] = float(oversampling)
        coarse_params["quantization"] = quant
    prefetch: dict[str, Any] = {
        "query": _vector(coarse, coarse_dim, "coarse (the adapted query prefix)"),
        "using": COARSE,
        "limit": cands,
        "params": coarse_params,
    }
    if not full_dim:  # prefix only: the coarse query is the whole request
        single = {key: value for key, value in prefetch.items() if key != "limit"}
        single["limit"] = k
        if query_filter is not None:
            single["filter"] = query_filter
        single["with_payload"] = with_payload
        return single
    body: dict[str, Any] = {"prefetch": prefetch, "query": _vector(full, full_dim, "full (the query vector)")}
    name = section.get("full_vector", FULL) if full_vector is None else full_vector
    if name:
        body["using"] = name
    body["limit"] = k
    if query_filter is not None:
        prefetch["filter"] = query_filter
        body["filter"] = query_filter
    body["with_payload"] = with_payload
    return body


def query_vectors(
    adaptor: Any, query: Sequence[float] | np.ndarray, manifest: dict[str, Any]
) -> tuple[np.ndarray, np.ndarray]:
    """``(coarse, full)`` float32 vectors of one raw query embedding, as the index prepares them.

    ``adaptor``: the index's adaptor (``None`` for none): coarse is the first ``coarse_dim`` columns of
    ``adaptor.transform_queries(query)`` (its query head, when it has one); full is the query itself (``rerank="original"``) or its adapted full
    vector (``rerank="adapted"``); both L2-normalised when the metric is cosine.
    """
    q = np.asarray(query, dtype=np.float32).reshape(1, -1)
    cd = int(manifest["coarse_dim"])
    adapted = q if adaptor is None else adaptor.transform_queries(q)
    coarse = adapted[:, :cd]
    full = adapted if manifest.get("rerank", "original") == "adapted" else q
    if manifest.get("metric", "cosine") == "cosine":
        coarse, full = l2_normalize(coarse), l2_normalize(full)
    return coarse[0], full[0]
