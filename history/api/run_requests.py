"""Requests from outside a run that change it: SignalWorkflow, TerminateWorkflow,
RequestCancelWorkflow."""

from __future__ import annotations

from history.api.access import RunAccess
from history.api.checks import check_ref, check_strings
from legato.api import CancelWorkflowRequest, SignalWorkflowRequest, TerminateWorkflowRequest
from legato.errors import InvalidArgument


async def signal_workflow(runs: RunAccess, req: SignalWorkflowRequest) -> None:
    ref = check_ref(req.ref, "signal")
    if not isinstance(req.signal_name, str) or not req.signal_name:
        raise InvalidArgument("signal: signal_name must be a non-empty string")
    check_strings("signal", sender=req.sender, identity=req.identity, request_id=req.request_id)
    runs.engine.payload(req.input, f"signal {req.signal_name!r}: input")
    await runs.update(ref.namespace, ref.workflow_id, ref.run_id, lambda m, e: runs.engine.signal(m, req))


async def terminate_workflow(runs: RunAccess, req: TerminateWorkflowRequest) -> None:
    ref = check_ref(req.ref, "terminate")
    check_strings("terminate", reason=req.reason, request_id=req.request_id)
    await runs.update(ref.namespace, ref.workflow_id, ref.run_id, lambda m, e: runs.engine.terminate(m, req))


async def request_cancel_workflow(runs: RunAccess, req: CancelWorkflowRequest) -> None:
    ref = check_ref(req.ref, "cancel")
    check_strings("cancel", reason=req.reason, request_id=req.request_id)
    if isinstance(req.deadline_ms, bool) or not isinstance(req.deadline_ms, int) or req.deadline_ms < 0:
        raise InvalidArgument(f"cancel: deadline_ms must be a whole number of milliseconds >= 0, got "
                              f"{req.deadline_ms!r}")
    await runs.update(ref.namespace, ref.workflow_id, ref.run_id, lambda m, e: runs.engine.request_cancel(m, req))
