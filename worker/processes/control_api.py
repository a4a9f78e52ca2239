"""The worker's control API for its process.service entries, on its status port beside
`GET /processes` (`legato process start|stop|restart SERVICE --worker HOST:PORT`):

    POST /processes/services/{service}/start     start one that is not running
    POST /processes/services/{service}/stop      terminate its process; no restart
    POST /processes/services/{service}/restart   stop (if it runs), then start

Each answers the service's state as JSON (200), or {"error": "..."} with 404 (no such service on
this worker), 409 (already running / not running), 500 (it did not start) or 504 (not running in
time). The status port has no authentication: keep it inside the cluster (README, "Metrics").
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from worker.processes.supervisor import ServiceCommandError, Supervisor

SERVICE_ACTION_PATH = "/processes/services/{service}/{action}"

Action = Callable[[dict[str, str]], Awaitable[tuple[int, Any]]]


def service_actions(supervisor: Supervisor) -> dict[str, Action]:
    """The POST routes of the status server (legato/status_server.py) for `supervisor`."""

    async def act(params: dict[str, str]) -> tuple[int, Any]:
        verbs = {"start": supervisor.start_service, "stop": supervisor.stop_service,
                 "restart": supervisor.restart_service}
        verb = verbs.get(params.get("action", ""))
        if verb is None:
            return 404, {"error": f"unknown action {params.get('action')!r} (use start, stop or restart)"}
        try:
            return 200, await verb(params.get("service", ""))
        except ServiceCommandError as e:
            return e.status, {"error": e.message}

    return {SERVICE_ACTION_PATH: act}
