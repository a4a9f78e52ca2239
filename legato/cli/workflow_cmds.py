"""`legato workflow ...`: start, signal, result, describe, show, list, terminate, cancel."""

from __future__ import annotations

import time
from typing import Any

import click

from legato.api import (
    CancelWorkflowRequest,
    DescribeWorkflowResponse,
    ExecutionRef,
    GetHistoryRequest,
    GetResultRequest,
    GetResultResponse,
    IdConflictPolicy,
    IdReusePolicy,
    ListWorkflowsRequest,
    SignalWorkflowRequest,
    StartWorkflowRequest,
    TerminateWorkflowRequest,
    WorkflowService,
    WorkflowStatus,
)
from legato.cli.common import client_options, parse_input, parse_timeout, run_async
from legato.cli.output import ExitCode, fmt_time, fmt_value, jsonable, print_json
from legato.client import GrpcClient
from legato.codec import parse_json_input
from legato.events import HistoryEvent
from legato.ids import new_request_id

IDENTITY = "legato-cli"


@click.group()
def workflow() -> None:
    """Start, signal, inspect and stop workflows on a running server."""


@workflow.command()
@click.option("--type", "workflow_type", required=True, help="Workflow type: the entry id, e.g. app:order.")
@click.option("--task-queue", required=True, help="Task queue the workers poll.")
@click.option("--id", "workflow_id", default=None, help="Workflow id (default: a new uuid).")
@click.option("--input", "input_json", default=None, help="The workflow's argument, as JSON.")
@click.option("--execution-timeout", default=None, help="Total time the workflow may take, e.g. 24h.")
@click.option("--run-timeout", default=None, help="Time one run may take.")
@click.option("--task-timeout", default=None, help="Time one workflow task may take (default 10s).")
@click.option("--id-conflict-policy", type=click.Choice([p.value for p in IdConflictPolicy]), default="fail",
              show_default=True)
@click.option("--id-reuse-policy", type=click.Choice([p.value for p in IdReusePolicy]),
              default="allow_duplicate", show_default=True)
@client_options
@run_async
async def start(workflow_type: str, task_queue: str, workflow_id: str | None, input_json: str | None,
                execution_timeout: str | None, run_timeout: str | None, task_timeout: str | None,
                id_conflict_policy: str, id_reuse_policy: str, address: str, output: str, namespace: str) -> int:
    """Start a workflow."""
    req = StartWorkflowRequest(
        workflow_id=workflow_id or new_request_id(), workflow_type=workflow_type, task_queue=task_queue,
        input=parse_input(input_json), namespace=namespace, request_id=new_request_id(), identity=IDENTITY,
        execution_timeout_ms=parse_timeout(execution_timeout, "--execution-timeout") or 0,
        run_timeout_ms=parse_timeout(run_timeout, "--run-timeout") or 0,
        task_timeout_ms=parse_timeout(task_timeout, "--task-timeout") or 0,
        id_conflict_policy=IdConflictPolicy(id_conflict_policy), id_reuse_policy=IdReusePolicy(id_reuse_policy),
    )
    async with GrpcClient(address) as client:
        resp = await client.start_workflow(req)
    if output == "json":
        print_json({"workflow_id": req.workflow_id, "run_id": resp.run_id, "started": resp.started})
    else:
        verb = "Started" if resp.started else "Already running:"
        click.echo(f"{verb} workflow {req.workflow_id} (run {resp.run_id})")
    return ExitCode.OK


@workflow.command()
@click.option("--id", "workflow_id", required=True)
@click.option("--run-id", default="")
@click.option("--name", "signal_name", required=True, help="Signal name (the topic the workflow listens to).")
@click.option("--input", "input_json", default=None, help="Signal payload, as JSON.")
@client_options
@run_async
async def signal(workflow_id: str, run_id: str, signal_name: str, input_json: str | None,
                 address: str, output: str, namespace: str) -> int:
    """Send a signal to a workflow."""
    payload = None if input_json is None else parse_json_input(input_json, "--input")
    req = SignalWorkflowRequest(ExecutionRef(workflow_id, run_id, namespace), signal_name, payload,
                                sender=IDENTITY, identity=IDENTITY, request_id=new_request_id())
    async with GrpcClient(address) as client:
        await client.signal_workflow(req)
    if output == "json":
        print_json({"workflow_id": workflow_id, "signaled": signal_name})
    else:
        click.echo(f"Signaled {workflow_id} with {signal_name}")
    return ExitCode.OK


