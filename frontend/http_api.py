"""The HTTP JSON API of the frontend (README, "HTTP API"), beside gRPC, over any
`legato.api.WorkflowService`: the in-process frontend of `legato server start-dev`, or the
frontend role of a cluster node. It is documented by frontend/openapi.yaml, which it serves at
/api/v1/openapi.yaml and /api/v1/openapi.json (a test holds the two to each other).

It is the same door as gRPC, not a second, weaker one:

* every route calls the same `WorkflowService` method as the gRPC rpc it stands for, so the
  frontend's validation applies unchanged (a bad field is a 400 naming it); what this module
  adds is only the JSON framing: a body that is not JSON, not an object, has a field of the wrong
  type or a field it does not know is a 400 saying which, before the service is called;
* a body is capped at the size gRPC caps a message at (`legato.wire.max_message_bytes`: 413);
* with `security.token_secret_file`, each request needs `Authorization: Bearer <token>`, checked
  by `legato.authz.TokenAuth` against the namespaces of the rpc's own rule
  (frontend/namespaces.py), so 401 and 403 mean what UNAUTHENTICATED and PERMISSION_DENIED mean;
* with `security.tls_cert_file`, the port serves HTTPS with the same certificate (and asks for
  client certificates when `tls_client_auth`);
* at most `grpc.max_concurrent_calls` requests are served at once (`legato.admission`), the others
  refused with 429 (ServerBusy) before any work;
* a client that goes away cancels its service call (a long poll ends with it).

Errors are `{"error": {"code", "message", "reason", "type"}}`, with the HTTP status of the gRPC
code (`HTTP_STATUS`); a bug is a 500 with a one-line message (and a traceback in the log only).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import enum
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, NoReturn

import yaml
from aiohttp import web

from frontend import web_ui
from frontend.namespaces import RULES as NAMESPACE_RULES
from legato import api, codec, metrics, wire
from legato.admission import CallLimit
from legato.authz import token_auth
from legato.config import Config, split_address
from legato.errors import AlreadyStarted, FailedPrecondition, InvalidArgument, ServiceError, Unauthenticated
from legato.grpc_serving import one_line
from legato.ids import new_request_id
from legato.lineage import children_of, read_history
from legato.proto import legato_pb2 as pb
from legato.stack import StackError, StackReplay, workflow_stack
from legato.tls import BEARER, server_ssl_context

log = logging.getLogger("legato.frontend.http")

PREFIX = "/api/v1"
OPENAPI_FILE = Path(__file__).with_name("openapi.yaml")
UI_DIR = web_ui.UI_DIR
# What the cluster page shows (GET /cluster): an async function of the process serving the API.
ClusterInfo = Callable[[], Awaitable[dict[str, Any]]]
WHAT = "Legato HTTP API"
METRICS_SERVICE = "frontend-http"  # the `service` label of this API's request metrics
DEFAULT_LIST_PAGE = 100
DEFAULT_HISTORY_WAIT_MS = 30_000

# The HTTP status of each gRPC status code (as grpc-gateway maps them).
HTTP_STATUS = {
    "INVALID_ARGUMENT": 400, "FAILED_PRECONDITION": 400, "OUT_OF_RANGE": 400,
    "UNAUTHENTICATED": 401, "PERMISSION_DENIED": 403, "NOT_FOUND": 404,
    "ALREADY_EXISTS": 409, "ABORTED": 409, "RESOURCE_EXHAUSTED": 429, "CANCELLED": 499,
    "UNKNOWN": 500, "INTERNAL": 500, "DATA_LOSS": 500, "UNIMPLEMENTED": 501,
    "UNAVAILABLE": 503, "DEADLINE_EXCEEDED": 504,
}


def _bad(message: str, reason: str = "BadRequest") -> NoReturn:
    raise InvalidArgument(message, reason=reason)


def _json_response(body: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, text=json.dumps(body, ensure_ascii=False),
                        content_type="application/json")


def error_body(code: str, message: str, reason: str, type_name: str, **extra: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "reason": reason, "type": type_name, **extra}}


def _service_error_response(e: ServiceError) -> web.Response:
    extra = {"run_id": e.run_id} if isinstance(e, AlreadyStarted) and e.run_id else {}
    return _json_response(error_body(e.code, e.message, e.reason, type(e).__name__, **extra),
                          HTTP_STATUS.get(e.code, 500))


def plain(value: Any) -> Any:
    """A response value as JSON: dataclasses as objects (their `to_dict` when they have one),
    enums as their values."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        if hasattr(value, "to_dict"):
            return plain(value.to_dict())
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


