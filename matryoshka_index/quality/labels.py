"""Names shared by the labelled evaluation, its markdown report, its plot and the advisor.

Below all of them (it imports nothing of the package), so that the report and the plot need not import the
evaluation that calls them.
"""

from __future__ import annotations

from typing import Any, Protocol

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


class ReportResults(Protocol):
    """What the markdown report and the plot read of a :class:`~matryoshka_index.quality.LabelledReport`.

    A structural type here, below both, so that neither imports the evaluation module that defines
    the report and calls them (no import circle, type-only imports included).
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
    prefix: dict[str, dict[int, dict[str, float]]]
    two_stage: dict[str, dict[int, dict[str, Any]]]
    ann: dict[str, dict[int, list[dict[str, float]]]]
    exact_qps: float | None
    codes: list[dict[str, Any]]
    training: dict[str, dict[str, Any]]
    environment: dict[str, Any]
    notes: list[str]
