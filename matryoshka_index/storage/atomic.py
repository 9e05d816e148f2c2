"""Atomic writes: a file through an owned temporary beside it, fsync, rename; a directory into a fresh
temporary sibling, swapped in with one ``renameat2(RENAME_EXCHANGE)`` where Linux offers it (the name
is never absent), else two renames whose window a later open or save repairs (:func:`recover_directory`).
The crash tests inject faults through :func:`_exchange` and :func:`_between_renames`.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import InputError
from .disk import disk_error, fsync_dir, fsync_tree, preallocate, resolve_output
from .temporaries import (
    owned_temp_dir,
    owned_temp_file,
    recover_directory,
    release_temp_dir,
    remove_temp_dir,
    sweep_stale,
)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _file_mode() -> int:
    """The mode a plainly created file gets (0666 less the umask); mkstemp alone would give 0600."""
    return 0o666 & ~_umask()


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temp file in the same directory, fsync, rename).

    A symlink at ``path`` is followed (its target is replaced). A full or read-only disk raises a
    one-line :class:`StorageError` and leaves nothing behind.
    """
    path = resolve_output(path)
    with temp_file_beside(path) as (fd, tmp):
        preallocate(fd, len(data), path)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
            os.replace(tmp, path)  # before the descriptor (and its lock) is closed
    fsync_dir(path.parent)


@contextlib.contextmanager
def temp_file_beside(path: Path) -> Iterator[tuple[int, str]]:
    """An owned temporary file beside ``path`` (stale ones of killed runs swept first), as ``(fd, name)``.

    The body writes it and renames it over ``path``; if the body fails, the temporary file is removed
    and a full or read-only disk becomes one :class:`StorageError` line. Closing ``fd`` is the body's.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        sweep_stale(path.parent, name=path.name)
        fd, tmp = owned_temp_file(path.parent, f".{path.name}.")
    except OSError as exc:
        raise (disk_error(exc, path) or exc) from None
    try:
        os.fchmod(fd, _file_mode())
        yield fd, tmp
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and (err := disk_error(exc, path)) is not None:
            raise err from None
        raise


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100
_renameat2: Any = None


def _exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths in one atomic step (Linux ``renameat2(RENAME_EXCHANGE)``); False where unsupported."""
    global _renameat2
    if not sys.platform.startswith("linux"):
        return False
    if _renameat2 is None:
        try:
            fn = ctypes.CDLL(None, use_errno=True).renameat2
            fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
            fn.restype = ctypes.c_int
            _renameat2 = fn
        except (AttributeError, OSError):
            _renameat2 = False
    if not _renameat2:
        return False
    if _renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EXDEV):
        return False  # this file system cannot exchange: the two-rename fallback
    raise OSError(err, os.strerror(err), str(b))


def _between_renames() -> None:
    """Hook for the crash tests: runs while ``path`` is absent in the two-rename fallback."""


def _swap_in(tmp: Path, path: Path) -> None:
    """Make ``tmp`` (complete) the directory at ``path`` and delete the previous one."""
    if not path.exists():
        os.replace(tmp, path)
        return
    if _exchange(tmp, path):  # path now the new version, tmp the old one: at no instant is path absent
        shutil.rmtree(tmp, ignore_errors=True)
        return
    old = owned_temp_dir(f".{path.name}.", path.parent, suffix=".old", pid_in_name=False)
    moved = False
    try:
        os.replace(path, old / "x")
        moved = True
        _between_renames()
        os.replace(tmp, path)
        moved = False
    except BaseException:
        if moved:  # interrupted (Ctrl-C, SIGTERM) between the renames: put the old version back
            os.replace(old / "x", path)
        raise
    finally:
        remove_temp_dir(old)


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike[str], *, overwrite: bool = True) -> Iterator[Path]:
    """Yield a fresh temporary directory; on success it replaces ``path``.

    On any exception (including KeyboardInterrupt) the temporary directory is removed and an
    existing ``path`` is untouched. The swap is one atomic exchange where Linux offers it; elsewhere
    ``path`` is moved aside, the new directory renamed in, then the old one deleted, and a process
    killed between those two renames leaves the old version in ``.NAME.*.old``, which the next open
    or save puts back (:func:`recover_directory`). A symlink at ``path`` is followed. Stale
    temporaries of ``path`` left by killed processes are removed first.
    """
    path = resolve_output(path)
    recover_directory(path)
    if path.exists() and not overwrite:
        raise InputError(f"{path}: already exists; choose another output path or allow overwriting")
    if path.exists() and not path.is_dir():
        raise InputError(f"{path}: exists and is not a directory; choose another output path")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        sweep_stale(path.parent, name=path.name)
        tmp = owned_temp_dir(f".{path.name}.", path.parent, suffix=".tmp", pid_in_name=False)
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp gives 0700; the final directory should look plainly created
    except OSError as exc:
        raise (disk_error(exc, path) or exc) from None
    try:
        yield tmp
        fsync_tree(tmp)
        _swap_in(tmp, path)
        fsync_dir(path.parent)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, OSError) and (err := disk_error(exc, path)) is not None:
            raise err from None
        raise
    finally:
        release_temp_dir(tmp)
