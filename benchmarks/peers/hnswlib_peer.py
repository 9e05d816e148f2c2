"""hnswlib 0.8.0 (the numpy-2 peers venv): HNSW over the float vectors, inner product.

Tuning as its README gives it: M (16-48 for high-dimensional data; 16 and 32 here),
ef_construction 200, ef at query time (>= k) swept.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from common import Peer

EF = (10, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)


class HnswlibPeer(Peer):
    library = "hnswlib"
    keeps_in_ram = "the float vectors (4 d B each) and the graph links (2M on layer 0), all in the process heap"

    def prepare(self) -> None:
        import hnswlib  # noqa: F401

    def build_grid(self, n: int, d: int) -> list[dict[str, Any]]:
        return [{"name": f"hnswlib M{m} efC200", "M": m, "ef_construction": 200} for m in (16, 32)]

    def search_lines(self, n: int, build: dict[str, Any]) -> list[list[dict[str, Any]]]:
        return [[{"ef": e} for e in EF]]

    def build(self, data: np.ndarray, build: dict[str, Any], workdir: Path) -> dict[str, Any]:
        import hnswlib

        n, d = data.shape
        index = hnswlib.Index(space="ip", dim=d)
        index.init_index(max_elements=n, ef_construction=build["ef_construction"], M=build["M"], random_seed=0)
        index.set_num_threads(1)
        for start in range(0, n, 65536):
            chunk = np.ascontiguousarray(data[start : start + 65536], dtype=np.float32)
            index.add_items(chunk, np.arange(start, start + len(chunk)))
        index.save_index(str(workdir / "index.hnswlib"))
        return {}

    def load(self, workdir: Path, build: dict[str, Any], data_path: Path) -> None:
        import hnswlib

        n, d = np.load(data_path, mmap_mode="r").shape
        self.index = hnswlib.Index(space="ip", dim=d)
        self.index.load_index(str(workdir / "index.hnswlib"), max_elements=n)
        self.index.set_num_threads(1)

    def search(self, queries: np.ndarray, k: int, params: dict[str, Any]) -> np.ndarray:
        self.index.set_ef(max(params["ef"], k))
        return self.index.knn_query(queries, k=k, num_threads=1)[0].astype(np.int64)

    def versions(self) -> dict[str, str]:
        from importlib.metadata import version

        return {"hnswlib": version("hnswlib")}
