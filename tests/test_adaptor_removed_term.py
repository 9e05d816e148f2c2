"""The quantization-aware loss term is gone (issue 19, item 5); adaptors saved while it existed still load."""

from __future__ import annotations

import importlib.util
import json
import warnings

import numpy as np
import pytest
from conftest import make_corpus

from matryoshka_index import MatryoshkaAdaptor


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    x = make_corpus(300, 32, seed=2)
    adaptor = MatryoshkaAdaptor(matryoshka_dims=(8, 16), epochs=1, batch_size=64, quiet=True, device="cpu").fit(x)
    path = tmp_path_factory.mktemp("adaptor") / "a"
    adaptor.save(path)
    return x, adaptor, path


def test_the_option_the_module_and_the_loss_weight_are_gone(saved):
    _, adaptor, _ = saved
    assert importlib.util.find_spec("matryoshka_index.adaptor.losses.quantized") is None
    assert not {"code", "code_weight"} & set(adaptor.get_params())
    assert "quantized" not in adaptor.metadata_["train_config"]["weights"]
    assert "code" not in adaptor.metadata_["train_config"]
    with pytest.raises(TypeError, match="code"):
        MatryoshkaAdaptor(code="binary")


def _as_saved_before_the_removal(path, code):
    """Write into adaptor.json the fields an adaptor fitted with ``code=`` recorded while the term existed."""
    meta_file = path / "adaptor.json"
    meta = json.loads(meta_file.read_text())
    meta["params"].update(code=code, code_weight=3.0)
    meta["train_config"]["code"] = code
    meta["train_config"]["weights"]["quantized"] = 3.0 if code is not None else 0.0
    meta_file.write_text(json.dumps(meta))


def test_an_adaptor_trained_with_the_term_loads_applies_unchanged_and_says_so(saved, tmp_path):
    x, adaptor, path = saved
    old = tmp_path / "old"
    old.mkdir()
    for f in path.iterdir():
        (old / f.name).write_bytes(f.read_bytes())
    _as_saved_before_the_removal(old, "binary")
    with pytest.warns(UserWarning, match="trained with code='binary', the quantization-aware loss term") as record:
        loaded = MatryoshkaAdaptor.load(old)
    assert len(record) == 1 and "\n" not in str(record[0].message)
    np.testing.assert_array_equal(loaded.transform(x[:20]), adaptor.transform(x[:20]))
    assert "code" not in loaded.get_params() and loaded.metadata_["params"]["code"] == "binary"  # the record is kept


def test_an_adaptor_saved_with_the_term_off_loads_silently(saved, tmp_path):
    x, adaptor, path = saved
    old = tmp_path / "off"
    old.mkdir()
    for f in path.iterdir():
        (old / f.name).write_bytes(f.read_bytes())
    _as_saved_before_the_removal(old, None)  # code=None, code_weight=3.0: the default of every adaptor then
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loaded = MatryoshkaAdaptor.load(old)
    np.testing.assert_array_equal(loaded.transform(x[:20]), adaptor.transform(x[:20]))
