"""Export a fitted adaptor as an ONNX graph, built from its numpy weights with ``onnx.helper`` (no torch).

One graph per prefix length: the prefix length ``dim`` (and whether the prefix is L2-normalised) is
fixed at export time, so every runtime gets a plain ``float32 [batch, d] -> float32 [batch, dim]``
function with no integer inputs. Export one file per prefix length you query with.

The graph (opset 17, IR version 8: onnxruntime >= 1.16 runs it) computes exactly the formula of
:mod:`.numpy_model`::

    embeddings [batch, d]
    z = embeddings @ rotation                      (skipped without a rotation)
    h = z @ W1^T + b1;  g = h * (1 + erf(h / sqrt 2)) / 2
    y = z + g @ W2^T + b2                          (skipped for a PCARotation: y = z)
    adapted = y[:, :dim]                           (and / max(||.||_2, 1e-12) with normalize=True,
                                                    as the index does to coarse vectors of a cosine index)

Inputs and outputs: ``embeddings`` (float32, ``[batch, d]``, ``batch`` dynamic) -> ``adapted``
(float32, ``[batch, dim]``). The model's metadata (``metadata_props``) records ``input_dim``,
``dim``, ``normalize``, the adaptor kind and the library version.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from .._version import __version__
from ..errors import InputError, MatryoshkaError
from ..storage import atomic_write_bytes
from ..validation import check_positive_int
from .io import as_numpy

__all__ = ["OPSET", "adaptor_tensors", "build_onnx_model", "export_onnx"]

OPSET = 17
IR_VERSION = 8  # onnxruntime 1.16 reads IR <= 9; onnx.helper would otherwise stamp its newest one
NORM_EPS = 1e-12  # validation.l2_normalize's floor


def _onnx() -> Any:
    try:
        import onnx
    except ImportError:
        raise MatryoshkaError('ONNX export needs the onnx package: pip install "matryoshka-index[onnx]"') from None
    return onnx


def adaptor_tensors(adaptor: Any) -> tuple[dict[str, np.ndarray], int, str]:
    """``(tensors, input_dim, kind)`` of a fitted adaptor, a :class:`PCARotation`, or ``None`` (identity).

    ``tensors`` holds float32 arrays under the safetensors names (``rotation``, ``mlp.0.weight``, ...).
    """
    from .estimator import MatryoshkaAdaptor
    from .pca import PCARotation

    if isinstance(adaptor, MatryoshkaAdaptor):
        if adaptor.has_query_head_:  # one graph per head would be needed; not written yet
            raise InputError(
                "export: this adaptor has a query head (fitted with queries); ONNX export covers adaptors "
                "without one so far: refit with query_head=False to export"
            )
        state = adaptor.model_.state_dict()
        tensors = {k: as_numpy(v).astype(np.float32) for k, v in state.items()}
        return tensors, int(adaptor.input_dim_), "matryoshka-adaptor"
    if isinstance(adaptor, PCARotation):
        adaptor.check_is_fitted()
        rot = np.asarray(adaptor.rotation_, dtype=np.float32)
        return {"rotation": rot}, int(rot.shape[0]), "pca"
    raise InputError(f"export: expected a fitted MatryoshkaAdaptor or PCARotation, got {type(adaptor).__name__}")


def build_onnx_model(
    tensors: dict[str, np.ndarray],
    input_dim: int,
    *,
    dim: int | None = None,
    normalize: bool = False,
    metadata: dict[str, str] | None = None,
) -> Any:
    """The ONNX ``ModelProto`` of ``f`` for these tensors (see the module docstring); checked with ``onnx.checker``."""
    onnx = _onnx()
    from onnx import TensorProto, helper, numpy_helper

    out_dim = input_dim if dim is None else check_positive_int(dim, "dim")
    if out_dim > input_dim:
        raise InputError(f"dim: {out_dim} exceeds the adaptor's dimension {input_dim}")
    inits: list[Any] = []
    nodes: list[Any] = []

    def const(name: str, value: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def node(op: str, inputs: list[str], out: str, **attrs: Any) -> str:
        nodes.append(helper.make_node(op, inputs, [out], name=out, **attrs))
        return out

    z = "embeddings"
    if "rotation" in tensors:
        z = node("MatMul", [z, const("rotation", tensors["rotation"])], "z")
    y = z
    if "mlp.0.weight" in tensors:
        h = node("MatMul", [z, const("w1t", tensors["mlp.0.weight"].T)], "h_mm")
        h = node("Add", [h, const("b1", tensors["mlp.0.bias"])], "h")
        e = node("Mul", [h, const("inv_sqrt2", np.array(1.0 / np.sqrt(2.0), np.float32))], "h_scaled")
        e = node("Erf", [e], "erf")
        e = node("Add", [e, const("one", np.array(1.0, np.float32))], "erf_plus_1")
        g = node("Mul", [h, e], "h_erf")
        g = node("Mul", [g, const("half", np.array(0.5, np.float32))], "gelu")
        r = node("MatMul", [g, const("w2t", tensors["mlp.2.weight"].T)], "r_mm")
        r = node("Add", [r, const("b2", tensors["mlp.2.bias"])], "residual")
        y = node("Add", [z, r], "y")
    if out_dim < input_dim or y == "embeddings":
        starts, ends = const("starts", np.array([0], np.int64)), const("ends", np.array([out_dim], np.int64))
        y = node("Slice", [y, starts, ends, const("axes", np.array([1], np.int64))], "prefix")
    if normalize:
        norm = node("ReduceL2", [y], "norm", axes=[1], keepdims=1)
        norm = node("Max", [norm, const("eps", np.array(NORM_EPS, np.float32))], "norm_floor")
        y = node("Div", [y, norm], "normalized")
    nodes[-1].output[0] = "adapted"
    nodes[-1].name = "adapted"
    graph = helper.make_graph(
        nodes,
        "matryoshka_adaptor",
        [helper.make_tensor_value_info("embeddings", TensorProto.FLOAT, ["batch", input_dim])],
        [helper.make_tensor_value_info("adapted", TensorProto.FLOAT, ["batch", out_dim])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="matryoshka-index")
    model.producer_version = __version__
    model.ir_version = IR_VERSION
    meta = {"input_dim": str(input_dim), "dim": str(out_dim), "normalize": str(bool(normalize)).lower()}
    helper.set_model_props(model, {**meta, **(metadata or {})})
    onnx.checker.check_model(model)
    return model


def export_onnx(adaptor: Any, path: str | os.PathLike[str], *, dim: int | None = None, normalize: bool = False) -> Path:
    """Write ``adaptor`` (fitted :class:`MatryoshkaAdaptor`, :class:`PCARotation`) as an ONNX file, atomically.

    ``dim``: the prefix length of the output (default: the full dimension). ``normalize``: L2-normalise
    that prefix, as a cosine index does to the coarse query vector. Returns the path written.
    """
    tensors, input_dim, kind = adaptor_tensors(adaptor)
    model = build_onnx_model(
        tensors, input_dim, dim=dim, normalize=normalize, metadata={"adaptor": kind, "library_version": __version__}
    )
    path = Path(path)
    atomic_write_bytes(path, model.SerializeToString())
    return path
