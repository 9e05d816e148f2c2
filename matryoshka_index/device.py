"""One device choice for the whole pipeline: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.

:func:`resolve_device` turns the user's string into a :class:`Device`: the torch device the adaptor
and the torch coarse engine use, whether faiss-gpu can serve the coarse stage on that GPU, the GPU's
index and its name. ``"auto"`` means GPU 0 when one is visible (to torch or to faiss-gpu), else the
CPU, silently; an explicit ``"cuda"`` with no GPU visible is an :class:`~.errors.InputError` that says
what to do. torch and faiss are imported only inside :func:`resolve_device`, so importing this module
costs nothing and works without torch.
"""

from __future__ import annotations

import contextlib
import re
import sys
from dataclasses import dataclass
from typing import Any

from .errors import InputError

DEVICE_CHOICES = ("auto", "cpu", "cuda", "cuda:N")
_CUDA = re.compile(r"^(?:cuda|gpu)(?::(\d+))?$")


@dataclass(frozen=True)
class Device:
    """Where the pipeline runs.

    ``torch_device``: ``"cpu"`` or ``"cuda:N"`` (the adaptor and the torch coarse engine);
    ``faiss_gpu``: faiss-gpu is installed and sees GPU ``gpu_index`` (the coarse stage can use it);
    ``gpu_index``: the GPU's ordinal, ``None`` on the CPU; ``name``: the GPU's name or ``"cpu"``.
    """

    torch_device: str
    faiss_gpu: bool
    gpu_index: int | None
    name: str

    @property
    def is_cuda(self) -> bool:
        """Whether this is a GPU (torch, faiss-gpu or both can use it)."""
        return self.gpu_index is not None

    def __str__(self) -> str:
        return self.torch_device if self.gpu_index is None else f"cuda:{self.gpu_index} ({self.name})"


CPU = Device(torch_device="cpu", faiss_gpu=False, gpu_index=None, name="cpu")


def _torch_gpus(import_torch: bool = True) -> tuple[int, Any]:
    """(GPUs torch sees, the torch module or None). Never raises: no torch means no torch GPU.

    ``import_torch=False`` asks only a torch this process has already imported (importing torch
    costs seconds, which a CPU-only ``load`` + ``search`` should not pay just to look for a GPU).
    """
    if not import_torch and "torch" not in sys.modules:
        return 0, None
    try:
        import torch
    except ImportError:
        return 0, None
    try:
        return (int(torch.cuda.device_count()) if torch.cuda.is_available() else 0), torch
    except Exception:  # a broken CUDA driver reads as "no GPU", not as a crash
        return 0, torch


def faiss_gpu_count() -> int:
    """GPUs faiss-gpu sees (0 with faiss-cpu, without faiss, or on a broken CUDA set-up)."""
    try:
        import faiss
    except ImportError:
        return 0
    if not hasattr(faiss, "StandardGpuResources"):
        return 0
    with contextlib.suppress(Exception):
        return int(faiss.get_num_gpus())
    return 0


def resolve_device(device: str | Device = "auto", *, import_torch: bool = True) -> Device:
    """The :class:`Device` for ``"auto"`` | ``"cpu"`` | ``"cuda"`` | ``"cuda:N"`` (``"gpu"`` is an alias of ``"cuda"``).

    ``"auto"``: GPU 0 when torch or faiss-gpu sees one, else the CPU (no error, no warning).
    ``"cuda"`` / ``"cuda:N"``: that GPU, or an :class:`InputError` when it is not visible.
    A :class:`Device` is returned unchanged. ``import_torch=False``: for ``"auto"``, ask torch only
    when this process has imported it already (an explicit ``"cuda"`` always asks).
    """
    if isinstance(device, Device):
        return device
    if not isinstance(device, str):
        raise InputError(f"device: expected a string such as 'auto', 'cpu' or 'cuda:0', got {device!r}")
    text = device.strip().lower()
    if text == "cpu":
        return CPU
    match = _CUDA.match(text)
    if text != "auto" and match is None:
        raise InputError(f"device: unknown device {device!r}; use 'auto', 'cpu', 'cuda' or 'cuda:N'")
    index = int(match.group(1)) if match is not None and match.group(1) is not None else 0
    n_torch, torch = _torch_gpus(import_torch or text != "auto")
    n_faiss = faiss_gpu_count()
    visible = max(n_torch, n_faiss)
    if index >= visible:
        if text == "auto":
            return CPU
        if visible == 0:
            why = "torch sees no CUDA GPU" if torch is not None else "torch is not installed"
            raise InputError(
                f"device: {device!r} was asked for but no GPU is visible ({why}; faiss-gpu sees none); "
                "use device='cpu' or 'auto', or install the CUDA build of torch (or faiss-gpu) on a GPU machine"
            )
        raise InputError(
            f"device: {device!r} asks for GPU {index} but only {visible} GPU(s) are visible "
            f"(cuda:0 to cuda:{visible - 1}); pick one of those or use device='auto'"
        )
    on_torch = index < n_torch
    name = f"GPU {index}"
    if on_torch:
        with contextlib.suppress(Exception):
            name = str(torch.cuda.get_device_name(index))
    return Device(
        torch_device=f"cuda:{index}" if on_torch else "cpu",
        faiss_gpu=index < n_faiss,
        gpu_index=index,
        name=name,
    )


__all__ = ["CPU", "DEVICE_CHOICES", "Device", "faiss_gpu_count", "resolve_device"]
