"""How many threads torch, FAISS and BLAS may use during one library call: the cores it can actually have.

By default torch and FAISS size their OpenMP pools to every core of the machine and let idle
workers spin (``OMP_WAIT_POLICY=ACTIVE``-like behaviour in libgomp) while they wait at a barrier.
Alone on the machine that is the fastest; beside other busy processes it is ruinous: on 2 cores
with two other busy processes adaptor training took 13x its idle time instead of ~2x, because each
spinning worker steals the time slice the worker it waits for needs. Two remedies, both here:

- **passive waiting**: ``OMP_WAIT_POLICY=PASSIVE`` makes waiting workers sleep. libgomp reads it
  once, when the library is loaded, so it must be in the environment before torch or faiss is
  imported; importing this module sets it (``setdefault``: a value the user chose wins), and
  ``matryoshka_index/__init__.py`` imports this module first.
- **a thread count per call**: :func:`limited` (a context manager and a decorator) sets the count
  on entry and puts every pool back on exit. The library wraps training, ``build``, ``search`` and
  ``calibrate`` in it, so a fit under load no longer leaves FAISS single-threaded for the rest of
  the process, and each call re-reads the load (about 0.2 ms).

The count, in this order: an explicit request (``limited(n)``, ``mindex --threads N``; an outer
``with limited(n)`` also holds for the library calls inside it), ``MINDEX_THREADS``,
``OMP_NUM_THREADS`` when the user set it; an explicit count is used as given, never lowered for
load. Otherwise it is automatic: the CPU affinity mask (``os.sched_getaffinity``: taskset,
cpusets), the cgroup CPU quota (``cpu.max`` / ``cpu.cfs_quota_us``: docker ``--cpus``, Kubernetes
limits), less the cores other processes keep busy, at least 1; and an automatic count only lowers
a pool, never raises one the caller set lower (``faiss.omp_set_num_threads(1)`` before the call).

Other processes' load: the 1-minute load average lags (a load that ended 30 s ago still counts for
more than half of itself), so it is taken together with the run queue at this moment (``procs_running``
in ``/proc/stat``), each less this process's own share, and the smaller wins: load that is both
recent and still there now. The instant sample alone is noisy (it catches short bursts), which the
average guards against; the average alone would keep a call on one thread for a minute after the
load had gone. ``/proc/pressure/cpu`` was not used: it gives the share of time tasks waited, not how
many cores are busy. Both figures count the whole host, not a container's share.

The mechanics (which pools exist, getting and setting them) are threadpoolctl's: the OpenMP
runtimes and the BLAS libraries already loaded. faiss-cpu's wheel bundles its own libgomp (and an
OpenMP OpenBLAS on it) beside torch's; where torch was imported first, faiss's OpenMP calls bind to
torch's copy instead (it is already in the global symbol scope) and its own stays unused. Every
copy is set, so faiss's pool is limited either way (checked with ``threadpoolctl.threadpool_info()``
after importing both, in both orders). OpenMP counts are per calling thread, so they are set and restored
in that thread. torch's intra-op count (``torch.set_num_threads``, which also sets its bundled MKL)
and a BLAS with its own pthreads pool are process-wide: while calls overlap (searches from several
threads) they follow the most recent call still running, and the last call to end restores what
they were before the first began. Nothing here imports torch or faiss: a library not loaded yet
has no pool to set.

:func:`apply` is the process-wide setting, for a program that owns its process (the ``mindex``
command line with ``--threads``); the library itself never calls it.
"""

from __future__ import annotations

import contextvars
import math
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ENV_VAR = "MINDEX_THREADS"

# Before anything loads libgomp (torch, faiss): waiting workers sleep instead of spinning.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

_CGROUP_ROOT = Path("/sys/fs/cgroup")

# An explicit count of an enclosing ``limited(n)``: library calls inside it follow it, not the load.
_EXPLICIT: contextvars.ContextVar[int | None] = contextvars.ContextVar("mindex_threads_explicit", default=None)


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


