"""Shared pieces of the CLI: one-line errors with exit code 2, vector-file loading, --quiet."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click
import numpy as np

from ..errors import MatryoshkaError
from ..storage import load_vectors
from ..validation import check_embeddings

F = TypeVar("F", bound=Callable[..., Any])

EXIT_USAGE = 2


def fail(message: str) -> None:
    """Print ``Error: message`` (one line) on stderr and exit with code 2."""
    click.echo(f"Error: {message}", err=True)
    sys.exit(EXIT_USAGE)


def user_errors(func: F) -> F:
    """Turn every :class:`MatryoshkaError` (and a missing file) into one line on stderr and exit 2.

    ``MINDEX_DEBUG=1`` re-raises instead, for a traceback when reporting a bug.
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (MatryoshkaError, FileNotFoundError, PermissionError, IsADirectoryError) as exc:
            if os.environ.get("MINDEX_DEBUG"):
                raise
            message = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
            fail(message)
        except KeyboardInterrupt:
            click.echo("Interrupted; nothing was left half-written.", err=True)
            sys.exit(130)

    return wrapper  # type: ignore[return-value]


def quiet_option(func: F) -> F:
    return click.option(
        "--quiet", "-q", is_flag=True, help="No progress bars (they are off anyway when not on a terminal)."
    )(func)


def read_vectors(path: str, name: str, *, dim: int | None = None, min_rows: int = 1) -> np.ndarray:
    """Load a .npy (memory-mapped) or .fvecs file and validate it; the message names the file."""
    arr = load_vectors(path)
    return check_embeddings(arr, name=f"{name} ({path})", dim=dim, min_rows=min_rows)
