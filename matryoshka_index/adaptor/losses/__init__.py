"""The Matryoshka-Adaptor's training losses, one per module (formulas in each docstring).

Each module computes its term at one prefix length; :class:`.matryoshka.MatryoshkaLoss` owns the
loop over prefix lengths (truncate, normalise, per-length weights) around it.
"""

from .listwise import listwise_loss
from .matryoshka import MatryoshkaLoss
from .pairwise import pairwise_similarity_loss
from .query_listwise import query_listwise_loss
from .ranking import ranking_loss
from .reconstruction import reconstruction_loss
from .topk import topk_similarity_loss

__all__ = [
    "MatryoshkaLoss",
    "listwise_loss",
    "pairwise_similarity_loss",
    "query_listwise_loss",
    "ranking_loss",
    "reconstruction_loss",
    "topk_similarity_loss",
]
