"""User-facing errors.

Every error a user can cause (bad input, a foreign file, an unreachable server) is raised as a
:class:`MatryoshkaError` whose message is one line: what is wrong and what to do. The CLI prints
that line and exits with code 2; it never shows a traceback for these.
"""

from __future__ import annotations


class MatryoshkaError(Exception):
    """Base class of every error caused by the user's input or environment."""


class InputError(MatryoshkaError, ValueError):
    """An argument has the wrong shape, dtype, values or size."""


class FormatError(MatryoshkaError):
    """A file or directory is corrupt, foreign, or of an unsupported format version."""


class BackendError(MatryoshkaError):
    """A storage backend (a Qdrant server, a FAISS index) refused or could not be reached."""


class CalibrationError(MatryoshkaError):
    """A calibration did not reach its target recall; the index keeps the default it had.

    ``record`` is the calibration record of the attempt (every step measured, ``"reached": false``).
    """

    def __init__(self, message: str, record: dict | None = None) -> None:
        super().__init__(message)
        self.record = dict(record or {})


class CalibrationWarning(UserWarning):
    """A build's calibration did not reach its target: the index is usable, its default candidates
    are the most that were tried, and the manifest's calibration record says so (``"warning"``)."""


class StorageError(MatryoshkaError):
    """The disk refused a write: no space left, a read-only or unwritable location, a dangling link."""
