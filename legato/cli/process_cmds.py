"""`legato process list`: the live processes and process.service states of a worker.

A worker answers `GET /processes` on its status port (`--metrics-address` / `metrics.address`),
so this command asks that port: processes are per worker (not durable, not in the server)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import click

from legato.cli.common import CliError
from legato.cli.output import print_json


@click.group()
def process() -> None:
    """Non-durable processes (process.lua on a process.host) of a running `legato worker`."""


def fetch_listing(worker: str, timeout_s: float = 5.0) -> dict[str, Any]:
    url = worker if worker.startswith(("http://", "https://")) else f"http://{worker}"
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/processes", timeout=timeout_s) as resp:
            data = json.loads(resp.read())
    except urllib.error.HTTPError as e:
        raise CliError(f"--worker {worker}: GET /processes answered {e.code} (is it a `legato worker` "
                       "status port?)") from None
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", e)
        raise CliError(f"--worker {worker}: cannot read its processes: {reason} (start the worker with "
                       "--metrics-address HOST:PORT and pass that address)") from None
    if not isinstance(data, dict):
        raise CliError(f"--worker {worker}: unexpected answer from /processes")
    return data


@process.command("list")
@click.option("--worker", "worker_address", required=True, envvar="LEGATO_WORKER_STATUS",
              help="The worker's status port (its --metrics-address), HOST:PORT.")
@click.option("--output", type=click.Choice(["text", "json"]), default="text", show_default=True)
def list_processes(worker_address: str, output: str) -> None:
    """List a worker's live processes (pid, entry, host, service, state, restarts) and services."""
    data = fetch_listing(worker_address)
    if output == "json":
        print_json(data)
        return
    procs = data.get("processes") or []
    click.echo(f"{len(procs)} process(es) on worker {data.get('identity', '?')}")
    if procs:
        click.echo(f"{'PID':<36} {'ENTRY':<28} {'HOST':<20} {'SERVICE':<24} {'STATE':<9} RESTARTS")
        for p in procs:
            click.echo(f"{p['pid']:<36} {p['entry']:<28} {p['host']:<20} {p.get('service') or '-':<24} "
                       f"{p['state']:<9} {p['restarts']}")
    services = data.get("services") or []
    if services:
        click.echo("")
        click.echo(f"{'SERVICE':<28} {'STATE':<11} {'PID':<36} RESTARTS  LAST ERROR")
        for s in services:
            click.echo(f"{s['service']:<28} {s['state']:<11} {s.get('pid') or '-':<36} "
                       f"{s['restarts']}/{s['max_attempts']:<6} {s.get('last_error') or '-'}")
