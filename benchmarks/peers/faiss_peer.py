"""Tuned FAISS baselines: what a FAISS user would build instead of us (project venv, faiss-cpu).

Every code-scan baseline reranks its top ``candidates`` at full dimension with FAISS's one C++ call
(``knn_inner_products_by_idx``, what ``IndexRefineFlat`` computes) over the same memory-mapped float
file as ours, so the float vectors are page cache for them as for us.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from common import Peer

CANDIDATES = (10, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048, 3072, 4096)
EF = (16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)
NPROBE = (4, 8, 16, 32, 64, 128)


class FaissPeer(Peer):
    library = "faiss"
    keeps_in_ram = (
        "the FAISS index (codes, graph links or inverted lists, PCA/OPQ/ITQ matrices, codebooks, centroids); "
        "full-dim HNSW keeps the float vectors in its graph; the others read the float vectors for the "
        "rerank from the memory-mapped file (page cache)"
    )

    def prepare(self) -> None:
        import faiss  # noqa: F401

    def build_grid(self, n: int, d: int) -> list[dict[str, Any]]:
        nlist = round(4 * np.sqrt(n))
        return [
            {"name": "PCA64,PQ32x4fs + rerank", "factory": "PCA64,PQ32x4fs", "refine": True},
            {"name": "PCA64,PQ64x4fs + rerank", "factory": "PCA64,PQ64x4fs", "refine": True},
            {"name": "OPQ32_64,PQ32x4fs + rerank", "factory": "OPQ32_64,PQ32x4fs", "refine": True},
            {"name": f"PCA64,IVF{nlist},PQ32x4fs + rerank", "factory": f"PCA64,IVF{nlist},PQ32x4fs", "refine": True},
            {"name": "ITQ256,LSHt + rerank (centred ITQ sign codes)", "factory": "ITQ256,LSHt", "refine": True},
            {"name": "PCA64,HNSW32 + rerank", "factory": "PCA64,HNSW32", "ef_construction": 100, "refine": True},
            # the slow full-dim graph build last: a run stopped at a deadline loses it, not the code scans
            {"name": "HNSW32,Flat (full dim)", "factory": "HNSW32,Flat", "ef_construction": 100, "refine": False},
        ]

    def search_lines(self, n: int, build: dict[str, Any]) -> list[list[dict[str, Any]]]:
        f = build["factory"]
        if not build["refine"]:
            return [[{"ef": e} for e in EF]]
        if ",IVF" in f:
            return [[{"nprobe": p, "candidates": c} for c in CANDIDATES] for p in NPROBE]
        if "HNSW" in f:
            return [[{"ef": max(c, 16), "candidates": c} for c in CANDIDATES]]
        return [[{"candidates": c} for c in CANDIDATES]]

    def build(self, data: np.ndarray, build: dict[str, Any], workdir: Path) -> dict[str, Any]:
        import faiss

        metric = faiss.METRIC_L2 if "LSH" in build["factory"] else faiss.METRIC_INNER_PRODUCT  # unit vectors
        index = faiss.index_factory(data.shape[1], build["factory"], metric)
        if "ef_construction" in build:
            hnsw = _hnsw(index)
            hnsw.efConstruction = build["ef_construction"]
        sample = np.asarray(data[np.sort(np.random.default_rng(0).permutation(len(data))[:65536])])
        if not index.is_trained:
            index.train(sample)
        fixed = int(faiss.serialize_index(index).size)  # trained and empty: matrices, codebooks, centroids
        for start in range(0, len(data), 65536):
            index.add(np.ascontiguousarray(data[start : start + 65536]))
        faiss.write_index(index, str(workdir / "index.faiss"))
        return {"fixed_bytes": fixed, "serialized_bytes": int((workdir / "index.faiss").stat().st_size)}

    def load(self, workdir: Path, build: dict[str, Any], data_path: Path) -> None:
        import faiss

        self.faiss = faiss
        self.index = faiss.read_index(str(workdir / "index.faiss"))
        self.full = np.load(data_path, mmap_mode="r")
        self.build_info = build

    def search(self, queries: np.ndarray, k: int, params: dict[str, Any]) -> np.ndarray:
        faiss = self.faiss
        c = params.get("candidates", k)
        if "ef" in params:
            _hnsw(self.index).efSearch = params["ef"]
        if "nprobe" in params:
            faiss.extract_index_ivf(self.index).nprobe = params["nprobe"]
        rows = self.index.search(queries, max(c, k))[1]
        if not self.build_info["refine"]:
            return rows
        return rerank(self.faiss, self.full, queries, rows, k)

    def fixed_bytes(self, n: int, d: int, build: dict[str, Any]) -> int:
        return int(build.get("fixed_bytes", 0))

    def library_bytes(self) -> int | None:
        return int(self.faiss.serialize_index(self.index).size)

    def versions(self) -> dict[str, str]:
        import faiss

        return {"faiss-cpu": faiss.__version__}


def _hnsw(index: Any) -> Any:
    import faiss

    inner = faiss.downcast_index(index.index) if isinstance(index, faiss.IndexPreTransform) else index
    return faiss.downcast_index(inner).hnsw


def rerank(faiss: Any, full: np.ndarray, q: np.ndarray, rows: np.ndarray, k: int) -> np.ndarray:
    """Best ``k`` of the candidate rows by full inner product, one C++ call (as our backend does)."""
    nq, c = rows.shape
    big = np.iinfo(np.int64).max
    rows = np.where(rows >= 0, rows, big)
    if (rows == big).any():
        rows = np.sort(rows, axis=1)
    rows = np.ascontiguousarray(rows)
    vals = np.empty((nq, k), dtype=np.float32)
    out = np.empty((nq, k), dtype=np.int64)
    q = np.ascontiguousarray(q, dtype=np.float32)
    faiss.knn_inner_products_by_idx(
        faiss.swig_ptr(q), faiss.swig_ptr(full), faiss.swig_ptr(rows),
        full.shape[1], nq, len(full), c, k, faiss.swig_ptr(vals), faiss.swig_ptr(out), c,
    )  # fmt: skip
    return out
