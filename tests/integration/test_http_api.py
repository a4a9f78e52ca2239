"""The HTTP JSON API (frontend/http_api.py) against a real engine on a SQLite file and a real
worker (tests/apps/processes), with aiohttp's client: every route, the long poll for new events,
the children of a parent, errors, tokens, TLS, load shedding, and the OpenAPI document checked
against the routes served. One engine for the module; the HTTP servers in front of it differ by
configuration (a small body limit, a token secret, TLS, one call at a time)."""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp
import pytest
import yaml
from openapi_spec_validator import validate

from frontend.http_api import OPENAPI_FILE, PREFIX, ROUTES, HttpApi, HttpServer
from legato import api
from legato.access_tokens import issue, new_secret
from legato.config import Config
from legato.events import EventType as E
from tests.certs import Ca
from tests.integration.engine_harness import APPS, TASK_QUEUE, Harness, engine_config
from tests.integration.procs import Proc, free_port, legato
from worker.queries import stack_replay

pytestmark = pytest.mark.timeout(120)

NS = "default"  # where the worker of tests/apps/processes polls


class Watch:
    """The engine's frontend, telling when a history long poll has reached it."""

    def __init__(self, inner: api.WorkflowService) -> None:
        self.inner = inner
        self.polling = asyncio.Event()
        self.cancelled = asyncio.Event()  # a long poll was cancelled (its client went away)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def get_workflow_history(self, req: api.GetHistoryRequest) -> api.GetHistoryResponse:
        if req.wait_new_event:
            self.polling.set()
        try:
            return await self.inner.get_workflow_history(req)
        except asyncio.CancelledError:
            self.cancelled.set()
            raise


@dataclass
class Env:
    h: Harness
    watch: Watch
    http: aiohttp.ClientSession
    base: str  # the default server: no token, default limits
    small: str  # limits of 1,000 bytes: bodies up to about 1 MB
    secured: str  # a token secret
    busy: str  # one call at a time
    tls: str
    tls_ca: Path
    secret: bytes

    def ns(self, path: str = "", base: str | None = None) -> str:
        return f"{base or self.base}{PREFIX}/namespaces/{NS}{path}"


async def _serve(watch: Watch, config: Config, servers: list[HttpServer]) -> str:
    server = HttpServer(HttpApi(watch, config), "127.0.0.1:0")
    await server.start()
    servers.append(server)
    return server.url


@pytest.fixture(scope="module")
async def env(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Env]:
    tmp = tmp_path_factory.mktemp("http")
    harness = Harness(tmp, APPS / "processes", engine_config(), grpc=False)
    await harness.start()
    servers: list[HttpServer] = []
    try:
        assert harness.engine is not None
        watch = Watch(harness.engine.frontend)
        base = await _serve(watch, harness.config, servers)
        small_config = Config()
        small_config.limits.max_payload_bytes = 1000
        small_config.limits.max_history_bytes = 1000
        small = await _serve(watch, small_config, servers)
        secret = new_secret()
        (tmp / "secret").write_text(secret)
        secured_config = Config()
        secured_config.security.token_secret_file = str(tmp / "secret")
        secured = await _serve(watch, secured_config, servers)
        busy_config = Config()
        busy_config.grpc.max_concurrent_calls = 1
        busy = await _serve(watch, busy_config, servers)
        ca = Ca(tmp)
        pair = ca.issue("server")
        tls_config = Config()
        tls_config.security.tls_cert_file = str(pair.cert)
        tls_config.security.tls_key_file = str(pair.key)
        tls = await _serve(watch, tls_config, servers)
        async with aiohttp.ClientSession() as http:
            yield Env(harness, watch, http, base, small, secured, busy, tls, ca.cert, secret.encode())
    finally:
        for server in servers:
            await server.stop()
        await harness.close()


