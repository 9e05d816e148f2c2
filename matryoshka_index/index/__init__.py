"""``MatryoshkaIndex``: an adaptor composed with a storage backend (see :mod:`.core` for the search model).

Modules, by concern:

* :mod:`.core`: the :class:`MatryoshkaIndex` class (search, add/remove, calibrate, the lock around them);
* :mod:`.build`: the named steps of a build, adaptor resolution, the choice of the backend;
* :mod:`.persistence`: saving to a directory atomically and loading it back;
* :mod:`.describe`: what ``info()`` (``mindex info``) reports;
* :mod:`.locking`: the readers-writer lock.

Every name importable from ``matryoshka_index.index`` before it became a package still is.
"""

from __future__ import annotations

from ..adaptor import MatryoshkaAdaptor
from ..adaptor.pca import PCARotation
from ..calibration import CALIBRATION_K, MAX_CANDIDATES, recall_with_lower_bound
from ..calibration import CONFIDENCE_Z as _CONFIDENCE_Z
from ..calibration import candidate_ladder as _candidate_ladder
from ..calibration import smallest as _smallest
from ..exact import exact_topk
from ..manifest import ADAPTOR_DIR, FORMAT, FORMAT_VERSION, MANIFEST_FILE
from .build import (
    _QDRANT_LOCATIONS,
    BUILD_CHUNK_ROWS,
    INDEX_TYPES,
    METRICS,
    RERANKS,
    Adaptor,
    adaptor_kind,
    embedded_qdrant_backend,
)
from .build import accepts as _accepts
from .build import check_backend_options as _check_backend_options
from .build import is_fitted as _is_fitted
from .core import _SEARCH_CHUNK_ROWS, MatryoshkaIndex
from .locking import ReadWriteLock, _ReadWriteLock
from .persistence import check_output_path
from .persistence import fsync_tree as _fsync_tree

_BUILD_CHUNK_ROWS = BUILD_CHUNK_ROWS
_MAX_CANDIDATES = MAX_CANDIDATES

__all__ = [
    "ADAPTOR_DIR",
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

# Private names of the single-module version, kept for code that reached into it.
_PRIVATE_ALIASES = (
    _QDRANT_LOCATIONS,
    _CONFIDENCE_Z,
    _ReadWriteLock,
    _SEARCH_CHUNK_ROWS,
    _accepts,
    _candidate_ladder,
    _check_backend_options,
    _fsync_tree,
    _is_fitted,
    _smallest,
)
