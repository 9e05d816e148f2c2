"""Inverted lists whose ids cost nothing: a saved index's rows lie in list order (``implicit_ids=True``).

A FAISS IVF index keeps an 8-byte id beside every code in its lists: with 16-byte codes that is a third of
what each vector keeps in memory (issue 22: 25.3 B/vector for ``64 ivf pq4x32``). With
``FaissBackend.create(index="ivf", implicit_ids=True)`` the backend instead **writes its rows in list order
when it saves**: list ``l`` then holds rows ``start[l] .. start[l] + size[l] - 1`` in the order of its
entries, so an entry's place in its list *is* its row, and the full vectors of a list (a query's candidates
come from a few lists) share pages of ``full.npy``. The coarse stage asks FAISS for ``(list, position)``
pairs (``search_preassigned`` with ``store_pairs``: FAISS then never reads an id) and adds the list's first
row, and a loaded index's ``coarse.faiss`` is memory-mapped (``IO_FLAG_MMAP_IFC``): its id arrays stay in
the file, untouched, and what stays in memory is the codes the search scans (pq4 x 32: 16 B a vector) plus
``start`` (8 B a list).

Why this way, of the three the issue names: FAISS's fast-scan IVF (``IndexIVFPQFastScan``) refuses
``store_pairs`` and reads the id of every entry that enters its result heap (``ScopedIds`` in
``IndexIVFFastScan.cpp``), so its ids would be read on every query, from the page cache or from disk; a
fast-scan block per list would be an index per list (thousands of FAISS calls a query). The ordinary IVF
scanners (``IndexIVFPQ``, ``IndexIVFScalarQuantizer``, ``IndexIVFFlat``) take ``store_pairs`` and scan with
the query's lookup table; their lists' ids stay truthful (each is its row, FAISS's own numbering when
vectors are added without ids), so nothing else of the backend changes: removals are tombstones (a removed
row keeps its place in its list, so positions never move), and rows added after a load go to the end of
their lists, beyond the list-ordered part, where their ids are read (copied once, 8 B for each such row,
until the next save puts them in order).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from ..errors import InputError
from . import faiss_codes

__all__ = ["IMPLICIT_CODES", "ImplicitLists", "check_implicit", "make_index", "read"]

IMPLICIT_CODES = ("float", "sq8", "sq4", "pq4")  # FAISS IVF scanners that take store_pairs
_POSITION_BITS = 32  # store_pairs labels: list number << 32 | position in the list
_POSITION_MASK = (1 << _POSITION_BITS) - 1
GATHER_ROWS = 65536  # full vectors put in list order this many rows at a time when saving


def check_implicit(structure: str, code: str) -> None:
    """One line where ``implicit_ids=True`` cannot apply: IVF only, with a code FAISS scans with store_pairs."""
    if structure != "ivf":
        raise InputError(f"implicit_ids: applies to index='ivf' (inverted lists) only, not index={structure!r}")
    if code not in IMPLICIT_CODES:
        raise InputError(
            f"implicit_ids: code={code!r} is searched by a FAISS index that reads an id for every hit; "
            f"choose one of {', '.join(IMPLICIT_CODES)}"
        )


def make_index(code: str, dim: int, nlist: int, pq_m: int) -> Any:
    """An empty IVF index over ``nlist`` lists whose scanner takes ``store_pairs``: ``pq4`` is 4-bit PQ with
    ``pq_m`` sub-quantizers in FAISS's ordinary layout (``IndexIVFPQ``, ``pq_m / 2`` bytes a vector)."""
    if code not in IMPLICIT_CODES:
        raise InputError(f"implicit_ids: no store_pairs IVF index for code={code!r}")
    return faiss_codes.make_index("ivf", code, dim, {"pq_m": pq_m}, nlist, fast_scan=False)


