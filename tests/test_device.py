"""resolve_device: one device string for the pipeline, one-line errors, torch imported only when asked."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import faiss
import numpy as np
import pytest
import torch  # a declared dependency: its absence is a broken install, not a reason to skip

from matryoshka_index.device import CPU, Device, resolve_device
from matryoshka_index.errors import InputError

REPO = Path(__file__).resolve().parents[1]

NO_GPU = not torch.cuda.is_available() and not (hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0)


def test_cpu_is_the_cpu():
    d = resolve_device("cpu")
    assert d == CPU
    assert d.torch_device == "cpu" and not d.faiss_gpu and d.gpu_index is None and not d.is_cuda
    assert resolve_device(" CPU ") == CPU


def test_a_device_passes_through_and_is_frozen():
    d = Device(torch_device="cuda:1", faiss_gpu=True, gpu_index=1, name="X")
    assert resolve_device(d) is d
    with pytest.raises(AttributeError):
        d.name = "Y"  # type: ignore[misc]


@pytest.mark.parametrize("bad", ["tpu", "cuda:x", "cuda:-1", "", "gpu0"])
def test_unknown_strings_are_one_line_errors(bad):
    with pytest.raises(InputError, match="unknown device") as err:
        resolve_device(bad)
    assert "\n" not in str(err.value)


def test_not_a_string():
    with pytest.raises(InputError, match="expected a string"):
        resolve_device(0)  # type: ignore[arg-type]


@pytest.mark.skipif(not NO_GPU, reason="a GPU is visible here: the no-GPU behaviour cannot be observed")
def test_auto_falls_back_to_the_cpu_silently(recwarn):
    assert resolve_device("auto") == CPU
    assert not recwarn.list


@pytest.mark.skipif(not NO_GPU, reason="a GPU is visible here: the no-GPU behaviour cannot be observed")
@pytest.mark.parametrize("asked", ["cuda", "cuda:0", "gpu", "cuda:3"])
def test_cuda_without_a_gpu_says_what_to_do(asked):
    with pytest.raises(InputError) as err:
        resolve_device(asked)
    msg = str(err.value)
    assert "no GPU is visible" in msg and "device='cpu'" in msg and "\n" not in msg


@pytest.mark.skipif(NO_GPU, reason="no GPU visible to torch or faiss-gpu")
def test_cuda_resolves_to_gpu_zero():
    d = resolve_device("cuda")
    assert d.gpu_index == 0 and d.is_cuda
    assert resolve_device("auto") == d
    with pytest.raises(InputError, match="only"):
        resolve_device("cuda:999")


def _python(code: str) -> subprocess.CompletedProcess:
    """``code`` in a fresh interpreter with this checkout first on the path (not an installed copy)."""
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)


# The three tests below guard "no torch on import" (README: search-only installs need no torch). They
# used to skip when the package imported torch, i.e. exactly when the property broke (issue 19, item 4).
def test_importing_the_package_does_not_import_torch():
    out = _python("import sys, matryoshka_index; print(matryoshka_index.__file__, 'torch' in sys.modules)")
    where, imported = out.stdout.split()
    assert Path(where).resolve().is_relative_to(REPO)
    assert imported == "False", "importing matryoshka_index imports torch"


def test_importing_the_module_does_not_import_torch():
    code = "import sys, matryoshka_index.device as d; assert 'torch' not in sys.modules; print(d.resolve_device('cpu'))"
    out = _python(code)
    assert out.stdout.strip() == "cpu"


def test_without_torch_auto_is_the_cpu_and_cuda_says_so():
    # torch made unimportable in a child process: the resolver must not need it
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import faiss; faiss.get_num_gpus = lambda: 0\n"
        "from matryoshka_index.device import resolve_device\n"
        "from matryoshka_index.errors import InputError\n"
        "print(resolve_device('auto'))\n"
        "try:\n    resolve_device('cuda')\nexcept InputError as e:\n    print(e)\n"
    )
    out = _python(code)
    first, second = out.stdout.strip().splitlines()
    assert first == "cpu"
    assert "torch is not installed" in second


# ---------------------------------------------------------------------- the index on a device
from conftest import make_corpus  # noqa: E402

from matryoshka_index import MatryoshkaIndex  # noqa: E402
from matryoshka_index.backends.torch_stages import TorchStages  # noqa: E402
from matryoshka_index.index.device_stage import attach_device  # noqa: E402


@pytest.fixture(scope="module")
def built():
    x = make_corpus(1200, 32, rank=8, seed=5)
    q = make_corpus(1230, 32, rank=8, seed=5)[1200:]
    index = MatryoshkaIndex.build(x, coarse_dim=8, adaptor="pca", device="cpu", quiet=True)
    return index, x, q


def same_results(a, b, tol=1e-5):
    (sa, ia), (sb, ib) = a, b
    np.testing.assert_allclose(sa, sb, atol=tol)
    # ids agree wherever the score is not tied with another within the rounding tolerance
    for row in range(len(ia)):
        s = sb[row]
        clear = (np.abs(s[:, None] - s[None, :]) + np.eye(len(s)) * 1e9).min(axis=1) > tol
        assert (ia[row][clear] == ib[row][clear]).all()


def test_build_on_cpu_says_where_each_stage_runs(built):
    index, _, _ = built
    stages = index.info()["stages"]
    assert stages == {"adaptor": "cpu", "coarse": "cpu", "rerank": "cpu"}


def test_torch_engine_on_cpu_tensors_gives_the_faiss_results(built):
    index, _, q = built
    faiss_results = index.search(q, k=10)
    # the same adaptor and FAISS backend, the search served by the torch engine on CPU tensors
    torch_index = MatryoshkaIndex.from_parts(
        index.adaptor, attach_device(index.backend, CPU, engine="torch"), index._manifest()
    )
    assert isinstance(torch_index.backend, TorchStages)
    same_results(torch_index.search(q, k=10), faiss_results)
    same_results(torch_index.search(q, k=5, candidates=40), index.search(q, k=5, candidates=40))
    info = torch_index.info()
    assert info["stages"]["coarse"] == "cpu" and "torch" in info["backend"]["coarse_engine"]
    assert "gathered on the CPU" in info["backend"]["rerank_engine"]  # a CPU device never copies them


def test_torch_stages_follow_add_and_remove_and_save_a_cpu_loadable_index(built, tmp_path):
    index, x, q = built
    twin = MatryoshkaIndex.build(x, coarse_dim=8, adaptor=index.adaptor, device="cpu", quiet=True)
    twin._backend = attach_device(twin.backend, CPU, engine="torch")
    plain = MatryoshkaIndex.build(x, coarse_dim=8, adaptor=index.adaptor, device="cpu", quiet=True)
    extra = make_corpus(60, 32, rank=8, seed=9)
    for ix in (twin, plain):
        ix.search(q[:2])  # the torch mirror exists before the mutation
        ix.add(extra, ids=np.arange(5000, 5060))
        ix.remove(np.arange(0, 300))
    same_results(twin.search(q, k=10, candidates=50), plain.search(q, k=10, candidates=50))
    found = twin.search(q, k=10, candidates=50)[1]
    assert not np.isin(found, np.arange(300)).any() and len(twin) == len(plain) == 1200 - 300 + 60
    twin.save(tmp_path / "t.mindex")  # built with the torch engine: the files are plain FAISS ones
    back = MatryoshkaIndex.load(tmp_path / "t.mindex", device="cpu")
    assert not isinstance(back.backend, TorchStages)
    same_results(back.search(q, k=10, candidates=50), plain.search(q, k=10, candidates=50))
    plain.save(tmp_path / "p.mindex")  # and the other way round: a CPU index served by the torch engine
    again = MatryoshkaIndex.load(tmp_path / "p.mindex", device="cpu")
    again._backend = attach_device(again.backend, CPU, engine="torch")
    same_results(again.search(q, k=10, candidates=50), plain.search(q, k=10, candidates=50))


def test_torch_engine_refuses_a_non_flat_index():
    x = make_corpus(600, 16, seed=2)
    index = MatryoshkaIndex.build(x, coarse_dim=8, index="hnsw", device="cpu", quiet=True)
    with pytest.raises(InputError, match="flat"):
        attach_device(index.backend, CPU, engine="torch")
    assert attach_device(index.backend, CPU) is index.backend  # auto on the CPU: FAISS as it is


@pytest.mark.skipif(not NO_GPU, reason="a GPU is visible here: the no-GPU behaviour cannot be observed")
def test_build_and_load_on_cuda_without_a_gpu_fail_in_one_line(built, tmp_path):
    index, x, _ = built
    with pytest.raises(InputError, match="no GPU is visible"):
        MatryoshkaIndex.build(x[:100], coarse_dim=8, device="cuda", quiet=True)
    index.save(tmp_path / "i.mindex")
    with pytest.raises(InputError, match="no GPU is visible"):
        MatryoshkaIndex.load(tmp_path / "i.mindex", device="cuda:0")
    # the FAISS backend's older spelling keeps its meaning: the GPU when one works, else the CPU
    assert MatryoshkaIndex.load(tmp_path / "i.mindex", device="gpu").info()["stages"]["coarse"] == "cpu"


@pytest.mark.skipif(NO_GPU, reason="no GPU visible to torch or faiss-gpu")
def test_build_on_cuda_runs_the_stages_there_and_saves_a_cpu_loadable_index(built, tmp_path):
    index, x, q = built
    gpu = MatryoshkaIndex.build(x, coarse_dim=8, adaptor=index.adaptor, device="cuda", quiet=True)
    assert gpu.info()["stages"]["coarse"] != "cpu"
    same_results(gpu.search(q, k=10, candidates=50), index.search(q, k=10, candidates=50), tol=1e-4)
    gpu.save(tmp_path / "g.mindex")
    cpu = MatryoshkaIndex.load(tmp_path / "g.mindex", device="cpu")
    same_results(cpu.search(q, k=10, candidates=50), index.search(q, k=10, candidates=50), tol=1e-4)


def test_cli_device_flags(tmp_path):
    from click.testing import CliRunner

    from matryoshka_index.cli import main

    x = make_corpus(330, 32, seed=4)
    np.save(tmp_path / "c.npy", x[:300])
    np.save(tmp_path / "q.npy", x[300:])
    out = str(tmp_path / "c.mindex")
    run = CliRunner().invoke(main, ["build", str(tmp_path / "c.npy"), "--coarse-dim", "8", "--pca", "-o", out])
    assert run.exit_code == 0, run.output
    assert json.loads(run.output.strip().splitlines()[-1])["stages"]["coarse"] == "cpu"
    run = CliRunner().invoke(main, ["search", out, str(tmp_path / "q.npy"), "-k", "3", "--device", "cpu"])
    assert run.exit_code == 0 and len(run.output.strip().splitlines()) == 30
    run = CliRunner().invoke(main, ["info", out, "--device", "cpu"])
    assert run.exit_code == 0 and json.loads(run.output)["stages"] == {
        "adaptor": "cpu",
        "coarse": "cpu",
        "rerank": "cpu",
    }
    run = CliRunner().invoke(main, ["search", out, str(tmp_path / "q.npy"), "--device", "tpu"])
    assert run.exit_code == 2 and "unknown device" in run.output and "Traceback" not in run.output
    if NO_GPU:
        run = CliRunner().invoke(main, ["info", out, "--device", "cuda"])
        assert run.exit_code == 2 and "no GPU is visible" in run.output


def test_auto_without_torch_loaded_does_not_import_it():
    code = (
        "import sys\nfrom matryoshka_index.device import resolve_device\n"
        "print(resolve_device('auto', import_torch=False), 'torch' in sys.modules)"
    )
    out = _python(code)
    assert out.stdout.split()[-1] == "False"
