"""The replay engine: a workflow's Lua code driven through its history (docs/protocol.md).

`WorkflowExecution` holds one run's code (a `WorkflowRun`) and its position in the history. It
processes the history in batches, each ending at a `WorkflowTaskStarted`:

* a batch whose task completed: apply its external events, run the code, and compare the
  commands with the command events that follow the `WorkflowTaskCompleted`;
* a batch whose task failed or timed out: skipped (its external events carry over);
* the final batch (the task being processed): apply, run, and return the new commands.

A cached execution continues from where it stopped: it checks the events its last commands
became and applies only what is new. `replay()` is the entry point for tests and tools.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from lupa import lua54

from legato.api import WorkflowStatus
from legato.commands import CLOSE_COMMANDS, EVENT_OF, Command, CommandType
from legato.config import Config, Limits
from legato.errors import Failure, Kind
from legato.events import COMMAND_EVENTS, EventType, HistoryEvent
from legato.process_control import EXIT as PROCESS_EXIT
from legato.process_control import SPAWNED as PROCESS_SPAWNED
from legato.process_control import exit_of as process_exit_of
from legato.process_control import spawned_of as process_spawned_of
from worker.entries import Registry, WorkflowEntry
from worker.runtime import (
    VERSION_MARKER,
    LuaVM,
    PendingCommand,
    RunInfo,
    TaskFailure,
    WorkflowRun,
    check_payload_sizes,
    thread_vm,
)

E = EventType
C = CommandType

_TASK_CLOSED = (E.WorkflowTaskCompleted, E.WorkflowTaskFailed, E.WorkflowTaskTimedOut)

# The attribute that tells command events apart (legato.commands.EVENT_OF), by event type.
_EVENT_KEY: dict[EventType, str | None] = {etype: key for etype, key in EVENT_OF.values()}

# Events that arrive from outside the workflow's code: applied at the start of the next batch.
_EXTERNAL = frozenset({
    E.ActivityTaskCompleted, E.ActivityTaskFailed, E.ActivityTaskTimedOut, E.ActivityTaskCanceled, E.TimerFired,
    E.WorkflowExecutionSignaled, E.WorkflowExecutionCancelRequested,
    E.ChildWorkflowExecutionStarted, E.StartChildWorkflowExecutionFailed,
    E.ChildWorkflowExecutionCompleted, E.ChildWorkflowExecutionFailed, E.ChildWorkflowExecutionCanceled,
    E.ChildWorkflowExecutionTerminated, E.ChildWorkflowExecutionTimedOut,
    E.ExternalWorkflowExecutionSignaled, E.SignalExternalWorkflowExecutionFailed,
    E.ExternalWorkflowExecutionCancelRequested, E.RequestCancelExternalWorkflowExecutionFailed,
    E.ExternalWorkflowExecutionTerminated, E.TerminateExternalWorkflowExecutionFailed,
    E.ExternalWorkflowExecutionMonitored, E.MonitorExternalWorkflowExecutionFailed,
    E.MonitoredWorkflowExecutionClosed,
})

# Command events whose outcome comes later, referring to them by `initiated_event_id`.
_INITIATED = frozenset({
    E.StartChildWorkflowExecutionInitiated, E.SignalExternalWorkflowExecutionInitiated,
    E.RequestCancelExternalWorkflowExecutionInitiated, E.TerminateExternalWorkflowExecutionInitiated,
    E.MonitorExternalWorkflowExecutionInitiated,
})

_OP_DONE = frozenset({E.ExternalWorkflowExecutionSignaled, E.ExternalWorkflowExecutionCancelRequested,
                      E.ExternalWorkflowExecutionTerminated, E.ExternalWorkflowExecutionMonitored})
_OP_FAILED = frozenset({E.SignalExternalWorkflowExecutionFailed, E.RequestCancelExternalWorkflowExecutionFailed,
                        E.TerminateExternalWorkflowExecutionFailed, E.MonitorExternalWorkflowExecutionFailed})

# A child's close without a failure attribute: the error it still gets.
_CHILD_CLOSED: dict[EventType, tuple[str, str]] = {
    E.ChildWorkflowExecutionCompleted: ("", ""),
    E.ChildWorkflowExecutionFailed: (Kind.UNKNOWN, "the child workflow failed"),
    E.ChildWorkflowExecutionCanceled: (Kind.CANCELED, "the child workflow was canceled"),
    E.ChildWorkflowExecutionTerminated: (Kind.TERMINATED, "the child workflow was terminated"),
    E.ChildWorkflowExecutionTimedOut: (Kind.TIMEOUT, "the child workflow timed out"),
}
_STATUS_FAILURE: dict[str, tuple[str, str]] = {
    WorkflowStatus.FAILED.value: (Kind.UNKNOWN, "the workflow failed"),
    WorkflowStatus.CANCELED.value: (Kind.CANCELED, "the workflow was canceled"),
    WorkflowStatus.TERMINATED.value: (Kind.TERMINATED, "the workflow was terminated"),
    WorkflowStatus.TIMED_OUT.value: (Kind.TIMEOUT, "the workflow timed out"),
}


def describe_event(ev: HistoryEvent) -> str:
    key = _EVENT_KEY.get(ev.event_type)
    if key is None:
        return f"event {ev.event_id} {ev.event_type.value}"
    return f"event {ev.event_id} {ev.event_type.value}({key}={ev.attrs.get(key)})"


def _failure(value: Any, default_kind: str, default_message: str) -> Failure:
    if isinstance(value, dict) and value:
        return Failure.from_dict(value)
    return Failure(default_message, default_kind, False)


def _is_version_marker(ev: HistoryEvent) -> bool:
    return ev.event_type is E.MarkerRecorded and ev.attrs.get("marker_name") == VERSION_MARKER


def _same_version(cmd: PendingCommand, ev: HistoryEvent) -> bool:
    if cmd.ctype is not C.RecordMarker or cmd.key != VERSION_MARKER:
        return False
    details = ev.attrs.get("details")
    return isinstance(details, dict) and details.get("change_id") == cmd.data.get("change_id")


def _nondeterminism(message: str, source: str | None) -> TaskFailure:
    where = f" at {source}" if source else ""
    return TaskFailure("NON_DETERMINISTIC", Failure(
        f"non-deterministic workflow: {message}{where}; the code no longer matches the recorded history "
        "(restore the old code, or keep it for runs started before the change)",
        Kind.NON_DETERMINISTIC, False, source=source))


def match_commands(commands: list[PendingCommand], recorded: list[HistoryEvent],
                   after_event_id: int) -> list[tuple[PendingCommand, HistoryEvent]]:
    """Compare a batch's commands with the events they became; raise TaskFailure(NON_DETERMINISTIC).

    Returns the (command, event) pairs. A recorded `version` marker that the code no longer issues
    (its workflow.version call was removed) is skipped: the only command event replay may skip.
    """
    pairs: list[tuple[PendingCommand, HistoryEvent]] = []
    j, n = 0, len(recorded)
    for cmd in commands:
        while j < n and _is_version_marker(recorded[j]) and not _same_version(cmd, recorded[j]):
            j += 1
        if j >= n:
            raise _nondeterminism(
                f"the code issued {cmd.describe()} but the history has no command event for it "
                f"(after event {recorded[-1].event_id if recorded else after_event_id})", cmd.line)
        ev = recorded[j]
        etype, key = EVENT_OF[cmd.ctype]
        if ev.event_type is not etype or (key is not None and ev.attrs.get(key) != cmd.key):
            raise _nondeterminism(f"{describe_event(ev)} was recorded, but the code issued {cmd.describe()}",
                                  cmd.line)
        pairs.append((cmd, ev))
        j += 1
    for ev in recorded[j:]:
        if not _is_version_marker(ev):
            last = commands[-1].line if commands else None
            raise _nondeterminism(f"{describe_event(ev)} was recorded, but the code issued no command for it", last)
    return pairs


@dataclass(slots=True)
class ExecutionState:
    """Position of an execution in its history (what a cache entry must agree with)."""

    next_index: int = 0  # index in the history of the next event to read
    last_started_event_id: int = 0  # the WorkflowTaskStarted of the last batch that ran code
    unmatched: list[PendingCommand] | None = None  # commands of the last final batch, events not yet seen
    pending: list[HistoryEvent] = field(default_factory=list)  # external events not yet applied


class WorkflowExecution:
    """One run's workflow code and its replay position."""

    __slots__ = ("__weakref__", "_activity_events", "_activity_ids", "_seqs", "broken", "closed", "entry", "limits",
                 "namespace", "registry", "run", "run_id", "state", "task_queue", "vm", "workflow_id")

    def __init__(self, entry: WorkflowEntry, registry: Registry, limits: Limits, *,
                 namespace: str = "default", workflow_id: str = "", run_id: str = "", task_queue: str = "",
                 vm: LuaVM | None = None) -> None:
        self.entry = entry
        self.vm = vm or thread_vm()  # the shared Lua state the run lives in
        self.registry = registry
        self.limits = limits
        self.namespace = namespace
        self.workflow_id = workflow_id
        self.run_id = run_id
        self.task_queue = task_queue
        self.run: WorkflowRun | None = None
        self.state = ExecutionState()
        self.closed = False
        self.broken = False  # a task failed: never reuse
        self._activity_ids: dict[int, str] = {}  # ActivityTaskScheduled event id -> activity id
        self._activity_events: dict[str, int] = {}  # and back, for RequestCancelActivityTask
        self._seqs: dict[int, int] = {}  # ...Initiated event id -> the command's seq (children, signals, ...)

    @property
    def last_started_event_id(self) -> int:
        return self.state.last_started_event_id

    def can_continue(self, history: list[HistoryEvent], previous_started_event_id: int) -> bool:
        """Whether this (cached) execution can apply just the new events of `history`."""
        st = self.state
        if self.broken or self.closed or self.run is None or st.unmatched is None:
            return False
        if st.last_started_event_id != previous_started_event_id or previous_started_event_id == 0 or not history:
            return False
        # the next event is the last task's WorkflowTaskCompleted: in a whole history, or first in
        # one that carries only the new events (a sticky task)
        i = st.last_started_event_id + 1 - history[0].event_id
        return (0 <= i < len(history) and history[i].event_id == st.last_started_event_id + 1
                and history[i].event_type is E.WorkflowTaskCompleted)

    def rebase(self, history: list[HistoryEvent]) -> None:
        """Point the position at `history` (one can_continue accepted), which may start anywhere."""
        self.state.next_index = self.state.last_started_event_id + 1 - history[0].event_id

    def dispose(self) -> None:
        """Drop the run's Lua state; the execution cannot be used afterwards."""
        self.broken = True
        if self.run is not None:
            self.run.dispose()
            self.run = None

    def memory_used(self) -> int:
        return self.run.memory_used() if self.run is not None else 0

    def process(self, history: list[HistoryEvent]) -> list[Command]:
        """Advance through `history`; return the commands of its final batch ([] if it has none).

        Raises TaskFailure; the execution is then broken and must be dropped.

        Lua may allocate limits.lua_memory_bytes during the call; a run that holds more than that
        between its tasks is not kept (`broken`): its next task replays it, under the same limit.
        """
        vm = self.vm
        with vm.task(self.limits.lua_memory_bytes):
            before = vm.memory_used()
            try:
                return self._process_guarded(history)
            finally:
                run = self.run
                if run is not None and not self.broken:
                    run.retained += vm.memory_used() - before
                    if run.retained > self.limits.lua_memory_bytes:
                        self.broken = True

    def _process_guarded(self, history: list[HistoryEvent]) -> list[Command]:
        try:
            return self._process(history)
        except TaskFailure:
            self.broken = True
            raise
        except lua54.LuaError as err:  # raised by the hook while the host fed the run an event
            self.broken = True
            if self.run is None:
                raise
            raise self.run.lua_failure(err) from None
        except Exception:
            self.broken = True
            raise

    def _process(self, history: list[HistoryEvent]) -> list[Command]:
        st = self.state
        i = st.next_index
        n = len(history)
        if st.unmatched is not None:
            # the last final batch's commands: now in the history after its WorkflowTaskCompleted
            if i < n and history[i].event_type is E.WorkflowTaskCompleted:
                j = self._command_events_end(history, i + 1)
                self._match(st.unmatched, history, i + 1, j)
                st.unmatched = None
                i = j
            elif i < n:
                raise TaskFailure("WORKFLOW_ERROR", Failure(
                    f"internal: cached run expected WorkflowTaskCompleted at index {i}, found "
                    f"{history[i].event_type.value}", Kind.INTERNAL, False))
        while i < n:
            ev = history[i]
            t = ev.event_type
            if t is E.WorkflowTaskStarted:
                nxt = history[i + 1].event_type if i + 1 < n else None
                if nxt is None:
                    cmds = self._run_batch(history, ev, None)
                    st.next_index = i + 1
                    st.last_started_event_id = ev.event_id
                    st.unmatched = cmds
                    built = [self.run.build(c) for c in cmds] if self.run else []
                    check_payload_sizes(built, cmds, self.limits)
                    if any(c.command_type in CLOSE_COMMANDS for c in built):
                        self.closed = True
                    return built
                if nxt is E.WorkflowTaskCompleted:
                    j = self._command_events_end(history, i + 2)
                    recorded = history[i + 2:j]
                    cmds = self._run_batch(history, ev, recorded)
                    self._match(cmds, history, i + 2, j)
                    st.last_started_event_id = ev.event_id
                    i = j
                    continue
                # failed / timed out (or anything else): skipped, its external events carry over
                i += 2 if nxt in _TASK_CLOSED else 1
                continue
            if t is E.WorkflowExecutionStarted:
                self._start(ev)
            elif t in _EXTERNAL:
                st.pending.append(ev)
            elif t is E.ActivityTaskScheduled:  # outside a command position (not expected); keep the id
                self._activity_ids[ev.event_id] = str(ev.attrs.get("activity_id"))
                self._activity_events[str(ev.attrs.get("activity_id"))] = ev.event_id
            i += 1
        st.next_index = n
        st.unmatched = None
        return []

    @staticmethod
    def _command_events_end(history: list[HistoryEvent], j: int) -> int:
        n = len(history)
        while j < n and history[j].event_type in COMMAND_EVENTS:
            j += 1
        return j

    def _match(self, cmds: list[PendingCommand], history: list[HistoryEvent], start: int, end: int) -> None:
        recorded = history[start:end]
        for cmd, ev in match_commands(cmds, recorded, history[start - 1].event_id if start > 0 else 0):
            t = ev.event_type
            if t is E.ActivityTaskScheduled:
                aid = str(ev.attrs.get("activity_id"))
                self._activity_ids[ev.event_id] = aid
                self._activity_events[aid] = ev.event_id
            elif t in _INITIATED:
                self._seqs[ev.event_id] = cmd.data[0]

    def _start(self, ev: HistoryEvent) -> None:
        a = ev.attrs
        args = a.get("input")
        if args is None:
            args = []
        elif not isinstance(args, list):
            args = [args]
        info = RunInfo(namespace=self.namespace, workflow_id=self.workflow_id, run_id=self.run_id,
                       workflow_type=str(a.get("workflow_type") or self.entry.workflow_type),
                       task_queue=str(a.get("task_queue") or self.task_queue),
                       attempt=int(a.get("attempt") or 1), context=dict(a.get("context") or {}))
        self.task_queue = info.task_queue
        self.run = WorkflowRun(self.entry, self.registry, self.limits, info, a.get("random_seed"), args, self.vm)
        self.run.scheduled_event_of = self._activity_events

    def _run_batch(self, history: list[HistoryEvent], started: HistoryEvent,
                   recorded: list[HistoryEvent] | None) -> list[PendingCommand]:
        run = self.run
        if run is None:
            raise TaskFailure("WORKFLOW_ERROR", Failure(
                "the history does not start with WorkflowExecutionStarted", Kind.INTERNAL, False))
        if self.closed:
            return []
        run.begin_batch(history, started, recorded)
        try:
            pending = self.state.pending
            for ev in pending:
                self._apply(run, ev)
            pending.clear()
            result = run.run()
            if result.status != "done" and run.cancel_unhandled():
                # canceled, and the code did not ask for process.events() (docs/protocol.md, Cancellation)
                self.closed = recorded is None
                return [run.cancel_command()]
            if result.status == "done" and recorded is None:
                self.closed = True
            return result.commands
        except lua54.LuaMemoryError:
            raise TaskFailure("LIMIT_EXCEEDED", Failure(
                "the workflow ran out of Lua memory (limits.lua_memory_bytes)", Kind.LIMIT_EXCEEDED, False)) from None
        finally:
            run.end_batch()

    def _apply(self, run: WorkflowRun, ev: HistoryEvent) -> None:
        """Apply one external event."""
        t = ev.event_type
        a = ev.attrs
        if t is E.ActivityTaskCompleted:
            aid = self._activity_done(a)
            if aid is not None:
                run.resolve_activity(aid, a.get("result"))
        elif t is E.ActivityTaskFailed or t is E.ActivityTaskTimedOut or t is E.ActivityTaskCanceled:
            aid = self._activity_done(a)
            if aid is not None:
                failure = a.get("failure")
                if t is E.ActivityTaskTimedOut and not failure:
                    failure = {"message": f"activity timed out ({a.get('timeout_type', 'START_TO_CLOSE')})",
                               "kind": Kind.TIMEOUT, "retryable": False}
                elif t is E.ActivityTaskCanceled:
                    failure = {"message": "the activity was canceled", "kind": Kind.CANCELED, "retryable": False,
                               "details": a.get("details")}
                run.fail_activity(aid, failure)
        elif t is E.TimerFired:
            run.fire_timer(str(a.get("timer_id")))
        elif t is E.WorkflowExecutionSignaled:
            name = str(a.get("signal_name", ""))
            if name == PROCESS_EXIT:  # a process this workflow monitors or links to ended (docs/processes.md)
                link, value, failure = process_exit_of(a.get("input"))
                run.monitored_closed(str(a.get("sender") or ""), "", link, value, failure)
            elif name == PROCESS_SPAWNED:  # a process this workflow spawned runs, or was refused
                seq, failure = process_spawned_of(a.get("input"))
                if seq is not None and failure is None:
                    run.child_started(seq, str(a.get("sender") or ""), "")
                elif seq is not None and failure is not None:
                    run.child_start_failed(seq, failure)
            else:
                run.signal(name, a.get("input"), a.get("sender") or None)
        elif t is E.WorkflowExecutionCancelRequested:
            run.cancel_requested(str(a.get("reason") or ""))
        elif t is E.ChildWorkflowExecutionStarted:
            seq = self._seqs.get(int(a.get("initiated_event_id", 0)))
            if seq is not None:
                run.child_started(seq, str(a.get("workflow_id", "")), str(a.get("run_id", "")))
        elif t is E.StartChildWorkflowExecutionFailed:
            seq = self._seqs.pop(int(a.get("initiated_event_id", 0)), None)
            if seq is not None:
                run.child_start_failed(seq, _failure(a.get("failure"), Kind.UNKNOWN,
                                                     "the child workflow did not start"))
        elif t in _CHILD_CLOSED:
            seq = self._seqs.pop(int(a.get("initiated_event_id", 0)), None)
            if seq is not None:
                kind, message = _CHILD_CLOSED[t]
                failure = None if t is E.ChildWorkflowExecutionCompleted else _failure(a.get("failure"), kind, message)
                run.child_closed(seq, str(a.get("workflow_id", "")), str(a.get("run_id", "")), a.get("result"),
                                 failure)
        elif t in _OP_DONE:
            seq = self._seqs.pop(int(a.get("initiated_event_id", 0)), None)
            if seq is not None:
                run.op_done(seq, None)
        elif t in _OP_FAILED:
            seq = self._seqs.pop(int(a.get("initiated_event_id", 0)), None)
            if seq is not None:
                run.op_done(seq, _failure(a.get("failure"), Kind.NOT_FOUND,
                                          f"workflow {a.get('workflow_id')!r} not found"))
        elif t is E.MonitoredWorkflowExecutionClosed:
            status = str(a.get("status") or "")
            failure = None
            if status != WorkflowStatus.COMPLETED.value:
                kind, message = _STATUS_FAILURE.get(status, (Kind.UNKNOWN, f"the workflow closed ({status})"))
                failure = _failure(a.get("failure"), kind, message)
            run.monitored_closed(str(a.get("workflow_id", "")), str(a.get("run_id", "")), bool(a.get("link")),
                                 a.get("result"), failure)

    def _activity_done(self, a: dict[str, Any]) -> str | None:
        aid = self._activity_ids.pop(int(a.get("scheduled_event_id", 0)), None)
        if aid is not None:
            self._activity_events.pop(aid, None)
        return aid