def read(path: Path, mmap: bool) -> Any:
    """A saved IVF index; ``mmap``: its lists (codes and ids) memory-mapped from the file, not copied."""
    return faiss.read_index(str(path), faiss.IO_FLAG_MMAP_IFC if mmap else 0)


class ImplicitLists:
    """Where each list's entries are rows: the first ``ordered[l]`` entries of list ``l`` are rows
    ``start[l] + position`` (a saved layout); entries beyond them (rows added since) are read from the ids.

    ``index`` is the backend's FAISS IVF index; ``ordered`` the list-ordered entries a list starts with (all
    of its entries when opened from a save, none in a fresh build); ``mapped``: the index's lists are memory
    mapped (read-only: :meth:`writable` copies them before an add).
    """

    def __init__(self, index: Any, ordered: np.ndarray | None = None, *, mapped: bool = False) -> None:
        self.index = index
        self.ivf = faiss.extract_index_ivf(index)
        nlist = int(self.ivf.nlist)
        self.ordered = np.zeros(nlist, dtype=np.int64) if ordered is None else np.asarray(ordered, dtype=np.int64)
        self.start = np.concatenate(([0], np.cumsum(self.ordered)[:-1])).astype(np.int64)
        self.mapped = mapped
        self._tail: tuple[np.ndarray, np.ndarray] | None = None  # (first tail slot of each list, rows)

    @classmethod
    def opened(cls, index: Any, mapped: bool) -> ImplicitLists:
        """The lists of an index read from a save: every entry in list order."""
        return cls(index, list_sizes(index), mapped=mapped)

    # ------------------------------------------------------------------ state
    @property
    def any_ordered(self) -> bool:
        return bool(self.ordered.any())

    def sizes(self) -> np.ndarray:
        return list_sizes(self.index)

    def writable(self) -> Any:
        """The index, its lists copied into memory first if they are memory-mapped (FAISS cannot append to a
        mapped list: it aborts the process); the caller keeps the returned object as its coarse index."""
        if self.mapped:
            self.index = faiss.deserialize_index(faiss.serialize_index(self.index))
            self.ivf = faiss.extract_index_ivf(self.index)
            self.mapped = False
        return self.index

    def changed(self) -> None:
        """Entries were appended: the tail rows are read again at the next search."""
        self._tail = None

    def untouched_id_bytes(self) -> int:
        """Bytes of the lists' ids that stay in the memory-mapped file and no search reads (0 unless mapped)."""
        return int(self.index.ntotal) * 8 if self.mapped else 0

    def tail_bytes(self) -> int:
        return 0 if self._tail is None else int(self._tail[0].nbytes + self._tail[1].nbytes)

    # ------------------------------------------------------------------ search
    def hits(self, queries: np.ndarray, n: int, nprobe: int) -> tuple[np.ndarray, np.ndarray]:
        """Top ``n`` ``(scores, rows)`` for float32 ``queries`` probing ``nprobe`` lists (``-1`` rows where fewer)."""
        nq = len(queries)
        nprobe = int(max(1, min(nprobe, self.ivf.nlist)))
        probe_scores, probes = self.ivf.quantizer.search(queries, nprobe)
        scores = np.empty((nq, n), dtype=np.float32)
        labels = np.empty((nq, n), dtype=np.int64)
        pairs = self.any_ordered  # a fresh build has no ordered entry: FAISS's labels are the rows themselves
        self.ivf.search_preassigned_c(
            nq,
            faiss.swig_ptr(queries),
            n,
            faiss.swig_ptr(np.ascontiguousarray(probes)),
            faiss.swig_ptr(np.ascontiguousarray(probe_scores)),
            faiss.swig_ptr(scores),
            faiss.swig_ptr(labels),
            pairs,
            faiss.SearchParametersIVF(nprobe=nprobe),
        )
        return scores, self.rows_of_pairs(labels) if pairs else labels

    def rows_of_pairs(self, labels: np.ndarray) -> np.ndarray:
        """Rows of ``store_pairs`` labels (``list << 32 | position``; ``-1`` stays ``-1``)."""
        valid = labels >= 0
        safe = np.where(valid, labels, 0)
        lists = safe >> _POSITION_BITS
        position = safe & _POSITION_MASK
        ordered = self.ordered[lists]
        rows = self.start[lists] + position
        beyond = valid & (position >= ordered)
        if beyond.any():
            first, tail_rows = self._tail_rows()
            rows = np.where(beyond, tail_rows[np.where(beyond, first[lists] + position - ordered, 0)], rows)
        return np.where(valid, rows, -1)

    def _tail_rows(self) -> tuple[np.ndarray, np.ndarray]:
        if self._tail is None:
            sizes = self.sizes()
            extra = sizes - self.ordered
            first = np.concatenate(([0], np.cumsum(extra)[:-1])).astype(np.int64)
            rows = [list_ids(self.ivf.invlists, lst)[self.ordered[lst] :] for lst in np.flatnonzero(extra)]
            self._tail = (first, np.concatenate(rows) if rows else np.empty(0, dtype=np.int64))
        return self._tail

    # ------------------------------------------------------------------ saving in list order
    def layout(self) -> np.ndarray | None:
        """The rows in list order (list 0's entries first, each list in its order): the saved row ``i`` is
        the current row ``layout[i]``; ``None`` when that is already the identity (nothing to reorder)."""
        sizes = self.sizes()
        if np.array_equal(sizes, self.ordered):  # every entry where a save put it (or no entry at all)
            return None
        invlists = self.ivf.invlists
        parts = [list_ids(invlists, lst) for lst in np.flatnonzero(sizes)]
        return np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)

    def relabelled(self, layout: np.ndarray) -> Any:
        """A copy of the index whose lists' ids are the rows of ``layout``'s order (``0 .. n-1`` in list order)."""
        copy = faiss.deserialize_index(faiss.serialize_index(self.index))
        invlists = faiss.extract_index_ivf(copy).invlists
        code_size = int(invlists.code_size)
        row = 0
        for lst in range(invlists.nlist):
            size = int(invlists.list_size(lst))
            if not size:
                continue
            codes = faiss.rev_swig_ptr(invlists.get_codes(lst), size * code_size).copy()
            ids = np.arange(row, row + size, dtype=np.int64)
            invlists.update_entries(lst, 0, size, faiss.swig_ptr(ids), faiss.swig_ptr(codes))
            row += size
        if row != len(layout):
            raise ValueError(f"relabelled: the lists hold {row} entries, the layout {len(layout)} rows")
        return copy


