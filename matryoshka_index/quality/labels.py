"""Names shared by the labelled evaluation, its markdown report, its plot and the advisor.

Below all of them (it imports nothing), so that the report and the plot need not import the
evaluation that calls them.
"""

from __future__ import annotations

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
