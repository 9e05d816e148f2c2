"""Errors of qdrant-client calls as one line each, and retries of the transient ones (the Qdrant backend's)."""

from __future__ import annotations

import contextlib
import json
import random
import time
from collections.abc import Callable
from typing import Any, TypeVar

from ...errors import BackendError, MatryoshkaError
from .common import first_line

T = TypeVar("T")
_TRANSIENT_HTTP = {408, 429, 500, 502, 503, 504}


def _http_error_text(exc: Any) -> str:
    try:
        body = json.loads(exc.content)
        return str(body.get("status", {}).get("error") or body)[:300]
    except Exception:
        return (exc.content or b"")[:300].decode(errors="replace") or str(exc.reason_phrase)


def _grpc_code(exc: BaseException) -> Any:
    code = getattr(exc, "code", None)
    if callable(code):
        with contextlib.suppress(Exception):
            return code()
    return None


def is_transient(exc: BaseException) -> bool:
    """Whether retrying may help: connection resets, timeouts, 429/5xx, gRPC UNAVAILABLE and kin."""
    from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

    if isinstance(exc, UnexpectedResponse):
        return exc.status_code in _TRANSIENT_HTTP
    if isinstance(exc, ResponseHandlingException):
        return True
    try:
        import httpx

        if isinstance(exc, (httpx.TransportError,)):
            return True
    except ImportError:  # pragma: no cover - httpx is a qdrant-client dependency
        pass
    code = _grpc_code(exc)
    if code is not None:
        return getattr(code, "name", "") in {"UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED", "ABORTED"}
    return isinstance(exc, (ConnectionError, TimeoutError))


def translate_error(exc: BaseException, endpoint: str, what: str = "the request") -> MatryoshkaError | None:
    """A one-line :class:`MatryoshkaError` for an exception raised inside qdrant-client, or None (a bug: re-raise)."""
    from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

    if isinstance(exc, MatryoshkaError):
        return exc
    if isinstance(exc, ResponseHandlingException):
        source = getattr(exc, "source", None) or exc
        name = source.__class__.__name__
        if "Timeout" in name and "Connect" not in name:
            return BackendError(
                f"Qdrant at {endpoint} did not answer {what} in time ({name}); raise the timeout or check the server load"
            )
        return BackendError(f"cannot reach Qdrant at {endpoint}: {first_line(source)}; is the server running?")
    if isinstance(exc, UnexpectedResponse):
        status = exc.status_code
        text = _http_error_text(exc)
        if status in (401, 403):
            return BackendError(
                f"Qdrant at {endpoint} refused {what} ({status}: {text}); pass the right API key (--api-key or QDRANT_API_KEY)"
            )
        return BackendError(f"Qdrant at {endpoint} refused {what} ({status}: {text})")
    code = _grpc_code(exc)
    if code is not None:
        details = getattr(exc, "details", lambda: "")() or first_line(exc)
        name = getattr(code, "name", str(code))
        if name == "UNAVAILABLE":
            return BackendError(f"cannot reach Qdrant at {endpoint}: {details}; is the server running?")
        if name in ("UNAUTHENTICATED", "PERMISSION_DENIED"):
            return BackendError(f"Qdrant at {endpoint} refused {what} ({details}); pass the right API key")
        if name == "DEADLINE_EXCEEDED":
            return BackendError(f"Qdrant at {endpoint} did not answer {what} in time; raise the timeout")
        return BackendError(f"Qdrant at {endpoint} refused {what} ({name}: {details})")
    try:
        import httpx

        if isinstance(exc, httpx.TransportError):
            return BackendError(f"cannot reach Qdrant at {endpoint}: {first_line(exc)}; is the server running?")
    except ImportError:  # pragma: no cover
        pass
    if isinstance(exc, (ValueError, RuntimeError, AssertionError, KeyError, NotImplementedError)):
        # local mode reports refusals as plain exceptions
        return BackendError(f"{endpoint} refused {what}: {first_line(exc)}")
    return None


def call(
    fn: Callable[[], T],
    endpoint: str,
    what: str = "the request",
    *,
    retries: int = 0,
    base_delay: float = 0.5,
    max_delay: float = 10.0,
    sleep: Callable[[float], None] | None = None,
) -> T:
    """Run one qdrant-client call; retry transient failures with exponential backoff and jitter; one-line errors."""
    for attempt in range(retries + 1):
        try:
            return fn()
        except MatryoshkaError:
            raise
        except Exception as exc:
            if attempt < retries and is_transient(exc):
                (sleep or time.sleep)(min(max_delay, base_delay * 2**attempt) * (0.5 + random.random() / 2))
                continue
            err = translate_error(exc, endpoint, what)
            if err is None:
                raise
            raise err from None
    raise AssertionError("unreachable")  # pragma: no cover


__all__ = ["call", "is_transient", "translate_error"]
