"""Shared pieces of the CLI: one-line errors with exit code 2, output checks, vector-file loading, --quiet."""

from __future__ import annotations

import contextlib
import functools
import os
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import click
import numpy as np

from ..errors import InputError, MatryoshkaError
from ..progress import stage_lines
from ..storage import check_writable, disk_error, load_vectors, sweep_stale
from ..validation import check_embeddings
from ._signals import EXIT_SIGINT, EXIT_SIGTERM, Terminated, command_signals

F = TypeVar("F", bound=Callable[..., Any])

EXIT_USAGE = 2


def fail(message: str) -> None:
    """Print ``Error: message`` (one line) on stderr and exit with code 2."""
    click.echo(f"Error: {message}", err=True)
    sys.exit(EXIT_USAGE)


def _one_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc).strip() else exc.__class__.__name__


def _os_error_line(exc: OSError) -> str:
    """One line for an OSError: the disk's own words for full / read-only / no permission, else its strerror."""
    err = disk_error(exc)
    if err is not None:
        return str(err)
    where = f"{exc.filename}: " if exc.filename else ""
    return f"{where}{exc.strerror or _one_line(exc)}"


def _warning_line(
    message: Any, category: type[Warning], filename: str, lineno: int, file: Any = None, line: Any = None
) -> None:
    """A warning as one line on stderr (``CalibrationWarning: ...``): the file, line and source line Python
    adds would name our own code (or contextlib's), nothing the user can act on."""
    click.echo(f"{category.__name__}: {_one_line(Warning(str(message)))}", err=True)


@contextlib.contextmanager
def one_line_warnings() -> Iterator[None]:
    """While a command runs, each warning shown is one line (``MINDEX_DEBUG=1``: Python's own format)."""
    with warnings.catch_warnings():
        if not os.environ.get("MINDEX_DEBUG"):
            warnings.showwarning = _warning_line
        yield


def user_errors(func: F) -> F:
    """Turn every :class:`MatryoshkaError`, a disk error (full, read-only, no permission, a missing file)
    and a truncated file into one line on stderr and exit 2; Ctrl-C into one line and exit 130, SIGTERM
    into one line and exit 143 (both after the cleanup of any half-written output).

    ``MINDEX_DEBUG=1`` re-raises instead, for a traceback when reporting a bug.
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            with command_signals(), stage_lines(), one_line_warnings():
                return func(*args, **kwargs)
        except MatryoshkaError as exc:
            if os.environ.get("MINDEX_DEBUG"):
                raise
            fail(_one_line(exc))
        except OSError as exc:
            if os.environ.get("MINDEX_DEBUG"):
                raise
            fail(_os_error_line(exc))
        except EOFError as exc:  # np.load of an empty or cut file; click would print only "Aborted!"
            if os.environ.get("MINDEX_DEBUG"):
                raise
            fail(
                f"a file ended before its data did ({_one_line(exc)}): it is empty or truncated; rebuild or re-save it"
            )
        except Terminated:
            click.echo("Terminated; nothing was left half-written.", err=True)
            sys.exit(EXIT_SIGTERM)
        except KeyboardInterrupt:
            click.echo("Interrupted; nothing was left half-written.", err=True)
            sys.exit(EXIT_SIGINT)

    return wrapper  # type: ignore[return-value]


def output_location(path: str, what: str = "--output") -> Path:
    """Check before any work that ``path`` can be written (one line and exit 2 if not); returns where it will go
    (a symlink followed to its target). Stale temporaries a killed run left beside it are swept."""
    target = check_writable(path, what)
    sweep_stale(target.parent, name=target.name)
    return target


def choice_option(flag: str, choices: list[str], default: str, help: str) -> Callable[[F], F]:
    """``--flag`` taking one of ``choices``, its default shown in --help."""
    return click.option(flag, type=click.Choice(choices), default=default, show_default=True, help=help)


def file_option(*decls: str, help: str, **attrs: Any) -> Callable[[F], F]:
    """An option naming a file: click refuses a directory there before the command runs."""
    return click.option(*decls, type=click.Path(dir_okay=False), help=help, **attrs)


def dir_option(*decls: str, help: str, **attrs: Any) -> Callable[[F], F]:
    """An option naming a directory: click refuses a file there before the command runs."""
    return click.option(*decls, type=click.Path(file_okay=False), help=help, **attrs)


def quiet_option(func: F) -> F:
    return click.option(
        "--quiet", "-q", is_flag=True, help="No progress bars (they are off anyway when not on a terminal)."
    )(func)


def read_vectors(path: str, name: str, *, dim: int | None = None, min_rows: int = 1) -> np.ndarray:
    """Load a .npy (memory-mapped) or .fvecs file and validate it; the message names the file."""
    arr = load_vectors(path)
    return check_embeddings(arr, name=f"{name} ({path})", dim=dim, min_rows=min_rows)


def parse_value(text: str) -> bool | int | float | str:
    """A command-line value as the API takes it: ``true``/``false``, ``yes``/``no``, ``on``/``off`` (any case) a bool, ``12`` an int,
    ``0.5`` / ``1e-3`` a float, anything else the string itself."""
    lowered = text.strip().lower()
    if lowered in ("true", "false", "yes", "no", "on", "off"):
        return lowered in ("true", "yes", "on")
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def parse_key_values(pairs: tuple[str, ...], flag: str) -> dict[str, bool | int | float | str]:
    """``("pq_m=16", "balance=itq")`` -> ``{"pq_m": 16, "balance": "itq"}``; a malformed or repeated key is one line."""
    out: dict[str, bool | int | float | str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key or not value.strip():
            raise InputError(f"{flag} {pair!r}: expected KEY=VALUE, e.g. {flag} pq_m=16")
        if key in out:
            raise InputError(f"{flag}: {key} is given twice")
        out[key] = parse_value(value.strip())
    return out