async def call(env: Env, method: str, url: str, body: Any = None, *, data: bytes | str | None = None,
               headers: dict[str, str] | None = None) -> tuple[int, Any]:
    if body is not None:
        data = json.dumps(body)
    async with env.http.request(method, url, data=data, headers=headers) as resp:
        text = await resp.text()
        assert resp.content_type == "application/json", (resp.status, text)
        return resp.status, json.loads(text)


async def ok(env: Env, method: str, url: str, body: Any = None) -> Any:
    status, got = await call(env, method, url, body)
    assert status == 200, got
    return got


async def start(env: Env, wid: str, wtype: str, *args: Any) -> str:
    got = await ok(env, "POST", env.ns("/workflows"), {"workflow_id": wid, "workflow_type": wtype,
                                                       "task_queue": TASK_QUEUE, "input": list(args)})
    assert got["started"] is True
    return str(got["run_id"])


def error(got: Any, reason: str, *words: str) -> str:
    assert set(got) == {"error"}, got
    e = got["error"]
    assert e["reason"] == reason, e
    for word in words:
        assert word in e["message"], e
    return str(e["message"])


async def listed(env: Env, query: str, want: int) -> list[dict[str, Any]]:
    """List until `want` runs match (visibility is written by a queue, after the change)."""
    deadline = asyncio.get_running_loop().time() + 15
    while True:
        got = await ok(env, "GET", env.ns("/workflows") + "?" + _q(query=query))
        if len(got["executions"]) >= want:
            return list(got["executions"])
        assert asyncio.get_running_loop().time() < deadline, got
        await asyncio.sleep(0.05)  # polling visibility, not waiting for an event


def _q(**params: Any) -> str:
    return urlencode(params)


# ---------------------------------------------------------------- the document

async def test_openapi_document_is_valid_and_matches_the_routes(env: Env) -> None:
    document = yaml.safe_load(OPENAPI_FILE.read_text())
    validate(document)  # raises on an invalid OpenAPI document
    served = {(r.method.lower(), PREFIX + r.path): r.operation for r in ROUTES}
    documented = {(method, path): op["operationId"] for path, item in document["paths"].items()
                  for method, op in item.items() if method in ("get", "post", "put", "delete", "patch")}
    assert documented == served
    # and the app's router serves exactly those
    app = HttpApi(env.watch, Config()).app()
    routed = {(r.method.lower(), r.resource.canonical) for r in app.router.routes()
              if r.resource is not None and r.method != "HEAD"}
    assert {r for r in routed if r[1].startswith(PREFIX + "/")} == set(served)
    # beside the API, only the web UI's pages (frontend/web_ui.py)
    assert {r for r in routed if not r[1].startswith(PREFIX + "/")} == {
        ("get", "/"), ("get", "/index.html"), ("get", "/assets/{name}")}
    assert await ok(env, "GET", f"{env.base}{PREFIX}/openapi.json") == document
    async with env.http.get(f"{env.base}{PREFIX}/openapi.yaml") as resp:
        assert resp.status == 200 and yaml.safe_load(await resp.text()) == document


# ---------------------------------------------------------------- the routes

