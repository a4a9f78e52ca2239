"""Admission of calls to a gRPC server: at most `grpc.max_concurrent_calls` are served at once.

One more is refused at once with RESOURCE_EXHAUSTED, reason `ServerBusy`, before any work is
done on it, so that the client may send it again (every Legato client does, with backoff, until
its deadline: `legato.grpc_channel`). Without this bound a burst of calls is limited only by the
memory it takes to hold them.

The other half of taking a burst is gRPC's own queue of calls not yet taken up by Python, sized
by `grpc.max_queued_calls` in `legato.grpc_serving.start_server`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from legato.errors import ResourceExhausted
from legato.grpc_errors import error_status

BUSY_REASON = "ServerBusy"
# A server refusing calls says so in its log at most this often (a burst refuses thousands).
_LOG_EVERY_S = 10.0

log = logging.getLogger("legato.admission")

Behaviour = Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]]


def wrap_unary(handler: grpc.RpcMethodHandler | None,
               wrap: Callable[[Behaviour], Behaviour]) -> grpc.RpcMethodHandler | None:
    """`handler` with its unary-unary behaviour wrapped (Legato's rpcs are all unary-unary)."""
    if handler is None or handler.unary_unary is None:
        return handler
    return grpc.unary_unary_rpc_method_handler(wrap(handler.unary_unary),
                                               request_deserializer=handler.request_deserializer,
                                               response_serializer=handler.response_serializer)


async def wrapped_handler(cache: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]],
                          continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
                          details: grpc.HandlerCallDetails,
                          wrap: Callable[[Behaviour], Behaviour]) -> grpc.RpcMethodHandler | None:
    """The handler `continuation` gives for the call, wrapped; the wrapping is made once per
    method and handler (the handler of a method normally stays the same). A method the server
    does not serve is not remembered: any caller can send any name."""
    inner = await continuation(details)
    if inner is None:
        return None
    cached = cache.get(details.method)
    if cached is not None and cached[0] is inner:
        return cached[1]
    wrapped = wrap_unary(inner, wrap)
    assert wrapped is not None
    cache[details.method] = (inner, wrapped)
    return wrapped


class CallLimit(grpc.aio.ServerInterceptor):
    """Serve at most `limit` calls at once; refuse the others with ServerBusy."""

    def __init__(self, limit: int, what: str) -> None:
        self.limit = limit
        self.active = 0
        self.refused = 0  # so far, for tests and logs
        self._what = what
        self._logged_at = -_LOG_EVERY_S
        status = error_status(ResourceExhausted(
            f"the {what} is serving its limit of {limit} calls at once (grpc.max_concurrent_calls): "
            "send the call again later", reason=BUSY_REASON))
        self._busy = status
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    async def intercept_service(
            self, continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
            handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        return await wrapped_handler(self._wrapped, continuation, handler_call_details, self._guard)

    def admit(self) -> None:
        """Count one more call in, or refuse it: ResourceExhausted (ServerBusy). A call admitted
        calls `release()` when done. For servers other than gRPC (the HTTP API)."""
        if self.active >= self.limit:
            self.refused += 1
            self._note_refusal()
            raise ResourceExhausted(self._busy[1], reason=BUSY_REASON)
        self.active += 1

    def release(self) -> None:
        self.active -= 1

    def _guard(self, behaviour: Behaviour) -> Behaviour:
        async def guarded(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            if self.active >= self.limit:
                self.refused += 1
                self._note_refusal()
                await context.abort(*self._busy)
            self.active += 1
            try:
                return await behaviour(request, context)
            finally:
                self.active -= 1
        return guarded

    def _note_refusal(self) -> None:
        now = time.monotonic()
        if now - self._logged_at >= _LOG_EVERY_S:
            self._logged_at = now
            log.warning("the %s serves its limit of %d calls at once (grpc.max_concurrent_calls) and refuses more, "
                        "which clients send again; %d refused so far", self._what, self.limit, self.refused)
