"""Files on disk: atomic writes, vector files (.npy / .fvecs), checksums, versioned JSON.

Every write goes to a temporary name in the same directory and is then renamed over the final
name (``os.replace``, atomic on POSIX), so a crash mid-write leaves either the old file or the new
one, never a torn one. Directories (an index, an adaptor) are written the same way: into a fresh
temporary sibling, then swapped in.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .errors import FormatError, InputError


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _file_mode() -> int:
    """The mode a plainly created file gets (0666 less the umask); mkstemp alone would give 0600."""
    return 0o666 & ~_umask()


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temp file in the same directory, fsync, rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, _file_mode())
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike[str], *, overwrite: bool = True) -> Iterator[Path]:
    """Yield a fresh temporary directory; on success it replaces ``path``.

    On any exception (including KeyboardInterrupt) the temporary directory is removed and an
    existing ``path`` is untouched. When ``path`` exists it is moved aside, the new directory
    renamed in, then the old one deleted, so at every instant ``path`` is absent only between two
    renames and is never a half-written directory.
    """
    path = Path(path).absolute()
    if path.exists() and not overwrite:
        raise InputError(f"{path}: already exists; choose another output path or allow overwriting")
    if path.exists() and not path.is_dir():
        raise InputError(f"{path}: exists and is not a directory; choose another output path")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp gives 0700; the final directory should look plainly created
    try:
        yield tmp
        for child in tmp.iterdir():
            if child.is_file():
                with open(child, "rb") as fh:
                    os.fsync(fh.fileno())
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
            os.replace(path, old / "x")
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def allocated_bytes(root: str | os.PathLike[str]) -> int:
    """Bytes the files under ``root`` really occupy on disk (allocated blocks, not apparent sizes).

    Some stores (qdrant-edge's mmap segments) preallocate large sparse files whose sizes overstate
    what they use by 100x; ``st_blocks`` counts what is allocated. Where the platform has no
    ``st_blocks`` (Windows) the apparent size is counted.
    """
    total = 0
    for p in Path(root).rglob("*"):
        if p.is_file() and not p.is_symlink():
            st = p.stat()
            blocks = getattr(st, "st_blocks", None)
            total += st.st_size if blocks is None else min(st.st_size, blocks * 512)
    return total


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


def load_vectors(path: str | os.PathLike[str], *, mmap: bool = True) -> np.ndarray:
    """Load embeddings from ``.npy`` (memory-mapped, float16/32 kept as stored) or ``.fvecs``.

    Raises :class:`InputError` with one line for a missing file, an unknown extension or a corrupt
    file. Values are not validated here; pass the result through ``check_embeddings``.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        try:
            arr = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
        except ValueError:
            # numpy's own message here suggests allow_pickle; we never load pickled objects.
            raise InputError(
                f"{path}: cannot be read as .npy (not written by np.save, or it holds Python objects, "
                "which are never loaded); save embeddings with np.save(path, array)"
            ) from None
        except Exception as exc:
            raise InputError(f"{path}: cannot be read as .npy ({exc.__class__.__name__}: {exc})") from None
        return arr
    if suffix == ".fvecs":
        return read_fvecs(path, mmap=mmap)
    raise InputError(f"{path}: unknown vector file type {suffix!r}; use .npy or .fvecs")


def read_fvecs(path: str | os.PathLike[str], *, mmap: bool = True) -> np.ndarray:
    """Read the ``.fvecs`` format (each row: int32 dim, then dim float32), as a strided view."""
    path = Path(path)
    size = path.stat().st_size
    if size < 4:
        raise InputError(f"{path}: too small to be an .fvecs file")
    raw = np.memmap(path, dtype=np.int32, mode="r") if mmap else np.fromfile(path, dtype=np.int32)
    d = int(raw[0])
    if d <= 0 or size % (4 * (d + 1)) != 0:
        raise InputError(f"{path}: corrupt .fvecs file (header dim {d} does not divide the file size {size})")
    rows = raw.reshape(-1, d + 1)
    if not (rows[:, 0] == d).all():
        raise InputError(f"{path}: corrupt .fvecs file (rows of different dimensions)")
    return rows[:, 1:].view(np.float32)


def write_fvecs(path: str | os.PathLike[str], x: np.ndarray) -> None:
    x = np.ascontiguousarray(x, dtype=np.float32)
    n, d = x.shape
    out = np.empty((n, d + 1), dtype=np.int32)
    out[:, 0] = d
    out[:, 1:] = x.view(np.int32)
    atomic_write_bytes(path, out.tobytes())


def save_npy(path: str | os.PathLike[str], arr: np.ndarray) -> None:
    """Save a .npy atomically (streams a memmap in chunks rather than loading it)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.fchmod(fd, _file_mode())
    os.close(fd)
    try:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=arr.dtype, shape=arr.shape)
        step = max(1, (1 << 26) // max(1, arr.itemsize * (arr.shape[1] if arr.ndim > 1 else 1)))
        for start in range(0, arr.shape[0], step):
            out[start : start + step] = arr[start : start + step]
        out.flush()
        del out
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