def _own_running_threads() -> int:
    """Threads of this process in the run queue now (the caller's own thread at least)."""
    running = 0
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return 1
    for tid in tasks:
        try:
            stat = Path(f"/proc/self/task/{tid}/stat").read_bytes()
        except OSError:  # the thread ended meanwhile
            continue
        end = stat.rfind(b")")
        running += stat[end + 2 : end + 3] == b"R"
    return max(1, running)


def run_queue_load() -> float | None:
    """Threads of other processes runnable at this moment (``procs_running``), None without ``/proc/stat``."""
    try:
        stat = Path("/proc/stat").read_bytes()
        start = stat.index(b"procs_running") + len(b"procs_running")
        running = int(stat[start : stat.index(b"\n", start)])
    except (OSError, ValueError):
        return None
    return max(0.0, float(running - _own_running_threads()))


def other_load() -> float:
    """Cores other processes keep busy: the smaller of the 1-minute load average and the run queue now, each
    less this process's own share (see the module docstring for why both)."""
    try:
        load1 = max(0.0, os.getloadavg()[0] - _own_load())
    except (AttributeError, OSError):
        return 0.0
    now = run_queue_load()
    return load1 if now is None else min(load1, now)


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


def resolve(requested: int | None = None, *, name: str = "threads") -> tuple[int, bool]:
    """``(count, explicit)``: the thread count to use now and whether the user set it (then it is never lowered).

    ``requested``, else an enclosing ``limited(n)``, else ``MINDEX_THREADS``, else ``OMP_NUM_THREADS``,
    else automatic (:func:`available_cores`: affinity, cgroup quota, less the load of other processes).
    """
    if requested is not None:
        return _positive_int(str(requested), name), True
    outer = _EXPLICIT.get()
    if outer is not None:
        return outer, True
    env = os.environ.get(ENV_VAR, "").strip()
    if env:
        return _positive_int(env, ENV_VAR), True
    omp = os.environ.get("OMP_NUM_THREADS", "").strip().split(",")[0]
    if omp.isdigit() and int(omp) > 0:
        return int(omp), True
    return available_cores(), False


def thread_count(requested: int | None = None) -> int:
    """The thread count to use now (see :func:`resolve`)."""
    return resolve(requested)[0]


# ---------------------------------------------------------------------------------------------- pools


def _controller() -> Any:
    """threadpoolctl's view of the pools loaded now, None without threadpoolctl (a ``--no-deps`` search-only
    install: passive waiting then still holds, only the counts stay as they are)."""
    try:
        import threadpoolctl
    except ImportError:
        return None
    # get_cached_controller (threadpoolctl >= 3.8) rescans only after an import; before, each call scans (~0.5 ms)
    return getattr(threadpoolctl, "get_cached_controller", threadpoolctl.ThreadpoolController)()


def _libraries() -> list[Any]:
    controller = _controller()
    return [] if controller is None else list(controller.lib_controllers)


def _per_thread(lib: Any) -> bool:
    """Whether a pool's count belongs to the calling thread: OpenMP runtimes, and OpenBLAS built on OpenMP."""
    return lib.user_api == "openmp" or (
        lib.internal_api == "openblas" and getattr(lib, "threading_layer", None) == "openmp"
    )


