"""Names shared by the labelled evaluation, its markdown report, its plot and the advisor.

Below all of them (it imports nothing of the package), so that the report and the plot need not import the
evaluation that calls them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

METHODS = ("truncation", "pca", "adaptor", "adaptor_queries", "supervised")
"""The coarse methods compared at each prefix length (``"full"`` is the full-dim reference)."""
METHOD_LABELS = {
    "full": "full-dim (original)",
    "truncation": "truncation",
    "pca": "PCA",
    "adaptor": "adaptor (unsupervised)",
    "adaptor_queries": "adaptor (unsupervised, unlabelled train queries)",
    "supervised": "adaptor (supervised)",
}
METRICS = ("ndcg@10", "recall@100", "mrr@10")
"""The labelled metrics of a report, in table order."""


@dataclass
class LabelledResults:
    """The measurements of a labelled evaluation: the fields of :class:`~matryoshka_index.quality.LabelledReport`.

    Here, below the report and the plot, so that they read it without importing the evaluation module
    that defines the report (with its ``to_markdown`` / ``plot``) and calls them: no import circle.
    Per-dimension dicts are keyed by the int prefix length m.
    """

    name: str
    dim: int
    dims: list[int]
    methods: list[str]
    n_corpus: int
    n_test_queries: int
    n_train_queries: int
    n_train_pairs: int
    full: dict[str, float]
    prefix: dict[str, dict[int, dict[str, float]]]  # also holds m = dim: the method's full-dim vectors
    two_stage: dict[str, dict[int, dict[str, Any]]] = field(default_factory=dict)
    ann: dict[str, dict[int, list[dict[str, float]]]] = field(default_factory=dict)
    exact_qps: float | None = None  # median of exact_qps_at
    # Exact full-dim search timed right beside each index's sweep: under a varying machine load a
    # speed-up is only meaningful against a measurement taken at the same time.
    exact_qps_at: dict[str, dict[int, float]] = field(default_factory=dict)
    # One row per (method, m, code) of the two-stage index at its calibrated candidates: measured resident
    # bytes/vector, queries/s, recall@10, nDCG@10 (see quality/frontier.py; the advisor's frontier reads them)
    codes: list[dict[str, Any]] = field(default_factory=list)
    training: dict[str, dict[str, Any]] = field(default_factory=dict)
    environment: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
