"""The state rules of docs/processes.md: children, messages to other workflows, monitors and
links, workflow attributes and activity cancellation.

Like `history.engine`, every method either raises before it changes anything or changes the
mutation. The cross-workflow half of each command is a transfer task (`history.process_tasks`)
that calls the other workflow through `HistoryService` and then records the outcome here, in the
initiator, as an external event. Everything is idempotent: an outcome is recorded only while its
request is still pending, a close is delivered only while its registration still exists.
"""

from __future__ import annotations

from typing import Any

from history import spawned_processes
from history.engine_context import EngineContext
from history.state import (
    INITIATED,
    STARTED,
    T_CANCEL_EXTERNAL,
    T_CLOSE_NOTIFY,
    T_MONITOR_EXTERNAL,
    T_PARENT_CLOSE_POLICY,
    T_SIGNAL_EXTERNAL,
    T_START_CHILD,
    T_TERMINATE_EXTERNAL,
    ChildInfo,
    MutableState,
    Mutation,
    Registration,
    RequestInfo,
)
from legato.api import (
    CALLER_PID_PREFIX,
    DeliverMonitoredClosedRequest,
    ExecutionClosed,
    IdConflictPolicy,
    IdReusePolicy,
    MonitorRegistration,
    ParentClosePolicy,
    ParentInfo,
    RecordChildClosedRequest,
    RegisterMonitorResponse,
    SignalWorkflowRequest,
    StartMessage,
    StartWorkflowRequest,
    WorkflowStatus,
)
from legato.commands import CommandType
from legato.durations import MAX_DURATION_MS
from legato.errors import Failure, InvalidArgument, Kind, ResourceExhausted
from legato.events import EventType
from legato.ids import check_id
from legato.query import check_search_attributes

E = EventType
C = CommandType

ABNORMAL = frozenset({WorkflowStatus.FAILED, WorkflowStatus.TERMINATED, WorkflowStatus.CANCELED,
                      WorkflowStatus.TIMED_OUT})

# The keys of StartChildWorkflowExecution's "options" (legato.commands) and their defaults.
CHILD_OPTIONS: dict[str, Any] = {
    "execution_timeout_ms": 0, "run_timeout_ms": 0, "task_timeout_ms": 0,
    "id_reuse_policy": IdReusePolicy.ALLOW_DUPLICATE.value, "id_conflict_policy": IdConflictPolicy.FAIL.value,
    "execution_error_when_already_started": False, "retry_policy": None, "cron_schedule": "", "memo": {},
    "search_attributes": {}, "start_delay_ms": 0, "context": None, "start_messages": [],
    "parent_close_policy": ParentClosePolicy.TERMINATE.value, "wait_for_cancellation": False,
    "enable_eager_start": False,
}

_CHILD_CLOSE_EVENTS: dict[WorkflowStatus, tuple[EventType, str]] = {
    WorkflowStatus.COMPLETED: (E.ChildWorkflowExecutionCompleted, "result"),
    WorkflowStatus.FAILED: (E.ChildWorkflowExecutionFailed, "failure"),
    WorkflowStatus.CANCELED: (E.ChildWorkflowExecutionCanceled, "failure"),
    WorkflowStatus.TERMINATED: (E.ChildWorkflowExecutionTerminated, "failure"),
    WorkflowStatus.TIMED_OUT: (E.ChildWorkflowExecutionTimedOut, "failure"),
}

# per request kind: (the event of success, the event of failure)
OUTCOME_EVENTS: dict[str, tuple[EventType, EventType]] = {
    T_SIGNAL_EXTERNAL: (E.ExternalWorkflowExecutionSignaled, E.SignalExternalWorkflowExecutionFailed),
    T_CANCEL_EXTERNAL: (E.ExternalWorkflowExecutionCancelRequested, E.RequestCancelExternalWorkflowExecutionFailed),
    T_TERMINATE_EXTERNAL: (E.ExternalWorkflowExecutionTerminated, E.TerminateExternalWorkflowExecutionFailed),
    T_MONITOR_EXTERNAL: (E.ExternalWorkflowExecutionMonitored, E.MonitorExternalWorkflowExecutionFailed),
}

