"""LoRANN 1.0.1 (the numpy-2 peers venv): an inverted file whose points are scored by a per-cluster
reduced-rank regression in a globally reduced space, the top candidates rescored exactly.

Tuning as its docstrings give it: ``n_clusters`` about sqrt(n), ``global_dim`` 128 for
200 <= d <= 1000, ``rank`` 16/32/64 at ``quantization_bits`` 4 and 8, and at query time
``clusters_to_search`` x ``points_to_rerank`` swept. Each setting is built twice where the run has
training queries apart from the test queries (``run.py`` writes ``train_queries.npy`` for the real set:
the other MiniLM docstring rows of dev-docstring-qa, corpus and train-split queries, none equal to a
test query): with its default training queries (the index points) and with those (``build(...,
training_queries=)``, its query-aware mode).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from common import Peer

CLUSTERS = (2, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 160, 192)
RERANK = (10, 20, 40, 80, 160, 320, 640, 1280)


class LorannPeer(Peer):
    library = "lorann"
    keeps_in_ram = (
        "per point its reduced-rank code (rank bytes at 8 bits, half at 4) and, for the rescoring, the "
        "float dataset (4 d B) in the index; per cluster its parameter matrices; the global projection"
    )

    def prepare(self) -> None:
        import lorann  # noqa: F401

    def build_grid(self, n: int, d: int, train_queries: str | None = None) -> list[dict[str, Any]]:
        clusters = max(2, round(math.sqrt(n)))
        grid = [
            {"name": f"LoRANN c{clusters} s128 r{r} {b}-bit", "clusters": clusters, "global_dim": 128, "rank": r,
             "bits": b}
            for b in (8, 4)
            for r in (32, 64, 16)
        ]  # fmt: skip
        if train_queries:
            grid += [{**g, "name": g["name"] + " + train queries", "train_queries": train_queries} for g in grid]
        return grid

    def search_lines(self, n: int, build: dict[str, Any]) -> list[list[dict[str, Any]]]:
        clusters = [c for c in CLUSTERS if c < build["clusters"]] + [build["clusters"]]  # up to every cluster
        return [[{"clusters": c, "rerank": r} for r in RERANK] for c in clusters]

    def build(self, data: np.ndarray, build: dict[str, Any], workdir: Path) -> dict[str, Any]:
        import lorann

        data = np.ascontiguousarray(data, dtype=np.float32)
        index = lorann.LorannIndex(
            data, n_clusters=build["clusters"], global_dim=min(build["global_dim"], data.shape[1] // 32 * 32),
            quantization_bits=build["bits"], rank=build["rank"], distance=lorann.IP,
        )  # fmt: skip
        if build.get("train_queries"):
            tq = np.ascontiguousarray(np.load(build["train_queries"]), dtype=np.float32)
            index.build(n_threads=1, training_queries=tq)
        else:
            index.build(n_threads=1)
        index.save(str(workdir / "index.lorann"))
        return {}

    def load(self, workdir: Path, build: dict[str, Any], data_path: Path) -> None:
        import lorann

        self.index = lorann.LorannIndex.load(str(workdir / "index.lorann"))

    def search(self, queries: np.ndarray, k: int, params: dict[str, Any]) -> np.ndarray:
        ids = self.index.search(queries, k, params["clusters"], max(params["rerank"], k), n_threads=1)
        return np.asarray(ids, dtype=np.int64)

    def fixed_bytes(self, n: int, d: int, build: dict[str, Any]) -> int:
        s, r, c = min(build["global_dim"], d // 32 * 32), build["rank"], build["clusters"]
        return c * d * 4 + d * s * 4 + c * s * r * build["bits"] // 8  # centroids, projection, per-cluster A

    def versions(self) -> dict[str, str]:
        from importlib.metadata import version

        return {"lorann": version("lorann")}
