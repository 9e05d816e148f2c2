"""Saving an index to a directory and opening it again.

The directory holds the manifest (:mod:`matryoshka_index.manifest`), the adaptor's files under
``adaptor/`` (absent for the identity) and the backend's own files; it is written into a temporary
sibling that is renamed into place, so an interrupted save never leaves a half index under the
final name and never damages an existing one.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

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
from .build import Adaptor, check_backend_options
from .device_stage import attach_device, resolve_index_device
from .points import PAYLOADS_FILE, PayloadStore

if TYPE_CHECKING:
    from .core import MatryoshkaIndex


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


def save_index(index: MatryoshkaIndex, path: str | os.PathLike[str]) -> Path:
    """Write ``index`` to directory ``path`` atomically (see ``MatryoshkaIndex.save``); returns the path."""
    path = check_output_path(path)
    with index._lock.read(), atomic_directory(path) as tmp:
        section = dict(index.backend.save(tmp))
        section.setdefault("kind", index.backend.kind)
        if index.adaptor is not None:
            index.adaptor.save(tmp / ADAPTOR_DIR)
        index._payloads.save(tmp)  # payloads.jsonl, FAISS indexes given payloads only
        manifest = index._manifest(section, file_table(tmp))
        atomic_write_bytes(tmp / MANIFEST_FILE, manifest_bytes(manifest))
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
    cls: type[MatryoshkaIndex],
    path: str | os.PathLike[str],
    *,
    verify: bool,
    backend_options: dict[str, Any],
    device: str = "auto",
) -> MatryoshkaIndex:
    """Open an index saved by :func:`save_index` (see ``MatryoshkaIndex.load``).

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
        self = cls._from_parts(adaptor, backend, manifest)
    except BaseException:
        if isinstance(backend, Closeable):  # a qdrant-edge shard holds a lock until closed
            backend.close()
        raise
    if PAYLOADS_FILE in (manifest.get("files") or {}):  # listed, so read_manifest checked it
        self._payloads = PayloadStore.load(path / PAYLOADS_FILE)
    self._path = path.absolute()
    self._modified_since_load = False
    return self
