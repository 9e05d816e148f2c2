"""``MatryoshkaIndex``: an adaptor composed with a storage backend (see :mod:`.core` for the search model).

Modules, by concern:

* :mod:`.core`: the :class:`MatryoshkaIndex` class (search, add/remove, calibrate, the lock around them);
* :mod:`.build`: the named steps of a build, adaptor resolution, the choice of the backend;
* :mod:`.persistence`: saving to a directory atomically and loading it back;
* :mod:`.describe`: what ``info()`` (``mindex info``) reports;
* :mod:`.locking`: the readers-writer lock.

Every name importable from ``matryoshka_index.index`` before it became a package still is, the
private ones too (``# noqa: F401`` below: kept for code that reached into the single module).
"""

from __future__ import annotations

from ..adaptor import MatryoshkaAdaptor
from ..adaptor.pca import PCARotation
from ..calibration import CALIBRATION_K, MAX_CANDIDATES, recall_with_lower_bound
from ..calibration import CONFIDENCE_Z as _CONFIDENCE_Z  # noqa: F401
from ..calibration import candidate_ladder as _candidate_ladder  # noqa: F401
from ..calibration import smallest as _smallest  # noqa: F401
from ..exact import exact_topk
from ..manifest import ADAPTOR_DIR, FORMAT, FORMAT_VERSION, MANIFEST_FILE
from ..storage import fsync_tree as _fsync_tree  # noqa: F401
from .build import (
    _QDRANT_LOCATIONS,  # noqa: F401
    BUILD_CHUNK_ROWS,
    INDEX_TYPES,
    METRICS,
    RERANKS,
    Adaptor,
    adaptor_kind,
    embedded_qdrant_backend,
)
from .build import accepts as _accepts  # noqa: F401
from .build import check_backend_options as _check_backend_options  # noqa: F401
from .build import is_fitted as _is_fitted  # noqa: F401
from .core import (
    _SEARCH_CHUNK_ROWS,  # noqa: F401
    MatryoshkaIndex,
)
from .locking import (
    ReadWriteLock,
    _ReadWriteLock,  # noqa: F401
)
from .persistence import check_output_path

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
