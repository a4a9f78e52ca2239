"""The state-transition rules of docs/protocol.md, applied to a Mutation.

Every public method here either raises a ServiceError BEFORE it changes anything, or changes
the mutation's state and records events/tasks (never both). The service holds the run's lock,
commits the mutation, and throws the cached state away if anything fails.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeGuard

from history.processes import REQUEST_COMMANDS, BadCommand, Processes
from history.runs import CONTINUE_AS_NEW, NextRun, Runs
from history.state import (
    BACKOFF,
    MAX_SIGNAL_REQUEST_IDS,
    SCHEDULED,
    STARTED,
    T_ACTIVITY_TASK,
    T_VISIBILITY,
    T_WORKFLOW_TASK,
    TM_ACTIVITY_RETRY,
    TM_ACTIVITY_TIMEOUT,
    TM_CANCEL_DEADLINE,
    TM_DELETE_HISTORY,
    TM_USER_TIMER,
    TM_WFT_BACKOFF,
    TM_WFT_TIMEOUT,
    TM_WORKFLOW_TIMEOUT,
    ActivityInfo,
    MutableState,
    Mutation,
    TimerInfo,
    WorkflowTaskInfo,
)
from legato import codec
from legato.api import (
    CancelWorkflowRequest,
    ExecutionRef,
    IdConflictPolicy,
    IdReusePolicy,
    MonitorRegistration,
    SignalWorkflowRequest,
    StartWorkflowRequest,
    TerminateWorkflowRequest,
    WorkflowExecutionInfo,
    WorkflowStatus,
)
from legato.commands import ATTRIBUTES as COMMAND_ATTRIBUTES
from legato.commands import CLOSE_COMMANDS, Command, CommandType
from legato.config import Config
from legato.durations import MAX_DURATION_MS
from legato.errors import (
    FailedPrecondition,
    Failure,
    InvalidArgument,
    Kind,
    NotFound,
    ResourceExhausted,
    ServiceError,
)
from legato.events import EventType, HistoryEvent
from legato.ids import check_id, new_run_id
from legato.query import check_search_attributes
from legato.retry import RetryPolicy

E = EventType
C = CommandType

# Workflow task failure causes (docs/protocol.md "Task causes").
WORKFLOW_ERROR = "WORKFLOW_ERROR"
NON_DETERMINISTIC = "NON_DETERMINISTIC"
FORBIDDEN_CALL = "FORBIDDEN_CALL"
LIMIT_EXCEEDED = "LIMIT_EXCEEDED"
BAD_COMMAND = "BAD_COMMAND"
UNHANDLED_COMMAND = "UNHANDLED_COMMAND"
WORKER_CAUSES = frozenset({WORKFLOW_ERROR, NON_DETERMINISTIC, FORBIDDEN_CALL, LIMIT_EXCEEDED, BAD_COMMAND})

# Activity timeout types
START_TO_CLOSE = "START_TO_CLOSE"
SCHEDULE_TO_START = "SCHEDULE_TO_START"
SCHEDULE_TO_CLOSE = "SCHEDULE_TO_CLOSE"
HEARTBEAT = "HEARTBEAT"

_FAILED_STATUSES = frozenset({WorkflowStatus.FAILED.value, WorkflowStatus.TERMINATED.value,
                              WorkflowStatus.CANCELED.value, WorkflowStatus.TIMED_OUT.value})
_EXTERNAL_CLOSE = frozenset({E.ActivityTaskCompleted.value, E.ActivityTaskFailed.value, E.ActivityTaskTimedOut.value,
                             E.ActivityTaskCanceled.value})


class CommandError(Exception):
    """A workflow task's commands were refused: the task fails with `cause`."""

    def __init__(self, cause: str, message: str) -> None:
        super().__init__(message)
        self.cause = cause
        self.message = message

    def service_error(self) -> ServiceError:
        text = f"the workflow task was failed ({self.cause}): {self.message}"
        if self.cause == LIMIT_EXCEEDED:
            return ResourceExhausted(text, reason="LimitExceeded")
        return InvalidArgument(text, reason="BadCommand")