def new_execution(registry: Registry, workflow_type: str, config: Config | Limits | None = None, *,
                  namespace: str = "default", workflow_id: str = "", run_id: str = "",
                  task_queue: str = "") -> WorkflowExecution:
    limits = _limits(config)
    entry = registry.workflow_for_type(workflow_type)
    if entry is None:
        raise TaskFailure("WORKFLOW_ERROR", Failure(
            f"workflow type {workflow_type!r} is not registered on this worker", Kind.NOT_FOUND, False))
    return WorkflowExecution(entry, registry, limits, namespace=namespace, workflow_id=workflow_id,
                             run_id=run_id, task_queue=task_queue)


def _limits(config: Config | Limits | None) -> Limits:
    if config is None:
        return Limits()
    if isinstance(config, Limits):
        return config
    return config.limits


def replay(registry: Registry, history: list[HistoryEvent], config: Config | Limits | None = None, *,
           workflow_type: str | None = None, workflow_id: str = "replay", run_id: str = "replay",
           namespace: str = "default") -> list[Command]:
    """Run a workflow's code against a recorded history.

    Returns the commands of the final batch (when the history ends with a `WorkflowTaskStarted`),
    or [] for a history whose every task completed. Raises `TaskFailure` with cause
    `NON_DETERMINISTIC` (or another cause) when the code does not replay the history.
    """
    if not history or history[0].event_type is not E.WorkflowExecutionStarted:
        raise ValueError("a history starts with WorkflowExecutionStarted")
    wtype = workflow_type or str(history[0].attrs.get("workflow_type", ""))
    ex = new_execution(registry, wtype, config, namespace=namespace, workflow_id=workflow_id, run_id=run_id,
                       task_queue=str(history[0].attrs.get("task_queue", "")))
    return ex.process(history)

