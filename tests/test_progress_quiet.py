"""Quiet progress leaves nothing behind: no output and no tqdm monitor thread."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import threading
import numpy as np
from matryoshka_index import MatryoshkaIndex
from matryoshka_index.progress import progress
list(progress(range(3), quiet=True, desc="x"))
x = np.random.default_rng(0).standard_normal((2000, 32)).astype(np.float32)
MatryoshkaIndex.build(x, coarse_dim=8, adaptor="pca", quiet=True).search(x[:4], k=3)
print(sorted(t.name for t in threading.enumerate()))
"""


def test_a_quiet_build_and_search_start_no_tqdm_monitor_thread():
    # a fresh process: another test's enabled bar may have started tqdm's monitor in this one
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300, check=True)
    assert "tqdm_monitor" not in out.stdout, out.stdout
    assert out.stderr == "", out.stderr
