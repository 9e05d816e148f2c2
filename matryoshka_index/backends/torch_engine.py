"""Torch engines for the two stages: a coarse matrix resident on a torch device, and a reranker.

Neither needs anything beyond torch, and both run on CPU tensors as well as on a GPU, so every test
of them runs on a machine without one. torch is imported only when an engine is created (the
package imports, and a FAISS index searches, without torch).

:class:`TorchCoarseEngine`
    The coarse vectors as one ``(capacity, dim)`` tensor on the device, stored in ``float32``
    (exact: the same top-k as FAISS ``IndexFlatIP``), ``float16`` / ``bfloat16`` (half the memory,
    tensor cores) or ``int8`` (a quarter: symmetric per-dimension scale, ``code = round(x / scale)``
    with ``scale_j = max |x_j| / 127`` fixed at the first ``add``; later values beyond it are
    clipped). Search is a batched matmul plus ``topk``, chunked over the queries and over the corpus
    so that one score block never exceeds ``max_block_bytes``; the running best of each query chunk
    is merged block by block. Vectors carry int64 labels (the index's rows); ``remove`` marks them
    dead (masked to ``-inf`` in every block) and the matrix is compacted once half of it is dead.
    On the CPU the stored values are widened to float32 block by block (CPU half-precision GEMM is
    slow or missing); on a GPU float16/bfloat16 multiply natively and int8 codes are widened to
    float16 (integers up to 127 are exact in float16).

:class:`TorchReranker`
    Best ``k`` of each query's candidate rows by full-dimension inner product. The full vectors are
    copied onto the device when they fit in a share of its free memory (``resident``); otherwise the
    candidates' rows are gathered on the CPU (from a memory map) one query batch at a time, and the
    next batch is gathered on a worker thread while the device computes the current one.

Results follow the backends' convention: ``(scores, labels)``, float32 and int64, best first,
``-inf`` / ``-1`` in slots with no hit.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from ..errors import BackendError, InputError
from .base import EMPTY_ID

DTYPES = ("float32", "float16", "bfloat16", "int8")


def _torch() -> Any:
    try:
        import torch
    except ImportError:
        raise BackendError("the torch engine needs torch, which is not installed here (pip install torch)") from None
    return torch


def _device(torch: Any, device: Any) -> Any:
    """A torch.device from a string, a torch.device or a :class:`matryoshka_index.device.Device`-like object."""
    name = getattr(device, "torch_device", device)
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError):
        raise InputError(f"device: unknown torch device {name!r}; use 'cpu' or 'cuda:N'") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device: {name!r} was asked for but torch sees no CUDA GPU; use device='cpu'")
    return dev


def _block_rows(budget_bytes: int, other: int, itemsize: int, minimum: int) -> int:
    return max(minimum, budget_bytes // max(1, other * itemsize))


def _merge_topk(torch: Any, best_s: Any, best_i: Any, s: Any, i: Any, k: int) -> tuple[Any, Any]:
    if best_s is None:
        return s, i
    s = torch.cat([best_s, s], dim=1)
    i = torch.cat([best_i, i], dim=1)
    kk = min(k, s.shape[1])
    s, pos = torch.topk(s, kk, dim=1)
    return s, torch.gather(i, 1, pos)


def _pad(scores: np.ndarray, labels: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Results widened to ``k`` columns with empty slots, and ``-1`` / ``-inf`` kept together."""
    labels = np.where(np.isfinite(scores), labels, EMPTY_ID).astype(np.int64, copy=False)
    scores = np.where(labels >= 0, scores, -np.inf).astype(np.float32, copy=False)
    if scores.shape[1] < k:
        pad = k - scores.shape[1]
        scores = np.pad(scores, ((0, 0), (0, pad)), constant_values=-np.inf)
        labels = np.pad(labels, ((0, 0), (0, pad)), constant_values=EMPTY_ID)
    return scores, labels


