"""``MatryoshkaIndex``: an adaptor composed with a storage backend (see :mod:`.core` for the search model).

Modules, by concern:

* :mod:`.core`: the :class:`MatryoshkaIndex` class (search, add/remove, calibrate, the lock around them);
* :mod:`.parts`: what an index is made of (:class:`~.parts.IndexParts`) and the vectors each stage compares;
* :mod:`.build`: the named steps of a build, adaptor resolution, the choice of the backend;
* :mod:`.budget`: a RAM budget's choice of configuration, on trial indexes;
* :mod:`.persistence`: saving to a directory atomically and loading it back;
* :mod:`.describe`: what ``info()`` (``mindex info``) reports;
* :mod:`.device_stage`: where the adaptor, the coarse search and the rerank run;
* :mod:`.points`: hits with the points' own ids and payloads;
* :mod:`.locking`: the readers-writer lock.

The collaborators take explicit parameters and return values (or :class:`~.parts.IndexParts`); only
:mod:`.core` touches the index's state. Every public name importable from ``matryoshka_index.index``
before it became a package still is.
"""

from __future__ import annotations

from ..adaptor import MatryoshkaAdaptor
from ..adaptor.pca import PCARotation
from ..calibration import CALIBRATION_K, recall_with_lower_bound
from ..exact import exact_topk
from ..manifest import ADAPTOR_DIR, FORMAT, FORMAT_VERSION, MANIFEST_FILE
from .build import BUILD_CHUNK_ROWS, INDEX_TYPES, METRICS, RERANKS, embedded_qdrant_backend
from .core import MatryoshkaIndex
from .locking import ReadWriteLock
from .parts import Adaptor, adaptor_kind
from .persistence import check_output_path

__all__ = [
    "ADAPTOR_DIR",
    "BUILD_CHUNK_ROWS",
    "CALIBRATION_K",
    "FORMAT",
    "FORMAT_VERSION",
    "INDEX_TYPES",
    "MANIFEST_FILE",
    "METRICS",
    "RERANKS",
    "Adaptor",
    "MatryoshkaAdaptor",
    "MatryoshkaIndex",
    "PCARotation",
    "ReadWriteLock",
    "adaptor_kind",
    "check_output_path",
    "embedded_qdrant_backend",
    "exact_topk",
    "recall_with_lower_bound",
]
