"""`legato workflow stack`: the Lua coroutines of a running workflow and where each waits.

The workflow's history is read from the server and replayed here against the code of --entries,
up to its last completed workflow task, as a worker that does not have the run cached would do
(`worker.replay`); then each live coroutine's frames in the workflow code are listed, innermost
first: the first is the line where it waits (a channel receive, a sleep, a call's result).
"""

from __future__ import annotations

import json
from typing import Any

import click

from legato.api import ExecutionRef, WorkflowStatus
from legato.cli.common import CliError, client_options_with, run_async
from legato.cli.output import ExitCode, print_json
from legato.cli.security import client_security
from legato.client import GrpcClient
from legato.events import COMMAND_EVENTS, HistoryEvent
from legato.events import EventType as E
from legato.lineage import read_history


def completed_prefix(events: list[HistoryEvent]) -> list[HistoryEvent]:
    """The history up to the command events of its last completed workflow task (what the code
    has seen); a task in flight and the events after it are left for the code to see later."""
    end = 0
    for i in range(len(events) - 1):
        if events[i].event_type is E.WorkflowTaskStarted and events[i + 1].event_type is E.WorkflowTaskCompleted:
            j = i + 2
            while j < len(events) and events[j].event_type in COMMAND_EVENTS:
                j += 1
            end = j
    return events[:end]


def stack_report(entries: str, events: list[HistoryEvent]) -> dict[str, Any]:
    """Replay the completed part of `events` against `entries`; the run's coroutines."""
    from worker.entries import load_registry
    from worker.replay import new_execution
    from worker.runtime import TaskFailure

    registry = load_registry(entries)  # an EntryError is reported by main, in one line
    seen = completed_prefix(events)
    start = events[0].attrs if events else {}
    wtype = str(start.get("workflow_type", ""))
    out: dict[str, Any] = {"workflow_type": wtype, "events": len(events), "replayed_events": len(seen)}
    if not seen:
        out["coroutines"] = []
        out["note"] = "no workflow task has completed yet: the code has not run"
        return out
    try:
        ex = new_execution(registry, wtype, task_queue=str(start.get("task_queue", "")))
        ex.process(seen)
    except TaskFailure as e:
        raise CliError(f"cannot replay the history against {entries} ({e.cause}): {e.failure.message}"
                       + (f" (at {e.failure.source})" if e.failure.source else "")) from None
    run = ex.run
    out["coroutines"] = [] if run is None or ex.closed else [_coroutine(t) for t in run.stacks()]
    if run is not None:
        run.dispose()
    return out


def _coroutine(t: dict[str, Any]) -> dict[str, Any]:
    frames = t.get("frames") or []
    if isinstance(frames, dict):  # an empty Lua table
        frames = list(frames.values())
    return {"id": t.get("id"), "main": bool(t.get("main")), "status": t.get("status"),
            "frames": [{"source": f.get("source"), "line": f.get("line"), "function": f.get("name")} for f in frames]}


def _show(report: dict[str, Any], who: str) -> None:
    cos = report["coroutines"]
    click.echo(f"{who} ({report['workflow_type']}): {len(cos)} coroutine(s), from {report['replayed_events']} of "
               f"{report['events']} events (up to its last completed workflow task)")
    if report.get("note"):
        click.echo(report["note"])
    for c in cos:
        label = "main" if c["main"] else f"coroutine {c['id']}"
        click.echo(f"{label} ({c['status']}):")
        if not c["frames"]:
            click.echo("    (not started yet)")
        for f in c["frames"]:
            fn = f" in {f['function']}" if f.get("function") else ""
            click.echo(f"    {f['source']}:{f['line']}{fn}")


@click.command()
@click.option("--id", "workflow_id", required=True, help="The workflow.")
@click.option("--run-id", default="", help="This run (default: the latest).")
@click.option("--entries", required=True, metavar="PATH",
              help="The registry (a YAML file or a folder of them) with the workflow's Lua code, as for "
                   "'legato worker'.")
@client_options_with("text", "json", "jsonl", output_help="text; json: one document; jsonl: a coroutine per line.")
@run_async
async def stack(workflow_id: str, run_id: str, entries: str, address: str, output: str, namespace: str) -> int:
    """The Lua coroutines of a workflow and where each waits (file:line), innermost frame first.

    The history is replayed here against --entries up to the last completed workflow task.
    """
    async with GrpcClient(address, security=client_security()) as client:
        ref = ExecutionRef(workflow_id, run_id, namespace)
        events = await read_history(client, ref)
        info = (await client.describe_workflow(ref)).info
    if not events:
        raise CliError(f"workflow {workflow_id} has no history")
    if info.status is WorkflowStatus.RUNNING:
        report = stack_report(entries, events)
    else:
        report = {"workflow_type": info.workflow_type, "events": len(events), "replayed_events": 0,
                  "coroutines": [], "note": f"the run is closed ({info.status.value}): it has no coroutines"}
    report.update(workflow_id=workflow_id, run_id=info.run_id, status=info.status.value)
    if output == "json":
        print_json(report)
    elif output == "jsonl":
        for c in report["coroutines"]:
            click.echo(json.dumps({"workflow_id": workflow_id, "run_id": info.run_id, **c}))
    else:
        _show(report, f"workflow {workflow_id} (run {info.run_id}, {info.status.value})")
    return ExitCode.OK
