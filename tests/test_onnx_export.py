"""``mindex export`` / ``export_onnx``: the ONNX graph, run by onnxruntime, matches the library to 1e-5."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import make_corpus

from matryoshka_index import MatryoshkaAdaptor, MatryoshkaIndex
from matryoshka_index.adaptor.pca import PCARotation
from matryoshka_index.cli import main
from matryoshka_index.validation import l2_normalize

ort = pytest.importorskip(
    "onnxruntime", reason='onnxruntime is not installed (pip install "matryoshka-index[onnx]") to run the ONNX file'
)
onnx = pytest.importorskip("onnx", reason='onnx is not installed (pip install "matryoshka-index[onnx]")')

from matryoshka_index.adaptor.onnx_export import IR_VERSION, OPSET, export_onnx  # noqa: E402


@pytest.fixture(scope="module")
def data():
    x = make_corpus(900, 48, rank=6, seed=11)
    return x[:800], x[800:]


@pytest.fixture(scope="module")
def adaptor(data):
    return MatryoshkaAdaptor(matryoshka_dims=(8, 16), epochs=2, batch_size=128, quiet=True).fit(data[0])


def run_onnx(path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["adapted"], {"embeddings": np.asarray(x, dtype=np.float32)})[0]


@pytest.mark.parametrize(("dim", "normalize"), [(None, False), (16, True), (8, False), (48, True)])
def test_onnx_matches_the_library(tmp_path, data, adaptor, dim, normalize):
    path = export_onnx(adaptor, tmp_path / "a.onnx", dim=dim, normalize=normalize)
    corpus, queries = data
    for x in (queries, corpus[:1], corpus[:333]):  # the batch axis is dynamic
        ref = adaptor.transform(x, dim)
        ref = l2_normalize(ref) if normalize else ref
        out = run_onnx(path, x)
        assert out.shape == ref.shape and out.dtype == np.float32
        np.testing.assert_allclose(out, ref, rtol=0, atol=1e-5)
    model = onnx.load(str(path))
    assert model.opset_import[0].version == OPSET and model.ir_version == IR_VERSION
    props = {p.key: p.value for p in model.metadata_props}
    assert props["dim"] == str(dim or 48) and props["normalize"] == str(normalize).lower()


def test_onnx_of_a_pca_rotation(tmp_path, data):
    pca = PCARotation().fit(data[0])
    path = export_onnx(pca, tmp_path / "p.onnx", dim=12)
    np.testing.assert_allclose(run_onnx(path, data[1]), pca.transform(data[1], 12), rtol=0, atol=1e-5)


def test_cli_export_of_an_index_uses_its_coarse_query(tmp_path, data, adaptor):
    corpus, queries = data
    index = MatryoshkaIndex.build(corpus, coarse_dim=16, adaptor=adaptor, quiet=True)
    index.save(tmp_path / "c.mindex")
    adaptor.save(tmp_path / "adaptor")
    result = CliRunner().invoke(main, ["export", str(tmp_path / "c.mindex"), "-o", str(tmp_path / "c.onnx")])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == {
        "written": str(tmp_path / "c.onnx"),
        "input_dim": 48,
        "dim": 16,
        "normalize": True,
    }
    # what the index itself sends as the coarse query (cosine index: the adapted prefix, L2-normalised)
    expected = l2_normalize(adaptor.transform(queries, 16))
    np.testing.assert_allclose(run_onnx(tmp_path / "c.onnx", queries), expected, rtol=0, atol=1e-5)
    result = CliRunner().invoke(
        main, ["export", str(tmp_path / "adaptor"), "-o", str(tmp_path / "a.onnx"), "--dim", "8"]
    )
    assert result.exit_code == 0, result.output
    np.testing.assert_allclose(run_onnx(tmp_path / "a.onnx", queries), adaptor.transform(queries, 8), atol=1e-5)


def test_cli_export_errors_are_one_line(tmp_path, adaptor):
    adaptor.save(tmp_path / "adaptor")
    cases = [
        (["export", str(tmp_path), "-o", str(tmp_path / "x.onnx")], "neither an adaptor directory"),
        (["export", str(tmp_path / "adaptor"), "-o", str(tmp_path / "x.onnx"), "--dim", "99"], "exceeds"),
        (["export", str(tmp_path / "adaptor"), "-o", str(tmp_path / "x.txt")], "expected a .onnx file"),
    ]
    for args, message in cases:
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 2, result.output
        assert message in result.output and "Traceback" not in result.output
        assert not (tmp_path / "x.onnx").exists()
