"""The adaptor network, ``f(e) = z + MLP(z)``: numpy twin always, torch module on first use of its name.

``ResidualAdaptor`` (the torch ``nn.Module`` that training uses) lives in :mod:`.torch_model`; this module
hands it out lazily so that importing the package, loading an adaptor and applying it never import torch.
"""

from __future__ import annotations

from typing import Any

from .numpy_model import NumpyResidualAdaptor
from .pca import pca_rotation  # re-exported: it lived here before

__all__ = ["NumpyResidualAdaptor", "ResidualAdaptor", "pca_rotation"]  # noqa: F822 (module __getattr__)


def __getattr__(name: str) -> Any:  # lazy: only training and CUDA inference need torch
    if name == "ResidualAdaptor":
        from .torch_model import ResidualAdaptor

        return ResidualAdaptor
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
