"""How a `legato.errors.ServiceError` crosses a gRPC call, in both directions.

Shared by every Legato gRPC server (frontend, history, matching) and client, so that an error
raised behind any of them reaches the caller as the same class with the same message and reason:

* the status code is the class's `code` (`UNAVAILABLE`, `NOT_FOUND`, ...);
* the status details are the message;
* trailing metadata: `legato-reason` (the machine-readable reason), `legato-error` (the class
  name, so that a subclass sharing its parent's code, such as `ShardOwnershipLost`, keeps its
  type), `legato-run-id` for `AlreadyStarted`, and `legato-shard-owner` (the owner a history node
  believes in) for `ShardOwnershipLost`.

A status without `legato-reason` did not come from a Legato service but from gRPC or the
transport (server unreachable, deadline passed, message too large, unknown method).
"""

from __future__ import annotations

import re

import grpc

from legato.errors import (
    SERVICE_ERRORS,
    AlreadyStarted,
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    ServiceError,
    ShardOwnershipLost,
    Unauthenticated,
    Unavailable,
)

REASON_KEY = "legato-reason"
TYPE_KEY = "legato-error"
RUN_ID_KEY = "legato-run-id"
OWNER_KEY = "legato-shard-owner"

Metadata = tuple[tuple[str, str], ...]

# The classes a peer may name in `legato-error`; an unknown name falls back to the status code.
ERROR_TYPES: dict[str, type[ServiceError]] = {
    cls.__name__: cls
    for cls in (InvalidArgument, NotFound, AlreadyStarted, FailedPrecondition, ResourceExhausted, Unavailable,
                ShardOwnershipLost, PermissionDenied, Unauthenticated, DeadlineExceeded)
}

_NOT_ASCII = re.compile(r"[^ -~]")


def _ascii(text: str) -> str:
    """Metadata values must be printable ASCII; the message (status details) may be any text."""
    return _NOT_ASCII.sub("?", text)


def error_status(e: ServiceError) -> tuple[grpc.StatusCode, str, Metadata]:
    """The status code, details and trailing metadata a service error travels as."""
    try:
        code = grpc.StatusCode[e.code]
    except KeyError:
        code = grpc.StatusCode.UNKNOWN
    metadata: Metadata = ((REASON_KEY, _ascii(e.reason)), (TYPE_KEY, type(e).__name__))
    if isinstance(e, AlreadyStarted) and e.run_id:
        metadata += ((RUN_ID_KEY, _ascii(e.run_id)),)
    if isinstance(e, ShardOwnershipLost) and e.owner:
        metadata += ((OWNER_KEY, _ascii(e.owner)),)
    return code, e.message, metadata


def metadata_dict(e: grpc.aio.AioRpcError) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in e.trailing_metadata() or ():
        out[key] = value.decode(errors="replace") if isinstance(value, bytes) else str(value)
    return out


def _error_class(code: grpc.StatusCode, type_name: str | None) -> type[ServiceError] | None:
    """The class named by the peer when it agrees with the status code, else the code's class."""
    named = ERROR_TYPES.get(type_name or "")
    if named is not None and named.code == code.name:
        return named
    return SERVICE_ERRORS.get(code.name)


def service_error(code: grpc.StatusCode, details: str, metadata: dict[str, str]) -> ServiceError:
    """The `ServiceError` a Legato service raised, rebuilt from its status (see `error_status`).
    Codes without a class (INTERNAL, UNKNOWN, ...) give a plain `ServiceError` keeping the code."""
    cls = _error_class(code, metadata.get(TYPE_KEY))
    err: ServiceError
    if cls is AlreadyStarted:
        err = AlreadyStarted(details, run_id=metadata.get(RUN_ID_KEY, ""))
    elif cls is ShardOwnershipLost:
        err = ShardOwnershipLost(details, owner=metadata.get(OWNER_KEY, ""))
    elif cls is not None:
        err = cls(details)
    else:
        err = ServiceError(details)
        err.code = code.name
    err.reason = metadata.get(REASON_KEY) or code.name
    return err


def transport_error(code: grpc.StatusCode, details: str, address: str, rpc: str,
                    server: str = "Legato server") -> ServiceError | None:
    """The error for a status that gRPC or the transport produced (no `legato-reason`), naming
    the address; None for codes that are better mapped by `service_error`."""
    if code == grpc.StatusCode.UNAVAILABLE:
        return Unavailable(f"cannot reach the {server} at {address}: {details}", reason="ServerUnreachable")
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return Unavailable(f"the {server} at {address} did not answer in time: {details}",
                           reason="DeadlineExceeded")
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return ResourceExhausted(details)
    if code == grpc.StatusCode.UNIMPLEMENTED:
        err = ServiceError(f"the server at {address} does not serve the Legato call {rpc} "
                           f"(is it a {server} of a matching version?): {details}", reason="Unimplemented")
        err.code = code.name
        return err
    return None


def error_from_rpc(e: grpc.aio.AioRpcError, address: str, rpc: str, server: str = "Legato server") -> ServiceError:
    """The `ServiceError` for a failed call: the service's own error when it sent one, else one
    that explains the transport failure."""
    code = e.code()
    details = e.details() or code.name
    metadata = metadata_dict(e)
    if REASON_KEY not in metadata:
        err = transport_error(code, details, address, rpc, server)
        if err is not None:
            return err
    return service_error(code, details, metadata)
