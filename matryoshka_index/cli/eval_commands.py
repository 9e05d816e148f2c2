"""``mindex eval``: how good is the index, and how far can the dimension shrink?

Two views, one command:

* ANN view (``mindex eval INDEX QUERIES``): recall@k of a built index against exact full-dim search,
  queries/s of both, memory.
* Labelled view (``mindex eval --labelled DIR`` or ``--corpus/--queries/--qrels``): nDCG@10,
  recall@100 and MRR@10 per prefix length for full-dim, truncation, PCA, unsupervised and supervised
  adaptors and the two-stage index; recall vs candidates and queries/s; a dimension advisor; markdown
  report and plot.
"""

from __future__ import annotations

import json
from typing import Any

import click

from ..errors import InputError
from ._common import dir_option, file_option, quiet_option, read_vectors, user_errors


def _int_list(value: str | None, name: str) -> list[int] | None:
    if not value:
        return None
    try:
        return [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise InputError(f"{name}: expected comma-separated integers like 32,64,128, got {value!r}") from None


@click.command("eval")
@click.argument("index_path", metavar="[INDEX", required=False, type=click.Path())
@click.argument("query_vectors", metavar="QUERIES]", required=False, type=click.Path(dir_okay=False))
@click.option("-k", type=int, default=10, show_default=True, help="ANN view: recall@k.")
@click.option(
    "--candidates", help="ANN view: coarse hits to rerank (default: calibrated). Labelled: a list, e.g. 10,20,40."
)
@click.option(
    "--repeats", type=int, default=1, show_default=True, help="Time each search this many times; keep the best."
)
@click.option("--no-verify", is_flag=True, help="ANN view: skip the sha256 check of the index files.")
@dir_option("--labelled", "labelled_dir", help="A labelled set in BEIR-embedding layout.")
@file_option("--corpus", "corpus_file", help="Labelled: corpus embeddings (.npy/.fvecs).")
@file_option("--queries", "queries_file", help="Labelled: query embeddings.")
@file_option("--qrels", help="Labelled: test qrels TSV (query-id corpus-id score).")
@file_option("--train-qrels", help="Labelled: train qrels; enables the supervised adaptor.")
@file_option("--ids", "ids_json", help="Labelled: ids.json with corpus_ids and query_ids.")
@file_option("--corpus-ids", help="Labelled: corpus ids (JSON list or one per line).")
@file_option("--query-ids", help="Labelled: query ids (JSON list or one per line).")
@file_option("--queries-jsonl", help="Labelled: BEIR queries.jsonl with a split field.")
@click.option("--dims", help="Labelled: prefix lengths, e.g. 32,64,128,256.")
@click.option("--methods", help="Labelled: subset of truncation,pca,adaptor,adaptor_queries,supervised.")
@dir_option("--adaptor", "adaptor_dir", help="Labelled: use this unsupervised adaptor.")
@click.option(
    "--codes",
    help="Labelled: coarse codes to measure side by side, e.g. float,sq8,pq4,pq4x16,binary+itq "
    "(default float); the advisor then shows the bytes/vector vs queries/s frontier.",
)
@click.option("--no-ann", is_flag=True, help="Labelled: skip the recall-vs-candidates sweep.")
@click.option("--no-two-stage", is_flag=True, help="Labelled: skip building two-stage indexes.")
@click.option(
    "--target-recall", type=float, default=0.99, show_default=True, help="Labelled: index calibration target."
)
@click.option(
    "--advise", "budgets", multiple=True, help="Dimension advisor budget: 'ndcg-loss=1%' or 'recall=0.99' (repeatable)."
)
@file_option("--report", "report_md", help="Write the tables as markdown.")
@file_option("--plot", "plot_png", help="Write nDCG-vs-dim and recall-vs-q/s plots (PNG).")
@file_option("--json", "report_json", help="Write every number as JSON.")
@click.option("--seed", type=int, default=0, show_default=True)
@quiet_option
@user_errors
def eval_command(
    index_path, query_vectors, k, candidates, repeats, no_verify, labelled_dir, corpus_file, queries_file, qrels,
    train_qrels, ids_json, corpus_ids, query_ids, queries_jsonl, dims, methods, adaptor_dir, codes, no_ann,
    no_two_stage, target_recall, budgets, report_md, plot_png, report_json, seed, quiet,
):  # fmt: skip
    """Evaluate an index (INDEX QUERIES) or a labelled set (--labelled DIR, or --corpus/--queries/--qrels).

    \b
    ANN view:      mindex eval corpus.mindex queries.npy -k 10
    Labelled view: mindex eval --labelled dev-set/ --advise ndcg-loss=1% --report r.md --plot r.png
                   mindex eval --labelled dev-set/ --codes float,sq8,pq4x16 --advise recall=0.99
                   mindex eval --corpus c.npy --queries q.npy --ids ids.json --qrels test.tsv --train-qrels train.tsv
    """
    labelled = labelled_dir or corpus_file or queries_file or qrels
    if labelled:
        if index_path or query_vectors:
            raise click.UsageError("give either INDEX QUERIES (ANN view) or a labelled set, not both")
        _labelled(
            labelled_dir, corpus_file, queries_file, qrels, train_qrels, ids_json, corpus_ids, query_ids,
            queries_jsonl, dims, methods, adaptor_dir, codes, candidates, no_ann, no_two_stage, target_recall, budgets,
            report_md, plot_png, report_json, repeats, seed, quiet,
        )  # fmt: skip
        return
    if not (index_path and query_vectors):
        raise click.UsageError(
            "give INDEX and QUERIES, or a labelled set with --labelled DIR or --corpus/--queries/--qrels"
        )
    from ..index import MatryoshkaIndex
    from ..quality.index_recall import evaluate_recall

    index = MatryoshkaIndex.load(index_path, verify=not no_verify)
    q = read_vectors(query_vectors, "queries", dim=index.input_dim)
    c = _int_list(candidates, "--candidates")
    if c is not None and len(c) != 1:
        raise InputError("--candidates: the ANN view takes one number")
    result = evaluate_recall(index, q, k=k, candidates=c[0] if c else None, repeats=repeats)
    click.echo(json.dumps(result, indent=2))


def _labelled(
    labelled_dir, corpus_file, queries_file, qrels, train_qrels, ids_json, corpus_ids, query_ids, queries_jsonl,
    dims, methods, adaptor_dir, codes, candidates, no_ann, no_two_stage, target_recall, budgets, report_md, plot_png,
    report_json, repeats, seed, quiet,
):  # fmt: skip
    from ..adaptor import MatryoshkaAdaptor
    from ..quality import (
        advise,
        advise_frontier,
        evaluate_beir,
        load_beir,
        load_labelled_files,
        parse_budget,
        parse_codes,
    )

    if labelled_dir:
        if corpus_file or queries_file or qrels:
            raise InputError("--labelled: give a BEIR directory or --corpus/--queries/--qrels files, not both")
        data = load_beir(labelled_dir)
    else:
        missing = [n for n, v in (("--corpus", corpus_file), ("--queries", queries_file), ("--qrels", qrels)) if not v]
        if missing:
            raise InputError(f"{', '.join(missing)}: labelled evaluation needs --corpus, --queries and --qrels")
        data = load_labelled_files(
            corpus_file, queries_file, qrels, train_qrels, ids=ids_json, corpus_ids=corpus_ids,
            query_ids=query_ids, queries_jsonl=queries_jsonl,
        )  # fmt: skip
    parsed_budgets = [parse_budget(b) for b in budgets]  # fail on a bad budget or code before minutes of work
    code_specs = parse_codes(codes)
    report = evaluate_beir(
        data,
        dims=_int_list(dims, "--dims"),
        methods=[m.strip() for m in methods.split(",")] if methods else None,
        adaptor=MatryoshkaAdaptor.load(adaptor_dir) if adaptor_dir else None,
        candidates=_int_list(candidates, "--candidates"),
        codes=code_specs,
        two_stage=not no_two_stage,
        ann=not no_ann,
        target_recall=target_recall,
        repeats=max(1, repeats),
        seed=seed,
        quiet=quiet,
        log=None if quiet else (lambda msg: click.echo(msg, err=True)),
    )
    advice: list[Any] = [advise(report, **b) for b in parsed_budgets]
    if report.codes:
        advice += [advise_frontier(report, **b) for b in parsed_budgets]
    if report_md:
        report.write_markdown(report_md, advice)
    if plot_png:
        report.plot(plot_png)
    if report_json:
        report.save_json(report_json)
    click.echo(report.to_markdown(advice))


COMMANDS = [eval_command]
