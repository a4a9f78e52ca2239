"""The HTTP port of every Legato process (`metrics.address`, `--metrics-address`): Prometheus
metrics and the probes of Kubernetes (README, "Metrics").

* `GET /metrics`: every metric of legato/metrics.py and prometheus-client's process collectors;
* `GET /healthz`: 200 while the process's event loop answers (liveness: restart it otherwise);
* `GET /processes` on a worker: its live processes and services as JSON (`legato process list`),
  and `POST /processes/services/{service}/{start|stop|restart}` (worker/processes/control_api.py);
* `GET /readyz`: 200 when every readiness check of the process passes, else 503 and one line per
  failing check (readiness: send it no traffic meanwhile).

It runs on the process's own event loop (aiohttp), so a scrape reads the services' state on the
thread that changes it, and a frozen loop fails its liveness probe as it should.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

import legato.metrics  # noqa: F401  (registers the metrics before the first scrape)
from legato.config import split_address

log = logging.getLogger("legato.status")

# A POST route: the path's match info -> (HTTP status, what to answer as JSON).
Action = Callable[[dict[str, str]], Awaitable[tuple[int, Any]]]
# Who may call the POST routes: (the caller's address, its Authorization header) -> None when it
# may, else why not (answered with 403).
Guard = Callable[[str | None, str | None], str | None]

# A readiness check: None when ready, else why not (one line, named in /readyz's answer); it may
# be a coroutine function (a store or broker round trip), given CHECK_TIMEOUT_S to answer.
Check = Callable[[], "str | Awaitable[str | None] | None"]
CHECK_TIMEOUT_S = 3.0


class Readiness:
    """The named checks /readyz runs."""

    def __init__(self) -> None:
        self._checks: dict[str, Check] = {}

    def add(self, name: str, check: Check) -> None:
        self._checks[name] = check

    async def failing(self) -> list[str]:
        """One line per check that does not pass (all run at once)."""
        names = list(self._checks)
        answers = await asyncio.gather(*(self._run(self._checks[n]) for n in names))
        return [f"{name}: {why}" for name, why in zip(names, answers, strict=True) if why is not None]

    @staticmethod
    async def _run(check: Check) -> str | None:
        try:
            why = check()
            if inspect.isawaitable(why):
                async with asyncio.timeout(CHECK_TIMEOUT_S):
                    why = await why
        except TimeoutError:
            return f"no answer within {CHECK_TIMEOUT_S:g} s"
        except Exception as e:  # a check that breaks counts as not ready, never as a 500
            return f"{type(e).__name__}: {e}"
        return why


class StatusServer:
    """Serves /metrics, /healthz and /readyz on `address` ("host:port") until `stop`."""

    def __init__(self, address: str, readiness: Readiness | None = None,
                 json_routes: dict[str, Callable[[], Any]] | None = None,
                 actions: dict[str, Action] | None = None, guard: Guard | None = None) -> None:
        self.address = address
        self.guard = guard  # who may call the POST routes: None lets anyone who reaches the port
        self.readiness = readiness or Readiness()
        self.json_routes = dict(json_routes or {})  # GET path -> what it answers, as JSON
        self.actions = dict(actions or {})  # POST path pattern -> the action
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        for path, answer in self.json_routes.items():
            app.router.add_get(path, self._json_handler(answer))
        for path, action in self.actions.items():
            app.router.add_post(path, self._action_handler(action, self.guard))
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        host, port = split_address(self.address)
        try:
            await web.TCPSite(runner, host, port).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        log.info("metrics and health on http://%s/metrics, /healthz, /readyz", self.address)

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def _metrics(self, _request: web.Request) -> web.Response:
        body = generate_latest(REGISTRY)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    @staticmethod
    def _json_handler(answer: Callable[[], Any]) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handle(_request: web.Request) -> web.Response:
            return web.json_response(answer())
        return handle

    @staticmethod
    def _action_handler(action: Action, guard: Guard | None) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handle(request: web.Request) -> web.Response:
            refused = guard(request.remote, request.headers.get("Authorization")) if guard is not None else None
            if refused is not None:
                return web.json_response({"error": refused}, status=403)
            status, body = await action(dict(request.match_info))
            return web.json_response(body, status=status)
        return handle

    async def _healthz(self, _request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _readyz(self, _request: web.Request) -> web.Response:
        failing = await self.readiness.failing()
        if failing:
            return web.Response(status=503, text="not ready\n" + "".join(f"{f}\n" for f in failing))
        return web.Response(text="ready\n")


async def start_status_server(address: str, readiness: Readiness | None = None,
                              json_routes: dict[str, Callable[[], Any]] | None = None,
                              actions: dict[str, Action] | None = None,
                              guard: Guard | None = None) -> StatusServer | None:
    """Start the server when `address` is set (None otherwise). An address that cannot be bound
    is an OSError naming it."""
    if not address:
        return None
    server = StatusServer(address, readiness, json_routes, actions, guard)
    try:
        await server.start()
    except OSError as e:
        why = os.strerror(e.errno).lower() if e.errno else str(e)
        raise OSError(f"cannot serve metrics on {address}: {why}") from e
    return server


async def stop_status_server(server: StatusServer | None) -> None:
    if server is not None:
        await server.stop()
