"""Batch forms of `legato workflow terminate|cancel|signal --query Q`: every workflow a visibility
query finds, paced (--rps), with a progress bar on stderr, a summary, and safe to run again.

Resuming: terminated and canceled workflows leave a `ExecutionStatus = 'Running'` query, so running
the same command again continues where it stopped (and a run already closed is counted as skipped).
Each request carries a request id made of the batch id (`--batch-id`, printed at the start) and the
run, so the server records a signal once even when the same batch is run again.
"""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import click
from tqdm import tqdm

from legato.api import ExecutionRef, ListWorkflowsRequest, WorkflowExecutionInfo, WorkflowService
from legato.cli.common import CliError
from legato.cli.output import ExitCode, print_json
from legato.cli.security import client_security
from legato.client import GrpcClient
from legato.errors import NotFound, ServiceError

LIST_PAGE = 1000
IN_FLIGHT = 16  # requests at once, at most; --rps paces their starts

Act = Callable[[WorkflowService, ExecutionRef, str], Awaitable[None]]  # (client, run, request id)

PAST = {"terminate": "terminated", "cancel": "cancel requested", "signal": "signaled"}


@dataclass(slots=True)
class Outcome:
    workflow_id: str
    run_id: str
    outcome: str  # done | skipped | failed
    error: str = ""


@dataclass(slots=True)
class Summary:
    action: str
    batch_id: str
    query: str
    matched: int = 0
    done: int = 0
    skipped: int = 0
    failed: list[Outcome] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"action": self.action, "batch_id": self.batch_id, "query": self.query, "matched": self.matched,
                "done": self.done, "skipped": self.skipped, "failed": len(self.failed),
                "failures": [{"workflow_id": o.workflow_id, "run_id": o.run_id, "error": o.error}
                             for o in self.failed]}


def request_id(batch_id: str, ref: ExecutionRef) -> str:
    """The same for the same batch and run: a re-run of the batch is deduplicated by the server."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"legato-batch:{batch_id}:{ref.namespace}:{ref.workflow_id}:"
                                              f"{ref.run_id}"))


def check_batch_options(workflow_id: str | None, run_id: str, query: str | None, yes: bool,
                        rps: float | None, batch_id: str | None) -> None:
    if (workflow_id is None) == (query is None):
        raise CliError("give either --id (one workflow) or --query (a batch)")
    if query is None and (yes or rps is not None or batch_id is not None):
        raise CliError("--yes, --rps and --batch-id go with --query")
    if query is not None and run_id:
        raise CliError("--run-id goes with --id, not --query")
    if rps is not None and rps <= 0:
        raise CliError(f"--rps must be > 0, got {rps}")
    if query is not None and not query.strip():
        raise CliError("--query is empty: a batch over every workflow of the namespace is refused; "
                       "say which, e.g. \"ExecutionStatus = 'Running'\"")


async def find(client: WorkflowService, namespace: str, query: str) -> list[WorkflowExecutionInfo]:
    found: list[WorkflowExecutionInfo] = []
    token = b""
    while True:
        page = await client.list_workflows(ListWorkflowsRequest(namespace, query, LIST_PAGE, token))
        found.extend(page.executions)
        token = page.next_page_token
        if not token:
            return found


async def run_batch(action: str, act: Act, *, query: str, yes: bool, rps: float | None, batch_id: str | None,
                    address: str, output: str, namespace: str) -> int:
    """Find the workflows, confirm, act on each (paced), print the summary; the exit code."""
    batch = batch_id or uuid.uuid4().hex[:12]
    summary = Summary(action, batch, query)
    click.echo(f"Batch {batch}: {action} workflows matching: {query} (run again with --batch-id {batch} "
               "to resume)", err=True)
    async with GrpcClient(address, security=client_security()) as client:
        found = await find(client, namespace, query)
        # a run listed twice (visibility moving under the pages) is acted on once
        runs = list(dict.fromkeys((i.workflow_id, i.run_id) for i in found))
        summary.matched = len(runs)
        click.echo(f"{len(runs)} workflow(s) match.", err=True)
        if runs and not yes:
            if not sys.stdin.isatty():
                raise CliError(f"{len(runs)} workflow(s) would be affected: add --yes to go ahead without a prompt")
            if not click.confirm(f"{action.capitalize()} {len(runs)} workflow(s)?", err=True):
                click.echo("Nothing done.", err=True)
                return ExitCode.OK
        await _act_all(client, act, runs, namespace, batch, rps, summary, output)
    _print_summary(summary, output)
    return ExitCode.OK if not summary.failed else ExitCode.WORKFLOW_FAILED


async def _act_all(client: WorkflowService, act: Act, runs: list[tuple[str, str]], namespace: str, batch: str,
                   rps: float | None, summary: Summary, output: str) -> None:
    sem = asyncio.Semaphore(IN_FLIGHT)
    bar = tqdm(total=len(runs), desc=summary.action, unit="wf", file=sys.stderr, disable=None)

    async def one(wid: str, rid: str) -> None:
        ref = ExecutionRef(wid, rid, namespace)
        try:
            await act(client, ref, request_id(batch, ref))
            o = Outcome(wid, rid, "done")
            summary.done += 1
        except NotFound as e:
            if e.reason == "WorkflowClosed":
                o = Outcome(wid, rid, "skipped", e.message)
                summary.skipped += 1
            else:
                o = Outcome(wid, rid, "failed", e.message)
                summary.failed.append(o)
        except ServiceError as e:
            o = Outcome(wid, rid, "failed", e.message)
            summary.failed.append(o)
        finally:
            sem.release()
            bar.update(1)
        if output == "jsonl":
            print_json({"workflow_id": o.workflow_id, "run_id": o.run_id, "outcome": o.outcome, "error": o.error})

    tasks: list[asyncio.Task[None]] = []
    start = time.monotonic()
    try:
        for n, (wid, rid) in enumerate(runs):
            if rps is not None:
                delay = start + n / rps - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            await sem.acquire()
            tasks.append(asyncio.create_task(one(wid, rid)))
        await asyncio.gather(*tasks)
    finally:
        bar.close()


def _print_summary(s: Summary, output: str) -> None:
    if output == "json":
        print_json(s.to_dict())
        return
    if output == "jsonl":
        print_json({"summary": s.to_dict()})
        return
    click.echo(f"Batch {s.batch_id}: {s.matched} matched, {s.done} {PAST[s.action]}, {s.skipped} skipped "
               f"(already closed), {len(s.failed)} failed")
    for o in s.failed:
        click.echo(f"  failed: {o.workflow_id} (run {o.run_id}): {o.error}")

def batch_options(fn: Any) -> Any:
    """--query, --yes, --rps and --batch-id: the batch form of terminate, cancel and signal."""
    fn = click.option("--batch-id", default=None,
                      help="(--query) The batch's id (default: a new one, printed at the start); give the same "
                           "one to resume a batch: requests are deduplicated by it.")(fn)
    fn = click.option("--rps", type=float, default=None, help="(--query) At most this many requests per second.")(fn)
    fn = click.option("--yes", "-y", is_flag=True, help="(--query) Go ahead without asking.")(fn)
    return click.option("--query", default=None,
                        help="Act on every workflow this visibility query finds (a batch), e.g. \"WorkflowType = "
                             "'app:order' AND ExecutionStatus = 'Running'\"; instead of --id.")(fn)