async def test_start_signal_long_poll_describe_result_list_count(env: Env) -> None:
    run_id = await start(env, "http-counter", "pr:counter", {"initial": 1})
    await env.h.wait_idle("http-counter")
    d = await ok(env, "GET", env.ns("/workflows/http-counter"))
    assert d["info"]["run_id"] == run_id and d["info"]["status"] == "RUNNING" and d["parent"] is None
    page = await ok(env, "GET", env.ns("/workflows/http-counter/history") + "?page_size=2")
    assert [e["event_type"] for e in page["events"]] == ["WorkflowExecutionStarted", "WorkflowTaskScheduled"]
    assert page["events"][0]["attrs"]["input"] == [{"initial": 1}] and page["next_event_id"] == 3
    rest = await ok(env, "GET", env.ns("/workflows/http-counter/history") + "?first_event_id=3")
    next_id = rest["next_event_id"]
    assert not rest["closed"]

    # A long poll for the next event, answered by the signal sent while it waits.
    env.watch.polling.clear()
    poll = asyncio.create_task(ok(env, "GET", env.ns("/workflows/http-counter/history") + "?" + _q(
        run_id=run_id, first_event_id=next_id, wait_new_event="true", timeout_ms=30_000)))
    await asyncio.wait_for(env.watch.polling.wait(), 10)
    assert not poll.done()
    await ok(env, "POST", env.ns("/workflows/http-counter/signal"), {"signal_name": "increment",
                                                                    "input": {"amount": 5}, "sender": "curl"})
    got = await asyncio.wait_for(poll, 10)
    signaled = got["events"][0]
    assert signaled["event_id"] == next_id and signaled["event_type"] == "WorkflowExecutionSignaled"
    assert signaled["attrs"]["input"] == {"amount": 5} and signaled["attrs"]["sender"] == "curl"

    early = await ok(env, "GET", env.ns("/workflows/http-counter/result"))  # timeout_ms 0: at once
    assert early["status"] == "RUNNING" and early["result"] is None
    await ok(env, "POST", env.ns("/workflows/http-counter/signal"), {"signal_name": "finish", "run_id": run_id})
    result = await ok(env, "GET", env.ns("/workflows/http-counter/result") + "?timeout_ms=20000")
    assert result == {"run_id": run_id, "status": "COMPLETED", "result": {"total": 6, "seen": [5]}, "failure": None}

    runs = await listed(env, "WorkflowId = 'http-counter' AND ExecutionStatus = 'Completed'", 1)
    assert [(r["workflow_id"], r["run_id"], r["workflow_type"]) for r in runs] == [
        ("http-counter", run_id, "pr:counter")]
    count = await ok(env, "GET", env.ns("/workflow-count") + "?" + _q(query="WorkflowId = 'http-counter'"))
    assert count == {"count": 1, "groups": []}
    grouped = await ok(env, "GET", env.ns("/workflow-count") + "?" + _q(
        query="WorkflowId = 'http-counter' GROUP BY ExecutionStatus"))
    assert grouped == {"count": 1, "groups": [{"value": "COMPLETED", "count": 1}]}


async def test_a_client_that_goes_away_cancels_its_long_poll(env: Env) -> None:
    await start(env, "http-gone", "pr:counter", {"initial": 0})
    await env.h.wait_idle("http-gone")
    events = await env.h.history("http-gone")
    env.watch.polling.clear()
    env.watch.cancelled.clear()
    poll = asyncio.create_task(call(env, "GET", env.ns("/workflows/http-gone/history") + "?" + _q(
        first_event_id=len(events) + 1, wait_new_event="true", timeout_ms=60_000)))
    await asyncio.wait_for(env.watch.polling.wait(), 10)
    poll.cancel()  # the connection closes
    await asyncio.wait_for(env.watch.cancelled.wait(), 10)  # and the service call ends with it
    await ok(env, "POST", env.ns("/workflows/http-gone/terminate"), {})


async def test_list_pages(env: Env) -> None:
    for i in range(3):
        await start(env, f"http-page-{i}", "pr:child", i)
    query = "WorkflowId IN ('http-page-0', 'http-page-1', 'http-page-2')"
    await listed(env, query, 3)
    first = await ok(env, "GET", env.ns("/workflows") + "?" + _q(query=query, page_size=2))
    assert len(first["executions"]) == 2 and first["next_page_token"]
    second = await ok(env, "GET", env.ns("/workflows") + "?" + _q(query=query, page_size=2,
                                                                   next_page_token=first["next_page_token"]))
    assert len(second["executions"]) == 1 and second["next_page_token"] == ""
    ids = {r["workflow_id"] for r in first["executions"] + second["executions"]}
    assert ids == {"http-page-0", "http-page-1", "http-page-2"}


