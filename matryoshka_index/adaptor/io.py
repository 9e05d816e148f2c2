"""Adaptor files: weights in safetensors, config and metadata in versioned JSON. No pickle.

Layout of an adaptor directory::

    adaptor.json          format, format_version, dims, training parameters, library version, checksum
    adaptor.safetensors   the tensors of ResidualAdaptor's state dict (float32; names and formula in
                          numpy_model.py: rotation, mlp.0.weight, mlp.0.bias, mlp.2.weight, mlp.2.bias)

Read and written with ``safetensors.numpy`` (the same bytes ``safetensors.torch`` writes for the same
float32 tensors), so loading an adaptor never imports torch.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file

from ..errors import FormatError
from ..storage import atomic_directory, read_versioned_json, sha256_file

FORMAT = "matryoshka-adaptor"
FORMAT_VERSION = 1
META_FILE = "adaptor.json"
WEIGHTS_FILE = "adaptor.safetensors"


def write_adaptor_dir(path: str | os.PathLike[str], tensors: dict[str, Any], meta: dict) -> None:
    """Write an adaptor directory atomically (a crash leaves any previous adaptor at ``path`` intact)."""
    with atomic_directory(path) as tmp:
        write_adaptor_files(tmp, tensors, meta)


def write_adaptor_files(directory: Path, tensors: dict[str, Any], meta: dict) -> None:
    """Write the two adaptor files into an existing (temporary) directory."""
    weights = directory / WEIGHTS_FILE
    save_file({k: as_numpy(v) for k, v in tensors.items()}, str(weights))
    meta = {**meta, "format": FORMAT, "format_version": FORMAT_VERSION, "weights_sha256": sha256_file(weights)}
    (directory / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")


def read_adaptor_dir(path: str | os.PathLike[str]) -> tuple[dict[str, np.ndarray], dict]:
    """Read and check an adaptor directory; every failure is a one-line :class:`FormatError`."""
    path = Path(path)
    if not path.is_dir():
        raise FormatError(f"{path}: not an adaptor directory (expected a folder with {META_FILE} and {WEIGHTS_FILE})")
    meta = read_versioned_json(path / META_FILE, kind=FORMAT, supported_versions=(FORMAT_VERSION,))
    weights = path / WEIGHTS_FILE
    if not weights.is_file():
        raise FormatError(f"{weights}: missing; the adaptor directory is incomplete")
    if meta.get("weights_sha256") and sha256_file(weights) != meta["weights_sha256"]:
        raise FormatError(f"{weights}: checksum does not match {META_FILE}; the file is corrupt or was replaced")
    try:
        tensors = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as exc:
        raise FormatError(f"{weights}: not a readable safetensors file ({exc})") from None
    return tensors, meta


def as_numpy(tensor: Any) -> np.ndarray:
    """A C-contiguous numpy array of a numpy array or a torch tensor (on any device), without importing torch."""
    if hasattr(tensor, "detach"):
        tensor = tensor.detach().to("cpu").numpy()
    return np.ascontiguousarray(tensor)
