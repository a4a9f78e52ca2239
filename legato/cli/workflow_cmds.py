"""`legato workflow ...`: start, signal, result, describe, show, list, count, terminate, cancel (and, from
their own modules, trace and replay; the --query batch forms are legato/cli/batch_cmds.py)."""

from __future__ import annotations

import time
from typing import Any

import click

from legato import codec
from legato.api import (
    CALLER_PID_PREFIX,
    CancelWorkflowRequest,
    CountWorkflowsRequest,
    DescribeWorkflowResponse,
    ExecutionRef,
    GetResultRequest,
    GetResultResponse,
    IdConflictPolicy,
    IdReusePolicy,
    ListWorkflowsRequest,
    ParentClosePolicy,
    SendMessageRequest,
    SignalWorkflowRequest,
    StartMessage,
    StartWorkflowRequest,
    TerminateWorkflowRequest,
    WorkflowService,
    WorkflowStatus,
)
from legato.cli.batch_cmds import batch_options, check_batch_options, run_batch
from legato.cli.common import (
    CliError,
    client_options,
    client_options_with,
    parse_input,
    parse_timeout,
    run_async,
)
from legato.cli.history_view import continued_as_new_run, event_text, follow_history
from legato.cli.output import ExitCode, fmt_time, fmt_value, jsonable, print_json
from legato.cli.replay_cmds import replay
from legato.cli.security import client_security
from legato.cli.stack_cmds import stack
from legato.cli.trace_cmds import trace
from legato.client import GrpcClient
from legato.codec import parse_json_input
from legato.errors import InvalidArgument
from legato.events import HistoryEvent
from legato.ids import new_request_id
from legato.lineage import read_history
from legato.query import parse as parse_query
from legato.retry import RetryPolicy

MAX_LIST_PAGE = 1000  # the server's largest page

IDENTITY = "legato-cli"


@click.group()
def workflow() -> None:
    """Start, signal, inspect and stop workflows on a running server."""


PARENT_CLOSE_POLICIES = [p.value for p in ParentClosePolicy]


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
@click.option("--search-attribute", "--search-attr", "search_attributes", multiple=True, metavar="NAME=VALUE",
              help="A search attribute (repeatable). VALUE is JSON (42, true, [\"a\",\"b\"], \"text\") or else text.")
@click.option("--memo", "memo", multiple=True, metavar="NAME=VALUE|JSON",
              help="A memo field (repeatable), VALUE as for --search-attribute; or a JSON object of fields.")
@click.option("--context", "context_json", default=None, metavar="JSON",
              help="The workflow's context (ctx.get / ctx.all), a JSON object.")
@click.option("--retry-policy", "retry_json", default=None, metavar="JSON",
              help="Workflow-level retry policy, a JSON object: initial_interval (\"1s\"), backoff_coefficient, "
                   "maximum_interval, maximum_attempts, non_retryable_error_types.")
@click.option("--cron", "cron_schedule", default="", metavar="SCHEDULE",
              help="Run on a 5-field cron schedule (UTC), e.g. \"0 */6 * * *\".")
@click.option("--start-delay", default=None, help="Start the first run this much later, e.g. 10m.")
@click.option("--message", "messages", multiple=True, metavar="TOPIC=JSON",
              help="A message queued before any other signal (repeatable, in order); JSON payload, or else text.")
@click.option("--execution-error-when-already-started", is_flag=True,
              help="Fail when a run with this id is already running (instead of per --id-conflict-policy).")
@click.option("--enable-eager-start", is_flag=True, help="Dispatch the first workflow task at once.")
@click.option("--wait-for-cancellation", is_flag=True,
              help="(children) A parent's cancel waits for this workflow to close.")
@click.option("--parent-close-policy", type=click.Choice(PARENT_CLOSE_POLICIES), default="terminate",
              show_default=True, help="What happens to it when its parent closes (children).")
