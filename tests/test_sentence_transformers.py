"""``adaptor.to_sentence_transformers()``: encode gives adapted vectors, truncate_dim the prefix, save/load round-trips.

The model is a tiny randomly initialised BERT written to a temp dir (no download).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

st = pytest.importorskip(
    "sentence_transformers", reason='sentence-transformers is not installed (pip install "matryoshka-index[st]")'
)
transformers = pytest.importorskip("transformers", reason="transformers is not installed")

from matryoshka_index import MatryoshkaAdaptor  # noqa: E402
from matryoshka_index.adaptor.sentence_transformers import MatryoshkaAdaptorModule  # noqa: E402

WORDS = "the a vector index search query prefix matryoshka adaptor shrink embedding rerank full short long".split()
HIDDEN = 32


def sentences(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=rng.integers(3, 9))) for _ in range(n)]


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    """A tiny random BERT + WordPiece tokenizer saved as a Hugging Face model directory."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    d = tmp_path_factory.mktemp("tinybert")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
    (d / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizerFast(vocab_file=str(d / "vocab.txt")).save_pretrained(str(d))
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=HIDDEN,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    torch.manual_seed(0)
    BertModel(config).save_pretrained(str(d))
    return d


def base_model(base_dir):
    from sentence_transformers import SentenceTransformer

    try:  # sentence-transformers >= 6 moved them (the old path warns)
        from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
    except ImportError:
        from sentence_transformers.models import Pooling, Transformer

    transformer = Transformer(str(base_dir), max_seq_length=32)
    pooling = Pooling(HIDDEN, pooling_mode="mean")
    return SentenceTransformer(modules=[transformer, pooling], device="cpu")


@pytest.fixture(scope="module")
def fitted(base_dir):
    emb = base_model(base_dir).encode(sentences(600, 0), convert_to_numpy=True)
    return MatryoshkaAdaptor(matryoshka_dims=(8, 16), epochs=2, batch_size=128, quiet=True).fit(emb)


def test_encode_gives_the_adapted_vectors_and_prefix(base_dir, fitted):
    texts = sentences(40, 1)
    base = base_model(base_dir)
    emb = base.encode(texts, convert_to_numpy=True)
    model = base_model(base_dir)
    model.append(fitted.to_sentence_transformers())
    np.testing.assert_allclose(model.encode(texts, convert_to_numpy=True), fitted.transform(emb), atol=1e-5)
    short = model.encode(texts, convert_to_numpy=True, truncate_dim=8)
    assert short.shape == (40, 8)
    np.testing.assert_allclose(short, fitted.transform(emb, dim=8), atol=1e-5)
    # the adaptor really changes the vectors (the test would pass on an identity otherwise)
    assert np.abs(fitted.transform(emb) - emb).max() > 1e-2
    assert fitted.to_sentence_transformers().get_sentence_embedding_dimension() == HIDDEN


def test_save_and_load_round_trip(tmp_path, base_dir, fitted):
    from sentence_transformers import SentenceTransformer

    texts = sentences(25, 2)
    model = base_model(base_dir)
    model.append(fitted.to_sentence_transformers())
    before = model.encode(texts, convert_to_numpy=True)
    model.save(str(tmp_path / "adapted"))
    modules = json.loads((tmp_path / "adapted" / "modules.json").read_text())
    ours = [m for m in modules if m["type"].endswith("MatryoshkaAdaptorModule")]
    assert (
        len(ours) == 1 and ours[0]["type"] == "matryoshka_index.adaptor.sentence_transformers.MatryoshkaAdaptorModule"
    )
    folder = tmp_path / "adapted" / ours[0]["path"]
    # the module's folder is a plain adaptor directory
    emb = base_model(base_dir).encode(texts, convert_to_numpy=True)
    np.testing.assert_array_equal(MatryoshkaAdaptor.load(folder).transform(emb), fitted.transform(emb))
    # sentence-transformers >= 6 imports a module class from outside its own package only when trusted
    loaded = SentenceTransformer(str(tmp_path / "adapted"), device="cpu", trust_remote_code=True)
    assert isinstance(loaded[len(loaded) - 1], MatryoshkaAdaptorModule)
    np.testing.assert_allclose(loaded.encode(texts, convert_to_numpy=True), before, atol=1e-6)
    np.testing.assert_allclose(loaded.encode(texts, convert_to_numpy=True, truncate_dim=16), before[:, :16], atol=1e-6)
