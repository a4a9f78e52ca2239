"""The worker's control API for its process.service entries, on its status port beside
`GET /processes` (`legato process start|stop|restart SERVICE --worker HOST:PORT`):

    POST /processes/services/{service}/start     start one that is not running
    POST /processes/services/{service}/stop      terminate its process; no restart
    POST /processes/services/{service}/restart   stop (if it runs), then start

Each answers the service's state as JSON (200), or {"error": "..."} with 404 (no such service on
this worker), 409 (already running / not running), 500 (it did not start) or 504 (not running in
time). Who may call them (`action_guard`): callers on the worker's own host (loopback: e.g.
`kubectl exec` into its pod); from elsewhere only with an access token (`legato token issue`)
for every namespace, and only when the worker is given the secret tokens are signed with
(security.token_secret_file). Otherwise 403 saying so. The GET routes stay open (metrics).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable
from typing import Any

from legato.access_tokens import ALL_NAMESPACES, TokenVerifier
from legato.errors import ServiceError
from worker.processes.supervisor import ServiceCommandError, Supervisor

SERVICE_ACTION_PATH = "/processes/services/{service}/{action}"

Action = Callable[[dict[str, str]], Awaitable[tuple[int, Any]]]
Guard = Callable[[str | None, str | None], str | None]


def _loopback(remote: str | None) -> bool:
    if remote is None:
        return False
    try:
        ip = ipaddress.ip_address(remote.split("%")[0])
    except ValueError:  # a Unix socket, or no address
        return False
    # on a dual-stack socket an IPv4 caller comes as ::ffff:a.b.c.d, which is not "loopback" to IPv6
    mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
    return (mapped or ip).is_loopback


def action_guard(verifier: TokenVerifier | None) -> Guard:
    """Loopback callers may act; others need a valid token for all namespaces (`verifier`: the
    worker's security.token_secret_file; None: remote callers are refused)."""

    def guard(remote: str | None, authorization: str | None) -> str | None:
        if _loopback(remote):
            return None
        if verifier is None:
            return (f"service control from {remote} refused: this worker takes it only from its own host "
                    "(run the command there), or with an access token when it is given "
                    "security.token_secret_file")
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return f"service control from {remote} needs an access token (--token or --token-file)"
        try:
            claims = verifier.verify(token.strip())
        except ServiceError as e:
            return f"service control from {remote} refused: {e}"
        if ALL_NAMESPACES not in claims.namespaces:
            return (f"service control from {remote} refused: the token (subject {claims.subject!r}) must allow "
                    f"every namespace ({ALL_NAMESPACES!r}), as a worker's services serve them all")
        return None

    return guard


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
