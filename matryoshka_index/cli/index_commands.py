"""``mindex build``, ``search``, ``info``, ``calibrate``: a thin shell over :class:`MatryoshkaIndex`."""

from __future__ import annotations

import inspect
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import numpy as np

from ..errors import InputError
from ..progress import stage
from ..storage import (
    atomic_write_bytes,
    check_free_space,
    check_writable,
    human_bytes,
    load_vectors,
    save_npy,
    temp_root,
)
from ._common import (
    choice_option,
    file_option,
    output_location,
    parse_key_values,
    parse_value,
    quiet_option,
    read_vectors,
    user_errors,
)


def _check_build_space(out: Path, n: int, dim: int, coarse_dim: int, backend: str) -> Path | None:
    """Fail before the build if the index (and, for FAISS, the spill file the build writes its full
    vectors to) will not fit; returns the spill directory for FAISS. Estimates are lower bounds."""
    index_bytes = n * (4 * dim + 8) + n * (4 * coarse_dim + 8 + 256)  # full vectors + ids, coarse + graph links
    if backend != "faiss":
        check_free_space(out.parent, index_bytes, f"the index {out.name} ({n} vectors)")
        return None
    spill = temp_root(out)
    spill_bytes = n * 4 * dim
    try:
        same_fs = spill.stat().st_dev == out.parent.stat().st_dev if out.parent.exists() else False
    except OSError:
        same_fs = False
    if same_fs:
        check_free_space(
            out.parent,
            index_bytes + spill_bytes,
            f"the index {out.name} ({human_bytes(index_bytes)}) together with its build's spill file ({human_bytes(spill_bytes)})",
        )
    else:
        check_free_space(out.parent, index_bytes, f"the index {out.name} ({n} vectors)")
        check_free_space(spill, spill_bytes, "the build's spill file (set MINDEX_TMPDIR to move it)")
    check_writable(spill / "x", "spill directory (MINDEX_TMPDIR)")
    return spill


device_option = click.option(
    "--device",
    default="auto",
    show_default=True,
    help="auto | cpu | cuda | cuda:N: where the adaptor, the coarse stage and the rerank run (mindex info shows it).",
)


# Named flags for the backend options used most, under FaissBackend.create's own parameter names;
# every other option of the backend's create goes through --option KEY=VALUE.
BACKEND_FLAGS = (
    ("--pq-m", "pq_m", "N", "pq4: sub-quantizers (pq_m / 2 bytes a vector) [default: coarse dim]"),
    ("--balance", "balance", "none|itq", "itq: a rotation inside the prefix spreading sign bits / RaBitQ codes"),
    ("--rabitq-bits", "rabitq_bits", "N", "rabitq: bits a dimension, 1 to 9 [default: 1]"),
    ("--nlist", "nlist", "N", "ivf: inverted lists [default: about 4 sqrt(n)]"),
    ("--nprobe", "nprobe", "N", "ivf: lists probed (kept with --candidates; else calibrated with the candidates)"),
    ("--hnsw-m", "hnsw_m", "N", "hnsw: links a vector [default: 32]"),
    ("--ef-construction", "ef_construction", "N", "hnsw: beam width while building [default: 80]"),
    ("--ef-search", "ef_search", "N", "hnsw: beam width of a search, at least the candidates [default: 32]"),
)
# create() parameters that mindex sets from its own flags (or the corpus), never through --option
_SET_BY_MINDEX = {
    "coarse_dim": "--coarse-dim",
    "full_dim": "the corpus",
    "metric": "--metric",
    "index": "--index",
    "code": "--code",
    "device": "--device",
    "spill_dir": "MINDEX_TMPDIR",
    "collection": "--collection",
    "quiet": "--quiet",
}
_SET_BY_BUDGET = ("pq_m", "balance")  # --ram-budget picks these per configuration it tries


