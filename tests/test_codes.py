"""Coarse codes of the FAISS backend: every structure x code pair builds, saves, loads, reranks exactly."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import brute_force, make_corpus, normalize

from matryoshka_index import InputError, MatryoshkaIndex
from matryoshka_index.backends.faiss_backend import FaissBackend
from matryoshka_index.backends.faiss_codes import CODES, PAIRS, REFUSED, STRUCTURES
from matryoshka_index.quality.index_recall import recall_at_k

COARSE = 16


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    x = make_corpus(1225, 32, seed=3)
    return x[:1200], x[1200:]


def build(x: np.ndarray, structure: str, code: str, **kw) -> MatryoshkaIndex:
    kw.setdefault("backend_options", {"code": code})
    return MatryoshkaIndex.build(x, coarse_dim=COARSE, adaptor="pca", index=structure, quiet=True, **kw)


def assert_exact_scores(index: MatryoshkaIndex, x: np.ndarray, q: np.ndarray, scores, found) -> None:
    """Returned scores are the full-dim inner products of the returned ids (rows = ids here), best first."""
    assert (found >= 0).all()
    full = np.einsum("qkd,qd->qk", normalize(x)[found], normalize(q))
    np.testing.assert_allclose(scores, full, rtol=1e-5, atol=1e-5)
    assert (np.diff(scores, axis=1) <= 1e-6).all()


def test_every_pair_is_listed_once_and_one_is_refused():
    assert len(PAIRS) == len(STRUCTURES) * len(CODES) - len(REFUSED) == 17
    assert ("hnsw", "rabitq") in REFUSED


@pytest.mark.parametrize(("structure", "code"), PAIRS)
def test_pair_builds_saves_loads_and_reranks_exactly(data, tmp_path, structure, code):
    x, q = data
    index = build(x, structure, code)
    info = index.info()["backend"]
    assert (info["structure"], info["code"]) == (structure, code)
    scores, found = index.search(q, k=10, candidates=300)
    assert_exact_scores(index, x, q, scores, found)
    _, truth = brute_force(x, q, 10)
    # 300 of 1,200 candidates from a 16-dim PCA prefix; 16 sign bits of PCA dims are the weakest code
    assert recall_at_k(found, truth) >= (0.5 if code == "binary" else 0.8)
    index.save(tmp_path / "i.mindex")
    loaded = MatryoshkaIndex.load(tmp_path / "i.mindex")
    assert (loaded.backend.structure, loaded.backend.code) == (structure, code)
    s2, f2 = loaded.search(q, k=10, candidates=300)
    np.testing.assert_array_equal(f2, found)
    np.testing.assert_allclose(s2, scores, rtol=1e-6, atol=1e-6)
    mem = loaded.backend.memory()
    assert mem["bookkeeping_bytes_per_vector"] == 0  # ids memory-mapped, no removals, no lookup built
    assert mem["page_cache_bytes_per_vector"] == 32 * 4 + 8
    assert mem["resident_bytes"] == (tmp_path / "i.mindex" / "coarse.faiss").stat().st_size


@pytest.mark.parametrize(("structure", "code"), PAIRS)
def test_removed_rows_are_never_returned_and_scores_stay_exact(data, tmp_path, structure, code):
    x, q = data
    index = build(x, structure, code)
    _, before = index.search(q, k=10, candidates=300)
    gone = np.unique(before[:, :3])
    assert index.remove(gone) == len(gone)
    scores, found = index.search(q, k=10, candidates=300)
    assert not np.isin(found, gone).any()
    assert_exact_scores(index, x, q, scores, found)
    index.save(tmp_path / "r.mindex")
    s2, f2 = MatryoshkaIndex.load(tmp_path / "r.mindex").search(q, k=10, candidates=300)
    assert not np.isin(f2, gone).any()
    assert_exact_scores(index, x, q, s2, f2)


def test_flat_codes_with_every_candidate_equal_brute_force(data):
    x, q = data
    for code in ("sq8", "binary", "rabitq"):
        scores, found = build(x, "flat", code).search(q, k=10, candidates=len(x))
        want_s, want_i = brute_force(x, q, 10)
        np.testing.assert_array_equal(found, want_i)
        np.testing.assert_allclose(scores, want_s, rtol=1e-5, atol=1e-5)


def test_refused_pair_says_which_pairs_faiss_can_do(data):
    with pytest.raises(InputError) as err:
        build(data[0], "hnsw", "rabitq")
    msg = str(err.value)
    assert "\n" not in msg and "L2 metric only" in msg and "flat+rabitq" in msg and "hnsw+sq8" in msg
    with pytest.raises(InputError, match="unknown coarse code 'int3'"):
        FaissBackend.create(coarse_dim=16, full_dim=32, code="int3")
    with pytest.raises(InputError, match="multiple of 8"):
        FaissBackend.create(coarse_dim=12, full_dim=32, code="binary")
    with pytest.raises(InputError, match="index='pq' means code='pq4'"):
        FaissBackend.create(coarse_dim=16, full_dim=32, index="pq", code="sq8")


def test_pq_alias_is_flat_pq4(data):
    index = MatryoshkaIndex.build(data[0], coarse_dim=COARSE, adaptor="pca", index="pq", quiet=True)
    info = index.info()["backend"]
    assert (info["coarse_index"], info["structure"], info["code"]) == ("pq", "flat", "pq4")


def test_measured_resident_bytes_follow_the_code(data, tmp_path):
    x, _ = data
    per = {}
    for code in ("float", "sq8", "sq4", "binary"):
        build(x, "flat", code).save(tmp_path / code)
        per[code] = MatryoshkaIndex.load(tmp_path / code).backend.resident_bytes_per_vector()
    # float: 4 bytes a dim + the IndexIDMap's 8-byte label; sq8 1, sq4 1/2, binary 1/8 byte a dim,
    # plus a few hundred bytes of header and trained ranges shared by the 1,200 vectors.
    assert 4 * COARSE + 8 <= per["float"] < 4 * COARSE + 9
    assert COARSE <= per["sq8"] < COARSE + 1
    assert COARSE / 2 <= per["sq4"] < COARSE / 2 + 1
    assert COARSE / 8 <= per["binary"] < COARSE / 8 + 1
    info = MatryoshkaIndex.load(tmp_path / "binary").info()
    assert info["backend"]["ram_bytes_per_vector"] == per["binary"]
    assert info["backend"]["memory"]["measured_as"].startswith("serialised FAISS coarse index")


def test_itq_balance_keeps_float_order_and_helps_sign_bits(data, tmp_path):
    x, q = data
    _, truth = brute_force(x, q, 10)
    plain = build(x, "flat", "float")
    rotated = build(x, "flat", "float", backend_options={"code": "float", "balance": "itq"})
    cq = plain._prepare(q)[0]
    np.testing.assert_array_equal(rotated.backend.coarse_search(cq, 20)[1], plain.backend.coarse_search(cq, 20)[1])
    recall = {}
    for balance in ("none", "itq"):
        index = MatryoshkaIndex.build(
            x, coarse_dim=COARSE, adaptor="pca", backend_options={"code": "binary", "balance": balance}, quiet=True
        )
        recall[balance] = recall_at_k(index.search(q, k=10, candidates=100)[1], truth)
    assert recall["itq"] > recall["none"] + 0.2  # measured 0.87 against 0.40: PCA's first bits carry little
    index.save(tmp_path / "b.mindex")
    assert (tmp_path / "b.mindex" / "balance.npy").is_file()
    loaded = MatryoshkaIndex.load(tmp_path / "b.mindex")
    assert loaded.backend.balance == "itq"
    np.testing.assert_array_equal(loaded.search(q, k=10, candidates=100)[1], index.search(q, k=10, candidates=100)[1])
    with pytest.raises(InputError, match="unknown balance 'pca'"):
        FaissBackend.create(coarse_dim=16, full_dim=32, balance="pca")


# ---------------------------------------------------------------------- first-class code= and ram_budget=
def test_code_is_a_build_argument(data, tmp_path):
    x, _q = data
    index = MatryoshkaIndex.build(x, coarse_dim=COARSE, adaptor="pca", code="sq8", quiet=True)
    index.save(tmp_path / "c.mindex")
    info = MatryoshkaIndex.load(tmp_path / "c.mindex").info()
    assert info["code"] == "sq8" and COARSE <= info["memory"]["per_vector_bytes"] < COARSE + 1
    with pytest.raises(InputError, match="unknown coarse code 'int2'"):
        MatryoshkaIndex.build(x, coarse_dim=COARSE, code="int2", quiet=True)


def test_ram_budget_picks_a_configuration_within_the_budget_and_says_why(data):
    x, _q = data
    index = MatryoshkaIndex.build(x, adaptor="pca", ram_budget=10, quiet=True)
    record = index.info()["ram_budget"]
    chosen = [o for o in record["options"] if o["verdict"] == "chosen"]
    assert len(chosen) == 1 and chosen[0]["bytes_per_vector"] <= 10 and record["chosen"] == chosen[0]["option"]
    assert index.backend.memory()["per_vector_bytes"] - index.backend.memory()["bookkeeping_bytes_per_vector"] <= 10
    assert any(o["verdict"].startswith("rejected: its code alone") for o in record["options"])  # float-32: 128 B
    assert index.calibration["reached"]
    fastest = max((o for o in record["options"] if o["verdict"] != "chosen" and "feasible" in o["verdict"]),
                  key=lambda o: o["queries_per_s"], default=None)  # fmt: skip
    assert fastest is None or fastest["queries_per_s"] <= chosen[0]["queries_per_s"]
    small = MatryoshkaIndex.build(x, adaptor="pca", ram_budget=10, optimize="memory", quiet=True)
    kept = next(o for o in small.info()["ram_budget"]["options"] if o["verdict"] == "chosen")
    feasible = [o for o in small.info()["ram_budget"]["options"] if "feasible" in o["verdict"] or o is kept]
    assert kept["bytes_per_vector"] == min(o["bytes_per_vector"] for o in feasible)


def test_impossible_ram_budget_names_the_smallest_feasible_one(data):
    with pytest.raises(InputError) as err:
        MatryoshkaIndex.build(data[0], adaptor="pca", ram_budget=0.5, quiet=True)
    msg = str(err.value)
    assert "\n" not in msg and "the smallest feasible is" in msg and "use ram_budget >=" in msg
    with pytest.raises(InputError, match="ram_budget: must be a positive number"):
        MatryoshkaIndex.build(data[0], ram_budget=-3, quiet=True)
    with pytest.raises(InputError, match="optimize: must be one of speed, memory"):
        MatryoshkaIndex.build(data[0], ram_budget=8, optimize="cheap", quiet=True)


def test_cli_build_with_a_ram_budget(data, tmp_path):
    import json

    from click.testing import CliRunner

    from matryoshka_index.cli import main

    np.save(tmp_path / "x.npy", data[0])
    out = tmp_path / "b.mindex"
    res = CliRunner().invoke(
        main, ["build", str(tmp_path / "x.npy"), "-o", str(out), "--pca", "--ram-budget", "10", "-q"]
    )
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output.strip().splitlines()[-1])
    assert summary["ram_budget_chose"].startswith("coarse_dim=")
    info = MatryoshkaIndex.load(out).info()
    assert info["ram_budget"]["chosen"] == summary["ram_budget_chose"] and info["memory"]["per_vector_bytes"] <= 10


def test_the_torch_engine_refuses_coded_or_balanced_prefixes(data):
    from matryoshka_index.device import resolve_device
    from matryoshka_index.index.device_stage import attach_device

    for options in ({"code": "sq8"}, {"code": "float", "balance": "itq"}):
        be = build(data[0], "flat", "float", backend_options=options).backend
        assert not be.mirrorable
        with pytest.raises(InputError, match="torch engine serves FAISS flat"):
            attach_device(be, resolve_device("cpu"), engine="torch")
        assert attach_device(be, resolve_device("cpu")) is be  # auto: stays on FAISS
    assert build(data[0], "flat", "float").backend.mirrorable


def test_ram_budget_trial_sees_the_full_index_fast_scan_padding():
    from matryoshka_index.index.budget import TRIAL_ROWS, trial_size

    for n in (49_000, 1_000_000, 20_500, 33_333):
        t = trial_size(n, 500)
        assert t <= TRIAL_ROWS and t % 32 == n % 32  # as many vectors short of a full block as the corpus
    assert trial_size(3_000, 300) == 2_680  # a small corpus: the rows but the queries, less the remainder
    assert trial_size(40, 10) == 30  # too few rows to match: all of them


def test_built_index_over_its_budget_is_recorded_and_warned(caplog):
    from matryoshka_index.index.budget import check_built_bytes

    record = {"ram_budget": 16.0, "trial_rows": 19_976, "chosen": "coarse_dim=64 index=flat code=pq4 pq_m=32"}
    within = check_built_bytes(record, {"per_vector_bytes": 24.0, "bookkeeping_bytes_per_vector": 8.0})
    assert within["built_bytes_per_vector"] == 16.0 and "warning" not in within
    with caplog.at_level("WARNING", logger="matryoshka_index.index.budget"):
        over = check_built_bytes(record, {"per_vector_bytes": 24.01, "bookkeeping_bytes_per_vector": 8.0})
    assert over["built_bytes_per_vector"] == 16.01 and "0.01 over the budget of 16" in over["warning"]
    assert "\n" not in over["warning"] and any("ram_budget" in r.message for r in caplog.records)
    assert "warning" not in record  # the record passed in is left as it was
    # the chosen option is fast-scan: 16.01 at 29,000 rows is 16 B of codes + the last block's padding
    chosen = {"verdict": "chosen", "index": "flat", "options": {"code": "pq4", "pq_m": 32}}
    fast_scan = {**record, "corpus_rows": 29_000, "options": [chosen]}
    padded = check_built_bytes(fast_scan, {"per_vector_bytes": 24.01, "bookkeeping_bytes_per_vector": 8.0})
    assert padded["built_bytes_per_vector"] == 16.01 and "warning" not in padded
    really_over = check_built_bytes(fast_scan, {"per_vector_bytes": 24.5, "bookkeeping_bytes_per_vector": 8.0})
    assert "keeps 16.49 B/vector" in really_over["warning"]


def test_block_padding_left_out_is_fast_scans_own_layout():
    """The padding-free bytes of an index of 1,000 rows (24 empty slots in its last block of 32) are the bytes
    of the same index at 1,024 rows (no empty slot), as FAISS measures them, for each fast-scan code."""
    from matryoshka_index.index.budget import padded_rows, resident_bytes_per_vector, without_block_padding

    x = make_corpus(1024, 32, seed=4)
    for code, options in (("pq4", {"pq_m": 8}), ("rabitq", {})):
        per = {}
        for n in (1000, 1024):
            index = MatryoshkaIndex.build(
                x[:n], coarse_dim=COARSE, adaptor="pca", code=code, backend_options=options, candidates=50, quiet=True
            )
            per[n] = resident_bytes_per_vector(index.backend.memory())
        assert per[1000] > per[1024] and padded_rows(1000) == 1024
        assert (
            without_block_padding(per[1000], 1000, code, "flat")
            == per[1024]
            == without_block_padding(per[1024], 1024, code, "flat")
        )
    assert without_block_padding(16.01, 29_000, "sq8", "flat") == 16.01  # no blocks: nothing left out


def test_the_balance_rotation_is_not_taken_off_a_vectors_bytes(data):
    """ITQ's rotation is a fixed cost: a balanced prefix keeps as many bytes a vector as the same code without it."""
    from matryoshka_index.index.budget import resident_bytes_per_vector

    per = {}
    for balance in ("none", "itq"):
        index = build(data[0], "flat", "binary", backend_options={"code": "binary", "balance": balance})
        per[balance] = resident_bytes_per_vector(index.backend.memory())
    assert per == {"none": COARSE / 8, "itq": COARSE / 8}  # 16 sign bits; before: 1.09 with the rotation


