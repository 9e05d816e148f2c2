"""ScaNN 1.4.2 (the numpy-2 peers venv): a k-means tree, anisotropic 4-bit AH codes scored first, the
top candidates reordered exactly.

Tuning as its docs give it (``docs/algorithms.md``): ``num_leaves`` about sqrt(n), ``score_ah`` with
``dimensions_per_block`` 2 (more accurate) or 4 (smaller), ``anisotropic_quantization_threshold`` 0.2
for dot product, ``reorder`` with float32 (or int8: generous, 4x less for the reordering store), and at
query time ``leaves_to_search`` x ``pre_reorder_num_neighbors`` swept. Also brute-force AH (no tree).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from common import Peer

LEAVES_TO_SEARCH = (2, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 160, 192)
REORDER = (20, 30, 50, 80, 120, 200, 300, 500, 800)


class ScannPeer(Peer):
    library = "scann"
    keeps_in_ram = (
        "the AH codes (d/dims_per_block 4-bit codes: 96 B at 2 dims/block, 48 B at 4), the tree's centroids "
        "and, for the reorder, the whole dataset resident in the process (float32 4 d B, or int8 d B + scales)"
    )

    def prepare(self) -> None:
        import scann  # noqa: F401

    def build_grid(self, n: int, d: int) -> list[dict[str, Any]]:
        leaves = max(2, round(math.sqrt(n)))
        grid = [
            {"name": f"ScaNN tree{leaves} AH{dpb} reorder {rq}", "leaves": leaves, "dpb": dpb, "reorder": rq}
            for dpb, rq in ((2, "float32"), (4, "float32"), (2, "int8"), (4, "int8"))
        ]
        grid.append({"name": "ScaNN AH2 brute force reorder float32", "leaves": 0, "dpb": 2, "reorder": "float32"})
        return grid

    def search_lines(self, n: int, build: dict[str, Any]) -> list[list[dict[str, Any]]]:
        if not build["leaves"]:
            return [[{"reorder": r} for r in REORDER]]
        leaves = [s for s in LEAVES_TO_SEARCH if s < build["leaves"]] + [build["leaves"]]  # up to every leaf
        return [[{"leaves": s, "reorder": r} for r in REORDER] for s in leaves]

    def build(self, data: np.ndarray, build: dict[str, Any], workdir: Path) -> dict[str, Any]:
        import scann
        from scann.scann_ops.py.scann_builder import ReorderType

        data = np.ascontiguousarray(data, dtype=np.float32)
        n = len(data)
        b = scann.scann_ops_pybind.builder(data, 10, "dot_product").set_n_training_threads(1)
        if build["leaves"]:
            b = b.tree(
                num_leaves=build["leaves"],
                num_leaves_to_search=max(1, build["leaves"] // 10),
                training_sample_size=n,
            )
        b = b.score_ah(build["dpb"], anisotropic_quantization_threshold=0.2, training_sample_size=n)
        rq = ReorderType.INT8 if build["reorder"] == "int8" else ReorderType.FLOAT32
        searcher = b.reorder(100, quantize=rq).build()
        out = workdir / "scann"
        out.mkdir()
        searcher.serialize(str(out))
        return {}

    def load(self, workdir: Path, build: dict[str, Any], data_path: Path) -> None:
        import scann

        self.searcher = scann.scann_ops_pybind.load_searcher(str(workdir / "scann"))

    def search(self, queries: np.ndarray, k: int, params: dict[str, Any]) -> np.ndarray:
        kw = {"final_num_neighbors": k, "pre_reorder_num_neighbors": max(params["reorder"], k)}
        if "leaves" in params:
            kw["leaves_to_search"] = params["leaves"]
        idx, _ = self.searcher.search_batched(queries, **kw)
        return np.asarray(idx, dtype=np.int64)

    def fixed_bytes(self, n: int, d: int, build: dict[str, Any]) -> int:
        return build["leaves"] * d * 4 + 16 * d * 4  # tree centroids + AH codebooks (16 centres per block)

    def versions(self) -> dict[str, str]:
        from importlib.metadata import version

        return {"scann": version("scann")}
