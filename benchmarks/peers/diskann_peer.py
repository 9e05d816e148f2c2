"""DiskANN (``diskannpy`` 0.7.0, its own numpy<2 venv): the SSD index, Vamana graph + full vectors on disk,
PQ codes in RAM.

Tuning as its documentation gives it: graph degree R (32-64 for these sizes), build complexity L,
``search_memory_maximum`` sets the PQ bytes a vector keeps in RAM (``floor(budget / n)`` chunks),
search complexity L and beam width (2-4) at query time. Metric ``l2``: the vectors are unit-norm, so
its order is the inner product's. No node cache (``num_nodes_to_cache=0``): what stays in RAM is the
PQ codes and pivots; a cache would trade more RAM for fewer reads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from common import Peer

COMPLEXITY = (10, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384)


class DiskannPeer(Peer):
    library = "diskannpy"
    keeps_in_ram = (
        "PQ codes (the pq_bytes of each vector) and the PQ pivots; the Vamana graph and the full float vectors "
        "stay on disk, read with direct I/O at each hop (no node cache here)"
    )

    def prepare(self) -> None:
        import diskannpy  # noqa: F401

    def build_grid(self, n: int, d: int) -> list[dict[str, Any]]:
        return [
            {"name": f"DiskANN R{r} L100 PQ{b}", "R": r, "L": 100, "pq_bytes": b}
            for r, b in ((64, 32), (64, 64), (32, 32))
        ]

    def search_lines(self, n: int, build: dict[str, Any]) -> list[list[dict[str, Any]]]:
        return [[{"complexity": c, "beam_width": w} for c in COMPLEXITY] for w in (2, 4)]

    def build(self, data: np.ndarray, build: dict[str, Any], workdir: Path) -> dict[str, Any]:
        import diskannpy

        n = len(data)
        budget_gb = (build["pq_bytes"] + 0.5) * n / 2**30  # DiskANN: PQ chunks = floor(budget bytes / n)
        diskannpy.build_disk_index(
            data=np.ascontiguousarray(data, dtype=np.float32),
            distance_metric="l2",
            index_directory=str(workdir),
            complexity=build["L"],
            graph_degree=build["R"],
            search_memory_maximum=budget_gb,
            build_memory_maximum=4.0,
            num_threads=1,
            pq_disk_bytes=0,
            vector_dtype=np.float32,
        )
        disk = sum(p.stat().st_size for p in workdir.glob("ann*"))
        return {"disk_bytes": int(disk), "search_memory_maximum_gb": budget_gb}

    def load(self, workdir: Path, build: dict[str, Any], data_path: Path) -> None:
        import diskannpy

        d = np.load(data_path, mmap_mode="r").shape[1]
        self.index = diskannpy.StaticDiskIndex(
            index_directory=str(workdir),
            num_threads=2,  # 1 hangs at load (DiskANN issues 461/462); searches run with num_threads=1, pinned
            num_nodes_to_cache=0,
            cache_mechanism=1,
            distance_metric="l2",
            vector_dtype=np.float32,
            dimensions=d,
        )

    def search(self, queries: np.ndarray, k: int, params: dict[str, Any]) -> np.ndarray:
        res = self.index.batch_search(
            queries, k_neighbors=k, complexity=max(params["complexity"], k), num_threads=1,
            beam_width=params["beam_width"],
        )  # fmt: skip
        return np.asarray(res.identifiers if hasattr(res, "identifiers") else res[0], dtype=np.int64)

    def fixed_bytes(self, n: int, d: int, build: dict[str, Any]) -> int:
        return 256 * d * 4 + d * 4  # PQ pivots (256 per chunk over all dims) + the centroid

    def versions(self) -> dict[str, str]:
        from importlib.metadata import version

        return {"diskannpy": version("diskannpy")}
