"""The numpy adaptor: same float32 result as the torch module, same files, fitted state kept."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import make_corpus
from safetensors.torch import save_file as torch_save_file

from matryoshka_index import MatryoshkaAdaptor
from matryoshka_index.adaptor.numpy_model import NumpyResidualAdaptor, expected_shapes, gelu
from matryoshka_index.adaptor.torch_model import ResidualAdaptor
from matryoshka_index.errors import InputError


def random_torch_adaptor(dim: int, hidden: int, *, rotation: bool, seed: int) -> ResidualAdaptor:
    """A ResidualAdaptor whose every layer is non-zero (a fresh one is the identity: nothing to compare)."""
    gen = torch.Generator().manual_seed(seed)
    rot = torch.linalg.qr(torch.randn(dim, dim, generator=gen))[0] if rotation else None
    model = ResidualAdaptor(dim, hidden, rotation=rot)
    with torch.no_grad():
        for p in model.mlp.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
    return model.eval()


def torch_apply(model: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(np.asarray(x, dtype=np.float32))).numpy()


def test_gelu_matches_torch_over_the_whole_range():
    x = np.concatenate([np.linspace(-40, 40, 20001), np.array([0.0, -0.0, 1e-30, -1e-30, 1e-8, -1e-8])])
    x = x.astype(np.float32)
    exact = torch.nn.functional.gelu(torch.from_numpy(x).double()).numpy()
    # relative 3e-6: float32 rounding (1.2e-7), and the float32 exp of -x^2/2 in the far negative tail,
    # where |gelu| < 1e-5 (there the absolute error stays below 1e-8); atol covers torch float64's own
    # cancellation below ~1e-16
    np.testing.assert_allclose(gelu(x), exact, rtol=3e-6, atol=1e-12)
    # torch's float32 kernel computes x(1 + erf)/2 and loses the far negative tail to cancellation
    # (absolute error up to ~1e-6 there); ours is the more accurate of the two, and both agree to that
    np.testing.assert_allclose(gelu(x), torch.nn.functional.gelu(torch.from_numpy(x)).numpy(), rtol=1e-6, atol=2e-6)
    assert gelu(x).dtype == np.float32
    assert np.all(np.isfinite(gelu(x)))


@pytest.mark.parametrize("rotation", [True, False])
@pytest.mark.parametrize("scale", [1.0, 0.05, 20.0])
def test_random_weights_random_inputs_match_torch(rotation, scale):
    model = random_torch_adaptor(48, 96, rotation=rotation, seed=3)
    x = (np.random.default_rng(0).standard_normal((300, 48)) * scale).astype(np.float32)
    ours = NumpyResidualAdaptor.from_torch(model)(x)
    ref = torch_apply(model, x)
    assert ours.dtype == np.float32 and ours.shape == (300, 48)
    # 1e-5 relative to the size of the outputs (float32 products of length 48..96 round at ~1e-7 of it)
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-5 * max(1.0, float(np.abs(ref).max())))


def test_trained_adaptor_on_structured_data_matches_torch():
    corpus = make_corpus(1200, 64, rank=6, noise=0.2, seed=4)
    corpus /= np.linalg.norm(corpus, axis=1, keepdims=True)  # unit rows, as embeddings are
    adaptor = MatryoshkaAdaptor(matryoshka_dims=(8, 16, 32), epochs=3, batch_size=128, quiet=True, device="cpu")
    adaptor.fit(corpus)
    assert isinstance(adaptor.model_, NumpyResidualAdaptor)
    # training moved the output layer away from zero: the MLP really contributes
    assert np.abs(adaptor.model_.state_dict()["mlp.2.weight"]).max() > 1e-3
    queries = make_corpus(1300, 64, rank=6, noise=0.2, seed=4)[1200:]
    for x in (corpus[:500], queries):
        np.testing.assert_allclose(adaptor.transform(x), torch_apply(adaptor.to_torch(), x), rtol=0, atol=1e-5)
    np.testing.assert_allclose(
        adaptor.transform(queries, dim=16), torch_apply(adaptor.to_torch(), queries)[:, :16], rtol=0, atol=1e-5
    )


def test_files_are_byte_compatible_with_the_torch_writer(tmp_path, corpus):
    adaptor = MatryoshkaAdaptor(matryoshka_dims=(8, 16), epochs=1, batch_size=128, quiet=True).fit(corpus)
    adaptor.save(tmp_path / "a")
    torch_save_file(adaptor.to_torch().state_dict(), str(tmp_path / "torch.safetensors"))
    assert (tmp_path / "a" / "adaptor.safetensors").read_bytes() == (tmp_path / "torch.safetensors").read_bytes()
    meta = json.loads((tmp_path / "a" / "adaptor.json").read_text())
    assert meta["has_rotation"] and meta["hidden_dim"] == 32
    # and a file the torch writer made loads into the same function
    loaded = MatryoshkaAdaptor.load(tmp_path / "a")
    np.testing.assert_array_equal(loaded.transform(corpus[:50]), adaptor.transform(corpus[:50]))


def test_fitted_state_and_devices(tmp_path, corpus):
    unfitted = MatryoshkaAdaptor()
    assert not hasattr(unfitted, "model_")
    adaptor = MatryoshkaAdaptor(matryoshka_dims=(8,), epochs=1, batch_size=128, quiet=True).fit(corpus)
    adaptor.save(tmp_path / "a")
    for device in ("auto", "cpu"):
        loaded = MatryoshkaAdaptor.load(tmp_path / "a", device=device)
        assert hasattr(loaded, "model_") and isinstance(loaded.model_, NumpyResidualAdaptor)
        assert str(next(loaded.model_.parameters()).device) == "cpu"  # what `mindex info` reports
    with pytest.raises(InputError, match="unknown device"):
        MatryoshkaAdaptor.load(tmp_path / "a", device="gpu-please")
    module = adaptor.to_torch()
    assert isinstance(module, torch.nn.Module) and not module.training


def test_numpy_model_refuses_inconsistent_tensors():
    good = {k: np.zeros(s, np.float32) for k, s in expected_shapes(8, 4, True).items()}
    NumpyResidualAdaptor(good)
    with pytest.raises(ValueError, match="missing"):
        NumpyResidualAdaptor({k: v for k, v in good.items() if k != "mlp.0.bias"})
    with pytest.raises(ValueError, match="expected"):
        NumpyResidualAdaptor({**good, "rotation": np.zeros((8, 7), np.float32)})


def test_numpy_adaptor_keeps_its_weight_matrices_once():
    """The transposed copies the products use are the only copies (a loaded index held both: ~1.2 MB more)."""
    import gc
    import tracemalloc

    rng = np.random.default_rng(0)
    d, hidden = 256, 512
    shapes = {"mlp.0.weight": (hidden, d), "mlp.0.bias": (hidden,), "mlp.2.weight": (d, hidden), "mlp.2.bias": (d,)}
    weights_bytes = 2 * d * hidden * 4
    x = rng.standard_normal((5, d)).astype(np.float32)
    expected = {k: rng.standard_normal(shape).astype(np.float32) for k, shape in shapes.items()}
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        model = NumpyResidualAdaptor({k: v.copy() for k, v in expected.items()})  # the loader's arrays, dropped
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert held < 1.5 * weights_bytes, f"holds {held} bytes for {weights_bytes} bytes of weight matrices"
    state = model.state_dict()
    for k, v in expected.items():
        np.testing.assert_array_equal(state[k], v)
        assert state[k].flags.c_contiguous
    np.testing.assert_allclose(model.forward(x), NumpyResidualAdaptor(expected).forward(x), rtol=0, atol=0)
