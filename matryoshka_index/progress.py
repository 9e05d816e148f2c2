"""Progress for long work (training, transforming, uploading): bars on a terminal, lines elsewhere.

A thin wrapper over tqdm: a bar on an interactive terminal, nothing when stderr is not a terminal
(pipes, CI, log files) or when the caller asks for quiet. ``MINDEX_QUIET=1`` silences everything.

Where a program turned stage lines on (:func:`stage_lines`; the ``mindex`` command line does), work
that would draw a bar on a terminal prints instead one line on stderr when it ends, with its elapsed
time (when it took a second or more), and, while it runs past a minute, a line a minute with the fraction done and an estimate of
the time left: a twenty-minute training run in a log file says how far it is. A stage that fails
prints nothing (its error is the one line). The library alone prints nothing.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any

from tqdm.auto import tqdm

_stage_lines = False
_EVERY_S = 60.0  # a progress line this often while a stage runs
_MIN_S = 1.0  # stages quicker than this print no end line (noise before a result or an error)


def progress_enabled(quiet: bool | None = None) -> bool:
    """Whether bars should be drawn: not quiet, not MINDEX_QUIET, and stderr is a terminal."""
    if _silenced(quiet):
        return False
    return bool(getattr(sys.stderr, "isatty", lambda: False)())


def _silenced(quiet: bool | None) -> bool:
    return bool(quiet) or os.environ.get("MINDEX_QUIET", "") not in ("", "0")


@contextlib.contextmanager
def stage_lines(enabled: bool = True) -> Iterator[None]:
    """Within this block, stages print their start / progress / end lines on stderr when no bar is drawn."""
    global _stage_lines
    before, _stage_lines = _stage_lines, enabled
    try:
        yield
    finally:
        _stage_lines = before


def _lines_wanted(quiet: bool | None) -> bool:
    return _stage_lines and not _silenced(quiet) and not progress_enabled(quiet)


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    m, s = divmod(round(seconds), 60)
    return f"{m} min {s:02d} s" if m < 60 else f"{m // 60} h {m % 60:02d} min"


def _say(text: str) -> None:
    print(f"mindex: {text}", file=sys.stderr, flush=True)


class _StageBar(tqdm):
    """A disabled tqdm that prints a line a minute while its stage runs and one when it ends."""

    monitor_interval = 0  # disabled: no monitor thread (see _QuietBar)

    def __init__(self, iterable: Iterable[Any] | None, *, total: int | None, desc: str | None, unit: str) -> None:
        super().__init__(iterable, total=total, disable=True)
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        self._what, self._unit, self._total = desc or "working", unit, total
        self._count = 0
        self._t0 = self._last = time.monotonic()
        self._ended = False
        self._postfix = ""

    def update(self, n: float | None = 1) -> bool | None:
        self._count += 1 if n is None else n
        now = time.monotonic()
        if now - self._last >= _EVERY_S:
            self._last = now
            elapsed = now - self._t0
            if self._total:
                frac = min(1.0, self._count / self._total)
                left = elapsed * (1 - frac) / frac if frac > 0 else float("nan")
                eta = f", about {_duration(left)} left" if frac > 0 else ""
                where = f"{frac:.0%} ({self._count:,.0f}/{self._total:,} {self._unit})"
            else:
                where, eta = f"{self._count:,.0f} {self._unit}", ""
            _say(f"{self._what} {where}, {_duration(elapsed)} elapsed{eta}{self._postfix}")
        return None

    def set_postfix(self, ordered_dict: Any = None, refresh: bool = True, **kwargs: Any) -> None:
        items = dict(ordered_dict or {}, **kwargs)
        self._postfix = "".join(f", {k} {v}" for k, v in items.items())

    def __iter__(self) -> Iterator[Any]:
        for obj in self.iterable:
            yield obj
            self.update()
        self.close()

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is not None:
            self._ended = True  # failed or interrupted: the error says so, not a "done" line
        self.close()

    def __del__(self) -> None:
        self._ended = True  # never closed (an error unwound past it): print nothing

    def close(self) -> None:
        if not self._ended:
            self._ended = True
            elapsed = time.monotonic() - self._t0
            done = f"{self._count:,.0f} {self._unit} " if self._count else ""
            if elapsed >= _MIN_S:
                _say(f"{self._what} done: {done}in {_duration(elapsed)}")
        super().close()


class _QuietBar(tqdm):
    """A disabled tqdm that starts no ``tqdm_monitor`` thread (tqdm's ``__new__`` starts one for any bar,
    disabled or not: a library that prints nothing should leave no thread behind either)."""

    monitor_interval = 0


def progress(
    iterable: Iterable[Any] | None = None,
    *,
    total: int | None = None,
    desc: str | None = None,
    unit: str = "it",
    quiet: bool | None = None,
    **kwargs: Any,
) -> tqdm:
    """A tqdm bar, disabled when :func:`progress_enabled` says so (then stage lines, when turned on)."""
    if _lines_wanted(quiet):
        return _StageBar(iterable, total=total, desc=desc, unit=unit)
    enabled = progress_enabled(quiet)
    return (tqdm if enabled else _QuietBar)(
        iterable,
        total=total,
        desc=desc,
        unit=unit,
        disable=not enabled,
        dynamic_ncols=True,
        leave=False,
        **kwargs,
    )


@contextlib.contextmanager
def stage(desc: str, *, quiet: bool | None = None) -> Iterator[None]:
    """A stage without a bar (reading, saving): its end line when stage lines are on."""
    if not _lines_wanted(quiet):
        yield
        return
    t0 = time.monotonic()
    yield
    if (elapsed := time.monotonic() - t0) >= _MIN_S:
        _say(f"{desc} done in {_duration(elapsed)}")
