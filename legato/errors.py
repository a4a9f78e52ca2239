"""Errors: the failure payload recorded in histories, and the service errors of the API.

`Failure` is what an activity, a workflow task or a workflow fails with; it is what Lua
sees as an error object (`err:kind()`, `err:retryable()`, `err:message()`).
`ServiceError` and its subclasses are raised by services and mapped to gRPC status codes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


class Kind:
    """Error kinds, as Lua's `errors` module exposes them: Wippy's values (`errors.NOT_FOUND ==
    "NotFound"`, `errors.UNKNOWN == ""`), and Legato's own in the same CamelCase style."""

    UNKNOWN = ""
    INVALID = "Invalid"
    NOT_FOUND = "NotFound"
    ALREADY_EXISTS = "AlreadyExists"
    PERMISSION_DENIED = "PermissionDenied"
    TIMEOUT = "Timeout"
    CANCELED = "Canceled"
    UNAVAILABLE = "Unavailable"
    INTERNAL = "Internal"
    CONFLICT = "Conflict"
    RATE_LIMITED = "RateLimited"
    TERMINATED = "Terminated"
    NON_DETERMINISTIC = "NonDeterministic"
    FORBIDDEN = "Forbidden"
    LIMIT_EXCEEDED = "LimitExceeded"

    # the constant's name -> its value (what Lua's `errors` module is made of)
    BY_NAME = {
        "UNKNOWN": UNKNOWN, "INVALID": INVALID, "NOT_FOUND": NOT_FOUND, "ALREADY_EXISTS": ALREADY_EXISTS,
        "PERMISSION_DENIED": PERMISSION_DENIED, "TIMEOUT": TIMEOUT, "CANCELED": CANCELED,
        "UNAVAILABLE": UNAVAILABLE, "INTERNAL": INTERNAL, "CONFLICT": CONFLICT, "RATE_LIMITED": RATE_LIMITED,
        "TERMINATED": TERMINATED, "NON_DETERMINISTIC": NON_DETERMINISTIC, "FORBIDDEN": FORBIDDEN,
        "LIMIT_EXCEEDED": LIMIT_EXCEEDED,
    }
    ALL = tuple(BY_NAME.values())

    @staticmethod
    def normalize(kind: str) -> str:
        """A kind read from a history recorded before the kinds took Wippy's spellings (then the
        constant's name, "NOT_FOUND"), as it is spelled now; any other kind as it is."""
        return _LEGACY_KINDS.get(kind, kind)


_LEGACY_KINDS = dict(Kind.BY_NAME)


@dataclass(slots=True)
class Failure:
    """A recorded error. `source` is "file:line" where Lua code raised it, if known."""

    message: str
    kind: str = Kind.UNKNOWN
    retryable: bool = True
    details: Any = None
    source: str | None = None
    cause: Failure | None = field(default=None)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"message": self.message, "kind": self.kind, "retryable": self.retryable}
        if self.details is not None:
            out["details"] = self.details
        if self.source:
            out["source"] = self.source
        if self.cause is not None:
            out["cause"] = self.cause.to_dict()
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Failure:
        cause = d.get("cause")
        return cls(
            message=str(d.get("message", "")),
            kind=Kind.normalize(str(d.get("kind", Kind.UNKNOWN))),
            retryable=bool(d.get("retryable", True)),
            details=d.get("details"),
            source=d.get("source"),
            cause=cls.from_dict(cause) if isinstance(cause, dict) else None,
        )

    def __str__(self) -> str:
        # a Lua error message often starts with its "file:line" already
        where = f" (at {self.source})" if self.source and not self.message.startswith(self.source) else ""
        return f"{self.kind}: {self.message}{where}" if self.kind else f"{self.message}{where}"


class ServiceError(Exception):
    """An error a service returns to its caller. `code` names the gRPC status code."""

    code = "UNKNOWN"

    def __init__(self, message: str, reason: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason or type(self).__name__


class InvalidArgument(ServiceError):
    code = "INVALID_ARGUMENT"


class NotFound(ServiceError):
    code = "NOT_FOUND"


class AlreadyStarted(ServiceError):
    code = "ALREADY_EXISTS"

    def __init__(self, message: str, run_id: str = "") -> None:
        super().__init__(message)
        self.run_id = run_id


class FailedPrecondition(ServiceError):
    """The request was well formed but the state no longer allows it (stale task, closed run)."""

    code = "FAILED_PRECONDITION"


class ResourceExhausted(ServiceError):
    """A configured limit was crossed."""

    code = "RESOURCE_EXHAUSTED"


class PermissionDenied(ServiceError):
    """The caller's token does not cover the namespace the request acts in (or the internal API)."""

    code = "PERMISSION_DENIED"


class Unauthenticated(ServiceError):
    """The server requires a token and the call had none, or one that is invalid or expired."""

    code = "UNAUTHENTICATED"


class Unavailable(ServiceError):
    """Try again: the shard moved, the store is down, the server is shutting down."""

    code = "UNAVAILABLE"


class DeadlineExceeded(ServiceError):
    """What was asked of a worker got no answer in time (a query nobody answered)."""

    code = "DEADLINE_EXCEEDED"


class ShardOwnershipLost(Unavailable):
    """A conditional write found another owner's `range_id`: this node must drop the shard. Also
    what a history node answers for a shard it does not own (reason `ShardNotOwned`) or is handing
    over (`ShardMoving`); `owner` is the address of the node it believes owns it, if it knows one."""

    def __init__(self, message: str, reason: str = "", owner: str = "") -> None:
        super().__init__(message, reason)
        self.owner = owner


SERVICE_ERRORS: dict[str, type[ServiceError]] = {
    cls.code: cls
    for cls in (InvalidArgument, NotFound, AlreadyStarted, FailedPrecondition, ResourceExhausted, Unavailable,
                PermissionDenied, Unauthenticated, DeadlineExceeded)
}