async def test_children_of_a_parent_and_the_parent_of_a_child(env: Env) -> None:
    run_id = await start(env, "http-parent", "pr:parent", 1)
    result = await ok(env, "GET", env.ns("/workflows/http-parent/result") + "?timeout_ms=30000")
    assert result["status"] == "COMPLETED", result
    got = await ok(env, "GET", env.ns("/workflows/http-parent/children"))
    assert got["run_id"] == run_id and got["next_page_token"] == ""
    kids = got["children"]
    assert [(c["workflow_type"], c["status"]) for c in kids] == [
        ("pr:child", "COMPLETED"), ("pr:child", "COMPLETED"), ("pr:fail_child", "FAILED")]
    assert all(c["namespace"] == NS and c["run_id"] for c in kids)
    assert "no such order" in kids[2]["failure"]

    first = await ok(env, "GET", env.ns("/workflows/http-parent/children") + "?page_size=2")
    assert first["children"] == kids[:2] and first["next_page_token"]
    second = await ok(env, "GET", env.ns("/workflows/http-parent/children") + "?" + _q(
        page_size=2, next_page_token=first["next_page_token"]))
    assert second == {"run_id": run_id, "children": kids[2:], "next_page_token": ""}

    # a child's id holds slashes ("parent/run/1"): percent-encoded in the path
    child_path = quote(kids[0]["workflow_id"], safe="")
    child = await ok(env, "GET", env.ns(f"/workflows/{child_path}") + f"?run_id={kids[0]['run_id']}")
    parent = child["parent"]
    assert (parent["namespace"], parent["workflow_id"], parent["run_id"]) == (NS, "http-parent", run_id)


async def test_cancel_and_terminate(env: Env) -> None:
    await start(env, "http-cancel", "pr:counter", {"initial": 0})
    await ok(env, "POST", env.ns("/workflows/http-cancel/cancel"), {"reason": "enough", "identity": "curl"})
    requested = await env.h.wait_type("http-cancel", E.WorkflowExecutionCancelRequested)
    assert requested.attrs["reason"] == "enough" and requested.attrs["identity"] == "curl"
    await start(env, "http-terminate", "pr:counter", {"initial": 0})
    status, got = await call(env, "POST", env.ns("/workflows/http-terminate/terminate"), data=b"")  # no body
    assert status == 200 and got == {}
    result = await ok(env, "GET", env.ns("/workflows/http-terminate/result") + "?timeout_ms=10000")
    assert result["status"] == "TERMINATED"


# ---------------------------------------------------------------- errors

async def test_malformed_bodies_are_400s_naming_the_problem(env: Env) -> None:
    url = env.ns("/workflows")
    status, got = await call(env, "POST", url, data=b'{"workflow_id": ')
    assert status == 400
    error(got, "BadRequest", "body of POST", "JSON")
    status, got = await call(env, "POST", url, [1, 2])
    assert status == 400
    error(got, "BadRequest", "must be a JSON object, got an array")
    start_body = {"workflow_id": "http-bad", "workflow_type": "pr:child", "task_queue": TASK_QUEUE}
    status, got = await call(env, "POST", url, {**start_body, "colour": "red"})
    assert status == 400
    error(got, "BadRequest", "unknown field 'colour'", "workflow_type")
    status, got = await call(env, "POST", url, {**start_body, "input": "x"})
    assert status == 400
    error(got, "BadRequest", "field input must be an array, got a string")
    status, got = await call(env, "POST", url, {**start_body, "execution_timeout_ms": 1.5})
    assert status == 400
    error(got, "BadRequest", "execution_timeout_ms must be an integer")
    status, got = await call(env, "POST", url, {"workflow_id": "http-bad"})
    assert status == 400
    error(got, "BadRequest", "field workflow_type is required")
    status, got = await call(env, "POST", url, {**start_body, "start_messages": [{"topic": "t", "extra": 1}]})
    assert status == 400
    error(got, "BadRequest", "start_messages[0]", "unknown field 'extra'")
    # the frontend's own validation, unchanged
    status, got = await call(env, "POST", url, {**start_body, "id_reuse_policy": "sometimes"})
    assert status == 400
    error(got, "InvalidArgument", "id_reuse_policy", "sometimes")
    status, got = await call(env, "POST", url, {**start_body, "workflow_id": "@caller"})
    assert status == 400
    error(got, "InvalidArgument", "workflow_id", "reserved")
    status, got = await call(env, "POST", env.ns("/workflows/x/signal"), {"input": 1})
    assert status == 400
    error(got, "BadRequest", "signal_name is required")


