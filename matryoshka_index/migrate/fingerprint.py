"""What an in-place migration must not change, taken before it changes anything: digests of points.

Each sampled point keeps a digest of its payload and one of all its vectors but ``coarse``, exact to
the bit; ``verify="full"`` adds an order-independent digest of the whole collection (the count and
the sums of per-point digests). They are kept in the companion collection (record
``matryoshka_index_migration_check``) and compared after the migration.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np
from qdrant_client import QdrantClient
from qdrant_client import models as qm

from ..backends.base import COARSE
from ..backends.qdrant.metadata import utc_now
from ..progress import progress
from .source import Source, random_points, scroll

CHECK_KEY = "matryoshka_index_migration_check"


def digest_vectors(record: Any, skip: str | None = COARSE) -> bytes:
    """A digest of every vector of a point but ``skip``, exact to the bit (float32 as stored)."""
    vec = record.vector
    if vec is None:
        vec = {}
    elif not isinstance(vec, dict):
        vec = {"": vec}  # an unnamed vector comes back as a list before coarse exists, in a dict after
    h = hashlib.blake2b(digest_size=16)
    for name in sorted(vec):
        if name == skip:
            continue
        v = vec[name]
        h.update(name.encode() + b"\0")
        if isinstance(v, qm.SparseVector):
            h.update(
                b"s" + np.asarray(v.indices, np.int64).tobytes() + b"|" + np.asarray(v.values, np.float32).tobytes()
            )
        else:
            arr = np.asarray(v, dtype=np.float32)
            h.update(b"d" + str(arr.shape).encode() + arr.tobytes())
    return h.digest()


def digest_payload(record: Any) -> bytes:
    text = json.dumps(record.payload or {}, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.blake2b(text.encode(), digest_size=16).digest()


def id_key(point_id: Any) -> str:
    """JSON-safe id that keeps int and UUID ids apart."""
    return f"i{point_id}" if isinstance(point_id, int) else f"u{point_id}"


def id_of(key: str) -> int | str:
    return int(key[1:]) if key[0] == "i" else key[1:]


class Digest:
    """Order-independent digest of a whole collection: point count and sums of per-point digests."""

    def __init__(self) -> None:
        self.count = 0
        self.payloads = 0
        self.vectors = 0

    def add(self, record: Any) -> None:
        key = id_key(record.id).encode()
        self.count += 1
        self.payloads += int.from_bytes(hashlib.blake2b(key + digest_payload(record), digest_size=16).digest(), "big")
        self.vectors += int.from_bytes(hashlib.blake2b(key + digest_vectors(record), digest_size=16).digest(), "big")

    def to_dict(self) -> dict[str, Any]:
        mask = (1 << 128) - 1
        return {
            "count": self.count,
            "payloads": f"{self.payloads & mask:032x}",
            "vectors": f"{self.vectors & mask:032x}",
        }


def full_digest(client: QdrantClient, src: Source, endpoint: str, quiet: bool, desc: str) -> dict[str, Any]:
    """The :class:`Digest` of every point of the source."""
    digest = Digest()
    with progress(total=src.count, desc=desc, unit="pt", quiet=quiet) as bar:
        for records, _ in scroll(client, src.name, endpoint, limit=256):
            for r in records:
                digest.add(r)
            bar.update(len(records))
    return digest.to_dict()


def fingerprint(
    client: QdrantClient, src: Source, endpoint: str, *, sample: int, full: bool, quiet: bool, seed: int | None = None
) -> dict[str, Any]:
    """What must not change, taken before anything changes: sampled points' digests (and the whole collection's)."""
    points = random_points(client, src.name, min(sample, max(src.count, 1)), endpoint, seed)
    return {
        "taken": utc_now(),
        "count": src.count,
        "sample": [[id_key(p.id), digest_payload(p).hex(), digest_vectors(p).hex()] for p in points],
        "full": full_digest(client, src, endpoint, quiet, "fingerprinting") if full else None,
    }


__all__ = ["CHECK_KEY", "Digest", "digest_payload", "digest_vectors", "fingerprint", "full_digest", "id_key", "id_of"]
