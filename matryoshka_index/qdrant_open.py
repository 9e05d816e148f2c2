"""Open a :class:`~matryoshka_index.MatryoshkaIndex` stored in a Qdrant collection (``MatryoshkaIndex.from_qdrant``).

The index's half, above the backends: :func:`~matryoshka_index.backends.qdrant.open.open_stored_index`
gives the parts (backend, manifest, adaptor files); this module turns the files into the adaptor the
manifest names (torch only for a Matryoshka-Adaptor), checks it against the collection's vectors and
the manifest, and hands all to the index class it is given (so that it does not import the index).
"""

from __future__ import annotations

import os
from typing import Any

from qdrant_client import QdrantClient

from .backends.qdrant.open import full_vector_name, open_stored_index
from .errors import FormatError, InputError
from .manifest import check_manifest


def open_index_from_qdrant(
    index_cls: Any,
    collection: str,
    url: str | None = None,
    path: str | os.PathLike[str] | None = None,
    client: QdrantClient | None = None,
    *,
    device: str = "auto",
    **options: Any,
) -> Any:
    """Open the index stored in a Qdrant collection (or alias): ``index_cls.from_parts(adaptor, backend, manifest)``.

    ``options``: the connection (``api_key``, ``https``, ``timeout``, ``prefer_grpc``),
    ``allow_unverified`` and the backend's options, as :func:`open_stored_index` takes them. Refuses
    a collection whose ``coarse`` / full vectors do not match the adaptor and the index record, or a
    migration that has not been verified. With neither ``url``, ``path`` nor ``client``,
    ``QDRANT_URL`` is used if set.
    """
    stored = open_stored_index(collection, url=url, path=path, client=client, **options)
    backend, manifest = stored.backend, stored.manifest
    try:
        adaptor = _adaptor_from_files(stored.adaptor_kind, stored.adaptor_files, device)
        input_dim = adaptor.input_dim_ if adaptor is not None else int(manifest.get("input_dim", backend.full_dim))
        problems = []
        if backend.full_dim and input_dim != backend.full_dim:  # full_dim 0: prefix only, no full vector
            problems.append(
                f"{full_vector_name(backend)} has {backend.full_dim} dims but the adaptor takes {input_dim}-dim embeddings"
            )
        if int(manifest.get("input_dim", input_dim)) != input_dim:
            problems.append(
                f"the index metadata says input_dim {manifest.get('input_dim')}, the adaptor takes {input_dim}"
            )
        if backend.coarse_dim > input_dim:
            problems.append(f"'coarse' has {backend.coarse_dim} dims, more than the adaptor's {input_dim}")
        if problems:
            raise InputError(f"{stored.where} does not match its adaptor: {'; '.join(problems)}")
        # from_collection read the same record, so the backend knows whether handles need mapping
        check_manifest(manifest, where=stored.where, stored="qdrant", backend=backend)
        return index_cls.from_parts(adaptor, backend, manifest)
    except BaseException:
        backend.close()
        raise


def _adaptor_from_files(kind: str, files: dict[str, bytes] | None, device: str) -> Any:
    """The adaptor object of the manifest's kind (imported lazily: the backend itself never imports torch)."""
    if kind == "none" or files is None:
        return None
    if kind == "pca":
        from .adaptor.pca import PCARotation

        return PCARotation.from_files(files)
    if kind == "matryoshka-adaptor":
        from .adaptor import MatryoshkaAdaptor

        return MatryoshkaAdaptor.from_files(files, device=device)
    raise FormatError(f"index metadata: unknown adaptor kind {kind!r}; upgrade matryoshka-index")


__all__ = ["open_index_from_qdrant"]