async def test_an_oversized_body_is_a_413(env: Env) -> None:
    body = {"workflow_id": "http-big", "workflow_type": "pr:child", "task_queue": TASK_QUEUE,
            "input": ["x" * (1024 * 1024 + 8000)]}
    status, got = await call(env, "POST", env.ns("/workflows", env.small), body)
    assert status == 413
    error(got, "RequestTooLarge", "the body of POST", "the limit is 1052576 bytes")
    # the same body under the default limit reaches the frontend, whose payload limit (2 MB) it passes
    status, got = await call(env, "POST", env.ns("/workflows"), {**body, "input": ["x" * 100]})
    assert status == 200, got


async def test_service_errors_keep_their_grpc_meaning(env: Env) -> None:
    status, got = await call(env, "GET", env.ns("/workflows/no-such-workflow"))
    assert status == 404
    error(got, "WorkflowNotFound", "'no-such-workflow'", f"'{NS}'")
    assert got["error"]["code"] == "NOT_FOUND"
    status, got = await call(env, "GET", env.ns("/workflows") + "?" + _q(query="WorkflowType = "))
    assert status == 400
    error(got, "InvalidQuery", "position")
    status, got = await call(env, "GET", env.ns("/workflow-count") + "?" + _q(query="WorkflowId = 'a' AND"))
    assert status == 400
    error(got, "InvalidQuery", "position")
    status, got = await call(env, "GET", env.ns("/workflows") + "?page_size=many")
    assert status == 400
    error(got, "BadRequest", "page_size must be an integer, got 'many'")
    status, got = await call(env, "GET", env.ns("/workflows") + "?page_size=5000")
    assert status == 400
    error(got, "InvalidArgument", "page_size is 5000")
    status, got = await call(env, "GET", env.ns("/workflows/x/history") + "?timeout_ms=999999999")
    assert status == 400
    error(got, "InvalidArgument", "timeout_ms")
    status, got = await call(env, "GET", env.ns("/workflows") + "?colour=red")
    assert status == 400
    error(got, "BadRequest", "unknown query parameter 'colour'")
    # a second start of a running workflow: 409 with the running run
    run_id = await start(env, "http-twice", "pr:counter", {"initial": 0})
    status, got = await call(env, "POST", env.ns("/workflows"), {"workflow_id": "http-twice",
                                                                 "workflow_type": "pr:counter",
                                                                 "task_queue": TASK_QUEUE})
    assert status == 409 and got["error"]["code"] == "ALREADY_EXISTS" and got["error"]["run_id"] == run_id
    await ok(env, "POST", env.ns("/workflows/http-twice/terminate"), {"reason": "test over"})
    # no such route, or a method the route does not take: JSON too
    status, got = await call(env, "GET", f"{env.base}{PREFIX}/nothing/here")
    assert status == 404
    error(got, "RouteNotFound", "openapi.json")
    status, got = await call(env, "DELETE", env.ns("/workflows/x"))
    assert status == 405
    error(got, "MethodNotAllowed", "GET")


# ---------------------------------------------------------------- the same door as gRPC