def backend_flags(func: Callable[..., Any]) -> Callable[..., Any]:
    for flag, _key, metavar, text in reversed(BACKEND_FLAGS):
        func = click.option(flag, default=None, metavar=metavar, help=text)(func)
    return click.option(
        "--option",
        "option_pairs",
        multiple=True,
        metavar="KEY=VALUE",
        help="Any other option of the backend's create (repeatable); values are read as int, float, "
        "true/false or text. A wrong key is refused with the list of valid ones.",
    )(func)


def _backend_option_names(backend: str) -> list[str]:
    """The options --option may set for ``backend``: its create's keyword parameters that no flag sets."""
    from ..backends import get_backend_class

    params = inspect.signature(get_backend_class(backend).create).parameters.values()
    return [p.name for p in params if p.kind is p.KEYWORD_ONLY and p.name not in _SET_BY_MINDEX]


def _backend_bool_options(backend: str) -> set[str]:
    """The keyword parameters of ``backend``'s create that take a bool (``bool`` or ``bool | None``)."""
    from ..backends import get_backend_class

    params = inspect.signature(get_backend_class(backend).create).parameters.values()
    return {p.name for p in params if str(p.annotation).replace(" ", "") in ("bool", "bool|None", "Optional[bool]")}


def _backend_options(
    backend: str, named: dict[str, str | None], pairs: tuple[str, ...], budget: bool
) -> dict[str, object]:
    """The backend options of the named flags and of --option, each checked against ``backend``'s create."""
    valid = _backend_option_names(backend)
    flags = {key: flag for flag, key, _m, _t in BACKEND_FLAGS}
    out: dict[str, object] = {}
    for key, text in named.items():
        if text is None:
            continue
        if key not in valid:
            raise InputError(
                f"{flags[key]}: --backend {backend} has no {key} option; its options: {', '.join(valid)} "
                "(give them with --option KEY=VALUE)"
            )
        out[key] = parse_value(text)
    for key, value in parse_key_values(pairs, "--option").items():
        if key in _SET_BY_MINDEX:
            raise InputError(f"--option {key}: set by {_SET_BY_MINDEX[key]}, not by --option")
        if key not in valid:
            raise InputError(f"--option {key}: not an option of --backend {backend}; valid: {', '.join(valid)}")
        if key in out:
            raise InputError(f"--option {key}: also given as {flags[key]}; give it once")
        out[key] = value
    bools = _backend_bool_options(backend)
    for key, value in out.items():
        if key in bools and not isinstance(value, bool):
            raise InputError(f"--option {key}: takes true or false, got {value!r}")
    clash = [key for key in _SET_BY_BUDGET if key in out] if budget else []
    if clash:
        raise InputError(f"--ram-budget picks {' and '.join(clash)} itself: drop {flags.get(clash[0], clash[0])}")
    return out


# the FAISS structure each structure-specific flag belongs to
_STRUCTURE_OF = {"nlist": "ivf", "nprobe": "ivf", "hnsw_m": "hnsw", "ef_construction": "hnsw", "ef_search": "hnsw"}


def _check_flags_apply(
    backend: str,
    index_type: str | None,
    ram_budget: float | None,
    named: dict,
    candidates: int | None,
    rerank: str,
    code: str | None = None,
    balance: object = None,
) -> None:
    """Refuse, in one line, a flag this build would accept and then ignore."""
    flags = {key: flag for flag, key, _m, _t in BACKEND_FLAGS}
    if backend == "faiss" and ram_budget is None:
        structure = {"pq": "flat", None: "flat"}.get(index_type, index_type)
        # a rotation inside the prefix changes no inner product, so float prefixes rank the same with it
        resolved_code = code or ("pq4" if index_type == "pq" else "float")
        if str(balance or "none").lower() == "itq" and resolved_code == "float":
            raise InputError(
                "--balance itq: rotates the prefix to spread the bits of a code (binary, rabitq, pq4, sq8/sq4); "
                "float prefixes rank the same without it; give --code too, or drop --balance"
            )
        for key, wanted in _STRUCTURE_OF.items():
            if named.get(key) is not None and structure != wanted:
                raise InputError(f"{flags[key]}: an option of --index {wanted}; this build's --index is {structure}")
        if named.get("nprobe") is not None and candidates is None:
            raise InputError(
                "--nprobe: the build calibrates nprobe together with the candidates; give --candidates too to keep it"
            )
    if candidates is not None and rerank == "none":
        raise InputError("--candidates: a prefix-only index (--rerank none) has no rerank candidates; drop it")


