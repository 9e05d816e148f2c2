"""Connecting to Qdrant (a server, a local-mode storage, in memory, or a client given) and naming where."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

from qdrant_client import QdrantClient

from ...errors import BackendError, InputError
from .common import first_line

CONNECTION_OPTIONS = ("url", "path", "location", "client", "api_key", "https", "timeout", "prefer_grpc", "grpc_port")
"""The keywords :func:`connect` takes to reach Qdrant (``must_exist`` aside)."""


def client_engine(client: QdrantClient) -> Any:
    """The engine behind a client: qdrant-client's ``QdrantLocal`` (local mode) or ``QdrantRemote``; None if unknown.

    The one read of qdrant-client's private ``_client``: the client has no public accessor for its
    engine, and only the engine says where it points (``location``/``persistent``, ``rest_uri``) and
    holds local mode's collections. ``init_options`` is public but repeats the arguments, not the
    resolved location (a ``url`` of ``":memory:"``, a ``host`` alone).
    """
    return getattr(client, "_client", None)


def save_local_collections(client: QdrantClient) -> bool:
    """Write a local-mode client's collection configs back to its ``meta.json``; False for a server.

    The one call of qdrant-client's private ``QdrantLocal._save``: local mode keeps collection
    configs as plain objects and has no public request that saves an edited one.
    """
    save = getattr(client_engine(client), "_save", None)
    if not callable(save):
        return False
    save()
    return True


def describe_client(client: QdrantClient) -> str:
    """A short human name of where a client points: its URL, its local path, or 'in-memory Qdrant'."""
    inner = client_engine(client)
    location = getattr(inner, "location", None)
    if location is not None and hasattr(inner, "persistent"):
        return f"local Qdrant storage {location}" if inner.persistent else "in-memory Qdrant"
    uri = getattr(inner, "rest_uri", None)
    return str(uri).rstrip("/") if uri else "Qdrant"


def client_mode(client: QdrantClient) -> tuple[str, dict[str, Any]]:
    """('memory' | 'path' | 'remote', connection facts to save) for any QdrantClient."""
    inner = client_engine(client)
    if hasattr(inner, "persistent") and hasattr(inner, "location"):
        if inner.persistent:
            return "path", {"path": str(Path(inner.location).absolute())}
        return "memory", {}
    opts = dict(getattr(client, "init_options", {}) or {})
    facts: dict[str, Any] = {"url": str(getattr(inner, "rest_uri", "") or opts.get("url") or "").rstrip("/")}
    for key in ("prefer_grpc", "https", "timeout", "grpc_port"):
        if opts.get(key) is not None:
            facts[key] = opts[key]
    return "remote", facts


def is_local_client(client: QdrantClient) -> bool:
    """Whether a client is qdrant-client's local mode (in memory or on a path), not a server."""
    return hasattr(client_engine(client), "persistent")


def connect(
    *,
    url: str | None = None,
    path: str | os.PathLike[str] | None = None,
    location: str | None = None,
    client: QdrantClient | None = None,
    api_key: str | None = None,
    https: bool | None = None,
    timeout: int | None = None,
    prefer_grpc: bool = False,
    grpc_port: int | None = None,
    must_exist: bool = False,
) -> tuple[QdrantClient, bool]:
    """A QdrantClient for the given connection options, and whether the caller owns (must close) it.

    ``must_exist``: a ``path`` must already be a local Qdrant storage (for reading an existing
    collection); otherwise qdrant-client would silently create an empty one there.
    """
    given = [name for name, v in (("url", url), ("path", path), ("location", location), ("client", client)) if v]
    if len(given) > 1:
        raise InputError(f"Qdrant connection: give only one of url, path, location or client (got {', '.join(given)})")
    if client is not None:
        if not isinstance(client, QdrantClient):
            raise InputError(f"client: expected a qdrant_client.QdrantClient, got {type(client).__name__}")
        return client, False
    if path is not None:
        p = Path(path)
        if must_exist and not (p / "meta.json").is_file():
            raise InputError(f"{p}: not a Qdrant local-mode storage directory (no meta.json); check --qdrant-path")
        if p.exists() and not p.is_dir():
            raise InputError(f"{p}: exists and is not a directory; give a directory for Qdrant local mode")
        try:
            return QdrantClient(path=str(p)), True
        except RuntimeError as exc:  # portalocker: another QdrantClient holds the storage
            raise BackendError(
                f"{p}: Qdrant local storage is open in another client or process ({first_line(exc)}); "
                "close it first (local mode allows one at a time) or use a Qdrant server"
            ) from None
    if url is not None:
        if timeout is not None and (not isinstance(timeout, (int, float)) or timeout <= 0):
            raise InputError(f"timeout: must be a positive number of seconds, got {timeout!r}")
        kwargs: dict[str, Any] = {
            "url": url,
            "api_key": api_key,
            "https": https,
            "timeout": int(timeout) if timeout is not None else None,
            "prefer_grpc": prefer_grpc,
            # our own first request gives the one-line error; the client's check only warns
            "check_compatibility": False,
        }
        if grpc_port is not None:
            kwargs["grpc_port"] = grpc_port
        try:
            return QdrantClient(**kwargs), True
        except (ValueError, TypeError) as exc:
            raise InputError(f"url: {url!r} is not a usable Qdrant URL ({first_line(exc)})") from None
    if location not in (None, ":memory:"):
        raise InputError(f"location: only ':memory:' is supported, got {location!r}; use url= or path=")
    return QdrantClient(location=":memory:"), True


def close_quietly(client: QdrantClient | None) -> None:
    """Close a client, ignoring errors (it may be half-open or already closed)."""
    if client is not None:
        with contextlib.suppress(Exception):
            client.close()


__all__ = ["CONNECTION_OPTIONS", "client_mode", "close_quietly", "connect", "describe_client", "is_local_client"]
