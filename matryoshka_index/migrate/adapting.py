"""Stage 3, the adaptor: the one stored with a migration under way, the one given, or one trained here.

Both modes resolve it the same way (:func:`resolve_adaptor`), and the adapted prefix of a batch is
computed by :func:`coarse_vectors` for copy and in-place writes and for the recall queries alike.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from qdrant_client import QdrantClient

from ..errors import InputError
from .source import Source, sample_vectors

MIN_TRAIN_ROWS = 32


@dataclass
class AdaptorChoice:
    """The adaptor a migration uses: ``model`` when stored or given, else ``train_rows`` to train on."""

    model: Any
    description: str
    train_rows: int = 0


def _adaptor_class() -> Any:
    # imported when an adaptor is needed: a dry run without one never loads torch
    from ..adaptor import MatryoshkaAdaptor

    return MatryoshkaAdaptor


def load_adaptor(adaptor: Any) -> Any:
    """A fitted :class:`~matryoshka_index.MatryoshkaAdaptor`, given as one or as its directory."""
    MatryoshkaAdaptor = _adaptor_class()
    if isinstance(adaptor, MatryoshkaAdaptor):
        adaptor.check_is_fitted()
        return adaptor
    return MatryoshkaAdaptor.load(adaptor)


def weights_sha(files: dict[str, bytes]) -> str:
    """The checksum a migration record keeps of its adaptor's weights."""
    return hashlib.sha256(files.get("adaptor.safetensors", b"")).hexdigest()


def check_adaptor(adaptor: Any, src: Source, coarse_dim: int) -> None:
    """One line unless the adaptor takes the source's vectors and is longer than ``coarse_dim``."""
    if adaptor.input_dim_ != src.params.size:
        vec = "the unnamed vector" if src.vector is None else f"vector {src.vector!r}"
        raise InputError(
            f"adaptor: expects {adaptor.input_dim_}-dim embeddings but {vec} of collection {src.name!r} has "
            f"{src.params.size} dims; give an adaptor trained on this model's embeddings, or omit it to train one"
        )
    if coarse_dim >= adaptor.input_dim_:
        raise InputError(f"coarse_dim: {coarse_dim} must be smaller than the vectors' {adaptor.input_dim_} dims")


def resolve_adaptor(
    stored_files: dict[str, bytes] | None,
    given: Any,
    src: Source,
    coarse_dim: int,
    sample: int,
    *,
    stored_with: str,
    started: str,
) -> AdaptorChoice:
    """The stored adaptor (a given one must be the same), else the given one, else a plan to train one.

    ``stored_with``: the collection that keeps it; ``started``: the migration's name in the message
    when a given adaptor differs from the stored one.
    """
    if stored_files is not None:
        if given is not None and weights_sha(load_adaptor(given).to_files()) != weights_sha(stored_files):
            raise InputError(f"adaptor: differs from the one {started} started with; drop --adaptor to resume")
        model = _adaptor_class().from_files(stored_files)
        choice = AdaptorChoice(model, f"the adaptor stored with {stored_with!r} (resuming)")
    elif given is not None:
        where = "given" if not isinstance(given, (str, os.PathLike)) else f"loaded from {Path(given)}"
        choice = AdaptorChoice(load_adaptor(given), where)
    else:
        rows = min(sample, src.count)
        return AdaptorChoice(None, f"train (unsupervised) on {rows:,} randomly sampled vectors", rows)
    check_adaptor(choice.model, src, coarse_dim)
    return choice


def train_adaptor(
    client: QdrantClient,
    src: Source,
    endpoint: str,
    coarse_dim: int,
    rows: int,
    *,
    seed: int,
    quiet: bool,
    options: dict[str, Any],
) -> Any:
    """An unsupervised adaptor trained on ``rows`` vectors sampled from the source."""
    from ..adaptor.estimator import default_matryoshka_dims

    x = sample_vectors(client, src, rows, endpoint, seed)
    full_dim = src.params.size
    if len(x) < MIN_TRAIN_ROWS:
        raise InputError(
            f"collection has only {len(x)} vectors to train an adaptor on (at least {MIN_TRAIN_ROWS} are needed); "
            "pass a trained one with --adaptor"
        )
    options = dict(options)
    dims = sorted({d for d in default_matryoshka_dims(full_dim) if d < full_dim} | {coarse_dim})
    n_val = min(round(len(x) * float(options.get("val_fraction", 0.05))), 4096)
    # a small collection still trains: the batch never exceeds half of the training rows
    cap = max(4, (len(x) - n_val) // 2)
    options["batch_size"] = min(int(options.get("batch_size", 1024)), cap)
    options.setdefault("matryoshka_dims", dims)
    options.setdefault("seed", seed)
    options.setdefault("quiet", quiet)
    options["max_samples"] = None  # already sampled
    model = _adaptor_class()(**options).fit(x)
    check_adaptor(model, src, coarse_dim)
    return model


def coarse_vectors(adaptor: Any, x: np.ndarray, coarse_dim: int, metric: str, *, queries: bool = False) -> np.ndarray:
    """The adapted prefix of each row (normalised for cosine); all-zero rows give zero vectors.

    ``queries``: the rows are queries (a user's labelled sample), adapted through the adaptor's query
    head when it has one, as a search of the collection adapts them; else they are stored points.
    """
    out = np.zeros((len(x), coarse_dim), dtype=np.float32)
    nonzero = x.any(axis=1)
    if nonzero.any():
        adapt = adaptor.transform_queries if queries else adaptor.transform
        out[nonzero] = adapt(x[nonzero], dim=coarse_dim)
    if metric == "cosine":
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        out = np.divide(out, norms, out=np.zeros_like(out), where=norms > 0)
    return out


__all__ = [
    "MIN_TRAIN_ROWS",
    "AdaptorChoice",
    "check_adaptor",
    "coarse_vectors",
    "load_adaptor",
    "resolve_adaptor",
    "train_adaptor",
    "weights_sha",
]
