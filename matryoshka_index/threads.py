"""How many threads torch and FAISS may use: the cores this process can actually have.

By default both size their OpenMP pools to every core of the machine and let idle workers spin
(``OMP_WAIT_POLICY=ACTIVE``-like behaviour in libgomp) while they wait at a barrier. Alone on the
machine that is the fastest; beside other busy processes it is ruinous: on 2 cores with two other
busy processes adaptor training took 13x its idle time instead of ~2x, because each spinning
worker steals the time slice the worker it waits for needs. Two remedies, both here:

- **passive waiting**: ``OMP_WAIT_POLICY=PASSIVE`` makes waiting workers sleep. libgomp reads it
  once, when the library is loaded, so it must be in the environment before torch or faiss is
  imported; importing this module sets it (``setdefault``: a value the user chose wins), and
  ``matryoshka_index/__init__.py`` imports this module first.
- **a thread count that follows the cores available**: the CPU affinity mask
  (``os.sched_getaffinity``: taskset, cpusets), the cgroup CPU quota (``cpu.max`` /
  ``cpu.cfs_quota_us``: docker ``--cpus``, Kubernetes limits), less the cores other processes keep
  busy (the 1-minute load average without this process's own share), at least 1.

The count is resolved in this order: an explicit argument (``mindex --threads N``), the
``MINDEX_THREADS`` environment variable, ``OMP_NUM_THREADS`` when the user set it, then the
automatic count above. :func:`apply` hands it to torch and FAISS, but only to those already
imported: this module never imports either just to set a thread count.
"""

from __future__ import annotations

import math
import os
import sys
import time
from pathlib import Path

ENV_VAR = "MINDEX_THREADS"

# Before anything loads libgomp (torch, faiss): waiting workers sleep instead of spinning.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

_CGROUP_ROOT = Path("/sys/fs/cgroup")


def affinity_cores() -> int:
    """Cores in this process's CPU affinity mask (all cores where the platform has no mask)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def cgroup_cores(root: Path | None = None) -> float | None:
    """The cgroup CPU quota in cores (``cpu.max`` v2, ``cpu.cfs_quota_us`` v1), None when unlimited."""
    root = _CGROUP_ROOT if root is None else root
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        if quota != "max" and int(period) > 0:
            return int(quota) / int(period)
        return None
    except (OSError, ValueError):
        pass
    try:
        quota_us = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        if quota_us > 0 and period_us > 0:
            return quota_us / period_us
    except (OSError, ValueError):
        pass
    return None


def _own_load() -> float:
    """This process's share of the 1-minute load average: its mean CPU use over the last minute or so.

    The load average is an exponentially decaying mean with a 1-minute constant, so a process that
    started 3 s ago weighs ~0.05 in it however hard it works; over a longer life its weight is its
    mean number of busy cores. ``cpu seconds / max(age, 60 s)`` follows both ends.
    """
    try:
        ticks = os.sysconf("SC_CLK_TCK")
        start_ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        age = max(0.0, uptime - start_ticks / ticks)
    except (OSError, ValueError, IndexError):
        age = time.process_time()  # no /proc: assume we were busy all our life
    times = os.times()
    cpu = times.user + times.system
    return cpu / max(age, 60.0)


def other_load() -> float:
    """Cores other processes keep busy: the 1-minute load average less this process's own share."""
    try:
        load1 = os.getloadavg()[0]
    except (AttributeError, OSError):
        return 0.0
    return max(0.0, load1 - _own_load())


def available_cores(*, follow_load: bool = True) -> int:
    """The cores this process can expect to have: affinity, cgroup quota, less others' load; at least 1."""
    cores = float(affinity_cores())
    quota = cgroup_cores()
    if quota is not None:
        cores = min(cores, max(1.0, math.floor(quota)))
    if follow_load:
        cores -= round(other_load())
    return max(1, int(cores))


def _positive_int(text: str, source: str) -> int:
    from .errors import InputError

    try:
        value = int(text)
    except ValueError:
        raise InputError(f"{source}={text!r}: expected a whole number of threads (1 or more)") from None
    if value < 1:
        raise InputError(f"{source}={text!r}: expected a whole number of threads (1 or more)")
    return value


def thread_count(requested: int | None = None) -> int:
    """The thread count to use: ``requested``, else ``MINDEX_THREADS``, else ``OMP_NUM_THREADS``, else automatic."""
    if requested is not None:
        return _positive_int(str(requested), "--threads")
    env = os.environ.get(ENV_VAR, "").strip()
    if env:
        return _positive_int(env, ENV_VAR)
    omp = os.environ.get("OMP_NUM_THREADS", "").strip().split(",")[0]
    if omp.isdigit() and int(omp) > 0:
        return int(omp)
    return available_cores()


def apply(requested: int | None = None, *, export: bool = False) -> int:
    """Set torch's and FAISS's thread counts (those already imported) to :func:`thread_count`; return it.

    ``export=True`` also writes it to ``MINDEX_THREADS`` and ``OMP_NUM_THREADS`` so that a library
    loaded later in this process (libgomp reads ``OMP_NUM_THREADS`` when it loads) and child
    processes follow it; the command line does that, a library call does not touch the environment.
    """
    n = thread_count(requested)
    if export:
        os.environ[ENV_VAR] = str(n)
        os.environ["OMP_NUM_THREADS"] = str(n)
    torch = sys.modules.get("torch")
    if torch is not None and hasattr(torch, "set_num_threads"):
        torch.set_num_threads(n)
    faiss = sys.modules.get("faiss")
    if faiss is not None and hasattr(faiss, "omp_set_num_threads"):
        faiss.omp_set_num_threads(n)
    return n
