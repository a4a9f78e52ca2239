"""ZooKeeper from asyncio: one kazoo session per process, its calls awaited, its events on the loop.

kazoo (the client the project's brief names) runs its connection in a thread of its own and
answers through callbacks in that thread. `Zk` turns each `*_async` call into an awaitable and
moves every watch and session event onto the event loop with `call_soon_threadsafe`, so the
rest of Legato never touches a thread:

    zk = Zk(config.cluster)
    await zk.start()                         # Unavailable naming the hosts if none answers in time
    data, stat = await zk.get("/legato/default/cluster")
    await zk.create(path, b"...", ephemeral=True)
    zk.on_state(callback)                    # "SUSPENDED", "CONNECTED" (again) or "LOST", on the loop
    await zk.stop()

Session states are kazoo's: SUSPENDED (the connection dropped; the session may still be alive on
the servers), CONNECTED (again: the session survived) and LOST (the session expired: every
ephemeral node of this process is gone; kazoo then opens a new session by itself). A client that
stays SUSPENDED for a whole session timeout cannot know whether its session is alive; `Zk`
reports LOST then, without waiting to hear it from a server it cannot reach (as Curator does):
every caller may act on LOST as "no longer owns anything".
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any

from kazoo.client import KazooClient, KazooState
from kazoo.exceptions import ConnectionLoss, NodeExistsError, NoNodeError, SessionExpiredError
from kazoo.handlers.threading import KazooTimeoutError
from kazoo.protocol.states import ZnodeStat
from kazoo.retry import KazooRetry

from legato.config import ClusterConfig
from legato.errors import Unavailable

log = logging.getLogger("legato.zk")

__all__ = ["ConnectionLoss", "NoNodeError", "NodeExistsError", "SessionExpiredError", "Zk", "ZnodeStat",
           "dumps", "loads"]

SUSPENDED, CONNECTED, LOST = "SUSPENDED", "CONNECTED", "LOST"
# Connection errors of a call: the call may be retried once the session is connected again.
DISCONNECTED_ERRORS = (ConnectionLoss, SessionExpiredError)
_RECONNECT_DELAY_MAX_S = 1.0  # kazoo tries the next server at least this often while disconnected


def dumps(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":"), sort_keys=True).encode()


def loads(raw: bytes | None) -> Any:
    return json.loads(raw.decode()) if raw else None


class Zk:
    """One process's ZooKeeper session (see the module docstring)."""

    def __init__(self, cluster: ClusterConfig) -> None:
        self.hosts = cluster.zookeeper_hosts
        self.session_timeout_s = cluster.zookeeper_session_timeout_ms / 1000.0
        self._connect_timeout_s = cluster.zookeeper_connect_timeout_ms / 1000.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: KazooClient | None = None
        self._listeners: list[Callable[[str], None]] = []
        self.state = LOST
        self._connected = asyncio.Event()
        self._suspect: asyncio.TimerHandle | None = None  # reports LOST after a whole session timeout suspended
        self.session_id: int | None = None

    # ------------------------------------------------------------ life cycle

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        client = KazooClient(hosts=self.hosts, timeout=self.session_timeout_s,
                             connection_retry=KazooRetry(max_tries=-1, max_delay=_RECONNECT_DELAY_MAX_S),
                             command_retry=KazooRetry(max_tries=0))
        client.add_listener(self._on_kazoo_state)
        self._client = client
        try:
            await asyncio.to_thread(client.start, self._connect_timeout_s)
        except KazooTimeoutError:
            self._client = None
            await asyncio.to_thread(client.close)
            raise Unavailable(f"cannot reach ZooKeeper at {self.hosts} within {self._connect_timeout_s:g}s "
                              "(cluster.zookeeper_hosts, --zookeeper)", reason="ZooKeeperUnavailable") from None
        self._set_state(CONNECTED)

    async def stop(self) -> None:
        """Close the session: the servers delete this process's ephemeral nodes at once."""
        client, self._client = self._client, None
        if self._suspect is not None:
            self._suspect.cancel()
        self._listeners.clear()  # closing ends the session on purpose: nobody needs to hear LOST
        if client is not None:
            await asyncio.to_thread(client.stop)
            await asyncio.to_thread(client.close)

    def on_state(self, listener: Callable[[str], None]) -> None:
        """Call `listener(state)` on the loop at every session state change."""
        self._listeners.append(listener)

    @property
    def connected(self) -> bool:
        return self.state == CONNECTED

    async def wait_connected(self, timeout_s: float | None = None) -> bool:
        if self.connected:
            return True
        try:
            async with asyncio.timeout(timeout_s):
                await self._connected.wait()
        except TimeoutError:
            return False
        return True

    def _on_kazoo_state(self, state: str) -> None:  # kazoo's thread
        loop = self._loop
        if loop is not None and not loop.is_closed() and self._client is not None:
            loop.call_soon_threadsafe(self._on_state, str(state))

    def _on_state(self, state: str) -> None:
        if state == KazooState.CONNECTED:
            client = self._client
            session = client.client_id[0] if client is not None and client.client_id else None
            if self.state == LOST or (self.session_id is not None and session != self.session_id):
                # kazoo opened a new session after the old one expired: say LOST first if nobody heard it
                if self.state != LOST:
                    self._set_state(LOST)
            self._set_state(CONNECTED)
        elif state == KazooState.SUSPENDED:
            self._set_state(SUSPENDED)
        elif state == KazooState.LOST:
            self._set_state(LOST)

    def _set_state(self, state: str) -> None:
        if self._suspect is not None:
            self._suspect.cancel()
            self._suspect = None
        if state == self.state:
            return
        log.log(logging.INFO if state == CONNECTED else logging.WARNING, "ZooKeeper session %s (%s)",
                state.lower(), self.hosts)
        self.state = state
        if state == CONNECTED:
            client = self._client
            self.session_id = client.client_id[0] if client is not None and client.client_id else None
            self._connected.set()
        else:
            self._connected.clear()
        if state == SUSPENDED and self._loop is not None:
            self._suspect = self._loop.call_later(self.session_timeout_s, self._suspended_too_long)
        for listener in list(self._listeners):
            try:
                listener(state)
            except Exception:
                log.exception("a ZooKeeper state listener failed")

    def _suspended_too_long(self) -> None:
        self._suspect = None
        if self.state == SUSPENDED:
            log.warning("no ZooKeeper server answered for a whole session timeout (%.1fs): this session counts "
                        "as expired", self.session_timeout_s)
            self._set_state(LOST)

    # ------------------------------------------------------------ calls

    @property
    def client(self) -> KazooClient:
        if self._client is None:
            raise Unavailable("the ZooKeeper client is not running", reason="ZooKeeperStopped")
        return self._client

    async def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()

        def done(result: Any) -> None:  # kazoo's thread
            try:
                value = result.get_nowait()
            except BaseException as e:
                loop.call_soon_threadsafe(_settle, fut, None, e)
            else:
                loop.call_soon_threadsafe(_settle, fut, value, None)

        getattr(self.client, method)(*args, **kwargs).rawlink(done)
        try:
            # kazoo queues a call made while disconnected until it reconnects: bound the wait, so
            # that callers see a connection error they can handle (`retrying`). asyncio.timeout,
            # not wait_for: on Python 3.11 wait_for can swallow a cancellation that arrives as the
            # answer does, and a task being stopped would then go on.
            async with asyncio.timeout(self.session_timeout_s):
                return await fut
        except TimeoutError:
            raise ConnectionLoss(f"no answer from ZooKeeper within {self.session_timeout_s:g}s") from None

    def watcher(self, callback: Callable[[Any], None]) -> Callable[[Any], None]:
        """A kazoo watch function that runs `callback(event)` on the loop."""
        loop = asyncio.get_running_loop()

        def watch(event: Any) -> None:  # kazoo's thread
            if not loop.is_closed():
                loop.call_soon_threadsafe(callback, event)

        return watch

    async def get(self, path: str, watch: Callable[[Any], None] | None = None) -> tuple[bytes, ZnodeStat]:
        return await self._call("get_async", path, watch)

    async def children(self, path: str, watch: Callable[[Any], None] | None = None) -> list[str]:
        return await self._call("get_children_async", path, watch)

    async def exists(self, path: str, watch: Callable[[Any], None] | None = None) -> ZnodeStat | None:
        return await self._call("exists_async", path, watch)

    async def create(self, path: str, value: bytes = b"", *, ephemeral: bool = False, sequence: bool = False,
                     makepath: bool = False) -> str:
        return await self._call("create_async", path, value, None, ephemeral, sequence,
                                makepath)

    async def set(self, path: str, value: bytes, version: int = -1) -> ZnodeStat:
        return await self._call("set_async", path, value, version)

    async def delete(self, path: str, version: int = -1) -> None:
        await self._call("delete_async", path, version)

    async def ensure_path(self, path: str) -> None:
        await self._call("ensure_path_async", path)

    async def retrying(self, fn: Callable[[], Any], what: str, timeout_s: float | None = None) -> Any:
        """`await fn()`, again after each connection error once the session is connected again,
        until `timeout_s` (None: forever) has passed: then Unavailable naming `what`."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout_s is None else loop.time() + timeout_s
        while True:
            try:
                return await fn()
            except DISCONNECTED_ERRORS as e:
                remaining = None if deadline is None else deadline - loop.time()
                if remaining is not None and remaining <= 0:
                    raise Unavailable(f"ZooKeeper at {self.hosts} did not answer while {what}: {type(e).__name__}",
                                      reason="ZooKeeperUnavailable") from e
                if self.connected:  # the error predates the reconnection, or the session moved on
                    await asyncio.sleep(0.05)
                await self.wait_connected(remaining)


def _settle(fut: asyncio.Future[Any], value: Any, error: BaseException | None) -> None:
    if fut.done():
        return
    if error is not None:
        fut.set_exception(error)
    else:
        fut.set_result(value)
