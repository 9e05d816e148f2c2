"""resolve_device: one device string for the pipeline, one-line errors, torch imported only when asked."""

from __future__ import annotations

import subprocess
import sys

import pytest

from matryoshka_index.device import CPU, Device, resolve_device
from matryoshka_index.errors import InputError

torch = pytest.importorskip("torch")
import faiss  # noqa: E402

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


def _package_imports_torch() -> bool:
    code = "import sys, matryoshka_index; print('torch' in sys.modules)"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() != "False"


needs_torch_free_package = pytest.mark.skipif(
    _package_imports_torch(), reason="importing matryoshka_index itself imports torch here (adaptor not torch-lazy)"
)


@needs_torch_free_package
def test_importing_the_module_does_not_import_torch():
    code = "import sys, matryoshka_index.device as d; assert 'torch' not in sys.modules; print(d.resolve_device('cpu'))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "cpu"


@needs_torch_free_package
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
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    first, second = out.stdout.strip().splitlines()
    assert first == "cpu"
    assert "torch is not installed" in second
