"""ResidualAdaptor.from_tensors takes a trained module's own tensors: requiring grad, on any device."""

from __future__ import annotations

import pytest
import torch

from matryoshka_index.adaptor.torch_model import ResidualAdaptor


def _trained(device: str = "cpu") -> ResidualAdaptor:
    """A module as training leaves it: parameters that require grad, an output layer moved off zero."""
    gen = torch.Generator().manual_seed(0)
    rotation, _ = torch.linalg.qr(torch.randn(16, 16, generator=gen))
    model = ResidualAdaptor(16, 8, rotation=rotation)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    return model.to(device)


def _state(model: ResidualAdaptor) -> dict[str, torch.Tensor]:
    return {k: p for k, p in model.named_parameters()} | {k: b for k, b in model.named_buffers()}


@pytest.mark.parametrize(
    "device",
    ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="torch sees no GPU"))],
)
def test_from_tensors_of_parameters_that_require_grad_gives_the_same_outputs(device):
    """Before 0cc02d7 this input raised (numpy() of a tensor that requires grad, or on a GPU)."""
    model = _trained(device).eval()
    state = _state(model)
    assert any(t.requires_grad for t in state.values()) and "rotation" in state
    clone = ResidualAdaptor.from_tensors(state)
    e = torch.randn(32, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = model(e.to(device)).cpu()
        got = clone(e)
    assert not torch.equal(expected, model.start(e.to(device)).cpu())  # the MLP does something
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    assert all(p.device.type == "cpu" and p.dtype == torch.float32 for p in clone.parameters())
    with torch.no_grad():
        next(model.parameters()).add_(1.0)  # the clone holds copies, not the trained module's storage
    torch.testing.assert_close(clone(e), got)
