"""``mindex``: the command group. Each family of commands lives in its own module."""

from __future__ import annotations

import click

from .. import threads as _threads
from .._version import __version__
from . import (
    adaptor_commands,
    data_commands,
    eval_commands,
    export_commands,
    gc_commands,
    index_commands,
    migrate_commands,
)
from ._common import user_errors


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="mindex")
@click.option(
    "--threads",
    type=int,
    default=None,
    metavar="N",
    help="Threads for torch and FAISS [default: $MINDEX_THREADS, else the cores free at each step: affinity, "
    "cgroup quota, less the load of other processes].",
)
@user_errors
def main(threads: int | None) -> None:
    """matryoshka-index: shrink embeddings with a Matryoshka-Adaptor, search a short prefix, rerank at full dimension.

    \b
    Typical flow:
      mindex synthetic corpus.npy                      a synthetic corpus to try it on
      mindex train corpus.npy -o adaptor/              learn the adaptor (optional: build can train)
      mindex build corpus.npy --coarse-dim 64 -o corpus.mindex --train
      mindex search corpus.mindex queries.npy -k 10 -o results.jsonl
      mindex eval corpus.mindex queries.npy            recall@k vs exact search, queries/s, memory
      mindex calibrate corpus.mindex queries.npy       default candidates re-picked on real queries
      mindex migrate --qdrant-url URL --collection docs --alias docs

    Every command takes --help. Bad input gives one line on stderr and exit code 2.
    """
    count, explicit = _threads.resolve(threads, name="--threads")  # a bad --threads / MINDEX_THREADS: one line now
    if explicit:  # the user's count for this whole process and its children; else each step follows the load
        _threads.apply(count, export=True)


_MODULES = (
    data_commands,
    adaptor_commands,
    index_commands,
    eval_commands,
    migrate_commands,
    export_commands,
    gc_commands,
)
for _module in _MODULES:
    for _command in _module.COMMANDS:
        main.add_command(_command)
