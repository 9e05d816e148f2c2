"""Cosine-similarity matrices of matryoshka prefixes, shared by the losses."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def cosine_matrix(a: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
    """``cos(a_i, b_j)`` for all i, j (``b = a`` when omitted)."""
    a = F.normalize(a, dim=-1)
    b = a if b is None else F.normalize(b, dim=-1)
    return a @ b.T