# ---------------------------------------------------------------- reading requests

class Params:
    """The query parameters of a request: each known, given once, of the right type; a 400
    naming the parameter and the route otherwise."""

    def __init__(self, request: web.Request, known: tuple[str, ...], where: str) -> None:
        self._query = request.query
        self._where = where
        for name in self._query:
            if name not in known:
                _bad(f"{where}: unknown query parameter {name!r}; this route takes: "
                     f"{', '.join(known) or 'none'}")
            if len(self._query.getall(name)) > 1:
                _bad(f"{where}: query parameter {name!r} is given more than once")

    def text(self, name: str, default: str = "") -> str:
        return self._query.get(name, default)

    def integer(self, name: str, default: int) -> int:
        raw = self._query.get(name)
        if raw is None or raw == "":
            return default
        try:
            return int(raw, 10)
        except ValueError:
            _bad(f"{self._where}: query parameter {name} must be an integer, got {raw!r}")

    def boolean(self, name: str, default: bool) -> bool:
        raw = self._query.get(name)
        if raw is None or raw == "":
            return default
        value = {"true": True, "1": True, "false": False, "0": False}.get(raw.lower())
        if value is None:
            _bad(f"{self._where}: query parameter {name} must be true or false, got {raw!r}")
        return value


# JSON types of body fields: what each accepts, and how a mismatch is named.
_TYPES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "string": (lambda v: isinstance(v, str), "a string"),
    "integer": (lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer"),
    "boolean": (lambda v: isinstance(v, bool), "true or false"),
    "array": (lambda v: isinstance(v, list), "an array"),
    "object": (lambda v: isinstance(v, dict), "an object"),
    "object?": (lambda v: v is None or isinstance(v, dict), "an object or null"),
    "any": (lambda v: True, "any JSON value"),
}


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "an array" if isinstance(value, list) else "an object"


def check_fields(data: Any, fields: dict[str, str], required: tuple[str, ...], where: str) -> dict[str, Any]:
    """`data` (a decoded body, or an object inside it) as a dict of known fields of the right
    JSON types, with the required ones present; InvalidArgument naming the field otherwise."""
    if not isinstance(data, dict):
        _bad(f"{where} must be a JSON object, got {_json_type(data)}")
    for name, value in data.items():
        kind = fields.get(name)
        if kind is None:
            _bad(f"{where} has unknown field {name!r}; known fields: {', '.join(fields)}")
        accepts, expected = _TYPES[kind]
        if not accepts(value):
            _bad(f"{where}: field {name} must be {expected}, got {_json_type(value)}")
    for name in required:
        if name not in data:
            _bad(f"{where}: field {name} is required")
    return data


def _enum(cls: type[enum.StrEnum], value: str, field: str) -> Any:
    try:
        return cls(value)
    except ValueError:
        _bad(f"{field} has unknown value {value!r}; expected one of: {', '.join(m.value for m in cls)}",
             "InvalidArgument")


