"""Stage 6, writing: every point from the checkpoint to the end, in batches, checkpointed as it goes.

Batches are read with ``scroll``, converted by the mode (a full point for copy mode, ``coarse``
alone in place), and written concurrently on a server (synchronously in local mode, one SQLite
thread). The checkpoint moves past a batch only once it and every batch before it are
acknowledged, and is written at most every ``checkpoint_seconds``: batches redone after a crash
are idempotent (an upsert or a vector update by id), so nothing is duplicated or skipped.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from qdrant_client import QdrantClient

from ..backends.qdrant.connection import client_engine, is_local_client
from ..backends.qdrant.metadata import utc_now
from ..progress import progress
from .checkpoint import Checkpoint, State
from .reports import BatchEvent
from .source import Source, scroll


@contextmanager
def local_write_ahead_log(client: QdrantClient, collection: str) -> Iterator[bool]:
    """While writing into a qdrant-client local-mode *path* collection: SQLite in WAL mode, synchronous=NORMAL.

    Local mode commits one SQLite transaction per point. In its default rollback-journal mode each
    commit writes the journal and the pages and syncs both: 25x the vectors' bytes in our
    measurements (benchmarks/results/migrate_io.md), and the process waits in fsync. With a
    write-ahead log a commit appends the changed pages once and syncs only at checkpoints; a killed
    process loses nothing committed (SQLite replays the log on the next open), a power cut may lose
    the last commits, which the migration's verification then reports (its counts differ). The
    collection's own journal mode is set back afterwards, so its files end as local mode left them.
    Yields whether the mode was switched (False: not local path mode, or not reachable).
    """
    inner = client_engine(client)
    coll = (getattr(inner, "collections", None) or {}).get(collection) if getattr(inner, "persistent", False) else None
    conn = getattr(getattr(coll, "storage", None), "storage", None)
    if not isinstance(conn, sqlite3.Connection):
        yield False
        return
    try:
        before = conn.execute("PRAGMA journal_mode").fetchone()[0]
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
    except sqlite3.Error:
        yield False
        return
    try:
        yield True
    finally:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute(f"PRAGMA journal_mode={before}")  # checkpoints the log into the database file


class Writer:
    """Writes batches with ``write`` (an upsert, or ``update_vectors`` in place), concurrently on a
    server; synchronously in local mode (one SQLite thread)."""

    def __init__(self, client: QdrantClient, parallel: int, write: Callable[[list[Any]], None]) -> None:
        self._write = write
        self.pool = ThreadPoolExecutor(parallel) if parallel > 1 and not is_local_client(client) else None
        self.parallel = 1 if self.pool is None else parallel

    def submit(self, points: list[Any]) -> Future:
        if self.pool is not None:
            return self.pool.submit(self._write, points)
        fut: Future = Future()
        try:
            self._write(points)
        except Exception as exc:
            fut.set_exception(exc)
        else:
            fut.set_result(None)
        return fut

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)


def done_future() -> Future:
    fut: Future = Future()
    fut.set_result(None)
    return fut


@dataclass
class WriteJob:
    """What :func:`write_batches` needs from the mode: where to write, how to convert, what to read."""

    target: str
    convert: Callable[[list[Any]], tuple[list[Any], int]]
    """Records -> (points to write, records without the adapted vector)."""
    write: Callable[[list[Any]], None]
    with_payload: bool
    with_vectors: Any
    desc: str


def write_batches(
    client: QdrantClient,
    src: Source,
    endpoint: str,
    job: WriteJob,
    checkpoint: Checkpoint,
    save: Callable[[Checkpoint], None],
    *,
    batch_size: int,
    parallel: int,
    retries: int,
    checkpoint_seconds: float,
    quiet: bool,
    on_batch: Callable[[BatchEvent], None] | None,
) -> tuple[int, int]:
    """Write every point from the checkpoint to the end; returns (points processed now, batches).

    ``checkpoint`` is updated in place and saved with ``save`` (at most every ``checkpoint_seconds``,
    at the end with state ``written``, and on the way out of an error or Ctrl-C).
    """
    cp = checkpoint
    start_done = cp.done
    writer = Writer(client, parallel, job.write)
    pending: deque[tuple[Future, Any, int, int]] = deque()
    # the acknowledged state, ahead of the checkpoint until it is flushed
    state = {"offset": cp.offset, "done": cp.done, "batches": cp.batches, "no_vector": cp.points_without_vector}
    flushed = (cp.offset, cp.done)
    last_write = time.monotonic()

    def flush(final: bool = False) -> None:
        nonlocal flushed
        if final or (state["offset"], state["done"]) != flushed:
            cp.offset, cp.done, cp.batches = state["offset"], state["done"], state["batches"]
            cp.points_without_vector = state["no_vector"]
            if final:
                cp.state, cp.offset = State.WRITTEN, None
            cp.updated = utc_now()
            save(cp)
            flushed = (cp.offset, cp.done)

    def commit(block: bool) -> None:
        nonlocal last_write
        while pending and (block or pending[0][0].done()):
            fut, next_offset, n, missing = pending.popleft()
            fut.result()  # raises the batch's error; the checkpoint stays before it
            state["offset"], state["done"] = next_offset, state["done"] + n
            state["batches"] += 1
            state["no_vector"] += missing
            bar.update(n)
            if on_batch is not None:
                on_batch(BatchEvent(state["batches"], state["done"], src.count))
            if time.monotonic() - last_write >= checkpoint_seconds:
                flush()
                last_write = time.monotonic()

    bar = progress(total=src.count, initial=cp.done, desc=job.desc, unit="pt", quiet=quiet)
    pages = scroll(
        client, src.name, endpoint, limit=batch_size, with_payload=job.with_payload, with_vectors=job.with_vectors,
        offset=cp.offset, retries=retries,
    )  # fmt: skip
    wal = contextlib.ExitStack()
    try:
        wal.enter_context(local_write_ahead_log(client, job.target))
        for records, next_offset in pages:
            if records:
                points, missing = job.convert(records)
                fut: Future = writer.submit(points) if points else done_future()
                pending.append((fut, next_offset, len(records), missing))
            commit(block=len(pending) > 2 * writer.parallel)
        while pending:
            commit(block=True)
        flush(final=True)
    finally:
        writer.close()
        wal.close()
        bar.close()
        if cp.state == State.WRITING:
            try:  # best effort: on a dead server this fails too, and the last checkpoint stands
                flush()
            except Exception:
                pass
    return state["done"] - start_done, state["batches"]


__all__ = ["WriteJob", "Writer", "write_batches"]