_REQUEST_KIND: dict[CommandType, str] = {
    C.SignalExternalWorkflowExecution: T_SIGNAL_EXTERNAL,
    C.RequestCancelExternalWorkflowExecution: T_CANCEL_EXTERNAL,
    C.TerminateExternalWorkflowExecution: T_TERMINATE_EXTERNAL,
    C.MonitorExternalWorkflowExecution: T_MONITOR_EXTERNAL,
}

_INITIATED_EVENTS: dict[CommandType, EventType] = {
    C.StartChildWorkflowExecution: E.StartChildWorkflowExecutionInitiated,
    C.SignalExternalWorkflowExecution: E.SignalExternalWorkflowExecutionInitiated,
    C.RequestCancelExternalWorkflowExecution: E.RequestCancelExternalWorkflowExecutionInitiated,
    C.TerminateExternalWorkflowExecution: E.TerminateExternalWorkflowExecutionInitiated,
    C.MonitorExternalWorkflowExecution: E.MonitorExternalWorkflowExecutionInitiated,
}

REQUEST_COMMANDS = frozenset(_REQUEST_KIND)
PROCESS_COMMANDS = frozenset({*_INITIATED_EVENTS, C.UpsertWorkflowSearchAttributes, C.ModifyWorkflowProperties,
                              C.RequestCancelActivityTask})


class BadCommand(Exception):
    """A process command's attributes are wrong (the engine turns it into a BAD_COMMAND failure)."""


def closed_info(st: MutableState) -> ExecutionClosed:
    return ExecutionClosed(st.namespace, st.workflow_id, st.run_id, WorkflowStatus(st.status), st.result,
                           Failure.from_dict(st.failure) if st.failure else None)


def closed_to_dict(c: ExecutionClosed) -> dict[str, Any]:
    return {"ns": c.namespace, "wf": c.workflow_id, "run": c.run_id, "status": c.status.value, "result": c.result,
            "failure": c.failure.to_dict() if c.failure is not None else None}


def closed_from_dict(d: dict[str, Any]) -> ExecutionClosed:
    f = d.get("failure")
    return ExecutionClosed(d["ns"], d["wf"], d["run"], WorkflowStatus(d["status"]), d.get("result"),
                           Failure.from_dict(f) if isinstance(f, dict) else None)


def not_found(message: str) -> dict[str, Any]:
    return Failure(message, kind=Kind.NOT_FOUND, retryable=False).to_dict()


def child_request(attrs: dict[str, Any], parent: ParentInfo | None, parent_context: dict[str, Any],
                  identity: str) -> StartWorkflowRequest:
    """The start request of a StartChildWorkflowExecution (its normalized attributes)."""
    o = {**CHILD_OPTIONS, **(attrs.get("options") or {})}
    msgs = o["start_messages"] or []
    ctx = o["context"]
    return StartWorkflowRequest(
        workflow_id=attrs["workflow_id"], workflow_type=attrs["workflow_type"], task_queue=attrs["task_queue"],
        input=list(attrs.get("input") or []), namespace=attrs["namespace"],
        request_id=f"child:{parent.run_id}:{parent.initiated_event_id}" if parent is not None else "",
        identity=identity, execution_timeout_ms=o["execution_timeout_ms"], run_timeout_ms=o["run_timeout_ms"],
        task_timeout_ms=o["task_timeout_ms"], id_reuse_policy=o["id_reuse_policy"],
        id_conflict_policy=o["id_conflict_policy"], context=dict(parent_context if ctx is None else ctx),
        memo=dict(o["memo"] or {}), search_attributes=dict(o["search_attributes"] or {}),
        retry_policy=o["retry_policy"], cron_schedule=o["cron_schedule"] or "", start_delay_ms=o["start_delay_ms"],
        execution_error_when_already_started=o["execution_error_when_already_started"],
        enable_eager_start=o["enable_eager_start"], wait_for_cancellation=o["wait_for_cancellation"],
        start_messages=[StartMessage(x["topic"], x.get("payload")) for x in msgs], parent=parent,
        parent_close_policy=o["parent_close_policy"])