async def wait_result(client: WorkflowService, ref: ExecutionRef, timeout_ms: int | None,
                      return_on_task_failure: bool = False) -> GetResultResponse:
    """Long-poll until the workflow closes (or `timeout_ms` passes; None waits for ever)."""
    deadline = None if timeout_ms is None else time.monotonic() + timeout_ms / 1000
    while True:
        left = 30_000 if deadline is None else max(0, int((deadline - time.monotonic()) * 1000))
        resp = await client.get_workflow_result(GetResultRequest(ref, min(left, 30_000), return_on_task_failure))
        if resp.status != WorkflowStatus.RUNNING or resp.task_failure is not None:
            return resp
        if deadline is not None and time.monotonic() >= deadline:
            return resp


def result_exit_code(resp: GetResultResponse) -> int:
    if resp.task_failure is not None:
        return ExitCode.TASK_FAILING
    if resp.status == WorkflowStatus.COMPLETED:
        return ExitCode.OK
    if resp.status == WorkflowStatus.RUNNING:
        return ExitCode.WAIT_TIMEOUT
    return ExitCode.WORKFLOW_FAILED


def report_result(resp: GetResultResponse, output: str, workflow_id: str) -> int:
    """Print the result value (JSON on stdout) or the error (stderr); return the exit code."""
    code = result_exit_code(resp)
    if code == ExitCode.OK:
        if output == "json":
            print_json(resp.result)
        else:
            click.echo(fmt_value(resp.result))
    elif resp.task_failure is not None:
        click.echo(f"error: workflow {workflow_id} is stuck: its workflow task failed: {resp.task_failure}",
                   err=True)
    elif code == ExitCode.WAIT_TIMEOUT:
        click.echo(f"error: workflow {workflow_id} is still running", err=True)
    else:
        what = resp.status.value.lower().replace("_", " ")
        click.echo(f"error: workflow {workflow_id} {what}: {resp.failure}", err=True)
    return code


@workflow.command()
@click.option("--id", "workflow_id", required=True)
@click.option("--run-id", default="")
@click.option("--timeout", default=None, help="Give up waiting after this long, e.g. 30s (default: wait).")
@client_options
@run_async
async def result(workflow_id: str, run_id: str, timeout: str | None, address: str, output: str,
                 namespace: str) -> int:
    """Wait for a workflow to close; print its result (exit 1 if it failed)."""
    async with GrpcClient(address) as client:
        resp = await wait_result(client, ExecutionRef(workflow_id, run_id, namespace), parse_timeout(timeout))
    return report_result(resp, output, workflow_id)


def describe_text(d: DescribeWorkflowResponse) -> list[str]:
    i = d.info
    lines = [
        f"Workflow ID:    {i.workflow_id}",
        f"Run ID:         {i.run_id}",
        f"Type:           {i.workflow_type}",
        f"Task queue:     {i.task_queue}",
        f"Status:         {i.status.value}",
        f"Started:        {fmt_time(i.start_time_ms)}",
        f"Closed:         {fmt_time(i.close_time_ms)}",
        f"History length: {i.history_length}",
    ]
    if d.pending_workflow_task:
        t = d.pending_workflow_task
        lines.append(f"Workflow task:  {t.state}, attempt {t.attempt}")
    if d.last_workflow_task_failure:
        lines.append(f"Last workflow task failure: {d.last_workflow_task_failure}")
    for a in d.pending_activities:
        line = f"Activity {a.activity_id} {a.activity_type}: {a.state}, attempt {a.attempt}"
        if a.last_failure:
            line += f", last failure: {a.last_failure}"
        lines.append(line)
    if d.pending_timers:
        lines.append(f"Pending timers: {d.pending_timers}")
    if i.status == WorkflowStatus.COMPLETED:
        lines.append(f"Result:         {fmt_value(d.result)}")
    elif d.failure is not None:
        lines.append(f"Failure:        {d.failure}")
    return lines


