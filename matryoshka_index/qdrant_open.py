"""Open a :class:`~matryoshka_index.MatryoshkaIndex` stored in a Qdrant collection (``MatryoshkaIndex.from_qdrant``).

Above the backends: it reads the index record with the Qdrant backend, loads the adaptor the
record names (the adaptor package; torch only for a Matryoshka-Adaptor) and hands both to the index
class it is given, so that neither the backend nor this module imports the index.
"""

from __future__ import annotations

import os
from typing import Any

from qdrant_client import QdrantClient

from .backends.qdrant.connection import close_quietly, connect, describe_client
from .backends.qdrant.metadata import META_KEY, MIGRATION_KEY, MetadataStore, check_index_record, require_collection
from .backends.qdrant.server import QdrantBackend
from .errors import FormatError, InputError
from .manifest import check_manifest


def open_index_from_qdrant(
    index_cls: Any,
    collection: str,
    url: str | None = None,
    path: str | os.PathLike[str] | None = None,
    client: QdrantClient | None = None,
    *,
    api_key: str | None = None,
    https: bool | None = None,
    timeout: int | None = None,
    prefer_grpc: bool = False,
    device: str = "auto",
    allow_unverified: bool = False,
    **backend_options: Any,
) -> Any:
    """Open the index stored in a Qdrant collection (or alias): ``index_cls._from_parts(adaptor, backend, manifest)``.

    Reads the index record from the collection metadata (or the companion collection), loads the
    adaptor from the companion collection, and refuses a collection whose ``coarse``/``full``
    vectors do not match the adaptor and the record, or a migration that has not been verified
    (``allow_unverified=True`` opens it anyway, e.g. to inspect it). With neither ``url``, ``path``
    nor ``client``, ``QDRANT_URL`` is used if set.
    """
    if url is None and path is None and client is None:
        url = os.environ.get("QDRANT_URL") or None
        if url is None:
            raise InputError("from_qdrant: give url=, path= or client= (or set QDRANT_URL)")
    if url is not None and api_key is None:
        api_key = os.environ.get("QDRANT_API_KEY") or None
    qclient, owns = connect(
        url=url,
        path=path,
        client=client,
        api_key=api_key,
        https=https,
        timeout=timeout,
        prefer_grpc=prefer_grpc,
        must_exist=True,
    )
    try:
        endpoint = describe_client(qclient)
        real = require_collection(qclient, collection, endpoint)
        store = MetadataStore(qclient, real, endpoint)
        record = store.read(META_KEY)
        if record is None:
            raise InputError(
                f"collection {real!r} at {endpoint} has no matryoshka-index metadata; build one with "
                "mindex build --backend qdrant, or migrate this collection with mindex migrate"
            )
        check_index_record(record, real)
        migration = store.read(MIGRATION_KEY)
        if migration and migration.get("state") not in ("verified", "complete") and not allow_unverified:
            if migration.get("mode") == "in_place":
                raise InputError(
                    f"collection {real!r} at {endpoint} is an unfinished in-place migration (state "
                    f"{migration.get('state')!r}, {migration.get('coarse_added', 0)} of {migration.get('source_count', '?')} "
                    "points given a coarse vector); finish it with mindex migrate --in-place --resume, or undo it "
                    "with mindex migrate --rollback"
                )
            raise InputError(
                f"collection {real!r} at {endpoint} is an unfinished migration (state {migration.get('state')!r}, "
                f"{migration.get('copied', 0)} of {migration.get('source_count', '?')} points copied); "
                "finish it with mindex migrate --resume"
            )
        manifest = record.get("manifest") or {}
        kind = (manifest.get("adaptor") or {}).get("kind", "matryoshka-adaptor")
        adaptor = _adaptor_from_files(
            kind, store.read_blobs(record["adaptor"]) if record.get("adaptor") else None, device
        )
        if adaptor is None and kind != "none":
            raise FormatError(f"collection {real!r} at {endpoint}: the index metadata names no adaptor files")
        backend = QdrantBackend.from_collection(qclient, real, owns_client=owns, **backend_options)
        vec = record.get("vectors") or {}
        input_dim = adaptor.input_dim_ if adaptor is not None else int(manifest.get("input_dim", backend.full_dim))
        problems = []
        if int(vec.get("coarse_dim", backend.coarse_dim)) != backend.coarse_dim:
            problems.append(
                f"'coarse' has {backend.coarse_dim} dims but the index metadata says {vec.get('coarse_dim')}"
            )
        full_name = repr(backend.full_vector) if backend.full_vector else "the unnamed vector"
        if int(vec.get("full_dim", backend.full_dim)) != backend.full_dim:
            problems.append(
                f"{full_name} has {backend.full_dim} dims but the index metadata says {vec.get('full_dim')}"
            )
        if backend.full_dim and input_dim != backend.full_dim:  # full_dim 0: prefix only, no full vector
            problems.append(f"{full_name} has {backend.full_dim} dims but the adaptor takes {input_dim}-dim embeddings")
        if int(manifest.get("input_dim", input_dim)) != input_dim:
            problems.append(
                f"the index metadata says input_dim {manifest.get('input_dim')}, the adaptor takes {input_dim}"
            )
        if backend.coarse_dim > input_dim:
            problems.append(f"'coarse' has {backend.coarse_dim} dims, more than the adaptor's {input_dim}")
        if record.get("metric") and record["metric"] != backend.metric:
            problems.append(f"the vectors use {backend.metric} but the index metadata says {record['metric']}")
        if problems:
            raise InputError(f"collection {real!r} at {endpoint} does not match its adaptor: {'; '.join(problems)}")
        # from_collection read the same record, so the backend knows whether handles need mapping
        check_manifest(manifest, where=f"collection {real!r} at {endpoint}", stored="qdrant", backend=backend)
        return index_cls._from_parts(adaptor, backend, manifest)
    except BaseException:
        if owns:
            close_quietly(qclient)
        raise


def _adaptor_from_files(kind: str, files: dict[str, bytes] | None, device: str) -> Any:
    """The adaptor object of the manifest's kind (imported lazily: the backend itself never imports torch)."""
    if kind == "none":
        return None
    if files is None:
        return None
    if kind == "pca":
        from .adaptor.pca import PCARotation

        return PCARotation.from_files(files)
    if kind == "matryoshka-adaptor":
        from .adaptor import MatryoshkaAdaptor

        return MatryoshkaAdaptor.from_files(files, device=device)
    raise FormatError(f"index metadata: unknown adaptor kind {kind!r}; upgrade matryoshka-index")


__all__ = ["open_index_from_qdrant"]
