"""The fast subset of the mixed load in ``benchmarks/faults.py``, and two processes opening one index.

Eight threads search while one adds, removes and re-adds batches, for a few seconds: no exception,
no returned id that was not live at some moment of that search, every score the exact score of its
id's vector, and the final contents exactly the base rows plus the batches last added.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import _faults_lib as fl
import _load_lib as ll


def _edge_available() -> bool:
    try:
        import qdrant_edge  # noqa: F401
    except ImportError:
        return False
    return True


BACKENDS = ["faiss", pytest.param("qdrant-edge", marks=pytest.mark.skipif(not _edge_available(), reason="no edge"))]


@pytest.mark.parametrize("backend", BACKENDS)
def test_searches_beside_a_mutating_thread(backend):
    r = ll.mixed_load(backend, 3.0, threads=8, n=800, dim=32)
    assert r.errors == []
    assert r.searches > 0 and r.mutations > 1  # both sides really ran
    assert r.bad_ids == 0 and r.bad_scores == 0
    assert r.final_ok, r.final_note


@pytest.mark.parametrize("backend", BACKENDS)
def test_two_processes_open_one_saved_index(backend, tmp_path):
    from matryoshka_index import MatryoshkaIndex

    x = fl.synthetic(500, 32, 1)
    MatryoshkaIndex.build(x, coarse_dim=8, adaptor="pca", backend=backend, quiet=True).save(tmp_path / "idx")
    np.save(tmp_path / "q.npy", fl.synthetic(20, 32, 2))
    r = ll.two_processes(tmp_path / "idx", tmp_path / "q.npy", tmp_path / "tmp", hold_s=1.0)
    # A saved index is opened read-only (qdrant-edge works on a private copy of the shard), so both
    # processes search it at once and get the same answers.
    assert r["both_searched"], r["processes"]
