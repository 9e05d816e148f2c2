"""The readers-writer lock of :class:`~matryoshka_index.MatryoshkaIndex`: searches share, mutations are exclusive."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator


class ReadWriteLock:
    """Many readers or one writer. Re-entrant for the writer (which may also read); new readers wait
    while a writer waits, so a stream of searches cannot starve a mutation."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._readers = 0
        self._writer: int | None = None
        self._depth = 0
        self._writers_waiting = 0

    def _nested(self) -> bool:
        """Under ``_cond``: whether this thread holds the write lock already (then it enters once more)."""
        if self._writer == threading.get_ident():
            self._depth += 1
            return True
        return False

    @contextlib.contextmanager
    def read(self) -> Iterator[None]:
        with self._cond:
            nested = self._nested()
            if not nested:
                while self._writer is not None or self._writers_waiting:
                    self._cond.wait()
                self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                if nested:
                    self._depth -= 1
                else:
                    self._readers -= 1
                    if not self._readers:
                        self._cond.notify_all()

    @contextlib.contextmanager
    def write(self) -> Iterator[None]:
        with self._cond:
            if not self._nested():
                self._writers_waiting += 1
                try:
                    while self._writer is not None or self._readers:
                        self._cond.wait()
                finally:
                    self._writers_waiting -= 1
                self._writer, self._depth = threading.get_ident(), 1
        try:
            yield
        finally:
            with self._cond:
                self._depth -= 1
                if not self._depth:
                    self._writer = None
                    self._cond.notify_all()
