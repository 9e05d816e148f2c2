"""``mindex migrate``: turn an existing Qdrant collection into the matryoshka layout (a thin shell over the API).

Copy mode (default) writes a new collection; ``--in-place`` adds only the ``coarse`` vector to the
collection itself (Qdrant >= 1.18); ``--rollback`` undoes an in-place migration; ``--prefix-only --dim M``
copies into a collection that keeps the M-dim adapted prefix alone (no full vector).
"""

from __future__ import annotations

import json
import sys

import click

from ..errors import InputError
from ._common import dir_option, file_option, quiet_option, user_errors


@click.command("migrate")
@click.option("--qdrant-url", metavar="URL", help="Qdrant server, e.g. http://localhost:6333.")
@dir_option("--qdrant-path", metavar="DIR", help="qdrant-client local-mode storage directory.")
@dir_option(
    "--edge-source",
    metavar="DIR",
    help="With --prefix-only --edge-path: a qdrant-edge shard as the source (read from a copy; --collection "
    "names it in the records).",
)
@click.option("--api-key", envvar="QDRANT_API_KEY", help="API key of the server (or set QDRANT_API_KEY).")
@click.option("--timeout", type=int, help="Seconds to wait for each server request.")
@click.option("--prefer-grpc", is_flag=True, help="Talk gRPC (port 6334) instead of REST.")
@click.option(
    "--collection",
    required=True,
    help="Source collection (or alias). Copy mode never modifies it; --in-place only adds the 'coarse' vector.",
)
@click.option("--vector", help="Named vector to adapt (default: the unnamed one, or the only dense named one).")
@click.option(
    "--coarse-dim", type=int, help="Length of the coarse prefix [default: 64; a resumed target keeps its own]."
)
@click.option("--sample", type=int, default=100_000, show_default=True, help="Vectors to train the adaptor on.")
@dir_option("--adaptor", help="A trained adaptor directory instead of training one.")
@click.option("--epochs", type=int, help="Training epochs of the adaptor (default: the adaptor's default).")
@click.option("--target", help="Target collection [default: <collection>_matryoshka].")
@click.option("--alias", help="Alias switched atomically to the target once verification passed.")
@click.option(
    "--in-place",
    "in_place",
    is_flag=True,
    help="Add only the 'coarse' vector to --collection itself (Qdrant >= 1.18): no second copy of the data.",
)
@click.option(
    "--rollback",
    is_flag=True,
    help="Undo an in-place migration: remove the 'coarse' vector and the index metadata it added.",
)
@click.option(
    "--prefix-only",
    "prefix_only",
    is_flag=True,
    help="Copy into a collection that keeps only the --dim adapted prefix ('coarse'), no full vector; the plan "
    "measures the quality it keeps and the bytes it saves.",
)
@click.option("--dim", "prefix_dim", type=int, help="With --prefix-only: the prefix length M it keeps.")
@dir_option(
    "--edge-path",
    "edge_path",
    help="With --prefix-only: write the target as a qdrant-edge shard in DIR (absent or empty; the migration's "
    "records and adaptor go in DIR/mindex) instead of a collection.",
)
@file_option(
    "--queries",
    "queries_path",
    help="With --prefix-only and --qrels: labelled query embeddings (.npy/.fvecs) to measure nDCG@10 on.",
)
@file_option(
    "--qrels",
    "qrels_path",
    help="With --queries: BEIR qrels TSV (query-id, corpus-id = the point id, score) [default: recall@10 "
    "against exact full-dim search on sampled points].",
)
@file_option(
    "--query-ids",
    "query_ids_path",
    help="Ids of the --queries rows (JSON list or one a line) [default: the row numbers 0, 1, ...].",
)
@click.option("--resume", is_flag=True, help="Continue an interrupted migration from its checkpoint.")
@click.option("--dry-run", is_flag=True, help="Print the plan (points, dims, size, time) and write nothing.")
@click.option("--verify", type=click.Choice(["sample", "full"]), default="sample", show_default=True)
@click.option(
    "--verify-sample", type=int, default=1000, show_default=True, help="Points compared with --verify sample."
)
@click.option("--recall-queries", type=int, default=100, show_default=True, help="Sampled queries for recall@10.")
@click.option("--candidates", type=int, default=100, show_default=True, help="Coarse candidates per query.")
@click.option("--batch-size", type=int, default=256, show_default=True, help="Points per upsert request.")
@click.option("--parallel", type=int, default=2, show_default=True, help="Concurrent upserts (server only).")
@click.option("--shard-number", type=int, help="Shards of the target [default: as the source].")
@click.option("--replication-factor", type=int, help="Replicas of the target [default: as the source].")
@click.option("--on-disk/--in-ram", "on_disk", default=None, help="Keep 'full' on disk [default: as the source].")
@click.option("--coarse-quantization", type=click.Choice(["none", "int8", "binary"]), default="none", show_default=True)
@click.option(
    "--seed",
    type=int,
    help="Seed of the training sample, the training and the verification's sample of points and recall queries "
    "(which are then the same on every run) [default: training seed 0, verification by Qdrant's random sample].",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@quiet_option
@user_errors
def migrate(
    qdrant_url,
    qdrant_path,
    edge_source,
    api_key,
    timeout,
    prefer_grpc,
    collection,
    vector,
    coarse_dim,
    sample,
    adaptor,
    epochs,
    target,
    alias,
    in_place,
    rollback,
    prefix_only,
    prefix_dim,
    edge_path,
    queries_path,
    qrels_path,
    query_ids_path,
    resume,
    dry_run,
    verify,
    verify_sample,
    recall_queries,
    candidates,
    batch_size,
    parallel,
    shard_number,
    replication_factor,
    on_disk,
    coarse_quantization,
    seed,
    as_json,
    quiet,
):
    """Copy Qdrant collection --collection into a matryoshka collection (coarse + full vectors).

    \b
    Trains an adaptor on a sample (or loads --adaptor), creates --target, copies every point with
    its id, payload and other vectors (resumable with --resume), verifies counts, payloads and full
    vectors and reports recall@10, then switches --alias atomically. The source is never modified.
    With --in-place (Qdrant >= 1.18) the collection itself gains only the 'coarse' vector, its own
    vector serves for the rerank, and verification checks that nothing else changed; --rollback
    removes what an in-place migration added. With --prefix-only --dim M the target keeps only the
    M-dim adapted prefix (plus payloads and the other vectors); the plan shows the bytes saved and the
    quality the prefix keeps (nDCG@10 on --queries/--qrels, else recall@10 against exact search), and
    the verification measures it again on the target; with --edge-path DIR the target is a qdrant-edge
    shard in DIR instead of a collection. Exit code 1 when verification fails (the alias is then left
    alone).
    """
    if edge_source is None and (qdrant_url is None) == (qdrant_path is None):
        raise InputError("give exactly one of --qdrant-url or --qdrant-path")
    if edge_source is not None and (qdrant_url is not None or qdrant_path is not None):
        raise InputError("--edge-source: the source is that shard; give no --qdrant-url or --qdrant-path with it")
    if edge_source is not None and (edge_path is None or not prefix_only):
        raise InputError("--edge-source: a qdrant-edge source migrates with --prefix-only into --edge-path")
    if prefix_only:
        if in_place or rollback:
            raise InputError(f"--prefix-only takes no {'--in-place' if in_place else '--rollback'}")
        if prefix_dim is None:
            raise InputError("--prefix-only needs --dim M (the prefix length it keeps)")
        if coarse_dim is not None and coarse_dim != prefix_dim:
            raise InputError("--prefix-only: give the prefix length once, with --dim")
        coarse_dim = prefix_dim
        if (queries_path is None) != (qrels_path is None):
            raise InputError("--queries and --qrels go together")
    else:
        given = [f for f, v in (("--dim", prefix_dim), ("--edge-path", edge_path), ("--queries", queries_path),
                                ("--qrels", qrels_path), ("--query-ids", query_ids_path)) if v is not None]  # fmt: skip
        if given:
            raise InputError(f"{given[0]}: only with --prefix-only")
    if rollback:
        clash = [
            flag
            for flag, value in (
                ("--resume", resume),
                ("--dry-run", dry_run),
                ("--target", target),
                ("--alias", alias),
                ("--adaptor", adaptor),
            )
            if value
        ]
        if clash:
            raise InputError(f"--rollback takes no {clash[0]}")
    from .. import migrate as api  # looked up at call time (tests replace migrate_collection)

    if edge_source is not None:
        from ..migrate.prefix_only_edge import EdgeSourceClient  # needs qdrant-edge-py (one line without it)

        client = EdgeSourceClient(edge_source, collection)
    else:
        client = api.connect_source(
            url=qdrant_url, path=qdrant_path, api_key=api_key, timeout=timeout, prefer_grpc=prefer_grpc
        )
    try:
        if rollback:
            undone = api.rollback_in_place(client, collection)
            click.echo(json.dumps(undone.to_dict(), indent=2) if as_json else undone.describe())
            return
        report = api.migrate_collection(
            client,
            collection,
            vector=vector,
            coarse_dim=coarse_dim,
            sample=sample,
            target=target,
            alias=alias,
            resume=resume,
            dry_run=dry_run,
            verify=verify,
            verify_sample=verify_sample,
            recall_queries=recall_queries,
            candidates=candidates,
            adaptor=adaptor,
            adaptor_options={"epochs": epochs} if epochs else None,
            batch_size=batch_size,
            parallel=parallel,
            shard_number=shard_number,
            replication_factor=replication_factor,
            on_disk=on_disk,
            coarse_quantization=None if coarse_quantization == "none" else coarse_quantization,
            seed=0 if seed is None else seed,
            verify_seed=seed,
            quiet=quiet,
            in_place=in_place,
            prefix_only=prefix_only,
            queries=queries_path,
            qrels=qrels_path,
            query_ids=query_ids_path,
            edge_path=edge_path,
        )
    except KeyboardInterrupt:
        # the checkpoint in the target's metadata is written on the way out; --resume also starts
        # afresh when the interrupt came before the target existed
        if in_place:
            message = (
                "Interrupted; existing vectors and payloads are untouched. Rerun with --in-place --resume to "
                "continue from the checkpoint, or with --rollback to remove what was added."
            )
        else:
            message = "Interrupted; the source is untouched. Rerun with --resume to continue from the checkpoint."
        click.echo(message, err=True)
        sys.exit(130)
    finally:
        client.close()
    click.echo(json.dumps(report.to_dict(), indent=2) if as_json else report.describe())
    if not report.ok:
        click.echo("Error: verification failed; the alias was not switched (see above)", err=True)
        sys.exit(1)


COMMANDS = [migrate]
