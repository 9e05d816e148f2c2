"""The orthogonal parametrisation: the adaptor as a learned rotation after its start (torch, training only).

``f(e) = z Q`` with ``z`` the start (centred for a query head, PCA-rotated) and ``Q`` orthogonal
(torch's ``orthogonal`` parametrisation, starting at the identity). A rotation keeps every full-dim
inner product of the start exactly, so reranking with the adapted full vectors (``rerank="adapted"``)
loses nothing, and only the order of the directions, i.e. what each prefix holds, is learned. After
training :meth:`OrthogonalAdaptor.folded` multiplies ``Q`` into the stored rotation: the saved adaptor
is an ordinary :class:`~.torch_model.ResidualAdaptor` with a zero residual, the same file format.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrizations

from .torch_model import ResidualAdaptor

__all__ = ["OrthogonalAdaptor"]


class OrthogonalAdaptor(ResidualAdaptor):
    """A ``ResidualAdaptor`` whose residual stays zero (frozen) and which learns an orthogonal ``Q``."""

    def __init__(
        self,
        dim: int,
        rotation: torch.Tensor | None = None,
        centre: torch.Tensor | None = None,
        query_centre: torch.Tensor | None = None,
    ) -> None:
        super().__init__(dim, 1, rotation=rotation, centre=centre, query_centre=query_centre)
        for p in self.mlp.parameters():
            p.requires_grad_(False)
        self.turn = nn.Linear(dim, dim, bias=False)
        with torch.no_grad():
            self.turn.weight.copy_(torch.eye(dim))
        parametrizations.orthogonal(self.turn)

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        return self.turn(self.start(e))

    def forward_queries(self, e: torch.Tensor) -> torch.Tensor:
        return self.turn(self.start(e, queries=True))

    def reset_to_start(self) -> None:
        with torch.no_grad():
            self.turn.weight = torch.eye(self.dim, device=self.turn.weight.device)

    def folded(self) -> ResidualAdaptor:
        """The same function as a plain ``ResidualAdaptor`` (rotation ``R Q^T`` of ``nn.Linear``'s ``z W^T``)."""
        with torch.no_grad():
            turn = self.turn.weight.detach().T.to("cpu")
            rotation = turn if self.rotation is None else self.rotation.to("cpu") @ turn
            centres = {}
            if self.centre is not None:
                centres = {"centre": self.centre.to("cpu"), "query_centre": self.query_centre.to("cpu")}
            model = ResidualAdaptor(self.dim, 1, rotation=rotation.contiguous(), **centres)
            # the residual is dead (output layer zero); zero its first layer too, so the saved weights
            # do not depend on the global random state (same data and seed, same file)
            torch.nn.init.zeros_(model.mlp[0].weight)
            torch.nn.init.zeros_(model.mlp[0].bias)
        return model.eval()
