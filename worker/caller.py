"""Non-durable Lua callers: a `function.lua` entry run by `legato run` with the `process` API live.

The caller runs in the same Lua kernel as workflows (worker/kernel.lua, workflow mode: its
scheduler, channels, `coroutine.spawn`, `channel.select`, `time.after`, spawners), but with a
*live* host: where a workflow's host records a command for history, this host does the operation
at once against a `WorkflowService` (asyncio) and feeds the outcome back into the kernel, the way
replay feeds recorded events:

* `process.spawn` / `spawn_monitored` / `exec` / `workflow.exec` -> `start_workflow` with
  `monitors = [own pid]`, so the close comes back to the caller's mailbox as an EXIT event
  (a caller's children, like a workflow's, are always reported to it: `spawn` and
  `spawn_monitored` both monitor);
* `process.send` -> `send_message` (a workflow pid gets a signal with `msg:from()` = the caller's
  pid, a caller pid a mailbox message); `monitor/unmonitor/link/unlink` -> `monitor_workflow`;
  `terminate` / `cancel(pid, deadline)` -> `terminate_workflow` / `request_cancel_workflow`;
* timers (`time.sleep`, `time.after`, `time.timer`) are real `loop.call_later` timers and
  `time.now()` is the wall clock;
* the caller's pid is `@` + a uuid; its mailbox (matching) is open while it runs and is
  long-polled by one task: messages go to `process.inbox()` / `process.listen(topic)`, EXIT and
  LINK_DOWN events to `process.events()`.

Nothing is recorded: a caller that dies is gone, and so are its mailbox and timers.

The same class runs the `process.lua` entries of a `process.host` (worker/processes): a caller
can spawn processes on a host (`worker.processes.control`: a spawn request to the host's
mailbox, the pid back in a reply), send to them, monitor, link, terminate and cancel them, and be
monitored or linked by them; it tells its watchers how it ended (`run`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

from lupa import lua54

from legato import DEFAULT_NAMESPACE, api
from legato.config import Limits
from legato.errors import (
    AlreadyStarted,
    FailedPrecondition,
    Failure,
    InvalidArgument,
    Kind,
    NotFound,
    ResourceExhausted,
    ServiceError,
    Unavailable,
)
from legato.ids import new_request_id
from worker import crypto_host
from worker.activity import ActivityRunner, CallContext
from worker.codec_ops import new_uuid
from worker.convert import (
    ConversionError,
    args_to_python,
    failure_from_lua,
    json_decode_to_lua,
    to_lua,
    to_python,
)
from worker.entries import ClientEntry, CodeEntry, Registry, WorkerEntry, WorkflowEntry
from worker.processes import control
from worker.processes.spawning import is_process_entry, is_process_host, process_without_host
from worker.runtime import (
    ActivityOptions,
    activity_context_from_lua,
    activity_options_from_lua,
    duration_ms,
    json_encode,
    load_kernel,
    new_lua,
    packed,
    pad6,
)
from worker.start_options import SpawnSpec, apply_spawner_call, start_request
from worker.threads import DaemonThreadPool

T = TypeVar("T")

# funcs.call / funcs.async of a caller: function entries running at once, each in a thread
CALLER_FUNCTION_THREADS = 16


def _apply_all(batch: list[Completion]) -> None:
    for apply in batch:
        apply()

log = logging.getLogger("legato.worker.caller")

MAILBOX_POLL_MS = 30_000
LAST_POLL_S = 10.0  # after its mailbox is closed, how long a caller's poller may take to finish

Completion = Callable[[], None]


def new_caller_pid() -> str:
    return api.CALLER_PID_PREFIX + uuid.uuid4().hex


def failure_of(e: BaseException) -> Failure:
    """A service error as the error Lua code sees (`err:kind()`)."""
    if isinstance(e, NotFound):
        return Failure(e.message, Kind.NOT_FOUND, False)
    if isinstance(e, AlreadyStarted):
        return Failure(e.message, Kind.ALREADY_EXISTS, False)
    if isinstance(e, InvalidArgument | FailedPrecondition):
        return Failure(e.message, Kind.INVALID, False)
    if isinstance(e, ResourceExhausted):
        return Failure(e.message, Kind.LIMIT_EXCEEDED, False)
    if isinstance(e, Unavailable):
        return Failure(e.message, Kind.UNAVAILABLE, True)
    if isinstance(e, ServiceError):
        return Failure(e.message, Kind.INTERNAL, False)
    return Failure(f"{type(e).__name__}: {e}", Kind.INTERNAL, False)


@dataclass(slots=True)
class CallerOutcome:
    value: Any = None
    failure: Failure | None = None


class Caller:
    """One run of a function entry as a non-durable caller. `run` once."""

    def __init__(self, service: api.WorkflowService, entry: CodeEntry, registry: Registry, limits: Limits, *,
                 namespace: str = DEFAULT_NAMESPACE, pid: str | None = None,
                 context: dict[str, Any] | None = None, watchdog_ms: int = 5_000) -> None:
        self.service = service
        self.watchdog_s = watchdog_ms / 1000
        self.entry = entry
        self.registry = registry
        self.limits = limits
        self.namespace = namespace
        self.pid = pid or new_caller_pid()
        self.context = dict(context or {})
        self._queue: asyncio.Queue[Completion] = asyncio.Queue()
        self._ops: list[Callable[[], Coroutine[Any, Any, None]]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._starting: dict[str, int] = {}  # workflow id -> seq of a child start in flight
        self._children: dict[str, tuple[int, str]] = {}  # workflow id -> (seq, run id)
        self._early: dict[str, api.ProcessMessage] = {}  # EXIT of a child whose start has not come back yet
        self._context_lua: Any = None
        self._forced: CallerOutcome | None = None  # terminated (by a pid, a cancel deadline, the host)
        self._watchers: dict[str, set[str]] = {}  # pid -> {"monitor", "link"}: told how this one ends
        self._watcher_ns: dict[str, str] = {}  # the namespace of a workflow watcher
        self._spawning: dict[str, int] = {}  # spawn request ref -> seq of a process spawn in flight
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lua_thread = DaemonThreadPool(1, thread_name_prefix="legato-caller")
        # funcs.call / funcs.async: function entries run here, in threads (as a worker runs activities)
        self._activities = ActivityRunner(registry, memory_bytes=limits.activity_lua_memory_bytes)
        self._activity_pool = DaemonThreadPool(CALLER_FUNCTION_THREADS, thread_name_prefix="legato-caller-fn")
        self._activity_ctx: dict[str, CallContext] = {}
        self.lua = new_lua(limits.lua_memory_bytes)
        host = {
            "schedule_activity": self._schedule_activity,
            "cancel_activity": self._cancel_activity,
            "activity_context": self._activity_context,
            "activity_options": self._activity_options,
            "start_timer": self._start_timer,
            "cancel_timer": self._cancel_timer,
            "start_child": self._start_child,
            "spawn_spec": self._spawn_spec,
            "signal_external": self._signal_external,
            "cancel_external": self._cancel_external,
            "terminate_external": self._terminate_external,
            "monitor_external": self._monitor_external,
            "version": self._version,
            "attrs": self._unsupported_pair("workflow.attrs"),
            "random_hex": lambda n, line=None: os.urandom(int(n)).hex(),
            **crypto_host.host_functions(self.lua),
            "uuid4": lambda: str(uuid.uuid4()),
            # not replayed: the real clock, whatever the kernel passes
            "uuid_new": lambda v, _now=None: new_uuid(v, time.time_ns() // 1_000_000, None),
            "info": self._info,
            "history_length": lambda: 0,
            "history_size": lambda: 0,
            "context": self._context,
            "duration_ms": duration_ms,
            "json_encode": json_encode,
            "json_decode": self._json_decode,
            "log": self._log,
            "workflow_id": self.pid,
            "caller": True,  # not a workflow: sends are direct and answer at once
        }
        self.k = load_kernel(self.lua, "workflow", host)
        self.k.new_run(self.pid)  # the only run of this Lua state
        ok, err = self.k.setup(entry.id, self.lua.table_from(list(entry.modules)), entry.method, entry.bytecode,
                               entry.chunk_name, limits.max_commands_per_task, limits.lua_instructions_per_task)
        if not ok:
            raise ValueError(f"{entry.id}: {err}")

    # ------------------------------------------------------------ driving

    async def run(self, args: list[Any]) -> CallerOutcome:
        """Run the entry's function with `args` until it returns; its value or its error. Its
        monitors then get an EXIT with it, its links an EXIT (normal end) or a LINK_DOWN."""
        outcome = await self._run(args)
        await self._tell_watchers(outcome)
        return outcome

    def terminate(self, reason: str) -> None:
        """End the run at its next step (from the event loop), as process.terminate does."""
        self._forced = CallerOutcome(failure=Failure(reason, Kind.TERMINATED, False))
        if self._loop is not None:
            self._complete(lambda: None)  # wake the run loop

    async def _run(self, args: list[Any]) -> CallerOutcome:
        self._loop = asyncio.get_running_loop()
        await self.service.open_mailbox(self.pid)
        poller = asyncio.create_task(self._poll_mailbox())
        try:
            self.k.start(packed(self.lua, args))
            while True:
                if self._forced is not None:
                    return self._forced
                try:
                    outcome = await self._in_lua(self._step)
                except TimeoutError:
                    what = "process" if is_process_entry(self.entry) else "caller"
                    return CallerOutcome(failure=Failure(
                        f"the {what}'s Lua code ran longer than worker.lua_watchdog_ms ({int(self.watchdog_s * 1000)} "
                        "ms) without returning (stuck where the instruction limit cannot stop it); it was abandoned",
                        Kind.LIMIT_EXCEEDED, False))
                self._launch()
                if outcome is not None:
                    return outcome
                batch = [await self._queue.get()]
                while not self._queue.empty():
                    batch.append(self._queue.get_nowait())
                if self._forced is not None:
                    return self._forced
                await self._in_lua(functools.partial(_apply_all, batch))
        finally:
            self._lua_thread.shutdown(wait=False)
            self._activities.stopping.set()  # functions still running stop at their next hook
            self._activity_pool.shutdown(wait=False, cancel_futures=True)
            for t in list(self._tasks):
                t.cancel()
            for h in self._timers.values():
                h.cancel()
            self._timers.clear()
            # Close first (later messages are refused: NotFound for their senders), then let the
            # poller take what was accepted before (its last polls end with NotFound): a monitor
            # or link that reached the mailbox is answered with how this run ended, never lost.
            try:
                await self.service.close_mailbox(self.pid)
            except ServiceError as e:  # the engine is stopping: the mailbox goes with it
                log.debug("closing the mailbox of %s: %s", self.pid, e)
            try:
                await asyncio.wait_for(poller, LAST_POLL_S)
            except Exception as e:  # a poller that cannot finish is abandoned
                log.debug("last poll of %s: %s", self.pid, e)
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _in_lua(self, fn: Callable[[], T]) -> T:
        """Run Lua in a thread of its own (a caller is one program, not a hot path): the event
        loop stays free, so `legato run --timeout` and Ctrl-C work whatever the code does, and
        code stuck past the watchdog is abandoned (the thread is a daemon: it cannot keep the
        process alive)."""
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(self.watchdog_s):
            return await loop.run_in_executor(self._lua_thread, fn)

    def _step(self) -> CallerOutcome | None:
        """Run ready coroutines until all block: None, or how the function ended."""
        self.k.begin(int(time.time() * 1000), False)
        try:
            status, a, b, c, d, e = pad6(self.k.run(self.limits.lua_instructions_per_task))
        except lua54.LuaMemoryError:
            what = "process" if is_process_entry(self.entry) else "caller"
            return CallerOutcome(failure=Failure(f"the {what} ran out of Lua memory (limits.lua_memory_bytes)",
                                                 Kind.LIMIT_EXCEEDED, False))
        if status == "blocked":
            return None
        if status == "done":
            try:
                if b is not None:
                    return CallerOutcome(failure=failure_from_lua(b))
                return CallerOutcome(to_python(a))
            except ConversionError as err:
                return CallerOutcome(failure=Failure(f"the result cannot be returned: {err}", Kind.INVALID, False))
        if status == "continue":
            return CallerOutcome(failure=Failure("process.upgrade: only a workflow can continue as new",
                                                 Kind.INVALID, False, source=c or None))
        if status == "fatal":
            kind = {"FORBIDDEN_CALL": Kind.FORBIDDEN, "LIMIT_EXCEEDED": Kind.LIMIT_EXCEEDED}.get(str(a), Kind.INTERNAL)
            return CallerOutcome(failure=Failure(str(b), kind, False, source=c or None))
        try:
            details = to_python(d)
        except ConversionError:
            details = None
        return CallerOutcome(failure=Failure(str(a), Kind.INTERNAL if b is None else str(b),
                                             bool(c) if c is not None else False, details, e or None))

    def _launch(self) -> None:
        ops, self._ops = self._ops, []
        for op in ops:
            task = asyncio.create_task(op())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _complete(self, fn: Completion) -> None:
        # called from the Lua thread (host callbacks) as well as from the loop
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._queue.put_nowait, fn)

    async def _poll_mailbox(self) -> None:
        while True:
            try:
                msgs = await self.service.poll_mailbox(api.PollMailboxRequest(self.pid, MAILBOX_POLL_MS))
            except (NotFound, Unavailable) as e:  # the mailbox or the engine is gone
                log.debug("mailbox of %s: %s", self.pid, e)
                return
            for m in msgs:
                d = control.decode(m)
                if isinstance(d, control.Control):
                    self._on_control(d)
                else:
                    self._complete(lambda m=d: self._deliver(m))  # type: ignore[misc]

    # ------------------------------------------------------------ mailbox messages into the kernel

    def _failure_args(self, f: Failure | None) -> tuple[Any, Any, Any, Any]:
        if f is None:
            return None, None, None, None
        return f.message, f.kind, f.retryable, to_lua(self.lua, f.details)

    def _deliver(self, m: api.ProcessMessage) -> None:
        if m.kind == "message":
            self.k.signal(m.topic, to_lua(self.lua, m.payload), m.sender or None)
            return
        ev = m.event or {}
        kind, pid = ev.get("kind"), str(ev.get("from", ""))
        result = ev.get("result") or {}
        err = result.get("error")
        failure = Failure.from_dict(err) if isinstance(err, dict) else None
        value = to_lua(self.lua, result.get("value"))
        if kind == "EXIT" and pid in self._children and ev.get("link") is not True:
            seq, run_id = self._children.pop(pid)
            self.k.child_closed(seq, pid, run_id, value, *self._failure_args(failure))
        elif kind == "EXIT" and pid in self._starting:
            self._early[pid] = m
        elif kind in ("EXIT", "LINK_DOWN"):
            self.k.monitored_closed(pid, str(ev.get("run_id", "")), kind == "LINK_DOWN" or ev.get("link") is True,
                                    value, *self._failure_args(failure))
        else:
            log.warning("caller %s: unknown mailbox event %r", self.pid, ev)

    # ------------------------------------------------------------ host callbacks (called from Lua)

    def _op(self, call: Callable[[], Awaitable[Any]], seq: int) -> None:
        """A process operation: its outcome (success, or the service error) goes to K.op_done(seq)."""
        async def run() -> None:
            try:
                await call()
            except (ServiceError, AttributeError) as e:
                f = failure_of(e)
                self._complete(lambda: self.k.op_done(seq, *self._failure_args(f)))
            else:
                self._complete(lambda: self.k.op_done(seq, None, None, None, None))
        self._ops.append(run)

    def _op_failed(self, seq: int, f: Failure) -> None:
        self._complete(lambda: self.k.op_done(seq, *self._failure_args(f)))

    def _start_timer(self, tid: str, ms: Any, line: Any = None) -> None:
        assert self._loop is not None  # called from the Lua thread: the timer is set on the loop
        self._loop.call_soon_threadsafe(self._arm_timer, tid, max(0.0, float(ms)) / 1000.0)

    def _arm_timer(self, tid: str, delay_s: float) -> None:
        assert self._loop is not None
        self._timers[tid] = self._loop.call_later(delay_s, self._fire, tid)

    def _fire(self, tid: str) -> None:
        if self._timers.pop(tid, None) is not None:
            self._complete(lambda: self.k.fire_timer(tid))

    def _cancel_timer(self, tid: str, line: Any = None) -> None:
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._disarm_timer, tid)

    def _disarm_timer(self, tid: str) -> None:
        h = self._timers.pop(tid, None)
        if h is not None:
            h.cancel()

    def _target(self, workflow_type: str, host: Any, spec: SpawnSpec | None) -> tuple[str, str] | str:
        """(task queue, namespace) for a start, or a message saying why there is none."""
        queue = spec.options.task_queue if spec is not None else None
        namespace = self.namespace
        worker_id = host
        if worker_id is None:
            wf = self.registry.find(workflow_type) or self.registry.workflow_for_type(workflow_type)
            worker_id = wf.worker if isinstance(wf, WorkflowEntry) else None
        if worker_id is not None:
            w = self.registry.find(worker_id)
            if isinstance(w, WorkerEntry):
                c = self.registry.find(w.client) if w.client else None
                if isinstance(c, ClientEntry) and c.client_namespace:
                    namespace = c.client_namespace
                queue = queue or w.task_queue
            elif host is not None and queue is None:
                if w is not None:
                    return (f"host {host!r} is a {w.kind} entry, not a temporal.worker (the host names the "
                            "temporal.worker whose task queue runs the workflow, or is a task queue name)")
                queue = host  # as Wippy: a host that names no temporal.worker is the task queue itself
        if queue is None:
            return (f"no task queue for {workflow_type!r}: name a temporal.worker host, bind the workflow entry to "
                    "one, or set temporal.workflow.task_queue")
        return queue, namespace

    def _start_child(self, seq: int, workflow_id_or_entry: str, host: Any, packed: Any, spec: Any,
                     line: Any = None, monitored: bool = True, linked: bool = False) -> Any:
        if spec is not None and not isinstance(spec, SpawnSpec):
            return "internal: bad spawner"
        if is_process_host(self.registry, host):
            return self._spawn_process(seq, workflow_id_or_entry, str(host), packed, monitored, linked)
        refusal = process_without_host(self.registry, workflow_id_or_entry, host)
        if refusal is not None:
            return refusal
        if linked:
            return ("spawn_linked of a workflow is not supported yet: spawn it, then process.link(pid) "
                    "(linked spawns are for processes on a process.host)")
        target = self._target(workflow_id_or_entry, host, spec)
        if isinstance(target, str):
            return target
        queue, namespace = target
        try:
            args = args_to_python(packed)
        except ConversionError as err:
            return f"an argument cannot be sent: {err}"
        wf = self.registry.find(workflow_id_or_entry)
        workflow_type = wf.workflow_type if isinstance(wf, WorkflowEntry) else workflow_id_or_entry
        req = start_request(spec or SpawnSpec(), workflow_type, queue, args, namespace=namespace,
                            default_workflow_id=f"{self.pid[1:]}-{seq}", base_context=self.context,
                            request_id=new_request_id(), identity=self.pid)
        # Only spawn_monitored and exec ask for the EXIT; a plain spawn starts and forgets, unless
        # process.cancel must wait for the close (wait_for_cancellation), which the EXIT tells.
        req.monitors = [self.pid] if monitored or req.wait_for_cancellation else []
        wid = req.workflow_id
        self._starting[wid] = seq

        async def run() -> None:
            try:
                resp = await self.service.start_workflow(req)
            except ServiceError as e:
                f = failure_of(e)

                def failed() -> None:
                    self._starting.pop(wid, None)
                    self.k.child_start_failed(seq, *self._failure_args(f))
                self._complete(failed)
                return

            def started() -> None:
                self._starting.pop(wid, None)
                self._children[wid] = (seq, resp.run_id)
                self.k.child_started(seq, wid, resp.run_id)
                early = self._early.pop(wid, None)
                if early is not None:
                    self._deliver(early)
            self._complete(started)
        self._ops.append(run)
        return None, bool(req.wait_for_cancellation)  # see process.cancel in worker/kernel/process.lua

    def _spawn_spec(self, op: str, base: Any, a: Any, b: Any) -> tuple[Any, Any]:
        return apply_spawner_call(op, base, a, b)

    def _ref(self, pid: str) -> api.ExecutionRef:
        return api.ExecutionRef(pid, "", self.namespace)

    def _signal_external(self, seq: int, pid: str, topic: str, payload: Any, line: Any = None) -> None:
        if control.is_control(topic):
            self._op_failed(seq, Failure(f"process.send({pid}, {topic}): topics starting with "
                                         f"{control.CONTROL_PREFIX!r} are Legato's own", Kind.INVALID, False))
            return
        try:
            data = to_python(payload)
        except ConversionError as err:
            self._op_failed(seq, Failure(f"process.send({pid}, {topic}): the payload cannot be sent: {err}",
                                         Kind.INVALID, False))
            return
        req = api.SendMessageRequest(pid, topic, data, sender=self.pid, namespace=self.namespace,
                                     request_id=new_request_id())
        self._op(lambda: self.service.send_message(req), seq)

    def _cancel_external(self, seq: int, pid: str, deadline_ms: Any, line: Any = None) -> None:
        if pid.startswith(api.CALLER_PID_PREFIX):
            self._send_control(seq, pid, control.CANCEL, {"deadline_ms": int(deadline_ms or 0)})
            return
        req = api.CancelWorkflowRequest(self._ref(pid), f"canceled by {self.pid}", self.pid, new_request_id(),
                                        int(deadline_ms or 0))
        self._op(lambda: self.service.request_cancel_workflow(req), seq)

    def _terminate_external(self, seq: int, pid: str, reason: Any, line: Any = None) -> None:
        if pid.startswith(api.CALLER_PID_PREFIX):
            self._send_control(seq, pid, control.TERMINATE, {"reason": reason or f"terminated by {self.pid}"})
            return
        req = api.TerminateWorkflowRequest(self._ref(pid), reason or f"terminated by {self.pid}", self.pid,
                                           new_request_id())
        self._op(lambda: self.service.terminate_workflow(req), seq)

    def _monitor_external(self, seq: int, pid: str, link: Any, remove: Any, line: Any = None) -> None:
        if pid.startswith(api.CALLER_PID_PREFIX):
            if link:  # both ways: this end knows it too (K: R.links), and hears of the other's end
                self._watch(pid, "link", not remove)
            self._send_control(seq, pid, control.WATCH, {"link": bool(link), "remove": bool(remove)})
            return
        req = api.MonitorWorkflowRequest(self._ref(pid), self.pid, bool(link), bool(remove))
        self._op(lambda: self.service.monitor_workflow(req), seq)

    # ---- processes: spawns on a process.host, and control messages (worker/processes/control.py)

    def _send_control(self, seq: int | None, pid: str, topic: str, data: dict[str, Any]) -> None:
        req = api.SendMessageRequest(pid, topic, data, sender=self.pid, namespace=self.namespace,
                                     request_id=new_request_id())
        if seq is not None:
            self._op(lambda: self.service.send_message(req), seq)
            return

        async def run() -> None:
            with contextlib.suppress(ServiceError):  # the other end is gone: nothing to tell
                await self.service.send_message(req)
        self._ops.append(run)

    def _spawn_process(self, seq: int, entry_id: str, host: str, packed: Any, monitored: bool, linked: bool) -> Any:
        from worker.processes.kinds import ProcessEntry
        if not isinstance(self.registry.find(entry_id), ProcessEntry):
            found = self.registry.find(entry_id)
            why = "is not in the registry" if found is None else f"is a {found.kind} entry"
            return f"{entry_id!r} {why}: a process.host runs process.lua entries"
        try:
            args = args_to_python(packed)
        except ConversionError as err:
            return f"an argument cannot be sent: {err}"
        ref = f"{self.pid}/{seq}"
        self._spawning[ref] = seq
        data = {"ref": ref, "entry": entry_id, "args": args, "reply_to": self.pid, "monitor": monitored,
                "link": linked, "context": self.context}
        req = api.SendMessageRequest(control.host_pid(host), control.SPAWN, data, sender=self.pid,
                                     namespace=self.namespace, request_id=new_request_id())

        async def run() -> None:
            try:
                await self.service.send_message(req)
            except ServiceError as e:
                f = failure_of(e)
                if isinstance(e, NotFound):
                    f = Failure(f"no worker serves process.host {host} (its spawn mailbox is not open: start "
                                "`legato worker` with a registry that has it)", Kind.NOT_FOUND, False)
                self._complete(lambda: self._spawn_failed(ref, f))
        self._ops.append(run)
        return None, False

    def _spawn_failed(self, ref: str, f: Failure) -> None:
        seq = self._spawning.pop(ref, None)
        if seq is not None:
            self.k.child_start_failed(seq, *self._failure_args(f))

    def _spawned(self, data: dict[str, Any]) -> None:
        ref = str(data.get("ref", ""))
        err = data.get("error")
        if isinstance(err, dict):
            self._spawn_failed(ref, Failure.from_dict(err))
            return
        seq = self._spawning.pop(ref, None)
        pid = str(data.get("pid", ""))
        if seq is None or not pid:
            return
        if data.get("link"):
            self._watch(pid, "link", True)
        if data.get("monitor"):
            self._children[pid] = (seq, "")
        self.k.child_started(seq, pid, "")

    def _watch(self, pid: str, how: str, on: bool, namespace: str = "") -> None:
        if namespace:
            self._watcher_ns[pid] = namespace
        ways = self._watchers.setdefault(pid, set())
        if on:
            ways.add(how)
        else:
            ways.discard(how)
            if not ways:
                del self._watchers[pid]

    def _on_control(self, c: control.Control) -> None:
        """A control message from the mailbox (called on the event loop)."""
        if c.topic == control.SPAWNED:
            self._complete(lambda: self._spawned(c.data))
        elif c.topic == control.WATCH:
            link, on = bool(c.data.get("link")), not c.data.get("remove")
            self._watch(c.sender, "link" if link else "monitor", on, str(c.data.get("namespace") or ""))
            if link:
                self._complete(lambda: self.k.linked_by(c.sender, on))
        elif c.topic == control.TERMINATE:
            self.terminate(str(c.data.get("reason") or f"terminated by {c.sender}"))
        elif c.topic == control.CANCEL:
            reason = str(c.data.get("reason") or f"canceled by {c.sender}")  # e.g. a parent close policy
            self._complete(lambda: self.k.cancel_requested(reason))
            deadline = int(c.data.get("deadline_ms") or 0)
            if deadline > 0 and self._loop is not None:
                self._loop.call_later(deadline / 1000, self.terminate,
                                      f"canceled by {c.sender} and still running after its deadline ({deadline} ms)")
        else:
            log.warning("%s: unknown control message %s from %s", self.pid, c.topic, c.sender)

    async def _tell_watchers(self, outcome: CallerOutcome) -> None:
        """Monitors get an EXIT with the outcome; links an EXIT (normal end) or LINK_DOWN."""
        sends = []
        for pid, ways in list(self._watchers.items()):
            for how in sorted(ways):
                data = control.exit_payload(how == "link", outcome.value, outcome.failure)
                # a workflow watcher gets it as a signal its worker turns into the close (replay.py)
                sends.append(self.service.send_message(api.SendMessageRequest(
                    pid, control.EXIT, data, sender=self.pid, namespace=self._watcher_ns.get(pid, self.namespace),
                    request_id=new_request_id())))
        self._watchers.clear()
        for r in await asyncio.gather(*sends, return_exceptions=True):
            if isinstance(r, BaseException):
                log.debug("%s: telling a watcher how it ended: %s", self.pid, r)

    # ---- funcs: function entries run directly, in this process, once (nothing is durable here)

    def _schedule_activity(self, aid: str, activity_type: str, packed: Any, opts: Any, line: Any = None) -> None:
        try:
            args = args_to_python(packed)
        except ConversionError as err:
            failure = Failure(f"funcs.call({activity_type}): an argument cannot be sent: {err}", Kind.INVALID, False)
            self._complete(lambda: self._fail_activity(aid, failure))
            return
        o = opts if isinstance(opts, ActivityOptions) else None
        timeout_ms = (o.timeouts.get("start_to_close_timeout_ms", 0) if o else 0) or 0
        started = time.monotonic()
        ctx = CallContext(activity_id=aid, activity_type=activity_type, workflow_id=self.pid,
                          context={**self.context, **(o.context if o else {})},
                          deadline=started + timeout_ms / 1000 if timeout_ms else None,
                          start_to_close_timeout_ms=timeout_ms, started=started)
        self._activity_ctx[aid] = ctx

        async def run() -> None:
            loop = asyncio.get_running_loop()
            try:
                out = await loop.run_in_executor(self._activity_pool, self._activities.call, activity_type, args, ctx)
            finally:
                self._activity_ctx.pop(aid, None)
            if out.ok:
                result = out.result
                self._complete(lambda: self.k.resolve_activity(aid, to_lua(self.lua, result)))
            else:
                f = out.failure or Failure("the function failed", Kind.INTERNAL, False)
                self._complete(lambda: self._fail_activity(aid, f))
        self._ops.append(run)

    def _fail_activity(self, aid: str, f: Failure) -> None:
        self.k.fail_activity(aid, f.message, f.kind, f.retryable, to_lua(self.lua, f.details))

    def _cancel_activity(self, aid: str, line: Any = None) -> bool:
        """future:cancel(): the function is told (activity.heartbeat raises CANCELED); its future
        resolves when it returns."""
        ctx = self._activity_ctx.get(aid)
        if ctx is not None:
            ctx.beat.cancel_requested = True
        return False

    @staticmethod
    def _activity_options(table: Any, base: Any) -> tuple[Any, Any]:
        return activity_options_from_lua(table, base)

    @staticmethod
    def _activity_context(table: Any, base: Any) -> tuple[Any, Any]:
        return activity_context_from_lua(table, base)

    @staticmethod
    def _unsupported_pair(what: str) -> Callable[..., tuple[Any, Any]]:
        def refuse(*_: Any) -> tuple[Any, Any]:
            return None, f"{what}: only available in workflows, not in a caller"
        return refuse

    @staticmethod
    def _version(change_id: str, lo: int, hi: int, line: Any = None) -> tuple[Any, bool, Any]:
        return hi, False, None  # nothing is recorded: a caller always runs the newest code

    def _info(self) -> Any:
        return self.lua.table_from({"workflow_id": self.pid, "run_id": "", "workflow_type": self.entry.id,
                                    "task_queue": "", "namespace": self.namespace, "attempt": 1,
                                    "history_length": 0, "history_size": 0})

    def _context(self) -> Any:
        if self._context_lua is None:
            self._context_lua = to_lua(self.lua, dict(self.context))
        return self._context_lua

    def _json_decode(self, text: str) -> tuple[Any, Any]:
        return json_decode_to_lua(self.lua, text)

    def _log(self, message: str) -> None:
        # stdout is for the result (`legato run` prints it as JSON): print() goes to stderr
        sys.stderr.write(message + "\n")
        sys.stderr.flush()


__all__ = ["Caller", "CallerOutcome", "failure_of", "new_caller_pid"]