async def test_tokens_are_checked_as_on_grpc(env: Env) -> None:
    url = env.ns("/workflows", env.secured)
    status, got = await call(env, "GET", url)
    assert status == 401
    error(got, "TokenMissing", "Authorization: Bearer")
    status, got = await call(env, "GET", url, headers={"Authorization": "Bearer not-a-token"})
    assert status == 401
    error(got, "TokenInvalid")
    other = issue(env.secret, ["shop"], subject="shopper", ttl_s=600)
    status, got = await call(env, "GET", url, headers={"Authorization": f"Bearer {other}"})
    assert status == 403 and got["error"]["code"] == "PERMISSION_DENIED"
    assert f"namespace '{NS}'" in got["error"]["message"] and "shopper" in got["error"]["message"]
    status, got = await call(env, "POST", env.ns("/workflows/x/terminate", env.secured), {},
                             headers={"Authorization": f"Bearer {other}"})
    assert status == 403
    mine = issue(env.secret, [NS], subject="pr-user", ttl_s=600)
    status, got = await call(env, "GET", url, headers={"Authorization": f"Bearer {mine}"})
    assert status == 200 and "executions" in got
    # the document is public
    status, _ = await call(env, "GET", f"{env.secured}{PREFIX}/openapi.json")
    assert status == 200


async def test_tls_serves_https_with_the_frontend_certificate(env: Env) -> None:
    assert env.tls.startswith("https://")
    context = ssl.create_default_context(cafile=str(env.tls_ca))
    async with env.http.get(env.ns("/workflow-count", env.tls), ssl=context) as resp:
        assert resp.status == 200 and "count" in await resp.json()
    with pytest.raises(aiohttp.ClientError):  # plain HTTP is not served there
        async with env.http.get(env.ns("/workflow-count", env.tls.replace("https://", "http://"))) as resp:
            await resp.read()


async def test_requests_beyond_the_concurrency_limit_are_refused_429(env: Env) -> None:
    await start(env, "http-busy", "pr:counter", {"initial": 0})
    await env.h.wait_idle("http-busy")
    events = await env.h.history("http-busy")
    env.watch.polling.clear()
    poll = asyncio.create_task(ok(env, "GET", env.ns("/workflows/http-busy/history", env.busy) + "?" + _q(
        first_event_id=len(events) + 1, wait_new_event="true", timeout_ms=30_000)))
    await asyncio.wait_for(env.watch.polling.wait(), 10)
    status, got = await call(env, "GET", env.ns("/workflow-count", env.busy))
    assert status == 429
    error(got, "ServerBusy", "max_concurrent_calls")
    await ok(env, "POST", env.ns("/workflows/http-busy/terminate"), {})
    assert (await asyncio.wait_for(poll, 10))["events"]
    assert (await call(env, "GET", env.ns("/workflow-count", env.busy)))[0] == 200


# ---------------------------------------------------------------- the command line

def test_start_dev_serves_it_on_ui_address_and_starts_without_it_when_the_default_is_taken() -> None:
    port, ui = free_port(), free_port()
    proc = Proc(["server", "start-dev", "--port", str(port), "--ui-address", f"127.0.0.1:{ui}"]).start()
    try:
        line = proc.wait_for("listening")
        assert (f"listening on 127.0.0.1:{port}, HTTP API on http://127.0.0.1:{ui}/api/v1/ "
                f"(web UI: http://127.0.0.1:{ui}/) (") in line
        with urllib.request.urlopen(f"http://127.0.0.1:{ui}{PREFIX}/namespaces/default/workflow-count") as resp:
            assert json.load(resp) == {"count": 0, "groups": []}
    finally:
        proc.stop()
    # The default (the gRPC port + 1000) is taken: the dev server says so and serves gRPC all the same.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        grpc_port = taken.getsockname()[1] - 1000
        proc = Proc(["server", "start-dev", "--port", str(grpc_port)]).start()
        try:
            line = proc.wait_for("listening")
            assert "HTTP API" not in line
            warning = proc.wait_for("warning")
            assert f"cannot serve the HTTP API on 127.0.0.1:{grpc_port + 1000}" in warning and "--ui-address" in warning
        finally:
            proc.stop()


