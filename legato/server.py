"""Running the server: the one-process `Engine` (history, matching and frontend in one process,
on SQLite (default) or on Cassandra (`config.store.kind`), with the in-process task bus (default)
or Kafka (`config.queues.kind`; the topics must have been made by `legato kafka setup`)), and any
subset of the roles as one process of a cluster (`serve_roles`; legato/roles.py builds them).

`legato server start-dev` serves the engine over gRPC; `legato run` adds an in-process worker;
`legato server start --role ...` runs `serve_roles`. The services meet only through the
interfaces of `legato.api`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING

import grpc

from legato.config import Config
from legato.roles import ALL_ROLES, FRONTEND, HISTORY, MATCHING, ROLE_ORDER, Node, role_address, role_list
from legato.status_server import start_status_server, stop_status_server
from legato.tls import describe_server_security

if TYPE_CHECKING:
    from frontend.http_api import HttpServer
    from legato.stack import StackReplay

log = logging.getLogger("legato.server")


class Engine(Node):
    """History + matching + frontend in this process. On SQLite, `db_path=None` keeps everything
    in memory."""

    def __init__(self, config: Config, db_path: str | None = None, identity: str = "legato-dev") -> None:
        super().__init__(config, ALL_ROLES, db_path, identity)


async def serve_dev(config: Config, db_path: str | None, host: str, port: int,
                    stop: asyncio.Event | None = None, *, ui_optional: bool = False) -> None:
    """Run the engine with its gRPC API (and its HTTP API on `config.ui.address`, when set)
    until `stop` is set (or forever). With `ui_optional`, an HTTP address that cannot be bound
    is a warning (the address was a default, not asked for), not a failure."""
    from frontend.grpc_server import serve
    from frontend.http_api import start_http_server, stop_http_server

    async with Engine(config, db_path) as engine:
        state = _Serving()
        status = await start_status_server(config.metrics.address, engine.readiness(state))
        http = None
        try:
            server = await serve(engine.frontend, host, port, config=config)
            try:
                roles = {FRONTEND: f"{host}:{port}", HISTORY: "in this process", MATCHING: "in this process"}
                http = await start_http_server(engine.frontend, config,
                                               cluster=lambda: engine.cluster_view(roles),
                                               stack_replay=_ui_stack_replay(config))
            except OSError as e:
                if not ui_optional:
                    await _stop_servers([server])
                    raise
                print(f"legato: warning: {e}; the HTTP API is not served (choose a port with --ui-address H:P)",
                      file=sys.stderr, flush=True)
            except BaseException:
                await _stop_servers([server])
                raise
            state.serving = True
            print(f"legato: dev server listening on {host}:{port}{_http_note(http)} (data: {engine.data_description}; "
                  f"queues: {engine.queues_description}; security: {describe_server_security(config.security)})",
                  flush=True)
            try:
                await (stop.wait() if stop is not None else asyncio.Event().wait())
            finally:
                state.serving = False
                await stop_http_server(http)
                await _stop_servers([server])
        finally:
            await stop_status_server(status)


def _ui_stack_replay(config: Config) -> StackReplay | None:
    """The web UI's stack view replays against `ui.entries` (the worker's replay) when no worker
    answers; none without them (and then the worker's code is not imported at all)."""
    if not config.ui.entries:
        return None
    from worker.queries import stack_replay

    return stack_replay(config.ui.entries)


def _http_note(http: HttpServer | None) -> str:
    return f", HTTP API on {http.url}/api/v1/ (web UI: {http.url}/)" if http is not None else ""


async def serve_roles(config: Config, roles: frozenset[str], db_path: str | None, identity: str,
                      stop: asyncio.Event | None = None) -> None:
    """Run `roles` (`legato server start --role ...`), each served at its `cluster` address, until
    `stop` is set (or forever). Prints one line once every role serves (tools wait for it)."""
    from frontend.http_api import start_http_server, stop_http_server

    async with Node(config, roles, db_path, identity) as node:
        state = _Serving()
        status = await start_status_server(config.metrics.address, node.readiness(state))
        http = None
        try:
            servers = await node.serve()
        except BaseException:
            await stop_status_server(status)
            raise
        try:
            if FRONTEND in roles:
                http = await start_http_server(node.frontend, config, cluster=node.cluster_view,
                                               stack_replay=_ui_stack_replay(config))
            await node.join()
            state.serving = True
            where = ", ".join(f"{role} on {role_address(config, role)}" for role in ROLE_ORDER if role in servers)
            where += _http_note(http)
            cluster = (f"; cluster {config.cluster.zookeeper_hosts}{config.cluster.zookeeper_root} as {identity}"
                       if node.in_cluster else "")
            print(f"legato: {role_list(roles)} listening: {where} (data: {node.data_description}; "
                  f"queues: {node.queues_description}{cluster}; "
                  f"security: {describe_server_security(config.security)})", flush=True)
            await (stop.wait() if stop is not None else asyncio.Event().wait())
            # Still serving: hand the shards over (requests in flight finish), then stop.
            state.serving = False
            await node.leave()
        finally:
            await stop_http_server(http)
            await _stop_servers(servers.values())
            await stop_status_server(status)


class _Serving:
    """Readiness's "serving" check: true from the moment the process serves (and joined its
    cluster) until it starts stopping."""

    serving = False

    def __call__(self) -> bool:
        return self.serving


async def _stop_servers(servers: Iterable[grpc.aio.Server]) -> None:
    for server in servers:
        with contextlib.suppress(Exception):
            await server.stop(grace=1.0)


