"""Checksums of files and the versioned JSON metadata this library writes (format name + version checked)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from ..errors import FormatError


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def read_versioned_json(path: str | os.PathLike[str], *, kind: str, supported_versions: tuple[int, ...]) -> dict:
    """Read a JSON metadata file written by this library and check its ``format`` and ``format_version``.

    ``kind`` is the expected value of the ``format`` field (e.g. ``"matryoshka-adaptor"``), so a file of
    another kind, another program, or a newer format version fails with a clear message.
    """
    path = Path(path)
    if not path.is_file():
        raise FormatError(f"{path}: not found; is this a {kind} directory written by matryoshka-index?")
    try:
        meta = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FormatError(f"{path}: is not valid JSON ({exc.__class__.__name__}); the file is corrupt") from None
    if not isinstance(meta, dict) or meta.get("format") != kind:
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise FormatError(f"{path}: is not a {kind} file (format={found!r})")
    version = meta.get("format_version")
    if version not in supported_versions:
        raise FormatError(
            f"{path}: {kind} format version {version!r} is not supported by this version of matryoshka-index "
            f"(supported: {', '.join(map(str, supported_versions))}); upgrade matryoshka-index or rebuild the file"
        )
    return meta