@pytest.fixture
def pq4x32_only(monkeypatch):
    """The budget's grid cut to one option, 64-dim PQ4 with 32 sub-quantizers (16-byte codes, fast-scan)."""
    from matryoshka_index.index import budget

    monkeypatch.setattr(budget, "DIMS", (64,))
    monkeypatch.setattr(budget, "GRID", (("pq4", "flat", lambda m: {"pq_m": m // 2}),))


def test_a_round_budget_keeps_the_option_only_its_padding_puts_over(pq4x32_only):
    x = make_corpus(2000, 96, seed=6)  # 2,000 rows: 16 empty slots in the last block of 32
    index = MatryoshkaIndex.build(x, adaptor="pca", ram_budget=16, quiet=True)
    record = index.info()["ram_budget"]
    chosen = next(o for o in record["options"] if o["verdict"] == "chosen")
    assert chosen["options"] == {"code": "pq4", "pq_m": 32} and index.coarse_dim == 64
    assert chosen["trial_bytes_per_vector"] > 16 and chosen["bytes_per_vector"] == 16  # measured 16.14 on 1,776 rows
    assert chosen["corpus_bytes_per_vector"] == round(16 * 2016 / 2000, 2)
    memory = index.backend.memory()
    assert memory["per_vector_bytes"] - memory["bookkeeping_bytes_per_vector"] > 16  # 16.13 at 2,000 rows
    assert record["built_bytes_per_vector"] > 16 and "warning" not in record


def _smallest_named(message: str) -> float:
    assert "\n" not in message
    return float(message.rsplit("use ram_budget >= ", 1)[1])


def test_the_refusal_names_the_exact_smallest_budget(pq4x32_only, monkeypatch):
    from matryoshka_index.index import budget

    x = make_corpus(2000, 96, seed=6)
    with pytest.raises(InputError) as err:
        MatryoshkaIndex.build(x, adaptor="pca", ram_budget=15, quiet=True)
    assert _smallest_named(str(err.value)) == 16  # the padding-free 16, not 17 (the ceiling of 16.14)
    assert MatryoshkaIndex.build(x, adaptor="pca", ram_budget=16, quiet=True).coarse_dim == 64
    # a graph's bytes are no round number: the one named is exact, and one hundredth less is refused
    monkeypatch.setattr(budget, "DIMS", (32,))
    monkeypatch.setattr(budget, "GRID", (("float", "hnsw", lambda m: {}),))
    with pytest.raises(InputError) as err:
        MatryoshkaIndex.build(x, adaptor="pca", ram_budget=1, quiet=True)
    named = _smallest_named(str(err.value))
    assert named != int(named)
    assert MatryoshkaIndex.build(x, adaptor="pca", ram_budget=named, quiet=True).backend.structure == "hnsw"
    with pytest.raises(InputError, match=f"use ram_budget >= {named:g}"):
        MatryoshkaIndex.build(x, adaptor="pca", ram_budget=named - 0.01, quiet=True)
