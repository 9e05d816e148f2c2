"""``mindex synthetic``: write a synthetic embedding corpus to try the tool without data."""

from __future__ import annotations

import click

from ..datasets import write_low_rank_corpus
from ..validation import check_positive_int
from ._common import output_location, quiet_option, user_errors


@click.command("synthetic")
@click.argument("output", type=click.Path(dir_okay=False))
@click.option("-n", "--rows", type=int, default=20_000, show_default=True)
@click.option("-d", "--dim", type=int, default=384, show_default=True)
@click.option("--rank", type=int, default=48, show_default=True, help="Rank of the subspace the rows lie near.")
@click.option("--seed", type=int, default=0, show_default=True)
@quiet_option
@user_errors
def synthetic_command(output, rows, dim, rank, seed, quiet):
    """Write OUTPUT.npy: unit-norm float32 rows near a random low-rank subspace, plus noise.

    Neighbours in it mean something and plain truncation is a poor baseline, as with real
    sentence embeddings; good for trying `mindex build` without data of your own.
    """
    check_positive_int(rows, "--rows")
    check_positive_int(dim, "--dim", minimum=2)
    check_positive_int(rank, "--rank")
    output_location(output, "OUTPUT")
    path = write_low_rank_corpus(output, rows, dim, rank=min(rank, dim), seed=seed, quiet=quiet)
    click.echo(f"wrote {rows} x {dim} float32 to {path}")


COMMANDS = [synthetic_command]