def _read_ids(path: str, n: int) -> np.ndarray:
    from ..validation import check_ids

    p = Path(path)
    if p.suffix.lower() != ".npy":
        raise InputError(f"--ids ({path}): expected a .npy file of int64 ids")
    arr = load_vectors(p, mmap=False)
    return check_ids(arr, n, name=f"--ids ({path})")


@click.command("build")
@click.argument("corpus", type=click.Path(dir_okay=False))
@click.option("--coarse-dim", type=int, default=64, show_default=True, help="Length of the searched prefix.")
@click.option("-o", "--output", required=True, type=click.Path(), help="Index directory to write (e.g. corpus.mindex).")
@file_option("--ids", "ids_path", help="int64 ids, one per row (.npy); default 0..n-1.")
@click.option("--adaptor", "adaptor_dir", type=click.Path(), help="A trained adaptor directory (from mindex train).")
@click.option("--train", is_flag=True, help="Train an adaptor on a sample of the corpus (library defaults).")
@click.option("--pca", is_flag=True, help="Use a PCA rotation instead of an adaptor (a training-free baseline).")
@click.option(
    "--backend",
    type=click.Choice(["faiss", "qdrant", "qdrant-edge"]),
    default="faiss",
    show_default=True,
    help="Where the vectors live: FAISS files, a Qdrant collection (embedded, or a server with --url), "
    "or an embedded qdrant-edge shard (needs the edge extra).",
)
@click.option(
    "--index",
    "index_type",
    type=click.Choice(["flat", "hnsw", "ivf", "pq"]),
    default=None,
    help="Coarse index: exact flat, HNSW graph, IVF lists or pq (exhaustive 4-bit product-quantized scan, "
    "FAISS only). [default: flat for faiss, hnsw for qdrant]",
)
@click.option(
    "--url",
    help="Qdrant server URL (with --backend qdrant); default: embedded, saved inside the index directory "
    "(qdrant-edge when the edge extra is installed, else qdrant-client local mode).",
)
@click.option("--api-key", envvar="QDRANT_API_KEY", help="Qdrant API key (or set QDRANT_API_KEY).")
@click.option("--collection", help="Qdrant collection to create (with --backend qdrant).")
@click.option(
    "--target-recall",
    type=float,
    default=0.99,
    show_default=True,
    help="Calibrate the default candidate count to reach this recall@10 against exact search.",
)
@click.option("--metric", type=click.Choice(["cosine", "ip"]), default="cosine", show_default=True)
@choice_option(
    "--rerank",
    ["original", "adapted", "none"],
    "original",
    "Rerank with the original vectors (exact scores) or the adapted ones; none: keep only the prefix (no full vectors).",
)
@click.option(
    "--sample-size", type=int, default=100_000, show_default=True, help="Rows the adaptor (and IVF) train on."
)
@click.option(
    "--code",
    type=click.Choice(["float", "sq8", "sq4", "pq4", "rabitq", "binary"]),
    default=None,
    help="How coarse prefixes are stored (FAISS): float, 8/4-bit scalar, 4-bit PQ, RaBitQ or sign bits.",
)
@click.option(
    "--ram-budget",
    type=float,
    default=None,
    help="Resident bytes per vector (FAISS): the index picks coarse dim, code and structure itself "
    "(the fastest that fits and reaches --target-recall; see mindex info for what it chose and rejected).",
)
@click.option(
    "--candidates",
    type=int,
    default=None,
    help="Fix the default candidate count instead of calibrating it (its recall is still measured).",
)
@backend_flags
@device_option
@quiet_option
@user_errors
def build_command(
    corpus,
    coarse_dim,
    output,
    ids_path,
    adaptor_dir,
    train,
    pca,
    backend,
    index_type,
    url,
    api_key,
    collection,
    target_recall,
    metric,
    rerank,
    sample_size,
    code,
    ram_budget,
    candidates,
    option_pairs,
    device,
    quiet,
    **named_options,
):
    """Build an index over CORPUS embeddings (.npy, memory-mapped, or .fvecs) and write it to -o DIR.

    Without --adaptor/--train/--pca the coarse vectors are plain truncations of the embeddings
    (right for Matryoshka-trained models). An existing index at -o is replaced (atomically, once the
    new one is complete); any other existing folder is refused. Prints a JSON summary.

    Backend options: the named flags (--pq-m, --balance, --rabitq-bits, --nlist, --nprobe, --hnsw-m,
    --ef-construction, --ef-search: FaissBackend.create's parameters) and --option KEY=VALUE for any
    other parameter of the backend's create (e.g. --option shard_number=2 with --backend qdrant).
    """
    from ..adaptor import MatryoshkaAdaptor
    from ..index import MatryoshkaIndex, check_output_path

    if sum(bool(v) for v in (adaptor_dir, train, pca)) > 1:
        raise InputError("--adaptor, --train and --pca: choose at most one")
    backend_options = _backend_options(backend, named_options, option_pairs, ram_budget is not None)
    _check_flags_apply(
        backend, index_type, ram_budget, named_options, candidates, rerank, code, backend_options.get("balance")
    )
    for flag, value, key in (
        ("--url", url, "url"),
        ("--api-key", api_key, "api_key"),
        ("--collection", collection, "collection"),
    ):
        if value is not None:
            if backend != "qdrant":
                if flag == "--api-key" and api_key and not url:
                    continue  # QDRANT_API_KEY set in the environment, no server asked for
                raise InputError(f"{flag}: only with --backend qdrant (got --backend {backend})")
            backend_options[key] = value
    out = check_output_path(output)  # fail before a long build, not after it
    target = output_location(str(out), "-o/--output")  # read-only or unwritable: now, not after the build
    with stage("checking the corpus", quiet=quiet):
        x = read_vectors(corpus, "corpus", min_rows=1)
        ids = _read_ids(ids_path, len(x)) if ids_path else None
    if backend == "faiss" and ram_budget is None:  # a bad option value fails now, not after the training
        from ..backends import get_backend_class

        get_backend_class("faiss").create(
            coarse_dim=coarse_dim, full_dim=x.shape[1], metric=metric, index=index_type or "flat",
            code=code or "float", **backend_options,
        )  # fmt: skip
    spill = _check_build_space(target, len(x), x.shape[1], coarse_dim, backend)
    if spill is not None:
        backend_options["spill_dir"] = str(spill)
    adaptor: object = None
    if adaptor_dir:
        adaptor = MatryoshkaAdaptor.load(adaptor_dir)
    elif train:
        adaptor = "train"
    elif pca:
        adaptor = "pca"
    t0 = time.perf_counter()
    index = MatryoshkaIndex.build(
        x,
        coarse_dim=coarse_dim,
        ids=ids,
        adaptor=adaptor,
        backend=backend,
        backend_options=backend_options or None,
        index=index_type,
        target_recall=target_recall,
        metric=metric,
        rerank=None if rerank == "none" else rerank,
        sample_size=sample_size,
        quiet=quiet,
        code=code,
        ram_budget=ram_budget,
        candidates=candidates,
        device=device,
    )
    with stage(f"saving {out}", quiet=quiet):
        index.save(out)
    info = index.info()
    click.echo(
        json.dumps(
            {
                "output": str(output),
                "count": info["count"],
                "input_dim": info["input_dim"],
                "coarse_dim": info["coarse_dim"],
                "backend": info["backend"].get("backend", backend),  # "qdrant" embedded may mean qdrant-edge
                "coarse_index": info["backend"].get("coarse_index") or info["backend"].get("index"),
                "adaptor": info["adaptor"]["kind"],
                "candidates": info["candidates"]["default"],
                "calibrated_recall@10": info["candidates"]["calibrated_recall"],
                "target_recall": info["candidates"]["target_recall"],
                "ram_bytes_per_vector": info["memory"]["ram_bytes_per_vector"],
                **({"code": info["code"]} if info.get("code") else {}),
                **({"ram_budget_chose": info["ram_budget"]["chosen"]} if info.get("ram_budget") else {}),
                **(
                    {"ram_budget_warning": info["ram_budget"]["warning"]}
                    if (info.get("ram_budget") or {}).get("warning")
                    else {}
                ),
                "disk_bytes_per_vector": info["memory"]["disk_bytes_per_vector"],
                "stages": info["stages"],
                "seconds": round(time.perf_counter() - t0, 2),
            }
        )
    )