def test_ui_address_needs_a_frontend_role() -> None:
    p = legato("server", "start", "--role", "history,matching", "--ui-address", "127.0.0.1:8233")
    assert p.returncode == 3 and "has no frontend" in p.stderr, (p.returncode, p.stderr)
    p = legato("server", "start-dev", "--ui-address", "localhost")
    assert p.returncode == 3 and "--ui-address (ui.address)" in p.stderr and "host:port" in p.stderr, p.stderr


def test_a_frontend_role_serves_it_with_ui_address(tmp_path: Path) -> None:
    """`server start --role frontend`: visibility from history's SQLite file, the rest from history,
    which is not running here: UNAVAILABLE is a 503 naming it."""
    ui, history = free_port(), free_port()
    proc = Proc(["server", "start", "--role", "frontend", "--db", str(tmp_path / "legato.db"),
                 "--frontend-address", f"127.0.0.1:{free_port()}", "--history-address", f"127.0.0.1:{history}",
                 "--matching-address", f"127.0.0.1:{free_port()}", "--ui-address", f"127.0.0.1:{ui}"]).start()
    try:
        assert f"HTTP API on http://127.0.0.1:{ui}/api/v1/" in proc.wait_for("listening")
        base = f"http://127.0.0.1:{ui}{PREFIX}/namespaces/default"
        with urllib.request.urlopen(f"{base}/workflow-count") as resp:
            assert json.load(resp) == {"count": 0, "groups": []}
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{base}/workflows/order-1", timeout=30)
        assert refused.value.code == 503
        got = json.load(refused.value)
        assert got["error"]["code"] == "UNAVAILABLE" and f"127.0.0.1:{history}" in got["error"]["message"]
    finally:
        proc.stop()


# ---------------------------------------------------------------- the web UI's routes

async def test_stack_and_query_are_answered_by_the_worker(env: Env) -> None:
    """Issue 14: the stack view asks the worker that has the run cached (no Lua code needed here);
    POST .../query is the query itself; a closed run is answered by replay."""
    await start(env, "http-stack", "pr:counter", {"initial": 0})
    await env.h.wait_idle("http-stack")
    got = await ok(env, "GET", env.ns("/workflows/http-stack/stack"))
    assert (got["workflow_id"], got["status"], got["source"], got["worker"]) == (
        "http-stack", "RUNNING", "worker-cache", "test-worker"), got
    [main] = got["coroutines"]
    assert main["main"] is True and main["frames"][0]["source"] == "children.lua", main
    q = await ok(env, "POST", env.ns("/workflows/http-stack/query"), {"query_type": "__stack_trace"})
    assert q["source"] == "worker-cache" and q["result"]["coroutines"] == got["coroutines"] and q["run_id"]
    status, bad = await call(env, "POST", env.ns("/workflows/http-stack/query"), {"query_type": "balance"})
    assert status == 400
    error(bad, "UnknownQueryType", "__stack_trace")
    status, bad = await call(env, "POST", env.ns("/workflows/http-stack/query"), {"nope": 1})
    assert status == 400
    error(bad, "BadRequest", "nope")
    status, got = await call(env, "GET", env.ns("/workflows/no-such-run/stack"))
    assert status == 404
    status, got = await call(env, "GET", env.ns("/workflows/http-stack/stack") + "?bad=1")
    assert status == 400
    error(got, "BadRequest", "bad")
    await ok(env, "POST", env.ns("/workflows/http-stack/terminate"), {})
    got = await ok(env, "GET", env.ns("/workflows/http-stack/stack"))
    # terminated while it waited: its coroutines as of its last completed task (the worker still has
    # it cached: a terminate reaches no worker)
    assert got["source"] in ("worker-cache", "worker-replay") and got["status"] == "TERMINATED"
    assert "closed" in got["note"]
    assert got["coroutines"][0]["frames"][0]["source"] == "children.lua"


