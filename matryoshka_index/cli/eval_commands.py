"""``mindex eval``: recall@k of an index against exact full-dim search, queries/s of both, memory."""

from __future__ import annotations

import json

import click

from ._common import read_vectors, user_errors


@click.command("eval")
@click.argument("index_path", metavar="INDEX", type=click.Path())
@click.argument("queries", type=click.Path(dir_okay=False))
@click.option("-k", type=int, default=10, show_default=True, help="Recall@k.")
@click.option("--candidates", type=int, help="Coarse hits to rerank (default: the calibrated value).")
@click.option(
    "--repeats", type=int, default=1, show_default=True, help="Time each search this many times; keep the best."
)
@click.option("--no-verify", is_flag=True, help="Skip the sha256 check of the index files (faster on large indexes).")
@user_errors
def eval_command(index_path, queries, k, candidates, repeats, no_verify):
    """Recall@k of INDEX against exact full-dim search on QUERIES (.npy/.fvecs), queries/s of both, memory."""
    from ..evaluation import evaluate_recall
    from ..index import MatryoshkaIndex

    index = MatryoshkaIndex.load(index_path, verify=not no_verify)
    q = read_vectors(queries, "queries", dim=index.input_dim)
    click.echo(json.dumps(evaluate_recall(index, q, k=k, candidates=candidates, repeats=repeats), indent=2))


COMMANDS = [eval_command]
