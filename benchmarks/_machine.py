"""What every benchmark shares, stdlib only (the GPU check imports it on a machine without faiss): the
machine it ran on, and the synthetic topic-manifold generator's parameters."""

from __future__ import annotations

import platform
from pathlib import Path


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (else what platform says, else "unknown")."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


# The topic-manifold generator's parameters (matryoshka_index.datasets), calibrated on the real MiniLM set:
# one set for every benchmark.
SYNTHETIC = {
    "rank": 192,
    "alpha": 0.4,
    "topics": 2000,
    "local": 16,
    "local_scale": 1.0,
    "latent_noise": 0.45,
    "noise": 0.55,
    "seed": 0,
}
