"""``MatryoshkaAdaptor``: the scikit-learn-style estimator users meet.

torch is imported only by ``fit`` and by a CUDA device: a fitted adaptor is applied in numpy
(:class:`.numpy_model.NumpyResidualAdaptor`, float32), so loading one and transforming queries work
in an environment without torch and start in a fraction of the time.
"""

from __future__ import annotations

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
from .history import TrainHistory
from .io import read_adaptor_dir, write_adaptor_dir, write_adaptor_files
from .numpy_model import NumpyResidualAdaptor, expected_shapes
from .pca import pca_rotation

if TYPE_CHECKING:
    import torch

    from .training import TrainConfig

_INITS = ("pca", "identity")


class NotFittedError(MatryoshkaError, AttributeError):
    """The adaptor was used before ``fit`` or ``load``."""


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
    init:
        ``"pca"`` (default): ``f(e) = Re + MLP(Re)`` with R the fixed PCA rotation of the training corpus,
        so the starting point is already PCA at every prefix; ``"identity"``: the paper's ``e + MLP(e)``.
    hidden_dim:
        Width of the MLP's hidden layer. Default: the input dim.
    pairwise_weight, topk_weight, reconstruction_weight, listwise_weight, ranking_weight:
        Weights of the loss terms (0 switches a term off). ``ranking_weight`` (default 10) is used
        only when ``fit`` gets queries and positives; on our labelled dev set 10 beat the paper's
        unit weight at every prefix length (benchmarks/results/supervised_ablation.md).
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
        init: str = "pca",
        hidden_dim: int | None = None,
        pairwise_weight: float = 1.0,
        topk_weight: float = 1.0,
        reconstruction_weight: float = 0.1,
        listwise_weight: float = 3.0,
        ranking_weight: float = 10.0,
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
        quiet: bool = False,
    ) -> None:
        self.matryoshka_dims = matryoshka_dims
        self.init = init
        self.hidden_dim = hidden_dim
        self.pairwise_weight = pairwise_weight
        self.topk_weight = topk_weight
        self.reconstruction_weight = reconstruction_weight
        self.listwise_weight = listwise_weight
        self.ranking_weight = ranking_weight
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
        dims = tuple(self.matryoshka_dims) if self.matryoshka_dims is not None else default_matryoshka_dims(dim)
        if not dims:
            raise InputError("matryoshka_dims: give at least one prefix length")
        for m in dims:
            check_positive_int(m, "matryoshka_dims")
            if m > dim:
                raise InputError(f"matryoshka_dims: prefix length {m} exceeds the embedding dimension {dim}")
        weights = ("pairwise_weight", "topk_weight", "reconstruction_weight", "listwise_weight", "ranking_weight")
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
            dims=tuple(sorted(set(int(m) for m in dims))),
            weights=LossWeights(
                pairwise=float(self.pairwise_weight),
                topk=float(self.topk_weight),
                reconstruction=float(self.reconstruction_weight),
                listwise=float(self.listwise_weight),
                ranking=float(self.ranking_weight),
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

    # ------------------------------------------------------------------ fit
    def fit(
        self, corpus: np.ndarray, queries: np.ndarray | None = None, positives: np.ndarray | None = None
    ) -> MatryoshkaAdaptor:
        """Train on ``corpus`` embeddings; supervised when ``queries`` and ``positives`` are given.

        ``positives[i]`` is the embedding of a document relevant to ``queries[i]``. Returns ``self``.
        """
        torch = _import_torch("fit")  # one clear line where torch is missing, before any work
        corpus = check_embeddings(corpus, "corpus", min_rows=2)
        n, dim = corpus.shape
        cfg = self._check_params(dim)
        if n < cfg.batch_size:
            raise InputError(
                f"corpus: has {n} rows, fewer than batch_size={cfg.batch_size}; lower batch_size or give more embeddings"
            )
        if (queries is None) != (positives is None):
            raise InputError("queries/positives: give both for supervised training, or neither")
        pairs = None
        if queries is not None:
            queries = check_embeddings(queries, "queries", dim=dim, min_rows=2)
            positives = check_embeddings(positives, "positives", dim=dim, min_rows=2)
            if len(queries) != len(positives):
                raise InputError(
                    f"positives: has {len(positives)} rows for {len(queries)} queries; positives[i] must match queries[i]"
                )
            pairs = (np.asarray(queries, dtype=np.float32), np.asarray(positives, dtype=np.float32))

        from .torch_model import ResidualAdaptor
        from .training import train

        device = resolve_device(self.device)
        rng = np.random.default_rng(self.seed)
        if self.max_samples is not None and n > self.max_samples:
            rows = np.sort(rng.choice(n, size=self.max_samples, replace=False))
            sample = np.asarray(corpus[rows], dtype=np.float32)
        else:
            sample = np.asarray(corpus, dtype=np.float32)

        perm = rng.permutation(len(sample))
        n_val = round(len(sample) * self.val_fraction)
        n_val = min(n_val, 4096)
        val_rows = torch.from_numpy(sample[perm[:n_val]].copy())
        train_rows = torch.from_numpy(sample[perm[n_val:]].copy())
        if len(train_rows) < cfg.batch_size:
            raise InputError(
                f"corpus: {len(train_rows)} rows left for training after the validation split, fewer than "
                f"batch_size={cfg.batch_size}; lower batch_size or val_fraction"
            )
        train_pairs = val_pairs = None
        if pairs is not None:
            pperm = rng.permutation(len(pairs[0]))
            n_pval = round(len(pperm) * self.val_fraction)
            tp, vp = pperm[n_pval:], pperm[:n_pval]
            train_pairs = (torch.from_numpy(pairs[0][tp]), torch.from_numpy(pairs[1][tp]))
            val_pairs = (torch.from_numpy(pairs[0][vp]), torch.from_numpy(pairs[1][vp])) if n_pval >= 2 else None

        rotation = pca_rotation(train_rows.numpy())
        neighbour_space = torch.from_numpy(rotation[:, : min(dim, 128)].copy()) if dim > 128 else None
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            model = ResidualAdaptor(
                dim,
                self.hidden_dim or dim,
                rotation=torch.from_numpy(rotation) if self.init == "pca" else None,
            )
            history = train(
                model,
                train_rows,
                val_rows,
                cfg,
                seed=self.seed,
                device=device,
                train_pairs=train_pairs,
                val_pairs=val_pairs,
                neighbour_space=neighbour_space,
                quiet=self.quiet,
            )
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
            "params": _jsonable(self.get_params()),
            "train_config": {**asdict(cfg), "dims": list(cfg.dims)},
            "training": {
                **history.to_dict(),
                "rows": len(train_rows),
                "val_rows": len(val_rows),
                "pairs": 0 if train_pairs is None else len(train_pairs[0]),
                "supervised": pairs is not None,
                "device": str(device),
            },
            "library_version": __version__,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        return self

    # ------------------------------------------------------------------ apply
    def _check_fitted(self) -> None:
        if not hasattr(self, "model_"):
            raise NotFittedError("this MatryoshkaAdaptor is not fitted; call fit() or MatryoshkaAdaptor.load() first")

    def transform(self, x: np.ndarray, dim: int | None = None, *, batch_size: int = 8192) -> np.ndarray:
        """Adapted vectors ``f(x)`` as float32, only the first ``dim`` columns when given.

        ``x`` may be float16/32/64 or a memory-mapped array larger than RAM: it is read and
        transformed in batches of ``batch_size`` rows. Queries and documents use the same call.
        """
        self._check_fitted()
        x = check_embeddings(x, "x", dim=self.input_dim_)
        out_dim = self.input_dim_ if dim is None else check_positive_int(dim, "dim")
        if out_dim > self.input_dim_:
            raise InputError(f"dim: {out_dim} exceeds the adaptor's dimension {self.input_dim_}")
        out = np.empty((x.shape[0], out_dim), dtype=np.float32)
        batches = list(iter_row_chunks(x.shape[0], check_positive_int(batch_size, "batch_size")))
        shown = progress(batches, desc="adapting", unit="batch", quiet=self.quiet or len(batches) < 4)
        if isinstance(self.model_, NumpyResidualAdaptor):
            for sl in shown:
                out[sl] = self.model_(np.asarray(x[sl], dtype=np.float32))[:, :out_dim]
            return out
        import torch  # a CUDA model (fit on a GPU, or load(device="cuda"))

        device = next(self.model_.parameters()).device
        with torch.no_grad():
            for sl in shown:
                chunk = torch.from_numpy(np.array(x[sl], dtype=np.float32)).to(device)
                out[sl] = self.model_(chunk)[:, :out_dim].cpu().numpy()
        return out

    def to_torch(self, device: str = "cpu") -> torch.nn.Module:
        """The adaptor as a torch ``ResidualAdaptor`` (``nn.Module``, eval mode) with these weights; imports torch."""
        self._check_fitted()
        return _torch_model(self.model_.state_dict(), resolve_device(device))

    def to_sentence_transformers(self) -> torch.nn.Module:
        """A module to append to a ``SentenceTransformer``: ``encode`` then returns adapted vectors.

        ``model.append(adaptor.to_sentence_transformers())``; ``truncate_dim=m`` gives the Matryoshka
        prefix; ``model.save(dir)`` stores the adaptor in the model directory and
        ``SentenceTransformer(dir, trust_remote_code=True)`` loads it back (sentence-transformers >= 6 asks
        for the flag for any module class outside its own package; see :mod:`.sentence_transformers`;
        extra: ``pip install "matryoshka-index[st]"``).
        """
        self._check_fitted()
        from .sentence_transformers import MatryoshkaAdaptorModule

        return MatryoshkaAdaptorModule(self.model_.state_dict(), self.metadata_)

    def fit_transform(self, corpus: np.ndarray, dim: int | None = None) -> np.ndarray:
        return self.fit(corpus).transform(corpus, dim)

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the adaptor to directory ``path`` (safetensors + JSON), atomically."""
        self._check_fitted()
        write_adaptor_dir(path, self.model_.state_dict(), self.metadata_)

    def to_files(self) -> dict[str, bytes]:
        """The adaptor's files as ``{file name: bytes}`` (for storing it inside another store, e.g. Qdrant)."""
        self._check_fitted()
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
        except (KeyError, TypeError, ValueError) as exc:
            raise FormatError(f"{path}: adaptor metadata is incomplete ({exc}); the file is corrupt") from None
        expected = expected_shapes(dim, hidden, has_rotation)
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