def list_sizes(index: Any) -> np.ndarray:
    invlists = faiss.extract_index_ivf(index).invlists
    return np.array([invlists.list_size(lst) for lst in range(invlists.nlist)], dtype=np.int64)


def list_ids(invlists: Any, lst: int) -> np.ndarray:
    size = int(invlists.list_size(int(lst)))
    if not size:
        return np.empty(0, dtype=np.int64)
    return faiss.rev_swig_ptr(invlists.get_ids(int(lst)), size).copy()


def gather_in_order(segments: list[tuple[int, np.ndarray]], layout: np.ndarray) -> Iterator[np.ndarray]:
    """The full vectors of rows ``layout`` in that order, ``GATHER_ROWS`` at a time, from the store's
    ``(first row, array)`` segments (each chunk read in ascending row order, then put in the layout's)."""
    for s in range(0, len(layout), GATHER_ROWS):
        want = layout[s : s + GATHER_ROWS]
        order = np.argsort(want, kind="stable")
        sorted_rows = want[order]
        width, dtype = (segments[0][1].shape[1], segments[0][1].dtype) if segments else (0, np.float32)
        out = np.empty((len(want), width), dtype=dtype)
        for start, arr in segments:
            inside = (sorted_rows >= start) & (sorted_rows < start + len(arr))
            if inside.any():
                out[order[inside]] = arr[sorted_rows[inside] - start]
        yield out