async def test_stack_without_a_worker_replays_against_ui_entries_or_times_out(env: Env) -> None:
    await start(env, "http-stack-2", "pr:counter", {"initial": 0})
    await env.h.wait_idle("http-stack-2")
    await env.h.stop_worker()
    server = HttpServer(HttpApi(env.watch, Config(), stack_replay=stack_replay(str(APPS / "processes"))), "127.0.0.1:0")
    await server.start()
    try:
        status, got = await call(env, "GET", env.ns("/workflows/http-stack-2/stack") + "?timeout_ms=200")
        assert status == 504  # no worker, no code: the query's deadline, naming the queue
        error(got, "QueryTimeout", f"{NS}/{TASK_QUEUE}")
        got = await ok(env, "GET", env.ns("/workflows/http-stack-2/stack", server.url) + "?timeout_ms=200")
        assert got["source"] == "frontend-replay" and got["status"] == "RUNNING" and got["worker"] == ""
        assert got["coroutines"][0]["frames"][0]["source"] == "children.lua"
    finally:
        await server.stop()
        await env.h.start_worker()


async def test_cluster_route_of_the_one_process_engine_and_its_token_rule(env: Env) -> None:
    engine = env.h.engine
    assert engine is not None
    server = HttpServer(HttpApi(env.watch, Config(), cluster=engine.cluster_view), "127.0.0.1:0")
    await server.start()
    try:
        got = await ok(env, "GET", f"{server.url}{PREFIX}/cluster")
    finally:
        await server.stop()
    assert got["mode"] == "single process" and len(got["members"]) == 1 and got["members"][0]["self"]
    assert len(got["shards"]) == got["num_shards"] and None not in got["shards"].values()
    assert any(q["task_queue"] == TASK_QUEUE and q["kind"] == "workflow" for q in got["queues"]), got["queues"]
    # not a namespace's: a token for all namespaces only
    url = f"{env.secured}{PREFIX}/cluster"
    status, got = await call(env, "GET", url)
    assert status == 401
    narrow = issue(env.secret, [NS], subject="pr-user", ttl_s=600)
    status, got = await call(env, "GET", url, headers={"Authorization": f"Bearer {narrow}"})
    assert status == 403 and "all namespaces" in got["error"]["message"]
    admin = issue(env.secret, ["*"], subject="admin", ttl_s=600)
    status, got = await call(env, "GET", url, headers={"Authorization": f"Bearer {admin}"})
    assert status == 200 and "members" in got


async def test_the_port_serves_the_web_ui_and_says_how_to_build_it_when_it_is_not(env: Env, tmp_path: Path) -> None:
    built = tmp_path / "built"
    (built / "assets").mkdir(parents=True)
    (built / "index.html").write_text('<!doctype html><script src="/assets/app-1.js"></script>')
    (built / "assets" / "app-1.js").write_text("console.log(1)")
    (tmp_path / "secret.txt").write_text("not an asset")
    servers = [HttpServer(HttpApi(env.watch, Config(), ui_dir=d), "127.0.0.1:0") for d in (built, tmp_path / "none")]
    for s in servers:
        await s.start()
    try:
        ui, unbuilt = (s.url for s in servers)
        async with env.http.get(ui + "/") as resp:
            assert resp.status == 200 and resp.content_type == "text/html"
            assert "app-1.js" in await resp.text()
            assert "default-src 'self'" in resp.headers["Content-Security-Policy"]
        async with env.http.get(ui + "/assets/app-1.js") as resp:
            assert resp.status == 200 and "javascript" in resp.content_type
            assert "immutable" in resp.headers["Cache-Control"]
        for bad in ("/assets/nothing.js", "/assets/..%2Fsecret.txt", "/assets/%2E%2E/secret.txt"):
            async with env.http.get(ui + bad) as resp:
                assert resp.status == 404, bad
                assert "not an asset" not in await resp.text()
        async with env.http.get(unbuilt + "/") as resp:
            assert resp.status == 503
            assert "make install" in await resp.text()
        # the API beside it is unchanged
        assert "count" in await ok(env, "GET", env.ns("/workflow-count", ui))
    finally:
        for s in servers:
            await s.stop()
