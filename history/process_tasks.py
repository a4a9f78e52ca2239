"""The transfer tasks of docs/processes.md: the cross-workflow half of each process command.

Each task calls the other workflow through `legato.api.HistoryService` (the service itself in
one process; in the distributed mode, a client that reaches the target's shard owner), or a
caller's mailbox through `MatchingService.deliver_message`, and then records the outcome in the
initiator (a local update of the run the task belongs to). A task may run more than once (a
crash, a retry after an error): every call it makes is idempotent, keyed by the initiator's run
id and initiated event id, and its outcome is recorded only while the request is still pending.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from history.engine import Engine
from history.processes import (
    ABNORMAL,
    child_request,
    closed_from_dict,
    is_caller,
    not_found,
)
from history.shard import CacheEntry
from history.spawned_processes import is_spawn
from history.state import (
    INITIATED,
    T_CANCEL_EXTERNAL,
    T_CLOSE_NOTIFY,
    T_MONITOR_EXTERNAL,
    T_PARENT_CLOSE_POLICY,
    T_SIGNAL_EXTERNAL,
    T_START_CHILD,
    T_TERMINATE_EXTERNAL,
    Mutation,
)
from legato import api
from legato.api import (
    CancelWorkflowRequest,
    DeliverMonitoredClosedRequest,
    ExecutionClosed,
    ExecutionRef,
    MonitorRegistration,
    ParentClosePolicy,
    ParentInfo,
    ProcessMessage,
    RecordChildClosedRequest,
    RegisterMonitorRequest,
    RegisterMonitorResponse,
    SignalWorkflowRequest,
    TerminateWorkflowRequest,
)
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
from legato.process_control import CANCEL, TERMINATE, WATCH

log = logging.getLogger("legato.history")

_T = TypeVar("_T")
UpdateFn = Callable[[str, str, str, Callable[[Mutation, CacheEntry], Any]], Awaitable[tuple[Any, CacheEntry]]]
MAX_CONCURRENT_CALLS = 32  # per task: a close told to many monitors


def _failure(e: ServiceError) -> dict[str, Any]:
    """A refused call as the outcome's failure (non-retryable: the workflow decides)."""
    if isinstance(e, AlreadyStarted):
        kind = Kind.ALREADY_EXISTS
    elif isinstance(e, NotFound):
        kind = Kind.NOT_FOUND
    elif isinstance(e, ResourceExhausted):
        kind = Kind.LIMIT_EXCEEDED
    else:
        kind = Kind.INVALID
    return Failure(e.message, kind=kind, retryable=False).to_dict()


def exit_message(closed: ExecutionClosed, link: bool) -> ProcessMessage:
    """What a caller's mailbox gets when a workflow it monitors (or is linked to) closes: EXIT,
    or LINK_DOWN for a link whose other side ended abnormally (Wippy's rule)."""
    down = link and closed.status in ABNORMAL
    return ProcessMessage("event", event={
        "kind": "LINK_DOWN" if down else "EXIT", "from": closed.workflow_id, "link": link,
        "result": {"value": closed.result, "error": closed.failure.to_dict() if closed.failure is not None else None}})


