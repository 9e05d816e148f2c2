"""Signals for the ``mindex`` process: Ctrl-C and SIGTERM end a command with one line, never a traceback.

Two phases. While the command line starts (imports of torch, FAISS, Qdrant: seconds) nothing has
been written, so an interrupt just exits: one line, code 130 (SIGINT) or 143 (SIGTERM).
Once a command runs, both signals raise :class:`KeyboardInterrupt` (SIGTERM as its subclass
:class:`Terminated`), so every ``finally`` and atomic write cleans up on the way out exactly as for
Ctrl-C, and the command's error wrapper prints the line and exits 130 or 143.

This module imports nothing heavy: it is installed before the rest of the CLI is imported.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Iterator
from typing import Any

EXIT_SIGINT = 130
EXIT_SIGTERM = 143


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C's KeyboardInterrupt so the same cleanup runs."""


def _exit_at_startup(signum: int, frame: Any) -> None:
    code = EXIT_SIGTERM if signum == signal.SIGTERM else EXIT_SIGINT
    what = "Terminated" if signum == signal.SIGTERM else "Interrupted"
    os.write(2, f"{what} while starting; nothing was written.\n".encode())
    os._exit(code)


def _raise_terminated(signum: int, frame: Any) -> None:
    raise Terminated()


def quiet_startup_signals() -> None:
    """In the ``mindex`` program (not when the CLI is imported by tests or another program): exit with one
    line on SIGINT/SIGTERM until :func:`command_signals` takes over."""
    if os.path.basename(sys.argv[0]) not in ("mindex", "mindex.exe"):
        return
    with contextlib.suppress(ValueError):  # not the main thread: leave the handlers alone
        signal.signal(signal.SIGINT, _exit_at_startup)
        signal.signal(signal.SIGTERM, _exit_at_startup)


@contextlib.contextmanager
def command_signals() -> Iterator[None]:
    """While a command runs: SIGINT raises KeyboardInterrupt, SIGTERM raises :class:`Terminated`;
    the previous handlers come back afterwards (the CLI may run inside a test or another program)."""
    try:
        previous = (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM))
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, _raise_terminated)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        for sig, handler in zip((signal.SIGINT, signal.SIGTERM), previous, strict=True):
            if handler is not None:
                signal.signal(sig, handler)
