"""Progress bars for long work (training, transforming, uploading).

A thin wrapper over tqdm: a bar on an interactive terminal, nothing when stderr is not a terminal
(pipes, CI, log files) or when the caller asks for quiet. ``MINDEX_QUIET=1`` silences every bar.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from typing import Any

from tqdm.auto import tqdm


def progress_enabled(quiet: bool | None = None) -> bool:
    """Whether bars should be drawn: not quiet, not MINDEX_QUIET, and stderr is a terminal."""
    if quiet:
        return False
    if os.environ.get("MINDEX_QUIET", "") not in ("", "0"):
        return False
    return bool(getattr(sys.stderr, "isatty", lambda: False)())


def progress(
    iterable: Iterable[Any] | None = None,
    *,
    total: int | None = None,
    desc: str | None = None,
    unit: str = "it",
    quiet: bool | None = None,
    **kwargs: Any,
) -> tqdm:
    """A tqdm bar, disabled when :func:`progress_enabled` says so."""
    return tqdm(
        iterable,
        total=total,
        desc=desc,
        unit=unit,
        disable=not progress_enabled(quiet),
        dynamic_ncols=True,
        leave=False,
        **kwargs,
    )
