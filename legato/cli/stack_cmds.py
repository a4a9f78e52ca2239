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

from legato.api import ExecutionRef
from legato.cli.common import CliError, client_options_with, run_async
from legato.cli.output import ExitCode, print_json
from legato.cli.security import client_security
from legato.client import GrpcClient
from legato.stack import StackError, workflow_stack


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
        try:
            report = await workflow_stack(client, ExecutionRef(workflow_id, run_id, namespace), entries)
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