def _write_results(path: str, scores: np.ndarray, ids: np.ndarray) -> list[str]:
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix == ".npy":
        scores_path = p.with_name(p.stem + ".scores.npy")
        save_npy(p, ids)
        save_npy(scores_path, scores)
        return [str(p), str(scores_path)]
    if suffix == ".jsonl":
        atomic_write_bytes(p, _jsonl(scores, ids).encode())
        return [str(p)]
    raise InputError(f"--output ({path}): unknown result file type {suffix!r}; use .npy or .jsonl")


def _jsonl(scores: np.ndarray, ids: np.ndarray) -> str:
    lines = []
    for i in range(len(ids)):
        keep = ids[i] >= 0
        lines.append(
            json.dumps(
                {"query": i, "ids": ids[i][keep].tolist(), "scores": [round(float(s), 6) for s in scores[i][keep]]}
            )
        )
    return "\n".join(lines) + ("\n" if lines else "")


def _jsonl_hits(hits: list, with_payload: bool) -> str:
    lines = []
    for i, row in enumerate(hits):
        rec = {"query": i, "ids": [h.id for h in row], "scores": [round(h.score, 6) for h in row]}
        if with_payload:
            rec["payloads"] = [h.payload for h in row]
        lines.append(json.dumps(rec))
    return "\n".join(lines) + ("\n" if lines else "")


