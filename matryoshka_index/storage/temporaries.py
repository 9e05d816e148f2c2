"""Owned temporaries: ``.NAME.xxxxxxxx.tmp`` files and directories beside an output, ``.NAME.xxxxxxxx.old``
during a swap, ``mindex-spill-PID-*`` / ``mindex-edge-PID-*`` work directories; their sweeping.

The process that made one holds an exclusive ``flock`` on it for as long as it uses it. The lock dies
with the process (``kill -9`` included), so a later run, or ``mindex gc``, removes the temporaries whose
owner is gone and never touches a live one. Work directories go to ``$MINDEX_TMPDIR`` when set, else
beside the output, else the system temporary folder (:func:`temp_root`).
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import tempfile
import threading
import time
from pathlib import Path

from .disk import TMPDIR_ENV, allocated_bytes, disk_error, existing_ancestor, fsync_dir

try:  # POSIX; without it (Windows) owners cannot be told apart and nothing is swept automatically
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

_TEMP_NAME = re.compile(r"^\.(?P<name>.+)\.[a-z0-9_]{8}\.(?P<kind>tmp|old)$")
_WORK_DIR = re.compile(r"^(?P<name>mindex-(?:spill|edge|estimate))-(?:(?P<pid>\d+)-)?[a-z0-9_]{8}$")
_LEGACY_CORPUS_TMP = re.compile(r"^\.(?P<name>.+\.npy)\.tmp\.npy$")  # datasets.py before owned temporaries
# Work directories without the owner's pid in their name come from older versions (or Windows,
# without flock): their owner cannot be asked, so only those older than this count as stale.
_UNOWNED_GRACE_S = 24 * 3600.0
_held: dict[str, int] = {}  # directory temporaries this process owns: path -> fd holding the flock
_held_lock = threading.Lock()


def temp_root(near: str | os.PathLike[str] | None = None) -> Path:
    """Where work files (spill files, embedded-store work directories) go: ``$MINDEX_TMPDIR`` when set,
    else the directory of ``near`` (the output being written) when given, else the system temp folder."""
    env = os.environ.get(TMPDIR_ENV)
    if env:
        return Path(env)
    if near is not None:
        return existing_ancestor(Path(near).absolute().parent)
    return Path(tempfile.gettempdir())


def _try_lock(fd: int) -> bool:
    if fcntl is None:  # pragma: no cover
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return False
        raise
    return True


def _same_inode(path: str, fd: int) -> bool:
    try:
        a, b = os.stat(path), os.fstat(fd)
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def owned_temp_file(directory: Path, prefix: str, suffix: str = ".tmp") -> tuple[int, str]:
    """``mkstemp`` whose file this process holds locked (the lock is the file's own descriptor)."""
    while True:
        fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=directory)
        if _try_lock(fd) and _same_inode(tmp, fd):
            return fd, tmp
        os.close(fd)  # swept between creation and locking (its owner looked dead): make another


def _prune_held() -> None:
    with _held_lock:
        for p, fd in list(_held.items()):
            if not _same_inode(p, fd):
                os.close(fd)
                del _held[p]


def owned_temp_dir(
    prefix: str, directory: str | os.PathLike[str] | None = None, suffix: str = "", *, pid_in_name: bool = True
) -> Path:
    """A fresh temporary directory this process owns (locked until :func:`remove_temp_dir` or exit).

    ``directory`` defaults to :func:`temp_root`. Stale directories of the same prefix there, whose
    owners died, are removed first. Use in place of ``tempfile.mkdtemp(prefix=...)``: the directory
    is empty, and its name carries the owner's pid after the prefix (``mindex-edge-1234-xxxxxxxx``;
    for people and to tell it from an older version's: the lock on the directory is what counts)
    unless ``pid_in_name=False`` (the ``.NAME.xxxxxxxx.tmp`` form beside an output).
    """
    root = Path(directory) if directory is not None else temp_root()
    try:
        root.mkdir(parents=True, exist_ok=True)
        sweep_stale(root, prefix=prefix)
        _prune_held()
        while True:
            tmp = tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-" if pid_in_name else prefix, suffix=suffix, dir=root)
            fd = os.open(tmp, os.O_RDONLY)
            if _try_lock(fd) and _same_inode(tmp, fd):
                with _held_lock:
                    _held[tmp] = fd
                return Path(tmp)
            os.close(fd)
    except OSError as exc:
        err = disk_error(exc, root)
        if err is None:
            raise
        raise err from None


