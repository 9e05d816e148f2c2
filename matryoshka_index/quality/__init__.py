"""Labelled retrieval quality: BEIR-style data, nDCG@10 / recall@100 / MRR@10 by dimension, the ANN
view, a dimension advisor, markdown and PNG reports.

One call from the CLI or a notebook::

    from matryoshka_index.quality import advise, evaluate_labelled

    report = evaluate_labelled(corpus, corpus_ids, queries, query_ids, "qrels/test.tsv", "qrels/train.tsv")
    print(report.to_markdown([advise(report, max_ndcg_loss=0.01)]))
    report.plot("report.png")
"""

from .advisor import Advice, advise, advise_frontier, parse_budget
from .data import (
    LabelledSet,
    QuerySplit,
    discover_labelled_sets,
    load_beir,
    load_labelled_files,
    read_ids,
    read_ids_json,
    read_qrels,
    read_query_splits,
    split_queries,
)
from .evaluate import (
    DEFAULT_CANDIDATES,
    METHOD_LABELS,
    METHODS,
    LabelledReport,
    evaluate_beir,
    evaluate_labelled,
    labelled_metrics,
    ranked_rows,
)
from .frontier import Frontier, parse_codes

__all__ = [
    "DEFAULT_CANDIDATES",
    "METHODS",
    "METHOD_LABELS",
    "Advice",
    "Frontier",
    "LabelledReport",
    "LabelledSet",
    "QuerySplit",
    "advise",
    "advise_frontier",
    "discover_labelled_sets",
    "evaluate_beir",
    "evaluate_labelled",
    "labelled_metrics",
    "load_beir",
    "load_labelled_files",
    "parse_budget",
    "parse_codes",
    "ranked_rows",
    "read_ids",
    "read_ids_json",
    "read_qrels",
    "read_query_splits",
    "split_queries",
]
