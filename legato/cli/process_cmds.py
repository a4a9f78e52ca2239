"""`legato process list|start|stop|restart`: the live processes and process.service states of a
worker, and its services started, stopped and restarted by hand.

A worker answers `GET /processes` and `POST /processes/services/{service}/{start|stop|restart}`
on its status port (`--metrics-address` / `metrics.address`, worker/processes/control_api.py), so
these commands ask that port: processes are per worker (not durable, not in the server)."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import click

from legato.cli.common import CliError
from legato.cli.output import print_json


@click.group()
def process() -> None:
    """Non-durable processes (process.lua on a process.host) of a running `legato worker`."""


REQUEST_TIMEOUT_S = 5.0  # a listing: the worker answers from memory
ACTION_TIMEOUT_S = 30.0  # a start/restart waits up to worker START_WAIT_S (10 s) for the process to run


def _base(worker: str) -> str:
    url = worker if worker.startswith(("http://", "https://")) else f"http://{worker}"
    return url.rstrip("/")


def _ask(worker: str, req: urllib.request.Request, timeout_s: float, doing: str) -> dict[str, Any]:
    """The worker's JSON answer to `req`, or a CliError saying why not (`doing`: "read its
    processes", "start app:svc", ...)."""
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            data = json.loads(resp.read())
    except urllib.error.HTTPError as e:
        try:
            why = json.loads(e.read()).get("error")
        except (ValueError, AttributeError):
            why = None
        if why:
            raise CliError(f"--worker {worker}: cannot {doing}: {why}") from None
        raise CliError(f"--worker {worker}: {req.get_method()} {req.full_url} answered {e.code} (is it a `legato "
                       "worker` status port, and is that worker as new as this command?)") from None
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", e)
        raise CliError(f"--worker {worker}: cannot {doing}: {reason} (start the worker with "
                       "--metrics-address HOST:PORT and pass that address)") from None
    if not isinstance(data, dict):
        raise CliError(f"--worker {worker}: unexpected answer when trying to {doing}")
    return data


def fetch_listing(worker: str, timeout_s: float = REQUEST_TIMEOUT_S) -> dict[str, Any]:
    return _ask(worker, urllib.request.Request(_base(worker) + "/processes"), timeout_s, "read its processes")


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
        click.echo(f"{'PID':<36} {'ENTRY':<24} {'HOST':<18} {'SERVICE':<22} {'STATE':<9} {'RESTARTS':<8} PARENT")
        for p in procs:
            parent = p.get("parent") or "-"
            if p.get("parent_close_policy"):
                parent += f" ({p['parent_close_policy']})"
            click.echo(f"{p['pid']:<36} {p['entry']:<24} {p['host']:<18} {p.get('service') or '-':<22} "
                       f"{p['state']:<9} {p['restarts']:<8} {parent}")
    services = data.get("services") or []
    if services:
        click.echo("")
        click.echo(f"{'SERVICE':<28} {'STATE':<11} {'PID':<36} RESTARTS  LAST ERROR")
        for s in services:
            click.echo(f"{s['service']:<28} {s['state']:<11} {s.get('pid') or '-':<36} "
                       f"{s['restarts']}/{s['max_attempts']:<6} {s.get('last_error') or '-'}")


def service_action(worker: str, service_id: str, action: str, timeout_s: float = ACTION_TIMEOUT_S,
                   token: str = "") -> dict[str, Any]:
    """POST the action to the worker's control API; its answer, or a CliError saying why not."""
    url = f"{_base(worker)}/processes/services/{urllib.parse.quote(service_id, safe='')}/{action}"
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    req = urllib.request.Request(url, data=b"", method="POST", headers=headers)
    return _ask(worker, req, timeout_s, f"{action} {service_id}")


def _service_command(action: str, done: str, doc: str) -> None:
    @process.command(action, help=doc)
    @click.argument("service_id")
    @click.option("--worker", "worker_address", required=True, envvar="LEGATO_WORKER_STATUS",
                  help="The worker's status port (its --metrics-address), HOST:PORT.")
    @click.option("--output", type=click.Choice(["text", "json"]), default="text", show_default=True)
    @click.option("--token", envvar="LEGATO_TOKEN", default="",
                  help="Access token for all namespaces, needed when the worker is on another host.")
    @click.option("--token-file", envvar="LEGATO_TOKEN_FILE", type=click.Path(dir_okay=False, exists=True),
                  help="File holding that token (instead of --token).")
    def command(service_id: str, worker_address: str, output: str, token: str, token_file: str | None) -> None:
        if token and token_file:
            raise CliError("give the token once: --token or --token-file, not both")
        if token_file:
            token = Path(token_file).read_text().strip()
        s = service_action(worker_address, service_id, action, token=token.strip())
        if output == "json":
            print_json(s)
            return
        pid = f" as {s['pid']}" if s.get("pid") else ""
        click.echo(f"service {s.get('service', service_id)} {done}: {s.get('state')}{pid} "
                   f"(restarts {s.get('restarts')}/{s.get('max_attempts')})")


_service_command("start", "started", "Start a process.service of the worker that is not running (e.g. one "
                 "without lifecycle.auto_start, or one that stopped or failed).")
_service_command("stop", "stopped", "Stop a running process.service of the worker: its process is terminated "
                 "and not restarted.")
_service_command("restart", "restarted", "Restart a process.service of the worker: stop it if it runs, then "
                 "start it (its restart count from 0).")
