"""Helpers for the worker tests: registry files in tmp_path, and histories built the way
history writes them (docs/protocol.md) from the commands the worker returned."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

from legato.commands import EVENT_OF, Command, CommandType
from legato.config import Limits
from legato.events import EventType as E
from legato.events import HistoryEvent
from worker.activity import ActivityRunner, CallContext
from worker.entries import Registry, load_registry
from worker.replay import WorkflowExecution, new_execution

C = CommandType

# initiated event type -> the event that says the operation worked, and the one that says it failed
OUTCOMES: dict[E, tuple[E, E]] = {
    E.SignalExternalWorkflowExecutionInitiated: (E.ExternalWorkflowExecutionSignaled,
                                                 E.SignalExternalWorkflowExecutionFailed),
    E.RequestCancelExternalWorkflowExecutionInitiated: (E.ExternalWorkflowExecutionCancelRequested,
                                                        E.RequestCancelExternalWorkflowExecutionFailed),
    E.TerminateExternalWorkflowExecutionInitiated: (E.ExternalWorkflowExecutionTerminated,
                                                    E.TerminateExternalWorkflowExecutionFailed),
    E.MonitorExternalWorkflowExecutionInitiated: (E.ExternalWorkflowExecutionMonitored,
                                                  E.MonitorExternalWorkflowExecutionFailed),
    E.StartChildWorkflowExecutionInitiated: (E.ChildWorkflowExecutionStarted, E.StartChildWorkflowExecutionFailed),
}


def make_app(tmp: Path, workflows: dict[str, str] | None = None, functions: dict[str, str] | None = None,
             modules: str = "[funcs, time, uuid, crypto, workflow, json, ctx]", namespace: str = "app",
             function_modules: str = "[time, json, uuid, crypto, errors, funcs, ctx, activity]") -> Registry:
    """A registry with one worker (task queue "q"), workflow entries `name -> code`, function entries."""
    lines = [f"version: '1.0'\nnamespace: {namespace}\nentries:",
             "  - {name: worker, kind: temporal.worker, task_queue: q}"]
    for name, code in (workflows or {}).items():
        (tmp / f"{name}.lua").write_text(textwrap.dedent(code))
        lines.append(f"  - {{name: {name}, kind: workflow.lua, source: file://{name}.lua, modules: {modules},"
                     f" meta: {{temporal: {{workflow: {{worker: {namespace}:worker}}}}}}}}")
    for name, code in (functions or {}).items():
        (tmp / f"{name}.lua").write_text(textwrap.dedent(code))
        lines.append(f"  - {{name: {name}, kind: function.lua, source: file://{name}.lua,"
                     f" modules: {function_modules}}}")
    (tmp / "app.yaml").write_text("\n".join(lines) + "\n")
    return load_registry(tmp / "app.yaml")


class History:
    """Builds a history event by event, like the history service would."""

    def __init__(self, workflow_type: str, input: list[Any] | None = None, seed: str = "5eed",
                 start_ms: int = 1_700_000_000_000, context: dict[str, Any] | None = None) -> None:
        self.events: list[HistoryEvent] = []
        self.now = start_ms
        self._activity_events: dict[str, int] = {}
        self._timer_events: dict[str, int] = {}
        self._initiated: dict[Any, HistoryEvent] = {}  # seq -> ...Initiated event
        self.last_completed_started = 0
        self.add(E.WorkflowExecutionStarted, workflow_type=workflow_type, task_queue="q", input=input or [],
                 random_seed=seed, attempt=1, context=context or {})
        self.schedule_task()
        self.start_task()

    def add(self, etype: E, **attrs: Any) -> HistoryEvent:
        ev = HistoryEvent(len(self.events) + 1, etype, self.now, attrs)
        self.events.append(ev)
        return ev

    def tick(self, ms: int) -> History:
        self.now += ms
        return self

    @property
    def started_id(self) -> int:
        return max(e.event_id for e in self.events if e.event_type is E.WorkflowTaskStarted)

    def schedule_task(self) -> History:
        self.add(E.WorkflowTaskScheduled, task_queue="q", attempt=1)
        return self

    def start_task(self) -> History:
        sched = max(e.event_id for e in self.events if e.event_type is E.WorkflowTaskScheduled)
        self.add(E.WorkflowTaskStarted, scheduled_event_id=sched)
        return self

    def complete_task(self, commands: list[Command]) -> History:
        started = self.started_id
        done = self.add(E.WorkflowTaskCompleted, scheduled_event_id=started - 1, started_event_id=started)
        self.last_completed_started = started
        for c in commands:
            etype, _ = EVENT_OF[c.command_type]
            attrs = dict(c.attrs)
            attrs["workflow_task_completed_event_id"] = done.event_id
            ev = self.add(etype, **attrs)
            if c.command_type is C.ScheduleActivityTask:
                self._activity_events[c.attrs["activity_id"]] = ev.event_id
            elif c.command_type is C.StartTimer:
                self._timer_events[c.attrs["timer_id"]] = ev.event_id
            elif etype in OUTCOMES:
                self._initiated[c.attrs["seq"]] = ev
        return self

    def fail_task(self, cause: str = "WORKFLOW_ERROR") -> History:
        started = self.started_id
        self.add(E.WorkflowTaskFailed, scheduled_event_id=started - 1, started_event_id=started, cause=cause,
                 failure={"message": "x", "kind": "Internal", "retryable": False})
        return self

    def time_out_task(self) -> History:
        started = self.started_id
        self.add(E.WorkflowTaskTimedOut, scheduled_event_id=started - 1, started_event_id=started,
                 timeout_type="START_TO_CLOSE")
        return self

    def activity_completed(self, activity_id: str, result: Any) -> History:
        sched = self._activity_events[activity_id]
        st = self.add(E.ActivityTaskStarted, scheduled_event_id=sched, attempt=1)
        self.add(E.ActivityTaskCompleted, scheduled_event_id=sched, started_event_id=st.event_id, result=result)
        return self

    def activity_failed(self, activity_id: str, failure: dict[str, Any]) -> History:
        sched = self._activity_events[activity_id]
        st = self.add(E.ActivityTaskStarted, scheduled_event_id=sched, attempt=1)
        self.add(E.ActivityTaskFailed, scheduled_event_id=sched, started_event_id=st.event_id, failure=failure)
        return self

    def activity_timed_out(self, activity_id: str) -> History:
        sched = self._activity_events[activity_id]
        st = self.add(E.ActivityTaskStarted, scheduled_event_id=sched, attempt=1)
        self.add(E.ActivityTaskTimedOut, scheduled_event_id=sched, started_event_id=st.event_id,
                 timeout_type="START_TO_CLOSE",
                 failure={"message": "activity timed out", "kind": "Timeout", "retryable": False})
        return self

    def timer_fired(self, timer_id: str) -> History:
        self.add(E.TimerFired, timer_id=timer_id, started_event_id=self._timer_events[timer_id])
        return self

    def signal(self, name: str, data: Any = None, sender: str = "") -> History:
        self.add(E.WorkflowExecutionSignaled, signal_name=name, input=data, sender=sender, identity="t")
        return self

    def cancel_requested(self, reason: str = "") -> History:
        self.add(E.WorkflowExecutionCancelRequested, reason=reason, identity="t")
        return self

    def activity_canceled(self, activity_id: str, details: Any = None) -> History:
        sched = self._activity_events[activity_id]
        self.add(E.ActivityTaskCanceled, scheduled_event_id=sched, started_event_id=0, details=details)
        return self

    def initiated(self, seq: int) -> HistoryEvent:
        return self._initiated[seq]

    def op_done(self, seq: int, run_id: str = "run-x", existing: bool = False) -> History:
        """The outcome event saying a process command (child start, signal, ...) worked."""
        ini = self._initiated[seq]
        ok, _ = OUTCOMES[ini.event_type]
        attrs: dict[str, Any] = {"initiated_event_id": ini.event_id, "workflow_id": ini.attrs["workflow_id"],
                                 "run_id": run_id}
        if ok is E.ChildWorkflowExecutionStarted:
            attrs["existing"] = existing
        self.add(ok, **attrs)
        return self

    def op_failed(self, seq: int, failure: dict[str, Any] | None = None) -> History:
        ini = self._initiated[seq]
        _, bad = OUTCOMES[ini.event_type]
        self.add(bad, initiated_event_id=ini.event_id, workflow_id=ini.attrs["workflow_id"],
                 failure=failure or {"message": f"workflow {ini.attrs['workflow_id']} not found",
                                     "kind": "NotFound", "retryable": False})
        return self

    def child_closed(self, seq: int, etype: E = E.ChildWorkflowExecutionCompleted, result: Any = None,
                     failure: dict[str, Any] | None = None, run_id: str = "run-x") -> History:
        ini = self._initiated[seq]
        attrs: dict[str, Any] = {"initiated_event_id": ini.event_id, "workflow_id": ini.attrs["workflow_id"],
                                 "run_id": run_id}
        if etype is E.ChildWorkflowExecutionCompleted:
            attrs["result"] = result
        else:
            attrs["failure"] = failure
        self.add(etype, **attrs)
        return self

    def monitored_closed(self, workflow_id: str, status: str = "COMPLETED", result: Any = None,
                         failure: dict[str, Any] | None = None, link: bool = False,
                         run_id: str = "run-m") -> History:
        self.add(E.MonitoredWorkflowExecutionClosed, workflow_id=workflow_id, run_id=run_id, status=status,
                 result=result, failure=failure, link=link)
        return self

    def next_task(self) -> History:
        return self.schedule_task().start_task()


class Sim:
    """A workflow driven task by task, with one cached execution (like a worker with a cache hit)
    and a check that a full replay of every step gives the same commands."""

    def __init__(self, registry: Registry, workflow_type: str, input: list[Any] | None = None,
                 limits: Limits | None = None, check_replay: bool = True, **kw: Any) -> None:
        self.registry = registry
        self.limits = limits or Limits()
        self.h = History(workflow_type, input, **kw)
        self.wtype = workflow_type
        self.ex: WorkflowExecution | None = None
        self.check_replay = check_replay

    def fresh(self) -> WorkflowExecution:
        return new_execution(self.registry, self.wtype, self.limits, workflow_id="wf-1", run_id="run-1",
                             task_queue="q")

    def step(self) -> list[Command]:
        """Process the current task (the history ends with WorkflowTaskStarted); return its commands."""
        if self.ex is None or not self.ex.can_continue(self.h.events, self.h.last_completed_started):
            self.ex = self.fresh()
        cmds = self.ex.process(self.h.events)
        if self.check_replay:
            again = self.fresh().process(list(self.h.events))
            assert [c.to_dict() for c in again] == [c.to_dict() for c in cmds], "full replay differs from cache"
        return cmds

    def complete(self, cmds: list[Command]) -> Sim:
        self.h.complete_task(cmds)
        return self


def types(cmds: list[Command]) -> list[str]:
    return [c.command_type.value for c in cmds]


# The end of a probe program: run case `case` of its CASES table on `a`; in a workflow the
# result comes in a second task, which replays the first (its recorded draws too).
PROBE_MAIN = """\
return function(case, a)
    local r = CASES[case](a or {})
    time.sleep(1)
    return r
end
"""
PROBE_MODES = ["activity", "workflow"]


def probe_in(mode: str, reg: Registry, runner: ActivityRunner, input: list[Any], start_ms: int | None = None) -> Any:
    """Run a probe program (its code ends with `time.sleep(1)` before returning) as the activity
    app:probe (mode "activity") or as the workflow app:wprobe, whose result then comes in a second
    task: that task's cached run and a full replay of the history must agree (Sim checks)."""
    if mode == "activity":
        out = runner.call("app:probe", input, CallContext(activity_type="app:probe"))
        assert out.ok, out.failure
        return out.result
    sim = Sim(reg, "app:wprobe", input, check_replay=False, **({} if start_ms is None else {"start_ms": start_ms}))
    cmds = sim.step()
    assert types(cmds)[-1] == "StartTimer", cmds
    sim.complete(cmds)
    sim.h.tick(1).timer_fired(cmds[-1].attrs["timer_id"]).next_task()
    sim.check_replay = True
    cmds = sim.step()
    assert types(cmds) == ["CompleteWorkflowExecution"], cmds
    return cmds[0].attrs["result"]
