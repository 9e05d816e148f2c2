"""Deprecated path, kept until 0.2: the report's pictures now live in :mod:`matryoshka_index.quality.plots`.

``from matryoshka_index import plots`` (a benchmark did) still works: the same objects (``COLORS`` too,
so a colour set here reaches the plot), with a warning on import.
"""

from __future__ import annotations

import warnings

from .quality.plots import COLORS, default_ann_dim, plot_report

warnings.warn(
    "matryoshka_index.plots is deprecated and will be removed in 0.2; import from matryoshka_index.quality.plots instead",
    DeprecationWarning,
    stacklevel=2,
)

__all__ = ["COLORS", "default_ann_dim", "plot_report"]