@client_options
@run_async
async def start(workflow_type: str, task_queue: str, workflow_id: str | None, input_json: str | None,
                execution_timeout: str | None, run_timeout: str | None, task_timeout: str | None,
                id_conflict_policy: str, id_reuse_policy: str, search_attributes: tuple[str, ...],
                memo: tuple[str, ...], context_json: str | None, retry_json: str | None, cron_schedule: str,
                start_delay: str | None, messages: tuple[str, ...], execution_error_when_already_started: bool,
                enable_eager_start: bool, wait_for_cancellation: bool, parent_close_policy: str,
                address: str, output: str, namespace: str) -> int:
    """Start a workflow (every start option of seed 002 is a flag)."""
    req = StartWorkflowRequest(
        workflow_id=workflow_id or new_request_id(), workflow_type=workflow_type, task_queue=task_queue,
        input=parse_input(input_json), namespace=namespace, request_id=new_request_id(), identity=IDENTITY,
        execution_timeout_ms=parse_timeout(execution_timeout, "--execution-timeout") or 0,
        run_timeout_ms=parse_timeout(run_timeout, "--run-timeout") or 0,
        task_timeout_ms=parse_timeout(task_timeout, "--task-timeout") or 0,
        id_conflict_policy=IdConflictPolicy(id_conflict_policy), id_reuse_policy=IdReusePolicy(id_reuse_policy),
        search_attributes=parse_pairs(search_attributes, "--search-attribute"), memo=parse_memo(memo),
        context=parse_object(context_json, "--context"), retry_policy=parse_retry_policy(retry_json),
        cron_schedule=cron_schedule, start_delay_ms=parse_timeout(start_delay, "--start-delay") or 0,
        start_messages=parse_messages(messages),
        execution_error_when_already_started=execution_error_when_already_started,
        enable_eager_start=enable_eager_start, wait_for_cancellation=wait_for_cancellation,
        parent_close_policy=ParentClosePolicy(parent_close_policy),
    )
    async with GrpcClient(address, security=client_security()) as client:
        resp = await client.start_workflow(req)
    if output == "json":
        print_json({"workflow_id": req.workflow_id, "run_id": resp.run_id, "started": resp.started})
    else:
        verb = "Started" if resp.started else "Already running:"
        click.echo(f"{verb} workflow {req.workflow_id} (run {resp.run_id})")
    return ExitCode.OK


def parse_object(text: str | None, option: str) -> dict[str, Any]:
    """A JSON object option; absent is {}."""
    if text is None:
        return {}
    try:
        value = codec.parse_json_input(text, option)  # not JSON, too deep, a lone surrogate
    except InvalidArgument as e:
        raise CliError(e.message) from None
    if not isinstance(value, dict):
        raise CliError(f"{option} must be a JSON object, got {type(value).__name__}")
    return value


def parse_memo(items: tuple[str, ...]) -> dict[str, Any]:
    """--memo NAME=VALUE pairs and/or --memo '{"a": 1}' objects, merged in order."""
    out: dict[str, Any] = {}
    for item in items:
        if item.lstrip().startswith("{"):
            out.update(parse_object(item, "--memo"))
        else:
            out.update(parse_pairs((item,), "--memo"))
    return out


def parse_retry_policy(text: str | None) -> dict[str, Any] | None:
    """--retry-policy: seed 002's keys (durations as "1s" or ms), or the API's *_ms keys."""
    if text is None:
        return None
    table = parse_object(text, "--retry-policy")
    api_keys = set(RetryPolicy().to_dict())
    try:
        if table and set(table) <= api_keys and set(table) & {"initial_interval_ms", "maximum_interval_ms"}:
            return RetryPolicy.from_dict(table).to_dict()
        return RetryPolicy.from_user(table, "--retry-policy").to_dict()
    except (TypeError, ValueError) as e:
        raise CliError(str(e)) from None