class _SharedPools:
    """Process-wide counts (torch's intra-op count, pthreads BLAS pools) while library calls overlap.

    They follow the most recent call still running; the last one to end restores what they were
    before the first began (``baseline``). All changes happen under one lock.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._active: dict[object, tuple[int, bool]] = {}  # insertion order: the most recent call last
        self._baseline: dict[str, int] = {}

    @staticmethod
    def _pools(torch_count: int | None) -> dict[str, tuple[Callable[[], int | None], Callable[[int], None]]]:
        pools: dict[str, tuple[Callable[[], int | None], Callable[[int], None]]] = {}
        torch = sys.modules.get("torch")
        if torch is not None and hasattr(torch, "set_num_threads"):
            # torch.get_num_threads() reads the calling thread's OpenMP count, which the per-thread
            # limit may already have lowered: the caller reads it first and passes it in.
            pools["torch"] = ((lambda: torch_count), torch.set_num_threads)
        for lib in _libraries():
            if not _per_thread(lib):
                pools[lib.filepath] = ((lambda lib=lib: lib.num_threads), lib.set_num_threads)
        return pools

    def _set(self, pools: dict[str, Any], count: int, explicit: bool) -> None:
        for key, (_, setter) in pools.items():
            baseline = self._baseline.get(key)
            if baseline is not None:
                setter(count if explicit else min(count, baseline))

    def enter(self, token: object, count: int, explicit: bool, torch_count: int | None) -> None:
        with self._lock:
            pools = self._pools(torch_count)
            for key, (getter, _) in pools.items():
                if key not in self._baseline and (value := getter()) is not None:
                    self._baseline[key] = value
            self._active[token] = (count, explicit)
            self._set(pools, count, explicit)
            _release_openblas()

    def exit(self, token: object) -> None:
        with self._lock:
            self._active.pop(token, None)
            pools = self._pools(None)
            if self._active:
                self._set(pools, *next(reversed(self._active.values())))
            else:
                for key, (_, setter) in pools.items():
                    if key in self._baseline:
                        setter(self._baseline[key])
                self._baseline.clear()
            _release_openblas()


def _release_openblas() -> None:
    """Let another thread set a pthreads OpenBLAS next: threadpoolctl lets only one thread at a time do it,
    the first that tried, for as long as it lives; our changes are serialised by our own lock instead."""
    threadpoolctl = sys.modules.get("threadpoolctl")
    release = getattr(getattr(threadpoolctl, "OpenBLASController", None), "clear_controlling_thread", None)  # >= 3.8
    if release is not None:
        release()


_SHARED = _SharedPools()
_OUTER = threading.local()  # per thread: call depth, each OpenMP pool's count before the outermost call


@contextmanager
def limited(requested: int | None = None) -> Iterator[int]:
    """Use :func:`resolve`'s count in torch, FAISS (OpenMP) and BLAS for the ``with`` block, then restore them.

    Also a decorator (``@limited()``): the count is re-read at each call. An explicit ``requested``
    also holds for the library calls inside the block. Yields the count.
    """
    count, explicit = resolve(requested)
    torch = sys.modules.get("torch")
    torch_count = torch.get_num_threads() if torch is not None and hasattr(torch, "get_num_threads") else None
    if not getattr(_OUTER, "depth", 0):
        _OUTER.counts = {}
    _OUTER.depth = getattr(_OUTER, "depth", 0) + 1
    token = object()
    limiter = None
    reset = _EXPLICIT.set(count) if explicit else None
    try:
        baseline: dict[str, int] = _OUTER.counts
        per_thread = [lib for lib in _libraries() if _per_thread(lib)]
        for lib in per_thread:
            if lib.filepath not in baseline and (value := lib.num_threads) is not None:
                baseline[lib.filepath] = value
        targets = {
            lib.filepath: count if explicit else min(count, baseline[lib.filepath])
            for lib in per_thread
            if lib.filepath in baseline
        }
        if targets:
            limiter = _controller().select(filepath=list(targets)).limit(limits=targets)
        _SHARED.enter(token, count, explicit, torch_count)
        yield count
    finally:
        # Process-wide first: torch.set_num_threads also sets this thread's OpenMP count, which the
        # per-thread restore then puts back exactly.
        _SHARED.exit(token)
        if limiter is not None:
            limiter.restore_original_limits()
        if reset is not None:
            _EXPLICIT.reset(reset)
        _OUTER.depth -= 1


def apply(requested: int | None = None, *, export: bool = False) -> int:
    """Set torch's and FAISS's thread counts (those already imported) to :func:`thread_count` for the whole
    process; return it. For a program that owns its process (``mindex --threads``); library calls use
    :func:`limited`, which lasts one call.

    ``export=True`` also writes it to ``MINDEX_THREADS`` and ``OMP_NUM_THREADS`` so that a library
    loaded later in this process (libgomp reads ``OMP_NUM_THREADS`` when it loads) and child
    processes follow it.
    """
    n = resolve(requested, name="--threads")[0]
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
