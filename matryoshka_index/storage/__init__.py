"""Files on disk: atomic writes, owned temporaries, vector files (.npy / .fvecs); checksums and versioned
JSON in :mod:`.checksums`, memory-map advice in :mod:`.mmaps` (their public names importable from here).

The atomic writes, the temporaries and the vector writers still share this module: the fault tests
inject crashes through its private steps (``_swap_in``, ``_exchange``, ``_between_renames``,
``_owned_temp_file``), so splitting them moves those injection points (issue 20, left for later).

Every write goes to a temporary name in the same directory and is then renamed over the final
name (``os.replace``, atomic on POSIX), so a crash mid-write leaves either the old file or the new
one, never a torn one. Directories (an index, an adaptor) are written the same way: into a fresh
temporary sibling, then swapped in with one ``renameat2(RENAME_EXCHANGE)`` where Linux offers it (the
name is never absent), else two renames whose window a later open or save repairs.

Temporaries (``.NAME.xxxxxxxx.tmp`` files and directories beside the output, ``.NAME.xxxxxxxx.old``
during a swap, ``mindex-spill-PID-*`` and ``mindex-edge-PID-*`` work directories) are *owned*: the process
that made one holds an exclusive ``flock`` on it for as long as it uses it. The lock dies with the
process (``kill -9`` included), so a later run, or ``mindex gc``, removes the temporaries whose
owner is gone and never touches a live one. Work directories go to ``$MINDEX_TMPDIR`` when set,
else beside the output, else the system temporary folder (:func:`temp_root`).

Vectors are written with ordinary ``write`` calls after ``posix_fallocate`` reserved their space, never
through a writable memory map: a full disk then raises ``ENOSPC`` (a one-line :class:`StorageError`)
instead of killing the process with ``SIGBUS``. Streaming readers advise the kernel (:mod:`.mmaps`)
so a memory-mapped corpus larger than RAM is read through a bounded window.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import re
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError, StorageError

# the public names of the jobs split out, still imported as ``from matryoshka_index.storage import X``
from .checksums import read_versioned_json as read_versioned_json
from .checksums import sha256_file as sha256_file
from .mmaps import advise_normal as advise_normal
from .mmaps import advise_random as advise_random
from .mmaps import advise_sequential as advise_sequential
from .mmaps import release_rows as release_rows
from .mmaps import stream_rows as stream_rows

try:  # POSIX; without it (Windows) owners cannot be told apart and nothing is swept automatically
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

TMPDIR_ENV = "MINDEX_TMPDIR"
_TEMP_NAME = re.compile(r"^\.(?P<name>.+)\.[a-z0-9_]{8}\.(?P<kind>tmp|old)$")
_WORK_DIR = re.compile(r"^(?P<name>mindex-(?:spill|edge|estimate))-(?:(?P<pid>\d+)-)?[a-z0-9_]{8}$")
_LEGACY_CORPUS_TMP = re.compile(r"^\.(?P<name>.+\.npy)\.tmp\.npy$")  # datasets.py before owned temporaries
# Work directories without the owner's pid in their name come from older versions (or Windows,
# without flock): their owner cannot be asked, so only those older than this count as stale.
_UNOWNED_GRACE_S = 24 * 3600.0
_held: dict[str, int] = {}  # directory temporaries this process owns: path -> fd holding the flock
_held_lock = threading.Lock()


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


# ---------------------------------------------------------------------- output locations and disk errors
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


def _existing_ancestor(path: Path) -> Path:
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
    parent = _existing_ancestor(target.parent)
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
    where = _existing_ancestor(Path(directory))
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


# ---------------------------------------------------------------------- owned temporaries
def temp_root(near: str | os.PathLike[str] | None = None) -> Path:
    """Where work files (spill files, embedded-store work directories) go: ``$MINDEX_TMPDIR`` when set,
    else the directory of ``near`` (the output being written) when given, else the system temp folder."""
    env = os.environ.get(TMPDIR_ENV)
    if env:
        return Path(env)
    if near is not None:
        return _existing_ancestor(Path(near).absolute().parent)
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


def _owned_temp_file(directory: Path, prefix: str, suffix: str = ".tmp") -> tuple[int, str]:
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
        _fsync_dir(path.parent)
        return [(path, 0, f"restored {why}")]
    return []


def glob_escape(name: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", name)


# ---------------------------------------------------------------------- atomic writes
def fsync_tree(root: str | os.PathLike[str]) -> None:
    """Flush every file under ``root``, at any depth, to disk (before a rename makes it visible)."""
    for p in Path(root).rglob("*"):
        if p.is_file():
            with open(p, "rb") as fh:
                os.fsync(fh.fileno())


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temp file in the same directory, fsync, rename).

    A symlink at ``path`` is followed (its target is replaced). A full or read-only disk raises a
    one-line :class:`StorageError` and leaves nothing behind.
    """
    path = resolve_output(path)
    with _temp_beside(path) as (fd, tmp):
        preallocate(fd, len(data), path)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
            os.replace(tmp, path)  # before the descriptor (and its lock) is closed
    _fsync_dir(path.parent)