@click.command("search")
@click.argument("index_path", metavar="INDEX", type=click.Path())
@click.argument("queries", type=click.Path(dir_okay=False))
@click.option("-k", type=int, default=10, show_default=True, help="Results per query.")
@click.option("--candidates", type=int, help="Coarse hits to rerank (default: the calibrated value).")
@file_option(
    "-o",
    "--output",
    help="results.npy (ids; scores go to results.scores.npy) or results.jsonl; default: JSON lines on stdout.",
)
@click.option("--no-verify", is_flag=True, help="Skip the sha256 check of the index files (faster on large indexes).")
@click.option("--with-payload", is_flag=True, help="Add each hit's payload (JSON lines output).")
@device_option
@quiet_option
@user_errors
def search_command(index_path, queries, k, candidates, output, no_verify, with_payload, device, quiet):
    """Search INDEX with QUERIES embeddings (.npy or .fvecs): the top -k ids and scores per query.

    JSON lines carry the points' own ids (ints, or UUID strings in a migrated Qdrant collection);
    a .npy file holds the int64 ids the index returns.
    """
    from ..index import MatryoshkaIndex
    from ..index.points import maps_points

    suffix = None if output is None else Path(output).suffix.lower()
    if suffix not in (None, ".npy", ".jsonl"):
        raise InputError(f"--output ({output}): unknown result file type {Path(output).suffix!r}; use .npy or .jsonl")
    if with_payload and suffix == ".npy":
        raise InputError("--with-payload: payloads go to JSON lines; use -o results.jsonl (or no -o for stdout)")
    if output is not None:
        output_location(output)
    index = MatryoshkaIndex.load(index_path, verify=not no_verify, device=device)
    q = read_vectors(queries, "queries", dim=index.input_dim)
    if suffix != ".npy" and (with_payload or maps_points(index.backend)):
        text = _jsonl_hits(index.query(q, k=k, candidates=candidates, with_payload=with_payload), with_payload)
        if output is None:
            click.echo(text, nl=False)
            return
        atomic_write_bytes(output, text.encode())
        written = [str(output)]
    else:
        scores, ids = index.search(q, k=k, candidates=candidates)
        if output is None:
            click.echo(_jsonl(scores, ids), nl=False)
            return
        written = _write_results(output, scores, ids)
    if not quiet:
        click.echo(json.dumps({"queries": len(q), "k": k, "written": written}))


