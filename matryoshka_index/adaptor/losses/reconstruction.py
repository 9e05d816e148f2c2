"""Reconstruction loss (Matryoshka-Adaptor, Yoon et al. 2024, eq. 3)."""

from __future__ import annotations

import torch


def reconstruction_loss(target: torch.Tensor, adapted: torch.Tensor) -> torch.Tensor:
    r"""Mean L2 distance between the adapted vector and its starting point.

    .. math::
        L_{rec} = \frac{1}{B} \sum_i \left\lVert f(e_i) - e_i \right\rVert_2

    Keeps the full-dimension adapted vector close to the original, so the residual MLP only
    reorders information into the prefix instead of rewriting the embedding space. With a
    PCA rotation ``R`` the starting point is ``R e`` (the rotation itself preserves every
    full-dim inner product), so ``target`` is ``R e`` there.
    """
    return (adapted - target).norm(dim=1).mean()
