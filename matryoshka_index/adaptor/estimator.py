"""``MatryoshkaAdaptor``: the scikit-learn-style estimator users meet.

torch is imported only by ``fit`` and by a CUDA device: a fitted adaptor is applied in numpy
(:class:`.numpy_model.NumpyResidualAdaptor`, float32), so loading one and transforming queries work
in an environment without torch and start in a fraction of the time.
"""

from __future__ import annotations

import copy
import inspect
import os
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .._version import __version__
from ..errors import FormatError, InputError, MatryoshkaError
from ..progress import progress
from ..storage import recover_directory
from ..validation import check_embeddings, check_fraction, check_positive_int, iter_row_chunks
from .guard import GuardResult
from .history import TrainHistory
from .io import read_adaptor_dir, write_adaptor_dir, write_adaptor_files
from .numpy_model import NumpyResidualAdaptor, expected_shapes
from .pca import pca_rotation

if TYPE_CHECKING:
    import torch

    from .training import TrainConfig

_INITS = ("pca", "identity")
_PARAMETRISATIONS = ("residual", "orthogonal")


class NotFittedError(MatryoshkaError, AttributeError):
    """The adaptor was used before ``fit`` or ``load``."""


class AdaptorFallbackWarning(UserWarning):
    """The trained adaptor lost on held-out data to its starting point (``fit`` kept the start, PCA), or a
    supervised one to the unsupervised adaptor given the same queries (``fit`` kept the unsupervised one)."""


