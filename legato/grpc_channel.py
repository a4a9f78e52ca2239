"""The client side of a Legato gRPC service: one lazily made channel, connection checks with a
bounded wait, calls with deadlines, long polls, and errors mapped back to `legato.errors`.

Shared by the public client (`legato.client.GrpcClient`) and the internal ones
(`legato.internal_clients`), so that every client reports errors the same way:

* an error the service raised comes back as the same class, message and reason
  (`legato.grpc_errors`);
* a server that cannot be reached raises `Unavailable` (reason `ServerUnreachable`) naming the
  address, within `connect_timeout_s`;
* a call past its deadline raises `Unavailable` (reason `DeadlineExceeded`); a long poll past its
  deadline is an empty poll instead (`poll` returns None).

Calls are not retried unless the caller asks (`attempts`), which it does only for reads: a
retried write could be applied twice. The exception is a call the server pushed back before doing
anything with it (RESOURCE_EXHAUSTED with reason `ServerBusy`, from `legato.admission`, or
CANCELLED by gRPC's own full queue): every call is sent again, after a backoff with jitter
(`busy_retry_initial_ms`, doubling up to `busy_retry_max_ms`), until its deadline passes.

With a `ClientSecurity`, the channel uses TLS (and a client certificate) and every call carries
the token; a connection that fails during TLS set-up says what is most likely wrong
(`legato.tls.explain_connect_failure`), with reason `TlsFailure`.

An address may name several servers, "h1:7233,h2:7233" (the frontends of a cluster): calls go to
one, and when it cannot be reached, at once to the next. Every call a client makes to a frontend
may go twice this way (a server may have died after applying it): starts, signals, cancels and
terminates carry request ids and task responses task tokens, so the second is recognised.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from types import TracebackType
from typing import Any, Self

import grpc

from legato.admission import BUSY_REASON
from legato.config import GrpcConfig
from legato.errors import ResourceExhausted, ServiceError, Unavailable
from legato.grpc_errors import REASON_KEY, error_from_rpc, metadata_dict
from legato.tls import ClientSecurity, explain_connect_failure

_IDLE = grpc.ChannelConnectivity.IDLE
_CONNECTING = grpc.ChannelConnectivity.CONNECTING
_READY = grpc.ChannelConnectivity.READY

_RETRY_BACKOFF_S = 0.1
_RETRY_BACKOFF_MAX_S = 1.0
_GRPC_DEFAULTS = GrpcConfig()
TLS_FAILURE = "TlsFailure"

CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", -1),
    ("grpc.max_send_message_length", -1),
    # Reconnect soon after a server restart instead of backing off for minutes.
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 5_000),
]
# Between the services of a cluster: a restarted peer is found within a second (a reconnect
# attempt a second to a peer that is down costs nothing), so callers' retries succeed soon.
INTERNAL_CHANNEL_OPTIONS = [(k, 1_000 if k == "grpc.max_reconnect_backoff_ms" else v) for k, v in CHANNEL_OPTIONS]


def retryable(e: Unavailable) -> bool:
    """A failure to reach the server at all; a service's own Unavailable (shard moved, stopping)
    is for the caller to handle, possibly by asking another node."""
    return e.reason in ("ServerUnreachable", TLS_FAILURE)


def pushed_back(e: grpc.aio.AioRpcError) -> bool:
    """The server refused the call before doing anything with it: its admission limit
    (ServerBusy), or gRPC's queue of calls not yet taken up was full (CANCELLED, no Legato
    reason: the call never reached a Legato handler, which would have sent one)."""
    code = e.code()
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return metadata_dict(e).get(REASON_KEY) == BUSY_REASON
    return code == grpc.StatusCode.CANCELLED and REASON_KEY not in metadata_dict(e)


class RpcChannel:
    """Calls to one address through a generated stub (`stub_factory(channel)`)."""

    def __init__(self, address: str, stub_factory: Callable[[grpc.aio.Channel], Any], *,
                 connect_timeout_s: float = 5.0, call_timeout_s: float = 30.0,
                 long_poll_margin_s: float = 5.0, server_name: str = "Legato server",
                 options: list[tuple[str, int]] | None = None, security: ClientSecurity | None = None,
                 busy_retry_initial_ms: int = _GRPC_DEFAULTS.busy_retry_initial_ms,
                 busy_retry_max_ms: int = _GRPC_DEFAULTS.busy_retry_max_ms) -> None:
        self.addresses = [a.strip() for a in address.split(",") if a.strip()] or [address]
        self._turn = 0
        self.address = self.addresses[0]
        self._options = options or CHANNEL_OPTIONS
        self.call_timeout_s = call_timeout_s
        self.server_name = server_name
        self._stub_factory = stub_factory
        self._connect_timeout_s = connect_timeout_s
        self._margin_s = long_poll_margin_s
        self._channel: grpc.aio.Channel | None = None
        self._stub: Any = None
        self._connected = False
        self._connecting: tuple[grpc.aio.Channel, asyncio.Future[None]] | None = None
        self._closed = False
        self._spare: dict[str, tuple[grpc.aio.Channel, Any]] = {}  # channels of the other addresses
        self._security = security
        self._busy_initial_s = busy_retry_initial_ms / 1000.0
        self._busy_max_s = max(busy_retry_max_ms, busy_retry_initial_ms) / 1000.0
        self.busy_retries = 0  # calls sent again after a push-back, so far

    async def close(self) -> None:
        self._closed = True
        channels = [c for c, _ in self._spare.values()]
        self._spare = {}
        if self._channel is not None:
            channels.append(self._channel)
            self._channel, self._stub = None, None
        for channel in channels:
            await channel.close()

    def _stub_for_call(self) -> Any:
        if self._closed:
            raise Unavailable(f"the client of the {self.server_name} at {self.address} is closed",
                              reason="ClientClosed")
        if self._stub is None:
            # Created lazily, inside the event loop that uses it.
            credentials = self._security.channel_credentials() if self._security is not None else None
            if credentials is None:
                self._channel = grpc.aio.insecure_channel(self.address, options=self._options)
            else:
                assert self._security is not None
                options = [*self._options, *self._security.channel_options()]
                self._channel = grpc.aio.secure_channel(self.address, credentials, options=options)
            self._stub = self._stub_factory(self._channel)
        return self._stub

    async def _ensure_connected(self) -> None:
        """Wait (briefly) for a connection, one wait shared by the calls that arrive meanwhile: a
        burst of thousands of calls on a new channel then costs one watch of its state, not one
        each (which kept the event loop too busy to see the connection come up in time)."""
        channel = self._channel
        assert channel is not None
        if self._connecting is None or self._connecting[0] is not channel or self._connecting[1].done():
            waiting = asyncio.ensure_future(self._connect(channel))
            # Its error is every waiter's; retrieved here too, in case they all went away.
            waiting.add_done_callback(lambda f: f.cancelled() or f.exception())
            self._connecting = (channel, waiting)
        await asyncio.shield(self._connecting[1])

    async def _connect(self, channel: grpc.aio.Channel) -> None:
        """A refused connection is left to the call itself, which then fails at once with gRPC's
        explanation; a connection that hangs fails here."""
        state = channel.get_state(try_to_connect=True)
        if state == _READY:
            self._connected = True
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._connect_timeout_s
        while state in (_IDLE, _CONNECTING):
            remaining = deadline - loop.time()
            try:
                if remaining <= 0:
                    raise TimeoutError
                await asyncio.wait_for(channel.wait_for_state_change(state), remaining)
            except TimeoutError:
                raise Unavailable(f"cannot reach the {self.server_name} at {self.address}: no connection "
                                  f"within {self._connect_timeout_s:g}s", reason="ServerUnreachable") from None
            state = channel.get_state(try_to_connect=True)
        self._connected = state == _READY

    async def _call_once(self, rpc: str, request: Any, timeout_s: float | None) -> Any:
        stub = self._stub_for_call()
        if not self._connected:
            await self._ensure_connected()
        loop = asyncio.get_running_loop()
        budget = timeout_s or self.call_timeout_s
        deadline = loop.time() + budget
        backoff = self._busy_initial_s
        while True:
            stub = self._stub_for_call()  # the client may have been closed during a backoff
            metadata = self._security.metadata() if self._security is not None else None
            try:
                return await getattr(stub, rpc)(request, timeout=budget, metadata=metadata, wait_for_ready=False)
            except grpc.aio.AioRpcError as e:
                if e.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                    self._connected = False  # check the connection again before the next call
                if not pushed_back(e):
                    raise self._error(e, rpc) from None
                # Jittered, so that the callers pushed back together do not come back together.
                pause = backoff * (0.5 + random.random() / 2)
                budget = deadline - loop.time() - pause
                if budget <= 0:
                    raise self._busy(e, rpc) from None
            self.busy_retries += 1
            await asyncio.sleep(pause)
            backoff = min(backoff * 2, self._busy_max_s)

    def _error(self, e: grpc.aio.AioRpcError, rpc: str) -> ServiceError:
        err = error_from_rpc(e, self.address, rpc, self.server_name)
        if isinstance(err, Unavailable) and err.reason == "ServerUnreachable":
            hint, surely_tls = explain_connect_failure(e.details() or "", self._security)
            if hint:
                how = self._security.describe() if self._security is not None else "without TLS"
                return Unavailable(f"cannot connect to the {self.server_name} at {self.address} ({how}): {hint} "
                                   f"[gRPC: {e.details()}]", reason=TLS_FAILURE if surely_tls else "ServerUnreachable")
        return err

    def _busy(self, e: grpc.aio.AioRpcError, rpc: str) -> ServiceError:
        """The error of a call the server kept pushing back until its deadline."""
        why = e.details() if e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED else \
            "its queue of calls waiting to be taken up is full (grpc.max_queued_calls)"
        return ResourceExhausted(f"the {self.server_name} at {self.address} is overloaded and refused {rpc} until "
                                 f"its deadline passed: {why}", reason=BUSY_REASON)

    async def call(self, rpc: str, request: Any, timeout_s: float | None = None, *, attempts: int = 1) -> Any:
        """Call `rpc`; with `attempts` > 1 (reads only), a server that could not be reached is
        tried again after a short backoff. With several addresses, an unreachable one's call goes
        to the next at once."""
        for attempt in range(1, attempts + 1):
            try:
                return await self._call_any(rpc, request, timeout_s)
            except Unavailable as e:
                if attempt >= attempts or not retryable(e):
                    raise
            await asyncio.sleep(min(_RETRY_BACKOFF_S * 2 ** (attempt - 1), _RETRY_BACKOFF_MAX_S))
        raise AssertionError("unreachable")

    async def _call_any(self, rpc: str, request: Any, timeout_s: float | None) -> Any:
        for tried in range(len(self.addresses)):
            address = self.address
            try:
                return await self._call_once(rpc, request, timeout_s)
            except Unavailable as e:
                if not retryable(e) or tried + 1 >= len(self.addresses):
                    raise
                self._next_address(address)
        raise AssertionError("unreachable")

    def _next_address(self, failed: str) -> None:
        """Switch to the server after `failed` in the list, unless another call switched already.
        Channels are kept (calls in flight on them go on; a server that comes back is reused)."""
        if self.address != failed:
            return
        if self._channel is not None:
            self._spare[self.address] = (self._channel, self._stub)
        self._turn = (self._turn + 1) % len(self.addresses)
        self.address = self.addresses[self._turn]
        self._channel, self._stub = self._spare.pop(self.address, (None, None))
        self._connected = False

    def long_poll_s(self, timeout_ms: int) -> float:
        """The deadline of a call that may wait `timeout_ms` on the server."""
        return max(timeout_ms, 0) / 1000.0 + self._margin_s

    async def poll(self, rpc: str, request: Any, wait_ms: int) -> Any:
        """A long poll that may wait `wait_ms` on the server: None when its deadline passes
        (the server waited longer than assumed; the server's side of the call is cancelled)."""
        try:
            return await self.call(rpc, request, self.long_poll_s(wait_ms))
        except Unavailable as e:
            if e.reason == "DeadlineExceeded":
                return None
            raise


class ChannelClient:
    """The `async with` / `close()` life cycle every Legato client shares, around its channel."""

    _rpc: RpcChannel

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        await self._rpc.close()

    def _wait_s(self, timeout_ms: int) -> float:
        """The deadline of a call that may wait `timeout_ms` on the server."""
        return max(self._rpc.call_timeout_s, self._rpc.long_poll_s(timeout_ms))
