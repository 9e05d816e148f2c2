"""A search-only environment: torch unimportable, an index built WITH torch loads and searches the same.

The child process gets a ``sitecustomize.py`` on ``PYTHONPATH`` that installs a meta-path finder
refusing ``torch`` (and its submodules) with ImportError, as on a machine where torch is not installed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from conftest import make_corpus

from matryoshka_index import MatryoshkaAdaptor, MatryoshkaIndex

ROOT = Path(__file__).resolve().parents[1]

BLOCK_TORCH = textwrap.dedent(
    """
    import sys

    class _NoTorch:
        def find_spec(self, name, path=None, target=None):
            if name == "torch" or name.startswith("torch."):
                raise ImportError(f"No module named {name!r} (blocked: this test runs without torch)")
            return None

    sys.meta_path.insert(0, _NoTorch())
    """
)

CHILD = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    try:
        import torch  # noqa: F401
        sys.exit("torch was importable: the block did not work")
    except ImportError:
        pass
    import matryoshka_index
    from matryoshka_index import MatryoshkaAdaptor, MatryoshkaIndex
    from matryoshka_index.adaptor.pca import PCARotation  # noqa: F401
    out = {}
    index = MatryoshkaIndex.load(sys.argv[1])
    q = np.load(sys.argv[2])
    scores, ids = index.search(q, k=10)
    out["scores"], out["ids"] = scores.tolist(), ids.tolist()
    adaptor = MatryoshkaAdaptor.load(sys.argv[3])
    out["adapted"] = adaptor.transform(q, dim=16).tolist()
    out["info_device"] = index.info()["adaptor"].get("device")
    hits = index.query(q, k=10, with_payload=True)
    out["hits"] = [[[h.id, h.payload] for h in row] for row in hits]
    qindex = MatryoshkaIndex.load(sys.argv[4])  # a Qdrant (local mode) index: qdrant-client, no torch
    out["qdrant_ids"] = qindex.search(q, k=10)[1].tolist()
    try:
        MatryoshkaAdaptor(epochs=1).fit(np.random.default_rng(0).standard_normal((600, 32)).astype(np.float32))
        out["fit"] = "trained without torch?"
    except matryoshka_index.MatryoshkaError as exc:
        out["fit"] = str(exc)
    out["torch_loaded"] = sorted(m for m in sys.modules if m == "torch" or m.startswith("torch."))
    print(json.dumps(out))
    """
)


def torch_free_env(tmp_path: Path) -> dict[str, str]:
    site = tmp_path / "notorch"
    site.mkdir()
    (site / "sitecustomize.py").write_text(BLOCK_TORCH)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MINDEX_QUIET": "1"}
    env["PYTHONPATH"] = os.pathsep.join([str(site), str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    return env


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """An index built in this (torch) process with a small trained adaptor, saved, and its queries."""
    d = tmp_path_factory.mktemp("torchfree")
    x = make_corpus(1000, seed=7)
    corpus, queries = x[:900], x[900:]
    adaptor = MatryoshkaAdaptor(matryoshka_dims=(8, 16), epochs=2, batch_size=128, quiet=True).fit(corpus)
    adaptor.save(d / "adaptor")
    payloads = [{"row": i} for i in range(len(corpus))]
    index = MatryoshkaIndex.build(corpus, coarse_dim=8, adaptor=adaptor, payloads=payloads, quiet=True)
    index.save(d / "corpus.mindex")
    qindex = MatryoshkaIndex.build(
        corpus, coarse_dim=8, adaptor=adaptor, backend="qdrant", backend_options={"location": ":memory:"}, quiet=True
    )
    qindex.save(d / "qdrant.mindex")
    np.save(d / "queries.npy", queries)
    return d, adaptor, MatryoshkaIndex.load(d / "corpus.mindex"), queries


def test_torch_free_process_searches_an_index_built_with_torch(tmp_path, built):
    d, adaptor, index, queries = built
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            CHILD,
            *(str(d / f) for f in ("corpus.mindex", "queries.npy", "adaptor", "qdrant.mindex")),
        ],
        env=torch_free_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    child = json.loads(proc.stdout.strip().splitlines()[-1])
    assert child["torch_loaded"] == []
    scores, ids = index.search(queries, k=10)
    np.testing.assert_array_equal(np.array(child["ids"]), ids)
    np.testing.assert_allclose(np.array(child["scores"]), scores, rtol=0, atol=1e-6)
    np.testing.assert_allclose(np.array(child["adapted"]), adaptor.transform(queries, dim=16), rtol=0, atol=1e-6)
    assert child["info_device"] == "cpu"
    assert child["hits"] == [[[h.id, h.payload] for h in row] for row in index.query(queries, k=10, with_payload=True)]
    qindex = MatryoshkaIndex.load(d / "qdrant.mindex")
    assert child["qdrant_ids"] == qindex.search(queries, k=10)[1].tolist()
    assert "needs torch" in child["fit"]  # training says what is missing, in one line


def test_torch_free_cli_search(tmp_path, built):
    d, _, index, queries = built
    out = tmp_path / "out.jsonl"
    cmd = "from matryoshka_index.cli import main; main()"
    args = ["search", str(d / "corpus.mindex"), str(d / "queries.npy"), "-k", "5", "-o", str(out), "--quiet"]
    proc = subprocess.run(
        [sys.executable, "-c", cmd, *args],
        env=torch_free_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    _, ids = index.search(queries, k=5)
    assert len(rows) == len(queries)
    assert [r["ids"] for r in rows] == ids.tolist()