@contextlib.contextmanager
def _temp_beside(path: Path) -> Iterator[tuple[int, str]]:
    """An owned temporary file beside ``path`` (stale ones of killed runs swept first), as ``(fd, name)``.

    The body writes it and renames it over ``path``; if the body fails, the temporary file is removed
    and a full or read-only disk becomes one :class:`StorageError` line. Closing ``fd`` is the body's.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        sweep_stale(path.parent, name=path.name)
        fd, tmp = _owned_temp_file(path.parent, f".{path.name}.")
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
        _fsync_dir(path.parent)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, OSError) and (err := disk_error(exc, path)) is not None:
            raise err from None
        raise
    finally:
        release_temp_dir(tmp)


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


def _npy_header(shape: tuple[int, ...], dtype: np.dtype) -> bytes:
    import io

    buf = io.BytesIO()
    d = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": tuple(shape)}
    np.lib.format.write_array_header_1_0(buf, d)
    return buf.getvalue()


def npy_bytes(shape: tuple[int, ...], dtype: object) -> int:
    """Size on disk of a ``.npy`` of this shape and dtype (header included)."""
    dt = np.dtype(dtype)
    return len(_npy_header(tuple(shape), dt)) + int(np.prod(shape, dtype=np.int64)) * dt.itemsize


def write_npy(
    path: str | os.PathLike[str], shape: tuple[int, ...], dtype: object, chunks: Iterable[np.ndarray]
) -> None:
    """Write a C-order ``.npy`` of ``shape``/``dtype`` from row ``chunks``, atomically, with ordinary I/O.

    The whole size is reserved first (``posix_fallocate``), so a full disk fails at once with one
    :class:`StorageError` line and no partial file is left; nothing is written through a memory map
    (a write fault there is SIGBUS, which kills the process). Use it in place of
    ``np.lib.format.open_memmap(mode="w+")`` for anything large.
    """
    dt = np.dtype(dtype)
    if dt.hasobject:
        raise InputError(f"{path}: object arrays are never written (no pickle)")
    shape = tuple(int(v) for v in shape)
    path = resolve_output(path)
    header = _npy_header(shape, dt)
    total = int(np.prod(shape, dtype=np.int64)) * dt.itemsize
    with _temp_beside(path) as (fd, tmp):
        try:
            preallocate(fd, len(header) + total, path)
            write_all(fd, header)
            written = 0
            for chunk in chunks:
                block = np.ascontiguousarray(chunk, dtype=dt)
                write_all(fd, memoryview(block).cast("B"))
                written += block.nbytes
            if written != total:
                raise ValueError(f"write_npy: got {written} bytes of data for shape {shape} ({total} expected)")
            os.fsync(fd)
            os.replace(tmp, path)  # before the descriptor (and its lock) is closed
        finally:
            os.close(fd)
    _fsync_dir(path.parent)


def write_all(fd: int, data: bytes | memoryview, offset: int | None = None) -> None:
    """Write every byte of ``data`` to ``fd``: at its current position, or from byte ``offset`` (``pwrite``)."""
    view = memoryview(data)
    while view:  # a write may be short
        done = os.write(fd, view) if offset is None else os.pwrite(fd, view, offset)
        view = view[done:]
        if offset is not None:
            offset += done


def save_npy(path: str | os.PathLike[str], arr: np.ndarray) -> None:
    """Save a .npy atomically (streams a memmap in bounded windows rather than loading it; see :func:`write_npy`)."""
    arr = np.asarray(arr)
    if arr.ndim == 0:
        write_npy(path, (), arr.dtype, [arr.reshape(1)])
        return
    row = arr.itemsize * int(np.prod(arr.shape[1:], dtype=np.int64))
    step = max(1, (1 << 24) // max(1, row))
    write_npy(path, arr.shape, arr.dtype, (w for _, w in stream_rows(arr, step)))