class TorchCoarseEngine:
    """Exact (float32) or low-precision inner-product top-k over labelled vectors resident on a torch device.

    ``device``: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` (or a resolved :class:`~matryoshka_index.device.Device`).
    ``dtype``: one of :data:`DTYPES`. ``max_block_bytes``: the largest score block one step computes
    (default 256 MiB on a GPU, 32 MiB on the CPU), which bounds the memory a search needs beyond
    the matrix itself.
    """

    def __init__(self, dim: int, *, device: Any = "cpu", dtype: str = "float32", max_block_bytes: int | None = None):
        torch = _torch()
        if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 1:
            raise InputError(f"dim: must be a positive integer, got {dim!r}")
        if dtype not in DTYPES:
            raise InputError(f"dtype: unknown storage dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
        self._torch = torch
        self.dim = int(dim)
        self.dtype = dtype
        self.device = _device(torch, device)
        on_gpu = self.device.type == "cuda"
        self.max_block_bytes = int(max_block_bytes or (256 << 20 if on_gpu else 32 << 20))
        store = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "int8": torch.int8}
        self._store_dtype = store[dtype]
        # CPU half-precision GEMM is slow or missing: widen blocks to float32 there.
        if not on_gpu:
            self._compute_dtype = torch.float32
        else:
            self._compute_dtype = torch.float16 if dtype == "int8" else self._store_dtype
        self._data = torch.empty((0, self.dim), dtype=self._store_dtype, device=self.device)
        self._labels = torch.empty(0, dtype=torch.int64, device=self.device)
        self._alive = torch.empty(0, dtype=torch.bool, device=self.device)
        self._n = 0  # used rows of the buffers (alive or dead)
        self._n_alive = 0
        self._scale: Any = None  # int8: per-dimension float32 scale
        self._lock = threading.Lock()  # searches on one CUDA stream one at a time; mutations exclusive

    # ------------------------------------------------------------------ contents
    def __len__(self) -> int:
        return self._n_alive

    @property
    def nbytes(self) -> int:
        """Bytes the stored vectors take on the device (codes, labels, alive flags; excludes spare capacity)."""
        item = {"float32": 4, "float16": 2, "bfloat16": 2, "int8": 1}[self.dtype]
        return self._n * (self.dim * item + 8 + 1) + (self.dim * 4 if self._scale is not None else 0)

    def _encode(self, x: Any) -> Any:
        if self.dtype != "int8":
            return x.to(self._store_dtype)
        return self._torch.clamp(self._torch.round(x / self._scale), -127, 127).to(self._torch.int8)

    def _fix_scale(self, x: Any, step: int) -> None:
        """int8: ``scale_j = max |x_j| / 127`` over the first vectors added (all of them, block by block)."""
        torch = self._torch
        peak = torch.zeros(self.dim, dtype=torch.float32, device=self.device)
        for s in range(0, len(x), step):
            part = x[s : s + step].to(self.device, dtype=torch.float32)
            peak = torch.maximum(peak, part.abs().amax(dim=0))
        self._scale = torch.where(peak > 0, peak / 127.0, torch.ones_like(peak))

    def _matrix(self, rows: np.ndarray | Any, name: str) -> Any:
        """``rows`` as a ``(n, dim)`` tensor (a tensor as given, an array without a copy where it is float32)."""
        torch = self._torch
        x = rows if isinstance(rows, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(rows, np.float32))
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise InputError(f"{name}: expected shape (n, {self.dim}), got {tuple(x.shape)}")
        return x

    def add(self, labels: np.ndarray, vectors: np.ndarray | Any) -> None:
        """Append ``vectors`` (``(n, dim)`` float array or tensor) under int64 ``labels`` (the caller keeps them unique)."""
        torch = self._torch
        labels = np.asarray(labels, dtype=np.int64).reshape(-1)
        x = self._matrix(vectors, "vectors")
        if len(labels) != len(x):
            raise InputError(f"labels: {len(labels)} labels for {len(x)} vectors; give one label per vector")
        if not len(x):
            return
        with self._lock:
            need = self._n + len(x)
            if need > len(self._data):  # capacity doubles: amortised O(1) appends, no copy per add
                cap = max(need, 2 * len(self._data), 1024)
                data = torch.empty((cap, self.dim), dtype=self._store_dtype, device=self.device)
                data[: self._n] = self._data[: self._n]
                lab = torch.full((cap,), EMPTY_ID, dtype=torch.int64, device=self.device)
                lab[: self._n] = self._labels[: self._n]
                alive = torch.zeros(cap, dtype=torch.bool, device=self.device)
                alive[: self._n] = self._alive[: self._n]
                self._data, self._labels, self._alive = data, lab, alive
            step = _block_rows(self.max_block_bytes, self.dim, 4, 1)
            if self.dtype == "int8" and self._scale is None:
                self._fix_scale(x, step)
            for s in range(0, len(x), step):  # encode in blocks: the float32 copy on the device stays bounded
                part = x[s : s + step].to(self.device, dtype=torch.float32)
                self._data[self._n + s : self._n + s + len(part)] = self._encode(part)
            self._labels[self._n : need] = torch.from_numpy(labels).to(self.device)
            self._alive[self._n : need] = True
            self._n = need
            self._n_alive += len(x)

    def remove(self, labels: np.ndarray) -> int:
        """Drop the vectors with these labels; returns how many were present."""
        torch = self._torch
        labels = np.asarray(labels, dtype=np.int64).reshape(-1)
        if not len(labels) or not self._n:
            return 0
        with self._lock:
            target = torch.from_numpy(labels).to(self.device)
            hit = torch.isin(self._labels[: self._n], target) & self._alive[: self._n]
            removed = int(hit.sum())
            self._alive[: self._n] &= ~hit
            self._n_alive -= removed
            if self._n_alive * 2 < self._n:
                self._compact()
        return removed

    def _compact(self) -> None:
        keep = self._alive[: self._n]
        self._data = self._data[: self._n][keep].clone()
        self._labels = self._labels[: self._n][keep].clone()
        self._n = len(self._data)
        self._alive = self._torch.ones(self._n, dtype=self._torch.bool, device=self.device)

    def to_numpy(self) -> tuple[np.ndarray, np.ndarray]:
        """``(labels, vectors)`` of the live rows as int64 and float32 arrays (decoded; for saving as plain arrays)."""
        with self._lock:
            keep = self._alive[: self._n]
            labels = self._labels[: self._n][keep].cpu().numpy()
            data = self._data[: self._n][keep].to(self._torch.float32)
            if self.dtype == "int8":
                data = data * self._scale
            return labels, data.cpu().numpy()

    # ------------------------------------------------------------------ search
    def search(self, queries: np.ndarray | Any, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top ``k`` by inner product: ``(scores, labels)``, each ``(n_queries, k)``, ``-inf`` / ``-1`` for none."""
        s, i = self.search_tensors(queries, k)
        return _pad(s.float().cpu().numpy(), i.cpu().numpy(), int(k))

    def search_tensors(self, queries: np.ndarray | Any, k: int) -> tuple[Any, Any]:
        """As :meth:`search`, as tensors on the device with ``min(k, len(self))`` columns (no padding)."""
        torch = self._torch
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise InputError(f"k: must be a positive integer, got {k!r}")
        q = self._matrix(queries, "queries")
        nq = len(q)
        kk = int(min(k, self._n_alive))
        if not kk or not nq:
            empty = torch.empty((nq, 0), device=self.device)
            return empty, empty.to(torch.int64)
        with self._lock, torch.no_grad():
            item = torch.finfo(self._compute_dtype).bits // 8
            q_rows = min(nq, 4096)
            c_rows = _block_rows(self.max_block_bytes, q_rows, item, kk)
            if c_rows < kk:  # topk needs k columns per block: shrink the query chunk instead
                c_rows = kk
            q_rows = max(1, min(q_rows, self.max_block_bytes // max(1, c_rows * item)))
            out_s, out_i = [], []
            has_dead = self._n_alive < self._n  # known on the host: no device sync per block
            for qs in range(0, nq, q_rows):
                qb = q[qs : qs + q_rows].to(self.device, dtype=torch.float32)
                if self._scale is not None:  # int8: fold the per-dimension scale into the query
                    qb = qb * self._scale
                qb = qb.to(self._compute_dtype)
                best_s = best_i = None
                for cs in range(0, self._n, c_rows):
                    ce = min(cs + c_rows, self._n)
                    block = self._data[cs:ce].to(self._compute_dtype)
                    scores = qb @ block.T  # float16/bfloat16 on a GPU: half the bytes for topk to read
                    if has_dead:
                        scores.masked_fill_(~self._alive[cs:ce], -math.inf)
                    s, pos = torch.topk(scores, min(kk, ce - cs), dim=1)
                    best_s, best_i = _merge_topk(torch, best_s, best_i, s.float(), self._labels[cs:ce][pos], kk)
                out_s.append(best_s)
                out_i.append(best_i)
            return torch.cat(out_s), torch.cat(out_i)

    def info(self) -> dict[str, Any]:
        return {
            "engine": "torch",
            "device": str(self.device),
            "dtype": self.dtype,
            "count": self._n_alive,
            "device_bytes": self.nbytes,
        }


class TorchReranker:
    """Rerank candidate rows by full-dimension inner product on a torch device.

    ``full``: the full vectors by row, an ``(n, dim)`` array (a memory map is fine), a list of
    ``(first row, array)`` segments covering rows ``0..n-1`` in order, or a tensor (used in place on
    the device). ``resident``: ``None`` (default)
    copies them onto a CUDA device when they take at most ``device_fraction`` of its free memory, and
    gathers on the CPU otherwise (always, on a CPU device); ``True`` / ``False`` force the choice.
    ``max_batch_bytes`` bounds the gathered candidate block of one query batch.
    """

    def __init__(
        self,
        full: np.ndarray | Sequence[tuple[int, np.ndarray]],
        *,
        device: Any = "cpu",
        resident: bool | None = None,
        device_fraction: float = 0.5,
        max_batch_bytes: int | None = None,
    ) -> None:
        torch = _torch()
        self._torch = torch
        self.device = _device(torch, device)
        if isinstance(full, torch.Tensor):  # already a tensor (e.g. generated on the GPU): use it in place
            self._full_dev = full.to(self.device, dtype=torch.float32)
            self._segments = []
            self.rows, self.dim = (int(v) for v in self._full_dev.shape)
            self.resident = True
            self.max_batch_bytes = int(max_batch_bytes or (512 << 20 if self.device.type == "cuda" else 64 << 20))
            return
        self._segments = [(0, full)] if isinstance(full, np.ndarray) else [(int(s), a) for s, a in full]
        dims = {a.shape[1] for _, a in self._segments}
        if len(dims) > 1:
            raise InputError(f"full: segments of different dimensions {sorted(dims)}")
        self.dim = dims.pop() if dims else 0
        self.rows = sum(len(a) for _, a in self._segments)
        on_gpu = self.device.type == "cuda"
        self.max_batch_bytes = int(max_batch_bytes or (512 << 20 if on_gpu else 64 << 20))
        nbytes = self.rows * self.dim * 4
        if resident is None:
            resident = on_gpu and nbytes <= device_fraction * torch.cuda.mem_get_info(self.device)[0]
        self.resident = bool(resident)
        self._full_dev: Any = None
        if self.resident:
            buf = torch.empty((self.rows, self.dim), dtype=torch.float32, device=self.device)
            for start, arr in self._segments:
                for s in range(0, len(arr), 65536):
                    part = np.ascontiguousarray(arr[s : s + 65536], dtype=np.float32)
                    buf[start + s : start + s + len(part)] = torch.from_numpy(part).to(self.device)
            self._full_dev = buf

    def _gather_cpu(self, rows: np.ndarray) -> Any:
        """Rows (``-1`` read as row 0, masked later) gathered from the segments into one CPU float32 tensor."""
        torch = self._torch
        flat = np.maximum(rows.reshape(-1), 0)
        # page-locked on a GPU machine: the copy to the device can overlap the next gather
        buf = torch.empty((len(flat), self.dim), dtype=torch.float32, pin_memory=self.device.type == "cuda")
        out = buf.numpy()
        for start, arr in self._segments:
            inside = (flat >= start) & (flat < start + len(arr))
            if inside.any():
                local = flat[inside] - start
                order = np.argsort(local, kind="stable")  # sorted reads: sequential pages of the memory map
                out[np.flatnonzero(inside)[order]] = arr[local[order]]
        return buf.reshape((*rows.shape, self.dim))

    def rerank(self, queries: np.ndarray | Any, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Best ``k`` of each query's candidate ``rows`` (``-1`` = none): ``(scores, rows)``, ``-inf`` / ``-1`` for none."""
        torch = self._torch
        rows = np.asarray(rows, dtype=np.int64)
        q = (
            queries
            if isinstance(queries, torch.Tensor)
            else torch.from_numpy(np.ascontiguousarray(queries, np.float32))
        )
        nq, c = rows.shape
        if len(q) != nq:
            raise InputError(f"rows: {nq} rows of candidates for {len(q)} queries")
        if not nq or not c:
            return _pad(np.empty((nq, 0), np.float32), np.empty((nq, 0), np.int64), k)
        kk = min(int(k), c)
        batch = max(1, self.max_batch_bytes // max(1, c * self.dim * 4))
        starts = list(range(0, nq, batch))
        out_s = np.empty((nq, kk), dtype=np.float32)
        out_r = np.empty((nq, kk), dtype=np.int64)
        pool = None if self.resident else ThreadPoolExecutor(max_workers=1, thread_name_prefix="mindex-gather")
        try:
            pending = pool.submit(self._gather_cpu, rows[:batch]) if pool is not None else None
            with torch.no_grad():
                for n, qs in enumerate(starts):
                    r = rows[qs : qs + batch]
                    r_dev = torch.from_numpy(r).to(self.device)
                    if pool is not None:
                        gathered = pending.result()
                        if n + 1 < len(starts):  # gather the next batch while the device works on this one
                            nxt = starts[n + 1]
                            pending = pool.submit(self._gather_cpu, rows[nxt : nxt + batch])
                        cand = gathered.to(self.device, non_blocking=True)
                    else:
                        cand = self._full_dev[torch.clamp(r_dev, min=0)]
                    qb = q[qs : qs + batch].to(self.device, dtype=torch.float32)
                    scores = torch.bmm(cand, qb.unsqueeze(2)).squeeze(2)
                    scores.masked_fill_(r_dev < 0, -math.inf)
                    s, pos = torch.topk(scores, kk, dim=1)
                    out_s[qs : qs + len(r)] = s.cpu().numpy()
                    out_r[qs : qs + len(r)] = torch.gather(r_dev, 1, pos).cpu().numpy()
        finally:
            if pool is not None:
                pool.shutdown(wait=True)
        return _pad(out_s, out_r, int(k))

    def info(self) -> dict[str, Any]:
        return {
            "engine": "torch",
            "device": str(self.device),
            "full_vectors": "on the device" if self.resident else "gathered on the CPU (batch-pipelined)",
        }


__all__ = ["DTYPES", "TorchCoarseEngine", "TorchReranker"]