def parse_messages(items: tuple[str, ...]) -> list[StartMessage]:
    out: list[StartMessage] = []
    for item in items:
        topic, sep, text = item.partition("=")
        if not sep or not topic:
            raise CliError(f"--message takes TOPIC=JSON, got {item!r}")
        out.append(StartMessage(topic, json_or_text(text, "--message")))
    return out


def parse_pairs(items: tuple[str, ...], option: str) -> dict[str, Any]:
    """NAME=VALUE options as a mapping: VALUE is JSON if it parses as JSON, else the text itself."""
    out: dict[str, Any] = {}
    for item in items:
        name, sep, text = item.partition("=")
        if not sep or not name:
            raise CliError(f"{option} takes NAME=VALUE, got {item!r}")
        out[name] = json_or_text(text, option)
    return out


def json_or_text(text: str, option: str) -> Any:
    """An option's VALUE: JSON if it parses as JSON, else the text itself. CliError when it is
    JSON nested too deep, or text that is not valid Unicode."""
    try:
        return codec.parse_json_input(text, option)
    except InvalidArgument as e:
        if e.reason == codec.REASON_TOO_DEEP:
            raise CliError(e.message) from None
    try:
        codec.encode_payload(text, 2**63, option)
    except InvalidArgument as e:
        raise CliError(e.message) from None
    return text


@workflow.command()
@click.option("--id", "workflow_id", default=None, help="The workflow (or --query for a batch).")
@click.option("--run-id", default="")
@click.option("--name", "signal_name", required=True, help="Signal name (the topic the workflow listens to).")
@click.option("--input", "input_json", default=None, help="Signal payload, as JSON.")
@batch_options
@client_options_with("text", "json", "jsonl", output_help="Output format (jsonl: with --query, a line per workflow).")
@run_async
async def signal(workflow_id: str | None, run_id: str, signal_name: str, input_json: str | None, query: str | None,
                 yes: bool, rps: float | None, batch_id: str | None, address: str, output: str,
                 namespace: str) -> int:
    """Send a signal to a workflow, or to every workflow a --query finds (sent once per batch id)."""
    check_batch_options(workflow_id, run_id, query, yes, rps, batch_id)
    payload = None if input_json is None else parse_json_input(input_json, "--input")
    if query is not None:
        async def act(client: WorkflowService, ref: ExecutionRef, request_id: str) -> None:
            await client.signal_workflow(SignalWorkflowRequest(ref, signal_name, payload, sender=IDENTITY,
                                                               identity=IDENTITY, request_id=request_id))
        return await run_batch("signal", act, query=query, yes=yes, rps=rps, batch_id=batch_id, address=address,
                               output=output, namespace=namespace)
    assert workflow_id is not None
    async with GrpcClient(address, security=client_security()) as client:
        if workflow_id.startswith(CALLER_PID_PREFIX):  # a caller pid: its mailbox gets a message
            if run_id:
                raise CliError(f"--run-id: {workflow_id} is a caller pid, which has no runs")
            await client.send_message(SendMessageRequest(workflow_id, signal_name, payload, IDENTITY, namespace,
                                                         new_request_id()))
        else:
            await client.signal_workflow(SignalWorkflowRequest(
                ExecutionRef(workflow_id, run_id, namespace), signal_name, payload, sender=IDENTITY,
                identity=IDENTITY, request_id=new_request_id()))
    if output in ("json", "jsonl"):
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
    async with GrpcClient(address, security=client_security()) as client:
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
    async with GrpcClient(address, security=client_security()) as client:
        d = await client.describe_workflow(ExecutionRef(workflow_id, run_id, namespace))
    if output == "json":
        print_json(d)
    else:
        click.echo("\n".join(describe_text(d)))
    return ExitCode.OK


@workflow.command()
@click.option("--id", "workflow_id", required=True)
@click.option("--run-id", default="")
@click.option("--follow", "-f", is_flag=True,
              help="Keep printing new events as they happen until the run closes (then exit as 'workflow result' "
                   "does: 0 completed, 1 failed/terminated/canceled/timed out) or Ctrl-C. A run that continues as "
                   "new ends the follow with a line naming the new run (on stderr with json/jsonl).")
