"""The adaptor network applied in plain numpy (float32): queries and ``add`` need no torch.

The same function as the torch ``ResidualAdaptor``, from the same tensors (the names of its state dict)::

    z    = (e - centre) @ rotation           (no "- centre" without a query head; z = e - ... without "rotation")
    h    = gelu(z @ mlp.0.weight.T + mlp.0.bias)      gelu(x) = x * (1 + erf(x / sqrt 2)) / 2, the exact one
    f(e) = z + h @ mlp.2.weight.T + mlp.2.bias

Shapes: ``rotation`` (d, d), ``mlp.0.weight`` (hidden, d), ``mlp.0.bias`` (hidden,), ``mlp.2.weight``
(d, hidden), ``mlp.2.bias`` (d,), with a query head ``centre`` and ``query_centre`` (d,) (queries
subtract ``query_centre`` instead of ``centre``: :meth:`NumpyResidualAdaptor.forward_queries`); all float32. numpy has no ``erf``, so :func:`gelu` evaluates one
(relative error below 1.2e-7 before float32 rounding: within a few float32 ulps of the exact GELU).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

__all__ = ["NumpyResidualAdaptor", "expected_shapes", "gelu"]

ROTATION = "rotation"
CENTRE, QUERY_CENTRE = "centre", "query_centre"  # the query head: each side's own centre, subtracted first
W1, B1, W2, B2 = "mlp.0.weight", "mlp.0.bias", "mlp.2.weight", "mlp.2.bias"

# Numerical Recipes' Chebyshev fit of erfc (fractional error < 1.2e-7 for every x), in Horner order.
_ERFC_COEFFS = (
    0.17087277,
    -0.82215223,
    1.48851587,
    -1.13520398,
    0.27886807,
    -0.18628806,
    0.09678418,
    0.37409196,
    1.00002368,
    -1.26551223,
)


def gelu(x: np.ndarray) -> np.ndarray:
    """The exact (erf) GELU of torch's ``nn.GELU()``, as float32.

    Written with ``erfc(|x|/sqrt 2)`` so that the small tail is computed directly (no cancellation):
    ``gelu(x) = x * erfc(|x|/sqrt 2) / 2`` for x < 0 and ``x - x * erfc(x/sqrt 2) / 2`` for x >= 0,
    with ``erfc(a) = t * exp(-a^2 + P(t))``, ``t = 1 / (1 + a/2)`` (the Chebyshev fit above). float32
    throughout and in place: a batch of queries or a corpus chunk is transformed in a few passes.
    """
    x = np.asarray(x, dtype=np.float32)
    a = np.abs(x)
    a *= np.float32(1.0 / np.sqrt(2.0))
    t = a * np.float32(0.5)
    t += np.float32(1.0)
    np.reciprocal(t, out=t)
    p = np.full_like(t, _ERFC_COEFFS[0])
    for c in _ERFC_COEFFS[1:]:
        p *= t
        p += np.float32(c)
    a *= a
    p -= a
    np.exp(p, out=p)
    p *= t  # erfc(|x| / sqrt 2)
    p *= x
    p *= np.float32(0.5)  # the tail x * erfc / 2
    np.subtract(x, p, out=a)
    return np.where(x < 0, p, a)


def expected_shapes(
    dim: int, hidden_dim: int, has_rotation: bool, has_query_head: bool = False
) -> dict[str, tuple[int, ...]]:
    """The tensor names and shapes of an adaptor of this size (the safetensors file holds exactly these)."""
    shapes = {W1: (hidden_dim, dim), B1: (hidden_dim,), W2: (dim, hidden_dim), B2: (dim,)}
    if has_rotation:
        shapes[ROTATION] = (dim, dim)
    if has_query_head:
        shapes[CENTRE] = shapes[QUERY_CENTRE] = (dim,)
    return dict(sorted(shapes.items()))


class NumpyResidualAdaptor:
    """``f(e) = z + MLP(z)``, ``z = e @ R`` (or ``e``), in numpy float32; callable on ``(n, d)`` arrays.

    Mirrors the torch module's small surface that callers use: ``dim``, ``hidden_dim``, ``rotation``,
    ``start``, ``state_dict()`` (same names, numpy arrays) and ``parameters()``.
    """

    device = "cpu"

    def __init__(self, tensors: dict[str, np.ndarray]) -> None:
        missing = {W1, B1, W2, B2} - set(tensors)
        if missing:
            raise ValueError(f"adaptor tensors: missing {sorted(missing)}")
        w1 = np.asarray(tensors[W1], dtype=np.float32)
        self.hidden_dim, self.dim = (int(s) for s in w1.shape)
        rot = tensors.get(ROTATION)
        want = expected_shapes(self.dim, self.hidden_dim, rot is not None, CENTRE in tensors)
        found = {k: tuple(np.shape(v)) for k, v in tensors.items()}
        if found != want:
            raise ValueError(f"adaptor tensors: expected {want}, found {found}")
        self._tensors = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in sorted(tensors.items())}
        self.rotation = self._tensors.get(ROTATION)
        self.centre, self.query_centre = self._tensors.get(CENTRE), self._tensors.get(QUERY_CENTRE)
        # transposed once: the products below are then plain row-major (n, d) @ (d, hidden) ones; the
        # tensors by name become views of the transposed copies, so the weights are in memory once
        self._w1t = np.ascontiguousarray(self._tensors[W1].T)
        self._w2t = np.ascontiguousarray(self._tensors[W2].T)
        self._tensors[W1], self._tensors[W2] = self._w1t.T, self._w2t.T

    @classmethod
    def from_torch(cls, module) -> NumpyResidualAdaptor:
        """The numpy twin of a torch ``ResidualAdaptor`` (same weights)."""
        return cls({k: v.detach().to("cpu").numpy().copy() for k, v in module.state_dict().items()})

    def state_dict(self) -> dict[str, np.ndarray]:
        """The tensors by name, as the torch module's ``state_dict()`` names them (C-contiguous copies)."""
        return {k: v.copy() for k, v in self._tensors.items()}  # ndarray.copy is C order, views included

    def parameters(self) -> Iterator[np.ndarray]:
        """The tensors (read-only use; the two weight matrices are transposed views)."""
        return iter(self._tensors.values())

    @property
    def has_query_head(self) -> bool:
        return self.centre is not None

    def start(self, e: np.ndarray, *, queries: bool = False) -> np.ndarray:
        """The starting point ``z`` (``e`` centred when there is a query head, then rotated) of the residual."""
        e = np.asarray(e, dtype=np.float32)
        if self.centre is not None:
            e = e - (self.query_centre if queries else self.centre)
        return e @ self.rotation if self.rotation is not None else e

    def _residual(self, z: np.ndarray) -> np.ndarray:
        h = gelu(z @ self._w1t + self._tensors[B1])
        return z + (h @ self._w2t + self._tensors[B2])

    def __call__(self, e: np.ndarray) -> np.ndarray:
        return self._residual(self.start(e))

    forward = __call__

    def forward_queries(self, e: np.ndarray) -> np.ndarray:
        """Queries: the query head's centre, then the residual the documents share."""
        return self._residual(self.start(e, queries=True))
