"""fit(corpus, queries=...) without positives, the query head, and the held-out guard against the start."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from matryoshka_index import InputError, MatryoshkaAdaptor
from matryoshka_index.adaptor import AdaptorFallbackWarning
from matryoshka_index.adaptor import training as training_module
from matryoshka_index.adaptor.guard import prefix_recall
from matryoshka_index.adaptor.losses import query_listwise_loss
from matryoshka_index.adaptor.numpy_model import NumpyResidualAdaptor

D = 64
FIXTURES = Path(__file__).parent / "fixtures"


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def offset_task(seed: int = 0, n_docs: int = 2000, n_queries: int = 600):
    """Documents near a low-rank subspace; each query is its document seen at a constant offset (as an
    asymmetric model's queries, or another language's, sit apart from the documents), plus noise."""
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(rng.standard_normal((D, D)))[0]
    scales = np.linspace(3.0, 0.5, 16)
    docs = unit(
        (rng.standard_normal((n_docs, 16)) * scales) @ basis[:, :16].T + 0.15 * rng.standard_normal((n_docs, D))
    )
    relevant = rng.choice(n_docs, n_queries, replace=False)
    offset = 1.5 * basis[:, 0]  # along the documents' main direction: it fills a short prefix
    queries = unit(docs[relevant] + offset + 0.1 * rng.standard_normal((n_queries, D)))
    return docs, queries, relevant


def small(**kw) -> MatryoshkaAdaptor:
    return MatryoshkaAdaptor(**{"matryoshka_dims": (8, 16), "epochs": 3, "batch_size": 256, "quiet": True, **kw})


def hit_rate(adaptor: MatryoshkaAdaptor, docs, queries, relevant, m: int = 8) -> float:
    tq = unit(adaptor.transform_queries(queries, dim=m))
    tx = unit(adaptor.transform(docs, dim=m))
    top = np.argsort(-(tq @ tx.T), axis=1)[:, :10]
    return float(np.mean([r in row for r, row in zip(relevant, top, strict=True)]))


@pytest.fixture(scope="module")
def task():
    return offset_task()


@pytest.fixture(scope="module")
def with_queries(task):
    docs, queries, _ = task
    return small(seed=0).fit(docs, queries=queries[:400])


def test_unlabelled_queries_train_and_their_anchors_are_their_full_dim_neighbours(task, monkeypatch):
    docs, queries, _ = task
    seen = []
    real = training_module.query_anchors

    def spy(rows, qs, k):
        out = real(rows, qs, k)
        seen.append((rows.numpy().copy(), qs.numpy().copy(), out.numpy().copy(), k))
        return out

    monkeypatch.setattr(training_module, "query_anchors", spy)
    adaptor = small(seed=0).fit(docs, queries=queries[:400])
    assert seen, "fit with queries never asked for their anchors"
    rows, qs, anchors, k = seen[0]
    assert k == 10 and anchors.shape == (len(qs), 10)
    assert len(qs) + len(seen[1][1]) == 400  # training queries, then the held-out ones (validation)
    truth = np.argsort(-(unit(qs) @ unit(rows).T), axis=1)[:, :10]
    np.testing.assert_array_equal(np.sort(anchors, axis=1), np.sort(truth, axis=1))
    t = adaptor.metadata_["training"]
    assert t["unlabelled_queries"] == len(qs) and not t["supervised"] and t["pairs"] == 0
    assert adaptor.has_query_head_


def test_unlabelled_queries_beat_the_corpus_only_adaptor_on_offset_queries(task, with_queries):
    docs, queries, relevant = task
    corpus_only = small(seed=0).fit(docs)
    test = slice(400, None)  # queries fit never saw
    a, b = (
        hit_rate(with_queries, docs, queries[test], relevant[test]),
        hit_rate(corpus_only, docs, queries[test], relevant[test]),
    )
    print("hit rates: with queries", a, "corpus only", b)
    assert a > b + 0.1


def test_query_head_centres_each_side_and_transform_differs_only_for_queries(task, with_queries):
    docs, queries, _ = task
    state = with_queries.model_.state_dict()
    np.testing.assert_allclose(state["query_centre"], queries[:400].mean(0), atol=0.05)  # a share is held out
    assert np.linalg.norm(state["query_centre"] - state["centre"]) > 0.5
    assert not np.allclose(with_queries.transform(queries[:5]), with_queries.transform_queries(queries[:5]))
    corpus_only = small(seed=0).fit(docs)
    assert not corpus_only.has_query_head_
    np.testing.assert_array_equal(corpus_only.transform(queries[:5]), corpus_only.transform_queries(queries[:5]))
    no_head = small(seed=0, query_head=False).fit(docs, queries=queries[:400])
    assert not no_head.has_query_head_


def test_numpy_and_torch_query_heads_agree(with_queries, task):
    _, queries, _ = task
    module = with_queries.to_torch()
    with torch.no_grad():
        expect = module.forward_queries(torch.from_numpy(queries[:50])).numpy()
    np.testing.assert_allclose(with_queries.transform_queries(queries[:50]), expect, atol=1e-5)


def test_saved_query_head_adaptor_loads_with_the_same_transforms(tmp_path, task, with_queries):
    docs, queries, _ = task
    with_queries.save(tmp_path / "a")
    loaded = MatryoshkaAdaptor.load(tmp_path / "a")
    assert loaded.has_query_head_
    np.testing.assert_array_equal(loaded.transform(docs[:50]), with_queries.transform(docs[:50]))
    np.testing.assert_array_equal(loaded.transform_queries(queries[:50]), with_queries.transform_queries(queries[:50]))
    meta = json.loads((tmp_path / "a" / "adaptor.json").read_text())
    assert meta["has_query_head"] is True and meta["training"]["guard"]["source"] == "held-out queries"
    assert loaded.history_.guard == with_queries.history_.guard


def test_adaptors_saved_before_the_query_head_still_load():
    old = MatryoshkaAdaptor.load(FIXTURES / "index_v1" / "adaptor" / "adaptor")
    assert not old.has_query_head_ and "has_query_head" not in old.metadata_
    x = np.random.default_rng(0).standard_normal((5, old.input_dim_)).astype(np.float32)
    np.testing.assert_array_equal(old.transform_queries(x), old.transform(x))


def test_query_head_fixture_keeps_loading_with_the_same_outputs():
    """An adaptor with a query head written by this version (tests/fixtures/adaptor_query_head_v1)."""
    here = FIXTURES / "adaptor_query_head_v1"
    adaptor = MatryoshkaAdaptor.load(here / "adaptor")
    expected = np.load(here / "expected.npz")
    np.testing.assert_allclose(adaptor.transform(expected["docs"]), expected["docs_out"], atol=1e-6)
    np.testing.assert_allclose(adaptor.transform_queries(expected["queries"]), expected["queries_out"], atol=1e-6)


# ----------------------------------------------------------------------------- the guard
def test_guard_keeps_an_adaptor_that_wins(task):
    # From the identity (plain truncation) of a corpus spread over every coordinate, training wins clearly.
    docs, _, _ = task
    adaptor = small(seed=0, init="identity").fit(docs)
    g = adaptor.history_.guard
    assert g["kept"] and not adaptor.history_.fell_back_to_start
    assert np.mean(list(g["adaptor_recall"].values())) > np.mean(list(g["start_recall"].values())) + 0.05
    assert set(g["adaptor_recall"]) == {"8", "16"} and g["source"] == "held-out corpus rows"
    assert not np.allclose(adaptor.transform(docs[:20]), docs[:20], atol=1e-3)  # the trained residual, kept


@pytest.mark.parametrize("with_q", [False, True])
def test_guard_falls_back_to_the_start_when_training_breaks(task, monkeypatch, with_q):
    docs, _, _ = task
    real = training_module.train

    def broken_train(model, *args, **kwargs):  # trains, then wrecks the residual: the adaptor must lose
        history = real(model, *args, **kwargs)
        with torch.no_grad():
            model.mlp[2].weight.normal_(0, 1.0, generator=torch.Generator().manual_seed(0))
        return history

    monkeypatch.setattr(training_module, "train", broken_train)
    # queries near their documents (no offset), so that their full-dim neighbours are a real target
    near = unit(docs[:400] + 0.05 * np.random.default_rng(1).standard_normal((400, D)))
    with pytest.warns(AdaptorFallbackWarning, match="lost to its pca start"):
        adaptor = small(seed=0).fit(docs, queries=near if with_q else None)
    assert adaptor.history_.fell_back_to_start and not adaptor.history_.guard["kept"]
    assert adaptor.history_.guard["source"] == ("held-out queries" if with_q else "held-out corpus rows")
    # the start exactly: the residual's output is zero, so transform is the centred rotation
    model = adaptor.model_
    np.testing.assert_allclose(adaptor.transform(docs[:20]), model.start(docs[:20]), atol=1e-6)
    np.testing.assert_allclose(adaptor.transform_queries(near[:20]), model.start(near[:20], queries=True), atol=1e-6)
    assert adaptor.metadata_["training"]["fell_back_to_start"] is True


def test_guard_off_keeps_the_broken_adaptor(task, monkeypatch):
    docs, _, _ = task
    real = training_module.train

    def broken_train(model, *args, **kwargs):
        history = real(model, *args, **kwargs)
        with torch.no_grad():
            model.mlp[2].weight.normal_(0, 1.0, generator=torch.Generator().manual_seed(0))
        return history

    monkeypatch.setattr(training_module, "train", broken_train)
    with warnings.catch_warnings():
        warnings.simplefilter("error", AdaptorFallbackWarning)
        adaptor = small(seed=0, guard=False).fit(docs)
    assert adaptor.history_.guard is None and not adaptor.history_.fell_back_to_start
    assert not np.allclose(adaptor.transform(docs[:20]), adaptor.model_.start(docs[:20]), atol=1e-3)


def test_prefix_recall_is_one_for_the_identity_at_full_dim_and_lower_for_noise():
    rng = np.random.default_rng(0)
    rows, qs = unit(rng.standard_normal((500, D))), unit(rng.standard_normal((40, D)))
    assert prefix_recall(qs, rows, lambda x: x, (D,))[D] == 1.0
    shuffle = rng.permutation(D)
    assert prefix_recall(qs, rows, lambda x: x[:, shuffle], (8,))[8] < 0.6


# ----------------------------------------------------------------------------- the loss and the inputs
def test_query_listwise_loss_is_zero_when_prefixes_keep_the_order_and_positive_otherwise():
    rng = np.random.default_rng(0)
    q, d = torch.from_numpy(unit(rng.standard_normal((16, D)))), torch.from_numpy(unit(rng.standard_normal((40, D))))
    assert float(query_listwise_loss(q, q, d, d, (D,))) == pytest.approx(0.0, abs=1e-6)
    assert float(query_listwise_loss(q, q, d, d, (8,))) > 0.01
    scrambled = d[torch.randperm(len(d), generator=torch.Generator().manual_seed(0))]
    assert float(query_listwise_loss(q, q, d, scrambled, (D,))) > 0.1


def test_positives_without_queries_are_refused(task):
    docs, queries, _ = task
    with pytest.raises(InputError, match="positives: give the queries they answer too"):
        small().fit(docs, positives=docs[:10])
    with pytest.raises(InputError, match=r"queries.*has 32 dimensions but 64"):
        small().fit(docs, queries=queries[:10, :32])


def test_query_weight_checked(task):
    docs, queries, _ = task
    with pytest.raises(InputError, match="query_weight: must be a finite number >= 0"):
        small(query_weight=-1).fit(docs, queries=queries)


def test_sentence_transformers_and_onnx_refuse_a_query_head_in_one_line(with_queries):
    with pytest.raises(InputError, match="query head"):
        with_queries.to_sentence_transformers()
    from matryoshka_index.adaptor.onnx_export import adaptor_tensors

    with pytest.raises(InputError, match="query head"):
        adaptor_tensors(with_queries)


def test_numpy_model_refuses_half_a_query_head(with_queries):
    state = with_queries.model_.state_dict()
    del state["query_centre"]
    with pytest.raises(ValueError, match="expected"):
        NumpyResidualAdaptor(state)


# ----------------------------------------------------------------------------- the orthogonal parametrisation
def test_orthogonal_parametrisation_keeps_full_dim_inner_products_and_learns_a_rotation(tmp_path, task):
    docs, queries, _ = task
    turned = small(seed=0, parametrisation="orthogonal", guard=False).fit(docs)
    x = turned.transform(docs[:100])
    np.testing.assert_allclose(x @ x.T, docs[:100] @ docs[:100].T, atol=1e-4)  # rerank="adapted" loses nothing
    still = small(seed=0, parametrisation="orthogonal", guard=False, epochs=1, lr=1e-12).fit(docs)
    assert np.abs(turned.model_.rotation - still.model_.rotation).max() > 1e-3  # training moved the rotation
    assert not np.any(turned.model_.state_dict()["mlp.2.weight"])  # the saved residual is zero
    turned.save(tmp_path / "o")
    np.testing.assert_array_equal(
        MatryoshkaAdaptor.load(tmp_path / "o").transform(docs[:20]), turned.transform(docs[:20])
    )
    # with a query head: inner products of the centred start are kept
    headed = small(seed=0, parametrisation="orthogonal", guard=False).fit(docs, queries=queries[:400])
    q, d = headed.transform_queries(queries[:30]), headed.transform(docs[:40])
    state = headed.model_.state_dict()
    np.testing.assert_allclose(
        q @ d.T, (queries[:30] - state["query_centre"]) @ (docs[:40] - state["centre"]).T, atol=1e-4
    )


def test_parametrisation_checked(task):
    with pytest.raises(InputError, match="parametrisation: must be one of residual, orthogonal"):
        small(parametrisation="spline").fit(task[0])


def test_the_index_sends_queries_through_the_query_head(task, with_queries, tmp_path):
    """A prefix-only index returns coarse scores: they must be transform_queries(q) against transform(x),
    the function the adaptor was fitted for (transform(q) centres queries on the corpus mean instead)."""
    from matryoshka_index import MatryoshkaIndex

    docs, queries, _ = task
    q = queries[400:450]
    index = MatryoshkaIndex.build(docs, coarse_dim=8, adaptor=with_queries, rerank=None)
    want = unit(with_queries.transform_queries(q, dim=8)) @ unit(with_queries.transform(docs, dim=8)).T
    wrong = unit(with_queries.transform(q, dim=8)) @ unit(with_queries.transform(docs, dim=8)).T
    index.save(tmp_path / "qh.mindex")
    for idx in (index, MatryoshkaIndex.load(tmp_path / "qh.mindex")):
        scores, ids = idx.search(q, k=5)
        np.testing.assert_allclose(scores, np.take_along_axis(want, ids, axis=1), atol=1e-5)
        assert not np.allclose(scores, np.take_along_axis(wrong, ids, axis=1), atol=1e-3)


def test_a_migrations_labelled_queries_go_through_the_query_head():
    """The prefix-only migration's plan and verification score the user's queries as a search of the
    collection adapts them (transform_queries); stored points stay on transform."""
    from matryoshka_index.migrate.adapting import coarse_vectors

    here = FIXTURES / "adaptor_query_head_v1"
    adaptor = MatryoshkaAdaptor.load(here / "adaptor")
    q = np.load(here / "expected.npz")["queries"]
    as_queries = coarse_vectors(adaptor, q, 8, "cosine", queries=True)
    as_points = coarse_vectors(adaptor, q, 8, "cosine")
    np.testing.assert_allclose(as_queries, unit(adaptor.transform_queries(q, dim=8)), atol=1e-6)
    np.testing.assert_allclose(as_points, unit(adaptor.transform(q, dim=8)), atol=1e-6)
    assert not np.allclose(as_queries, as_points, atol=1e-3)