@client_options_with("text", "json", "jsonl",
                     output_help="text; json: one array (with --follow, printed once the run closes; it is what "
                                 "'workflow replay --history-file' reads); jsonl: an event per line, as they come.")
@run_async
async def show(workflow_id: str, run_id: str, follow: bool, address: str, output: str, namespace: str) -> int:
    """Print a workflow's event history (--follow: and the events still to come)."""
    ref = ExecutionRef(workflow_id, run_id, namespace)
    if not follow:
        async with GrpcClient(address, security=client_security()) as client:
            events = await read_history(client, ref)
        if output == "json":
            print_json([e.to_dict() for e in events])
        else:
            for e in events:
                print_event(e, output)
        return ExitCode.OK
    collected: list[HistoryEvent] = []

    def emit(e: HistoryEvent) -> None:
        if output == "json":
            collected.append(e)
        else:
            print_event(e, output)

    async with GrpcClient(address, security=client_security()) as client:
        end = await follow_history(client, ref, emit)
        if output == "json":
            print_json([e.to_dict() for e in collected])
        new_run = continued_as_new_run(end.last)
        if new_run is not None:
            click.echo(f"Workflow {workflow_id} continued as new: run {new_run} (follow it with "
                       f"'legato workflow show --id {workflow_id} --run-id {new_run} --follow')", err=output != "text")
            return ExitCode.OK
        resp = await client.get_workflow_result(GetResultRequest(ExecutionRef(workflow_id, end.run_id, namespace), 0))
    return result_exit_code(resp)


def print_event(e: HistoryEvent, output: str) -> None:
    if output == "text":
        click.echo(event_text(e))
    else:
        print_json(e.to_dict())


QUERY_HELP = ("Visibility query, e.g. \"WorkflowType = 'app:order' AND ExecutionStatus = 'Running'\" "
              "(see 'Visibility queries' in the README).")


@workflow.command(name="list")
@click.option("--query", default="", help=QUERY_HELP)
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1, 100_000),
              help="At most this many workflows (fetched page by page).")
@click.option("--page-size", default=MAX_LIST_PAGE, show_default=True, type=click.IntRange(1, MAX_LIST_PAGE),
              help="Workflows asked for per request.")
@client_options
@run_async
async def list_cmd(query: str, limit: int, page_size: int, address: str, output: str, namespace: str) -> int:
    """List workflows, newest first (or as the query's ORDER BY says)."""
    found: list[Any] = []
    token = b""
    async with GrpcClient(address, security=client_security()) as client:
        while len(found) < limit:
            page = await client.list_workflows(
                ListWorkflowsRequest(namespace, query, min(page_size, limit - len(found)), token))
            found.extend(page.executions)
            token = page.next_page_token
            if not token:
                break
    if output == "json":
        print_json(found)
    else:
        for i in found:
            click.echo(f"{i.workflow_id:<40} {i.workflow_type:<30} {i.status.value:<16} {fmt_time(i.start_time_ms)}")
        if token:
            click.echo(f"(stopped at --limit {limit}; there are more)", err=True)
    return ExitCode.OK


@workflow.command()
@click.option("--query", default="", help=QUERY_HELP + " End it with GROUP BY ExecutionStatus for counts per status.")
@client_options
@run_async
async def count(query: str, address: str, output: str, namespace: str) -> int:
    """Count workflows that match a query."""
    async with GrpcClient(address, security=client_security()) as client:
        resp = await client.count_workflows(CountWorkflowsRequest(namespace, query))
    grouped = bool(resp.groups) or _grouped(query)
    if output == "json":
        out: dict[str, Any] = {"count": resp.count}
        if grouped:
            out["groups"] = {g.value: g.count for g in resp.groups}
        print_json(out)
    else:
        click.echo(str(resp.count))
        for g in resp.groups:
            click.echo(f"{g.value:<17} {g.count}")
    return ExitCode.OK


