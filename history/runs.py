"""Runs of a workflow: the first one (with seed 002's start options) and the runs that continue
it - continue-as-new, workflow-level retry and cron (docs/processes.md, "Start options" and
"Continue-as-new").

A continuing run is created in the same atomic write that closes its predecessor
(`Mutation.successor`); it keeps the workflow id, `first_run_id`, the start request id, the
parent, the monitors and links registered on the run, context, memo and search attributes, and
the execution deadline (which counts across runs).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, replace
from typing import Any

from history.engine_context import EngineContext
from history.state import TM_WORKFLOW_TIMEOUT, MutableState, Mutation, Registration
from legato import cron
from legato.api import (
    CALLER_PID_PREFIX,
    ParentClosePolicy,
    ParentInfo,
    StartMessage,
    StartWorkflowRequest,
    WorkflowStatus,
)
from legato.durations import MAX_DURATION_MS
from legato.errors import InvalidArgument, Kind
from legato.events import EventType
from legato.ids import new_run_id
from legato.retry import RetryPolicy

E = EventType

# Why a run continues in a new one
CONTINUE_AS_NEW = "continue_as_new"
RETRY = "retry"
CRON = "cron"

_NO_CRON_AFTER = frozenset({WorkflowStatus.TERMINATED.value, WorkflowStatus.CANCELED.value})


def check_cron(expr: str) -> str | None:
    """Why `expr` is not a standard 5-field cron schedule that fires, or None."""
    return cron.check_cron(expr)


def cron_next_ms(expr: str, after_ms: int) -> int | None:
    """The first fire time of `expr` (UTC) strictly after `after_ms`; None: it never fires
    (refused at start, so only a schedule stored before that check)."""
    return cron.next_fire_ms(expr, after_ms)


def check_retry_policy(rp: Any) -> str | None:
    """Why `rp` is not a RetryPolicy dict (RetryPolicy.to_dict keys), or None."""
    if not isinstance(rp, dict):
        return f"must be a mapping, got {type(rp).__name__}"
    known = RetryPolicy().to_dict()
    unknown = sorted(str(k) for k in rp if k not in known)
    if unknown:
        return f"unknown key {unknown[0]!r} (known: {', '.join(known)})"
    for name in ("initial_interval_ms", "maximum_interval_ms", "maximum_attempts"):
        v = rp.get(name, 0)
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            return f"{name} must be a whole number >= 0, got {v!r}"
    coef = rp.get("backoff_coefficient", 2.0)
    if isinstance(coef, bool) or not isinstance(coef, int | float) or coef < 1:
        return f"backoff_coefficient must be a number >= 1, got {coef!r}"
    if rp.get("initial_interval_ms", 1000) <= 0:
        return "initial_interval_ms must be > 0"
    nret = rp.get("non_retryable_error_types") or []
    if not isinstance(nret, list) or not all(isinstance(t, str) for t in nret):
        return "non_retryable_error_types must be a list of error kinds"
    return RetryPolicy.from_dict(rp).out_of_range()


@dataclass(slots=True)
class NextRun:
    """The run that continues a closing one."""

    run_id: str
    reason: str  # CONTINUE_AS_NEW | RETRY | CRON
    backoff_ms: int = 0  # before its first workflow task
    workflow_type: str = ""
    task_queue: str = ""
    input: list[Any] | None = None
    run_timeout_ms: int | None = None
    task_timeout_ms: int | None = None


class Runs:
    def __init__(self, engine: EngineContext) -> None:
        self.engine = engine
        self.hcfg = engine.config.history
        self.limits = engine.config.limits

    # ================================================================== start options

    def validate_options(self, req: StartWorkflowRequest, where: str) -> None:
        """The issue-3 fields of a start request; InvalidArgument names the option."""
        if req.workflow_id.startswith(CALLER_PID_PREFIX):
            raise InvalidArgument(f"{where}: workflow_id {req.workflow_id!r} cannot start with "
                                  f"{CALLER_PID_PREFIX!r} (the prefix of caller pids)")
        if req.retry_policy is not None:
            problem = check_retry_policy(req.retry_policy)
            if problem:
                raise InvalidArgument(f"{where}: invalid retry_policy: {problem}")
        if not isinstance(req.cron_schedule, str):
            raise InvalidArgument(f"{where}: cron_schedule must be a string")
        if req.cron_schedule:
            problem = check_cron(req.cron_schedule.strip())
            if problem:
                raise InvalidArgument(f"{where}: invalid cron_schedule: {problem}")
        v = req.start_delay_ms
        if isinstance(v, bool) or not isinstance(v, int) or v < 0 or v > MAX_DURATION_MS:
            raise InvalidArgument(f"{where}: start_delay_ms must be a whole number of milliseconds between 0 and "
                                  f"{MAX_DURATION_MS} (100 years), got {v!r}")
        for name in ("execution_error_when_already_started", "enable_eager_start", "wait_for_cancellation"):
            if not isinstance(getattr(req, name), bool):
                raise InvalidArgument(f"{where}: {name} must be true or false, got {getattr(req, name)!r}")
        try:
            ParentClosePolicy(req.parent_close_policy)
        except ValueError:
            raise InvalidArgument(f"{where}: unknown parent_close_policy {req.parent_close_policy!r} (use one of "
                                  f"{', '.join(p.value for p in ParentClosePolicy)})") from None
        if req.parent is not None and not isinstance(req.parent, ParentInfo):
            raise InvalidArgument(f"{where}: parent must be a ParentInfo")
        msgs = req.start_messages
        if not isinstance(msgs, list) or not all(isinstance(x, StartMessage) for x in msgs):
            raise InvalidArgument(f"{where}: start_messages must be a list of StartMessage")
        if len(msgs) > self.limits.max_buffered_signals:
            raise InvalidArgument(f"{where}: {len(msgs)} start_messages; the limit is "
                                  f"{self.limits.max_buffered_signals} (limits.max_buffered_signals)",
                                  reason="LimitExceeded")
        for i, sm in enumerate(msgs, 1):
            if not isinstance(sm.topic, str) or not sm.topic:
                raise InvalidArgument(f"{where}: start_messages[{i}]: topic must be a non-empty string")
            self.engine.payload(sm.payload, f"{where}: start_messages[{i}] ({sm.topic!r}) payload")
        mons = req.monitors
        if not isinstance(mons, list) or not all(isinstance(p, str) and p.startswith(CALLER_PID_PREFIX) and len(p) > 1
                                                 for p in mons):
            raise InvalidArgument(f"{where}: monitors must be a list of caller pids (starting with "
                                  f"{CALLER_PID_PREFIX!r})")
        if len(mons) > self.limits.max_monitors:
            raise InvalidArgument(f"{where}: {len(mons)} monitors; the limit is {self.limits.max_monitors} "
                                  "(limits.max_monitors)", reason="LimitExceeded")

    @staticmethod
    def starter_pid(req: StartWorkflowRequest) -> str:
        """What `msg:from()` of a start message returns: the parent's workflow id for a child,
        else the request's identity when it is a caller pid."""
        if req.parent is not None:
            return req.parent.workflow_id
        return req.identity if req.identity.startswith(CALLER_PID_PREFIX) else ""

    # ================================================================== the first run

    def first_run(self, req: StartWorkflowRequest, run_id: str, now: int) -> Mutation:
        eng = self.engine
        exec_ms, run_ms = req.execution_timeout_ms, req.run_timeout_ms
        cron = req.cron_schedule.strip()
        backoff = req.start_delay_ms
        fire = cron_next_ms(cron, now + backoff) if cron else None
        if fire is not None:  # the first run waits for the first fire time
            backoff = fire - now
        task_ms = self._task_timeout(req.task_timeout_ms, min(run_ms or exec_ms, exec_ms or run_ms))
        keep_input = req.retry_policy is not None or bool(cron)
        st = MutableState(
            namespace=req.namespace, workflow_id=req.workflow_id, run_id=run_id, workflow_type=req.workflow_type,
            task_queue=req.task_queue, start_time_ms=now, execution_timeout_ms=exec_ms, run_timeout_ms=run_ms,
            task_timeout_ms=task_ms, start_request_id=req.request_id, first_run_id=run_id, memo=dict(req.memo),
            search_attributes=dict(req.search_attributes), attempt=1,
            input=list(req.input) if keep_input else None, context=dict(req.context),
            retry_policy=dict(req.retry_policy) if req.retry_policy is not None else None, cron_schedule=cron,
            execution_deadline_ms=now + backoff + exec_ms if exec_ms else 0,
            parent=req.parent.to_dict() if req.parent is not None else None,
            parent_close_policy=ParentClosePolicy(req.parent_close_policy).value,
            monitors=[Registration(req.namespace, pid) for pid in dict.fromkeys(req.monitors)])
        m = Mutation(st, now, None)
        self._started_event(m, req.input, req.identity)
        sender = self.starter_pid(req)
        for sm in req.start_messages:  # before the first workflow task, so before any outside signal
            m.event(E.WorkflowExecutionSignaled, {"signal_name": sm.topic, "input": sm.payload, "sender": sender,
                                                  "identity": req.identity, "request_id": ""})
        self._first_task(m, backoff)
        eng.visibility(m)
        return m

    # ================================================================== continuing runs

    def plan(self, st: MutableState, status: WorkflowStatus, failure: dict[str, Any] | None, now: int,
             timeout_type: str = "") -> NextRun | None:
        """Whether a run closing with `status` continues (workflow retry, then cron)."""
        deadline = st.execution_deadline_ms
        if status == WorkflowStatus.TIMED_OUT and timeout_type == "EXECUTION":
            return None
        if status in (WorkflowStatus.FAILED, WorkflowStatus.TIMED_OUT) and st.retry_policy is not None:
            policy = RetryPolicy.from_dict(st.retry_policy)
            if status == WorkflowStatus.TIMED_OUT:
                kind, retryable = Kind.TIMEOUT, True
            else:
                kind = str((failure or {}).get("kind", Kind.UNKNOWN))
                retryable = bool((failure or {}).get("retryable", True))
            if policy.allows_retry(st.attempt, kind, retryable):
                delay = policy.backoff_ms(st.attempt)
                if not deadline or now + delay < deadline:
                    return NextRun(new_run_id(), RETRY, backoff_ms=delay)
        if st.cron_schedule and status.value not in _NO_CRON_AFTER:
            fire = cron_next_ms(st.cron_schedule, now)
            if fire is not None and (not deadline or fire < deadline):
                return NextRun(new_run_id(), CRON, backoff_ms=fire - now)
        return None

    def successor(self, m: Mutation, nxt: NextRun) -> Mutation:
        """The run that continues `m`'s run (which is closing in `m`)."""
        old = m.state
        now = m.now
        run_ms = old.run_timeout_ms if nxt.run_timeout_ms is None else nxt.run_timeout_ms
        task_req = old.task_timeout_ms if nxt.task_timeout_ms is None else nxt.task_timeout_ms
        remaining = max(1, old.execution_deadline_ms - now) if old.execution_deadline_ms else 0
        task_ms = self._task_timeout(task_req, min(run_ms or remaining, remaining or run_ms))
        inp = list(old.input or []) if nxt.input is None else list(nxt.input)
        keep_input = old.retry_policy is not None or bool(old.cron_schedule)
        st = MutableState(
            namespace=old.namespace, workflow_id=old.workflow_id, run_id=nxt.run_id,
            workflow_type=nxt.workflow_type or old.workflow_type, task_queue=nxt.task_queue or old.task_queue,
            start_time_ms=now, execution_timeout_ms=old.execution_timeout_ms, run_timeout_ms=run_ms,
            task_timeout_ms=task_ms, start_request_id=old.start_request_id, first_run_id=old.first_run_id,
            memo=dict(old.memo), search_attributes=dict(old.search_attributes),
            attempt=old.attempt + 1 if nxt.reason == RETRY else 1, input=inp if keep_input else None,
            context=dict(old.context), retry_policy=old.retry_policy, cron_schedule=old.cron_schedule,
            execution_deadline_ms=old.execution_deadline_ms, parent=old.parent,
            parent_close_policy=old.parent_close_policy, monitors=[replace(r) for r in old.monitors],
            watching=[replace(r) for r in old.watching if r.link])
        s = Mutation(st, now, None)
        self._started_event(s, inp, "history", continued_from=old.run_id)
        self._first_task(s, nxt.backoff_ms)
        self.engine.visibility(s)
        old.next_run_id = nxt.run_id
        return s

    # ================================================================== helpers

    def _task_timeout(self, requested: int, run_limit: int) -> int:
        task_ms = min(requested or self.hcfg.workflow_task_timeout_ms, self.hcfg.max_workflow_task_timeout_ms)
        return min(task_ms, run_limit) if run_limit else task_ms

    def _started_event(self, m: Mutation, inp: list[Any], identity: str, continued_from: str = "") -> None:
        st = m.state
        remaining = max(0, st.execution_deadline_ms - m.now) if st.execution_deadline_ms else 0
        run_ms = min(st.run_timeout_ms or remaining, remaining or st.run_timeout_ms)
        m.event(E.WorkflowExecutionStarted, {
            "workflow_type": st.workflow_type, "task_queue": st.task_queue, "input": inp,
            "workflow_execution_timeout_ms": st.execution_timeout_ms, "workflow_run_timeout_ms": run_ms,
            "workflow_task_timeout_ms": st.task_timeout_ms, "identity": identity, "attempt": st.attempt,
            "first_run_id": st.first_run_id, "random_seed": secrets.token_hex(16), "context": st.context,
            "memo": st.memo, "search_attributes": st.search_attributes,
        })

    def _first_task(self, m: Mutation, backoff_ms: int) -> None:
        """The first workflow task (at once, or after a start delay / cron wait / retry backoff)
        and the run's timeout timer (counted from when the run can start)."""
        eng = self.engine
        if backoff_ms > 0:
            eng.wft_backoff(m, 1, backoff_ms)
        else:
            eng.schedule_wft(m, 1)
        st = m.state
        start_at = m.now + max(0, backoff_ms)
        run_deadline = start_at + st.run_timeout_ms if st.run_timeout_ms else 0
        exec_deadline = st.execution_deadline_ms
        if run_deadline and (not exec_deadline or run_deadline < exec_deadline):
            m.timer(run_deadline, TM_WORKFLOW_TIMEOUT, type="RUN")
        elif exec_deadline:
            m.timer(exec_deadline, TM_WORKFLOW_TIMEOUT, type="EXECUTION")
