"""The one error tree of groundplane, and the one place it maps to gRPC status codes.

::

    GroundplaneError
    ├── InvalidArgument      the caller sent something malformed      → INVALID_ARGUMENT
    ├── NotFound             an id that does not exist                → NOT_FOUND
    ├── AlreadyExists        a create that collides                    → ALREADY_EXISTS
    ├── FailedPrecondition   valid input, wrong state (stale elements) → FAILED_PRECONDITION
    ├── Unavailable          nothing can serve now (carries next time) → UNAVAILABLE
    ├── ResourceExhausted    overload (carries a retry hint)           → RESOURCE_EXHAUSTED
    ├── Unauthenticated      missing or wrong credentials              → UNAUTHENTICATED
    ├── PermissionDenied     authenticated, not allowed (broker ACL)   → PERMISSION_DENIED
    └── DeadlineExceeded     the caller's deadline ran out             → DEADLINE_EXCEEDED

Domain code raises these; servicers never build status codes themselves. Messages teach: they say
what was expected and what came.

grpc is imported when a code is first read, not with this module: every domain module imports
these errors, and a command that never speaks gRPC (``groundplane passes``) should not pay for
loading it.
"""

from __future__ import annotations

import functools
import sqlite3
from datetime import datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import grpc


class _StatusCode:
    """A class attribute whose value is ``grpc.StatusCode[name]``, grpc imported on first read."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __get__(self, instance: object, owner: type | None = None) -> grpc.StatusCode:
        import grpc  # noqa: PLC0415 - see the module docstring

        return grpc.StatusCode[self.name]


class GroundplaneError(Exception):
    """Base of every error a caller can cause or observe."""

    code = _StatusCode("INTERNAL")

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(GroundplaneError, ValueError):
    code = _StatusCode("INVALID_ARGUMENT")


class NotFound(GroundplaneError, LookupError):
    code = _StatusCode("NOT_FOUND")


class AlreadyExists(GroundplaneError):
    code = _StatusCode("ALREADY_EXISTS")


class FailedPrecondition(GroundplaneError):
    code = _StatusCode("FAILED_PRECONDITION")


class Unavailable(GroundplaneError):
    code = _StatusCode("UNAVAILABLE")

    def __init__(self, message: str, next_opportunity: datetime | None = None) -> None:
        super().__init__(message)
        self.next_opportunity = next_opportunity


class ResourceExhausted(GroundplaneError):
    code = _StatusCode("RESOURCE_EXHAUSTED")

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class Unauthenticated(GroundplaneError):
    code = _StatusCode("UNAUTHENTICATED")


class PermissionDenied(GroundplaneError):
    code = _StatusCode("PERMISSION_DENIED")


class DeadlineExceeded(GroundplaneError):
    code = _StatusCode("DEADLINE_EXCEEDED")


def status_for(error: BaseException) -> tuple[grpc.StatusCode, str]:
    """The status code and message a caller receives for ``error``.

    Anything that is not a :class:`GroundplaneError` is a bug of ours, reported as INTERNAL with
    a generic message (details go to the log, not to the caller).
    """
    if isinstance(error, GroundplaneError):
        return error.code, bounded_message(error.message)
    import grpc  # noqa: PLC0415 - see the module docstring

    if isinstance(error, sqlite3.OperationalError):
        # The service's own storage failed (read-only, full, locked): nothing the caller sent.
        return grpc.StatusCode.UNAVAILABLE, bounded_message(
            f"the service's storage failed ({error}); retry later or tell its operator"
        )
    return grpc.StatusCode.INTERNAL, "internal error; the service logged the details"


MAX_MESSAGE_BYTES = 2_000
"""The most UTF-8 bytes of a status message a caller receives. Messages often echo input, and
gRPC sends the message percent-encoded in an 8 KB trailer, so a longer one is cut in the middle
(2,000 bytes stay under 6 KB even when every byte is escaped)."""


def bounded_message(message: str, limit_bytes: int = MAX_MESSAGE_BYTES) -> str:
    """``message`` cut to about ``limit_bytes`` UTF-8 bytes (head and tail kept, the cut said)."""
    data = message.encode()
    if len(data) <= limit_bytes:
        return message
    head = data[: limit_bytes * 3 // 4].decode(errors="ignore")
    tail = data[len(data) - (limit_bytes // 4 - 64) :].decode(errors="ignore")
    cut = len(data) - len(head.encode()) - len(tail.encode())
    return f"{head} … [{cut} bytes cut] … {tail}"


@functools.cache
def _by_code() -> dict[grpc.StatusCode, type[GroundplaneError]]:
    return {
        cls.code: cls
        for cls in (
            InvalidArgument,
            NotFound,
            AlreadyExists,
            FailedPrecondition,
            Unavailable,
            ResourceExhausted,
            Unauthenticated,
            PermissionDenied,
            DeadlineExceeded,
        )
    }


def error_from_status(code: grpc.StatusCode, message: str, upstream: str = "") -> GroundplaneError:
    """The domain error for a status another service answered with, so a caller of this service
    sees the upstream's code (a NOT_FOUND from tracking stays NOT_FOUND) and learns where it came
    from. Codes outside the tree (INTERNAL, UNKNOWN, …) become UNAVAILABLE: the upstream failed.
    """
    prefix = f"{upstream}: " if upstream else ""
    error_type = _by_code().get(code)
    if error_type is None:
        return Unavailable(f"{prefix}{message} ({code.name})")
    return error_type(f"{prefix}{message}")
