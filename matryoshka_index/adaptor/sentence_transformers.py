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

from .estimator import MatryoshkaAdaptor
from .io import write_adaptor_files

__all__ = ["MatryoshkaAdaptorModule"]


class MatryoshkaAdaptorModule(nn.Module):
    """Applies a fitted :class:`MatryoshkaAdaptor` to ``features["sentence_embedding"]``."""

    def __init__(self, adaptor: MatryoshkaAdaptor) -> None:
        super().__init__()
        adaptor._check_fitted()
        self.adaptor = adaptor  # metadata for save; the weights live in self.model (moved by .to(device))
        self.model = adaptor.to_torch("cpu")

    def forward(self, features: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        emb = features["sentence_embedding"]
        features["sentence_embedding"] = self.model(emb.to(torch.float32)).to(emb.dtype)
        return features

    def get_sentence_embedding_dimension(self) -> int:
        return int(self.adaptor.input_dim_)

    get_embedding_dimension = get_sentence_embedding_dimension

    def save(self, output_path: str, *args: Any, **kwargs: Any) -> None:
        """Write the adaptor files (safetensors + JSON, as :meth:`MatryoshkaAdaptor.save`) into ``output_path``."""
        state = {k: v.detach().cpu() for k, v in self.model.state_dict().items()}
        os.makedirs(output_path, exist_ok=True)
        write_adaptor_files(Path(output_path), state, self.adaptor.metadata_)

    @classmethod
    def load(cls, input_path: str) -> MatryoshkaAdaptorModule:
        return cls(MatryoshkaAdaptor.load(input_path, device="cpu"))

    def __repr__(self) -> str:
        return (
            f"MatryoshkaAdaptorModule(dim={self.adaptor.input_dim_}, matryoshka_dims={self.adaptor.matryoshka_dims_})"
        )
