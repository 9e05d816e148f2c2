"""The Matryoshka-Adaptor: model, losses, training and files. Knows nothing of indexes.

Importing it, loading an adaptor and applying it need numpy and safetensors only; torch is imported
by ``fit`` (training) and by a CUDA device.
"""

from .estimator import AdaptorFallbackWarning, MatryoshkaAdaptor, NotFittedError

__all__ = ["AdaptorFallbackWarning", "MatryoshkaAdaptor", "NotFittedError"]
