"""The PCA baseline adaptor (numpy only, no torch): a fixed orthogonal rotation onto the principal directions."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np

from .._version import __version__
from ..errors import FormatError, InputError
from ..storage import atomic_directory, read_versioned_json, sha256_file
from ..validation import check_embeddings, check_positive_int, iter_row_chunks


def pca_rotation(x: np.ndarray) -> np.ndarray:
    """Orthogonal ``d x d`` matrix whose columns are the principal directions of ``x``, largest first.

    Computed from the covariance of the centred rows in float64; the sign of each column is fixed
    (largest-magnitude entry positive) so the result is deterministic.
    """
    x = np.asarray(x, dtype=np.float64)
    centred = x - x.mean(axis=0, keepdims=True)
    cov = centred.T @ centred / max(1, len(x) - 1)
    eigvals, eigvecs = np.linalg.eigh(cov)
    order = np.argsort(eigvals)[::-1]
    vecs = eigvecs[:, order]
    signs = np.sign(vecs[np.abs(vecs).argmax(axis=0), np.arange(vecs.shape[1])])
    signs[signs == 0] = 1.0
    return (vecs * signs).astype(np.float32)


class PCARotation:
    """The PCA baseline adaptor: ``f(x) = x @ R`` with ``R`` the principal directions of the corpus.

    ``R`` is orthogonal, so full-dimension inner products are unchanged and a prefix of ``f(x)`` is the
    projection onto the top principal components (no centring: centring would change inner
    products). Same surface as :class:`~matryoshka_index.MatryoshkaAdaptor`: ``fit``, ``transform``,
    ``save``/``load``, ``to_files``/``from_files``. Files: ``pca.json`` + ``pca_rotation.npy``.
    """

    FORMAT = "matryoshka-pca"
    FORMAT_VERSION = 1
    META_FILE = "pca.json"
    ROTATION_FILE = "pca_rotation.npy"

    def __init__(self) -> None:
        self.rotation_: np.ndarray | None = None

    @property
    def input_dim_(self) -> int:
        self.check_is_fitted()
        assert self.rotation_ is not None
        return int(self.rotation_.shape[0])

    def check_is_fitted(self) -> None:
        """Raise :class:`~matryoshka_index.errors.InputError` (one line) unless ``fit`` or ``load`` has run."""
        if self.rotation_ is None:
            raise InputError("adaptor: this PCARotation is not fitted; call fit() or PCARotation.load() first")

    def fit(self, corpus: np.ndarray) -> PCARotation:
        """Principal directions of ``corpus`` (at least 2 rows), largest variance first."""
        corpus = check_embeddings(corpus, "corpus", min_rows=2)
        self.rotation_ = np.ascontiguousarray(pca_rotation(np.asarray(corpus, dtype=np.float32)), dtype=np.float32)
        return self

    def transform(self, x: np.ndarray, dim: int | None = None, *, batch_size: int = 65536) -> np.ndarray:
        """``x @ R[:, :dim]`` as float32, in batches of ``batch_size`` rows."""
        self.check_is_fitted()
        assert self.rotation_ is not None
        x = check_embeddings(x, "x", dim=self.input_dim_, allow_zero_rows=True)
        out_dim = self.input_dim_ if dim is None else check_positive_int(dim, "dim")
        if out_dim > self.input_dim_:
            raise InputError(f"dim: {out_dim} exceeds the rotation's dimension {self.input_dim_}")
        r = np.ascontiguousarray(self.rotation_[:, :out_dim])
        out = np.empty((len(x), out_dim), dtype=np.float32)
        for sl in iter_row_chunks(len(x), check_positive_int(batch_size, "batch_size")):
            out[sl] = np.asarray(x[sl], dtype=np.float32) @ r
        return out

    def transform_queries(self, x: np.ndarray, dim: int | None = None, *, batch_size: int = 65536) -> np.ndarray:
        """Queries share the documents' rotation: :meth:`transform`."""
        return self.transform(x, dim, batch_size=batch_size)

    def _write(self, directory: Path) -> None:
        assert self.rotation_ is not None
        np.save(directory / self.ROTATION_FILE, self.rotation_, allow_pickle=False)
        meta = {
            "format": self.FORMAT,
            "format_version": self.FORMAT_VERSION,
            "input_dim": self.input_dim_,
            "rotation_sha256": sha256_file(directory / self.ROTATION_FILE),
            "library_version": __version__,
        }
        (directory / self.META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write ``pca.json`` and ``pca_rotation.npy`` into directory ``path``, atomically."""
        self.check_is_fitted()
        with atomic_directory(path) as tmp:
            self._write(tmp)

    def to_files(self) -> dict[str, bytes]:
        """The files as ``{name: bytes}`` (for storing inside another store, e.g. Qdrant)."""
        self.check_is_fitted()
        with tempfile.TemporaryDirectory() as tmp:
            self._write(Path(tmp))
            return {p.name: p.read_bytes() for p in Path(tmp).iterdir()}

    @classmethod
    def from_files(cls, files: dict[str, bytes]) -> PCARotation:
        with tempfile.TemporaryDirectory() as tmp:
            for name, data in files.items():
                if "/" in name or name.startswith("."):
                    raise FormatError(f"PCA file name {name!r} is not allowed")
                (Path(tmp) / name).write_bytes(data)
            return cls.load(tmp)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> PCARotation:
        """Load a rotation written by :meth:`save`; one clear :class:`FormatError` line on a bad one."""
        path = Path(path)
        meta = read_versioned_json(path / cls.META_FILE, kind=cls.FORMAT, supported_versions=(cls.FORMAT_VERSION,))
        rot_path = path / cls.ROTATION_FILE
        if not rot_path.is_file():
            raise FormatError(f"{rot_path}: missing; the PCA directory is incomplete")
        if meta.get("rotation_sha256") != sha256_file(rot_path):
            raise FormatError(f"{rot_path}: checksum does not match {cls.META_FILE}; the file is corrupt or replaced")
        try:
            rot = np.load(rot_path, allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise FormatError(f"{rot_path}: not a readable .npy ({exc})") from None
        d = meta.get("input_dim")
        if rot.dtype != np.float32 or rot.shape != (d, d):
            raise FormatError(f"{rot_path}: expected a float32 ({d}, {d}) rotation, found {rot.dtype} {rot.shape}")
        obj = cls()
        obj.rotation_ = rot
        return obj

    def __repr__(self) -> str:
        return f"PCARotation(dim={self.input_dim_})" if self.rotation_ is not None else "PCARotation()"