def _grouped(query: str) -> bool:
    try:
        return parse_query(query).group_by is not None
    except InvalidArgument:  # the server said it was fine: it is the judge
        return False


@workflow.command()
@click.option("--id", "workflow_id", default=None, help="The workflow (or --query for a batch).")
@click.option("--run-id", default="")
@click.option("--reason", default="", help="Why; recorded in the history.")
@batch_options
@client_options_with("text", "json", "jsonl", output_help="Output format (jsonl: with --query, a line per workflow).")
@run_async
async def terminate(workflow_id: str | None, run_id: str, reason: str, query: str | None, yes: bool,
                    rps: float | None, batch_id: str | None, address: str, output: str, namespace: str) -> int:
    """Stop a workflow at once (or every workflow a --query finds); its code gets no say."""
    check_batch_options(workflow_id, run_id, query, yes, rps, batch_id)
    if query is not None:
        async def act(client: WorkflowService, ref: ExecutionRef, request_id: str) -> None:
            await client.terminate_workflow(TerminateWorkflowRequest(ref, reason, IDENTITY, request_id))
        return await run_batch("terminate", act, query=query, yes=yes, rps=rps, batch_id=batch_id,
                               address=address, output=output, namespace=namespace)
    assert workflow_id is not None
    async with GrpcClient(address, security=client_security()) as client:
        await client.terminate_workflow(TerminateWorkflowRequest(ExecutionRef(workflow_id, run_id, namespace),
                                                                 reason, IDENTITY))
    if output in ("json", "jsonl"):
        print_json({"workflow_id": workflow_id, "terminated": True})
    else:
        click.echo(f"Terminated {workflow_id}")
    return ExitCode.OK


@workflow.command()
@click.option("--id", "workflow_id", default=None, help="The workflow (or --query for a batch).")
@click.option("--run-id", default="")
@click.option("--reason", default="")
@click.option("--deadline", default=None,
              help="Terminate the workflow if it is still running this long after the request, e.g. 5s.")
@batch_options
@client_options_with("text", "json", "jsonl", output_help="Output format (jsonl: with --query, a line per workflow).")
@run_async
async def cancel(workflow_id: str | None, run_id: str, reason: str, deadline: str | None, query: str | None,
                 yes: bool, rps: float | None, batch_id: str | None, address: str, output: str,
                 namespace: str) -> int:
    """Ask a workflow (or every workflow a --query finds) to cancel; it may clean up first (until --deadline)."""
    check_batch_options(workflow_id, run_id, query, yes, rps, batch_id)
    deadline_ms = parse_timeout(deadline, "--deadline") or 0
    if query is not None:
        async def act(client: WorkflowService, ref: ExecutionRef, request_id: str) -> None:
            await client.request_cancel_workflow(CancelWorkflowRequest(ref, reason, IDENTITY, request_id,
                                                                       deadline_ms))
        return await run_batch("cancel", act, query=query, yes=yes, rps=rps, batch_id=batch_id, address=address,
                               output=output, namespace=namespace)
    assert workflow_id is not None
    async with GrpcClient(address, security=client_security()) as client:
        await client.request_cancel_workflow(CancelWorkflowRequest(
            ExecutionRef(workflow_id, run_id, namespace), reason, IDENTITY, new_request_id(), deadline_ms))
    if output in ("json", "jsonl"):
        print_json({"workflow_id": workflow_id, "cancel_requested": True})
    else:
        click.echo(f"Requested cancellation of {workflow_id}")
    return ExitCode.OK


workflow.add_command(trace)  # legato/cli/trace_cmds.py
workflow.add_command(replay)  # legato/cli/replay_cmds.py
workflow.add_command(stack)  # legato/cli/stack_cmds.py

__all__ = ["jsonable", "read_history", "report_result", "wait_result", "workflow"]