@workflow.command()
@click.option("--id", "workflow_id", required=True)
@click.option("--run-id", default="")
@client_options
@run_async
async def describe(workflow_id: str, run_id: str, address: str, output: str, namespace: str) -> int:
    """Show a workflow's status, pending work and last task failure."""
    async with GrpcClient(address) as client:
        d = await client.describe_workflow(ExecutionRef(workflow_id, run_id, namespace))
    if output == "json":
        print_json(d)
    else:
        click.echo("\n".join(describe_text(d)))
    return ExitCode.OK


async def read_history(client: WorkflowService, ref: ExecutionRef) -> list[HistoryEvent]:
    events: list[HistoryEvent] = []
    first = 1
    while True:
        page = await client.get_workflow_history(GetHistoryRequest(ref, first_event_id=first, page_size=1000))
        events.extend(page.events)
        if not page.events or page.next_event_id <= first:
            return events
        first = page.next_event_id
        if ref.run_id == "":
            ref = ExecutionRef(ref.workflow_id, page.run_id, ref.namespace)


def event_text(e: HistoryEvent) -> str:
    attrs = {k: v for k, v in e.attrs.items() if v not in (None, "", [], {}, 0) or k == "result"}
    return f"{e.event_id:>5}  {fmt_time(e.timestamp_ms)}  {e.event_type.value:<34} {fmt_value(attrs)}"


@workflow.command()
@click.option("--id", "workflow_id", required=True)
@click.option("--run-id", default="")
@client_options
@run_async
async def show(workflow_id: str, run_id: str, address: str, output: str, namespace: str) -> int:
    """Print a workflow's event history."""
    async with GrpcClient(address) as client:
        events = await read_history(client, ExecutionRef(workflow_id, run_id, namespace))
    if output == "json":
        print_json([e.to_dict() for e in events])
    else:
        for e in events:
            click.echo(event_text(e))
    return ExitCode.OK


@workflow.command(name="list")
@click.option("--query", default="",
              help="Filter, e.g. \"WorkflowType = 'app:order' AND ExecutionStatus = 'Running'\".")
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1, 100_000))
@client_options
@run_async
async def list_cmd(query: str, limit: int, address: str, output: str, namespace: str) -> int:
    """List workflows, newest first."""
    found: list[Any] = []
    token = b""
    async with GrpcClient(address) as client:
        while len(found) < limit:
            page = await client.list_workflows(
                ListWorkflowsRequest(namespace, query, min(1000, limit - len(found)), token))
            found.extend(page.executions)
            token = page.next_page_token
            if not token:
                break
    if output == "json":
        print_json(found)
    else:
        for i in found:
            click.echo(f"{i.workflow_id:<40} {i.workflow_type:<30} {i.status.value:<12} {fmt_time(i.start_time_ms)}")
    return ExitCode.OK


@workflow.command()
@click.option("--id", "workflow_id", required=True)
@click.option("--run-id", default="")
@click.option("--reason", default="", help="Why; recorded in the history.")
@client_options
@run_async
async def terminate(workflow_id: str, run_id: str, reason: str, address: str, output: str, namespace: str) -> int:
    """Stop a workflow at once; its code gets no say."""
    async with GrpcClient(address) as client:
        await client.terminate_workflow(TerminateWorkflowRequest(ExecutionRef(workflow_id, run_id, namespace),
                                                                 reason, IDENTITY))
    if output == "json":
        print_json({"workflow_id": workflow_id, "terminated": True})
    else:
        click.echo(f"Terminated {workflow_id}")
    return ExitCode.OK


@workflow.command()
@click.option("--id", "workflow_id", required=True)
@click.option("--run-id", default="")
@click.option("--reason", default="")
@client_options
@run_async
async def cancel(workflow_id: str, run_id: str, reason: str, address: str, output: str, namespace: str) -> int:
    """Ask a workflow to cancel; it may clean up first."""
    async with GrpcClient(address) as client:
        await client.request_cancel_workflow(CancelWorkflowRequest(
            ExecutionRef(workflow_id, run_id, namespace), reason, IDENTITY, new_request_id()))
    if output == "json":
        print_json({"workflow_id": workflow_id, "cancel_requested": True})
    else:
        click.echo(f"Requested cancellation of {workflow_id}")
    return ExitCode.OK


__all__ = ["jsonable", "read_history", "report_result", "wait_result", "workflow"]
