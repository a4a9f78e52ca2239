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


@dataclass(slots=True)
class ServiceState:
    entry: ServiceEntry
    state: str = "starting"  # starting | running | restarting | stopped | failed
    pid: str = ""
    restarts: int = 0
    last_error: str = ""
    starts: list[float] = field(default_factory=list)  # monotonic times of its starts (the last 20)

    def describe(self) -> dict[str, Any]:
        return {"service": self.entry.id, "process": self.entry.process, "host": self.entry.host,
                "state": self.state, "pid": self.pid or None, "restarts": self.restarts,
                "max_attempts": self.entry.lifecycle.restart.max_attempts, "last_error": self.last_error or None}


class Supervisor:
    def __init__(self, hosts: ProcessHosts) -> None:
        self.hosts = hosts
        self.services = [e for e in hosts.registry.entries()
                         if isinstance(e, ServiceEntry) and e.lifecycle.auto_start and e.host in hosts.hosts]
        self.states: dict[str, ServiceState] = {}
        self._tasks: list[asyncio.Task[None]] = []
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
        for svc in self.services:
            st = self.states[svc.id] = ServiceState(svc)
            self._tasks.append(asyncio.create_task(self._supervise(st), name=f"service-{svc.id}"))

    async def stop(self) -> None:
        self._stopping.set()
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        for st in self.states.values():
            if st.state != "failed":
                st.state = "stopped"

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
                if self._stopping.is_set():
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