class ProcessTasks:
    """Carries out the process transfer tasks of the shards of one history node."""

    def __init__(self, engine: Engine, update: UpdateFn, matching: Callable[[], Awaitable[api.MatchingService]],
                 peer: api.HistoryService) -> None:
        self.engine = engine
        self._update = update
        self._matching = matching
        self.peer = peer
        self._handlers: dict[str, Callable[[dict[str, Any]], Awaitable[None]]] = {
            T_START_CHILD: self._start_child, T_SIGNAL_EXTERNAL: self._signal, T_CANCEL_EXTERNAL: self._cancel,
            T_TERMINATE_EXTERNAL: self._terminate, T_MONITOR_EXTERNAL: self._monitor,
            T_CLOSE_NOTIFY: self._close_notify, T_PARENT_CLOSE_POLICY: self._parent_close_policy,
        }

    async def run(self, d: dict[str, Any]) -> None:
        await self._handlers[d["k"]](d)

    # ------------------------------------------------------------------ helpers

    async def _local(self, d: dict[str, Any], fn: Callable[[Mutation], _T]) -> _T | None:
        """Apply `fn` to the initiator run (the task's own run); None if the run is gone."""
        try:
            result, _ = await self._update(d["ns"], d["wf"], d["run"], lambda m, e: fn(m))
        except NotFound:
            return None
        return result

    async def _request_pending(self, d: dict[str, Any]) -> bool:
        init = d["init"]
        return bool(await self._local(d, lambda m: init in m.state.requests))

    async def _spawn_after_close(self, d: dict[str, Any]) -> bool:
        """A spawn of a process whose run has closed, and whose parent_close_policy would end the
        process at once: not carried out (as a child workflow is not started then)."""
        a = d["attrs"]
        if not is_spawn(a) or a["input"].get("parent_close_policy") == ParentClosePolicy.ABANDON.value:
            return False
        return not await self._local(d, lambda m: m.state.running)

    async def _record(self, d: dict[str, Any], run_id: str = "", failure: dict[str, Any] | None = None,
                      monitored: RegisterMonitorResponse | None = None) -> None:
        init = d["init"]
        await self._local(d, lambda m: self.engine.proc.request_done(m, init, run_id, failure, monitored))

    # ------------------------------------------------------------------ children

    async def _start_child(self, d: dict[str, Any]) -> None:
        init, a = d["init"], d["attrs"]
        policy = a["options"]["parent_close_policy"]

        def look(m: Mutation) -> tuple[bool, bool, dict[str, Any]]:
            c = m.state.children.get(init)
            return c is not None and c.state == INITIATED, m.state.running, dict(m.state.context)

        found = await self._local(d, look)
        if found is None:
            return
        pending, running, context = found
        if not pending or (not running and policy != ParentClosePolicy.ABANDON.value):
            return  # recorded already, or the parent closed first and the child would be ended at once
        req = child_request(a, ParentInfo(d["ns"], d["wf"], d["run"], init), context, d["wf"])
        try:
            resp = await self.peer.start_workflow(req)
        except (AlreadyStarted, InvalidArgument, NotFound, FailedPrecondition, ResourceExhausted) as e:
            failure = _failure(e)
            await self._local(d, lambda m: self.engine.proc.child_start_failed(m, init, failure))
            return
        apply_now = await self._local(d, lambda m: self.engine.proc.child_started(m, init, resp.run_id,
                                                                                   resp.existing))
        if apply_now:  # the parent closed while its child was starting
            await self._apply_policy(d, {"ns": req.namespace, "wf": req.workflow_id, "run": resp.run_id,
                                         "init": init, "policy": apply_now}, "closed")

    async def _parent_close_policy(self, d: dict[str, Any]) -> None:
        status = d.get("status", "closed")
        await _all([*(self._apply_policy(d, c, status) for c in d["children"]),
                    *(self._apply_process_policy(d, p, status) for p in d.get("processes") or [])])

    async def _apply_process_policy(self, d: dict[str, Any], p: dict[str, str], status: str) -> None:
        """A process the closed run spawned (history/spawned_processes.py): terminate it, or ask it
        to cancel (a CANCEL event on its process.events(); it decides when to end)."""
        reason = f"parent workflow {d['wf']} closed ({status}); parent_close_policy {p['policy']}"
        data: dict[str, Any]
        if p["policy"] == ParentClosePolicy.TERMINATE.value:
            topic, data = TERMINATE, {"reason": reason}
        else:
            topic, data = CANCEL, {"deadline_ms": 0, "reason": reason}
        matching = await self._matching()
        # not delivered: it ended already, or its host has not started it yet (the host then
        # finds the run closed when it reports the spawn, and applies the policy itself)
        await matching.deliver_message(p["pid"], ProcessMessage("message", topic=topic, payload=data, sender=d["wf"]))

    async def _apply_policy(self, d: dict[str, Any], c: dict[str, Any], status: str) -> None:
        ref = ExecutionRef(c["wf"], c["run"], c["ns"])
        reason = f"parent workflow {d['wf']} closed ({status}); parent_close_policy {c['policy']}"
        request_id = f"parent-close:{d['run']}:{c['init']}"
        try:
            if c["policy"] == ParentClosePolicy.TERMINATE.value:
                await self.peer.terminate_workflow(TerminateWorkflowRequest(ref, reason, d["wf"], request_id))
            elif c["policy"] == ParentClosePolicy.REQUEST_CANCEL.value:
                await self.peer.request_cancel_workflow(CancelWorkflowRequest(ref, reason, d["wf"], request_id))
        except NotFound:
            pass  # the child closed already

    # ------------------------------------------------------------------ signal / cancel / terminate

    async def _signal(self, d: dict[str, Any]) -> None:
        a = d["attrs"]
        if not await self._request_pending(d) or await self._spawn_after_close(d):
            return
        target, sender = a["workflow_id"], a["sender"] or d["wf"]
        failure = None
        if is_caller(target):
            matching = await self._matching()
            delivered = await matching.deliver_message(target, ProcessMessage(
                "message", topic=a["signal_name"], payload=a["input"], sender=sender))
            if not delivered:
                failure = not_found(f"cannot send {a['signal_name']!r} to {target}: no such process (the caller is "
                                    "gone)")
        else:
            try:
                await self.peer.signal_workflow(SignalWorkflowRequest(
                    ExecutionRef(target, a["run_id"], a["namespace"]), a["signal_name"], a["input"], sender=sender,
                    identity=d["wf"], request_id=f"signal:{d['run']}:{d['init']}"))
            except (NotFound, InvalidArgument, ResourceExhausted, FailedPrecondition) as e:
                failure = _failure(e)
        await self._record(d, a["run_id"] if failure is None and not is_caller(target) else "", failure)

    async def _cancel(self, d: dict[str, Any]) -> None:
        a = d["attrs"]
        await self._control(d, "cancel", self.peer.request_cancel_workflow(CancelWorkflowRequest(
            ExecutionRef(a["workflow_id"], "", a["namespace"]), a["reason"], identity=d["wf"],
            request_id=f"cancel:{d['run']}:{d['init']}", deadline_ms=a["deadline_ms"])))

    async def _terminate(self, d: dict[str, Any]) -> None:
        a = d["attrs"]
        await self._control(d, "terminate", self.peer.terminate_workflow(TerminateWorkflowRequest(
            ExecutionRef(a["workflow_id"], "", a["namespace"]), a["reason"] or f"terminated by workflow {d['wf']}",
            identity=d["wf"], request_id=f"terminate:{d['run']}:{d['init']}")))

    async def _control(self, d: dict[str, Any], verb: str, call: Coroutine[Any, Any, None]) -> None:
        """Cancel or terminate another workflow (`call`), then record the outcome in the initiator."""
        target = d["attrs"]["workflow_id"]
        failure = None
        if not await self._request_pending(d):
            call.close()
            return
        if is_caller(target):
            # a process or caller (non-durable): a control message to its mailbox (docs/processes.md)
            call.close()
            a = d["attrs"]
            if verb == "terminate":
                topic, data = TERMINATE, {"reason": a.get("reason") or f"terminated by workflow {d['wf']}"}
            else:
                topic, data = CANCEL, {"deadline_ms": int(a.get("deadline_ms") or 0)}
            failure = await self._to_process(target, topic, data, d, verb)
        else:
            try:
                await call
            except (NotFound, InvalidArgument, FailedPrecondition) as e:
                failure = _failure(e)
        await self._record(d, "", failure)

    # ------------------------------------------------------------------ monitors and links

    async def _monitor(self, d: dict[str, Any]) -> None:
        a = d["attrs"]
        if not await self._request_pending(d):
            return
        target = a["workflow_id"]
        if is_caller(target):
            # a process or caller: it registers the workflow as its watcher and, when it ends, sends
            # the EXIT as a signal the worker turns into the monitored close (worker/replay.py)
            what = "link to" if a["link"] else "monitor"
            failure = await self._to_process(target, WATCH, {"link": bool(a["link"]), "remove": bool(a["remove"]),
                                                              "namespace": d["ns"]}, d, what)
            await self._record(d, "", failure)
            return
        try:
            resp = await self.peer.register_monitor(RegisterMonitorRequest(
                ExecutionRef(target, "", a["namespace"]),
                MonitorRegistration(d["ns"], d["wf"], d["run"], d["init"], link=a["link"]), remove=a["remove"]))
        except (NotFound, InvalidArgument, ResourceExhausted, FailedPrecondition) as e:
            await self._record(d, "", _failure(e))
            return
        await self._record(d, resp.run_id, monitored=resp)

    async def _close_notify(self, d: dict[str, Any]) -> None:
        closed = closed_from_dict(d["closed"])
        calls: list[Coroutine[Any, Any, None]] = []
        if d.get("parent"):
            calls.append(self.peer.record_child_closed(RecordChildClosedRequest(ParentInfo.from_dict(d["parent"]),
                                                                                closed)))
        for r in d["monitors"]:
            if is_caller(r["pid"]):
                calls.append(self._tell_caller(r["pid"], closed, r["link"]))
            elif r["child"]:
                calls.append(self.peer.record_child_closed(RecordChildClosedRequest(
                    ParentInfo(r["ns"], r["pid"], r["run"], r["init"]), closed, existing=True)))
            else:
                calls.append(self._tell_workflow(d, r, closed))
        await _all(calls)

    async def _to_process(self, pid: str, topic: str, data: dict[str, Any], d: dict[str, Any],
                          verb: str) -> dict[str, Any] | None:
        """A control message from the workflow to process `pid`: None, or the failure to record."""
        matching = await self._matching()
        try:
            delivered = await matching.deliver_message(pid, ProcessMessage("message", topic=topic, payload=data,
                                                                            sender=d["wf"]))
        except ResourceExhausted as e:
            return _failure(e)
        if delivered:
            return None
        return not_found(f"cannot {verb} {pid}: no such process (it ended, or never ran)")

    async def _tell_caller(self, pid: str, closed: ExecutionClosed, link: bool) -> None:
        matching = await self._matching()
        await matching.deliver_message(pid, exit_message(closed, link))  # False: the caller is gone

    async def _tell_workflow(self, d: dict[str, Any], r: dict[str, Any], closed: ExecutionClosed) -> None:
        link = bool(r["link"])
        if r["own"] and link and closed.status in ABNORMAL:
            # A link this run made: the other side hears of it through the registration task;
            # this run's death follows it, never overtakes it.
            init = r["init"]
            if await self._local(d, lambda m: init in m.state.requests):
                raise Unavailable(f"link of {d['wf']} to {r['pid']}: its registration is still on its way; the "
                                  "close is delivered after it", reason="LinkPending")
        await self.peer.deliver_monitored_closed(DeliverMonitoredClosedRequest(
            ExecutionRef(r["pid"], "" if r["own"] else r["run"], r["ns"]), closed, link=link))


async def _all(calls: list[Coroutine[Any, Any, None]]) -> None:
    """Run the calls concurrently (bounded); a target that is gone (NotFound) is skipped; any
    other error is raised after all have run, so the task is retried (every call is idempotent)."""
    if not calls:
        return
    sem = asyncio.Semaphore(MAX_CONCURRENT_CALLS)

    async def one(c: Coroutine[Any, Any, None]) -> None:
        async with sem:
            await c

    results = await asyncio.gather(*(one(c) for c in calls), return_exceptions=True)
    for res in results:
        if isinstance(res, NotFound):
            continue
        if isinstance(res, BaseException):
            raise res