def default_matryoshka_dims(dim: int) -> tuple[int, ...]:
    """Powers of two from 32 below ``dim`` (at most 256), e.g. (32, 64, 128, 256) for 384 or 768."""
    dims = tuple(m for m in (32, 64, 128, 256) if m < dim)
    return dims or (max(1, dim // 2),)


def _import_torch(what: str) -> Any:
    try:
        import torch
    except ImportError:
        raise MatryoshkaError(
            f"{what} needs torch, which is not installed here (pip install torch); "
            "loading and applying a fitted adaptor do not"
        ) from None
    return torch


def resolve_device(device: str) -> torch.device:
    """The torch device for ``device`` (imports torch: training and CUDA inference only)."""
    torch = _import_torch(f"device={device!r}")

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"device: {device!r} was asked for but torch sees no CUDA GPU; use device='cpu' or 'auto'")
    try:
        return torch.device(device)
    except RuntimeError:
        raise InputError(f"device: unknown device {device!r}; use 'auto', 'cpu' or 'cuda'") from None


class MatryoshkaAdaptor:
    """Learn ``f(e) = e + MLP(e)`` so short prefixes of ``f(e)`` keep the embeddings' similarity structure.

    The Matryoshka-Adaptor of Yoon, Sinha, Arik and Pfister (EMNLP 2024, arXiv 2407.20243), trained on
    embeddings alone (unsupervised) or with (query, relevant document) pairs (supervised), plus a
    PCA-rotation start and a listwise neighbour term of our own (see ``benchmarks/adaptor_quality.py``
    for the ablation that earned them their defaults).

    Parameters
    ----------
    matryoshka_dims:
        Prefix lengths M the losses look at. Default: powers of two from 32 below the input dim, up to 256.
    matryoshka_weights:
        One weight per prefix length of ``matryoshka_dims`` (same order), for every loss term: each
        term is the weighted mean over the prefix lengths
        (:class:`~matryoshka_index.adaptor.losses.MatryoshkaLoss`). Default ``None``: the plain mean.
    init:
        ``"pca"`` (default): ``f(e) = Re + MLP(Re)`` with R the fixed PCA rotation of the training corpus,
        so the starting point is already PCA at every prefix; ``"identity"``: the paper's ``e + MLP(e)``.
    hidden_dim:
        Width of the MLP's hidden layer. Default: the input dim.
    parametrisation:
        ``"residual"`` (default): the paper's ``z + MLP(z)``; ``"orthogonal"``: a learned rotation
        ``z Q`` after the start (:mod:`.orthogonal`), which keeps every full-dim inner product of the
        start exactly (``rerank="adapted"`` then loses nothing) and learns only what each prefix holds.
    pairwise_weight, topk_weight, reconstruction_weight, listwise_weight, ranking_weight, query_weight:
        Weights of the loss terms (0 switches a term off). ``ranking_weight`` (default 10) is used
        only when ``fit`` gets queries and positives; on our labelled dev set 10 beat the paper's
        unit weight at every prefix length (benchmarks/results/supervised_ablation.md).
        ``query_weight`` (default 3) weighs the query-to-document listwise term
        (:func:`~matryoshka_index.adaptor.losses.query_listwise_loss`: each query's full-dim nearest
        corpus rows, no label needed), used with unlabelled queries and, in a supervised fit, by the
        unsupervised fit the guard compares against; not by a supervised fit itself (where the queries'
        full-dim neighbours are not their positives it pulls against the labels: a labelled set whose
        queries are distorted documents lost 0.21 of its hit rate with it, tests/test_adaptor.py).
    k:
        Neighbours per item in the top-k loss (and the pool neighbours are drawn from). Default 10.
    temperature:
        Softmax temperature of the listwise and ranking terms. Default 0.05.
    lr, weight_decay, batch_size, epochs:
        AdamW learning rate (one-cycle schedule), weight decay, rows per batch, passes over the training rows.
    neighbours_per_anchor:
        Each batch is anchors plus this many of each anchor's nearest neighbours. Default 3.
    hard_negatives:
        Supervised only: per (query, positive) pair, this many extra negatives drawn from the query's
        30 most similar corpus rows at full dimension (never a copy of its positive), beside the
        in-batch negatives. Default 0 (in-batch negatives only, as in the paper): on our labelled dev
        set mined negatives did not help (benchmarks/results/supervised_ablation.md).
    val_fraction, patience:
        Share of rows (and pairs) held out for validation; epochs without improvement before stopping.
        The weights of the best validation epoch are kept.
    max_samples:
        Train on a random sample of at most this many corpus rows (default 100,000); ``None`` uses all.
    seed:
        Seeds every random choice; on CPU the same data and seed give the same weights.
    device:
        Where ``fit`` trains: ``"auto"`` (CUDA when torch sees a GPU, else CPU), ``"cpu"`` or ``"cuda"``.
        ``transform`` runs in numpy (no torch) after a CPU fit and after ``load`` with ``"auto"`` or
        ``"cpu"``; in torch on the GPU after a GPU fit or ``load(..., device="cuda")``.
    query_head:
        When ``fit`` gets queries (labelled or not): queries get a head of their own, sharing the
        documents' rotation and residual: documents are centred on the corpus mean, queries on the
        training queries' mean, before the rotation (an asymmetric model's query and passage prefixes,
        or queries in other languages, sit at a constant offset from the documents that would otherwise
        fill the short prefix). Documents go through :meth:`transform`, queries through
        :meth:`transform_queries`. Default True; no effect without queries.
    guard:
        After training, measure on held-out data, at each prefix length, the adaptor against its
        starting point (PCA rotation or identity): supervised, the share of held-out pairs whose
        positive is in the prefix's top 10; else the recall@10 of prefix search against exact full-dim
        search, for held-out queries when given, else held-out corpus rows. When the adaptor's mean is
        lower, keep the start instead, with an :class:`AdaptorFallbackWarning`
        (``history_.fell_back_to_start``; the numbers in ``history_.guard``). Supervised, before that:
        the unsupervised adaptor fitted with the same queries unlabelled is trained too and compared on
        the held-out pairs (nDCG@10 of their positives, mean over the prefixes); when the supervised fit
        does not beat it, ``fit`` keeps the unsupervised one, with an :class:`AdaptorFallbackWarning`
        (``history_.fell_back_to_unsupervised``; the numbers in ``history_.selection``). Default True.
    corpus_term_search:
        Supervised only: also train without the unsupervised corpus terms (pairwise, top-k, listwise,
        reconstruction weights 0) and keep whichever does better on the held-out pairs (same measure as
        the guard's comparison). The corpus terms regularise a fit on few pairs on one of our labelled
        sets and cost 0.05 nDCG@10 on another (benchmarks/results/supervised_ablation.md), so the
        held-out pairs decide. Default True.
    quiet:
        No progress bar even on a terminal.

    Attributes (set by ``fit`` or ``load``)
    ---------------------------------------
    input_dim_, matryoshka_dims_, model_, history_, metadata_
    """

    def __init__(
        self,
        matryoshka_dims: Sequence[int] | None = None,
        *,
        matryoshka_weights: Sequence[float] | None = None,
        init: str = "pca",
        hidden_dim: int | None = None,
        parametrisation: str = "residual",
        pairwise_weight: float = 1.0,
        topk_weight: float = 1.0,
        reconstruction_weight: float = 0.1,
        listwise_weight: float = 3.0,
        ranking_weight: float = 10.0,
        query_weight: float = 3.0,
        k: int = 10,
        temperature: float = 0.05,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        batch_size: int = 512,
        epochs: int = 4,
        neighbours_per_anchor: int = 3,
        hard_negatives: int = 0,
        val_fraction: float = 0.05,
        patience: int = 2,
        max_samples: int | None = 100_000,
        seed: int = 0,
        device: str = "auto",
        query_head: bool = True,
        corpus_term_search: bool = True,
        guard: bool = True,
        quiet: bool = False,
    ) -> None:
        self.matryoshka_dims = matryoshka_dims
        self.matryoshka_weights = matryoshka_weights
        self.init = init
        self.hidden_dim = hidden_dim
        self.parametrisation = parametrisation
        self.pairwise_weight = pairwise_weight
        self.topk_weight = topk_weight
        self.reconstruction_weight = reconstruction_weight
        self.listwise_weight = listwise_weight
        self.ranking_weight = ranking_weight
        self.query_weight = query_weight
        self.k = k
        self.temperature = temperature
        self.lr = lr
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.epochs = epochs
        self.neighbours_per_anchor = neighbours_per_anchor
        self.hard_negatives = hard_negatives
        self.val_fraction = val_fraction
        self.patience = patience
        self.max_samples = max_samples
        self.seed = seed
        self.device = device
        self.query_head = query_head
        self.corpus_term_search = corpus_term_search
        self.guard = guard
        self.quiet = quiet

    # ------------------------------------------------------------------ parameters
    def get_params(self) -> dict[str, Any]:
        """The constructor parameters (as scikit-learn's ``get_params``)."""
        return {n: getattr(self, n) for n in inspect.signature(type(self).__init__).parameters if n != "self"}

    def __repr__(self) -> str:
        changed = {k: v for k, v in self.get_params().items() if v != _DEFAULTS.get(k, object())}
        return f"MatryoshkaAdaptor({', '.join(f'{k}={v!r}' for k, v in changed.items())})"

    def _check_params(self, dim: int) -> TrainConfig:
        from .training import LossWeights, TrainConfig  # torch: only fit needs it

        if self.init not in _INITS:
            raise InputError(f"init: must be one of {', '.join(_INITS)}, got {self.init!r}")
        if self.parametrisation not in _PARAMETRISATIONS:
            raise InputError(
                f"parametrisation: must be one of {', '.join(_PARAMETRISATIONS)}, got {self.parametrisation!r}"
            )
        dims = tuple(self.matryoshka_dims) if self.matryoshka_dims is not None else default_matryoshka_dims(dim)
        if not dims:
            raise InputError("matryoshka_dims: give at least one prefix length")
        for m in dims:
            check_positive_int(m, "matryoshka_dims")
            if m > dim:
                raise InputError(f"matryoshka_dims: prefix length {m} exceeds the embedding dimension {dim}")
        dim_weights = self._check_matryoshka_weights(dims)
        weights = (
            "pairwise_weight",
            "topk_weight",
            "reconstruction_weight",
            "listwise_weight",
            "ranking_weight",
            "query_weight",
        )
        for name in weights:
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or v < 0 or not np.isfinite(v):
                raise InputError(f"{name}: must be a finite number >= 0, got {v!r}")
        if self.hidden_dim is not None:
            check_positive_int(self.hidden_dim, "hidden_dim")
        if self.max_samples is not None:
            check_positive_int(self.max_samples, "max_samples", minimum=2)
        check_fraction(self.val_fraction, "val_fraction", low=-1e-12, high=0.5)
        check_fraction(self.lr, "lr", high=10.0)
        check_fraction(self.temperature, "temperature", high=100.0)
        return TrainConfig(
            dims=tuple(sorted(dim_weights or set(int(m) for m in dims))),
            dim_weights=None if dim_weights is None else tuple(dim_weights[m] for m in sorted(dim_weights)),
            weights=LossWeights(
                pairwise=float(self.pairwise_weight),
                topk=float(self.topk_weight),
                reconstruction=float(self.reconstruction_weight),
                listwise=float(self.listwise_weight),
                ranking=float(self.ranking_weight),
                queries=float(self.query_weight),
            ),
            k=check_positive_int(self.k, "k"),
            temperature=float(self.temperature),
            lr=float(self.lr),
            weight_decay=float(self.weight_decay),
            batch_size=check_positive_int(self.batch_size, "batch_size", minimum=4),
            neighbours_per_anchor=check_positive_int(self.neighbours_per_anchor, "neighbours_per_anchor"),
            epochs=check_positive_int(self.epochs, "epochs"),
            patience=check_positive_int(self.patience, "patience", minimum=0),
            hard_negatives=check_positive_int(self.hard_negatives, "hard_negatives", minimum=0),
        )

    def _check_matryoshka_weights(self, dims: Sequence[int]) -> dict[int, float] | None:
        """``{prefix length: weight}`` from ``matryoshka_weights`` (None when not given), checked."""
        if self.matryoshka_weights is None:
            return None
        weights = list(self.matryoshka_weights) if isinstance(self.matryoshka_weights, (list, tuple)) else None
        if weights is None or len(weights) != len(dims):
            raise InputError(
                f"matryoshka_weights: give one weight per prefix length ({len(dims)}: {list(dims)}), "
                f"got {self.matryoshka_weights!r}"
            )
        by_dim: dict[int, float] = {}
        for m, w in zip(dims, weights, strict=True):
            if isinstance(w, bool) or not isinstance(w, (int, float)) or w < 0 or not np.isfinite(w):
                raise InputError(f"matryoshka_weights: each weight must be a finite number >= 0, got {w!r}")
            if int(m) in by_dim and by_dim[int(m)] != float(w):
                raise InputError(f"matryoshka_weights: prefix length {m} is given twice with different weights")
            by_dim[int(m)] = float(w)
        if sum(by_dim.values()) <= 0:
            raise InputError("matryoshka_weights: at least one weight must be > 0")
        return by_dim

    # ------------------------------------------------------------------ fit
    def fit(
        self, corpus: np.ndarray, queries: np.ndarray | None = None, positives: np.ndarray | None = None
    ) -> MatryoshkaAdaptor:
        """Train on ``corpus`` embeddings; returns ``self``.

        * corpus alone: unsupervised, the corpus' own neighbourhoods;
        * ``queries`` alone: unlabelled queries (a query log, a calibration file): each query's nearest
          corpus rows at full dimension become its training anchors, so the prefixes keep the
          query-to-document neighbourhoods as well (where queries differ from documents: another
          language, an asymmetric model);
        * ``queries`` and ``positives``: supervised, ``positives[i]`` relevant to ``queries[i]``.
        """
        torch = _import_torch("fit")  # one clear line where torch is missing, before any work
        corpus = check_embeddings(corpus, "corpus", min_rows=2)
        n, dim = corpus.shape
        cfg = self._check_params(dim)
        if n < cfg.batch_size:
            raise InputError(
                f"corpus: has {n} rows, fewer than batch_size={cfg.batch_size}; lower batch_size or give more embeddings"
            )
        queries, positives = self._check_queries(queries, positives, dim)

        from .torch_model import ResidualAdaptor
        from .training import train

        device = resolve_device(self.device)
        rng = np.random.default_rng(self.seed)
        train_rows, val_rows = self._split_rows(corpus, cfg, rng)
        train_pairs = val_pairs = None
        train_queries = val_queries = None
        if positives is not None:
            train_pairs, val_pairs = self._split_pairs(queries, positives, rng)
        elif queries is not None:
            train_queries, val_queries = self._split_queries(queries, rng)

        rotation = pca_rotation(train_rows.numpy())
        neighbour_space = torch.from_numpy(rotation[:, : min(dim, 128)].copy()) if dim > 128 else None
        fit_queries = train_queries if train_queries is not None else train_pairs[0] if train_pairs else None
        centres = {}
        if self.query_head and fit_queries is not None:
            centres = {"centre": train_rows.mean(dim=0), "query_centre": fit_queries.mean(dim=0)}
        # labelled queries feed the query-to-document term of the unsupervised candidate only (see query_weight)
        unlabelled = (train_queries, val_queries)
        if train_pairs is not None:
            unlabelled = (train_pairs[0], val_pairs[0] if val_pairs is not None else None)

        def train_one(candidate: TrainConfig, supervised: bool) -> tuple[Any, TrainHistory]:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.seed)
                start_rotation = torch.from_numpy(rotation) if self.init == "pca" else None
                if self.parametrisation == "orthogonal":
                    from .orthogonal import OrthogonalAdaptor

                    model = OrthogonalAdaptor(dim, rotation=start_rotation, **centres)
                else:
                    model = ResidualAdaptor(dim, self.hidden_dim or dim, rotation=start_rotation, **centres)
                history = train(
                    model,
                    train_rows,
                    val_rows,
                    candidate,
                    seed=self.seed,
                    device=device,
                    train_pairs=train_pairs if supervised else None,
                    val_pairs=val_pairs if supervised else None,
                    neighbour_space=neighbour_space,
                    train_queries=None if supervised else unlabelled[0],
                    val_queries=None if supervised else unlabelled[1],
                    quiet=self.quiet,
                )
            return model, history

        candidates = self._candidates(cfg) if val_pairs is not None else [("supervised", cfg, True)]
        if positives is None:
            model, history = train_one(cfg, False)
        else:
            model, history, cfg = self._select(candidates, train_one, train_rows.numpy(), val_pairs)
        if self.guard:
            self._apply_guard(model, history, train_rows, val_rows, val_queries, val_pairs, cfg.dims)
        if self.parametrisation == "orthogonal":
            model = model.folded().to(device)  # the learned rotation multiplied into the stored one
        self.model_ = _inference_model(model)
        self.input_dim_ = dim
        self.matryoshka_dims_ = cfg.dims
        self.history_ = history
        self.metadata_ = {
            "input_dim": dim,
            "hidden_dim": model.hidden_dim,
            "matryoshka_dims": list(cfg.dims),
            "init": self.init,
            "has_rotation": model.rotation is not None,
            "has_query_head": model.has_query_head,
            "params": _jsonable(self.get_params()),
            "train_config": {**asdict(cfg), "dims": list(cfg.dims)},
            "training": {
                **history.to_dict(),
                "rows": len(train_rows),
                "val_rows": len(val_rows),
                "pairs": 0 if train_pairs is None else len(train_pairs[0]),
                "supervised": positives is not None,
                "unlabelled_queries": 0 if train_queries is None else len(train_queries),
                "device": str(device),
            },
            "library_version": __version__,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        return self

    @staticmethod
    def _check_queries(
        queries: np.ndarray | None, positives: np.ndarray | None, dim: int
    ) -> tuple[np.ndarray | None, np.ndarray | None]:
        """float32 queries (and positives), checked; positives without queries are refused."""
        if positives is not None and queries is None:
            raise InputError("positives: give the queries they answer too (queries=...), or no positives")
        if queries is None:
            return None, None
        queries = np.asarray(check_embeddings(queries, "queries", dim=dim, min_rows=2), dtype=np.float32)
        if positives is None:
            return queries, None
        positives = check_embeddings(positives, "positives", dim=dim, min_rows=2)
        if len(queries) != len(positives):
            raise InputError(
                f"positives: has {len(positives)} rows for {len(queries)} queries; positives[i] must match queries[i]"
            )
        return queries, np.asarray(positives, dtype=np.float32)

    def _split_rows(self, corpus: np.ndarray, cfg: TrainConfig, rng: np.random.Generator) -> tuple[Any, Any]:
        """(training rows, validation rows) as torch tensors, from a sample of at most max_samples rows."""
        import torch

        n = len(corpus)
        if self.max_samples is not None and n > self.max_samples:
            rows = np.sort(rng.choice(n, size=self.max_samples, replace=False))
            sample = np.asarray(corpus[rows], dtype=np.float32)
        else:
            sample = np.asarray(corpus, dtype=np.float32)
        perm = rng.permutation(len(sample))
        n_val = min(round(len(sample) * self.val_fraction), 4096)
        val_rows = torch.from_numpy(sample[perm[:n_val]].copy())
        train_rows = torch.from_numpy(sample[perm[n_val:]].copy())
        if len(train_rows) < cfg.batch_size:
            raise InputError(
                f"corpus: {len(train_rows)} rows left for training after the validation split, fewer than "
                f"batch_size={cfg.batch_size}; lower batch_size or val_fraction"
            )
        return train_rows, val_rows

    def _split_pairs(self, queries: np.ndarray, positives: np.ndarray, rng: np.random.Generator) -> tuple[Any, Any]:
        """(training pairs, validation pairs or None) as torch tensors; at least min(100, a fifth) held out
        when ``fit`` chooses between fits on them (``corpus_term_search`` or ``guard``), unless
        ``val_fraction`` is 0."""
        import torch

        pperm = rng.permutation(len(queries))
        n_pval = round(len(pperm) * self.val_fraction)
        if self.val_fraction > 0 and (self.corpus_term_search or self.guard):
            n_pval = max(n_pval, min(100, len(pperm) // 5))  # as for unlabelled queries: enough to choose on
        tp, vp = pperm[n_pval:], pperm[:n_pval]
        train_pairs = (torch.from_numpy(queries[tp]), torch.from_numpy(positives[tp]))
        val_pairs = (torch.from_numpy(queries[vp]), torch.from_numpy(positives[vp])) if n_pval >= 2 else None
        return train_pairs, val_pairs

    def _split_queries(self, queries: np.ndarray, rng: np.random.Generator) -> tuple[Any, Any]:
        """(training queries, held-out queries) as torch tensors, from at most max_samples queries.

        The held-out share is at least min(100, a fifth): the guard's recall needs enough queries
        to tell the adaptor from its start.
        """
        import torch

        if self.max_samples is not None and len(queries) > self.max_samples:
            queries = queries[np.sort(rng.choice(len(queries), size=self.max_samples, replace=False))]
        perm = rng.permutation(len(queries))
        n_val = max(round(len(queries) * self.val_fraction), min(100, len(queries) // 5))
        return torch.from_numpy(queries[perm[n_val:]].copy()), torch.from_numpy(queries[perm[:n_val]].copy())

    def _candidates(self, cfg: TrainConfig) -> list[tuple[str, TrainConfig, bool]]:
        """The supervised fits to compare on the held-out pairs: ``(name, config, uses the labels)``.

        The configured one; with ``corpus_term_search`` the same without the unsupervised corpus terms
        (which help with few pairs on one set and hurt on another: measured, not assumed); with ``guard``
        the unsupervised adaptor given the same queries unlabelled (a supervised fit must not end below it).
        """
        from dataclasses import replace

        out = [("supervised", cfg, True)]
        w = cfg.weights
        if self.corpus_term_search and (w.pairwise or w.topk or w.listwise or w.reconstruction):
            off = replace(w, pairwise=0.0, topk=0.0, listwise=0.0, reconstruction=0.0)
            out.append(("supervised without the corpus terms", replace(cfg, weights=off), True))
        if self.guard and w.ranking:
            out.append(("unsupervised, queries unlabelled", replace(cfg, weights=replace(w, ranking=0.0)), False))
        return out

    def _select(
        self,
        candidates: list[tuple[str, TrainConfig, bool]],
        train_one: Any,
        rows: np.ndarray,
        val_pairs: Any,
    ) -> tuple[Any, TrainHistory, TrainConfig]:
        """Train each candidate; keep the one with the best mean nDCG@10 of the held-out pairs' positives
        over the prefix lengths (ties: the earlier); warn when the unsupervised one is kept."""
        import torch

        from .guard import positive_ndcg

        fits = [(name, cand, *train_one(cand, supervised)) for name, cand, supervised in candidates]
        if len(fits) == 1:
            return fits[0][2], fits[0][3], fits[0][1]
        queries, positives = val_pairs[0].numpy(), val_pairs[1].numpy()
        scores: dict[str, dict[int, float]] = {}
        for name, cand, model, _ in fits:
            model_cpu = copy.deepcopy(model).to("cpu").eval()

            def run(fn: Any, x: np.ndarray) -> np.ndarray:
                with torch.no_grad():
                    return np.concatenate([fn(torch.from_numpy(x[sl])).numpy() for sl in iter_row_chunks(len(x))])

            sides = (lambda x, m=model_cpu: run(m.forward_queries, x), lambda x, m=model_cpu: run(m, x))
            scores[name] = positive_ndcg(queries, positives, rows, sides, cand.dims)
        means = {name: float(np.mean(list(v.values()))) for name, v in scores.items()}
        best = max(range(len(fits)), key=lambda i: (means[fits[i][0]], -i))
        name, cand, model, history = fits[best]
        history.selection = {
            "metric": "nDCG@10 of the held-out pairs' positives, mean over the prefix lengths",
            "pairs": len(queries),
            "ndcg": {n: {str(m): round(v, 4) for m, v in d.items()} for n, d in scores.items()},
            "kept": name,
        }
        if name == "unsupervised, queries unlabelled":
            history.fell_back_to_unsupervised = True
            warnings.warn(
                f"the supervised adaptor lost on {len(queries)} held-out pairs to the unsupervised one fitted with "
                f"the same queries unlabelled (mean nDCG@10 over its prefixes {means['supervised']:.3f} vs "
                f"{means[name]:.3f}); keeping the unsupervised one",
                AdaptorFallbackWarning,
                stacklevel=3,
            )
        return model, history, cand

    def _apply_guard(
        self,
        model: Any,
        history: TrainHistory,
        train_rows: Any,
        val_rows: Any,
        val_queries: Any,
        val_pairs: Any,
        dims: Sequence[int],
    ) -> None:
        """Measure the adaptor against its start on held-out data; keep the start where the adaptor loses.

        Supervised: on the held-out pairs (is the positive in the prefix's top 10?); else on held-out
        queries or corpus rows (recall@10 against exact full-dim search in the start's space).
        """
        import torch

        if val_pairs is not None:
            source, check = "held-out pairs", val_pairs[0].numpy()
        elif val_queries is not None and len(val_queries):
            source, check = "held-out queries", val_queries.numpy()
        elif len(val_rows):
            source, check = "held-out corpus rows", val_rows.numpy()[:1000]
        else:
            return  # val_fraction=0: nothing held out to judge on
        model_cpu = copy.deepcopy(model).to("cpu").eval()

        queries = source != "held-out corpus rows"

        def run(fn: Any, x: np.ndarray) -> np.ndarray:
            with torch.no_grad():
                return np.concatenate([fn(torch.from_numpy(x[sl])).numpy() for sl in iter_row_chunks(len(x))])

        adaptor_side = (
            (lambda x: run(model_cpu.forward_queries, x)) if queries else (lambda x: run(model_cpu, x)),
            lambda x: run(model_cpu, x),
        )
        start_side = (
            lambda x: run(lambda t: model_cpu.start(t, queries=queries), x),
            lambda x: run(model_cpu.start, x),
        )
        if val_pairs is not None:
            positives = val_pairs[1].numpy()
            result = GuardResult.measure_pairs(check, positives, train_rows.numpy(), adaptor_side, start_side, dims)
        else:
            result = GuardResult.measure(source, check, train_rows.numpy(), adaptor_side, start_side, dims)
        history.guard = result.to_dict()
        if not result.kept:
            model.reset_to_start()
            history.fell_back_to_start = True
            a = np.mean(list(result.adaptor_recall.values()))
            b = np.mean(list(result.start_recall.values()))
            warnings.warn(
                f"the trained adaptor lost to its {self.init} start on {result.n_queries} {source} (mean "
                f"{result.metric} over its prefixes {a:.3f} vs {b:.3f}); keeping the {self.init} start instead",
                AdaptorFallbackWarning,
                stacklevel=3,
            )

    # ------------------------------------------------------------------ apply
    def check_is_fitted(self) -> None:
        """Raise :class:`NotFittedError` (one line) unless ``fit`` or ``load`` has run."""
        if not hasattr(self, "model_"):
            raise NotFittedError("this MatryoshkaAdaptor is not fitted; call fit() or MatryoshkaAdaptor.load() first")

    def transform(self, x: np.ndarray, dim: int | None = None, *, batch_size: int = 8192) -> np.ndarray:
        """Adapted vectors ``f(x)`` of documents as float32, only the first ``dim`` columns when given.

        ``x`` may be float16/32/64 or a memory-mapped array larger than RAM: it is read and
        transformed in batches of ``batch_size`` rows. Queries go through :meth:`transform_queries`
        (the same function unless the adaptor has a query head).
        """
        return self._apply(x, dim, batch_size, queries=False)

    def transform_queries(self, x: np.ndarray, dim: int | None = None, *, batch_size: int = 8192) -> np.ndarray:
        """Adapted vectors of queries: :meth:`transform` through the query head when the adaptor has one.

        An adaptor fitted with queries (``query_head=True``, the default) centres queries on their own
        mean instead of the corpus': search the vectors of :meth:`transform` with these.
        """
        return self._apply(x, dim, batch_size, queries=True)

    @property
    def has_query_head_(self) -> bool:
        """Whether queries and documents go through different heads (see :meth:`transform_queries`)."""
        self.check_is_fitted()
        return bool(self.model_.has_query_head)

    def _apply(self, x: np.ndarray, dim: int | None, batch_size: int, *, queries: bool) -> np.ndarray:
        self.check_is_fitted()
        x = check_embeddings(x, "x", dim=self.input_dim_)
        out_dim = self.input_dim_ if dim is None else check_positive_int(dim, "dim")
        if out_dim > self.input_dim_:
            raise InputError(f"dim: {out_dim} exceeds the adaptor's dimension {self.input_dim_}")
        out = np.empty((x.shape[0], out_dim), dtype=np.float32)
        batches = list(iter_row_chunks(x.shape[0], check_positive_int(batch_size, "batch_size")))
        shown = progress(batches, desc="adapting", unit="batch", quiet=self.quiet or len(batches) < 4)
        fn = self.model_.forward_queries if queries else self.model_
        if isinstance(self.model_, NumpyResidualAdaptor):
            for sl in shown:
                out[sl] = fn(np.asarray(x[sl], dtype=np.float32))[:, :out_dim]
            return out
        import torch  # a CUDA model (fit on a GPU, or load(device="cuda"))

        device = next(self.model_.parameters()).device
        with torch.no_grad():
            for sl in shown:
                chunk = torch.from_numpy(np.array(x[sl], dtype=np.float32)).to(device)
                out[sl] = fn(chunk)[:, :out_dim].cpu().numpy()
        return out

    def to_torch(self, device: str = "cpu") -> torch.nn.Module:
        """The adaptor as a torch ``ResidualAdaptor`` (``nn.Module``, eval mode) with these weights; imports torch."""
        self.check_is_fitted()
        return _torch_model(self.model_.state_dict(), resolve_device(device))

    def to_sentence_transformers(self) -> torch.nn.Module:
        """A module to append to a ``SentenceTransformer``: ``encode`` then returns adapted vectors.

        ``model.append(adaptor.to_sentence_transformers())``; ``truncate_dim=m`` gives the Matryoshka
        prefix; ``model.save(dir)`` stores the adaptor in the model directory and
        ``SentenceTransformer(dir, trust_remote_code=True)`` loads it back (sentence-transformers >= 6 asks
        for the flag for any module class outside its own package; see :mod:`.sentence_transformers`;
        extra: ``pip install "matryoshka-index[st]"``).
        """
        self.check_is_fitted()
        if self.has_query_head_:  # encode() cannot tell queries from documents
            raise InputError(
                "to_sentence_transformers: this adaptor has a query head (fitted with queries); a "
                "SentenceTransformer module applies one function to every text: refit with query_head=False"
            )
        from .sentence_transformers import MatryoshkaAdaptorModule

        return MatryoshkaAdaptorModule(self.model_.state_dict(), self.metadata_)

    def fit_transform(self, corpus: np.ndarray, dim: int | None = None) -> np.ndarray:
        return self.fit(corpus).transform(corpus, dim)

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the adaptor to directory ``path`` (safetensors + JSON), atomically."""
        self.check_is_fitted()
        write_adaptor_dir(path, self.model_.state_dict(), self.metadata_)

    def to_files(self) -> dict[str, bytes]:
        """The adaptor's files as ``{file name: bytes}`` (for storing it inside another store, e.g. Qdrant)."""
        self.check_is_fitted()
        with tempfile.TemporaryDirectory() as tmp:
            write_adaptor_files(Path(tmp), self.model_.state_dict(), self.metadata_)
            return {p.name: p.read_bytes() for p in Path(tmp).iterdir()}

    @classmethod
    def from_files(cls, files: dict[str, bytes], *, device: str = "auto") -> MatryoshkaAdaptor:
        """Inverse of :meth:`to_files`, with the same checks as :meth:`load`."""
        with tempfile.TemporaryDirectory() as tmp:
            for name, data in files.items():
                if "/" in name or name.startswith("."):
                    raise FormatError(f"adaptor file name {name!r} is not allowed")
                (Path(tmp) / name).write_bytes(data)
            return cls.load(tmp, device=device)

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, device: str = "auto") -> MatryoshkaAdaptor:
        """Load an adaptor written by :meth:`save`; fails with one clear line on a foreign or corrupt one."""
        recover_directory(path)  # a save killed between its two renames left the previous version aside
        tensors, meta = read_adaptor_dir(path)
        try:
            dim, hidden = int(meta["input_dim"]), int(meta["hidden_dim"])
            dims = tuple(int(m) for m in meta["matryoshka_dims"])
            has_rotation = bool(meta["has_rotation"])
            has_query_head = bool(meta.get("has_query_head", False))  # absent before the query head existed
        except (KeyError, TypeError, ValueError) as exc:
            raise FormatError(f"{path}: adaptor metadata is incomplete ({exc}); the file is corrupt") from None
        expected = expected_shapes(dim, hidden, has_rotation, has_query_head)
        found = {k: tuple(v.shape) for k, v in sorted(tensors.items())}
        if expected != found:
            raise FormatError(f"{path}: weights do not match the metadata (expected tensors {expected}, found {found})")
        saved = meta.get("params", {})
        params = {k: v for k, v in saved.items() if k in _DEFAULTS}
        if saved.get("code") is not None:
            # code= / code_weight= switched on the quantization-aware loss term, removed (it never won a row of
            # the frontier); the weights it trained are ordinary weights and apply exactly as saved
            warnings.warn(
                f"{path}: this adaptor was trained with code={saved['code']!r}, the quantization-aware loss term "
                "that has been removed; its weights load and apply unchanged, but a refit (get_params) trains "
                "without that term",
                stacklevel=2,
            )
        params["device"] = device
        obj = cls(**params)
        # numpy on the CPU ("auto" included: no torch import to look for a GPU); torch for an explicit CUDA device
        on_cpu = device in ("auto", "cpu")
        obj.model_ = NumpyResidualAdaptor(tensors) if on_cpu else _torch_model(tensors, resolve_device(device))
        obj.input_dim_ = dim
        obj.matryoshka_dims_ = dims
        obj.history_ = TrainHistory(
            **{k: v for k, v in meta.get("training", {}).items() if k in TrainHistory.__dataclass_fields__}
        )
        obj.metadata_ = meta
        return obj


def _inference_model(model: Any) -> Any:
    """What ``transform`` runs after ``fit``: the numpy twin on the CPU, the torch module itself on a GPU."""
    if next(model.parameters()).device.type == "cpu":
        return NumpyResidualAdaptor.from_torch(model)
    return model.eval()


def _torch_model(tensors: dict[str, Any], device: torch.device) -> torch.nn.Module:
    _import_torch("a torch adaptor")
    from .torch_model import ResidualAdaptor

    return ResidualAdaptor.from_tensors(tensors).to(device)


def _jsonable(params: dict[str, Any]) -> dict[str, Any]:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in params.items()}


_DEFAULTS = MatryoshkaAdaptor().get_params()
