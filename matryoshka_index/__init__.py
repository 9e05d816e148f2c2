"""matryoshka-index: Matryoshka-Adaptor embeddings, low-dimensional coarse search, full-dimension rerank."""

from . import threads  # noqa: F401  first: sets OMP_WAIT_POLICY=PASSIVE before torch/faiss load libgomp
from ._version import __version__
from .adaptor import MatryoshkaAdaptor
from .errors import BackendError, FormatError, InputError, MatryoshkaError

__all__ = [
    "BackendError",
    "FormatError",
    "InputError",
    "MatryoshkaAdaptor",
    "MatryoshkaError",
    "__version__",
]


def __getattr__(name: str):  # lazy: importing the adaptor must not pull in faiss or qdrant_client
    if name == "MatryoshkaIndex":
        from .index import MatryoshkaIndex

        return MatryoshkaIndex
    if name == "migrate_collection":
        from .migrate import migrate_collection

        return migrate_collection
    raise AttributeError(f"module 'matryoshka_index' has no attribute {name!r}")