@click.command("info")
@click.argument("index_path", metavar="INDEX", type=click.Path())
@click.option("--no-verify", is_flag=True, help="Skip the sha256 check of every file (faster on large indexes).")
@click.option(
    "--qdrant-query",
    is_flag=True,
    help="Print the raw Qdrant request (method, path, JSON body) a client in any language sends for one query.",
)
@file_option(
    "--query",
    "query_file",
    help="With --qdrant-query: fill the request with the first row of this .npy (else placeholders).",
)
@click.option("-k", type=int, default=10, show_default=True, help="With --qdrant-query: results per query.")
@device_option
@user_errors
def info_command(index_path, no_verify, qdrant_query, query_file, k, device):
    """Describe INDEX: counts, dims, adaptor, calibrated candidates and recall, where each stage runs
    on --device ("stages"; the adaptor's training device too), bytes per vector.

    With --qdrant-query, the two-stage request of a Qdrant-backed INDEX as Qdrant's REST API takes it
    (prefetch on "coarse" with the adapted prefix, then the full vector), from the index's own manifest;
    for a prefix-only INDEX (--rerank none) the query on "coarse" alone.
    """
    from ..index import MatryoshkaIndex

    if query_file is not None and not qdrant_query:
        raise InputError("--query: only with --qdrant-query")
    index = MatryoshkaIndex.load(index_path, verify=not no_verify, device=device)
    if qdrant_query:
        click.echo(json.dumps(_qdrant_request(index, index_path, query_file, k), indent=2))
        return
    click.echo(json.dumps(index.info(), indent=2))


def _qdrant_request(index, index_path: str, query_file: str | None, k: int) -> dict:
    from ..backends.qdrant.request import query_path, query_request, query_vectors
    from ..manifest import read_manifest

    manifest = read_manifest(Path(index_path), verify=False)  # load() above verified it
    coarse = full = None
    if query_file is not None:
        q = read_vectors(query_file, "query", dim=index.input_dim)
        coarse, full = query_vectors(index.adaptor, q[0], manifest)
    body = query_request(manifest, coarse, full, k=k)
    return {"method": "POST", "path": query_path(manifest), "body": body}


@click.command("calibrate")
@click.argument("index_path", metavar="INDEX", type=click.Path())
@click.argument("queries", type=click.Path(dir_okay=False))
@click.option(
    "--target-recall",
    type=float,
    default=None,
    help="recall@10 against exact search to reach [default: the build's target].",
)
@quiet_option
@user_errors
def calibrate_command(index_path, queries, target_recall, quiet):
    """Re-calibrate INDEX's default candidate count on QUERIES (real queries, .npy or .fvecs) and save it.

    The build calibrates on corpus rows; queries unlike the documents (short questions against long
    passages) can need more candidates for the same recall. The index is rewritten atomically.
    """
    from ..index import MatryoshkaIndex

    output_location(index_path, "INDEX")  # it is rewritten: an unwritable location fails now, not after the work
    index = MatryoshkaIndex.load(index_path)
    q = read_vectors(queries, "queries", dim=index.input_dim)
    before = index.candidates
    record = index.calibrate(q, target_recall=target_recall, quiet=quiet)
    index.save(index_path)
    click.echo(
        json.dumps(
            {
                "index": str(index_path),
                "queries": len(q),
                "candidates_before": before,
                "candidates": index.candidates,
                "target_recall": record.get("target_recall"),
                "calibrated_recall@10": record.get("recall"),
                "reached": record.get("reached"),
            }
        )
    )


COMMANDS = [build_command, search_command, info_command, calibrate_command]