def release_temp_dir(path: str | os.PathLike[str]) -> None:
    """Drop this process's lock on a directory from :func:`owned_temp_dir` (it becomes sweepable)."""
    with _held_lock:
        fd = _held.pop(str(path), None)
    if fd is not None:
        os.close(fd)


def remove_temp_dir(path: str | os.PathLike[str]) -> None:
    """Remove a directory from :func:`owned_temp_dir` and drop its lock."""
    shutil.rmtree(path, ignore_errors=True)
    release_temp_dir(path)


def _tree_bytes(path: Path) -> int:
    if not path.is_dir() or path.is_symlink():
        with contextlib.suppress(OSError):
            return path.lstat().st_size
        return 0
    return allocated_bytes(path)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _stale(path: Path, *, locked_by_owner: bool = True) -> int | None:
    """An fd holding the lock of ``path`` when its owner is gone (the caller closes it), else None.

    ``locked_by_owner=False``: a name only older versions made (whose owners hold no lock): it only
    counts once older than a day.
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return None
    try:
        unowned = fcntl is None or not locked_by_owner
        if unowned and time.time() - os.fstat(fd).st_mtime < _UNOWNED_GRACE_S:
            raise OSError
        if fcntl is not None and not _try_lock(fd):
            raise OSError
        if not _same_inode(str(path), fd):
            raise OSError
    except OSError:
        os.close(fd)
        return None
    return fd


def sweep_stale(
    directory: str | os.PathLike[str], *, name: str | None = None, prefix: str | None = None, dry_run: bool = False
) -> list[tuple[Path, int, str]]:
    """Remove the temporaries in ``directory`` whose owning process is gone; never a live one.

    ``name``: only those of one output (``.NAME.*.tmp`` / ``.old``); ``prefix``: only work directories
    with that prefix; neither: every kind. An interrupted directory swap (the name absent, the old
    version aside in ``.NAME.*.old``) is first put back (:func:`recover_directory`). Returns
    ``(path, bytes, what was done)`` for each; ``dry_run`` only reports what would be done.
    """
    directory = Path(directory)
    done: list[tuple[Path, int, str]] = []
    try:
        entries = sorted(os.scandir(directory), key=lambda e: e.name)
    except OSError:
        return done
    names: set[str] = set()
    candidates: list[tuple[str, bool]] = []  # (name, made by this version: locked while its owner lives)
    for entry in entries:
        m = _TEMP_NAME.match(entry.name) or _LEGACY_CORPUS_TMP.match(entry.name)
        if m is not None and prefix is None and (name is None or m.group("name") == name):
            candidates.append((entry.name, m.re is _TEMP_NAME))
            names.add(m.group("name"))
        elif (m := _WORK_DIR.match(entry.name)) and name is None and (prefix is None or entry.name.startswith(prefix)):
            candidates.append((entry.name, m.group("pid") is not None))
    for n in sorted(names):
        done += recover_directory(directory / n, dry_run=dry_run)
    for entry_name, locked in candidates:
        p = directory / entry_name
        fd = _stale(p, locked_by_owner=locked)
        if fd is None:
            continue
        try:
            if not p.exists():  # an .old put back by recover_directory above
                continue
            size = _tree_bytes(p)
            if not dry_run:
                _remove(p)
        finally:
            os.close(fd)
        done.append((p, size, "would remove" if dry_run else "removed"))
    return done


def recover_directory(path: str | os.PathLike[str], *, dry_run: bool = False) -> list[tuple[Path, int, str]]:
    """Put back a directory a killed swap left aside: when ``path`` is absent and a stale
    ``.NAME.*.old`` sibling holds the previous version, rename it back. Returns what was done."""
    path = Path(os.path.abspath(path))
    if os.path.lexists(path):
        return []
    try:
        olds = sorted(path.parent.glob(f".{glob_escape(path.name)}.????????.old"), key=lambda p: p.stat().st_mtime)
    except OSError:
        return []
    for old in reversed(olds):  # the newest is the version the killed save was replacing
        if not (old / "x").is_dir():
            continue
        fd = _stale(old)
        if fd is None:
            continue
        why = f"from {old.name} (a save was interrupted between its two renames)"
        if dry_run:
            os.close(fd)
            return [(path, 0, f"would restore {why}")]
        try:
            os.replace(old / "x", path)
            shutil.rmtree(old, ignore_errors=True)
        finally:
            os.close(fd)
        fsync_dir(path.parent)
        return [(path, 0, f"restored {why}")]
    return []


def glob_escape(name: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", name)
