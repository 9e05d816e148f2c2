"""Ours: ``MatryoshkaIndex`` at its calibrated defaults (project venv).

No oracle: each configuration is declared here before the run, built with ``target_recall`` set to
the recall target of its panel (candidates calibrated at build time on corpus rows held out of the
index, never on the test queries) and searched at the default it calibrated; ``ram_budget=`` rows are
built as a user calls them. One adaptor, trained once per dataset with the library defaults before
the run (``train_adaptor``), serves every row: its weights are a fixed cost.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from common import Peer


def _o(name: str, m: int, structure: str, code: str, **opts: Any) -> dict[str, Any]:
    return {"name": f"ours {name}", "coarse_dim": m, "index": structure, "code": code, "options": opts}


# Declared before the run: the best rows of benchmarks/results/frontier.md, nothing picked afterwards.
CONFIGS: list[dict[str, Any]] = [
    _o("64 flat pq4x32 itq", 64, "flat", "pq4", pq_m=32, balance="itq"),
    _o("64 flat pq4x64", 64, "flat", "pq4", pq_m=64),
    _o("60 flat pq4x30", 60, "flat", "pq4", pq_m=30),
    _o("128 flat pq4x64", 128, "flat", "pq4", pq_m=64),
    _o("64 hnsw float", 64, "hnsw", "float"),
    _o("64 hnsw sq8", 64, "hnsw", "sq8"),
    _o("64 ivf pq4x32", 64, "ivf", "pq4", pq_m=32),
    {"name": "ours ram_budget=16", "ram_budget": 16},
    {"name": "ours ram_budget=32", "ram_budget": 32},
]


def train_adaptor(data: np.ndarray, out: Path, max_rows: int = 50_000) -> float:
    """Fit the one adaptor every row of ours uses (library defaults) and save it; returns seconds."""
    import time

    from matryoshka_index import MatryoshkaAdaptor

    rows = np.sort(np.random.default_rng(0).choice(len(data), size=min(len(data), max_rows), replace=False))
    t0 = time.perf_counter()
    adaptor = MatryoshkaAdaptor(quiet=True, max_samples=len(rows)).fit(np.asarray(data[rows]))
    seconds = time.perf_counter() - t0
    adaptor.save(out)
    return seconds


class OursPeer(Peer):
    library = "matryoshka-index"
    keeps_in_ram = (
        "the coarse FAISS index over the adapted prefix (codes, graph links or lists), the calibration and "
        "the adaptor's weights; the float vectors and the ids are memory-mapped (page cache) for the rerank"
    )

    def __init__(self, adaptor_dir: Path | None = None, targets: tuple[float, ...] = (0.99, 0.95)):
        self.adaptor_dir = adaptor_dir
        self.targets = targets

    def prepare(self) -> None:
        from matryoshka_index import MatryoshkaIndex  # noqa: F401  (pulls in the index, backend, adaptor)

    def build_grid(self, n: int, d: int) -> list[dict[str, Any]]:
        # each configuration's targets one after the other: a run stopped at a deadline has both or neither
        return [{**c, "target_recall": t, "name": f"{c['name']} @{t}"} for c in CONFIGS for t in self.targets]

    def search_lines(self, n: int, build: dict[str, Any]) -> list[list[dict[str, Any]]]:
        return [[{"candidates": "calibrated default"}]]

    def build(self, data: np.ndarray, build: dict[str, Any], workdir: Path) -> dict[str, Any]:
        from matryoshka_index import MatryoshkaIndex

        adaptor = build["adaptor_dir"]  # a saved adaptor's folder ("pca" in the harness test)
        common = {
            "adaptor": adaptor if adaptor == "pca" else str(adaptor),
            "target_recall": build["target_recall"],
            "quiet": True,
        }
        if "ram_budget" in build:
            index = MatryoshkaIndex.build(data, ram_budget=build["ram_budget"], **common)
        else:
            index = MatryoshkaIndex.build(
                data,
                coarse_dim=build["coarse_dim"],
                index=build["index"],
                code=build["code"],
                backend_options=dict(build["options"]),
                **common,
            )
        index.save(workdir / "ours.mindex")
        budget = index.calibration.get("ram_budget") or {}
        return {
            "coarse_dim": index.coarse_dim,
            "ram_budget_chose": budget.get("chosen"),
            "candidates": index.candidates,
            "knob": index.calibration.get("knob"),
            "calibrated_recall": index.calibration.get("recall"),
        }

    def load(self, workdir: Path, build: dict[str, Any], data_path: Path) -> None:
        from matryoshka_index import MatryoshkaIndex

        self.path = workdir / "ours.mindex"
        self.index = MatryoshkaIndex.load(self.path, verify=False)

    def search(self, queries: np.ndarray, k: int, params: dict[str, Any]) -> np.ndarray:
        return self.index.search(queries, k=k)[1]

    def fixed_bytes(self, n: int, d: int, build: dict[str, Any]) -> int:
        adaptor = sum(p.stat().st_size for p in (self.path / "adaptor").glob("*.safetensors"))
        adaptor += sum(p.stat().st_size for p in (self.path / "adaptor").glob("*.npy"))
        return int(self.index.backend.memory()["fixed_bytes"] + adaptor)

    def library_bytes(self) -> int | None:
        return int(self.index.backend.memory()["resident_bytes"])

    def versions(self) -> dict[str, str]:
        import faiss

        from matryoshka_index import __version__

        return {"matryoshka-index": __version__, "faiss-cpu": faiss.__version__}
