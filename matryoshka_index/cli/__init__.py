"""The ``mindex`` command line: a thin shell over the Python API."""

from ._signals import quiet_startup_signals

quiet_startup_signals()  # before the heavy imports below: Ctrl-C while they run gives one line, not a traceback

from .main import main  # noqa: E402

__all__ = ["main"]
