"""``mindex train``: learn a Matryoshka-Adaptor from embeddings."""

from __future__ import annotations

import json
from typing import Any

import click

from ..adaptor import MatryoshkaAdaptor
from ..errors import InputError
from ._common import choice_option, dir_option, file_option, output_location, quiet_option, read_vectors, user_errors

_DEFAULTS = MatryoshkaAdaptor().get_params()  # the library defaults, shown in --help


def _library_default(flag: str, type_: type, help: str | None = None) -> Any:
    """An option whose default is the estimator's own (shown in --help): the CLI cannot drift from the library."""
    return click.option(flag, type=type_, default=_DEFAULTS[flag[2:].replace("-", "_")], show_default=True, help=help)


def _parse_dims(value: str | None) -> tuple[int, ...] | None:
    if not value:
        return None
    try:
        return tuple(int(v) for v in value.split(","))
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers like 32,64,128, got {value!r}") from None


@click.command("train")
@click.argument("corpus", type=click.Path(dir_okay=False))
@dir_option("-o", "--output", required=True, help="Adaptor directory to write.")
@file_option(
    "--queries",
    help="Query embeddings (.npy/.fvecs): unlabelled alone (a query log), supervised with --positives.",
)
@file_option(
    "--positives",
    help="positives[i]: a relevant document for queries[i] (needs --queries).",
)
@click.option(
    "--no-query-head",
    is_flag=True,
    help="With --queries: one function for queries and documents (no query head; exportable to ONNX).",
)
@click.option(
    "--dims", "dims", help="Matryoshka prefix lengths, e.g. 32,64,128 (default: powers of two below the dim)."
)
@choice_option(
    "--init",
    ["pca", "identity"],
    "pca",
    "Start from the PCA rotation (better on non-Matryoshka models) or from the identity (the paper).",
)
@_library_default("--epochs", int)
@_library_default("--batch-size", int)
@_library_default("--lr", float)
@click.option("--max-samples", type=int, default=100_000, show_default=True, help="Train on at most this many rows.")
@_library_default(
    "--ranking-weight", float, "Supervised only: weight of the ranking loss beside the unsupervised terms."
)
@_library_default(
    "--hard-negatives", int, "Supervised only: extra negatives per pair, mined from the query's nearest corpus rows."
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda.")
@quiet_option
@user_errors
def train_command(
    corpus,
    output,
    queries,
    positives,
    no_query_head,
    dims,
    init,
    epochs,
    batch_size,
    lr,
    max_samples,
    ranking_weight,
    hard_negatives,
    seed,
    device,
    quiet,
):
    """Learn a Matryoshka-Adaptor from CORPUS embeddings (.npy or .fvecs) and write it to -o DIR.

    Unsupervised from the corpus alone, or with --queries alone (unlabelled: each query's nearest
    corpus rows become its anchors, and queries get a head of their own); supervised when --queries
    and --positives are given (row i of each is a query and a document relevant to it).
    """
    output_location(output, "-o/--output")  # read-only or unwritable: now, not after the training
    x = read_vectors(corpus, "corpus", min_rows=2)
    q = p = None
    if positives is not None and queries is None:
        raise InputError("--positives needs --queries (row i of --positives answers row i of --queries)")
    if no_query_head and queries is None:
        raise InputError("--no-query-head: only with --queries (without queries there is no query head to leave out)")
    if queries is not None:
        q = read_vectors(queries, "queries", dim=x.shape[1])
    if positives is not None:
        p = read_vectors(positives, "positives", dim=x.shape[1])
    adaptor = MatryoshkaAdaptor(
        matryoshka_dims=_parse_dims(dims),
        init=init,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        max_samples=max_samples,
        ranking_weight=ranking_weight,
        hard_negatives=hard_negatives,
        query_head=not no_query_head,
        seed=seed,
        device=device,
        quiet=quiet,
    )
    adaptor.fit(x, q, p)
    adaptor.save(output)
    t = adaptor.metadata_["training"]
    summary = {
        "output": str(output),
        "input_dim": adaptor.input_dim_,
        "matryoshka_dims": list(adaptor.matryoshka_dims_),
        "rows": t["rows"],
        "supervised": t["supervised"],
        "unlabelled_queries": t["unlabelled_queries"],
        "query_head": adaptor.has_query_head_,
        "fell_back_to_start": t["fell_back_to_start"],
        "best_epoch": t["best_epoch"],
        "val_loss": t["val_loss"][t["best_epoch"]] if t["val_loss"] else None,
        "seconds": t["seconds"],
        "device": t["device"],
    }
    click.echo(json.dumps(summary))


COMMANDS = [train_command]
