"""MatryoshkaAdaptor: training improves short prefixes, files round-trip, bad input is refused clearly."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from matryoshka_index import FormatError, InputError, MatryoshkaAdaptor
from matryoshka_index.adaptor import NotFittedError
from matryoshka_index.adaptor.losses import pairwise_similarity_loss
from matryoshka_index.adaptor.model import pca_rotation
from matryoshka_index.metrics import neighbour_recall

D = 64


def low_rank_corpus(n: int, d: int = D, rank: int = 12, seed: int = 0) -> np.ndarray:
    """Rows near a rank-``rank`` subspace spread over all coordinates, so truncation alone is poor."""
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(rng.standard_normal((d, d)))[0][:, :rank]
    scales = np.linspace(3.0, 1.0, rank)
    x = (rng.standard_normal((n, rank)) * scales) @ basis.T + 0.15 * rng.standard_normal((n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def corpus() -> np.ndarray:
    return low_rank_corpus(3000)


@pytest.fixture(scope="module")
def fitted(corpus) -> MatryoshkaAdaptor:
    return MatryoshkaAdaptor(matryoshka_dims=(8, 16), epochs=3, batch_size=256, seed=1, quiet=True).fit(corpus)


def small(**kw) -> MatryoshkaAdaptor:
    return MatryoshkaAdaptor(**{"matryoshka_dims": (8, 16), "epochs": 1, "batch_size": 128, "quiet": True, **kw})


def prefix_error(x: np.ndarray, y: np.ndarray, m: int) -> float:
    return float(pairwise_similarity_loss(torch.from_numpy(x[:512]), torch.from_numpy(y[:512]), (m,)))


def test_starts_at_identity_or_rotation(corpus):
    ident = small(init="identity", epochs=1, lr=1e-12).fit(corpus)
    np.testing.assert_allclose(ident.transform(corpus[:50]), corpus[:50], atol=1e-5)
    rot = pca_rotation(corpus[:10].repeat(1, axis=0))  # any orthogonal matrix keeps inner products
    assert np.allclose(rot.T @ rot, np.eye(D), atol=1e-4)


def test_training_improves_low_dim_error_over_identity(corpus):
    adaptor = MatryoshkaAdaptor(
        matryoshka_dims=(8, 16), init="identity", listwise_weight=0.0, epochs=4, batch_size=256, seed=0, quiet=True
    ).fit(corpus)
    adapted = adaptor.transform(corpus)
    for m in (8, 16):
        assert prefix_error(corpus, adapted, m) < 0.8 * prefix_error(corpus, corpus, m)


def test_default_adaptor_prefix_finds_neighbours_better_than_truncation(corpus, fitted):
    q, x = corpus[:200], corpus[200:]
    truth = np.argsort(-(q @ x.T), axis=1)[:, :10]

    def recall(tq, tx):
        tq = tq / np.linalg.norm(tq, axis=1, keepdims=True)
        tx = tx / np.linalg.norm(tx, axis=1, keepdims=True)
        return neighbour_recall(np.argsort(-(tq @ tx.T), axis=1)[:, :10], truth)

    truncated = recall(q[:, :8], x[:, :8])
    adapted = recall(fitted.transform(q, dim=8), fitted.transform(x, dim=8))
    assert adapted > truncated + 0.1


def test_transform_shapes_dtypes_and_memmap(tmp_path, corpus, fitted):
    out = fitted.transform(corpus[:10])
    assert out.shape == (10, D) and out.dtype == np.float32
    assert fitted.transform(corpus[:10], dim=16).shape == (10, 16)
    np.testing.assert_allclose(fitted.transform(corpus[:10], dim=16), out[:, :16], atol=1e-6)
    np.testing.assert_allclose(fitted.transform(corpus[:10].astype(np.float16)), out, atol=2e-2)
    path = tmp_path / "x.npy"
    np.save(path, corpus[:100])
    mm = np.load(path, mmap_mode="r")
    # batch size changes the matmul blocking, so equal up to float rounding
    np.testing.assert_allclose(fitted.transform(mm, batch_size=7), fitted.transform(corpus[:100]), atol=1e-6)


def test_save_load_apply_identical(tmp_path, corpus, fitted):
    fitted.save(tmp_path / "a")
    loaded = MatryoshkaAdaptor.load(tmp_path / "a")
    np.testing.assert_array_equal(loaded.transform(corpus[:100]), fitted.transform(corpus[:100]))
    assert loaded.matryoshka_dims_ == (8, 16)
    assert loaded.input_dim_ == D
    meta = json.loads((tmp_path / "a" / "adaptor.json").read_text())
    assert meta["format"] == "matryoshka-adaptor" and meta["format_version"] == 1
    assert meta["input_dim"] == D and "library_version" in meta and meta["params"]["epochs"] == 3
    # to_files/from_files is the same round trip without a directory
    again = MatryoshkaAdaptor.from_files(fitted.to_files())
    np.testing.assert_array_equal(again.transform(corpus[:10]), fitted.transform(corpus[:10]))


def test_save_is_atomic_over_an_existing_adaptor(tmp_path, corpus, fitted, monkeypatch):
    fitted.save(tmp_path / "a")
    before = (tmp_path / "a" / "adaptor.safetensors").read_bytes()
    other = small(seed=5).fit(corpus)
    import matryoshka_index.adaptor.io as aio

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(aio, "sha256_file", boom)
    with pytest.raises(RuntimeError):
        other.save(tmp_path / "a")
    assert (tmp_path / "a" / "adaptor.safetensors").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"]  # no temp dirs left behind
    monkeypatch.undo()
    MatryoshkaAdaptor.load(tmp_path / "a")


def test_same_seed_same_weights(corpus):
    a = small(seed=3).fit(corpus)
    b = small(seed=3).fit(corpus)
    np.testing.assert_array_equal(a.transform(corpus[:20]), b.transform(corpus[:20]))


@pytest.mark.parametrize("hard_negatives", [0, 4])
def test_supervised_fit_improves_ranking_at_prefix(hard_negatives):
    rng = np.random.default_rng(0)
    docs = low_rank_corpus(2000, seed=1)
    # queries: documents seen through a fixed distortion, so only supervision can undo it
    distortion = np.linalg.qr(rng.standard_normal((D, D)))[0].astype(np.float32)
    idx = rng.choice(len(docs), 800, replace=False)
    queries = docs[idx] @ (0.2 * np.eye(D, dtype=np.float32) + 0.8 * distortion)
    queries += 0.05 * rng.standard_normal(queries.shape).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    train, test = np.arange(600), np.arange(600, 800)
    kw = dict(matryoshka_dims=(8, 16), epochs=4, batch_size=256, seed=0, quiet=True)
    unsup = MatryoshkaAdaptor(**kw).fit(docs)
    sup = MatryoshkaAdaptor(**kw, hard_negatives=hard_negatives).fit(docs, queries[train], docs[idx[train]])
    assert sup.metadata_["params"]["hard_negatives"] == hard_negatives
    assert sup.metadata_["training"]["supervised"] and sup.metadata_["training"]["pairs"] > 0

    def hit_rate(adaptor):
        tq = adaptor.transform(queries[test], dim=8)
        tx = adaptor.transform(docs, dim=8)
        tq /= np.linalg.norm(tq, axis=1, keepdims=True)
        tx /= np.linalg.norm(tx, axis=1, keepdims=True)
        top = np.argsort(-(tq @ tx.T), axis=1)[:, :10]
        return float(np.mean([idx[t] in row for t, row in zip(test, top, strict=True)]))

    print("hit rates", hit_rate(unsup), hit_rate(sup))
    assert hit_rate(sup) > hit_rate(unsup) + 0.1


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("data", "message"),
    [
        (np.ones(10, dtype=np.float32), "expected a 2-D array"),
        (np.ones((300, 4), dtype=np.int64), "expected float16/float32/float64"),
        (np.zeros((0, 4), dtype=np.float32), "is empty"),
    ],
)
def test_fit_rejects_bad_shape_and_dtype(data, message):
    with pytest.raises(InputError, match=message):
        small().fit(data)


def test_fit_rejects_nan_inf_and_zero_rows(corpus):
    for bad_value, message in ((np.nan, "row 5 contains NaN or Inf"), (np.inf, "row 5 contains NaN or Inf")):
        x = corpus.copy()
        x[5, 3] = bad_value
        with pytest.raises(InputError, match=message):
            small().fit(x)
    x = corpus.copy()
    x[7] = 0
    with pytest.raises(InputError, match="row 7 is an all-zero vector"):
        small().fit(x)


def test_fit_rejects_fewer_rows_than_a_batch(corpus):
    with pytest.raises(InputError, match="fewer than batch_size=128"):
        small().fit(corpus[:100])


def test_supervised_arguments_checked(corpus):
    with pytest.raises(InputError, match="positives: give the queries they answer too"):
        small().fit(corpus, positives=corpus[:10])
    with pytest.raises(InputError, match="has 9 rows for 10 queries"):
        small().fit(corpus, queries=corpus[:10], positives=corpus[:9])
    with pytest.raises(InputError, match=r"queries.*has 32 dimensions but 64"):
        small().fit(corpus, queries=corpus[:10, :32], positives=corpus[:10, :32])


def test_parameters_checked(corpus):
    with pytest.raises(InputError, match="init: must be one of"):
        small(init="random").fit(corpus)
    with pytest.raises(InputError, match="prefix length 128 exceeds the embedding dimension 64"):
        small(matryoshka_dims=(8, 128)).fit(corpus)
    with pytest.raises(InputError, match="listwise_weight"):
        small(listwise_weight=-1).fit(corpus)


def test_transform_checks(corpus, fitted):
    with pytest.raises(InputError, match="has 32 dimensions but 64 are expected"):
        fitted.transform(corpus[:5, :32])
    with pytest.raises(InputError, match="dim: 65 exceeds"):
        fitted.transform(corpus[:5], dim=65)
    with pytest.raises(NotFittedError, match="not fitted"):
        MatryoshkaAdaptor().transform(corpus[:5])


def test_load_refuses_foreign_corrupt_and_newer_files(tmp_path, fitted):
    with pytest.raises(FormatError, match="not an adaptor directory"):
        MatryoshkaAdaptor.load(tmp_path / "missing")
    d = tmp_path / "a"
    fitted.save(d)
    meta = json.loads((d / "adaptor.json").read_text())

    (d / "adaptor.json").write_text(json.dumps({**meta, "format_version": 99}))
    with pytest.raises(FormatError, match="format version 99 is not supported"):
        MatryoshkaAdaptor.load(d)
    (d / "adaptor.json").write_text(json.dumps({**meta, "format": "something-else"}))
    with pytest.raises(FormatError, match="is not a matryoshka-adaptor file"):
        MatryoshkaAdaptor.load(d)
    (d / "adaptor.json").write_text("{not json")
    with pytest.raises(FormatError, match="not valid JSON"):
        MatryoshkaAdaptor.load(d)
    (d / "adaptor.json").write_text(json.dumps(meta))
    weights = d / "adaptor.safetensors"
    weights.write_bytes(weights.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(FormatError, match="checksum does not match"):
        MatryoshkaAdaptor.load(d)
    (d / "adaptor.json").write_text(json.dumps({**meta, "weights_sha256": None}))
    weights.write_bytes(b"garbage")
    with pytest.raises(FormatError, match="not a readable safetensors file"):
        MatryoshkaAdaptor.load(d)


def test_load_refuses_weights_of_another_shape(tmp_path, corpus, fitted):
    fitted.save(tmp_path / "a")
    meta = json.loads((tmp_path / "a" / "adaptor.json").read_text())
    (tmp_path / "a" / "adaptor.json").write_text(json.dumps({**meta, "hidden_dim": 32}))
    with pytest.raises(FormatError, match="weights do not match the metadata"):
        MatryoshkaAdaptor.load(tmp_path / "a")
