"""`legato workflow replay`: check the current Lua code against a recorded history, locally.

The history comes from the server (--id) or from a file saved with `legato workflow show --output
json` (--history-file); the code from --entries, loaded as a worker would load it. The replay is
the worker's own (`worker.replay.replay`), so what passes here passes on a worker, and the first
non-determinism is reported with the event it concerns and the Lua file:line of the command.
"""

from __future__ import annotations

import re
from typing import Any

import click

from legato.api import ExecutionRef
from legato.cli.common import CliError, client_options, run_async
from legato.cli.history_view import load_history_file
from legato.cli.output import ExitCode, print_json
from legato.cli.security import client_security
from legato.client import GrpcClient
from legato.events import HistoryEvent
from legato.lineage import read_history

_EVENT_RE = re.compile(r"\bevent (\d+)\b")


def replay_report(entries: str, events: list[HistoryEvent]) -> dict[str, Any]:
    """Replay `events` against the code of `entries`: {"ok": True, ...} or the first failure."""
    from worker.entries import load_registry
    from worker.replay import replay
    from worker.runtime import TaskFailure

    registry = load_registry(entries)  # an EntryError is reported by main, in one line
    wtype = str(events[0].attrs.get("workflow_type", "")) if events else ""
    out: dict[str, Any] = {"workflow_type": wtype, "events": len(events)}
    try:
        replay(registry, events)
    except TaskFailure as e:
        f = e.failure
        out.update(ok=False, cause=e.cause, kind=f.kind, message=f.message, source=f.source)
        m = _EVENT_RE.search(f.message)
        if m:
            eid = int(m.group(1))
            out["event_id"] = eid
            out["event_type"] = next((ev.event_type.value for ev in events if ev.event_id == eid), None)
        return out
    except ValueError as e:
        raise CliError(f"cannot replay: {e}") from None
    out["ok"] = True
    return out


@click.command()
@click.option("--id", "workflow_id", default=None, help="Replay this workflow's history, read from the server.")
@click.option("--run-id", default="", help="With --id: this run (default: the latest).")
@click.option("--history-file", default=None, metavar="FILE",
              help="Replay a history saved with 'legato workflow show --id ID --output json' (or jsonl).")
@click.option("--entries", required=True, metavar="PATH",
              help="The registry (a YAML file or a folder of them) with the Lua code to check, as for 'legato worker'.")
@client_options
@run_async
async def replay(workflow_id: str | None, run_id: str, history_file: str | None, entries: str, address: str,
                 output: str, namespace: str) -> int:
    """Replay a recorded history against the current Lua code; report the first non-determinism.

    Exit 0 when the code replays the history, 2 when it does not (or fails while replaying it).
    """
    if (workflow_id is None) == (history_file is None):
        raise CliError("give either --id (read the history from the server) or --history-file")
    if history_file is not None:
        events = load_history_file(history_file)
        source = history_file
    else:
        assert workflow_id is not None
        async with GrpcClient(address, security=client_security()) as client:
            events = await read_history(client, ExecutionRef(workflow_id, run_id, namespace))
        source = f"workflow {workflow_id}"
        if not events:
            raise CliError(f"workflow {workflow_id} has no history")
    report = replay_report(entries, events)
    report["history"] = source
    if output == "json":
        print_json(report)
    elif report["ok"]:
        click.echo(f"OK: {entries} replays the {report['events']} events of {source} "
                   f"({report['workflow_type']}) without a difference")
    else:
        where = f" (event {report['event_id']} {report['event_type']})" if report.get("event_id") else ""
        at = f" at {report['source']}" if report.get("source") else ""
        click.echo(f"{report['cause']}{where}{at}: {report['message']}")
    return ExitCode.OK if report["ok"] else ExitCode.TASK_FAILING
