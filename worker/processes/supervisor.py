"""`process.service` entries: supervised processes.

A service whose `lifecycle.auto_start` is true starts with the worker (on a worker that serves
its `host`). When its process ends with an error (it raised, returned `nil, err`, was terminated,
taken down by a link, or stopped by the watchdog) it is started again after
`restart.initial_delay * backoff^(n-1)` (at most `restart.max_delay`), up to
`restart.max_attempts` restarts; then the service is `failed` and stays down. A process that
returns normally is not restarted (the service is `stopped`). Every start, end and restart is
logged (logger `legato.worker.processes`); `states()` is what `legato process list` shows.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from worker.processes.host import LiveProcess, ProcessHosts, SpawnError
from worker.processes.kinds import ServiceEntry

log = logging.getLogger("legato.worker.processes")


START_WAIT_S = 10.0  # `legato process start/restart`: how long to wait for the process to run


class ServiceCommandError(Exception):
    """A start/stop/restart that cannot be done: `status` is the HTTP status the control API answers."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(slots=True)
class ServiceState:
    entry: ServiceEntry
    # not_started | starting | running | restarting | stopping | stopped | failed
    state: str = "not_started"
    pid: str = ""
    restarts: int = 0
    last_error: str = ""
    starts: list[float] = field(default_factory=list)  # monotonic times of its starts (the last 20)
    task: asyncio.Task[None] | None = None  # its supervision loop while it runs or waits to restart
    stop_requested: bool = False  # `legato process stop`: its process's end is not restarted

    @property
    def active(self) -> bool:
        return self.task is not None and not self.task.done()

    def describe(self) -> dict[str, Any]:
        return {"service": self.entry.id, "process": self.entry.process, "host": self.entry.host,
                "state": self.state, "pid": self.pid or None, "restarts": self.restarts,
                "max_attempts": self.entry.lifecycle.restart.max_attempts, "last_error": self.last_error or None,
                "auto_start": self.entry.lifecycle.auto_start}


