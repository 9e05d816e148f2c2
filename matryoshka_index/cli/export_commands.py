"""``mindex export``: an adaptor (or an index's adaptor) as an ONNX file, for queries from any language."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from ..errors import FormatError, InputError
from ._common import file_option, user_errors


def _source(path: Path) -> tuple[Any, dict[str, Any]]:
    """(adaptor, defaults) of an adaptor directory (trained or PCA) or of an index directory.

    An index gives its own query settings as defaults: the coarse prefix length, and L2
    normalisation when its metric is cosine (what the index does to the coarse query vector).
    """
    from ..adaptor import MatryoshkaAdaptor
    from ..adaptor.io import META_FILE
    from ..adaptor.pca import PCARotation
    from ..manifest import ADAPTOR_DIR, MANIFEST_FILE, is_index_directory, read_manifest

    if (path / META_FILE).is_file():
        return MatryoshkaAdaptor.load(path, device="cpu"), {}
    if (path / PCARotation.META_FILE).is_file():
        return PCARotation.load(path), {}
    if is_index_directory(path):
        manifest = read_manifest(path, verify=False)  # the adaptor files are checked by their own loader
        kind = (manifest.get("adaptor") or {}).get("kind")
        if kind in (None, "none"):
            raise InputError(
                f"{path}: this index has no adaptor (its coarse vector is the plain prefix); nothing to export"
            )
        try:
            defaults = {"dim": int(manifest["coarse_dim"]), "normalize": manifest.get("metric") == "cosine"}
        except (KeyError, TypeError, ValueError) as exc:
            raise FormatError(f"{path / MANIFEST_FILE}: not a readable index manifest ({exc})") from None
        return _source(path / ((manifest.get("adaptor") or {}).get("directory") or ADAPTOR_DIR))[0], defaults
    raise InputError(
        f"{path}: neither an adaptor directory ({META_FILE} or {PCARotation.META_FILE}) nor an index directory "
        f"({MANIFEST_FILE}); give what mindex train or mindex build wrote"
    )


@click.command("export")
@click.argument("source", metavar="ADAPTOR", type=click.Path(file_okay=False))
@file_option("-o", "--output", required=True, help="The .onnx file to write.")
@click.option(
    "--dim", type=int, help="Prefix length of the output [default: an index's coarse dim, else the full dim]."
)
@click.option(
    "--normalize/--no-normalize",
    default=None,
    help="L2-normalise the output prefix [default: on for a cosine index, off for an adaptor directory].",
)
@user_errors
def export_command(source, output, dim, normalize):
    """Write ADAPTOR (an adaptor directory, or an index directory's adaptor) as an ONNX graph.

    One graph per prefix length: float32 `embeddings` [batch, d] in, float32 `adapted` [batch, dim] out
    (opset 17; onnxruntime >= 1.16). Needs the onnx extra: pip install "matryoshka-index[onnx]".
    """
    from ..adaptor.onnx_export import export_onnx

    if Path(output).suffix.lower() != ".onnx":
        raise InputError(f"--output ({output}): expected a .onnx file name")
    adaptor, defaults = _source(Path(source))
    dim = defaults.get("dim") if dim is None else dim
    normalize = bool(defaults.get("normalize", False)) if normalize is None else normalize
    written = export_onnx(adaptor, output, dim=dim, normalize=normalize)
    out_dim = dim if dim is not None else adaptor.input_dim_
    click.echo(
        json.dumps({"written": str(written), "input_dim": adaptor.input_dim_, "dim": out_dim, "normalize": normalize})
    )


COMMANDS = [export_command]