class Processes:
    def __init__(self, engine: EngineContext) -> None:
        self.engine = engine
        self.limits = engine.config.limits

    # ================================================================== validation

    def check(self, st: MutableState, ctype: CommandType, a: dict[str, Any], where: str) -> dict[str, Any]:
        """Normalized attributes of a process command; BadCommand says what is wrong."""
        if ctype == C.StartChildWorkflowExecution:
            return self._check_child(st, a, where)
        if ctype == C.SignalExternalWorkflowExecution:
            name = a.get("signal_name")
            if not isinstance(name, str) or not name:
                raise BadCommand(f"{where}: signal_name must be a non-empty string, got {name!r}")
            run_id = _str(a, "run_id", where)
            sender = _str(a, "sender", where)
            self._payload(a.get("input"), f"{where}: input of signal {name!r}")
            norm = {"seq": _seq(a, where), "namespace": _namespace(st, a, where),
                    "workflow_id": _target(a, where), "run_id": run_id, "signal_name": name,
                    "input": a.get("input"), "sender": sender}
            if spawned_processes.is_spawn(norm):
                try:
                    spawned_processes.check_spawn(st, norm, where)
                except spawned_processes.BadSpawn as e:
                    raise BadCommand(str(e)) from None
            return norm
        if ctype == C.RequestCancelExternalWorkflowExecution:
            return {"seq": _seq(a, where), "namespace": _namespace(st, a, where), "workflow_id": _target(a, where),
                    "reason": _str(a, "reason", where), "deadline_ms": _ms(a, "deadline_ms", where)}
        if ctype == C.TerminateExternalWorkflowExecution:
            return {"seq": _seq(a, where), "namespace": _namespace(st, a, where), "workflow_id": _target(a, where),
                    "reason": _str(a, "reason", where)}
        if ctype == C.MonitorExternalWorkflowExecution:
            return {"seq": _seq(a, where), "namespace": _namespace(st, a, where), "workflow_id": _target(a, where),
                    "link": _bool(a, "link", where), "remove": _bool(a, "remove", where)}
        if ctype == C.UpsertWorkflowSearchAttributes:
            sa = a.get("search_attributes")
            problem = check_search_attributes(sa, "search_attributes")
            if problem or not isinstance(sa, dict):
                raise BadCommand(f"{where}: {problem}")
            self._payload({**st.search_attributes, **sa}, f"{where}: the workflow's search attributes")
            return {"search_attributes": sa}
        if ctype == C.ModifyWorkflowProperties:
            memo = a.get("memo")
            if not isinstance(memo, dict):
                raise BadCommand(f"{where}: memo must be a mapping, got {type(memo).__name__}")
            self._payload({**st.memo, **memo}, f"{where}: the workflow's memo")
            return {"memo": memo}
        # RequestCancelActivityTask
        sched = a.get("scheduled_event_id")
        if isinstance(sched, bool) or not isinstance(sched, int):
            raise BadCommand(f"{where}: scheduled_event_id must be the ActivityTaskScheduled event id, got {sched!r}")
        if sched not in st.activities and not any(
                e["a"].get("scheduled_event_id") == sched for e in st.buffered if e["t"] in _ACTIVITY_CLOSES):
            raise BadCommand(f"{where}: no pending activity was scheduled by event {sched}")
        return {"scheduled_event_id": sched}

    def check_limits(self, st: MutableState, new_children: int, new_requests: int) -> str | None:
        n = len(st.children) + new_children
        if new_children and n > self.limits.max_pending_children:
            return (f"the workflow would have {n} pending child workflows; the limit is "
                    f"{self.limits.max_pending_children} (limits.max_pending_children)")
        n = len(st.requests) + new_requests
        if new_requests and n > self.limits.max_pending_external_requests:
            return (f"the workflow would have {n} requests to other workflows awaiting their outcome; the limit "
                    f"is {self.limits.max_pending_external_requests} (limits.max_pending_external_requests)")
        return None

    def _payload(self, value: Any, what: str) -> None:
        try:
            self.engine.payload(value, what)
        except InvalidArgument as e:
            raise BadCommand(e.message) from None

    def _check_child(self, st: MutableState, a: dict[str, Any], where: str) -> dict[str, Any]:
        wid = a.get("workflow_id")
        if not isinstance(wid, str) or check_id(wid, "workflow_id"):
            raise BadCommand(f"{where}: workflow_id must be a non-empty string, got {wid!r}")
        wtype = a.get("workflow_type")
        if not isinstance(wtype, str) or check_id(wtype, "workflow_type"):
            raise BadCommand(f"{where}: workflow_type must be a non-empty string, got {wtype!r}")
        tq = a.get("task_queue") or st.task_queue
        inp = a.get("input")
        if inp is None:
            inp = []
        if not isinstance(inp, list):
            raise BadCommand(f"{where}: input must be a list of arguments, got {type(inp).__name__}")
        opts = a.get("options")
        if opts is None:
            opts = {}
        if not isinstance(opts, dict):
            raise BadCommand(f"{where}: options must be a mapping, got {type(opts).__name__}")
        unknown = sorted(str(k) for k in opts if k not in CHILD_OPTIONS)
        if unknown:
            raise BadCommand(f"{where}: unknown option {unknown[0]!r} (known: {', '.join(CHILD_OPTIONS)})")
        msgs = opts.get("start_messages") or []
        if not isinstance(msgs, list) or not all(isinstance(x, dict) and set(x) <= {"topic", "payload"}
                                                 for x in msgs):
            raise BadCommand(f"{where}: options.start_messages must be a list of {{topic =, payload =}}")
        if opts.get("context") is not None and not isinstance(opts["context"], dict):
            raise BadCommand(f"{where}: options.context must be a mapping")
        norm = {"seq": _seq(a, where), "namespace": _namespace(st, a, where), "workflow_id": wid,
                "workflow_type": wtype, "task_queue": tq, "input": inp,
                "options": {k: opts.get(k, v) for k, v in CHILD_OPTIONS.items()}}
        try:
            req = child_request(norm, None, st.context, st.workflow_id)
            self.engine.validate_start(req, f"{where} child workflow {wid!r}")
        except InvalidArgument as e:
            raise BadCommand(e.message) from None
        except (KeyError, TypeError, ValueError) as e:
            raise BadCommand(f"{where}: invalid options: {e}") from None
        norm["options"]["parent_close_policy"] = ParentClosePolicy(req.parent_close_policy).value
        norm["options"]["context"] = req.context  # the parent's, unless the command gives one
        return norm

    # ================================================================== commands

    def apply(self, m: Mutation, ctype: CommandType, a: dict[str, Any], done_id: int) -> bool:
        """Apply a validated process command; True if visibility must be updated."""
        st = m.state
        if ctype in _INITIATED_EVENTS:
            ev = m.event(_INITIATED_EVENTS[ctype], {**a, "workflow_task_completed_event_id": done_id})
            init = ev.event_id
            ns, wf = a["namespace"], a["workflow_id"]
            if ctype == C.StartChildWorkflowExecution:
                o = a["options"]
                st.children[init] = ChildInfo(init, ns, wf, a["workflow_type"], o["parent_close_policy"],
                                              wait_for_cancellation=bool(o["wait_for_cancellation"]))
                m.transfer_task(T_START_CHILD, init=init, attrs=a)
                return False
            kind = _REQUEST_KIND[ctype]
            if kind == T_SIGNAL_EXTERNAL and spawned_processes.is_spawn(a):
                spawned_processes.spawned(st, init, a)
            link, remove = bool(a.get("link")), bool(a.get("remove"))
            st.requests[init] = RequestInfo(init, kind, ns, wf, link=link, remove=remove)
            if kind == T_MONITOR_EXTERNAL:
                self._watch(st, ns, wf, link, remove, init)
            m.transfer_task(kind, init=init, attrs=a)
            return False
        if ctype == C.UpsertWorkflowSearchAttributes:
            m.event(E.UpsertWorkflowSearchAttributes, {**a, "workflow_task_completed_event_id": done_id})
            _merge(st.search_attributes, a["search_attributes"])
            return True
        if ctype == C.ModifyWorkflowProperties:
            m.event(E.WorkflowPropertiesModified, {**a, "workflow_task_completed_event_id": done_id})
            _merge(st.memo, a["memo"])
            return True
        # RequestCancelActivityTask
        sched = a["scheduled_event_id"]
        m.event(E.ActivityTaskCancelRequested, {"scheduled_event_id": sched,
                                                "workflow_task_completed_event_id": done_id})
        info = st.activities.get(sched)
        if info is None:
            return False  # it closed while the task ran: its buffered close follows
        if info.state == STARTED:
            info.cancel_requested = True  # heartbeats tell the activity; it reports canceled (or closes)
        else:  # not running: canceled at once (written after the task's command events)
            del st.activities[sched]
            st.buffered.append({"t": E.ActivityTaskCanceled.value, "a": {
                "scheduled_event_id": sched, "details": None, "identity": "history"}})
        return False

    def _watch(self, st: MutableState, ns: str, wf: str, link: bool, remove: bool, init: int) -> None:
        """A monitor command's effect on the initiator: what it now waits to hear about (a close
        that arrives before the outcome of the registration is still taken), and for a link, that
        its own abnormal close is told to the other side."""
        st.watching = [r for r in st.watching if not r.same(ns, wf, link)]
        if link:
            st.monitors = [r for r in st.monitors if not r.same(ns, wf, True)]
        if not remove:
            st.watching.append(Registration(ns, wf, "", init, link=link))
            if link:
                st.monitors.append(Registration(ns, wf, "", init, link=True, own=True))

    # ================================================================== outcomes (in the initiator)

    def child_started(self, m: Mutation, init: int, run_id: str, existing: bool) -> str:
        """Record ChildWorkflowExecutionStarted. If the parent run closed meanwhile, returns the
        parent_close_policy to apply to the child now (else "")."""
        st = m.state
        c = st.children.get(init)
        if c is None or c.state != INITIATED:
            return ""
        if not st.running:
            return "" if existing else c.parent_close_policy
        c.state, c.run_id, c.existing = STARTED, run_id, existing
        self.engine.add_external(m, [(E.ChildWorkflowExecutionStarted, {
            "initiated_event_id": init, "workflow_id": c.workflow_id, "run_id": run_id, "existing": existing})])
        return ""

    def child_start_failed(self, m: Mutation, init: int, failure: dict[str, Any]) -> None:
        st = m.state
        c = st.children.get(init)
        if c is None or c.state != INITIATED or not st.running:
            return
        del st.children[init]
        self.engine.add_external(m, [(E.StartChildWorkflowExecutionFailed, {
            "initiated_event_id": init, "workflow_id": c.workflow_id, "failure": failure})])

    def request_done(self, m: Mutation, init: int, run_id: str = "", failure: dict[str, Any] | None = None,
                     monitored: RegisterMonitorResponse | None = None) -> None:
        """The outcome of a signal / cancel / terminate / monitor request (once)."""
        st = m.state
        r = st.requests.get(init)
        if r is None:
            return
        del st.requests[init]
        if not st.running:
            m.dirty = True  # nothing to record, but the request is done (a closing link waits for it)
            return
        ok, failed = OUTCOME_EVENTS[r.kind]
        if failure is not None:
            if r.kind == T_SIGNAL_EXTERNAL:
                spawned_processes.spawn_undelivered(st, init)
            if r.kind == T_MONITOR_EXTERNAL and not r.remove:
                st.watching = [w for w in st.watching if not (w.same(r.namespace, r.workflow_id, r.link)
                                                              and w.initiated_event_id == init)]
                if r.link:
                    st.monitors = [x for x in st.monitors if not (x.same(r.namespace, r.workflow_id, True) and x.own)]
            self.engine.add_external(m, [(failed, {"initiated_event_id": init, "workflow_id": r.workflow_id,
                                                   "failure": failure})])
            return
        events: list[tuple[EventType, dict[str, Any]]] = [
            (ok, {"initiated_event_id": init, "workflow_id": r.workflow_id, "run_id": run_id})]
        if monitored is not None and not r.remove:
            w = next((x for x in st.watching if x.same(r.namespace, r.workflow_id, r.link)), None)
            if monitored.closed is not None:
                if w is not None:  # not delivered yet: monitoring a closed run answers at once
                    events.extend(self._drop_watch(st, w, monitored.closed))
            elif w is not None:
                w.run_id = monitored.run_id
                for x in st.monitors:
                    if x.same(r.namespace, r.workflow_id, True) and x.own:
                        x.run_id = monitored.run_id
        self.engine.add_external(m, events)

    def _drop_watch(self, st: MutableState, w: Registration,
                    c: ExecutionClosed) -> list[tuple[EventType, dict[str, Any]]]:
        st.watching.remove(w)
        if w.link:  # the other side is gone: nothing to tell it; this side hears of it (EXIT or LINK_DOWN)
            st.monitors = [x for x in st.monitors if not x.same(w.namespace, w.pid, True)]
        return [(E.MonitoredWorkflowExecutionClosed, {
            "workflow_id": c.workflow_id, "run_id": c.run_id, "status": c.status.value, "result": c.result,
            "failure": c.failure.to_dict() if c.failure is not None else None, "link": w.link})]

    # ================================================================== calls from other runs

    def register_monitor(self, m: Mutation, reg: MonitorRegistration, remove: bool) -> RegisterMonitorResponse:
        st = m.state
        if not st.running:
            return RegisterMonitorResponse(st.run_id, closed=closed_info(st))
        if remove:
            keep = [r for r in st.monitors if not r.same(reg.namespace, reg.pid, reg.link)]
            if len(keep) != len(st.monitors):
                st.monitors = keep
                m.dirty = True
            if reg.link:
                watch = [r for r in st.watching if not r.same(reg.namespace, reg.pid, True)]
                if len(watch) != len(st.watching):
                    st.watching = watch
                    m.dirty = True
            return RegisterMonitorResponse(st.run_id)
        cur = next((r for r in st.monitors if r.same(reg.namespace, reg.pid, reg.link)), None)
        if cur is None:
            if len(st.monitors) >= self.limits.max_monitors:
                raise ResourceExhausted(
                    f"cannot monitor workflow {st.workflow_id}: it already has {len(st.monitors)} monitors and links; "
                    f"the limit is {self.limits.max_monitors} (limits.max_monitors)", reason="LimitExceeded")
            st.monitors.append(Registration(reg.namespace, reg.pid, reg.run_id, reg.initiated_event_id, reg.link))
            m.dirty = True
        elif (cur.run_id, cur.initiated_event_id) != (reg.run_id, reg.initiated_event_id) and not cur.own:
            cur.run_id, cur.initiated_event_id = reg.run_id, reg.initiated_event_id
            m.dirty = True
        if reg.link and reg.run_id and not any(r.same(reg.namespace, reg.pid, True) for r in st.watching):
            st.watching.append(Registration(reg.namespace, reg.pid, reg.run_id, 0, link=True))
            m.dirty = True
        return RegisterMonitorResponse(st.run_id)

    def register_child_monitor(self, m: Mutation, parent: ParentInfo) -> None:
        """use_existing found this run for a child start: the parent still gets its close, as a
        ChildWorkflowExecution* event."""
        st = m.state
        if any(r.child and r.run_id == parent.run_id and r.initiated_event_id == parent.initiated_event_id
               for r in st.monitors):
            return
        st.monitors.append(Registration(parent.namespace, parent.workflow_id, parent.run_id,
                                        parent.initiated_event_id, child=True))
        m.dirty = True

    def record_child_closed(self, m: Mutation, req: RecordChildClosedRequest) -> None:
        st = m.state
        init = req.parent.initiated_event_id
        c = st.children.get(init)
        if not st.running or c is None or c.workflow_id != req.child.workflow_id:
            return
        del st.children[init]
        ch = req.child
        events: list[tuple[EventType, dict[str, Any]]] = []
        if c.state == INITIATED:  # the close overtook the start's outcome: record both, in order
            events.append((E.ChildWorkflowExecutionStarted, {"initiated_event_id": init, "workflow_id": c.workflow_id,
                                                             "run_id": c.run_id or ch.run_id,
                                                             "existing": req.existing}))
        etype, key = _CHILD_CLOSE_EVENTS[ch.status]
        value = ch.result if key == "result" else (ch.failure.to_dict() if ch.failure is not None else None)
        events.append((etype, {"initiated_event_id": init, "workflow_id": c.workflow_id, "run_id": ch.run_id,
                               key: value}))
        self.engine.add_external(m, events)

    def deliver_monitored_closed(self, m: Mutation, req: DeliverMonitoredClosedRequest) -> None:
        st = m.state
        if not st.running:
            return
        c = req.closed
        w = next((x for x in st.watching if x.same(c.namespace, c.workflow_id, req.link)), None)
        if w is None:
            return  # unmonitored, delivered before, or never asked for
        events: list[tuple[EventType, dict[str, Any]]] = []
        r = st.requests.get(w.initiated_event_id) if w.initiated_event_id else None
        if r is not None and r.kind == T_MONITOR_EXTERNAL:  # the close overtook the registration's outcome
            del st.requests[w.initiated_event_id]
            events.append((E.ExternalWorkflowExecutionMonitored, {"initiated_event_id": w.initiated_event_id,
                                                                  "workflow_id": r.workflow_id, "run_id": c.run_id}))
        events.extend(self._drop_watch(st, w, c))
        if events:
            self.engine.add_external(m, events)
        else:
            m.dirty = True

    def on_signal(self, st: MutableState, req: SignalWorkflowRequest) -> None:
        """A signal about to be recorded (spawned_processes.on_signal: NotFound refuses it)."""
        spawned_processes.on_signal(st, req)

    # ================================================================== closing

    def on_close(self, m: Mutation, continued: bool) -> None:
        """The run closed in `m`: apply its children's parent_close_policy, and unless a new run
        continues it, tell its parent and its monitors."""
        st = m.state
        acts = [{"ns": c.namespace, "wf": c.workflow_id, "run": c.run_id, "init": c.initiated_event_id,
                 "policy": c.parent_close_policy}
                for c in st.children.values()
                if c.state == STARTED and not c.existing and c.parent_close_policy != ParentClosePolicy.ABANDON.value]
        procs = spawned_processes.close_actions(st) if st.processes else []
        if acts or procs:
            m.transfer_task(T_PARENT_CLOSE_POLICY, children=acts, processes=procs, status=st.status)
        if continued:
            return
        told = [{"ns": r.namespace, "pid": r.pid, "run": r.run_id, "init": r.initiated_event_id, "link": r.link,
                 "child": r.child, "own": r.own}
                for r in st.monitors]  # links too: the other side gets EXIT (normal close) or LINK_DOWN
        if st.parent is None and not told:
            return
        m.transfer_task(T_CLOSE_NOTIFY, closed=closed_to_dict(closed_info(st)), parent=st.parent, monitors=told)


