"""The `process.host` entries of a worker: their spawn mailboxes and their live processes.

Each host opens the mailbox `control.host_pid(host id)` and polls it; a spawn request there
(from a caller or a process) starts the `process.lua` entry as a `Caller` of its own (its own
pid, mailbox, Lua state with `limits.lua_memory_bytes`, instruction limit per step, and a thread
behind `worker.lua_watchdog_ms`: a stuck process is abandoned with a LIMIT_EXCEEDED error, the
others go on); the new process sends its pid to the spawner before its code runs (a refused
spawn is answered by the host). Several workers serving the
same host share its spawn mailbox: a spawn goes to whichever polls first.

Processes are not durable: a worker that stops terminates its processes (their monitors get
EXIT with a Terminated error); one that dies loses them without a word.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from legato import DEFAULT_NAMESPACE, api
from legato.api import ParentClosePolicy
from legato.config import Config
from legato.errors import Failure, Kind, NotFound, ServiceError, Unavailable
from legato.ids import new_request_id
from worker.caller import MAILBOX_POLL_MS, Caller, CallerOutcome, failure_of
from worker.entries import Registry
from worker.processes import control
from worker.processes.kinds import HostEntry, ProcessEntry

log = logging.getLogger("legato.worker.processes")

STOP_GRACE_S = 5.0  # on stop, processes get this long to end after their terminate


@dataclass(slots=True)
class LiveProcess:
    pid: str
    entry: str
    host: str
    caller: Caller
    started_at: float
    service: str = ""
    restarts: int = 0
    state: str = "running"
    parent: str = ""  # who spawned it: a workflow, caller or process pid ("" for a service)
    parent_close_policy: str = ""  # a workflow's spawn: what the workflow's close does to it
    done: asyncio.Future[CallerOutcome] = field(default_factory=lambda: asyncio.get_running_loop().create_future())

    def describe(self) -> dict[str, Any]:
        return {"pid": self.pid, "entry": self.entry, "host": self.host, "service": self.service or None,
                "state": self.state, "restarts": self.restarts, "parent": self.parent or None,
                "parent_close_policy": self.parent_close_policy or None,
                "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.started_at))}


class SpawnError(Exception):
    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.message)
        self.failure = failure


class ProcessHosts:
    """Every process.host of a registry, served by one worker."""

    def __init__(self, service: api.WorkflowService, registry: Registry, config: Config) -> None:
        self.service = service
        self.registry = registry
        self.config = config
        self.hosts = {e.id: e for e in registry.entries() if isinstance(e, HostEntry)}
        self.live: dict[str, LiveProcess] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._pollers: list[asyncio.Task[None]] = []
        self._stopping = False

    async def start(self) -> None:
        self._stopping = False
        for host in self.hosts.values():
            try:  # open now, so spawns work once the worker has started; the poller retries if not
                await self.service.open_mailbox(control.host_pid(host.id))
                opened = True
            except ServiceError as e:
                log.warning("process.host %s: cannot open its spawn mailbox yet (%s); retrying", host.id, e)
                opened = False
            self._pollers.append(asyncio.create_task(self._poll(host, opened), name=f"process-host-{host.id}"))
        if self.hosts:
            log.info("process hosts: %s", ", ".join(self.hosts))

    async def stop(self) -> None:
        self._stopping = True
        for t in self._pollers:
            t.cancel()
        await asyncio.gather(*self._pollers, return_exceptions=True)
        self._pollers.clear()
        for host in self.hosts.values():
            with contextlib.suppress(ServiceError):
                await self.service.close_mailbox(control.host_pid(host.id))
        procs = list(self.live.values())
        for p in procs:
            p.state = "stopping"
            p.caller.terminate("the worker is stopping (processes are not durable)")
        if procs:
            await asyncio.wait([asyncio.ensure_future(p.done) for p in procs], timeout=STOP_GRACE_S)
            log.info("stopped %d process(es)", len(procs))

    # ------------------------------------------------------------ spawning

    async def spawn(self, host_id: str, entry_id: str, args: list[Any], *, watcher: str = "", monitor: bool = False,
              link: bool = False, context: dict[str, Any] | None = None, service: str = "",
              restarts: int = 0, announce: tuple[str, dict[str, Any], str] | None = None, pid: str | None = None,
              watcher_namespace: str = "", parent_close_policy: str = "") -> LiveProcess:
        """Start a process of `entry_id` on `host_id` (a host of this worker); SpawnError if not."""
        host = self.hosts.get(host_id)
        if host is None:
            raise SpawnError(Failure(f"this worker does not serve process.host {host_id}", Kind.NOT_FOUND, False))
        entry = self.registry.find(entry_id)
        if not isinstance(entry, ProcessEntry):
            why = "is not in the registry" if entry is None else f"is a {entry.kind} entry, not a process.lua"
            raise SpawnError(Failure(f"cannot spawn {entry_id!r} on {host_id}: it {why}", Kind.NOT_FOUND, False))
        running = sum(1 for p in self.live.values() if p.host == host_id)
        if running >= host.max_processes:
            raise SpawnError(Failure(f"process.host {host_id} runs {running} processes, its max_processes",
                                     Kind.LIMIT_EXCEEDED, True))
        caller = Caller(self.service, entry, self.registry, self.config.limits, namespace=DEFAULT_NAMESPACE,
                        context=context, watchdog_ms=self.config.worker.lua_watchdog_ms, pid=pid)
        if watcher:  # registered before the process runs: it cannot end unseen
            if monitor:
                caller._watch(watcher, "monitor", True, watcher_namespace)
            if link:
                caller._watch(watcher, "link", True, watcher_namespace)
                caller.k.linked_by(watcher, True)
        # open before the pid is handed out: the spawner's first message must find the mailbox
        try:
            await self.service.open_mailbox(caller.pid)
        except ServiceError as e:
            raise SpawnError(failure_of(e)) from None
        p = LiveProcess(caller.pid, entry_id, host_id, caller, time.time(), service=service, restarts=restarts,
                        parent=watcher, parent_close_policy=parent_close_policy)
        self.live[p.pid] = p
        task = asyncio.create_task(self._run(p, args, announce), name=f"process-{p.pid}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        log.info("process %s (%s) started on %s%s", p.pid, entry_id, host_id,
                 f" for service {service}" if service else "")
        return p

    async def _run(self, p: LiveProcess, args: list[Any], announce: tuple[str, dict[str, Any], str] | None) -> None:
        try:
            if announce is not None:
                # The pid goes to the spawner from the process's own pid, before its code runs:
                # one sender's messages arrive in order, so the spawner knows the pid before it
                # can hear anything else from the process (its messages, its EXIT).
                to, reply, ns = announce
                try:
                    await self.service.send_message(api.SendMessageRequest(
                        to, control.SPAWNED, {**reply, "pid": p.pid}, sender=p.pid, namespace=ns,
                        request_id=new_request_id()))
                except NotFound as e:
                    if p.parent_close_policy:
                        await self._parent_closed(p, e.message)
                except ServiceError:
                    pass
            outcome = await p.caller.run(args)
        except Exception as e:  # a bug here must not leave the process listed forever
            log.exception("process %s", p.pid)
            outcome = CallerOutcome(failure=Failure(f"{type(e).__name__}: {e}", Kind.INTERNAL, False))
        finally:
            self.live.pop(p.pid, None)
        f = outcome.failure
        if f is None:
            log.info("process %s (%s) ended normally", p.pid, p.entry)
        elif p.state == "stopping":
            log.info("process %s (%s) stopped with the worker", p.pid, p.entry)
        else:
            log.warning("process %s (%s) ended with an error: %s: %s", p.pid, p.entry, f.kind, f.message)
        if not p.done.done():
            p.done.set_result(outcome)

    async def _poll(self, host: HostEntry, opened: bool) -> None:
        pid = control.host_pid(host.id)
        while not self._stopping:
            try:
                if not opened:  # here, not in start: a worker starts while the server is away too
                    await self.service.open_mailbox(pid)
                    opened = True
                msgs = await self.service.poll_mailbox(api.PollMailboxRequest(pid, MAILBOX_POLL_MS))
            except NotFound:  # another worker serving this host closed it as it stopped: open it again
                with contextlib.suppress(ServiceError):
                    await self.service.open_mailbox(pid)
                continue
            except (Unavailable, ServiceError) as e:  # the server is away (or refuses): try again soon
                level = logging.DEBUG if isinstance(e, Unavailable) else logging.WARNING
                log.log(level, "spawn mailbox of %s: %s: %s", host.id, type(e).__name__, e)
                await asyncio.sleep(1.0)
                continue
            for m in msgs:
                d = control.decode(m)
                if isinstance(d, control.Control) and d.topic == control.SPAWN:
                    await self._spawn_request(host, d)
                else:
                    log.warning("process.host %s: unexpected message %r from %s", host.id, m.topic, m.sender)

    async def _spawn_request(self, host: HostEntry, c: control.Control) -> None:
        d = c.data
        reply_to = str(d.get("reply_to") or c.sender)
        if d.get("pid"):
            await self._spawn_for_workflow(host, d, reply_to)
            return
        reply: dict[str, Any] = {"ref": d.get("ref"), "monitor": bool(d.get("monitor")), "link": bool(d.get("link"))}
        args = d.get("args")
        ctx = d.get("context")
        try:
            await self.spawn(host.id, str(d.get("entry", "")), args if isinstance(args, list) else [],
                             watcher=reply_to, monitor=bool(d.get("monitor")), link=bool(d.get("link")),
                             context=ctx if isinstance(ctx, dict) else None,
                             announce=(reply_to, reply, DEFAULT_NAMESPACE))
            return  # the process tells the spawner its pid itself (`_run`)
        except SpawnError as e:
            reply["error"] = e.failure.to_dict()
        except Exception as e:  # e.g. the Lua state could not be made: the spawner hears why
            log.exception("process.host %s: spawning for %s", host.id, reply_to)
            reply["error"] = Failure(f"{type(e).__name__}: {e}", Kind.INTERNAL, False).to_dict()
        try:
            await self.service.send_message(api.SendMessageRequest(
                reply_to, control.SPAWNED, reply, sender=control.host_pid(host.id), request_id=new_request_id()))
        except ServiceError as e:
            log.info("process.host %s: the spawner %s did not get its reply (%s)", host.id, reply_to, e)

    async def _spawn_for_workflow(self, host: HostEntry, d: dict[str, Any], workflow_id: str) -> None:
        """A workflow's spawn: the pid is the workflow's choice; the process tells the workflow it
        runs (a `@legato.spawned` signal, before its code runs), or the host that it was refused."""
        pid, ns = str(d["pid"]), str(d.get("namespace") or DEFAULT_NAMESPACE)
        if pid in self.live:
            return  # delivered twice (history carries a message out at least once)
        args, ctx = d.get("args"), d.get("context")
        try:
            await self.spawn(host.id, str(d.get("entry", "")), args if isinstance(args, list) else [],
                             watcher=workflow_id, monitor=True, link=bool(d.get("link")),
                             context=ctx if isinstance(ctx, dict) else None, pid=pid, watcher_namespace=ns,
                             announce=(workflow_id, {"ref": d.get("ref"), "run": d.get("run")}, ns),
                             parent_close_policy="" if d.get("link") else  # a link decides (spawned_processes)
                             str(d.get("parent_close_policy") or ParentClosePolicy.TERMINATE))
            if d.get("link"):
                # the other way: the workflow's abnormal end takes the process down (as process.link
                # of a workflow from a caller: history keeps the pid as a link of the run)
                try:
                    await self.service.monitor_workflow(api.MonitorWorkflowRequest(
                        api.ExecutionRef(workflow_id, "", ns), pid, True, False))
                except ServiceError as e:
                    log.info("process %s: linking back to workflow %s: %s", pid, workflow_id, e)
        except SpawnError as e:
            with contextlib.suppress(ServiceError):
                await self.service.send_message(api.SendMessageRequest(
                    workflow_id, control.SPAWNED, {"ref": d.get("ref"), "error": e.failure.to_dict()},
                    sender=pid, namespace=ns, request_id=new_request_id()))

    async def _parent_closed(self, p: LiveProcess, why: str) -> None:
        """The workflow that spawned `p` closed (or continued as new) before `p` could tell it that
        it runs (history refused the spawn's SPAWNED signal): its parent close policy applies here,
        as history applies it to the processes it knew of (history/spawned_processes.py)."""
        policy = p.parent_close_policy
        reason = f"parent workflow {p.parent} closed as process {p.pid} started; parent_close_policy {policy}"
        log.info("process %s: %s (%s)", p.pid, reason, why)
        p.caller._watch(p.parent, "monitor", False)  # the run that would hear its EXIT is gone
        if policy == ParentClosePolicy.TERMINATE:
            p.caller.terminate(reason)
        elif policy == ParentClosePolicy.REQUEST_CANCEL:
            with contextlib.suppress(ServiceError):  # its mailbox is open: it reads the CANCEL as it starts
                await self.service.send_message(api.SendMessageRequest(
                    p.pid, control.CANCEL, {"deadline_ms": 0, "reason": reason}, sender=p.parent,
                    request_id=new_request_id()))

    # ------------------------------------------------------------ listing

    def listing(self) -> list[dict[str, Any]]:
        return [p.describe() for p in sorted(self.live.values(), key=lambda p: p.started_at)]
