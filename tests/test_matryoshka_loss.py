"""The Matryoshka wrapper (issue 20): one loop over prefix lengths, per-length weights, nothing else changed."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from matryoshka_index import MatryoshkaAdaptor
from matryoshka_index.adaptor import NotFittedError
from matryoshka_index.adaptor.losses import (
    MatryoshkaLoss,
    listwise_loss,
    pairwise_similarity_loss,
    query_listwise_loss,
    ranking_loss,
    topk_similarity_loss,
)
from matryoshka_index.adaptor.pca import PCARotation
from matryoshka_index.errors import InputError

FIXTURE = Path(__file__).parent / "fixtures" / "training_history_v1"
DIMS = (2, 4, 8)


def t(a: np.ndarray) -> torch.Tensor:
    return torch.tensor(a, dtype=torch.float64)


@pytest.fixture
def pair() -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(3)
    e = rng.standard_normal((7, 8))
    return t(e), t(e + 0.5 * rng.standard_normal((7, 8)))


def test_the_wrapper_hands_each_prefix_normalised_and_takes_the_weighted_mean():
    x = t(np.random.default_rng(0).standard_normal((5, 8)))
    seen = []

    def inner(prefix: torch.Tensor) -> torch.Tensor:
        seen.append(prefix)
        return prefix[:, 0].sum()

    per_m = [float((x[:, :m] / x[:, :m].norm(dim=1, keepdim=True))[:, 0].sum()) for m in DIMS]
    assert float(MatryoshkaLoss(DIMS)(inner, x)) == pytest.approx(np.mean(per_m), rel=1e-12)
    assert [p.shape[1] for p in seen] == list(DIMS)
    assert all(torch.allclose(p.norm(dim=1), torch.ones(5, dtype=p.dtype)) for p in seen)
    weighted = float(MatryoshkaLoss(DIMS, (3.0, 1.0, 0.0))(inner, x))
    assert weighted == pytest.approx((3 * per_m[0] + per_m[1]) / 4, rel=1e-12)
    for bad in [(1.0, 1.0), (1.0, -1.0, 1.0), (0.0, 0.0, 0.0)]:
        with pytest.raises(ValueError, match="weights"):
            MatryoshkaLoss(DIMS, bad)


LOSSES = {
    "pairwise": lambda e, f, dims, w: pairwise_similarity_loss(e, f, dims, w),
    "topk": lambda e, f, dims, w: topk_similarity_loss(e, f, dims, 3, w),
    "listwise": lambda e, f, dims, w: listwise_loss(e, f, dims, 0.1, w),
    "query_listwise": lambda e, f, dims, w: query_listwise_loss(e[:3], f[:3], e[3:], f[3:], dims, 0.1, w),
    "ranking": lambda e, f, dims, w: ranking_loss(f[:3], e, dims, 0.1, w),
}


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_every_loss_is_the_weighted_mean_of_its_one_prefix_values(pair, name):
    e, f = pair
    loss = LOSSES[name]
    single = [float(loss(e, f, (m,), None)) for m in DIMS]
    assert len(set(single)) == len(DIMS)  # each prefix length gives its own value: the weights matter
    assert float(loss(e, f, DIMS, None)) == pytest.approx(np.mean(single), rel=1e-12)
    weights = (4.0, 2.0, 1.0)
    want = float(np.dot(weights, single) / sum(weights))
    assert float(loss(e, f, DIMS, weights)) == pytest.approx(want, rel=1e-12)


def _fixture_module():
    spec = importlib.util.spec_from_file_location("training_history_v1", FIXTURE / "make_fixture.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_same_seed_gives_the_history_and_weights_of_the_code_before_the_wrapper():
    make = _fixture_module()
    expected = json.loads((FIXTURE / "expected.json").read_text())
    for name, adaptor, args in make.cases():
        got, want = make.record(name, adaptor, args), expected[name]
        np.testing.assert_allclose(got["train_loss"], want["train_loss"], rtol=1e-5, err_msg=name)
        np.testing.assert_allclose(got["val_loss"], want["val_loss"], rtol=1e-5, err_msg=name)
        assert got["best_epoch"] == want["best_epoch"], name
        assert got["weights"].keys() == want["weights"].keys(), name
        for k, sums in want["weights"].items():
            np.testing.assert_allclose(got["weights"][k], sums, rtol=1e-4, atol=1e-5, err_msg=f"{name} {k}")


def _small_fit(**params) -> MatryoshkaAdaptor:
    from matryoshka_index.datasets import low_rank_corpus

    corpus = low_rank_corpus(600, 16, rank=6, noise=0.3, seed=2)
    base = dict(seed=0, quiet=True, epochs=1, batch_size=128, matryoshka_dims=(4, 8), device="cpu", guard=False)
    return MatryoshkaAdaptor(**{**base, **params}).fit(corpus)


def test_matryoshka_weights_equal_give_the_plain_mean_and_unequal_ones_change_the_fit(tmp_path):
    plain = _small_fit()
    assert _small_fit(matryoshka_weights=[2.0, 2.0]).history_.train_loss == plain.history_.train_loss
    short_first = _small_fit(matryoshka_weights=[4.0, 1.0])
    assert short_first.history_.train_loss != plain.history_.train_loss
    short_first.save(tmp_path / "a")
    loaded = MatryoshkaAdaptor.load(tmp_path / "a")
    assert loaded.get_params()["matryoshka_weights"] == [4.0, 1.0]
    # the weights follow their prefix lengths when the lengths are given out of order
    reordered = _small_fit(matryoshka_dims=(8, 4), matryoshka_weights=[1.0, 4.0])
    assert reordered.history_.train_loss == short_first.history_.train_loss


@pytest.mark.parametrize(
    "weights, match",
    [([1.0], "one weight per prefix length"), ([1.0, -1.0], ">= 0"), ([0, 0], "> 0"), ("ab", "one weight")],
)
def test_bad_matryoshka_weights_get_one_line(weights, match):
    with pytest.raises(InputError, match=match):
        _small_fit(matryoshka_weights=weights)


def test_check_is_fitted_is_public_on_both_adaptors():
    with pytest.raises(NotFittedError, match="not fitted"):
        MatryoshkaAdaptor().check_is_fitted()
    with pytest.raises(InputError, match="not fitted"):
        PCARotation().check_is_fitted()
    _small_fit().check_is_fitted()
