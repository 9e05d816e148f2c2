"""Small file systems for the fault tests: a tmpfs of a few MB (a full disk) or mounted read-only.

Mounting needs root (or a user namespace); where it is refused the tests that need a real small or
read-only file system are skipped with the reason, and the injected-error tests cover the same code.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _mount(cmd: list[str]) -> bool:
    try:
        return subprocess.run(cmd, capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


@contextlib.contextmanager
def small_fs(path: Path, size: str = "3m") -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``path`` (made); skips the test where not allowed (read-only: then
    :func:`remount_read_only`)."""
    path.mkdir(parents=True, exist_ok=True)
    if sys.platform != "linux" or not _mount(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)]):
        pytest.skip("cannot mount a small tmpfs here (needs root on Linux); the injected-error tests cover this")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=20)


def remount_read_only(path: Path) -> None:
    if not _mount(["mount", "-o", "remount,ro", str(path)]):
        pytest.skip("cannot remount the tmpfs read-only here")


def leftovers(directory: Path) -> list[str]:
    """Names in ``directory`` that look like our temporaries (or any hidden file)."""
    return sorted(p.name for p in directory.iterdir() if p.name.startswith(".") or p.name.startswith("mindex-"))


def mindex(*args: str, env: dict | None = None, timeout: float = 300, cwd: Path | None = None, pre: str = ""):
    """Run the ``mindex`` command line in a fresh process (so a SIGBUS or a signal hits it, not pytest).

    ``pre``: Python run first in that process (fault hooks). Returns the CompletedProcess.
    """
    code = (
        "import sys\nsys.argv[0] = 'mindex'\n"
        + pre
        + "\nfrom matryoshka_index.cli import main\nmain(sys.argv[1:], prog_name='mindex')\n"
    )
    full_env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", MINDEX_QUIET="1")
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, env=full_env, timeout=timeout, cwd=cwd
    )


def python(code: str, *, env: dict | None = None, timeout: float = 300):
    """Run ``code`` in a fresh Python process with this checkout on the path."""
    full_env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full_env, timeout=timeout)


def one_error_line(stderr: str) -> str:
    """The stderr of a failed command must be exactly one ``Error: ...`` line (no traceback)."""
    lines = [line for line in stderr.splitlines() if line.strip() and not line.startswith("mindex: ")]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("Error: "), stderr
    assert "Traceback" not in stderr
    return lines[0]


# Python for a child's ``pre`` / ``python`` code: from here on this process's file systems cannot
# reserve space (``posix_fallocate`` fails with EOPNOTSUPP, as on some network and FUSE file systems).
NO_FALLOCATE = (
    "import errno as _errno, os as _os\n"
    "def _no_fallocate(*a):\n"
    "    raise OSError(_errno.EOPNOTSUPP, 'Operation not supported')\n"
    "_os.posix_fallocate = _no_fallocate\n"
)
