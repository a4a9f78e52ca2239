"""Commands that run Legato itself: `server start-dev`, `worker`, `run`, `bench`."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
from typing import TYPE_CHECKING

import click

from legato.api import ExecutionRef, StartWorkflowRequest
from legato.cli.common import CliError, parse_input, parse_timeout, run_async
from legato.cli.output import ExitCode
from legato.cli.workflow_cmds import report_result, wait_result
from legato.config import load_config
from legato.ids import new_request_id

if TYPE_CHECKING:
    from worker.entries import Registry

config_option = click.option("--config", "config_path", default=None, type=click.Path(dir_okay=False),
                             help="YAML file with limits and tunables (see README).")


def _stop_on_signals() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


def _identity(role: str) -> str:
    return f"{role}-{os.getpid()}@{socket.gethostname()}"


@click.group()
def server() -> None:
    """Run the Legato server."""


@server.command("start-dev")
@click.option("--db", "db_path", default=None, help="SQLite file (default: in memory, gone on exit).")
@click.option("--port", default=7233, show_default=True, type=click.IntRange(0, 65535))
@click.option("--host", default="127.0.0.1", show_default=True)
@config_option
@run_async
async def start_dev(db_path: str | None, port: int, host: str, config_path: str | None) -> int:
    """History, matching and frontend in one process, gRPC on PORT."""
    from legato.server import serve_dev

    config = load_config(config_path)
    await serve_dev(config, db_path, host, port, _stop_on_signals())
    return ExitCode.OK


def _load_registry(path: str) -> Registry:
    from worker.entries import load_registry

    return load_registry(path)


@click.command()
@click.option("--entries", required=True, help="Registry YAML file, or a folder of them (read recursively).")
@click.option("--address", default="127.0.0.1:7233", show_default=True, envvar="LEGATO_ADDRESS")
@config_option
@run_async
async def worker(entries: str, address: str, config_path: str | None) -> int:
    """Run the workflows and activities of ENTRIES against a server."""
    from legato.client import GrpcClient
    from worker.worker import Worker

    config = load_config(config_path)
    registry = _load_registry(entries)
    stop = _stop_on_signals()
    async with GrpcClient(address) as client:
        w = Worker(client, registry, config, identity=_identity("worker"))
        await w.start()
        click.echo(f"legato: worker polling {address} ({entries})", err=True)
        try:
            await stop.wait()
        finally:
            await w.stop()
    return ExitCode.OK


def _workflow_target(registry: Registry, entry_id: str, entries: str) -> tuple[str, str, str]:
    """(workflow type, task queue, namespace) of the workflow entry `entry_id`."""
    from worker.entries import WorkerEntry, WorkflowEntry

    entry = registry.find(entry_id) or registry.workflow_for_type(entry_id)
    if not isinstance(entry, WorkflowEntry):
        known = ", ".join(sorted(e.id for e in registry.workflows())) or "none"
        what = f"is a {entry.kind} entry, not a workflow.lua entry" if entry else "is not in the registry"
        raise CliError(f"entry {entry_id!r} {what} ({entries}); workflows there: {known}")
    worker = registry.find(entry.worker) if entry.worker else None
    if not isinstance(worker, WorkerEntry):
        raise CliError(f"workflow {entry_id!r} ({entry.where}) is not bound to a temporal.worker entry: "
                       "set meta.temporal.workflow.worker to the id of one")
    return entry.workflow_type, worker.task_queue, registry.namespace_of_worker(worker.id)


@click.command()
@click.option("--entries", required=True, help="Registry YAML file, or a folder of them.")
@click.argument("entry_id")
@click.option("--input", "input_json", default=None, help="The workflow's argument, as JSON.")
@click.option("--db", "db_path", default=None, help="SQLite file (default: in memory).")
@click.option("--id", "workflow_id", default=None, help="Workflow id (default: a new uuid).")
@click.option("--timeout", default=None, help="Give up after this long (default: wait).")
@click.option("--output", type=click.Choice(["text", "json"]), default="json", show_default=True)
@config_option
@run_async
async def run(entries: str, entry_id: str, input_json: str | None, db_path: str | None, workflow_id: str | None,
              timeout: str | None, output: str, config_path: str | None) -> int:
    """Run one workflow in this process (engine and worker) and print its result as JSON.

    Exit 0 when it completes, 1 when it fails, 2 when its workflow task fails (a bug,
    non-determinism or a forbidden call) instead of waiting for a fix.
    """
    from legato.server import Engine
    from worker.worker import Worker

    config = load_config(config_path)
    registry = _load_registry(entries)
    workflow_type, task_queue, namespace = _workflow_target(registry, entry_id, entries)
    args = parse_input(input_json)
    wait_ms = parse_timeout(timeout)
    async with Engine(config, db_path) as engine:
        w = Worker(engine.frontend, registry, config, identity=_identity("run"))
        await w.start()
        try:
            wid = workflow_id or f"run-{new_request_id()}"
            await engine.frontend.start_workflow(StartWorkflowRequest(
                workflow_id=wid, workflow_type=workflow_type, task_queue=task_queue, input=args,
                namespace=namespace, request_id=new_request_id(), identity="legato-run"))
            resp = await wait_result(engine.frontend, ExecutionRef(wid, namespace=namespace), wait_ms,
                                     return_on_task_failure=True)
        finally:
            await w.stop()
    return report_result(resp, output, wid)


@click.group()
def bench() -> None:
    """Benchmarks (commands, not tests)."""


@bench.command()
@click.option("--workflows", "count", default=500, show_default=True, type=click.IntRange(1, 10_000_000))
@click.option("--db", "db_path", default=None, help="SQLite file (default: a temporary file).")
@click.option("--output", type=click.Choice(["text", "json"]), default="text", show_default=True)
@config_option
@run_async
async def hello(count: int, db_path: str | None, output: str, config_path: str | None) -> int:
    """N workflows that each call one activity, started at once, on the embedded default."""
    from legato.bench import run_hello
    from legato.cli.output import print_json

    config = load_config(config_path)
    report = await run_hello(config, count, db_path)
    if output == "json":
        print_json(report)
    else:
        click.echo(report.text())
    return ExitCode.OK


__all__ = ["bench", "run", "server", "worker"]