def _encode_token(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode() if raw else ""


def _decode_token(text: str, where: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text.encode() + b"=" * (-len(text) % 4)) if text else b""
    except (binascii.Error, ValueError):
        _bad(f"{where}: next_page_token is not a token this API gave (base64url)")


# ---------------------------------------------------------------- routes

@dataclass(frozen=True, slots=True)
class Route:
    """One route: its method and path (under PREFIX), the gRPC rpc it stands for (whose
    namespace rule authorizes it; None: public, the OpenAPI document), and its handler."""

    method: str
    path: str
    operation: str  # the operationId in openapi.yaml; the `method` label of its metrics
    rpc: str | None
    handler: str  # the HttpApi method serving it


ROUTES: tuple[Route, ...] = (
    Route("GET", "/namespaces/{namespace}/workflows", "ListWorkflows", "ListWorkflows", "_list"),
    Route("POST", "/namespaces/{namespace}/workflows", "StartWorkflow", "StartWorkflow", "_start"),
    Route("GET", "/namespaces/{namespace}/workflow-count", "CountWorkflows", "CountWorkflows", "_count"),
    Route("GET", "/namespaces/{namespace}/workflows/{workflow_id}", "DescribeWorkflow", "DescribeWorkflow",
          "_describe"),
    Route("GET", "/namespaces/{namespace}/workflows/{workflow_id}/history", "GetWorkflowHistory",
          "GetWorkflowHistory", "_history"),
    Route("GET", "/namespaces/{namespace}/workflows/{workflow_id}/result", "GetWorkflowResult", "GetWorkflowResult",
          "_result"),
    Route("GET", "/namespaces/{namespace}/workflows/{workflow_id}/children", "ListWorkflowChildren",
          "GetWorkflowHistory", "_children"),
    Route("POST", "/namespaces/{namespace}/workflows/{workflow_id}/signal", "SignalWorkflow", "SignalWorkflow",
          "_signal"),
    Route("POST", "/namespaces/{namespace}/workflows/{workflow_id}/cancel", "RequestCancelWorkflow",
          "RequestCancelWorkflow", "_cancel"),
    Route("POST", "/namespaces/{namespace}/workflows/{workflow_id}/terminate", "TerminateWorkflow",
          "TerminateWorkflow", "_terminate"),
    Route("GET", "/namespaces/{namespace}/workflows/{workflow_id}/stack", "GetWorkflowStack",
          "QueryWorkflow", "_stack"),
    Route("POST", "/namespaces/{namespace}/workflows/{workflow_id}/query", "QueryWorkflow", "QueryWorkflow",
          "_query"),
    Route("GET", "/cluster", "DescribeCluster", "DescribeCluster", "_cluster"),
    Route("GET", "/openapi.json", "GetOpenApiJson", None, "_openapi_json"),
    Route("GET", "/openapi.yaml", "GetOpenApiYaml", None, "_openapi_yaml"),
)

_START_FIELDS = {
    "workflow_id": "string", "workflow_type": "string", "task_queue": "string", "input": "array",
    "request_id": "string", "identity": "string", "execution_timeout_ms": "integer", "run_timeout_ms": "integer",
    "task_timeout_ms": "integer", "id_reuse_policy": "string", "id_conflict_policy": "string",
    "context": "object", "memo": "object", "search_attributes": "object", "retry_policy": "object?",
    "cron_schedule": "string", "start_delay_ms": "integer", "execution_error_when_already_started": "boolean",
    "wait_for_cancellation": "boolean", "start_messages": "array",
}
_START_MESSAGE_FIELDS = {"topic": "string", "payload": "any"}
_SIGNAL_FIELDS = {"signal_name": "string", "input": "any", "run_id": "string", "sender": "string",
                  "identity": "string", "request_id": "string"}
_QUERY_FIELDS = {"query_type": "string", "args": "any", "run_id": "string", "timeout_ms": "integer"}
_CANCEL_FIELDS = {"run_id": "string", "reason": "string", "identity": "string", "request_id": "string",
                  "deadline_ms": "integer"}
_TERMINATE_FIELDS = {"run_id": "string", "reason": "string", "identity": "string", "request_id": "string"}


class Call:
    """One request being served: its route, path parameters and where it is (for messages)."""

    def __init__(self, request: web.Request, route: Route, max_body_bytes: int) -> None:
        self.request = request
        self.route = route
        self.where = f"{request.method} {request.path}"
        self.namespace = request.match_info.get("namespace", "")
        self.workflow_id = request.match_info.get("workflow_id", "")
        self._max_body_bytes = max_body_bytes

    def params(self, *known: str) -> Params:
        return Params(self.request, known, self.where)

    def ref(self, run_id: str) -> api.ExecutionRef:
        return api.ExecutionRef(self.workflow_id, run_id, self.namespace)

    async def body(self, fields: dict[str, str], required: tuple[str, ...] = ()) -> dict[str, Any]:
        """The JSON object of the body (an empty body is {}), its fields checked."""
        size = self.request.content_length
        if size is not None and size > self._max_body_bytes:
            raise _TooLarge(size, self._max_body_bytes)
        try:
            raw = await self.request.read()
        except web.HTTPRequestEntityTooLarge:
            raise _TooLarge(None, self._max_body_bytes) from None
        if not raw.strip():
            data: Any = {}
        else:
            try:
                data = codec.load_payload(raw, f"the body of {self.where}")
            except InvalidArgument as e:
                _bad(f"{e.message} (send a JSON object)")
        return check_fields(data, fields, required, f"the body of {self.where}")


class _TooLarge(Exception):
    def __init__(self, size: int | None, limit: int) -> None:
        super().__init__(size, limit)
        self.size = size
        self.limit = limit


class HttpApi:
    """The aiohttp application of the API over `service` (see the module's docstring)."""

    def __init__(self, service: api.WorkflowService, config: Config | None = None, *,
                 max_body_bytes: int | None = None, cluster: ClusterInfo | None = None,
                 ui_dir: Path | None = UI_DIR, stack_replay: StackReplay | None = None) -> None:
        self.service = service
        self.stack_replay = stack_replay  # the stack view's replay against `ui.entries` (legato/server.py)
        self.config = config or Config()
        self.cluster = cluster
        self.ui_dir = ui_dir
        self.max_body_bytes = max_body_bytes or wire.max_message_bytes(self.config)
        self.call_limit = CallLimit(self.config.grpc.max_concurrent_calls, WHAT)
        self._auth = token_auth(self.config.security, NAMESPACE_RULES, WHAT)

    @cached_property
    def openapi(self) -> dict[str, Any]:
        document: dict[str, Any] = yaml.safe_load(OPENAPI_FILE.read_text(encoding="utf-8"))
        return document

    def app(self) -> web.Application:
        # Bodies are read (and capped) by `Call.body`; aiohttp's own cap is set a little higher so
        # that ours speaks first.
        app = web.Application(client_max_size=self.max_body_bytes + 1, middlewares=[self._errors])
        for route in ROUTES:
            app.router.add_route(route.method, PREFIX + route.path, self._serve(route))
        if self.ui_dir is not None:
            web_ui.add_routes(app, self.ui_dir)
        return app

    # ------------------------------------------------------------ the door

    def _serve(self, route: Route) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        handler: Callable[[Call], Awaitable[web.Response]] = getattr(self, route.handler)
        requests = metrics.requests.labels(METRICS_SERVICE, route.operation)
        latency = metrics.request_latency.labels(METRICS_SERVICE, route.operation)

        async def serve(request: web.Request) -> web.StreamResponse:
            started = time.perf_counter()
            requests.inc()
            call = Call(request, route, self.max_body_bytes)
            try:
                if route.rpc is None:
                    return await handler(call)
                self.call_limit.admit()
                try:
                    self._authorize(call)
                    return await handler(call)
                finally:
                    self.call_limit.release()
            except ServiceError as e:
                metrics.request_errors.labels(METRICS_SERVICE, route.operation, metrics.error_kind(e)).inc()
                return _service_error_response(e)
            except _TooLarge as e:
                metrics.request_errors.labels(METRICS_SERVICE, route.operation, "InvalidArgument").inc()
                size = f"{e.size} bytes" if e.size is not None else "larger than that"
                return _json_response(error_body(
                    "INVALID_ARGUMENT", f"the body of {call.where} is {size}; the limit is {e.limit} bytes "
                    "(the largest gRPC message: limits.max_payload_bytes and limits.max_history_bytes set it)",
                    "RequestTooLarge", "InvalidArgument"), 413)
            except Exception as e:  # a bug: answered with one line, logged with its traceback
                log.exception("internal error in %s", call.where)
                metrics.request_errors.labels(METRICS_SERVICE, route.operation, "Internal").inc()
                return _json_response(error_body("INTERNAL", f"internal error in {call.where}: {one_line(e)}",
                                                 "Internal", "ServiceError"), 500)
            finally:
                latency.observe(time.perf_counter() - started)

        return serve

    def _authorize(self, call: Call) -> None:
        """The token check of gRPC (`TokenAuth.authorize`) on the rpc this route stands for, with
        its request message holding what the rule reads: the namespace (and workflow) of the path."""
        if self._auth is None:
            return
        assert call.route.rpc is not None
        header = call.request.headers.get("Authorization", "")
        token = header[len(BEARER):].strip() if header.startswith(BEARER) else ""
        if not token:
            got = "an Authorization header that is not 'Bearer <token>'" if header else "no token"
            raise Unauthenticated(f"the {WHAT} requires a token and {call.where} had {got}: send the header "
                                  "'Authorization: Bearer <token>' (`legato token issue` makes one)",
                                  reason="TokenMissing")
        # An rpc without a namespace rule (DescribeCluster) is for all-namespace tokens only.
        message = _rule_message(call) if call.route.rpc in NAMESPACE_RULES else b""
        self._auth.authorize(f"/legato.WorkflowService/{call.route.rpc}", message, token)

    @web.middleware
    async def _errors(self, request: web.Request,
                      handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        """What aiohttp answers itself (no such route, a method the route does not take) as JSON."""
        try:
            return await handler(request)
        except web.HTTPMethodNotAllowed as e:
            allowed = ", ".join(sorted(e.allowed_methods))
            return _json_response(error_body("UNIMPLEMENTED", f"{request.method} is not served on {request.path}; "
                                             f"it takes: {allowed}", "MethodNotAllowed", "InvalidArgument"), 405)
        except web.HTTPNotFound:
            return _json_response(error_body("NOT_FOUND", f"no route {request.method} {request.path}: the routes are "
                                             f"listed in {PREFIX}/openapi.json", "RouteNotFound", "NotFound"), 404)

    # ------------------------------------------------------------ reading workflows

    async def _list(self, call: Call) -> web.Response:
        p = call.params("query", "page_size", "next_page_token")
        resp = await self.service.list_workflows(api.ListWorkflowsRequest(
            namespace=call.namespace, query=p.text("query"), page_size=p.integer("page_size", DEFAULT_LIST_PAGE),
            next_page_token=_decode_token(p.text("next_page_token"), call.where)))
        return _json_response({"executions": plain(resp.executions),
                               "next_page_token": _encode_token(resp.next_page_token)})

    async def _count(self, call: Call) -> web.Response:
        p = call.params("query")
        resp = await self.service.count_workflows(api.CountWorkflowsRequest(call.namespace, p.text("query")))
        return _json_response(plain(resp))

    async def _describe(self, call: Call) -> web.Response:
        p = call.params("run_id")
        resp = await self.service.describe_workflow(call.ref(p.text("run_id")))
        return _json_response(plain(resp))

    async def _history(self, call: Call) -> web.Response:
        p = call.params("run_id", "first_event_id", "page_size", "wait_new_event", "timeout_ms")
        resp = await self.service.get_workflow_history(api.GetHistoryRequest(
            call.ref(p.text("run_id")), first_event_id=p.integer("first_event_id", 1),
            page_size=p.integer("page_size", 1000), wait_new_event=p.boolean("wait_new_event", False),
            timeout_ms=p.integer("timeout_ms", DEFAULT_HISTORY_WAIT_MS)))
        return _json_response({"run_id": resp.run_id, "events": [e.to_dict() for e in resp.events],
                               "next_event_id": resp.next_event_id, "closed": resp.closed})

    async def _result(self, call: Call) -> web.Response:
        p = call.params("run_id", "timeout_ms")
        resp = await self.service.get_workflow_result(api.GetResultRequest(
            call.ref(p.text("run_id")), timeout_ms=p.integer("timeout_ms", 0)))
        return _json_response({"run_id": resp.run_id, "status": resp.status.value, "result": plain(resp.result),
                               "failure": plain(resp.failure)})

    async def _children(self, call: Call) -> web.Response:
        """The children the run started, as its history records them (`legato.lineage`), a page
        at a time; the token pins the run and the position (histories only grow, so it holds)."""
        p = call.params("run_id", "page_size", "next_page_token")
        run_id = p.text("run_id")
        page_size = p.integer("page_size", DEFAULT_LIST_PAGE)
        if not 1 <= page_size <= 1000:
            _bad(f"page_size is {page_size}; it must be between 1 and 1000", "InvalidArgument")
        offset = 0
        token = p.text("next_page_token")
        if token:
            run_id, offset = _children_token(token, run_id, call.where)
        if not run_id:  # pin the run: its children are those of one run
            first = await self.service.get_workflow_history(api.GetHistoryRequest(call.ref(""), page_size=1))
            run_id = first.run_id
        events = await read_history(self.service, call.ref(run_id))
        children = children_of(events, call.namespace)
        page = children[offset:offset + page_size]
        end = offset + len(page)
        next_token = _encode_token(f"{run_id}:{end}".encode()) if end < len(children) else ""
        return _json_response({"run_id": run_id, "children": [_child(c) for c in page],
                               "next_page_token": next_token})

    async def _stack(self, call: Call) -> web.Response:
        """The Lua call stack of a run (`legato.stack`): from a worker (the __stack_trace query), or
        replayed here against `ui.entries` when no worker answered in time."""
        p = call.params("run_id", "timeout_ms")
        try:
            report = await workflow_stack(self.service, call.ref(p.text("run_id")), self.stack_replay,
                                          timeout_ms=p.integer("timeout_ms", 0))
        except StackError as e:
            raise FailedPrecondition(str(e), reason="StackReplayFailed") from None
        return _json_response(report)

    async def _query(self, call: Call) -> web.Response:
        call.params()
        b = await call.body(_QUERY_FIELDS)
        resp = await self.service.query_workflow(api.QueryWorkflowRequest(
            call.ref(b.get("run_id", "")), b.get("query_type", api.STACK_TRACE_QUERY), b.get("args"),
            b.get("timeout_ms", 0)))
        return _json_response({"run_id": resp.run_id, "status": resp.status.value, "result": plain(resp.result),
                               "source": resp.source, "worker": resp.worker, "task_queue": resp.task_queue})

    async def _cluster(self, call: Call) -> web.Response:
        """Members, shard owners and queue backlogs, as this process knows them."""
        call.params()
        if self.cluster is None:
            return _json_response({"mode": "unknown", "members": [], "shards": {}, "num_shards": 0, "queues": [],
                                   "notes": ["this server was not given its cluster's view"]})
        return _json_response(await self.cluster())

    # ------------------------------------------------------------ changing workflows

    async def _start(self, call: Call) -> web.Response:
        b = await call.body(_START_FIELDS, ("workflow_id", "workflow_type", "task_queue"))
        messages = [check_fields(m, _START_MESSAGE_FIELDS, ("topic",), f"the body of {call.where}: start_messages[{i}]")
                    for i, m in enumerate(b.get("start_messages", []))]
        resp = await self.service.start_workflow(api.StartWorkflowRequest(
            workflow_id=b["workflow_id"], workflow_type=b["workflow_type"], task_queue=b["task_queue"],
            input=b.get("input", []), namespace=call.namespace, request_id=b.get("request_id") or new_request_id(),
            identity=b.get("identity", ""), execution_timeout_ms=b.get("execution_timeout_ms", 0),
            run_timeout_ms=b.get("run_timeout_ms", 0), task_timeout_ms=b.get("task_timeout_ms", 0),
            id_reuse_policy=_enum(api.IdReusePolicy, b.get("id_reuse_policy", "allow_duplicate"), "id_reuse_policy"),
            id_conflict_policy=_enum(api.IdConflictPolicy, b.get("id_conflict_policy", "fail"),
                                     "id_conflict_policy"),
            context=b.get("context", {}), memo=b.get("memo", {}), search_attributes=b.get("search_attributes", {}),
            retry_policy=b.get("retry_policy"), cron_schedule=b.get("cron_schedule", ""),
            start_delay_ms=b.get("start_delay_ms", 0),
            execution_error_when_already_started=b.get("execution_error_when_already_started", False),
            wait_for_cancellation=b.get("wait_for_cancellation", False),
            start_messages=[api.StartMessage(m["topic"], m.get("payload")) for m in messages]))
        return _json_response({"run_id": resp.run_id, "started": resp.started, "existing": resp.existing})

    async def _signal(self, call: Call) -> web.Response:
        call.params()
        b = await call.body(_SIGNAL_FIELDS, ("signal_name",))
        await self.service.signal_workflow(api.SignalWorkflowRequest(
            call.ref(b.get("run_id", "")), b["signal_name"], b.get("input"), sender=b.get("sender", ""),
            identity=b.get("identity", ""), request_id=b.get("request_id", "")))
        return _json_response({})

    async def _cancel(self, call: Call) -> web.Response:
        call.params()
        b = await call.body(_CANCEL_FIELDS)
        await self.service.request_cancel_workflow(api.CancelWorkflowRequest(
            call.ref(b.get("run_id", "")), reason=b.get("reason", ""), identity=b.get("identity", ""),
            request_id=b.get("request_id", ""), deadline_ms=b.get("deadline_ms", 0)))
        return _json_response({})

    async def _terminate(self, call: Call) -> web.Response:
        call.params()
        b = await call.body(_TERMINATE_FIELDS)
        await self.service.terminate_workflow(api.TerminateWorkflowRequest(
            call.ref(b.get("run_id", "")), reason=b.get("reason", ""), identity=b.get("identity", ""),
            request_id=b.get("request_id", "")))
        return _json_response({})

    # ------------------------------------------------------------ the document

    async def _openapi_json(self, call: Call) -> web.Response:
        call.params()
        return _json_response(self.openapi)

    async def _openapi_yaml(self, call: Call) -> web.Response:
        call.params()
        return web.Response(text=OPENAPI_FILE.read_text(encoding="utf-8"), content_type="application/yaml")


def _child(node: Any) -> dict[str, Any]:
    return {"workflow_id": node.workflow_id, "run_id": node.run_id, "workflow_type": node.workflow_type,
            "namespace": node.namespace, "status": node.status, "failure": node.failure}


def _children_token(token: str, run_id: str, where: str) -> tuple[str, int]:
    raw = _decode_token(token, where)
    pinned, _, offset = raw.decode(errors="replace").rpartition(":")
    if not pinned or not offset.isdigit():
        _bad(f"{where}: next_page_token is not a token this API gave")
    if run_id and run_id != pinned:
        _bad(f"{where}: next_page_token is of run {pinned}, not of run_id {run_id}")
    return pinned, int(offset)


def _rule_message(call: Call) -> Any:
    """The request message of the route's rpc with the path's namespace (and workflow) in it:
    what the rpc's namespace rule reads. The HTTP routes take no field that acts in another
    namespace (no parent on start), so the rule sees every namespace the call acts in."""
    rpc = call.route.rpc
    assert rpc is not None
    method = pb.DESCRIPTOR.services_by_name["WorkflowService"].methods_by_name[rpc]
    message = getattr(pb, method.input_type.name)()
    if "ref" in message.DESCRIPTOR.fields_by_name:
        message.ref.namespace = call.namespace
        message.ref.workflow_id = call.workflow_id
    else:
        message.namespace = call.namespace
    return message


class HttpServer:
    """Serves `HttpApi` on `address` ("host:port") until `stop`."""

    def __init__(self, http_api: HttpApi, address: str) -> None:
        self.api = http_api
        self.address = address
        self.port = 0  # the port bound (useful with port 0)
        self._runner: web.AppRunner | None = None

    @property
    def scheme(self) -> str:
        return "https" if self.api.config.security.tls else "http"

    async def start(self) -> None:
        ssl_context = server_ssl_context(self.api.config.security)
        # handler_cancellation: a client that goes away cancels the service call (a long poll).
        runner = web.AppRunner(self.api.app(), access_log=None, handler_cancellation=True)
        await runner.setup()
        host, port = split_address(self.address)
        try:
            site = web.TCPSite(runner, host, port, ssl_context=ssl_context)
            await site.start()
        except OSError as e:
            await runner.cleanup()
            why = os.strerror(e.errno).lower() if e.errno else str(e)
            raise OSError(f"cannot serve the HTTP API on {self.address}: {why}") from e
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        addresses = runner.addresses  # what was bound (the port, with port 0)
        self.port = int(addresses[0][1]) if addresses else port
        log.info("HTTP API on %s://%s:%d%s/ (OpenAPI: %s/openapi.json)", self.scheme, host, self.port, PREFIX,
                 PREFIX)

    @property
    def url(self) -> str:
        host = split_address(self.address)[0]
        host = f"[{host}]" if ":" in host else host
        return f"{self.scheme}://{host}:{self.port}"

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()


async def start_http_server(service: api.WorkflowService, config: Config, address: str | None = None,
                            cluster: ClusterInfo | None = None,
                            stack_replay: StackReplay | None = None) -> HttpServer | None:
    """Serve the HTTP API of `service` on `address` (default: `config.ui.address`); None when
    that is empty (off). `stack_replay`: the stack view's replay when no worker answers (the
    code of `config.ui.entries`). OSError naming the address when it cannot be bound;
    ConfigError when a TLS or token secret file is unusable."""
    where = config.ui.address if address is None else address
    if not where:
        return None
    server = HttpServer(HttpApi(service, config, cluster=cluster, stack_replay=stack_replay), where)
    await server.start()
    return server


async def stop_http_server(server: HttpServer | None) -> None:
    if server is not None:
        await server.stop()


__all__ = ["HTTP_STATUS", "PREFIX", "ROUTES", "HttpApi", "HttpServer", "start_http_server", "stop_http_server"]
