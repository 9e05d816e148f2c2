"""Quantization-aware listwise loss: the prefix's neighbour order, scored through a relaxed coarse code."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ._similarity import cosine_matrix

CODES = ("binary", "sq8", "sq4")


def relaxed_code(x: torch.Tensor, code: str, beta: float = 3.0) -> torch.Tensor:
    r"""A differentiable stand-in for coding each row of ``x`` (``(B, m)``).

    * ``binary``: :math:`\tanh(\beta x / \sigma)`, with :math:`\sigma` the root mean square of the
      batch's coordinates (no gradient through it); tends to ``sign(x)`` as :math:`\beta` grows.
    * ``sq8`` / ``sq4``: a uniform scalar quantizer per dimension over the batch's range
      :math:`[l_d, h_d]` (as FAISS trains ``QT_8bit`` / ``QT_4bit``), with :math:`2^b` levels,
      :math:`\Delta_d = (h_d - l_d) / (2^b - 1)`, :math:`q(x) = l_d + \Delta_d
      \,\mathrm{round}((x - l_d) / \Delta_d)`, and a straight-through gradient:
      :math:`x + (q(x) - x)` with the bracket detached, so the forward pass sees the code and the
      backward pass the identity.
    """
    if code == "binary":
        sigma = x.detach().pow(2).mean().sqrt().clamp_min(1e-12)
        return torch.tanh(beta * x / sigma)
    if code not in ("sq8", "sq4"):
        raise ValueError(f"code must be one of {CODES}, got {code!r}")
    levels = 2 ** (8 if code == "sq8" else 4) - 1
    lo = x.detach().min(dim=0).values
    step = ((x.detach().max(dim=0).values - lo) / levels).clamp_min(1e-12)
    q = lo + step * torch.round((x.detach() - lo) / step)
    return x + (q - x).detach()


def quantized_listwise_loss(
    original: torch.Tensor,
    adapted: torch.Tensor,
    dims: Sequence[int],
    code: str,
    temperature: float = 0.05,
    beta: float = 3.0,
) -> torch.Tensor:
    r"""KL divergence between each item's softmax over the batch at full dimension and its softmax from coded prefixes.

    .. math::
        L_{q} = \frac{1}{|M|} \sum_{m \in M} \frac{1}{B} \sum_i
        \mathrm{KL}\left( \mathrm{softmax}_j\!\left(\frac{\cos(e_i, e_j)}{\tau}\right) \,\middle\|\,
        \mathrm{softmax}_j\!\left(\frac{\cos(a_i^{(m)}, c(f(e_j)_{:m}))}{\tau}\right) \right), \quad j \neq i

    with :math:`c` the relaxed code of :func:`relaxed_code` (computed per prefix ``m`` over the
    batch) and :math:`a_i^{(m)}` the query side as the coarse search sees it: coded as well for
    ``binary`` (Hamming compares two codes), the float prefix :math:`f(e_i)_{:m}` for scalar codes
    (FAISS scores a float query against the codes). The plain listwise term keeps the float
    prefix's neighbour order; this one keeps the order that survives the code, which is what the
    coarse stage of a coded index ranks by.
    """
    n = original.shape[0]
    diag = torch.eye(n, dtype=torch.bool, device=original.device)
    target = F.softmax((cosine_matrix(original) / temperature).masked_fill(diag, float("-inf")), dim=1)
    losses = []
    for m in dims:
        prefix = adapted[:, :m]
        coded = relaxed_code(prefix, code, beta)
        query = coded if code == "binary" else prefix
        logits = (cosine_matrix(query, coded) / temperature).masked_fill(diag, float("-inf"))
        log_q = F.log_softmax(logits, dim=1).masked_fill(diag, 0.0)
        losses.append(F.kl_div(log_q, target, reduction="batchmean"))
    return torch.stack(losses).mean()
