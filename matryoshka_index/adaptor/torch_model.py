"""The adaptor network in torch (training, CUDA): ``f(e) = e + MLP(e)``, optionally behind a fixed rotation.

Imported only where torch is wanted; :mod:`.numpy_model` applies the same weights without it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = ["ResidualAdaptor"]


class ResidualAdaptor(nn.Module):
    """Residual MLP of the Matryoshka-Adaptor paper, identity at initialisation.

    ``f(e) = z + MLP(z)`` with ``z = e @ R`` when a rotation ``R`` (``d x d``, orthogonal, columns
    ordered by importance, e.g. PCA directions) is given, else ``z = e``. The MLP's output layer
    starts at zero, so before training ``f`` is exactly the identity (or the rotation): training
    can only move away from a known-good starting point. An orthogonal ``R`` keeps every full-dim
    inner product, so the rotation alone loses nothing at full dimension.
    """

    def __init__(
        self,
        dim: int,
        hidden_dim: int,
        rotation: torch.Tensor | None = None,
        centre: torch.Tensor | None = None,
        query_centre: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        self.dim = dim
        self.hidden_dim = hidden_dim
        if rotation is not None:
            if rotation.shape != (dim, dim):
                raise ValueError(f"rotation must be {dim}x{dim}, got {tuple(rotation.shape)}")
            self.register_buffer("rotation", rotation.to(torch.float32).contiguous())
        else:
            self.rotation = None
        # The query head (optional, both or neither): documents are centred on the corpus mean and
        # queries on the queries' own mean before the rotation, so a constant offset between the two
        # (an asymmetric model's query/passage prefixes, another language) no longer fills the prefix.
        if (centre is None) != (query_centre is None):
            raise ValueError("centre and query_centre go together")
        if centre is not None:
            self.register_buffer("centre", centre.to(torch.float32).reshape(dim).contiguous())
            self.register_buffer("query_centre", query_centre.to(torch.float32).reshape(dim).contiguous())
        else:
            self.centre = self.query_centre = None
        self.mlp = nn.Sequential(nn.Linear(dim, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, dim))
        nn.init.zeros_(self.mlp[2].weight)
        nn.init.zeros_(self.mlp[2].bias)

    @classmethod
    def from_tensors(cls, tensors: dict[str, Any]) -> ResidualAdaptor:
        """A module (eval mode, CPU) holding these tensors (numpy arrays or tensors, the state dict's names)."""
        state = {k: _cpu_float32(v) for k, v in tensors.items()}
        dim, hidden = (int(s) for s in state["mlp.2.weight"].shape)
        centres = {k: torch.zeros(dim) for k in ("centre", "query_centre") if k in state}
        model = cls(dim, hidden, rotation=torch.zeros(dim, dim) if "rotation" in state else None, **centres)
        model.load_state_dict(state)
        return model.eval()

    def reset_to_start(self) -> None:
        """Zero the residual's output layer: ``f`` is its starting point again (the rotation or identity)."""
        with torch.no_grad():
            self.mlp[2].weight.zero_()
            self.mlp[2].bias.zero_()

    @property
    def has_query_head(self) -> bool:
        return self.centre is not None

    def start(self, e: torch.Tensor, *, queries: bool = False) -> torch.Tensor:
        """The starting point ``z`` (``e`` centred when there is a query head, then rotated) of the residual."""
        if self.centre is not None:
            e = e - (self.query_centre if queries else self.centre)
        return e @ self.rotation if self.rotation is not None else e

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        """Documents (and queries of an adaptor without a query head)."""
        z = self.start(e)
        return z + self.mlp(z)

    def forward_queries(self, e: torch.Tensor) -> torch.Tensor:
        """Queries: the query head's centre, then the residual the documents share."""
        z = self.start(e, queries=True)
        return z + self.mlp(z)


def _cpu_float32(value: Any) -> torch.Tensor:
    """A float32 CPU tensor from a numpy array or a tensor on any device (a CUDA-trained state dict)."""
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", torch.float32).clone()
    return torch.as_tensor(np.array(value, dtype=np.float32))