_ACTIVITY_CLOSES = frozenset({E.ActivityTaskCompleted.value, E.ActivityTaskFailed.value,
                              E.ActivityTaskTimedOut.value, E.ActivityTaskCanceled.value})


def is_caller(pid: str) -> bool:
    return pid.startswith(CALLER_PID_PREFIX)


def _merge(target: dict[str, Any], changes: dict[str, Any]) -> None:
    """Upsert: a null value removes the key."""
    for k, v in changes.items():
        if v is None:
            target.pop(k, None)
        else:
            target[k] = v


def _seq(a: dict[str, Any], where: str) -> Any:
    v = a.get("seq")
    if isinstance(v, bool) or not ((isinstance(v, int) and v >= 0) or (isinstance(v, str) and v)):
        raise BadCommand(f"{where}: seq must be the command's sequence number (a non-empty string or a whole "
                         f"number), got {v!r}")
    return v


def _namespace(st: MutableState, a: dict[str, Any], where: str) -> str:
    ns = a.get("namespace") or st.namespace
    if not isinstance(ns, str) or check_id(ns, "namespace"):
        raise BadCommand(f"{where}: namespace must be a string, got {ns!r}")
    return ns


def _target(a: dict[str, Any], where: str) -> str:
    wf = a.get("workflow_id")
    if not isinstance(wf, str) or check_id(wf, "workflow_id"):
        raise BadCommand(f"{where}: workflow_id (the target pid) must be a non-empty string, got {wf!r}")
    return wf


def _str(a: dict[str, Any], name: str, where: str) -> str:
    v = a.get(name)
    if v is None:
        return ""
    if not isinstance(v, str):
        raise BadCommand(f"{where}: {name} must be a string, got {v!r}")
    return v


def _bool(a: dict[str, Any], name: str, where: str) -> bool:
    v = a.get(name)
    if v is None:
        return False
    if not isinstance(v, bool):
        raise BadCommand(f"{where}: {name} must be true or false, got {v!r}")
    return v


def _ms(a: dict[str, Any], name: str, where: str) -> int:
    v = a.get(name)
    if v is None:
        return 0
    if isinstance(v, bool) or not isinstance(v, int) or v < 0 or v > MAX_DURATION_MS:
        raise BadCommand(f"{where}: {name} must be a whole number of milliseconds between 0 and {MAX_DURATION_MS} "
                         f"(100 years), got {v!r}")
    return v
