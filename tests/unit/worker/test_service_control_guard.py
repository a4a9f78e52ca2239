"""Who may start, stop and restart a worker's services through its status port
(worker/processes/control_api.py `action_guard`), against a real status server: callers on the
worker's host may; others need a token for every namespace, checked with the worker's secret."""

from __future__ import annotations

import asyncio
import json
import socket
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from typing import Any

import pytest

from legato.access_tokens import ALL_NAMESPACES, TokenVerifier, issue, new_secret
from legato.status_server import StatusServer
from worker.processes.control_api import SERVICE_ACTION_PATH, action_guard

SECRET = new_secret().encode()


def _other_address() -> str | None:
    """An address of this host that is not loopback (what a caller from elsewhere comes from)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # no packet is sent: this only picks the outgoing interface
            ip = s.getsockname()[0]
        except OSError:
            return None
    return None if ip.startswith("127.") else ip


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        return int(s.getsockname()[1])


@pytest.fixture
async def server(request: pytest.FixtureRequest) -> AsyncIterator[tuple[int, list[dict[str, str]]]]:
    done: list[dict[str, str]] = []

    async def act(params: dict[str, str]) -> tuple[int, Any]:
        done.append(params)
        return 200, {"service": params["service"], "state": "running"}

    port = _free_port()
    srv = StatusServer(f"0.0.0.0:{port}", actions={SERVICE_ACTION_PATH: act},
                       guard=action_guard(TokenVerifier(SECRET) if request.param else None))
    await srv.start()
    try:
        yield port, done
    finally:
        await srv.stop()


def _post(host: str, port: int, token: str = "") -> tuple[int, dict[str, Any]]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    req = urllib.request.Request(f"http://{host}:{port}/processes/services/app:svc/start", data=b"",
                                 method="POST", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


async def _call(host: str, port: int, token: str = "") -> tuple[int, dict[str, Any]]:
    return await asyncio.to_thread(_post, host, port, token)


@pytest.mark.parametrize("server", [False, True], indirect=True, ids=["no-secret", "secret"])
async def test_callers_on_the_workers_host_may_act(server: tuple[int, list[dict[str, str]]]) -> None:
    port, done = server
    assert await _call("127.0.0.1", port) == (200, {"service": "app:svc", "state": "running"})
    assert done == [{"service": "app:svc", "action": "start"}]


@pytest.mark.parametrize("server", [False], indirect=True)
async def test_from_elsewhere_without_a_secret_nobody_may(server: tuple[int, list[dict[str, str]]]) -> None:
    port, done = server
    host = _other_address()
    if host is None:
        pytest.skip("this machine has no address but loopback")
    token = issue(SECRET, [ALL_NAMESPACES], subject="ops", ttl_s=60)
    status, body = await _call(host, port, token)
    assert status == 403 and done == []
    assert f"service control from {host} refused: this worker takes it only from its own host" in body["error"]


@pytest.mark.parametrize("server", [True], indirect=True)
async def test_from_elsewhere_a_token_for_every_namespace_is_needed(server: tuple[int, list[dict[str, str]]]) -> None:
    port, done = server
    host = _other_address()
    if host is None:
        pytest.skip("this machine has no address but loopback")
    status, body = await _call(host, port)
    assert (status, body["error"]) == (403, f"service control from {host} needs an access token (--token or "
                                            "--token-file)")
    status, body = await _call(host, port, issue(SECRET, ["default"], subject="dev", ttl_s=60))
    assert status == 403 and "the token (subject 'dev') must allow every namespace ('*')" in body["error"]
    status, body = await _call(host, port, issue(new_secret().encode(), [ALL_NAMESPACES], subject="x", ttl_s=60))
    assert status == 403 and "not signed with this server's secret" in body["error"]
    assert done == []
    status, _ = await _call(host, port, issue(SECRET, [ALL_NAMESPACES], subject="ops", ttl_s=60))
    assert status == 200 and len(done) == 1


@pytest.mark.parametrize(("remote", "allowed"), [
    ("127.0.0.1", True), ("::1", True), ("::ffff:127.0.0.1", True),  # the last: IPv4 on a dual-stack socket
    ("192.0.2.7", False), ("::ffff:192.0.2.7", False), (None, False), ("not an address", False),
])
def test_who_counts_as_the_workers_own_host(remote: str | None, allowed: bool) -> None:
    assert (action_guard(None)(remote, None) is None) is allowed
