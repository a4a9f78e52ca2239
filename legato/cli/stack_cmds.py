"""`legato workflow stack`: the Lua coroutines of a workflow and where each waits.

The server asks a worker (the built-in query __stack_trace, `legato.stack`): the one that has the
run cached answers from its cache, else one replays the history. Each live coroutine's frames
in the workflow code are listed, innermost first: the first is the line where it waits (a
channel receive, a sleep, a call's result). With --entries, when no worker answers in time, the
history is replayed here against that code instead ("source": "client-replay").
"""

from __future__ import annotations

import json
from typing import Any

import click

from legato.api import ExecutionRef, QuerySource
from legato.cli.common import CliError, client_options_with, parse_timeout, run_async
from legato.cli.output import ExitCode, print_json
from legato.cli.security import client_security
from legato.client import GrpcClient
from legato.stack import StackError, StackReplay, workflow_stack


def _show(report: dict[str, Any], who: str) -> None:
    cos = report["coroutines"]
    by = f" by {report['worker']}" if report.get("worker") else ""
    click.echo(f"{who} ({report.get('workflow_type', '')}): {len(cos)} coroutine(s), as of event "
               f"{report.get('replayed_events', 0)} (its last completed workflow task); {report.get('source')}{by}")
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
@click.option("--entries", default="", metavar="PATH",
              help="The registry (a YAML file or a folder of them) with the workflow's Lua code, as for "
                   "'legato worker': replayed here when no worker answers in time.")
@click.option("--timeout", default=None, help="How long to wait for a worker, e.g. 5s (default: the server's "
                                               "frontend.query_timeout_ms).")
@client_options_with("text", "json", "jsonl", output_help="text; json: one document; jsonl: a coroutine per line.")
@run_async
async def stack(workflow_id: str, run_id: str, entries: str, timeout: str | None, address: str, output: str,
                namespace: str) -> int:
    """The Lua coroutines of a workflow and where each waits (file:line), innermost frame first.

    A worker answers (from its cache, or by replaying the history); with --entries, the history
    is replayed here when none answers in time.
    """
    timeout_ms = parse_timeout(timeout) or 0
    async with GrpcClient(address, security=client_security()) as client:
        try:
            report = await workflow_stack(client, ExecutionRef(workflow_id, run_id, namespace), _replay(entries),
                                          replay_source=QuerySource.CLIENT_REPLAY, timeout_ms=timeout_ms)
        except StackError as e:
            raise CliError(str(e)) from None
    info_run_id = report["run_id"]
    if output == "json":
        print_json(report)
    elif output == "jsonl":
        for c in report["coroutines"]:
            click.echo(json.dumps({"workflow_id": workflow_id, "run_id": info_run_id, **c}))
    else:
        _show(report, f"workflow {workflow_id} (run {info_run_id}, {report['status']})")
    return ExitCode.OK


def _replay(entries: str) -> StackReplay | None:
    """With --entries: the history replayed here, as a worker would (imported only then)."""
    if not entries:
        return None
    from worker.queries import stack_replay

    return stack_replay(entries)
