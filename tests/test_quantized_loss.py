"""The quantization-aware listwise loss against a direct NumPy computation, and the adaptor's code parameter."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import make_corpus

from matryoshka_index import InputError, MatryoshkaAdaptor
from matryoshka_index.adaptor.losses import quantized_listwise_loss, relaxed_code


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return a @ b.T


def _code(x: np.ndarray, code: str, beta: float) -> np.ndarray:
    if code == "binary":
        return np.tanh(beta * x / np.sqrt((x**2).mean()))
    levels = 2 ** (8 if code == "sq8" else 4) - 1
    lo, hi = x.min(axis=0), x.max(axis=0)
    step = (hi - lo) / levels
    return lo + step * np.round((x - lo) / step)


def _log_softmax_off_diagonal(logits: np.ndarray) -> np.ndarray:
    z = logits.copy()
    np.fill_diagonal(z, -np.inf)
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def numpy_loss(e: np.ndarray, a: np.ndarray, dims, code: str, tau: float, beta: float) -> float:
    """The docstring's formula, term by term, in float64."""
    log_p = _log_softmax_off_diagonal(_cos(e, e) / tau)
    p = np.exp(log_p)
    per_dim = []
    for m in dims:
        coded = _code(a[:, :m], code, beta)
        query = coded if code == "binary" else a[:, :m]
        log_q = _log_softmax_off_diagonal(_cos(query, coded) / tau)
        off = ~np.eye(len(e), dtype=bool)
        per_dim.append((p[off] * (log_p[off] - log_q[off])).sum() / len(e))
    return float(np.mean(per_dim))


@pytest.mark.parametrize("code", ["binary", "sq8", "sq4"])
def test_quantized_listwise_loss_matches_numpy(code):
    rng = np.random.default_rng(0)
    e = rng.standard_normal((12, 16))
    a = e @ np.linalg.qr(rng.standard_normal((16, 16)))[0] + 0.3 * rng.standard_normal((12, 16))
    got = quantized_listwise_loss(torch.tensor(e), torch.tensor(a), (4, 8), code, temperature=0.1, beta=2.5)
    assert float(got) == pytest.approx(numpy_loss(e, a, (4, 8), code, 0.1, 2.5), rel=1e-9, abs=1e-12)
    assert float(got) > 0


def test_scalar_code_rounds_forward_and_passes_gradients_straight_through():
    x = torch.tensor([[0.0, 1.0], [0.37, 0.5], [1.0, 0.0]], dtype=torch.float64, requires_grad=True)
    y = relaxed_code(x, "sq4")
    np.testing.assert_allclose(y.detach().numpy()[1], [round(0.37 * 15) / 15, round(0.5 * 15) / 15])
    y.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), np.ones((3, 2)))
    b = relaxed_code(torch.tensor([[3.0, -3.0]]), "binary", beta=50.0)
    np.testing.assert_allclose(b.numpy(), [[1.0, -1.0]], atol=1e-6)


def test_adaptor_trains_with_a_code_and_rejects_an_unknown_one():
    x = make_corpus(300, 32, seed=2)
    ad = MatryoshkaAdaptor(code="binary", epochs=1, batch_size=64, quiet=True, device="cpu").fit(x)
    assert ad.get_params()["code"] == "binary" and ad.transform(x[:3], dim=8).shape == (3, 8)
    with pytest.raises(InputError, match="code: must be None or one of binary, sq8, sq4"):
        MatryoshkaAdaptor(code="pq4", epochs=1, batch_size=64, quiet=True).fit(x)
