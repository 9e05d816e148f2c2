"""The Matryoshka-Adaptor: model, losses, training and files. Knows nothing of indexes."""

from .estimator import MatryoshkaAdaptor, NotFittedError

__all__ = ["MatryoshkaAdaptor", "NotFittedError"]
