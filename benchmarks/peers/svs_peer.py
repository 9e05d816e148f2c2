"""Intel SVS (``scalable-vs`` 0.5.0, the numpy-2 peers venv): a Vamana graph over LeanVec vectors, a linear
reduction (query-aware with training queries) coded in LVQ, the candidates re-ranked with the full-dimension
LVQ secondary.

Tuning as its documentation gives it (``Using LeanVec``, ``Performance Tuning``): ``leanvec_dims`` about
d/3 to d/2 (128 of 384), primary LVQ8 or LVQ4, secondary LVQ8, graph_max_degree 32-64, build window 2x the
degree, ``search_window_size`` swept at query time; the out-of-distribution (query-aware) matrices from
``compute_leanvec_matrices`` given training queries that are not the test queries (``run.py`` writes them
for the real set, as for LoRANN), and its default PCA reduction without. LVQ and LeanVec run on Intel CPUs
only (this machine's Xeon has AVX-512).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from common import Peer

WINDOW = (10, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384)


class SvsPeer(Peer):
    library = "svs (LeanVec)"
    keeps_in_ram = (
        "the LeanVec primary (the reduced vectors, leanvec_dims at 8 or 4 bits + per-vector scales), the "
        "full-dimension LVQ8 secondary for the re-rank (d B + scales) and the graph (degree x 4 B), in the heap"
    )

    def prepare(self) -> None:
        import svs  # noqa: F401

    def build_grid(self, n: int, d: int, train_queries: str | None = None) -> list[dict[str, Any]]:
        ld = min(128, max(32, d // 3 // 32 * 32))  # 128 of 384, as the docs suggest (d/3 rounded to 32)
        grid = [
            {"name": f"SVS LeanVec{ld} {p}/lvq8 R{r}", "leanvec_dims": ld, "primary": p, "degree": r}
            for p, r in (("lvq8", 32), ("lvq4", 32), ("lvq8", 64))
        ]
        if train_queries:
            grid = [{**g, "name": g["name"] + " + train queries", "train_queries": train_queries} for g in grid] + grid
        return grid

    def search_lines(self, n: int, build: dict[str, Any]) -> list[list[dict[str, Any]]]:
        return [[{"window": w} for w in WINDOW]]

    def _loader(self, raw: Any, build: dict[str, Any], data: np.ndarray | None) -> Any:
        import svs

        kind = {"lvq8": svs.LeanVecKind.lvq8, "lvq4": svs.LeanVecKind.lvq4}
        kw = {}
        if build.get("train_queries") and data is not None:
            tq = np.ascontiguousarray(np.load(build["train_queries"]), dtype=np.float32)
            sample = np.asarray(data[np.sort(np.random.default_rng(0).permutation(len(data))[:100_000])])
            dm, qm = svs.compute_leanvec_matrices(sample, tq, build["leanvec_dims"])
            kw = {"data_matrix": dm, "query_matrix": qm}
        return svs.LeanVecLoader(raw, build["leanvec_dims"], kind[build["primary"]], svs.LeanVecKind.lvq8, **kw)

    def build(self, data: np.ndarray, build: dict[str, Any], workdir: Path) -> dict[str, Any]:
        import svs

        data = np.ascontiguousarray(data, dtype=np.float32)
        svs.write_vecs(data, str(workdir / "data.fvecs"))
        raw = svs.VectorDataLoader(str(workdir / "data.fvecs"), svs.DataType.float32, dims=data.shape[1])
        params = svs.VamanaBuildParameters(graph_max_degree=build["degree"], window_size=2 * build["degree"])
        index = svs.Vamana.build(params, self._loader(raw, build, data), svs.DistanceType.MIP, num_threads=1)
        index.save(str(workdir / "config"), str(workdir / "graph"), str(workdir / "data"))
        (workdir / "data.fvecs").unlink()
        return {}

    def load(self, workdir: Path, build: dict[str, Any], data_path: Path) -> None:
        import svs

        self.index = svs.Vamana(
            str(workdir / "config"), svs.GraphLoader(str(workdir / "graph")), svs.LeanVecLoader(str(workdir / "data")),
            svs.DistanceType.MIP, num_threads=1,
        )  # fmt: skip

    def search(self, queries: np.ndarray, k: int, params: dict[str, Any]) -> np.ndarray:
        self.index.search_window_size = max(params["window"], k)
        ids, _ = self.index.search(queries, k)
        return np.asarray(ids, dtype=np.int64)

    def fixed_bytes(self, n: int, d: int, build: dict[str, Any]) -> int:
        return 2 * d * build["leanvec_dims"] * 4 + d * 4  # the data and query matrices + the LVQ centroid

    def versions(self) -> dict[str, str]:
        from importlib.metadata import version

        return {"scalable-vs": version("scalable-vs")}
