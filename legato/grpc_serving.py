"""Serving a Legato service interface over grpc.aio: what the frontend, history and matching
servers have in common.

A server is a table of rpcs, each naming the service method it calls, the decoder of its request
(`legato.wire*`) and the encoder of its answer. Every rpc behaves the same way:

* a `ServiceError` becomes its status (`legato.grpc_errors.error_status`), so the client raises
  the same class with the same message and reason;
* anything else is a bug: logged with its traceback, answered with INTERNAL and a one-line
  message; the server keeps serving;
* a cancelled rpc (the client went away, or its deadline passed) cancels the service call, which
  is how matching gets a task back from a poll nobody waits for;
* an rpc with a `fit` function may shorten its request to the caller's deadline first, so that a
  long poll ends, empty, while the caller still listens (see `fit_wait`).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc

from legato import wire
from legato.config import Config
from legato.errors import ServiceError
from legato.grpc_errors import REASON_KEY, TYPE_KEY, error_status

Handler = Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]]
# (request, seconds left before the caller's deadline) -> the request to serve
Fit = Callable[[Any, float], Any]

# A long poll fitted to a deadline ends this much before it (at most), so its answer arrives.
_FIT_MARGIN_S = 0.5
_FIT_MARGIN_FRACTION = 0.1


@dataclass(frozen=True, slots=True)
class Rpc:
    """One rpc: the service method it calls, how its request and answer are converted, and
    optionally how a request is fitted to the caller's deadline. With `spread`, the decoder
    returns the tuple of the method's arguments (for methods that take several)."""

    method: str
    decode: Callable[[Any], Any]
    encode: Callable[[Any], Any]
    fit: Fit | None = None
    spread: bool = False


def fit_wait(req: Any, remaining_s: float, default_ms: int = 0) -> Any:
    """`req` with its `timeout_ms` shortened to end before the caller's deadline, when it would
    not otherwise. `default_ms` is what a timeout of 0 means (0: no wait, nothing to shorten)."""
    wait_ms = req.timeout_ms if req.timeout_ms > 0 else default_ms
    if wait_ms <= 0:
        return req
    budget_ms = int((remaining_s - min(_FIT_MARGIN_S, remaining_s * _FIT_MARGIN_FRACTION)) * 1000)
    if budget_ms >= wait_ms:
        return req
    return dataclasses.replace(req, timeout_ms=max(1, budget_ms))


def empty(message: type[Any]) -> Callable[[Any], Any]:
    """The encoder of an rpc whose method returns None: the rpc's empty response message."""
    return lambda _: message()


def one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    if len(text) > 500:
        text = text[:500] + "..."
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def _internal(rpc: str, e: Exception) -> tuple[grpc.StatusCode, str, tuple[tuple[str, str], ...]]:
    return (grpc.StatusCode.INTERNAL, f"internal error in {rpc}: {one_line(e)}",
            ((REASON_KEY, "Internal"), (TYPE_KEY, "ServiceError")))


def _decode_and_fit(spec: Rpc, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
    req = spec.decode(request)
    remaining = context.time_remaining()
    if spec.fit is not None and remaining is not None:
        req = spec.fit(req, remaining)
    return req


def make_handler(rpc: str, spec: Rpc, service: Any, log: logging.Logger) -> Handler:
    method: Callable[..., Awaitable[Any]] = getattr(service, spec.method)

    async def handle(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        try:
            args = _decode_and_fit(spec, request, context)
            result = await (method(*args) if spec.spread else method(args))
        except ServiceError as e:
            code, details, metadata = error_status(e)
        except Exception as e:  # a bug: never let it take the server down (cancellation passes)
            log.exception("internal error in rpc %s", rpc)
            code, details, metadata = _internal(rpc, e)
        else:
            try:
                return spec.encode(result)
            except Exception as e:
                log.exception("cannot encode the response of rpc %s", rpc)
                code, details, metadata = _internal(rpc, e)
        await context.abort(code, details, metadata)

    return handle


def bind_servicer(servicer: Any, service: Any, rpcs: dict[str, Rpc], log: logging.Logger) -> None:
    """Set one attribute per rpc on a generated `*Servicer` instance, each calling `service`."""
    for rpc, spec in rpcs.items():
        setattr(servicer, rpc, make_handler(rpc, spec, service, log))


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


async def start_server(add_servicer: Callable[[grpc.aio.Server], None], host: str, port: int, *,
                       config: Config | None = None, max_message_bytes: int | None = None,
                       interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
                       what: str, log: logging.Logger) -> grpc.aio.Server:
    """Start a grpc.aio server on host:port with what `add_servicer` adds, and return it; the
    caller stops it (`await server.stop(grace)`). Port 0 picks a free port: see `bound_port`.

    Requests up to `max_message_bytes` are accepted (default: derived from `config.limits`, see
    `legato.wire.max_message_bytes`). Raises OSError when the address cannot be bound.
    """
    limit = max_message_bytes or wire.max_message_bytes(config or Config())
    server = grpc.aio.server(interceptors=list(interceptors) or None, options=[
        ("grpc.max_receive_message_length", limit),
        ("grpc.max_send_message_length", -1),
        ("grpc.so_reuseport", 0),  # a second server on a busy port must fail, not share it
    ])
    add_servicer(server)
    address = _address(host, port)
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError as e:
        raise OSError(f"cannot listen on {address}: the address is in use or not available") from e
    if not bound:
        raise OSError(f"cannot listen on {address}: the address is in use or not available")
    server.legato_port = bound
    await server.start()
    log.info("%s listening on %s", what, f"{address.rsplit(':', 1)[0]}:{bound}")
    return server


def bound_port(server: grpc.aio.Server) -> int:
    """The port a server made by `start_server` listens on (useful with port 0)."""
    return int(server.legato_port)
