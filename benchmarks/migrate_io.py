"""Where a migration's disk writes come from, in qdrant-client local mode and for qdrant-edge (issue 13).

Builds a local-mode source of ``--points`` x ``--dim`` (random unit vectors, small payloads) on a
disk-backed temporary directory, then migrates it (copy mode and in place) and counts the bytes this
process sent to storage (``/proc/self/io`` ``write_bytes``) in each part of the migration: our
checkpoints, our index record and adaptor (the companion collection), the point writes themselves,
and verification. The same points written by the user (a plain ``upsert``) and added to a
qdrant-edge shard (then saved) are the yardsticks: what local mode and the engine cost on their own.

    python benchmarks/migrate_io.py --points 1000 --dim 384

Writes ``benchmarks/results/migrate_io.md`` (+ ``.json``). Linux only (``/proc/self/io``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent


def written() -> int:
    with open("/proc/self/io") as f:
        for line in f:
            if line.startswith("write_bytes:"):
                return int(line.split()[1])
    raise RuntimeError("no write_bytes in /proc/self/io")


class Meter:
    """Bytes written inside each wrapped call, by bucket (nested calls count in the innermost only)."""

    def __init__(self) -> None:
        self.bytes: dict[str, int] = defaultdict(int)
        self.calls: dict[str, int] = defaultdict(int)
        self._depth = 0

    def wrap(self, owner: Any, name: str, bucket: str) -> Callable[[], None]:
        original = getattr(owner, name)
        meter = self

        def wrapped(*args: Any, **kwargs: Any) -> Any:
            if meter._depth:
                return original(*args, **kwargs)
            meter._depth += 1
            before = written()
            try:
                return original(*args, **kwargs)
            finally:
                meter.bytes[bucket] += written() - before
                meter.calls[bucket] += 1
                meter._depth -= 1

        setattr(owner, name, wrapped)
        return lambda: setattr(owner, name, original)


@contextmanager
def metered(client: Any) -> Iterator[Meter]:
    from matryoshka_index.backends.qdrant.metadata import MetadataStore

    meter = Meter()
    undo = [
        meter.wrap(MetadataStore, "write", "records (checkpoint + index record)"),
        meter.wrap(MetadataStore, "write_blobs", "adaptor (companion collection)"),
        meter.wrap(MetadataStore, "write_companion_record", "fingerprints (companion collection)"),
        meter.wrap(client, "upsert", "points (upsert)"),
        meter.wrap(client, "update_vectors", "points (update_vectors)"),
        meter.wrap(client, "create_collection", "create collection"),
    ]
    try:
        yield meter
    finally:
        for u in reversed(undo):
            u()


def make_points(n: int, dim: int, seed: int = 0) -> tuple[np.ndarray, list[dict[str, Any]]]:
    x = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x, [{"i": i, "title": f"doc {i}", "tags": ["a", str(i % 5)]} for i in range(n)]


def make_source(path: Path, x: np.ndarray, payloads: list[dict[str, Any]]) -> tuple[float, int]:
    from qdrant_client import QdrantClient
    from qdrant_client import models as qm

    client = QdrantClient(path=str(path))
    client.create_collection(
        "src", vectors_config={"emb": qm.VectorParams(size=x.shape[1], distance=qm.Distance.COSINE)}
    )
    t0, w0 = time.perf_counter(), written()
    for start in range(0, len(x), 256):
        sl = slice(start, start + 256)
        ids = list(range(start, min(start + 256, len(x))))
        client.upsert("src", qm.Batch(ids=ids, vectors={"emb": x[sl].tolist()}, payloads=payloads[sl]))
    seconds, nbytes = time.perf_counter() - t0, written() - w0
    client.close()
    return seconds, nbytes


def run_migration(path: Path, adaptor: Any, *, in_place: bool, checkpoint_seconds: float) -> dict[str, Any]:
    from qdrant_client import QdrantClient

    from matryoshka_index import migrate_collection

    client = QdrantClient(path=str(path))
    try:
        with metered(client) as meter:
            t0, w0 = time.perf_counter(), written()
            report = migrate_collection(
                client, "src", vector="emb", coarse_dim=64, adaptor=adaptor, in_place=in_place,
                recall_queries=20, verify_sample=100, checkpoint_seconds=checkpoint_seconds, quiet=True,
                **({} if in_place else {"target": "dst"}),
            )  # fmt: skip
            seconds, total = time.perf_counter() - t0, written() - w0
    finally:
        client.close()
    assert report.ok, report.describe()
    parts = dict(meter.bytes)
    parts["other (reads, verification, local-mode bookkeeping)"] = total - sum(parts.values())
    return {
        "seconds": seconds,
        "bytes": total,
        "parts": parts,
        "calls": dict(meter.calls),
        "points": report.copied_total,
    }


def run_edge(x: np.ndarray, payloads: list[dict[str, Any]], tmp: Path) -> dict[str, Any]:
    from matryoshka_index.backends.qdrant.edge import QdrantEdgeBackend

    coarse = np.ascontiguousarray(x[:, :64])
    coarse /= np.linalg.norm(coarse, axis=1, keepdims=True)
    be = QdrantEdgeBackend.create(coarse_dim=64, full_dim=x.shape[1], path=tmp / "edge-work", quiet=True)
    try:
        t0, w0 = time.perf_counter(), written()
        be.add(np.arange(len(x)), coarse, x, payloads)
        add_s, add_b = time.perf_counter() - t0, written() - w0
        (tmp / "edge-saved").mkdir()
        t1, w1 = time.perf_counter(), written()
        be.save(tmp / "edge-saved")
        save_s, save_b = time.perf_counter() - t1, written() - w1
    finally:
        be.close()
    return {"add_seconds": add_s, "add_bytes": add_b, "save_seconds": save_s, "save_bytes": save_b}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--points", type=int, default=1000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--checkpoint-seconds", type=float, default=2.0)
    ap.add_argument("--label", default="", help="a note for the results (e.g. before/after a change)")
    ap.add_argument("--out", default=str(HERE / "results" / "migrate_io"))
    args = ap.parse_args()

    from matryoshka_index import MatryoshkaAdaptor

    x, payloads = make_points(args.points, args.dim)
    adaptor = MatryoshkaAdaptor(matryoshka_dims=[64], epochs=1, batch_size=256, device="cpu", quiet=True).fit(x)
    vector_bytes = args.points * args.dim * 4
    tmp = Path(tempfile.mkdtemp(prefix="mindex-migrate-io-", dir=os.environ.get("MIGRATE_IO_DIR", "/var/tmp")))
    rows: dict[str, Any] = {}
    try:
        for mode in ("copy", "in_place"):
            store = tmp / mode
            src_s, src_b = make_source(store, x, payloads)
            rows.setdefault("user upsert (local mode)", {"seconds": src_s, "bytes": src_b, "points": args.points})
            rows[f"migrate {mode} (local mode)"] = run_migration(
                store, adaptor, in_place=mode == "in_place", checkpoint_seconds=args.checkpoint_seconds
            )
        rows["qdrant-edge add + save"] = run_edge(x, payloads, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    load = os.getloadavg()
    lines = [
        "# Migration write amplification (issue 13)",
        "",
        f"{args.points:,} points x {args.dim} dims (float32 vectors: {vector_bytes / args.points:,.0f} bytes/point), "
        f"payload ~60 bytes; local mode on {tmp.parent} (disk). {args.label}",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; load average "
        f"{load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} while it ran (shared machine: times are loaded times).",
        "",
        "| what | points/s | bytes written / point | x the vectors |",
        "|---|---:|---:|---:|",
    ]
    n = args.points
    per_vec = vector_bytes / n
    for name, r in rows.items():
        if "add_bytes" in r:
            lines.append(
                f"| qdrant-edge add | {n / r['add_seconds']:,.0f} | {r['add_bytes'] / n:,.0f} | {r['add_bytes'] / vector_bytes:.1f} |"
            )
            lines.append(
                f"| qdrant-edge save (copy of the shard) | {n / r['save_seconds']:,.0f} | {r['save_bytes'] / n:,.0f} | "
                f"{r['save_bytes'] / vector_bytes:.1f} |"
            )
            continue
        lines.append(f"| {name} | {n / r['seconds']:,.1f} | {r['bytes'] / n:,.0f} | {r['bytes'] / n / per_vec:.1f} |")
    for name, r in rows.items():
        if "parts" not in r:
            continue
        lines += ["", f"**{name}**, by part (bytes / point; calls):", ""]
        for part, b in sorted(r["parts"].items(), key=lambda kv: -kv[1]):
            calls = r["calls"].get(part)
            lines.append(f"- {part}: {b / n:,.0f}" + (f" ({calls} calls)" if calls else ""))
    text = "\n".join(lines) + "\n"
    print(text)
    out = Path(args.out)
    with open(out.with_suffix(".md"), "a") as f:
        f.write(text + "\n")
    with open(out.with_suffix(".json"), "a") as f:
        f.write(json.dumps({"points": n, "dim": args.dim, "label": args.label, "load": load, "rows": rows}) + "\n")


if __name__ == "__main__":
    main()
