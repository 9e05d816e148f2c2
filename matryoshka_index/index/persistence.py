"""Saving an index to a directory and opening it again.

The directory holds the manifest (:mod:`matryoshka_index.manifest`), the adaptor's files under
``adaptor/`` (absent for the identity) and the backend's own files; it is written into a temporary
sibling that is renamed into place, so an interrupted save never leaves a half index under the
final name and never damages an existing one.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from ..adaptor import MatryoshkaAdaptor
from ..adaptor.pca import PCARotation
from ..backends import BACKENDS, get_backend_class
from ..backends.base import Closeable
from ..errors import FormatError, InputError
from ..manifest import (
    ADAPTOR_DIR,
    MANIFEST_FILE,
    check_manifest_fits,
    file_table,
    is_index_directory,
    manifest_bytes,
    read_manifest,
    verify_manifest_checksum,
)
from ..storage import atomic_directory, atomic_write_bytes, recover_directory
from .build import check_backend_options
from .device_stage import attach_device, resolve_index_device
from .parts import Adaptor
from .points import PAYLOADS_FILE, PayloadStore

Index = TypeVar("Index")


def check_output_path(path: str | os.PathLike[str]) -> Path:
    """Refuse to save over anything but nothing, an empty directory or an index (saving replaces the
    directory whole, so a typo such as ``-o ~/Documents`` must not delete a folder of other files)."""
    path = Path(path)
    if not path.exists():
        return path
    if not path.is_dir():
        raise InputError(f"{path}: exists and is not a directory; choose another output path")
    if any(path.iterdir()) and not is_index_directory(path):
        raise InputError(
            f"{path}: exists and is not a matryoshka index; refusing to replace it, choose another output path"
        )
    return path


def save_index(
    path: str | os.PathLike[str],
    *,
    backend: Any,
    adaptor: Adaptor,
    payloads: PayloadStore,
    manifest: Callable[[dict[str, Any], dict[str, str]], dict[str, Any]],
) -> Path:
    """Write an index to directory ``path`` atomically (see ``MatryoshkaIndex.save``, which holds the
    index's lock meanwhile): the backend's files, the adaptor's, the payloads the index keeps, then the
    manifest, made by ``manifest(backend section, file table)``. Returns the path."""
    path = check_output_path(path)
    with atomic_directory(path) as tmp:
        section = dict(backend.save(tmp))
        section.setdefault("kind", backend.kind)
        if adaptor is not None:
            adaptor.save(tmp / ADAPTOR_DIR)
        payloads.save(tmp)  # payloads.jsonl, FAISS indexes given payloads only
        atomic_write_bytes(tmp / MANIFEST_FILE, manifest_bytes(manifest(section, file_table(tmp))))
    return path


def load_adaptor(path: Path, manifest: dict[str, Any], device: str = "auto") -> Adaptor:
    """The adaptor the manifest names, from ``path/adaptor`` (None for the identity)."""
    adaptor_meta = manifest.get("adaptor")
    kind = adaptor_meta.get("kind") if isinstance(adaptor_meta, dict) else None
    if kind == "none":
        return None
    if kind == "pca":
        return PCARotation.load(path / ADAPTOR_DIR)
    if kind == "matryoshka-adaptor":
        return MatryoshkaAdaptor.load(path / ADAPTOR_DIR, device=device)
    raise FormatError(f"{path / MANIFEST_FILE}: unknown adaptor kind {kind!r}")


def open_backend(path: Path, manifest: dict[str, Any], backend_options: dict[str, Any]) -> Any:
    """The backend the manifest's ``backend`` section names, opened from ``path``."""
    section = manifest.get("backend")
    if not isinstance(section, dict) or not isinstance(section.get("kind"), str):
        raise FormatError(f"{path / MANIFEST_FILE}: has no valid 'backend' section")
    if section["kind"] not in BACKENDS:
        raise FormatError(f"{path / MANIFEST_FILE}: names an unknown backend {section['kind']!r}")
    backend_cls = get_backend_class(section["kind"])  # a missing optional extra says what to install
    check_backend_options(backend_cls.open, backend_options, section["kind"])
    return backend_cls.open(path, section, **backend_options)


def load_index(
    from_parts: Callable[..., Index],
    path: str | os.PathLike[str],
    *,
    verify: bool,
    backend_options: dict[str, Any],
    device: str = "auto",
) -> Index:
    """Open an index saved by :func:`save_index` (see ``MatryoshkaIndex.load``), assembled by
    ``from_parts(adaptor, backend, manifest, payloads=..., path=...)`` (``MatryoshkaIndex.from_parts``).

    The manifest's fields are checked first, then the backend opened and checked against them, then
    (with ``verify``) the manifest's own checksum: a field that is wrong is named, a manifest whose
    fields all agree but differ from what was saved is caught by the checksum.
    """
    path = Path(path)
    recover_directory(path)  # a save killed between its two renames left the previous version aside
    dev, faiss_device, adaptor_device = resolve_index_device(device)
    where = str(path / MANIFEST_FILE)
    manifest = read_manifest(path, verify=verify, verify_checksum=False)
    adaptor = load_adaptor(path, manifest, adaptor_device)
    section = manifest.get("backend")
    if isinstance(section, dict) and section.get("kind") == "faiss":
        backend_options = {"device": faiss_device, **backend_options}
    backend = attach_device(open_backend(path, manifest, backend_options), dev)
    try:
        check_manifest_fits(manifest, backend, where=where)
        if verify:
            verify_manifest_checksum(manifest, where=where)
        # listed in the manifest's files, so read_manifest checked it
        payloads = PayloadStore.load(path / PAYLOADS_FILE) if PAYLOADS_FILE in (manifest.get("files") or {}) else None
        return from_parts(adaptor, backend, manifest, payloads=payloads, path=path.absolute())
    except BaseException:
        if isinstance(backend, Closeable):  # a qdrant-edge shard holds a lock until closed
            backend.close()
        raise