class HistoryLimitExceeded(Exception):
    """Applying a task's commands would cross the history size limits: the workflow is terminated."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(slots=True)
class _Cmd:
    type: CommandType
    attrs: dict[str, Any]
    eager: bool = False  # ScheduleActivityTask: the completing worker runs it at once


def _is_int(v: object) -> TypeGuard[int]:
    return isinstance(v, int) and not isinstance(v, bool)


def info_to_dict(info: WorkflowExecutionInfo) -> dict[str, Any]:
    return {"ns": info.namespace, "wf": info.workflow_id, "run": info.run_id, "type": info.workflow_type,
            "tq": info.task_queue, "status": info.status.value, "start": info.start_time_ms,
            "close": info.close_time_ms, "len": info.history_length, "memo": info.memo,
            "sa": info.search_attributes}


def info_from_dict(d: dict[str, Any]) -> WorkflowExecutionInfo:
    return WorkflowExecutionInfo(
        namespace=d["ns"], workflow_id=d["wf"], run_id=d["run"], workflow_type=d["type"], task_queue=d["tq"],
        status=WorkflowStatus(d["status"]), start_time_ms=int(d["start"]), close_time_ms=int(d["close"]),
        history_length=int(d["len"]), memo=d.get("memo") or {}, search_attributes=d.get("sa") or {})


class Engine:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.limits = config.limits
        self.hcfg = config.history
        self.runs = Runs(self)
        self.proc = Processes(self)

    # ================================================================== payloads

    def payload(self, value: Any, what: str) -> None:
        """Refuse a value larger than limits.max_payload_bytes, nested deeper than
        limits.max_payload_depth, or not representable as JSON."""
        codec.check_payload(value, self.limits.max_payload_bytes, what, self.limits.max_payload_depth)

    def bounded_failure(self, f: Failure, what: str) -> dict[str, Any]:
        """A failure as a dict, shrunk to fit the payload limit (details dropped, message cut)."""
        limit = self.limits.max_payload_bytes
        d = f.to_dict()
        try:
            text = codec.dumps(d)
        except (TypeError, ValueError):
            d.pop("details", None)
            d["message"] = f"{f.message} (details of {what} were not JSON-encodable and were dropped)"
            text = codec.dumps(d)
        if len(text.encode()) <= limit:
            return d
        d.pop("details", None)
        d.pop("cause", None)
        msg = str(d.get("message", ""))
        keep = max(0, limit // 2)
        if len(msg.encode()) > keep:
            d["message"] = msg.encode()[:keep].decode(errors="ignore") + f"... ({what} truncated: too large)"
        return d

    # ================================================================== start

    def validate_start(self, req: StartWorkflowRequest, where: str = "start workflow") -> None:
        for value, what in ((req.namespace, "namespace"), (req.workflow_id, "workflow_id"),
                            (req.workflow_type, "workflow_type"), (req.task_queue, "task_queue")):
            if not isinstance(value, str):
                raise InvalidArgument(f"{where}: {what} must be a string, got {type(value).__name__}")
            err = check_id(value, what)
            if err:
                raise InvalidArgument(f"{where}: {err}")
        if not isinstance(req.input, list):
            raise InvalidArgument(f"{where}: input must be a list of arguments, got {type(req.input).__name__}")
        for name in ("execution_timeout_ms", "run_timeout_ms", "task_timeout_ms"):
            v = getattr(req, name)
            if not _is_int(v) or v < 0 or v > MAX_DURATION_MS:
                raise InvalidArgument(f"{where}: {name} must be a whole number of milliseconds between 0 and "
                                      f"{MAX_DURATION_MS} (100 years), got {v!r}")
        try:
            IdReusePolicy(req.id_reuse_policy)
        except ValueError:
            raise InvalidArgument(f"{where}: unknown id_reuse_policy {req.id_reuse_policy!r} (use one of "
                                  f"{', '.join(p.value for p in IdReusePolicy)})") from None
        try:
            IdConflictPolicy(req.id_conflict_policy)
        except ValueError:
            raise InvalidArgument(f"{where}: unknown id_conflict_policy {req.id_conflict_policy!r} (use one of "
                                  f"{', '.join(p.value for p in IdConflictPolicy)})") from None
        for name in ("context", "memo", "search_attributes"):
            if not isinstance(getattr(req, name), dict):
                raise InvalidArgument(f"{where}: {name} must be a table/mapping")
        for name in ("request_id", "identity"):
            if not isinstance(getattr(req, name), str):
                raise InvalidArgument(f"{where}: {name} must be a string")
        self.payload(req.input, f"{where}: input of workflow {req.workflow_id!r}")
        self.payload(req.memo, f"{where}: memo")
        self.payload(req.search_attributes, f"{where}: search_attributes")
        self.payload(req.context, f"{where}: context")
        problem = check_search_attributes(req.search_attributes, "search_attributes")
        if problem:
            raise InvalidArgument(f"{where}: {problem}")
        self.runs.validate_options(req, where)

    def new_run(self, req: StartWorkflowRequest, run_id: str, now: int) -> Mutation:
        return self.runs.first_run(req, run_id, now)

    def use_existing(self, m: Mutation, req: StartWorkflowRequest) -> None:
        """A start found the workflow running and returns that run (use_existing): its start
        messages are delivered to it, a parent is registered to get its close, and so are the
        caller pids of `monitors`."""
        st = m.state
        sender = self.runs.starter_pid(req)
        for i, sm in enumerate(req.start_messages):
            self.signal(m, SignalWorkflowRequest(ExecutionRef(st.workflow_id, st.run_id, st.namespace), sm.topic,
                                                 sm.payload, sender=sender, identity=req.identity,
                                                 request_id=f"{req.request_id}:message:{i}" if req.request_id else ""))
        if req.parent is not None:
            self.proc.register_child_monitor(m, req.parent)
        for pid in req.monitors:
            self.proc.register_monitor(m, MonitorRegistration(req.namespace, pid), remove=False)

    @staticmethod
    def reuse_refused(policy: IdReusePolicy, prev_status: str) -> str | None:
        """Why a closed run's workflow id may not be reused, or None if it may."""
        if policy == IdReusePolicy.REJECT_DUPLICATE:
            return "id_reuse_policy is reject_duplicate"
        if policy == IdReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY and prev_status not in _FAILED_STATUSES:
            return (f"the previous run closed as {prev_status} and id_reuse_policy allow_duplicate_failed_only "
                    "allows a new run only after a failed, terminated, canceled or timed-out one")
        return None

    # ================================================================== workflow tasks

    def schedule_wft(self, m: Mutation, attempt: int, transient: bool = False) -> None:
        """Schedule a workflow task. A transient one (a retry of a failing task) writes no event:
        its WorkflowTaskScheduled is written only if the attempt completes."""
        st = m.state
        if transient:
            sched = st.next_event_id
            m.dirty = True
        else:
            sched = m.event(E.WorkflowTaskScheduled, {"task_queue": st.task_queue,
                                                      "start_to_close_timeout_ms": st.task_timeout_ms,
                                                      "attempt": attempt}).event_id
        st.wft = WorkflowTaskInfo(state=SCHEDULED, scheduled_event_id=sched, attempt=attempt,
                                  timeout_ms=st.task_timeout_ms, scheduled_time_ms=m.now, transient=transient)
        m.transfer_task(T_WORKFLOW_TASK, tq=st.task_queue, sched=sched, attempt=attempt)

    def wft_started(self, m: Mutation, request_id: str, identity: str) -> int:
        st = m.state
        w = st.wft
        assert w is not None
        w.history_size_bytes = st.history_bytes
        if w.transient:
            # Numbered from the history's end now; nothing is written while a task is started
            # (external events are buffered), so these ids stay free until the task ends.
            started = st.next_event_id + 1
            m.dirty = True
        else:
            started = m.event(E.WorkflowTaskStarted, {"scheduled_event_id": w.scheduled_event_id,
                                                      "identity": identity, "request_id": request_id,
                                                      "history_size_bytes": w.history_size_bytes}).event_id
        w.state = STARTED
        w.started_event_id = started
        w.request_id = request_id
        w.identity = identity
        w.started_time_ms = m.now
        m.timer(m.now + w.timeout_ms, TM_WFT_TIMEOUT, sched=w.scheduled_event_id, started=started, attempt=w.attempt)
        return started

    @staticmethod
    def transient_events(st: MutableState) -> list[HistoryEvent]:
        """The WorkflowTaskScheduled/Started of a started transient task, as the worker sees them
        at the end of its history (and as they are written if the attempt completes)."""
        w = st.wft
        if w is None or not w.transient or w.state != STARTED:
            return []
        sched = w.started_event_id - 1
        return [
            HistoryEvent(sched, E.WorkflowTaskScheduled, w.scheduled_time_ms, {
                "task_queue": st.task_queue, "start_to_close_timeout_ms": w.timeout_ms, "attempt": w.attempt}),
            HistoryEvent(w.started_event_id, E.WorkflowTaskStarted, w.started_time_ms, {
                "scheduled_event_id": sched, "identity": w.identity, "request_id": w.request_id,
                "history_size_bytes": w.history_size_bytes}),
        ]

    def _materialize(self, m: Mutation) -> None:
        """Write a started transient task's events for real (the attempt is ending with an event)."""
        st = m.state
        w = st.wft
        events = self.transient_events(st)
        if w is None or not events:
            return
        if events[0].event_id != st.next_event_id:
            raise RuntimeError(f"transient workflow task of {st.workflow_id}/{st.run_id} was numbered from event "
                               f"{events[0].event_id}, but the history now ends before {st.next_event_id}")
        for ev in events:
            m.event(ev.event_type, ev.attrs, ev.timestamp_ms)
        w.scheduled_event_id = events[0].event_id
        w.transient = False

    def start_new_wft(self, m: Mutation, request_id: str, identity: str) -> WorkflowTaskInfo | None:
        """If `m` scheduled a workflow task (it was not pending before), start it now for the
        caller instead of dispatching it: its transfer task is dropped. Returns it, or None."""
        st = m.state
        w = st.wft
        if (w is None or w.state != SCHEDULED or w.transient or m.expected_next_event_id is None
                or w.scheduled_event_id < m.expected_next_event_id):
            return None
        sched = w.scheduled_event_id
        ours = [t for t in m.transfer if t["k"] == T_WORKFLOW_TASK and t.get("sched") == sched]
        if not ours:
            return None  # scheduled before this mutation: already on its way to matching
        m.transfer = [t for t in m.transfer if t not in ours]
        self.wft_started(m, request_id, identity)
        return w

    @staticmethod
    def check_wft_token(st: MutableState, scheduled_event_id: int, started_event_id: int, attempt: int) -> None:
        where = f"workflow task (scheduled event {scheduled_event_id}) of {st.workflow_id}/{st.run_id}"
        if not st.running:
            raise NotFound(f"{where}: the run is already closed ({st.status})", reason="WorkflowClosed")
        w = st.wft
        if (w is None or w.state != STARTED or w.scheduled_event_id != scheduled_event_id
                or w.started_event_id != started_event_id or w.attempt != attempt):
            raise NotFound(f"{where}: the task is no longer in progress (it completed, failed or timed out); "
                           "this response is stale", reason="StaleTask")

    def complete_wft(self, m: Mutation, commands: list[Command], identity: str) -> ServiceError | None:
        """Apply a completed task's commands. Returns the error to give the worker when the task
        was failed instead (bad command, limit); raises HistoryLimitExceeded after changing state."""
        st = m.state
        w = st.wft
        assert w is not None
        try:
            cmds = self.validate_commands(st, commands)
        except CommandError as e:
            kind = Kind.LIMIT_EXCEEDED if e.cause == LIMIT_EXCEEDED else Kind.INVALID
            self.fail_wft(m, e.cause, Failure(e.message, kind=kind, retryable=False), "history")
            return e.service_error()
        if cmds and cmds[-1].type in CLOSE_COMMANDS and st.has_buffered_signal_or_cancel():
            self.fail_wft(m, UNHANDLED_COMMAND, Failure(
                f"{cmds[-1].type.value} discarded: new signals or a cancel request arrived while the workflow "
                "task was running; a new workflow task delivers them", kind=Kind.CONFLICT, retryable=True),
                identity)
            return None
        self._materialize(m)
        done = m.event(E.WorkflowTaskCompleted, {"scheduled_event_id": w.scheduled_event_id,
                                                 "started_event_id": w.started_event_id, "identity": identity})
        st.last_completed_wft_started_id = w.started_event_id
        st.sticky_identity = w.identity
        st.wft = None
        st.last_wft_failure = None
        st.last_wft_failure_cause = ""
        upsert = False
        for cmd in cmds:
            upsert = self._apply_command(m, cmd, done.event_id, identity) or upsert
        if upsert and st.running:
            self.visibility(m)  # search attributes or memo changed (once per task)
        if not st.running:
            m.eager.clear()  # the run closed in this task: nothing to run
        if st.running and self.flush_buffered(m):
            self.schedule_wft(m, 1)
        self._check_history_limits(st)
        return None

    def _check_history_limits(self, st: MutableState) -> None:
        events = st.next_event_id - 1
        if events > self.limits.max_history_events:
            raise HistoryLimitExceeded(
                f"the workflow's history would have {events} events; the limit is {self.limits.max_history_events} "
                "(limits.max_history_events)")
        if st.history_bytes > self.limits.max_history_bytes:
            raise HistoryLimitExceeded(
                f"the workflow's history would be {st.history_bytes} bytes; the limit is "
                f"{self.limits.max_history_bytes} (limits.max_history_bytes)")

    def terminate_for_history_limit(self, m: Mutation, message: str, identity: str) -> None:
        self._wft_failed_event(m, LIMIT_EXCEEDED, Failure(message, kind=Kind.LIMIT_EXCEEDED, retryable=False),
                               identity)
        reason = f"history size limit exceeded: {message}"
        m.event(E.WorkflowExecutionTerminated, {"reason": reason, "identity": "history"})
        self.close(m, WorkflowStatus.TERMINATED,
                   failure=Failure(reason, kind=Kind.LIMIT_EXCEEDED, retryable=False).to_dict())

    def _wft_failed_event(self, m: Mutation, cause: str, failure: Failure, identity: str) -> WorkflowTaskInfo:
        st = m.state
        w = st.wft
        assert w is not None
        self._materialize(m)
        fd = self.bounded_failure(failure, "workflow task failure")
        m.event(E.WorkflowTaskFailed, {"scheduled_event_id": w.scheduled_event_id,
                                       "started_event_id": w.started_event_id, "cause": cause,
                                       "failure": fd, "identity": identity})
        if cause != UNHANDLED_COMMAND:
            st.last_wft_failure = fd
            st.last_wft_failure_cause = cause
        st.wft = None
        return w

    def fail_wft(self, m: Mutation, cause: str, failure: Failure, identity: str) -> None:
        st = m.state
        w = st.wft
        assert w is not None
        st.sticky_identity = ""  # the worker dropped the run: the next task carries the whole history
        if w.transient and cause != UNHANDLED_COMMAND:
            # A retry failed again: nothing is written (the first failure of the run is), so a
            # workflow stuck on a bug does not grow its history. Describe still shows it.
            st.last_wft_failure = self.bounded_failure(failure, "workflow task failure")
            st.last_wft_failure_cause = cause
            st.wft = None
            m.dirty = True
        else:
            self._wft_failed_event(m, cause, failure, identity)
        self.flush_buffered(m)
        if cause == UNHANDLED_COMMAND:
            self.schedule_wft(m, 1)
        else:
            self._retry_wft(m, w.attempt + 1)

    def wft_timed_out(self, m: Mutation) -> None:
        st = m.state
        w = st.wft
        assert w is not None
        st.sticky_identity = ""
        if not w.transient:
            m.event(E.WorkflowTaskTimedOut, {"scheduled_event_id": w.scheduled_event_id,
                                             "started_event_id": w.started_event_id, "timeout_type": START_TO_CLOSE})
        who = f" by {w.identity}" if w.identity else ""
        st.last_wft_failure = Failure(
            f"workflow task (attempt {w.attempt}) timed out: the worker{who} did not respond within "
            f"{w.timeout_ms} ms (start-to-close)", kind=Kind.TIMEOUT, retryable=True).to_dict()
        st.last_wft_failure_cause = "TIMEOUT"
        st.wft = None
        m.dirty = True
        self.flush_buffered(m)
        self._retry_wft(m, w.attempt + 1)

    def _retry_wft(self, m: Mutation, attempt: int) -> None:
        """The next attempt of a failed task, after a backoff; attempts after the first are transient."""
        failures = attempt - 1
        delay = min(self.hcfg.workflow_task_retry_initial_ms * (2 ** min(failures - 1, 40)),
                    self.hcfg.workflow_task_retry_max_ms)
        if delay <= 0:
            self.schedule_wft(m, attempt, transient=attempt > 1)
            return
        self.wft_backoff(m, attempt, delay)

    def wft_backoff(self, m: Mutation, attempt: int, delay_ms: int) -> None:
        """No workflow task until `delay_ms` from now (a retry backoff, a start delay, a cron or
        workflow-retry wait); external events are written meanwhile but schedule nothing."""
        w = m.state.wft = WorkflowTaskInfo(state=BACKOFF, attempt=attempt, timeout_ms=m.state.task_timeout_ms,
                                           scheduled_time_ms=m.now + delay_ms)
        m.dirty = True
        # `at` tells this backoff's timer from a redelivered one of an earlier backoff with the
        # same attempt number (an earlier run of failures): that one must not cut this one short.
        m.timer(m.now + delay_ms, TM_WFT_BACKOFF, attempt=attempt, at=w.scheduled_time_ms)

    # ================================================================== external events

    def add_external(self, m: Mutation, events: list[tuple[EventType, dict[str, Any]]]) -> None:
        """Write external events and schedule a workflow task, or buffer them while one is started."""
        st = m.state
        if st.wft is not None and st.wft.state == STARTED:
            # "n": the size the event will add to the history, counted against max_history_bytes
            st.buffered.extend({"t": t.value, "a": a, "n": len(codec.dumps(a))} for t, a in events)
            m.dirty = True
            return
        self._write_external(m, [(t.value, a) for t, a in events])
        if st.wft is None:
            self.schedule_wft(m, 1)

    def _write_external(self, m: Mutation, events: list[tuple[str, dict[str, Any]]]) -> None:
        started_id = 0
        for t, attrs in events:
            if t == E.ActivityTaskStarted.value:
                started_id = m.event(E.ActivityTaskStarted, attrs).event_id
            elif t in _EXTERNAL_CLOSE:
                m.event(E(t), {**attrs, "started_event_id": started_id})
            else:
                m.event(E(t), attrs)

    def flush_buffered(self, m: Mutation) -> bool:
        st = m.state
        if not st.buffered:
            return False
        buffered, st.buffered = st.buffered, []
        self._write_external(m, [(e["t"], e["a"]) for e in buffered])
        return True

    def signal(self, m: Mutation, req: SignalWorkflowRequest) -> None:
        st = m.state
        if req.request_id and req.request_id in st.signal_request_ids:
            return  # a retried signal: recorded once (even if the run has closed since)
        if not st.running:
            raise NotFound(f"cannot signal workflow {st.workflow_id} (run {st.run_id}): it is already closed "
                           f"({st.status})", reason="WorkflowClosed")
        if st.wft is not None and st.wft.state == STARTED and \
                st.buffered_signal_count() >= self.limits.max_buffered_signals:
            raise ResourceExhausted(
                f"cannot signal workflow {st.workflow_id}: {st.buffered_signal_count()} signals are already waiting "
                f"for the running workflow task; the limit is {self.limits.max_buffered_signals} "
                "(limits.max_buffered_signals)", reason="LimitExceeded")
        if st.next_event_id - 1 >= self.limits.max_history_events:
            raise ResourceExhausted(
                f"cannot signal workflow {st.workflow_id}: its history has {st.next_event_id - 1} events; the limit "
                f"is {self.limits.max_history_events} (limits.max_history_events)", reason="LimitExceeded")
        # Signals buffered while a workflow task runs count too: they are memory until it completes.
        size = st.history_bytes + st.buffered_bytes()
        if size >= self.limits.max_history_bytes:
            raise ResourceExhausted(
                f"cannot signal workflow {st.workflow_id}: its history (with the signals waiting for the running "
                f"workflow task) is {size} bytes; the limit is {self.limits.max_history_bytes} "
                "(limits.max_history_bytes)", reason="LimitExceeded")
        self.proc.on_signal(st, req)  # a process's spawn or end (history/spawned_processes.py)
        self.add_external(m, [(E.WorkflowExecutionSignaled, {
            "signal_name": req.signal_name, "input": req.input, "sender": req.sender, "identity": req.identity,
            "request_id": req.request_id})])
        if req.request_id:
            st.signal_request_ids.append(req.request_id)
            if len(st.signal_request_ids) > MAX_SIGNAL_REQUEST_IDS:
                del st.signal_request_ids[:len(st.signal_request_ids) - MAX_SIGNAL_REQUEST_IDS]

    def request_cancel(self, m: Mutation, req: CancelWorkflowRequest) -> None:
        st = m.state
        if not st.running:
            if req.request_id and req.request_id == st.cancel_request_id:
                return  # a retried request: it was recorded before the run closed
            raise NotFound(f"cannot cancel workflow {st.workflow_id} (run {st.run_id}): it is already closed "
                           f"({st.status})", reason="WorkflowClosed")
        if req.deadline_ms > 0:
            at = m.now + req.deadline_ms
            if not st.cancel_deadline_ms or at < st.cancel_deadline_ms:
                st.cancel_deadline_ms = at
                m.dirty = True
                m.timer(at, TM_CANCEL_DEADLINE, at=at, ms=req.deadline_ms)
        if st.cancel_requested:
            return  # requested before: once is enough
        st.cancel_requested = True
        st.cancel_request_id = req.request_id
        self.add_external(m, [(E.WorkflowExecutionCancelRequested, {"reason": req.reason, "identity": req.identity})])

    def terminate(self, m: Mutation, req: TerminateWorkflowRequest) -> None:
        st = m.state
        if not st.running:
            if req.request_id and req.request_id == st.terminate_request_id:
                return  # a retried request: this run was terminated by it
            raise NotFound(f"cannot terminate workflow {st.workflow_id} (run {st.run_id}): it is already closed "
                           f"({st.status})", reason="WorkflowClosed")
        st.terminate_request_id = req.request_id
        self.terminate_running(m, req.reason, req.identity)

    def terminate_running(self, m: Mutation, reason: str, identity: str) -> None:
        m.event(E.WorkflowExecutionTerminated, {"reason": reason, "identity": identity})
        self.close(m, WorkflowStatus.TERMINATED,
                   failure=Failure(reason or "terminated", kind=Kind.TERMINATED, retryable=False).to_dict())

    def close(self, m: Mutation, status: WorkflowStatus, result: Any = None,
              failure: dict[str, Any] | None = None, *, timeout_type: str = "",
              successor: NextRun | None = None) -> None:
        """Close the run. A failed or timed-out run with a retry policy, or a cron run, continues
        in a new run (created in the same write); continue-as-new passes its `successor`."""
        st = m.state
        if successor is None and status != WorkflowStatus.CONTINUED_AS_NEW:
            successor = self.runs.plan(st, status, failure, m.now, timeout_type)
        st.status = status.value
        st.close_time_ms = m.now
        st.result = result
        st.failure = failure
        st.wft = None
        st.activities.clear()
        st.timers.clear()
        st.buffered.clear()
        m.closed = True
        self.proc.on_close(m, continued=successor is not None)
        if successor is not None:
            m.successor = self.runs.successor(m, successor)
        self.visibility(m)
        retention = self.config.history.retention_ms(st.namespace)
        if retention > 0:  # the run is deleted once its retention has passed (0: kept for ever)
            m.timer(m.now + retention, TM_DELETE_HISTORY, st=st.start_time_ms)

    def visibility(self, m: Mutation) -> None:
        m.transfer_task(T_VISIBILITY, info=info_to_dict(m.state.info()))

    # ================================================================== commands

    def validate_commands(self, st: MutableState, commands: Any) -> list[_Cmd]:
        if not isinstance(commands, list):
            raise CommandError(BAD_COMMAND, f"commands must be a list, got {type(commands).__name__}")
        n = len(commands)
        if n > self.limits.max_commands_per_task:
            raise CommandError(LIMIT_EXCEEDED, f"the workflow task returned {n} commands; the limit is "
                                               f"{self.limits.max_commands_per_task} (limits.max_commands_per_task)")
        out: list[_Cmd] = []
        activity_ids = {a.activity_id for a in st.activities.values()}
        timers = set(st.timers)
        fired = {e["a"].get("timer_id") for e in st.buffered if e["t"] == E.TimerFired.value}
        new_activities = new_children = new_requests = 0
        for i, cmd in enumerate(commands, 1):
            raw: Any = getattr(cmd, "command_type", None)
            try:
                ctype = CommandType(raw)
            except ValueError:
                raise CommandError(BAD_COMMAND, f"command {i} of {n}: unknown command type {raw!r} (known: "
                                                f"{', '.join(c.value for c in CommandType)})") from None
            where = f"command {i} of {n} ({ctype.value})"
            attrs = getattr(cmd, "attrs", None)
            if attrs is None:
                attrs = {}
            if not isinstance(attrs, dict):
                raise CommandError(BAD_COMMAND, f"{where}: attributes must be a mapping, got {type(attrs).__name__}")
            unknown = sorted(str(k) for k in attrs if k not in COMMAND_ATTRIBUTES[ctype])
            if unknown:
                raise CommandError(BAD_COMMAND, f"{where}: unknown attribute {unknown[0]!r} (known: "
                                                f"{', '.join(COMMAND_ATTRIBUTES[ctype])})")
            if ctype in CLOSE_COMMANDS and i != n:
                raise CommandError(BAD_COMMAND, f"{where}: a command that closes the workflow must be the last "
                                                f"command of the task, but {n - i} more follow it")
            eager = False
            if ctype == C.ScheduleActivityTask:
                norm = self._check_activity(st, attrs, where)
                eager = attrs.get("request_eager_execution", False)
                if not isinstance(eager, bool):
                    raise CommandError(BAD_COMMAND, f"{where}: request_eager_execution must be true or false, got "
                                                    f"{eager!r}")
                if norm["activity_id"] in activity_ids:
                    raise CommandError(BAD_COMMAND, f"{where}: activity_id {norm['activity_id']!r} is already used "
                                                    "by a pending activity of this workflow")
                activity_ids.add(norm["activity_id"])
                new_activities += 1
            elif ctype == C.StartTimer:
                norm = self._check_timer(attrs, where)
                if norm["timer_id"] in timers or norm["timer_id"] in fired:
                    raise CommandError(BAD_COMMAND, f"{where}: timer_id {norm['timer_id']!r} is already used by a "
                                                    "pending timer of this workflow")
                timers.add(norm["timer_id"])
            elif ctype == C.CancelTimer:
                tid = attrs.get("timer_id")
                if not isinstance(tid, str) or not tid:
                    raise CommandError(BAD_COMMAND, f"{where}: timer_id must be a non-empty string, got {tid!r}")
                if tid in timers:
                    timers.discard(tid)
                elif tid in fired:
                    fired.discard(tid)
                else:
                    raise CommandError(BAD_COMMAND, f"{where}: no pending timer has timer_id {tid!r}")
                norm = {"timer_id": tid}
            elif ctype == C.RecordMarker:
                name = attrs.get("marker_name")
                if not isinstance(name, str) or not name:
                    raise CommandError(BAD_COMMAND, f"{where}: marker_name must be a non-empty string, got {name!r}")
                details = attrs.get("details")
                self._payload_cmd(details, f"{where}: details of marker {name!r}")
                norm = {"marker_name": name, "details": details}
            elif ctype == C.CompleteWorkflowExecution:
                result = attrs.get("result")
                self._payload_cmd(result, f"{where}: result")
                norm = {"result": result}
            elif ctype == C.FailWorkflowExecution:
                f = attrs.get("failure")
                if not isinstance(f, dict) or not isinstance(f.get("message", ""), str):
                    raise CommandError(BAD_COMMAND, f"{where}: failure must be a failure mapping with a message, "
                                                    f"got {f!r}"[:500])
                self._payload_cmd(f, f"{where}: failure")
                norm = {"failure": Failure.from_dict(f).to_dict()}
            elif ctype == C.CancelWorkflowExecution:
                details = attrs.get("details")
                self._payload_cmd(details, f"{where}: details")
                norm = {"details": details}
            elif ctype == C.ContinueAsNewWorkflowExecution:
                norm = self._check_continue_as_new(st, attrs, where)
            else:
                try:
                    norm = self.proc.check(st, ctype, attrs, where)
                except BadCommand as e:
                    raise CommandError(BAD_COMMAND, str(e)) from None
                if ctype == C.StartChildWorkflowExecution:
                    new_children += 1
                elif ctype in REQUEST_COMMANDS:
                    new_requests += 1
            out.append(_Cmd(ctype, norm, eager))
        if len(st.activities) + new_activities > self.limits.max_pending_activities:
            raise CommandError(LIMIT_EXCEEDED, f"the workflow would have {len(st.activities) + new_activities} pending "
                                               f"activities; the limit is {self.limits.max_pending_activities} "
                                               "(limits.max_pending_activities)")
        if len(timers) > self.limits.max_pending_timers:
            raise CommandError(LIMIT_EXCEEDED, f"the workflow would have {len(timers)} pending timers; the limit is "
                                               f"{self.limits.max_pending_timers} (limits.max_pending_timers)")
        problem = self.proc.check_limits(st, new_children, new_requests)
        if problem:
            raise CommandError(LIMIT_EXCEEDED, problem)
        return out

    def _check_continue_as_new(self, st: MutableState, a: dict[str, Any], where: str) -> dict[str, Any]:
        wtype = a.get("workflow_type") or st.workflow_type
        if not isinstance(wtype, str) or check_id(wtype, "workflow_type"):
            raise CommandError(BAD_COMMAND, f"{where}: workflow_type must be a string, got {wtype!r}")
        tq, inp = self._task_queue_and_input(st, a, where)
        norm: dict[str, Any] = {"workflow_type": wtype, "task_queue": tq, "input": inp}
        for name in ("run_timeout_ms", "task_timeout_ms"):
            norm[name] = self._ms(a, name, where) if a.get(name) is not None else None
        return norm

    def _task_queue_and_input(self, st: MutableState, a: dict[str, Any], where: str) -> tuple[str, list[Any]]:
        """A command's task queue (default: the run's) and its input arguments, checked."""
        tq = a.get("task_queue") or st.task_queue
        if not isinstance(tq, str) or check_id(tq, "task_queue"):
            raise CommandError(BAD_COMMAND, f"{where}: task_queue must be a string, got {tq!r}")
        inp = a.get("input")
        if inp is None:
            inp = []
        if not isinstance(inp, list):
            raise CommandError(BAD_COMMAND, f"{where}: input must be a list of arguments, got {type(inp).__name__}")
        self._payload_cmd(inp, f"{where}: input")
        return tq, inp

    def _payload_cmd(self, value: Any, what: str) -> None:
        try:
            self.payload(value, what)
        except InvalidArgument as e:
            if e.reason == codec.REASON_TOO_DEEP:  # the message names limits.max_payload_depth
                raise CommandError(LIMIT_EXCEEDED, e.message) from None
            cause = LIMIT_EXCEEDED if e.reason == "PayloadTooLarge" else BAD_COMMAND
            raise CommandError(cause, e.message + (" (limits.max_payload_bytes)" if cause == LIMIT_EXCEEDED
                                                   else "")) from None

    def _ms(self, attrs: dict[str, Any], name: str, where: str) -> int:
        v = attrs.get(name)
        if v is None:
            return 0
        if not _is_int(v) or v < 0 or v > MAX_DURATION_MS:
            raise CommandError(BAD_COMMAND, f"{where}: {name} must be a whole number of milliseconds between 0 and "
                                            f"{MAX_DURATION_MS} (100 years), got {v!r}")
        return int(v)

    def _check_activity(self, st: MutableState, a: dict[str, Any], where: str) -> dict[str, Any]:
        aid = a.get("activity_id")
        if not isinstance(aid, str) or check_id(aid, "activity_id"):
            raise CommandError(BAD_COMMAND, f"{where}: activity_id must be a non-empty string, got {aid!r}")
        atype = a.get("activity_type")
        if not isinstance(atype, str) or check_id(atype, "activity_type"):
            raise CommandError(BAD_COMMAND, f"{where}: activity_type must be a non-empty string, got {atype!r}")
        where = f"{where} activity {atype!r}"
        tq, inp = self._task_queue_and_input(st, a, where)
        ctx = a.get("context")
        if ctx is None:
            ctx = {}
        if not isinstance(ctx, dict):
            raise CommandError(BAD_COMMAND, f"{where}: context must be a mapping, got {type(ctx).__name__}")
        self._payload_cmd(ctx, f"{where}: context")
        s2c = self._ms(a, "schedule_to_close_timeout_ms", where)
        s2s = self._ms(a, "schedule_to_start_timeout_ms", where)
        stc = self._ms(a, "start_to_close_timeout_ms", where)
        hb = self._ms(a, "heartbeat_timeout_ms", where)
        if not stc:
            stc = s2c or self.hcfg.activity_start_to_close_default_ms
        if s2c:
            stc = min(stc, s2c)
            if s2s:
                s2s = min(s2s, s2c)
        if hb:
            hb = min(hb, stc)
        rp = a.get("retry_policy")
        factor = self.hcfg.activity_retry_maximum_interval_factor
        if rp is None:
            initial = self.hcfg.activity_retry_initial_ms
            policy = RetryPolicy(initial_interval_ms=initial, maximum_interval_ms=initial * factor)
        else:
            if not isinstance(rp, dict):
                raise CommandError(BAD_COMMAND, f"{where}: retry_policy must be a mapping, got {type(rp).__name__}")
            unknown_rp = sorted(str(k) for k in rp if k not in RetryPolicy().to_dict())
            if unknown_rp:
                raise CommandError(BAD_COMMAND, f"{where}: unknown retry_policy key {unknown_rp[0]!r} (known: "
                                                f"{', '.join(RetryPolicy().to_dict())})")
            nret = rp.get("non_retryable_error_types")
            if nret is not None and not isinstance(nret, list):
                raise CommandError(BAD_COMMAND, f"{where}: invalid retry_policy: non_retryable_error_types must be "
                                                f"a list of error kinds, got {type(nret).__name__}")
            try:
                policy = RetryPolicy.from_dict(rp)
            except (TypeError, ValueError, OverflowError) as e:
                raise CommandError(BAD_COMMAND, f"{where}: invalid retry_policy: {e}") from None
            problem = None
            if policy.initial_interval_ms <= 0:
                problem = f"initial_interval_ms must be > 0, got {policy.initial_interval_ms}"
            elif policy.backoff_coefficient < 1:
                problem = f"backoff_coefficient must be >= 1, got {policy.backoff_coefficient}"
            elif policy.maximum_attempts < 0:
                problem = f"maximum_attempts must be >= 0, got {policy.maximum_attempts}"
            elif policy.maximum_interval_ms < 0 or (policy.maximum_interval_ms and
                                                    policy.maximum_interval_ms < policy.initial_interval_ms):
                problem = (f"maximum_interval_ms ({policy.maximum_interval_ms}) must be 0 or >= "
                           f"initial_interval_ms ({policy.initial_interval_ms})")
            elif not all(isinstance(t, str) for t in policy.non_retryable_error_types):
                problem = "non_retryable_error_types must be a list of error kinds (strings)"
            else:
                problem = policy.out_of_range()
            if problem:
                raise CommandError(BAD_COMMAND, f"{where}: invalid retry_policy: {problem}")
            if not policy.maximum_interval_ms:
                policy.maximum_interval_ms = policy.initial_interval_ms * factor
        return {"activity_id": aid, "activity_type": atype, "task_queue": tq, "input": inp,
                "schedule_to_close_timeout_ms": s2c, "schedule_to_start_timeout_ms": s2s,
                "start_to_close_timeout_ms": stc, "heartbeat_timeout_ms": hb, "retry_policy": policy.to_dict(),
                "context": ctx}

    def _check_timer(self, a: dict[str, Any], where: str) -> dict[str, Any]:
        tid = a.get("timer_id")
        if not isinstance(tid, str) or check_id(tid, "timer_id"):
            raise CommandError(BAD_COMMAND, f"{where}: timer_id must be a non-empty string, got {tid!r}")
        v = a.get("start_to_fire_timeout_ms")
        if not _is_int(v) or v < 0 or v > MAX_DURATION_MS:
            raise CommandError(BAD_COMMAND, f"{where}: start_to_fire_timeout_ms must be a whole number of "
                                            f"milliseconds between 0 and {MAX_DURATION_MS} (100 years), got {v!r}")
        return {"timer_id": tid, "start_to_fire_timeout_ms": int(v)}

    def _apply_command(self, m: Mutation, cmd: _Cmd, done_id: int, identity: str = "") -> bool:
        """Turn a validated command into events and tasks; True if visibility must be updated."""
        st = m.state
        a = cmd.attrs
        t = cmd.type
        if t == C.ScheduleActivityTask:
            ev = m.event(E.ActivityTaskScheduled, {**a, "workflow_task_completed_event_id": done_id})
            info = ActivityInfo(
                scheduled_event_id=ev.event_id, activity_id=a["activity_id"], activity_type=a["activity_type"],
                task_queue=a["task_queue"], scheduled_time_ms=m.now,
                schedule_to_close_ms=a["schedule_to_close_timeout_ms"],
                schedule_to_start_ms=a["schedule_to_start_timeout_ms"],
                start_to_close_ms=a["start_to_close_timeout_ms"], heartbeat_ms=a["heartbeat_timeout_ms"],
                retry_policy=a["retry_policy"], attempt=1, state=SCHEDULED, attempt_scheduled_time_ms=m.now)
            st.activities[ev.event_id] = info
            if cmd.eager and info.task_queue == st.task_queue:
                # Eager execution: started now, for the worker completing this task (no transfer
                # task, no poll). If that worker never runs it, start-to-close times it out and it
                # is retried like any lost activity task.
                self.activity_started(m, info, f"eager-{done_id}-{ev.event_id}", identity)
                m.eager.append((info, ev.attrs))
            else:
                self._dispatch_activity(m, info)
            if info.schedule_to_close_ms:
                m.timer(m.now + info.schedule_to_close_ms, TM_ACTIVITY_TIMEOUT, sched=ev.event_id, attempt=0,
                        type=SCHEDULE_TO_CLOSE)
        elif t == C.StartTimer:
            ev = m.event(E.TimerStarted, {**a, "workflow_task_completed_event_id": done_id})
            fire = m.now + a["start_to_fire_timeout_ms"]
            st.timers[a["timer_id"]] = TimerInfo(a["timer_id"], ev.event_id, fire)
            m.timer(fire, TM_USER_TIMER, timer_id=a["timer_id"], started=ev.event_id)
        elif t == C.CancelTimer:
            tid = a["timer_id"]
            timer = st.timers.pop(tid, None)
            if timer is not None:
                started = timer.started_event_id
            else:  # it fired while the task ran: the workflow never saw it, so cancel the buffered fire
                started = 0
                for i, e in enumerate(st.buffered):
                    if e["t"] == E.TimerFired.value and e["a"].get("timer_id") == tid:
                        started = int(e["a"].get("started_event_id", 0))
                        del st.buffered[i]
                        break
            m.event(E.TimerCanceled, {"timer_id": tid, "started_event_id": started,
                                      "workflow_task_completed_event_id": done_id})
        elif t == C.RecordMarker:
            m.event(E.MarkerRecorded, {**a, "workflow_task_completed_event_id": done_id})
        elif t == C.CompleteWorkflowExecution:
            m.event(E.WorkflowExecutionCompleted, {"result": a["result"], "workflow_task_completed_event_id": done_id})
            self.close(m, WorkflowStatus.COMPLETED, result=a["result"])
        elif t == C.FailWorkflowExecution:
            m.event(E.WorkflowExecutionFailed, {"failure": a["failure"], "workflow_task_completed_event_id": done_id})
            self.close(m, WorkflowStatus.FAILED, failure=a["failure"])
        elif t == C.CancelWorkflowExecution:
            m.event(E.WorkflowExecutionCanceled, {"details": a["details"], "workflow_task_completed_event_id": done_id})
            self.close(m, WorkflowStatus.CANCELED, failure=Failure(
                "the workflow was canceled", kind=Kind.CANCELED, retryable=False, details=a["details"]).to_dict())
        elif t == C.ContinueAsNewWorkflowExecution:
            nxt = NextRun(new_run_id(), CONTINUE_AS_NEW, workflow_type=a["workflow_type"], task_queue=a["task_queue"],
                          input=a["input"], run_timeout_ms=a["run_timeout_ms"], task_timeout_ms=a["task_timeout_ms"])
            m.event(E.WorkflowExecutionContinuedAsNew, {
                "new_execution_run_id": nxt.run_id, "workflow_type": a["workflow_type"], "task_queue": a["task_queue"],
                "input": a["input"], "workflow_task_completed_event_id": done_id})
            self.close(m, WorkflowStatus.CONTINUED_AS_NEW, successor=nxt)
        else:
            return self.proc.apply(m, t, a, done_id)
        return False

    # ================================================================== activities

    def _dispatch_activity(self, m: Mutation, info: ActivityInfo) -> None:
        m.transfer_task(T_ACTIVITY_TASK, tq=info.task_queue, sched=info.scheduled_event_id, attempt=info.attempt)
        if info.schedule_to_start_ms:
            m.timer(m.now + info.schedule_to_start_ms, TM_ACTIVITY_TIMEOUT, sched=info.scheduled_event_id,
                    attempt=info.attempt, type=SCHEDULE_TO_START)

    @staticmethod
    def check_activity_token(st: MutableState, scheduled_event_id: int, attempt: int) -> ActivityInfo:
        where = f"activity task (scheduled event {scheduled_event_id}, attempt {attempt}) of " \
                f"{st.workflow_id}/{st.run_id}"
        if not st.running:
            raise NotFound(f"{where}: the run is already closed ({st.status})", reason="WorkflowClosed")
        info = st.activities.get(scheduled_event_id)
        if info is None:
            raise NotFound(f"{where}: the activity is no longer pending (it completed, failed or timed out)",
                           reason="StaleTask")
        if info.attempt != attempt or info.state != STARTED:
            raise NotFound(f"{where}: stale attempt (the activity is at attempt {info.attempt}, "
                           f"{info.state.lower()})", reason="StaleTask")
        return info

    def activity_started(self, m: Mutation, info: ActivityInfo, request_id: str, identity: str) -> None:
        info.state = STARTED
        info.started_time_ms = m.now
        info.request_id = request_id
        info.identity = identity
        info.last_heartbeat_ms = m.now
        m.dirty = True
        m.timer(m.now + info.start_to_close_ms, TM_ACTIVITY_TIMEOUT, sched=info.scheduled_event_id,
                attempt=info.attempt, type=START_TO_CLOSE)
        if info.heartbeat_ms:
            m.timer(m.now + info.heartbeat_ms, TM_ACTIVITY_TIMEOUT, sched=info.scheduled_event_id,
                    attempt=info.attempt, type=HEARTBEAT)

    def activity_completed(self, m: Mutation, info: ActivityInfo, result: Any, identity: str) -> None:
        try:
            self.payload(result, f"result of activity {info.activity_type!r}")
        except InvalidArgument as e:
            # As Temporal does: a result too large to record fails the activity for good.
            self.activity_failed(m, info, Failure(e.message, kind=Kind.LIMIT_EXCEEDED, retryable=False), identity)
            return
        self._activity_closed(m, info, E.ActivityTaskCompleted, {"result": result, "identity": identity})

    def activity_failed(self, m: Mutation, info: ActivityInfo, failure: Failure, identity: str,
                        timeout_type: str = "") -> None:
        fd = self.bounded_failure(failure, f"failure of activity {info.activity_type!r}")
        policy = RetryPolicy.from_dict(info.retry_policy)
        if not info.cancel_requested and policy.allows_retry(info.attempt, failure.kind, failure.retryable):
            delay = policy.backoff_ms(info.attempt)
            deadline = info.scheduled_time_ms + info.schedule_to_close_ms if info.schedule_to_close_ms else 0
            if not deadline or m.now + delay < deadline:
                info.attempt += 1
                info.state = BACKOFF
                info.last_failure = fd
                info.request_id = ""
                info.started_time_ms = 0
                info.attempt_scheduled_time_ms = m.now + delay
                m.dirty = True
                m.timer(m.now + delay, TM_ACTIVITY_RETRY, sched=info.scheduled_event_id, attempt=info.attempt)
                return
        if timeout_type:
            self._activity_closed(m, info, E.ActivityTaskTimedOut, {"failure": fd, "timeout_type": timeout_type})
        else:
            self._activity_closed(m, info, E.ActivityTaskFailed, {"failure": fd, "identity": identity})

    def _activity_closed(self, m: Mutation, info: ActivityInfo, close: EventType, attrs: dict[str, Any]) -> None:
        m.state.activities.pop(info.scheduled_event_id, None)
        self.add_external(m, [
            (E.ActivityTaskStarted, {"scheduled_event_id": info.scheduled_event_id, "attempt": info.attempt,
                                     "identity": info.identity, "request_id": info.request_id,
                                     "last_failure": info.last_failure}),
            (close, {"scheduled_event_id": info.scheduled_event_id, **attrs}),
        ])

    def activity_canceled(self, m: Mutation, info: ActivityInfo, details: Any, identity: str) -> None:
        """The activity stopped after its cancellation was requested."""
        where = (f"activity task (scheduled event {info.scheduled_event_id}) of {m.state.workflow_id}/"
                 f"{m.state.run_id}")
        if not info.cancel_requested:
            raise FailedPrecondition(f"{where}: cannot report it canceled: its cancellation was not requested "
                                     "(report it failed instead)", reason="CancelNotRequested")
        try:
            self.payload(details, f"details of canceled activity {info.activity_type!r}")
        except InvalidArgument:
            details = None  # too large or not JSON: the cancellation still counts
        self._activity_closed(m, info, E.ActivityTaskCanceled, {"details": details, "identity": identity})

    def heartbeat(self, m: Mutation, info: ActivityInfo, details: Any) -> None:
        self.payload(details, f"heartbeat details of activity {info.activity_type!r}")
        info.heartbeat_details = details
        info.last_heartbeat_ms = m.now
        m.dirty = True

    def _activity_timeout(self, m: Mutation, info: ActivityInfo, ttype: str, limit_ms: int) -> None:
        retryable = ttype in (START_TO_CLOSE, HEARTBEAT)
        cause = Failure.from_dict(info.last_failure) if info.last_failure else None
        failure = Failure(f"activity {info.activity_type!r} (id {info.activity_id}, attempt {info.attempt}) timed "
                          f"out: {ttype.lower().replace('_', '-')} timeout of {limit_ms} ms", kind=Kind.TIMEOUT,
                          retryable=retryable, details={"timeout_type": ttype}, cause=cause)
        self.activity_failed(m, info, failure, "history", timeout_type=ttype)

    # ================================================================== timers

    @staticmethod
    def timer_obsolete(st: MutableState, d: dict[str, Any]) -> bool:
        """Whether `on_timer` would ignore timer `d` now and whenever it comes due: what it waits
        for is over for good (the run closed, the task or activity attempt it guards completed,
        the user timer was cancelled). Ids, attempts and the run's state only move forward, so
        what this calls obsolete stays obsolete. False when unsure: the timer is then sent."""
        k = d["k"]
        if k == TM_DELETE_HISTORY:
            return False  # retention: due on a closed run by design
        if not st.running:
            return True
        if k == TM_WFT_TIMEOUT:
            w = st.wft
            return "attempt" in d and (w is None or (w.scheduled_event_id, w.started_event_id, w.attempt)
                                       != (d["sched"], d["started"], d["attempt"]))
        if k in (TM_ACTIVITY_TIMEOUT, TM_ACTIVITY_RETRY):
            info = st.activities.get(d["sched"])
            if info is None:
                return True  # completed, failed for good or cancelled: scheduled ids are never reused
            return d.get("type") != SCHEDULE_TO_CLOSE and info.attempt != d["attempt"]
        if k == TM_USER_TIMER:
            t = st.timers.get(d["timer_id"])
            return t is None or t.started_event_id != d["started"]
        return False

    def on_timer(self, m: Mutation, d: dict[str, Any]) -> None:
        """Apply a due timer task, or nothing if the state no longer expects it."""
        st = m.state
        if not st.running:
            return
        k = d["k"]
        if k == TM_USER_TIMER:
            t = st.timers.get(d["timer_id"])
            if t is None or t.started_event_id != d["started"]:
                return
            del st.timers[t.timer_id]
            self.add_external(m, [(E.TimerFired, {"timer_id": t.timer_id, "started_event_id": t.started_event_id})])
        elif k == TM_ACTIVITY_TIMEOUT:
            info = st.activities.get(d["sched"])
            if info is None:
                return
            ttype = d["type"]
            if ttype == SCHEDULE_TO_CLOSE:
                self._activity_timeout(m, info, ttype, info.schedule_to_close_ms)
            elif info.attempt != d["attempt"]:
                return
            elif ttype == SCHEDULE_TO_START and info.state == SCHEDULED:
                self._activity_timeout(m, info, ttype, info.schedule_to_start_ms)
            elif ttype == START_TO_CLOSE and info.state == STARTED:
                self._activity_timeout(m, info, ttype, info.start_to_close_ms)
            elif ttype == HEARTBEAT and info.state == STARTED:
                deadline = info.last_heartbeat_ms + info.heartbeat_ms
                if m.now < deadline:  # heartbeats came in: look again at the new deadline
                    m.timer(deadline, TM_ACTIVITY_TIMEOUT, sched=info.scheduled_event_id, attempt=info.attempt,
                            type=HEARTBEAT)
                else:
                    self._activity_timeout(m, info, ttype, info.heartbeat_ms)
        elif k == TM_ACTIVITY_RETRY:
            info = st.activities.get(d["sched"])
            if info is None or info.state != BACKOFF or info.attempt != d["attempt"]:
                return
            info.state = SCHEDULED
            info.attempt_scheduled_time_ms = m.now
            m.dirty = True
            self._dispatch_activity(m, info)
        elif k == TM_WFT_TIMEOUT:
            w = st.wft
            if w is None or w.state != STARTED or w.scheduled_event_id != d["sched"] or \
                    w.started_event_id != d["started"] or w.attempt != d.get("attempt", w.attempt):
                return
            self.wft_timed_out(m)
        elif k == TM_WFT_BACKOFF:
            w = st.wft
            if w is None or w.state != BACKOFF or w.attempt != d["attempt"] or \
                    d.get("at", w.scheduled_time_ms) != w.scheduled_time_ms:
                return  # not this backoff's timer (timers written before `at` existed: by attempt only)
            self.schedule_wft(m, w.attempt, transient=w.attempt > 1)
        elif k == TM_WORKFLOW_TIMEOUT:
            ttype = d.get("type", "RUN")
            m.event(E.WorkflowExecutionTimedOut, {"timeout_type": ttype})
            limit = st.execution_timeout_ms if ttype == "EXECUTION" else st.run_timeout_ms
            self.close(m, WorkflowStatus.TIMED_OUT, failure=Failure(
                f"workflow {st.workflow_id} timed out: {ttype.lower()} timeout of {limit} ms", kind=Kind.TIMEOUT,
                retryable=False, details={"timeout_type": ttype}).to_dict(), timeout_type=ttype)
        elif k == TM_CANCEL_DEADLINE:
            if st.cancel_deadline_ms != d.get("at"):
                return  # a later request moved the deadline earlier: its own timer fires
            self.terminate_running(m, f"terminated: the workflow was asked to cancel with a deadline of "
                                      f"{d.get('ms', 0)} ms and was still running when it passed", "history")
