"""Serving a Legato service interface over grpc.aio: what the frontend, history and matching
servers have in common.

A server is a table of rpcs, each naming the service method it calls, the decoder of its request
(`legato.wire*`) and the encoder of its answer. Every rpc behaves the same way:

* a `ServiceError` becomes its status (`legato.grpc_errors.error_status`), so the client raises
  the same class with the same message and reason;
* a request that cannot be decoded (a corrupt protobuf, malformed or too deeply nested JSON, a
  number out of range) is the caller's error: INVALID_ARGUMENT naming the rpc, nothing logged;
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
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.message import DecodeError, Message

from legato import metrics, wire
from legato.admission import CallLimit
from legato.authz import NamespaceRules, token_auth
from legato.config import Config
from legato.errors import InvalidArgument, ServiceError
from legato.grpc_errors import REASON_KEY, TYPE_KEY, error_status
from legato.tls import server_credentials

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


# What a decoder raises on a request it cannot make sense of (a corrupt protobuf, malformed or
# too deeply nested JSON, a number out of range): the caller's fault, answered INVALID_ARGUMENT.
DECODE_ERRORS = (DecodeError, ValueError, TypeError, KeyError, IndexError, AttributeError, RecursionError,
                  UnicodeError, OverflowError)


def _decode_and_fit(rpc: str, spec: Rpc, request: Any, context: grpc.aio.ServicerContext[Any, Any],
                    request_type: type[Message] | None = None) -> Any:
    """The service method's argument(s) for a request: parsed first when it arrives as raw bytes
    (`request_type`), converted by the rpc's decoder, fitted to the caller's deadline.
    InvalidArgument naming the rpc when the request cannot be decoded."""
    try:
        if request_type is not None:
            request = request_type.FromString(request)
        req = spec.decode(request)
    except ServiceError:
        raise
    except DECODE_ERRORS as e:
        what = f"a valid {request_type.DESCRIPTOR.full_name} message" if request_type is not None else "valid"
        raise InvalidArgument(f"{rpc}: the request is not {what}: {one_line(e)}", reason="BadRequest") from None
    remaining = context.time_remaining()
    if spec.fit is not None and remaining is not None:
        req = spec.fit(req, remaining)
    return req


def make_handler(rpc: str, spec: Rpc, service: Any, log: logging.Logger,
                 request_type: type[Message] | None = None, role: str = "") -> Handler:
    """The grpc handler of one rpc. With `request_type`, requests arrive as raw bytes (see
    `add_service`) and are parsed here, so that a corrupt one is the caller's INVALID_ARGUMENT.
    `role` labels its metrics (frontend, history, matching)."""
    method: Callable[..., Awaitable[Any]] = getattr(service, spec.method)
    requests = metrics.requests.labels(role, rpc)  # resolved once: the hot path only counts
    latency = metrics.request_latency.labels(role, rpc)

    async def handle(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        started = time.perf_counter()
        requests.inc()
        try:
            args = _decode_and_fit(rpc, spec, request, context, request_type)
            result = await (method(*args) if spec.spread else method(args))
        except ServiceError as e:
            code, details, metadata = error_status(e)
            metrics.request_errors.labels(role, rpc, metrics.error_kind(e)).inc()
        except Exception as e:  # a bug: never let it take the server down (cancellation passes)
            log.exception("internal error in rpc %s", rpc)
            code, details, metadata = _internal(rpc, e)
            metrics.request_errors.labels(role, rpc, "Internal").inc()
        else:
            try:
                response = spec.encode(result)
            except Exception as e:
                log.exception("cannot encode the response of rpc %s", rpc)
                code, details, metadata = _internal(rpc, e)
                metrics.request_errors.labels(role, rpc, "Internal").inc()
            else:
                latency.observe(time.perf_counter() - started)
                return response
        latency.observe(time.perf_counter() - started)
        await context.abort(code, details, metadata)

    return handle


def bind_servicer(servicer: Any, service: Any, rpcs: dict[str, Rpc], log: logging.Logger) -> None:
    """Set one attribute per rpc on a generated `*Servicer` instance, each calling `service`
    (for the generated `add_*Servicer_to_server`, whose deserializers parse the requests;
    `add_service` is what the servers use)."""
    for rpc, spec in rpcs.items():
        setattr(servicer, rpc, make_handler(rpc, spec, service, log))


def add_service(server: grpc.aio.Server, service_name: str, service: Any, rpcs: dict[str, Rpc],
                log: logging.Logger) -> None:
    """Serve the rpcs of the proto service `service_name` ("WorkflowService", ...) on `server`,
    each calling `service`. Requests are taken as raw bytes and parsed by our handler: a
    deserializer that fails inside grpc is answered UNKNOWN and logged with a traceback per
    request, while a corrupt request is the caller's error (INVALID_ARGUMENT, not logged)."""
    desc = wire.pb.DESCRIPTOR.services_by_name[service_name]
    handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}
    for rpc, spec in rpcs.items():
        method = desc.methods_by_name[rpc]
        request_type = getattr(wire.pb, method.input_type.name)
        response_type = getattr(wire.pb, method.output_type.name)
        handlers[rpc] = grpc.unary_unary_rpc_method_handler(
            make_handler(rpc, spec, service, log, request_type, _ROLES.get(service_name, service_name)),
            request_deserializer=None, response_serializer=response_type.SerializeToString)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(desc.full_name, handlers),))
    server.add_registered_method_handlers(desc.full_name, handlers)


