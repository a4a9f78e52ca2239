"""Mutable state of a run (a JSON blob in the `runs` table) and the Mutation that changes it.

A `Mutation` collects what one state transition produces: new history events (ids assigned from
`next_event_id`), new transfer tasks and new timer tasks. The shard's committer turns one or more
mutations into ONE atomic conditional write.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
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

# Timer task kinds
TM_USER_TIMER = "user_timer"
TM_ACTIVITY_RETRY = "activity_retry"
TM_ACTIVITY_TIMEOUT = "activity_timeout"
TM_WFT_TIMEOUT = "wft_timeout"
TM_WFT_BACKOFF = "wft_backoff"
TM_WORKFLOW_TIMEOUT = "workflow_timeout"


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


@dataclass(slots=True)
class TimerInfo:
    timer_id: str
    started_event_id: int
    fire_time_ms: int


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
        d: dict[str, Any] = {name: getattr(self, name) for name in _STATE_SCALARS}
        d["wft"] = None if self.wft is None else _flat(self.wft, _WFT_FIELDS)
        d["activities"] = [_flat(a, _ACTIVITY_FIELDS) for a in self.activities.values()]
        d["timers"] = [[t.timer_id, t.started_event_id, t.fire_time_ms] for t in self.timers.values()]
        return codec.dumps(d)

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
        return st


_WFT_FIELDS = tuple(f.name for f in fields(WorkflowTaskInfo))
_ACTIVITY_FIELDS = tuple(f.name for f in fields(ActivityInfo))
_STATE_SCALARS = tuple(f.name for f in fields(MutableState) if f.name not in ("wft", "activities", "timers"))


def _flat(obj: Any, names: tuple[str, ...]) -> dict[str, Any]:
    return {n: getattr(obj, n) for n in names}


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

    @classmethod
    def of(cls, state: MutableState, now: int) -> Mutation:
        return cls(state, now, state.next_event_id)

    def event(self, event_type: EventType, attrs: dict[str, Any]) -> HistoryEvent:
        st = self.state
        ev = HistoryEvent(st.next_event_id, event_type, self.now, attrs)
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

    @property
    def empty(self) -> bool:
        return not (self.events or self.transfer or self.timers or self.closed or self.dirty)
