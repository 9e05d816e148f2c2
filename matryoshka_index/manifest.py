"""The index manifest: the one owner of its format name, format version, file name and keys.

A saved index is a directory whose ``manifest.json`` describes everything else in it; an index
stored in a Qdrant collection keeps the same dict in the collection's metadata (a migration writes
one too). Whoever writes or reads a manifest goes through this module, so the format cannot drift
between the index, the Qdrant backend and the migration.

Keys (in the order :func:`make_manifest` writes them; files sort them):

* ``format`` (:data:`FORMAT`), ``format_version`` (:data:`FORMAT_VERSION`), ``library_version``,
  ``created`` (UTC, ISO 8601 to the second);
* ``metric`` (``"cosine"`` or ``"ip"``), ``input_dim``, ``coarse_dim``, ``full_dim``, ``rerank``;
* ``adaptor``: ``{"kind": "none" | "pca" | "matryoshka-adaptor", "directory": "adaptor" | null}``;
* ``count``: stored (live) vectors;
* ``candidates``: the default candidate count of a search;
* ``calibration``: how that default was chosen (see :mod:`matryoshka_index.calibration`);
* ``backend``: the backend's own section (what ``backend.save`` returned, with ``kind``);
* ``files``: ``{relative path: sha256}`` of every file of a saved directory, checked on load;
* anything else a writer adds (a migration adds ``origin``) is kept and ignored by readers.
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ._version import __version__
from .errors import FormatError
from .storage import read_versioned_json, sha256_file

FORMAT = "matryoshka-index"
FORMAT_VERSION = 1
MANIFEST_FILE = "manifest.json"
ADAPTOR_DIR = "adaptor"
SUPPORTED_VERSIONS = (FORMAT_VERSION,)


def now_utc() -> str:
    """The ``created`` timestamp format: UTC, ISO 8601, to the second."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def make_manifest(
    *,
    metric: str,
    input_dim: int,
    coarse_dim: int,
    full_dim: int,
    rerank: str,
    adaptor_kind: str,
    adaptor_directory: str | None,
    count: int,
    candidates: int,
    calibration: dict[str, Any],
    backend: dict[str, Any],
    created: str | None = None,
    files: dict[str, str] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A manifest dict (the keys in the module docstring). ``extra`` keys (e.g. ``origin``) go last."""
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "library_version": __version__,
        "created": created or now_utc(),
        "metric": metric,
        "input_dim": input_dim,
        "coarse_dim": coarse_dim,
        "full_dim": full_dim,
        "rerank": rerank,
        "adaptor": {"kind": adaptor_kind, "directory": adaptor_directory},
        "count": count,
        "candidates": candidates,
        "calibration": calibration,
        "backend": backend,
    }
    if files is not None:
        manifest["files"] = files
    manifest.update(extra)
    return manifest


def manifest_bytes(manifest: dict[str, Any]) -> bytes:
    """How ``manifest.json`` is written: sorted keys, two-space indent, a final newline."""
    return (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()


def is_index_directory(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` holds a manifest of this format (any version; nothing else is checked)."""
    try:
        return json.loads((Path(path) / MANIFEST_FILE).read_text()).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def read_manifest(path: str | os.PathLike[str], *, verify: bool = True) -> dict[str, Any]:
    """The manifest of the index directory ``path``, its file table checked.

    Every file the manifest lists must lie inside ``path`` and exist; with ``verify`` its sha256 must
    match too (reads every byte once). Any problem is one :class:`FormatError` line.
    """
    path = Path(path)
    if not path.exists():
        raise FormatError(f"{path}: no index here (not found)")
    if not path.is_dir():
        raise FormatError(f"{path}: not an index directory (a matryoshka index is a folder with {MANIFEST_FILE})")
    manifest = read_versioned_json(path / MANIFEST_FILE, kind=FORMAT, supported_versions=SUPPORTED_VERSIONS)
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
            raise FormatError(f"{path / rel}: checksum does not match the manifest; the file is corrupt or replaced")
    return manifest


def file_table(root: Path) -> dict[str, str]:
    """``{relative path: sha256}`` of every file under ``root`` but the manifest itself."""
    return {
        p.relative_to(root).as_posix(): sha256_file(p)
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != MANIFEST_FILE
    }


__all__ = [
    "ADAPTOR_DIR",
    "FORMAT",
    "FORMAT_VERSION",
    "MANIFEST_FILE",
    "SUPPORTED_VERSIONS",
    "file_table",
    "is_index_directory",
    "make_manifest",
    "manifest_bytes",
    "now_utc",
    "read_manifest",
]
