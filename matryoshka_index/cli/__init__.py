"""The ``mindex`` command line: a thin shell over the Python API."""

from .main import main

__all__ = ["main"]
