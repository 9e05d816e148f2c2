"""The adaptor as a sentence-transformers module: ``model.encode(...)`` returns adapted vectors.

Append it to a ``SentenceTransformer`` (after pooling and, if the model has one, ``Normalize``: the
adaptor must see the embeddings it was trained on)::

    from sentence_transformers import SentenceTransformer
    model = SentenceTransformer("all-MiniLM-L6-v2")
    model.append(adaptor.to_sentence_transformers())
    model.encode(texts)                                   # = adaptor.transform(<the model's own output>)
    model.encode(texts, truncate_dim=64)                  # = the Matryoshka prefix, adaptor.transform(e, dim=64)
    model.save("minilm-adapted/")
    SentenceTransformer("minilm-adapted/", trust_remote_code=True)   # loads it back (>= 6 asks for the flag
                                                          # for any module class outside its own package)

The module's folder in a saved model is an ordinary adaptor directory (``adaptor.json`` +
``adaptor.safetensors``), so ``MatryoshkaAdaptor.load("minilm-adapted/N_MatryoshkaAdaptorModule")``
reads it too. ``load`` takes the folder path only: the old-style custom-module signature that every
sentence-transformers version since 3 calls with the module's local folder.
This module imports torch (sentence-transformers runs on it); nothing else in the package imports it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import FormatError
from .io import read_adaptor_dir, write_adaptor_files
from .numpy_model import expected_shapes
from .torch_model import ResidualAdaptor

__all__ = ["MatryoshkaAdaptorModule"]


class MatryoshkaAdaptorModule(nn.Module):
    """Applies the adaptor to ``features["sentence_embedding"]``; made by ``MatryoshkaAdaptor.to_sentence_transformers()``.

    ``tensors``: the adaptor's weights by their safetensors names; ``metadata``: its ``adaptor.json``
    (written back by :meth:`save`, so the folder stays a loadable adaptor directory).
    """

    def __init__(self, tensors: dict[str, Any], metadata: dict[str, Any]) -> None:
        super().__init__()
        self.model = ResidualAdaptor.from_tensors(tensors)  # a submodule: SentenceTransformer.to(device) moves it
        self.metadata = dict(metadata)

    def forward(self, features: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        emb = features["sentence_embedding"]
        features["sentence_embedding"] = self.model(emb.to(torch.float32)).to(emb.dtype)
        return features

    def get_sentence_embedding_dimension(self) -> int:
        return int(self.model.dim)

    get_embedding_dimension = get_sentence_embedding_dimension

    def save(self, output_path: str, *args: Any, **kwargs: Any) -> None:
        """Write the adaptor files (safetensors + JSON, as ``MatryoshkaAdaptor.save``) into ``output_path``."""
        os.makedirs(output_path, exist_ok=True)
        write_adaptor_files(Path(output_path), self.model.state_dict(), self.metadata)  # it converts each tensor

    @classmethod
    def load(cls, input_path: str) -> MatryoshkaAdaptorModule:
        """The module saved in folder ``input_path`` (checked as ``MatryoshkaAdaptor.load`` checks an adaptor)."""
        tensors, meta = read_adaptor_dir(input_path)
        try:
            want = expected_shapes(int(meta["input_dim"]), int(meta["hidden_dim"]), bool(meta["has_rotation"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise FormatError(f"{input_path}: adaptor metadata is incomplete ({exc}); the file is corrupt") from None
        found = {k: tuple(v.shape) for k, v in sorted(tensors.items())}
        if found != want:
            raise FormatError(f"{input_path}: weights do not match the metadata (expected {want}, found {found})")
        return cls(tensors, meta)

    def __repr__(self) -> str:
        return f"MatryoshkaAdaptorModule(dim={self.model.dim}, hidden_dim={self.model.hidden_dim})"
