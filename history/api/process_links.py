"""Links between runs and callers (docs/processes.md): MonitorWorkflow, RegisterMonitor,
RecordChildClosed, DeliverMonitoredClosed."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from history.api.access import RunAccess
from history.api.checks import check_ref
from history.process_tasks import exit_message
from history.shard import CacheEntry
from history.state import Mutation
from legato import api
from legato.api import (
    CALLER_PID_PREFIX,
    DeliverMonitoredClosedRequest,
    MonitorRegistration,
    MonitorWorkflowRequest,
    RecordChildClosedRequest,
    RegisterMonitorRequest,
    RegisterMonitorResponse,
)
from legato.errors import InvalidArgument, NotFound

MAX_CHAIN_HOPS = 1000  # following a continue-as-new chain


async def monitor_workflow(runs: RunAccess, req: MonitorWorkflowRequest,
                           matching: Callable[[], Awaitable[api.MatchingService]]) -> None:
    """A caller (a pid of a non-durable Lua caller) monitors or links a run; if the run had closed
    already, the caller hears it at once (through matching's mailboxes)."""
    ref = check_ref(req.ref, "monitor")
    pid = req.monitor_pid
    if not isinstance(pid, str) or not pid.startswith(CALLER_PID_PREFIX) or len(pid) < 2:
        raise InvalidArgument(f"monitor: monitor_pid must be a caller pid (starting with {CALLER_PID_PREFIX!r}), "
                              f"got {pid!r}")
    for name in ("link", "remove"):
        if not isinstance(getattr(req, name), bool):
            raise InvalidArgument(f"monitor: {name} must be true or false")
    reg = MonitorRegistration(ref.namespace, pid, link=req.link)
    resp, _ = await runs.update(ref.namespace, ref.workflow_id, ref.run_id,
                                lambda m, e: runs.engine.proc.register_monitor(m, reg, req.remove))
    closed = resp.closed
    if closed is not None and not req.remove:
        await (await matching()).deliver_message(pid, exit_message(closed, req.link))


async def register_monitor(runs: RunAccess, req: RegisterMonitorRequest) -> RegisterMonitorResponse:
    ref = check_ref(req.ref, "register monitor")
    reg = req.monitor
    if not isinstance(reg, MonitorRegistration) or not isinstance(reg.pid, str) or not reg.pid:
        raise InvalidArgument("register monitor: monitor must be a MonitorRegistration with a pid")
    resp, _ = await runs.update(ref.namespace, ref.workflow_id, ref.run_id,
                                lambda m, e: runs.engine.proc.register_monitor(m, reg, bool(req.remove)))
    return resp


async def record_child_closed(runs: RunAccess, req: RecordChildClosedRequest) -> None:
    p = req.parent
    try:
        await runs.update(p.namespace, p.workflow_id, p.run_id,
                          lambda m, e: runs.engine.proc.record_child_closed(m, req))
    except NotFound:
        return  # the parent run is gone: nobody to tell


async def deliver_monitored_closed(runs: RunAccess, req: DeliverMonitoredClosedRequest) -> None:
    ref = check_ref(req.ref, "deliver monitored closed")
    run_id = ref.run_id

    def fn(m: Mutation, entry: CacheEntry) -> str:
        st = m.state
        if not st.running and st.next_run_id:
            return st.next_run_id  # links carry over to the run that continues this one
        runs.engine.proc.deliver_monitored_closed(m, req)
        return ""

    for _ in range(MAX_CHAIN_HOPS):
        try:
            run_id, _ = await runs.update(ref.namespace, ref.workflow_id, run_id, fn)
        except NotFound:
            return  # the monitoring run is gone
        if not run_id:
            return
