"""One device for an index's stages: where the adaptor, the coarse search and the rerank run.

``MatryoshkaIndex.build/load(..., device=...)`` resolve the device once
(:func:`matryoshka_index.device.resolve_device`) and use it three ways:

* the **adaptor** trains and transforms on its torch device (``adaptor="train"`` or a loaded adaptor);
* the **FAISS coarse stage** runs on the GPU through faiss-gpu when it sees that GPU (the backend's own
  ``device`` option); when the device is a CUDA GPU that faiss cannot use (faiss-cpu installed) and
  the coarse index is flat, :func:`attach_device` wraps the backend in
  :class:`~matryoshka_index.backends.torch_stages.TorchStages`, which runs the coarse stage and the
  **rerank** there with the torch engine (the index's files stay the FAISS backend's own);
* everything else stays on the CPU, silently; ``info()["stages"]`` says where each stage runs.
"""

from __future__ import annotations

from typing import Any

from ..backends.torch_stages import TorchStages, can_mirror
from ..device import CPU, Device, resolve_device
from ..errors import InputError
from .parts import Adaptor

ENGINES = ("auto", "faiss", "torch")
LEGACY_FAISS_DEVICES = ("gpu",)  # FaissBackend's own spelling: "GPU when one works, else the CPU"


def resolve_index_device(device: str | Device) -> tuple[Device, str, str]:
    """``(device, FAISS backend device option, adaptor device)`` for an index's ``device`` argument.

    ``"auto"`` does not import torch to look for a GPU (a loaded adaptor applies without torch where
    it can; the torch engine then serves only a process that has torch loaded already), and hands
    the adaptor its own ``"auto"``. The FAISS backend's older ``"gpu"`` means "the GPU when one works".
    """
    text = device.strip().lower() if isinstance(device, str) else None
    if text in LEGACY_FAISS_DEVICES or text == "auto":
        return resolve_device("auto", import_torch=False), ("gpu" if text == "gpu" else "auto"), "auto"
    dev = resolve_device(device)
    return dev, ("gpu" if dev.faiss_gpu else "cpu"), dev.torch_device


def attach_device(backend: Any, device: Device, *, engine: str = "auto") -> Any:
    """``backend`` as the index should use it on ``device``: wrapped in :class:`TorchStages` when the torch
    engine is to serve it, else unchanged.

    ``engine="auto"``: the torch engine for a FAISS flat index on a CUDA device that faiss-gpu cannot
    use; ``"torch"``: whenever the backend is FAISS flat (on any device, the CPU included: how the
    torch path is tested here); ``"faiss"``: never.
    """
    if engine not in ENGINES:
        raise InputError(f"engine: unknown coarse engine {engine!r}; choose one of {', '.join(ENGINES)}")
    if isinstance(backend, TorchStages):
        backend = backend.inner
    flat_faiss = can_mirror(backend)
    if engine == "faiss" or not flat_faiss:
        if engine == "torch" and not flat_faiss:
            raise InputError("engine: the torch engine serves FAISS flat coarse indexes only; use index='flat'")
        return backend
    if engine == "torch" or (device.torch_device.startswith("cuda") and not device.faiss_gpu):
        return TorchStages(backend, device.torch_device)
    return backend


def stages(
    adaptor: Adaptor, rerank: str | None, backend_info: dict[str, Any], adaptor_facts: dict[str, Any]
) -> dict[str, Any]:
    """Where each stage of an index runs (``info()["stages"]``), and where its adaptor was trained."""
    kind = backend_info.get("backend")
    out: dict[str, Any] = {}
    if adaptor_facts.get("kind") == "matryoshka-adaptor":
        meta = adaptor.metadata_ or {}  # type: ignore[union-attr]  # the kind says it is a MatryoshkaAdaptor
        out["adaptor_training"] = meta.get("training", {}).get("device")
    if adaptor_facts.get("kind") != "none":
        out["adaptor"] = adaptor_facts.get("device", "cpu")
    out["coarse"] = backend_info.get("device")
    if rerank is None:
        out["rerank"] = "none (prefix only: rerank=None)"
    elif kind == "faiss":
        out["rerank"] = backend_info.get("rerank_device", "cpu")
    else:
        out["rerank"] = "the Qdrant engine (server side or embedded)"
    return out


__all__ = ["CPU", "ENGINES", "attach_device", "resolve_index_device", "stages"]
