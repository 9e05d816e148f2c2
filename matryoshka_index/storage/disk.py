"""The disk under a write: output locations (a symlink followed), one-line disk errors, free space,
space reserved before a write (``posix_fallocate``), flushing to disk, the bytes a tree occupies."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from pathlib import Path

from ..errors import StorageError

TMPDIR_ENV = "MINDEX_TMPDIR"
"""Where work files go when set (see :func:`~matryoshka_index.storage.temporaries.temp_root`); named in disk-space errors."""


def fsync_dir(path: Path) -> None:
    """Flush a directory's entries (a rename into it) to disk; best effort."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def human_bytes(n: float) -> str:
    """``1536`` -> ``'1.5 KiB'``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover


_DISK_ERRNOS = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
}


def disk_error(exc: OSError, path: str | os.PathLike[str] | None = None) -> StorageError | None:
    """The one-line :class:`StorageError` for a disk-level ``OSError`` (full, read-only, no permission), else None."""
    why = _DISK_ERRNOS.get(exc.errno or 0)
    if why is None:
        return None
    where = path if path is not None else (exc.filename or "output")
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        todo = "free some space or write elsewhere"
    else:
        todo = "choose a location you can write to"
    return StorageError(f"{where}: cannot write ({why}); {todo}")


def existing_ancestor(path: Path) -> Path:
    """``path`` itself or its nearest parent that exists (where a write to be made will land)."""
    path = Path(os.path.abspath(path))
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def resolve_output(path: str | os.PathLike[str]) -> Path:
    """The path a write to ``path`` should replace: a symlink is followed (the index it points to is the
    one rewritten, atomically, and the link stays), a dangling link is refused with one line."""
    path = Path(os.path.abspath(path))
    if path.is_symlink():
        target = Path(os.path.realpath(path))
        if not target.parent.is_dir():
            raise StorageError(
                f"{path}: is a symbolic link to {os.readlink(path)}, which does not exist; "
                "fix or remove the link, or choose another output path"
            )
        return target
    return path


def check_writable(path: str | os.PathLike[str], what: str = "output") -> Path:
    """Fail now, with one line, if ``path`` (a file or directory to create or replace) cannot be written.

    Creates and removes a probe file in the directory that will receive it (the nearest existing
    ancestor when the parents are still to be made), so a read-only or unwritable location is found
    before hours of work rather than after them. Returns the resolved path (see :func:`resolve_output`).
    """
    target = resolve_output(path)
    parent = existing_ancestor(target.parent)
    if not parent.is_dir():
        raise StorageError(f"{what} ({path}): {parent} is not a directory; choose another output path")
    try:
        fd, probe = tempfile.mkstemp(prefix=".mindex-probe-", dir=parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        err = disk_error(exc, parent)
        if err is None:
            raise
        raise StorageError(f"{what} ({path}): {err}") from None
    return target


def check_free_space(directory: str | os.PathLike[str], need: int, what: str) -> None:
    """Fail with one line (how much is needed, where, how much is free) when ``need`` bytes will not fit."""
    where = existing_ancestor(Path(directory))
    try:
        free = shutil.disk_usage(where).free
    except OSError:
        return
    if free < need:
        raise StorageError(
            f"{what} needs about {human_bytes(need)} in {where} but only {human_bytes(free)} is free; "
            f"free some space or choose another location (${TMPDIR_ENV} moves temporary files)"
        )


def preallocate(fd: int, size: int, path: str | os.PathLike[str]) -> bool:
    """Reserve ``size`` bytes for the file open on ``fd`` (``posix_fallocate``), so a full disk fails
    here with :class:`StorageError` instead of at a later write, or with SIGBUS through a memory map.

    Returns True when the space is reserved, False when this file system cannot reserve it (no
    ``fallocate``): then the free space is checked instead (``shutil.disk_usage``) and a shortfall is
    the same one-line :class:`StorageError`; later ordinary writes still raise ``ENOSPC`` if another
    writer takes the room first.
    """
    if size <= 0:
        return True
    if hasattr(os, "posix_fallocate"):
        try:
            os.posix_fallocate(fd, 0, size)
            return True
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                err = disk_error(exc, path)
                if err is None:
                    raise
                raise StorageError(f"{err} ({human_bytes(size)} were needed)") from None
    try:
        held = os.fstat(fd).st_blocks * 512  # what the file already has on disk
    except OSError:
        held = 0
    check_free_space(Path(path).parent, size - held, f"{path} (this file system cannot reserve space in advance)")
    return False


def fsync_tree(root: str | os.PathLike[str]) -> None:
    """Flush every file under ``root``, at any depth, to disk (before a rename makes it visible)."""
    for p in Path(root).rglob("*"):
        if p.is_file():
            with open(p, "rb") as fh:
                os.fsync(fh.fileno())


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