_ROLES = {"WorkflowService": "frontend", "HistoryService": "history", "MatchingService": "matching"}


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


async def start_server(add_servicer: Callable[[grpc.aio.Server], None], host: str, port: int, *,
                       config: Config | None = None, max_message_bytes: int | None = None,
                       interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
                       namespace_rules: NamespaceRules | None = None,
                       what: str, log: logging.Logger) -> grpc.aio.Server:
    """Start a grpc.aio server on host:port with what `add_servicer` adds, and return it; the
    caller stops it (`await server.stop(grace)`). Port 0 picks a free port: see `bound_port`.

    Requests up to `max_message_bytes` are accepted (default: derived from `config.limits`, see
    `legato.wire.max_message_bytes`). Raises OSError when the address cannot be bound.

    Bursts: at most `config.grpc.max_concurrent_calls` calls are served at once, the others
    refused with ServerBusy (`legato.admission`), and up to `grpc.max_queued_calls` wait in
    gRPC's queue to be taken up. Security (`config.security`): TLS when it names a certificate,
    and with a token secret every call's token is checked (`legato.authz`) against the namespaces
    of `namespace_rules` (the public API), or for all namespaces (None: an internal API).
    ConfigError when a TLS or secret file is unusable.
    """
    settings = config or Config()
    limit = max_message_bytes or wire.max_message_bytes(settings)
    call_limit = CallLimit(settings.grpc.max_concurrent_calls, what)
    auth = token_auth(settings.security, namespace_rules, what)
    credentials = server_credentials(settings.security)
    queued = settings.grpc.max_queued_calls
    server = grpc.aio.server(interceptors=[call_limit, *([auth] if auth else []), *interceptors], options=[
        ("grpc.max_receive_message_length", limit),
        ("grpc.max_send_message_length", -1),
        ("grpc.so_reuseport", 0),  # a second server on a busy port must fail, not share it
        # gRPC's queue of calls not yet taken up: its default drops calls at random from 1,000
        # on (all from 3,000), with CANCELLED; equal limits make it drop only when full.
        ("grpc.server.max_pending_requests", queued),
        ("grpc.server.max_pending_requests_hard_limit", queued),
    ])
    server.legato_call_limit = call_limit
    add_servicer(server)
    address = _address(host, port)
    try:
        bound = (server.add_secure_port(address, credentials) if credentials is not None
                 else server.add_insecure_port(address))
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