class Supervisor:
    """The process.service entries of the hosts one worker serves: one copy of each per worker."""

    def __init__(self, hosts: ProcessHosts) -> None:
        self.hosts = hosts
        self.services = [e for e in hosts.registry.entries()
                         if isinstance(e, ServiceEntry) and e.host in hosts.hosts]
        self.states: dict[str, ServiceState] = {svc.id: ServiceState(svc) for svc in self.services}
        self._stopping = asyncio.Event()
        self._changed = asyncio.Condition()  # notified whenever a service's state changes

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def wait_until(self, check: Callable[[], bool], timeout_s: float) -> None:
        """Wait until `check()` holds, looking again after each state change (TimeoutError if not)."""
        async with asyncio.timeout(timeout_s), self._changed:
            await self._changed.wait_for(check)

    async def start(self) -> None:
        self._stopping = asyncio.Event()
        for st in self.states.values():
            if st.entry.lifecycle.auto_start:
                self._launch(st)

    async def stop(self) -> None:
        self._stopping.set()
        tasks = [st.task for st in self.states.values() if st.task is not None]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for st in self.states.values():
            st.task = None
            if st.state not in ("failed", "not_started"):
                st.state = "stopped"

    def _launch(self, st: ServiceState) -> None:
        st.state, st.restarts, st.stop_requested = "starting", 0, False
        st.task = asyncio.create_task(self._supervise(st), name=f"service-{st.entry.id}")

    # ------------------------------------------------------------ by hand (legato process start|stop|restart)

    def _state_of(self, service_id: str) -> ServiceState:
        st = self.states.get(service_id)
        if st is None:
            known = ", ".join(sorted(self.states)) or "none"
            raise ServiceCommandError(404, f"this worker has no process.service {service_id!r} (its services: "
                                           f"{known})")
        return st

    async def start_service(self, service_id: str) -> dict[str, Any]:
        """Start a service that is not running (never started, stopped, or failed)."""
        st = self._state_of(service_id)
        if self._stopping.is_set():
            raise ServiceCommandError(409, f"service {service_id}: the worker is stopping")
        if st.active:
            pid = f" as {st.pid}" if st.pid else ""
            raise ServiceCommandError(409, f"service {service_id} is already {st.state}{pid} (stop or restart it)")
        self._launch(st)
        await self._notify()
        await self._until_started(st)
        return st.describe()

    async def stop_service(self, service_id: str) -> dict[str, Any]:
        """Stop a running (or restarting) service: its process is terminated and not restarted."""
        st = self._state_of(service_id)
        if not st.active:
            raise ServiceCommandError(409, f"service {service_id} is not running (it is {st.state})")
        await self._halt(st, "stopped by `legato process stop`")
        return st.describe()

    async def restart_service(self, service_id: str) -> dict[str, Any]:
        """Stop the service if it runs, then start it again (restart count from 0)."""
        st = self._state_of(service_id)
        if st.active:
            await self._halt(st, "stopped by `legato process restart`")
        return await self.start_service(service_id)

    async def _halt(self, st: ServiceState, reason: str) -> None:
        st.stop_requested = True
        st.state = "stopping"
        live = self.hosts.live.get(st.pid) if st.pid else None
        if live is not None:
            live.caller.terminate(reason)
        elif st.task is not None:  # waiting to restart: nothing runs
            st.task.cancel()
        if st.task is not None:
            await asyncio.gather(st.task, return_exceptions=True)
        st.task, st.pid, st.state = None, "", "stopped"
        await self._notify()
        log.info("service %s: %s", st.entry.id, reason)

    async def _until_started(self, st: ServiceState) -> None:
        try:
            await self.wait_until(lambda: st.state != "starting", START_WAIT_S)
        except TimeoutError:
            raise ServiceCommandError(504, f"service {st.entry.id}: not running within {START_WAIT_S:g} s "
                                           f"(state {st.state})") from None
        if st.state != "running":
            raise ServiceCommandError(500, f"service {st.entry.id} did not start: {st.last_error or st.state}")

    # ------------------------------------------------------------ the loop

    async def _supervise(self, st: ServiceState) -> None:
        svc, policy = st.entry, st.entry.lifecycle.restart
        while not self._stopping.is_set():
            try:
                p: LiveProcess = await self.hosts.spawn(svc.host, svc.process, list(svc.input), service=svc.id,
                                                  restarts=st.restarts)
            except SpawnError as e:
                outcome_error = f"{e.failure.kind}: {e.failure.message}"
            else:
                st.state, st.pid = "running", p.pid
                st.starts = [*st.starts[-19:], time.monotonic()]
                await self._notify()
                log.info("service %s: running as %s (restarts: %d)", svc.id, p.pid, st.restarts)
                outcome = await p.done
                st.pid = ""
                if self._stopping.is_set() or st.stop_requested:
                    break
                if outcome.failure is None:
                    st.state = "stopped"
                    await self._notify()
                    log.info("service %s: %s returned; not restarted", svc.id, p.pid)
                    return
                outcome_error = f"{outcome.failure.kind}: {outcome.failure.message}"
            st.last_error = outcome_error
            if st.restarts >= policy.max_attempts:
                st.state = "failed"
                await self._notify()
                log.error("service %s: ended with an error (%s); gave up after %d restart(s) (max_attempts %d)",
                          svc.id, outcome_error, st.restarts, policy.max_attempts)
                return
            st.restarts += 1
            delay_ms = policy.delay_ms(st.restarts)
            st.state = "restarting"
            await self._notify()
            log.warning("service %s: ended with an error (%s); restart %d of %d in %d ms", svc.id, outcome_error,
                        st.restarts, policy.max_attempts, delay_ms)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay_ms / 1000)
        st.state = "stopped"

    def listing(self) -> list[dict[str, Any]]:
        return [st.describe() for st in self.states.values()]
