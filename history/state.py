"""Mutable state of a run (a JSON blob in the `runs` table) and the Mutation that changes it.

A `Mutation` collects what one state transition produces: new history events (ids assigned from
`next_event_id`), new transfer tasks and new timer tasks. The shard's committer turns one or more
mutations into ONE atomic conditional write.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import MISSING, dataclass, field, fields
from typing import Any

from legato import codec
from legato.api import WorkflowExecutionInfo, WorkflowStatus
from legato.events import EventType, HistoryEvent

# Workflow task / activity states (the strings describe shows).
SCHEDULED = "SCHEDULED"
STARTED = "STARTED"
BACKOFF = "BACKOFF"

MAX_SIGNAL_REQUEST_IDS = 1000  # request ids of recent signals kept for dedupe, per run

# Transfer task kinds
T_WORKFLOW_TASK = "workflow_task"
T_ACTIVITY_TASK = "activity_task"
T_VISIBILITY = "visibility"
# issue 3: cross-workflow effects (history/process_tasks.py carries them out)
T_START_CHILD = "start_child"
T_SIGNAL_EXTERNAL = "signal_external"
T_CANCEL_EXTERNAL = "cancel_external"
T_TERMINATE_EXTERNAL = "terminate_external"
T_MONITOR_EXTERNAL = "monitor_external"
T_CLOSE_NOTIFY = "close_notify"  # tell the parent and the monitors that the run closed
T_PARENT_CLOSE_POLICY = "parent_close_policy"  # apply the open children's parent_close_policy
PROCESS_TRANSFER_KINDS = frozenset({T_START_CHILD, T_SIGNAL_EXTERNAL, T_CANCEL_EXTERNAL, T_TERMINATE_EXTERNAL,
                                    T_MONITOR_EXTERNAL, T_CLOSE_NOTIFY, T_PARENT_CLOSE_POLICY})

# Timer task kinds
TM_USER_TIMER = "user_timer"
TM_ACTIVITY_RETRY = "activity_retry"
TM_ACTIVITY_TIMEOUT = "activity_timeout"
TM_WFT_TIMEOUT = "wft_timeout"
TM_WFT_BACKOFF = "wft_backoff"
TM_WORKFLOW_TIMEOUT = "workflow_timeout"
TM_CANCEL_DEADLINE = "cancel_deadline"
# Retention: due when the closed run's retention has passed; deletes the run (history/api/delete_run.py).
TM_DELETE_HISTORY = "delete_history"

# Children (parent side)
INITIATED = "INITIATED"


@dataclass(slots=True)
class WorkflowTaskInfo:
    state: str = SCHEDULED  # SCHEDULED | STARTED | BACKOFF
    scheduled_event_id: int = 0  # 0 while in BACKOFF (no WorkflowTaskScheduled written yet)
    started_event_id: int = 0
    attempt: int = 1
    request_id: str = ""
    identity: str = ""
    timeout_ms: int = 0
    scheduled_time_ms: int = 0  # BACKOFF: when the next attempt gets scheduled
    started_time_ms: int = 0
    # A retry (attempt > 1) of a failing task: its WorkflowTaskScheduled/Started live here only
    # (docs/protocol.md, "Failed and timed-out tasks"). `scheduled_event_id` is then the id the
    # task was dispatched with (its identity for matching and tokens); the events the worker sees
    # are numbered from the history's end when it starts (started_event_id - 1, started_event_id).
    transient: bool = False
    # Bytes of the history before its WorkflowTaskStarted (what workflow.info() reports as
    # history_size); kept for a transient task, whose events are made again when it ends.
    history_size_bytes: int = 0


@dataclass(slots=True)
class ActivityInfo:
    scheduled_event_id: int
    activity_id: str
    activity_type: str
    task_queue: str
    scheduled_time_ms: int  # of the first attempt: schedule-to-close counts from here
    schedule_to_close_ms: int = 0
    schedule_to_start_ms: int = 0
    start_to_close_ms: int = 0
    heartbeat_ms: int = 0
    retry_policy: dict[str, Any] = field(default_factory=dict)
    attempt: int = 1
    state: str = SCHEDULED  # SCHEDULED | STARTED | BACKOFF
    attempt_scheduled_time_ms: int = 0
    started_time_ms: int = 0
    request_id: str = ""
    identity: str = ""
    last_failure: dict[str, Any] | None = None
    heartbeat_details: Any = None
    last_heartbeat_ms: int = 0
    cancel_requested: bool = False  # RequestCancelActivityTask while it ran: heartbeats say so


@dataclass(slots=True)
class TimerInfo:
    timer_id: str
    started_event_id: int
    fire_time_ms: int


@dataclass(slots=True)
class ChildInfo:
    """A child this run started (StartChildWorkflowExecutionInitiated), until it closes."""

    initiated_event_id: int
    namespace: str
    workflow_id: str
    workflow_type: str
    parent_close_policy: str
    state: str = INITIATED  # INITIATED | STARTED
    run_id: str = ""
    existing: bool = False  # use_existing returned someone else's run: not ours to close
    wait_for_cancellation: bool = False


@dataclass(slots=True)
class RequestInfo:
    """A signal / cancel / terminate / monitor request to another workflow, until its outcome."""

    initiated_event_id: int
    kind: str  # a T_* transfer kind
    namespace: str
    workflow_id: str
    link: bool = False
    remove: bool = False


@dataclass(slots=True)
class Registration:
    """One side of a monitor or link.

    In `MutableState.monitors` (who is told when this run closes): `namespace`/`pid` name the
    monitoring workflow (or caller pid), `run_id`/`initiated_event_id` its run and its
    MonitorExternalWorkflowExecutionInitiated (or StartChildWorkflowExecutionInitiated, `child`).
    In `MutableState.watching` (whose close this run waits to hear): `pid` is the watched
    workflow, `run_id` its run, `initiated_event_id` this run's event (0 when the other side made
    the link). `own`: a link this run made (the other side learns of it by a transfer task).
    """

    namespace: str
    pid: str
    run_id: str = ""
    initiated_event_id: int = 0
    link: bool = False
    child: bool = False
    own: bool = False

    def same(self, namespace: str, pid: str, link: bool) -> bool:
        return self.namespace == namespace and self.pid == pid and self.link == link


@dataclass(slots=True)
class MutableState:
    namespace: str
    workflow_id: str
    run_id: str
    workflow_type: str
    task_queue: str
    start_time_ms: int
    status: str = WorkflowStatus.RUNNING.value
    close_time_ms: int = 0
    next_event_id: int = 1
    history_bytes: int = 0
    execution_timeout_ms: int = 0
    run_timeout_ms: int = 0
    task_timeout_ms: int = 0
    start_request_id: str = ""
    first_run_id: str = ""
    memo: dict[str, Any] = field(default_factory=dict)
    search_attributes: dict[str, Any] = field(default_factory=dict)
    wft: WorkflowTaskInfo | None = None
    last_completed_wft_started_id: int = 0
    # The worker (poll identity) that completed the last workflow task: it has the run cached, so
    # its next workflow task carries only the events after that task (docs/protocol.md, "Sticky").
    sticky_identity: str = ""
    activities: dict[int, ActivityInfo] = field(default_factory=dict)
    timers: dict[str, TimerInfo] = field(default_factory=dict)
    # External events held back while a workflow task is started: {"t": event type, "a": attrs}.
    buffered: list[dict[str, Any]] = field(default_factory=list)
    signal_request_ids: list[str] = field(default_factory=list)
    cancel_requested: bool = False
    last_wft_failure: dict[str, Any] | None = None  # Failure dict, for describe / get_result
    last_wft_failure_cause: str = ""
    result: Any = None
    failure: dict[str, Any] | None = None
    # ---- issue 3 (docs/processes.md)
    attempt: int = 1  # workflow-level retry attempt
    input: list[Any] | None = None  # kept only when a retry or cron run will need it again
    context: dict[str, Any] = field(default_factory=dict)
    retry_policy: dict[str, Any] | None = None
    cron_schedule: str = ""
    execution_deadline_ms: int = 0  # across runs (retries, cron, continue-as-new); 0: none
    parent: dict[str, Any] | None = None  # ParentInfo.to_dict()
    parent_close_policy: str = "terminate"
    next_run_id: str = ""  # the run that continues this one (continue-as-new, retry, cron)
    cancel_request_id: str = ""
    cancel_deadline_ms: int = 0
    terminate_request_id: str = ""
    children: dict[int, ChildInfo] = field(default_factory=dict)
    requests: dict[int, RequestInfo] = field(default_factory=dict)
    monitors: list[Registration] = field(default_factory=list)
    watching: list[Registration] = field(default_factory=list)
    # Processes (process.lua on a process.host) this run spawned and has not heard the end of:
    # pid -> [the spawn's SignalExternalWorkflowExecutionInitiated id, its parent_close_policy].
    # Applied when the run closes (history/processes.py, `on_close`).
    processes: dict[str, list[Any]] = field(default_factory=dict)

    @property
    def running(self) -> bool:
        return self.status == WorkflowStatus.RUNNING.value

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.namespace, self.workflow_id, self.run_id)

    def activity_by_id(self, activity_id: str) -> ActivityInfo | None:
        for a in self.activities.values():
            if a.activity_id == activity_id:
                return a
        return None

    def buffered_signal_count(self) -> int:
        return sum(1 for e in self.buffered if e["t"] == EventType.WorkflowExecutionSignaled.value)

    def buffered_bytes(self) -> int:
        """The encoded size of the buffered events' attributes (each entry's "n"; 0 for an entry
        buffered before entries carried it): they join the history when the task completes."""
        return sum(int(e.get("n", 0)) for e in self.buffered)

    def has_buffered_signal_or_cancel(self) -> bool:
        return any(e["t"] in (EventType.WorkflowExecutionSignaled.value,
                              EventType.WorkflowExecutionCancelRequested.value) for e in self.buffered)

    def info(self) -> WorkflowExecutionInfo:
        return WorkflowExecutionInfo(
            namespace=self.namespace, workflow_id=self.workflow_id, run_id=self.run_id,
            workflow_type=self.workflow_type, task_queue=self.task_queue, status=WorkflowStatus(self.status),
            start_time_ms=self.start_time_ms, close_time_ms=self.close_time_ms,
            history_length=self.next_event_id - 1, memo=dict(self.memo),
            search_attributes=dict(self.search_attributes))

    # ------------------------------------------------------------ (de)serialization

    def encode(self) -> str:
        d = _flat_state(self)
        d["wft"] = None if self.wft is None else _flat_wft(self.wft)
        d["activities"] = [_flat_activity(a) for a in self.activities.values()]
        d["timers"] = [[t.timer_id, t.started_event_id, t.fire_time_ms] for t in self.timers.values()]
        if self.children:
            d["children"] = [_flat_child(c) for c in self.children.values()]
        if self.requests:
            d["requests"] = [_flat_request(r) for r in self.requests.values()]
        if self.monitors:
            d["monitors"] = [_flat_registration(r) for r in self.monitors]
        if self.watching:
            d["watching"] = [_flat_registration(r) for r in self.watching]
        return codec.dump_record(d)

    @classmethod
    def decode(cls, text: str) -> MutableState:
        d = codec.loads(text)
        st = cls(**{name: d[name] for name in _STATE_SCALARS if name in d})
        w = d.get("wft")
        st.wft = None if w is None else WorkflowTaskInfo(**_known(w, _WFT_FIELDS))
        st.activities = {}
        for a in d.get("activities") or []:
            info = ActivityInfo(**_known(a, _ACTIVITY_FIELDS))
            st.activities[info.scheduled_event_id] = info
        st.timers = {t[0]: TimerInfo(t[0], int(t[1]), int(t[2])) for t in d.get("timers") or []}
        for c in d.get("children") or []:
            child = ChildInfo(**_known(c, _CHILD_FIELDS))
            st.children[child.initiated_event_id] = child
        for r in d.get("requests") or []:
            req = RequestInfo(**_known(r, _REQUEST_FIELDS))
            st.requests[req.initiated_event_id] = req
        st.monitors = [Registration(**_known(r, _REG_FIELDS)) for r in d.get("monitors") or []]
        st.watching = [Registration(**_known(r, _REG_FIELDS)) for r in d.get("watching") or []]
        return st


_WFT_FIELDS = tuple(f.name for f in fields(WorkflowTaskInfo))
_ACTIVITY_FIELDS = tuple(f.name for f in fields(ActivityInfo))
_CHILD_FIELDS = tuple(f.name for f in fields(ChildInfo))
_REQUEST_FIELDS = tuple(f.name for f in fields(RequestInfo))
_REG_FIELDS = tuple(f.name for f in fields(Registration))
_STATE_SCALARS = tuple(f.name for f in fields(MutableState)
                       if f.name not in ("wft", "activities", "timers", "children", "requests", "monitors", "watching"))


_NO_DEFAULT: Any = object()


def _defaults(cls: type, names: tuple[str, ...]) -> tuple[tuple[str, Any], ...]:
    """(name, default) of the fields `names` of dataclass `cls` (_NO_DEFAULT: none)."""
    out = []
    for f in fields(cls):
        if f.name in names:
            if f.default is not MISSING:
                default = f.default
            elif f.default_factory is not MISSING:
                default = f.default_factory()
            else:
                default = _NO_DEFAULT
            out.append((f.name, default))
    return tuple(out)


def _flattener(cls: type, names: tuple[str, ...]) -> Callable[[Any], dict[str, Any]]:
    """A function giving the fields `names` of a `cls` that differ from their defaults (a value
    equal to its default but of another type, 0 for False, is kept): decoding fills the others
    back in (the constructors' defaults). A state is written at every transition; leaving out
    the defaults makes it several times shorter, and quicker to encode.

    The function is generated, one statement per field, as `dataclasses` generates `__init__`:
    a loop over the fields with `getattr` cost 2.5 times as much (a leaf's state with a started
    task and activity: 7.1 us against 2.8), and it ran at each of the five writes of every child."""
    env: dict[str, Any] = {}
    lines = ["def flat(o):", "    d = {}"]
    for i, (name, default) in enumerate(_defaults(cls, names)):
        if default is _NO_DEFAULT:
            lines.append(f"    d[{name!r}] = o.{name}")
            continue
        env[f"D{i}"], env[f"T{i}"] = default, type(default)
        lines.append(f"    v = o.{name}")
        lines.append(f"    if v.__class__ is not T{i} or v != D{i}:")
        lines.append(f"        d[{name!r}] = v")
    lines.append("    return d")
    exec("\n".join(lines), env)  # the text is made of field names and indexes only
    flat: Callable[[Any], dict[str, Any]] = env["flat"]
    return flat


_flat_state = _flattener(MutableState, _STATE_SCALARS)
_flat_wft = _flattener(WorkflowTaskInfo, _WFT_FIELDS)
_flat_activity = _flattener(ActivityInfo, _ACTIVITY_FIELDS)
_flat_child = _flattener(ChildInfo, _CHILD_FIELDS)
_flat_request = _flattener(RequestInfo, _REQUEST_FIELDS)
_flat_registration = _flattener(Registration, _REG_FIELDS)


def _known(d: dict[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if k in names}


@dataclass(slots=True)
class Mutation:
    """What one state transition of one run produces. `state` is changed in place; if the commit
    fails, the caller throws the cached state away and reloads it."""

    state: MutableState
    now: int
    expected_next_event_id: int | None  # None: a new run
    events: list[HistoryEvent] = field(default_factory=list)
    encoded: list[tuple[int, str]] = field(default_factory=list)
    transfer: list[dict[str, Any]] = field(default_factory=list)
    timers: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    closed: bool = False  # the run closed in this mutation (the current-run pointer changes)
    dirty: bool = False  # state changed without events or tasks (e.g. an activity started)
    # Activities started at once for the worker completing the workflow task (eager execution),
    # with their ActivityTaskScheduled attributes; the response hands them to that worker.
    eager: list[tuple[ActivityInfo, dict[str, Any]]] = field(default_factory=list)
    # The run that continues this one (continue-as-new, workflow retry, cron), created in the
    # same atomic write; the current-run pointer moves to it.
    successor: Mutation | None = None

    @classmethod
    def of(cls, state: MutableState, now: int) -> Mutation:
        return cls(state, now, state.next_event_id)

    def event(self, event_type: EventType, attrs: dict[str, Any], timestamp_ms: int | None = None) -> HistoryEvent:
        st = self.state
        ev = HistoryEvent(st.next_event_id, event_type, self.now if timestamp_ms is None else timestamp_ms, attrs)
        text = ev.encode()
        st.next_event_id += 1
        st.history_bytes += len(text.encode()) if not text.isascii() else len(text)
        self.events.append(ev)
        self.encoded.append((ev.event_id, text))
        return ev

    def transfer_task(self, kind: str, **data: Any) -> None:
        st = self.state
        self.transfer.append({"k": kind, "ns": st.namespace, "wf": st.workflow_id, "run": st.run_id,
                              "c": self.now, **data})

    def timer(self, fire_time_ms: int, kind: str, **data: Any) -> None:
        st = self.state
        self.timers.append((fire_time_ms, {"k": kind, "ns": st.namespace, "wf": st.workflow_id, "run": st.run_id,
                                           **data}))

    @classmethod
    def merged(cls, muts: list[Mutation]) -> Mutation:
        """Consecutive mutations of one run (each applied after the previous) as one: written
        together, conditioned on what the state was before the first."""
        if len(muts) == 1:
            return muts[0]
        out = cls(muts[0].state, muts[-1].now, muts[0].expected_next_event_id)
        for m in muts:
            out.events.extend(m.events)
            out.encoded.extend(m.encoded)
            out.transfer.extend(m.transfer)
            out.timers.extend(m.timers)
            out.eager.extend(m.eager)
            out.closed = out.closed or m.closed
            out.dirty = out.dirty or m.dirty
        out.successor = muts[-1].successor
        return out

    @property
    def empty(self) -> bool:
        return not (self.events or self.transfer or self.timers or self.closed or self.dirty)
