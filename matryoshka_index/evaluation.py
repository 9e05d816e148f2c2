"""Deprecated path, kept until 0.2: recall of an index against exact search now lives in
:mod:`matryoshka_index.quality.index_recall` (``evaluation`` beside ``quality/evaluate`` named two
different things alike). The same objects, with a warning on import.
"""

from __future__ import annotations

import warnings

from .quality.index_recall import ann_recall, evaluate_recall, exact_topk, recall_at_k

warnings.warn(
    "matryoshka_index.evaluation is deprecated and will be removed in 0.2; "
    "import from matryoshka_index.quality.index_recall instead",
    DeprecationWarning,
    stacklevel=2,
)

__all__ = ["ann_recall", "evaluate_recall", "exact_topk", "recall_at_k"]
