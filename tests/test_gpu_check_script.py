"""benchmarks/gpu_check.py runs end to end (tiny scale, --device cpu) so that the GPU machine's one run cannot rot."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch  # noqa: F401  a declared dependency: its absence is a failure, not a skip

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


def test_gpu_check_runs_on_cpu_and_says_it_is_a_cpu_run(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE", "MINDEX_QUIET": "1"}
    cmd = [sys.executable, str(SCRIPT), "--device", "cpu", "--rows", "2500", "--train-rows", "1200"]
    cmd += ["--queries", "60", "--epochs", "1", "--repeats", "1", "--dtypes", "float32,int8", "--out", str(tmp_path)]
    run = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    text = (tmp_path / "gpu_check.md").read_text()
    assert report["device"] == "cpu" and "no GPU figure" in report["note"]
    assert "CPU RUN (no GPU figure exists)" in text and "GPU figures have not been measured yet" in text
    names = [r["name"] for r in report["search"]]
    # exact, torch float32, torch int8, the public MatryoshkaIndex (no faiss-gpu here)
    assert names[0].startswith("exact full-dim") and len(names) == 4 and names[3].startswith("MatryoshkaIndex")
    assert report["search"][0]["recall@10"] == 1.0
    index_row = report["search"][3]
    assert index_row["stages"]["coarse"] == "cpu" and index_row["recall@10"] >= 0.9
    for row in report["search"][1:3]:
        # the calibration picked a candidate count that reached the target on its own queries
        assert row["calibration_recall@10"] >= 0.99 and row["candidates"] >= 10
        assert 0.9 <= row["recall@10"] <= 1.0 and row["qps"] > 0
    assert report["adaptor_training"]["device"]["rows"] == 1200
    assert "cpu" not in report["adaptor_training"]  # the device is the CPU: one training
    assert 0.9 <= report["adaptor_quality"]["device_recall@10"] <= 1.0
    assert report["transform"]["rows"] == 2500
    assert report["machine"]["torch"] and "load_start" in report


_NO_FAISS = """
import importlib.abc, sys
class _Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "faiss" or name.startswith("faiss."):
            raise ImportError("faiss is not installed on this GPU machine (blocked by the test)")
sys.meta_path.insert(0, _Block())
"""


def test_gpu_check_runs_where_only_torch_is_installed(tmp_path):
    """The lent GPU machines have torch with CUDA and no faiss: the torch engine rows must still run."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(_NO_FAISS)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MINDEX_QUIET": "1", "PYTHONPATH": str(site)}
    cmd = [sys.executable, str(SCRIPT), "--device", "cpu", "--rows", "1500", "--train-rows", "800"]
    cmd += ["--queries", "40", "--epochs", "1", "--repeats", "1", "--dtypes", "float32", "--out", str(tmp_path)]
    run = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["machine"]["faiss"] is None
    assert [r["name"].split()[0] for r in report["search"]] == ["exact", "coarse-64"]
