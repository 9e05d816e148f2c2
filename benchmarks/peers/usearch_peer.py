"""usearch 2.26.6 (the numpy-2 peers venv): HNSW with f32, i8 or b1 vectors.

Tuning as its docs give it: connectivity (M, 16 default; 16 and 32 here), expansion_add 128,
expansion_search swept at query time; dtype ``f32`` and ``i8`` searched as they are (inner product),
``b1`` (sign bits, Hamming) as a candidate stage whose top ``candidates`` are reranked at full
dimension from the memory-mapped float file by the same FAISS call the FAISS baselines use.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from common import Peer

EF = (10, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)
CANDIDATES = (32, 64, 128, 256, 512, 1024, 2048)


class UsearchPeer(Peer):
    library = "usearch"
    keeps_in_ram = (
        "the vectors at the chosen dtype (f32 4 d B, i8 d B, b1 d/8 B) and the graph links, in the process heap; "
        "b1 rows read the float vectors for the rerank from the memory-mapped file (page cache)"
    )

    def prepare(self) -> None:
        import faiss  # noqa: F401
        from usearch.index import Index  # noqa: F401

    def build_grid(self, n: int, d: int) -> list[dict[str, Any]]:
        grid = [
            {"name": f"usearch {t} M{m}", "dtype": t, "connectivity": m, "expansion_add": 128}
            for t in ("f32", "i8")
            for m in (16, 32)
        ]
        grid.append({"name": "usearch b1 M32 + rerank", "dtype": "b1", "connectivity": 32, "expansion_add": 128})
        return grid

    def search_lines(self, n: int, build: dict[str, Any]) -> list[list[dict[str, Any]]]:
        if build["dtype"] == "b1":
            return [[{"ef": c, "candidates": c} for c in CANDIDATES]]
        return [[{"ef": e} for e in EF]]

    def _index(self, d: int, build: dict[str, Any]) -> Any:
        from usearch.index import Index

        binary = build["dtype"] == "b1"
        return Index(
            ndim=d,
            metric="hamming" if binary else "ip",
            dtype=build["dtype"],
            connectivity=build["connectivity"],
            expansion_add=build["expansion_add"],
        )

    def build(self, data: np.ndarray, build: dict[str, Any], workdir: Path) -> dict[str, Any]:
        n, d = data.shape
        index = self._index(d, build)
        for start in range(0, n, 65536):
            chunk = np.ascontiguousarray(data[start : start + 65536], dtype=np.float32)
            if build["dtype"] == "b1":
                chunk = np.packbits(chunk > 0, axis=1)
            index.add(np.arange(start, start + len(chunk)), chunk, threads=1)
        index.save(str(workdir / "index.usearch"))
        return {}

    def load(self, workdir: Path, build: dict[str, Any], data_path: Path) -> None:
        full = np.load(data_path, mmap_mode="r")
        self.binary = build["dtype"] == "b1"
        self.index = self._index(full.shape[1], build)
        self.index.load(str(workdir / "index.usearch"))
        if self.binary:
            import faiss

            self.faiss, self.full = faiss, full

    def search(self, queries: np.ndarray, k: int, params: dict[str, Any]) -> np.ndarray:
        self.index.expansion_search = max(params["ef"], k)
        if not self.binary:
            return np.asarray(self.index.search(queries, k, threads=1).keys, dtype=np.int64)
        c = params["candidates"]
        rows = np.asarray(self.index.search(np.packbits(queries > 0, axis=1), c, threads=1).keys, dtype=np.int64)
        rows = np.where(rows < len(self.full), rows, -1)  # unfilled slots hold a sentinel key
        from faiss_peer import rerank

        return rerank(self.faiss, self.full, queries, rows, k)

    def library_bytes(self) -> int | None:
        return int(self.index.memory_usage)

    def versions(self) -> dict[str, str]:
        from importlib.metadata import version

        return {"usearch": version("usearch")}
