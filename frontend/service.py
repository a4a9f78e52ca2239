"""The frontend: the public `WorkflowService`. It validates every request, then routes it:
workflow calls and task responses to history, polls to matching, listing to visibility.

Validation is the API's promise that nothing malformed reaches history: every bad field raises
`InvalidArgument` with a message naming the field and saying what is wrong with it.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, NoReturn

from frontend.queries import run_query
from legato import api, codec
from legato import query as visibility_query
from legato.commands import Command, CommandType
from legato.config import Config
from legato.cron import check_cron
from legato.durations import check_duration_ms
from legato.errors import Failure, InvalidArgument, NotFound
from legato.ids import MAX_ID_LENGTH, check_id
from legato.retry import MAX_ATTEMPTS
from legato.tokens import TaskToken

# Bounds of the request fields that have no configuration of their own.
MAX_WAIT_MS = 10 * 60 * 1000  # long polls, history waits and result waits
MAX_HISTORY_PAGE_SIZE = 10_000
MAX_LIST_PAGE_SIZE = 1_000
MAX_QUERY_LENGTH = 10_000
MAX_PAGE_TOKEN_BYTES = 64 * 1024
MAX_TASK_TOKEN_BYTES = 16 * 1024
MAX_EVENT_ID = 2**63 - 1  # what the stores' 64-bit integers carry
# A command of workflow code may wrap a payload in this many levels beyond limits.max_payload_depth
# (StartChildWorkflowExecution: options, start_messages, a message, then the payload).
COMMAND_ENVELOPE_DEPTH = 4
MAX_FAILURE_DEPTH = 32
MAX_MAILBOX_BATCH = 10_000  # messages one mailbox poll may ask for

WORKFLOW_TASK_FAILED_CAUSES = frozenset(
    {"WORKFLOW_ERROR", "NON_DETERMINISTIC", "FORBIDDEN_CALL", "LIMIT_EXCEEDED", "BAD_COMMAND"})


def _bad(message: str, reason: str = "InvalidArgument") -> NoReturn:
    raise InvalidArgument(message, reason=reason)


class _Validator:
    """Field checks; each raises InvalidArgument naming the field."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.payload_limit = config.limits.max_payload_bytes
        self.depth_limit = config.limits.max_payload_depth

    def ident(self, value: object, field: str) -> str:
        if not isinstance(value, str):
            _bad(f"{field} must be a string, got {type(value).__name__}")
        problem = check_id(value, field)
        if problem:
            _bad(problem)
        return value

    def optional_ident(self, value: object, field: str) -> None:
        if value != "":
            self.ident(value, field)

    def text(self, value: object, field: str, max_chars: int = MAX_ID_LENGTH) -> str:
        if not isinstance(value, str):
            _bad(f"{field} must be a string, got {type(value).__name__}")
        if len(value) > max_chars:
            _bad(f"{field} is {len(value)} characters long; the limit is {max_chars}")
        return value

    def integer(self, value: object, field: str, lo: int, hi: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            _bad(f"{field} must be an integer, got {type(value).__name__}")
        if value < lo or value > hi:
            _bad(f"{field} is {value}; it must be between {lo} and {hi}")
        return value

    def boolean(self, value: object, field: str) -> None:
        if not isinstance(value, bool):
            _bad(f"{field} must be true or false, got {type(value).__name__}")

    def enum(self, cls: type[StrEnum], value: object, field: str) -> None:
        try:
            cls(value)  # type: ignore[arg-type]
        except ValueError:
            known = ", ".join(m.value for m in cls)
            _bad(f"{field} has unknown value {value!r}; expected one of: {known}")

    def duration(self, value: object, field: str, minimum: int = 0) -> int:
        """Milliseconds, at most 100 years (`legato.durations.MAX_DURATION_MS`)."""
        try:
            return check_duration_ms(value, field, minimum)
        except ValueError as e:
            _bad(str(e))

    def payload(self, value: Any, field: str, extra_depth: int = 0) -> None:
        # Raises InvalidArgument naming the field (reason PayloadTooLarge when it is too large,
        # PayloadTooDeep when it nests more than limits.max_payload_depth (+ extra_depth) levels).
        codec.check_payload(value, self.payload_limit, field, self.depth_limit + extra_depth)

    def mapping(self, value: object, field: str) -> None:
        if not isinstance(value, dict):
            _bad(f"{field} must be a mapping, got {type(value).__name__}")
        for k in value:
            if not isinstance(k, str):
                _bad(f"{field} has a key that is not a string: {k!r}")
        self.payload(value, field)

    def sequence(self, value: object, field: str) -> None:
        if not isinstance(value, list):
            _bad(f"{field} must be a list, got {type(value).__name__}")
        self.payload(value, field)

    def search_attributes(self, value: object, field: str = "search_attributes") -> None:
        problem = visibility_query.check_search_attributes(value, field)
        if problem:
            _bad(problem)

    def query(self, value: object, field: str = "query") -> visibility_query.Query:
        """A visibility query: parsed here, so that a bad one is refused before it reaches a store
        (InvalidArgument, reason InvalidQuery, naming the position and what was expected)."""
        text = self.text(value, field, MAX_QUERY_LENGTH)
        return visibility_query.parse(text)

    def namespace(self, value: object, field: str = "namespace") -> None:
        self.ident(value, field)

    def ref(self, ref: object, field: str = "ref") -> api.ExecutionRef:
        if not isinstance(ref, api.ExecutionRef):
            _bad(f"{field} is required (an execution: namespace, workflow_id and optionally run_id)")
        self.namespace(ref.namespace, f"{field}.namespace")
        self.ident(ref.workflow_id, f"{field}.workflow_id")
        self.optional_ident(ref.run_id, f"{field}.run_id")
        return ref

    def workflow_id(self, value: object, field: str = "workflow_id") -> str:
        wid = self.ident(value, field)
        if wid.startswith(api.CALLER_PID_PREFIX):
            _bad(f"{field} {wid!r} starts with {api.CALLER_PID_PREFIX!r}: that prefix is reserved for the pids "
                 "of non-durable callers")
        return wid

    def caller_pid(self, value: object, field: str = "pid") -> str:
        pid = self.text(value, field)
        if not pid.startswith(api.CALLER_PID_PREFIX) or len(pid) < 2:
            _bad(f"{field} must be a caller pid (starting with {api.CALLER_PID_PREFIX!r}), got {pid!r}")
        return pid

    def pid(self, value: object, field: str) -> str:
        """A workflow id or a caller pid."""
        if isinstance(value, str) and value.startswith(api.CALLER_PID_PREFIX):
            return self.caller_pid(value, field)
        return self.ident(value, field)

    def retry_policy(self, value: object, field: str = "retry_policy") -> None:
        if value is None:
            return
        if not isinstance(value, dict):
            _bad(f"{field} must be a mapping (initial_interval_ms, backoff_coefficient, maximum_interval_ms, "
                 f"maximum_attempts, non_retryable_error_types), got {type(value).__name__}")
        known = {"initial_interval_ms", "backoff_coefficient", "maximum_interval_ms", "maximum_attempts",
                 "non_retryable_error_types"}
        for key in value:
            if key not in known:
                _bad(f"{field} has unknown key {key!r}; known: {', '.join(sorted(known))}")
        for key in ("initial_interval_ms", "maximum_interval_ms"):
            if key in value:
                self.duration(value[key], f"{field}.{key}")
        if "maximum_attempts" in value:
            self.integer(value["maximum_attempts"], f"{field}.maximum_attempts", 0, MAX_ATTEMPTS)
        if "initial_interval_ms" in value and value["initial_interval_ms"] < 1:
            _bad(f"{field}.initial_interval_ms is {value['initial_interval_ms']}; it must be at least 1")
        coef = value.get("backoff_coefficient", 2.0)
        if isinstance(coef, bool) or not isinstance(coef, int | float) or not 1 <= coef <= 1000:
            _bad(f"{field}.backoff_coefficient must be a number between 1 and 1000, got {coef!r}")
        types = value.get("non_retryable_error_types", [])
        if not isinstance(types, list) or not all(isinstance(t, str) and t for t in types):
            _bad(f"{field}.non_retryable_error_types must be a list of error kinds (strings)")

    def cron(self, value: object, field: str = "cron_schedule") -> None:
        text = self.text(value, field, 1000)
        if not text:
            return
        problem = check_cron(text)  # not 5 valid fields, or never fires ("0 0 30 2 *")
        if problem:
            _bad(f"{field} {problem}", "InvalidCronSchedule")

    def start_messages(self, value: object, field: str = "start_messages") -> None:
        if not isinstance(value, list):
            _bad(f"{field} must be a list, got {type(value).__name__}")
        limit = self.config.limits.max_buffered_signals
        if len(value) > limit:
            _bad(f"{field} has {len(value)} messages; the limit (limits.max_buffered_signals) is {limit}")
        for i, m in enumerate(value):
            if not isinstance(m, api.StartMessage):
                _bad(f"{field}[{i}] must be a start message (topic, payload), got {type(m).__name__}")
            self.ident(m.topic, f"{field}[{i}].topic")
        self.payload([m.payload for m in value], field)

    def parent(self, value: object, field: str = "parent") -> None:
        if value is None:
            return
        if not isinstance(value, api.ParentInfo):
            _bad(f"{field} must be a parent (namespace, workflow_id, run_id, initiated_event_id)")
        self.namespace(value.namespace, f"{field}.namespace")
        self.ident(value.workflow_id, f"{field}.workflow_id")
        self.ident(value.run_id, f"{field}.run_id")
        self.integer(value.initiated_event_id, f"{field}.initiated_event_id", 1, MAX_EVENT_ID)

    def monitors(self, value: object, field: str = "monitors") -> None:
        if not isinstance(value, list):
            _bad(f"{field} must be a list of caller pids, got {type(value).__name__}")
        limit = self.config.limits.max_monitors
        if len(value) > limit:
            _bad(f"{field} has {len(value)} pids; the limit (limits.max_monitors) is {limit}")
        for i, pid in enumerate(value):
            self.caller_pid(pid, f"{field}[{i}]")

    def wait_ms(self, value: object, field: str) -> None:
        self.integer(value, field, 0, MAX_WAIT_MS)

    def identity(self, value: object) -> None:
        self.text(value, "identity")

    def request_id(self, value: object) -> None:
        self.text(value, "request_id")

    def failure(self, value: object, field: str = "failure") -> None:
        if not isinstance(value, Failure):
            _bad(f"{field} is required (a failure with message, kind and retryable)")
        f: Failure | None = value
        depth = 0
        where = field
        while f is not None:
            depth += 1
            if depth > MAX_FAILURE_DEPTH:
                _bad(f"{field} has more than {MAX_FAILURE_DEPTH} nested causes")
            if not isinstance(f, Failure):
                _bad(f"{where} must be a failure, got {type(f).__name__}")
            if not isinstance(f.message, str):
                _bad(f"{where}.message must be a string, got {type(f.message).__name__}")
            if not isinstance(f.kind, str):  # "" is Wippy's UNKNOWN
                _bad(f"{where}.kind must be a string (an error kind such as \"Internal\")")
            self.text(f.kind, f"{where}.kind")
            self.boolean(f.retryable, f"{where}.retryable")
            if f.source is not None:
                self.text(f.source, f"{where}.source")
            f = f.cause
            where += ".cause"
        assert isinstance(value, Failure)
        self.payload(value.to_dict(), field)

    def token(self, raw: object, kind: api.TaskKind, field: str = "task_token") -> TaskToken:
        if not isinstance(raw, bytes) or not raw:
            _bad(f"{field} is required (the token of the task being answered)")
        if len(raw) > MAX_TASK_TOKEN_BYTES:
            _bad(f"{field} is {len(raw)} bytes; the limit is {MAX_TASK_TOKEN_BYTES}")
        try:
            token = TaskToken.decode(raw)
        except InvalidArgument as e:
            _bad(f"{field}: {e.message}")
        if token.kind != kind.value:
            _bad(f"{field} is the token of a task of kind {token.kind!r}; this call answers {kind.value!r} tasks")
        for name in ("namespace", "workflow_id", "run_id"):
            v = getattr(token, name)
            if not isinstance(v, str) or check_id(v, name):
                _bad(f"{field}: malformed task token: bad {name}")
        for name in ("scheduled_event_id", "started_event_id", "attempt"):
            v = getattr(token, name)
            if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= MAX_EVENT_ID:
                _bad(f"{field}: malformed task token: bad {name}")
        return token

    def commands(self, value: object) -> None:
        if not isinstance(value, list):
            _bad(f"commands must be a list, got {type(value).__name__}")
        for i, c in enumerate(value):
            where = f"commands[{i}]"
            if not isinstance(c, Command):
                _bad(f"{where} must be a command, got {type(c).__name__}")
            self.enum(CommandType, c.command_type, f"{where}.command_type")
            if not isinstance(c.attrs, dict):
                _bad(f"{where}.attrs must be a mapping, got {type(c.attrs).__name__}")
            for key, attr in c.attrs.items():
                if not isinstance(key, str):
                    _bad(f"{where}.attrs has a key that is not a string: {key!r}")
                self.payload(attr, f"{where} ({c.command_type}) attribute {key}", COMMAND_ENVELOPE_DEPTH)

    def poll(self, req: object, what: str) -> api.PollRequest:
        if not isinstance(req, api.PollRequest):
            _bad(f"{what} request is required")
        self.namespace(req.namespace)
        self.ident(req.task_queue, "task_queue")
        self.identity(req.identity)
        self.wait_ms(req.timeout_ms, "timeout_ms")
        return req


class Frontend:
    """`legato.api.WorkflowService`: validation, then routing to history, matching and visibility."""

    def __init__(self, history: api.HistoryService, matching: api.MatchingService,
                 visibility: api.VisibilityStore, config: Config) -> None:
        self._history = history
        self._matching = matching
        self._visibility = visibility
        self._config = config
        self._v = _Validator(config)

    # ------------------------------------------------------------ workflow lifecycle

    async def start_workflow(self, req: api.StartWorkflowRequest) -> api.StartWorkflowResponse:
        v = self._v
        if not isinstance(req, api.StartWorkflowRequest):
            _bad("start request is required")
        v.namespace(req.namespace)
        v.workflow_id(req.workflow_id)
        v.ident(req.workflow_type, "workflow_type")
        v.ident(req.task_queue, "task_queue")
        v.sequence(req.input, "input")
        v.request_id(req.request_id)
        v.identity(req.identity)
        v.duration(req.execution_timeout_ms, "execution_timeout_ms")
        v.duration(req.run_timeout_ms, "run_timeout_ms")
        v.integer(req.task_timeout_ms, "task_timeout_ms", 0, self._config.history.max_workflow_task_timeout_ms)
        v.enum(api.IdReusePolicy, req.id_reuse_policy, "id_reuse_policy")
        v.enum(api.IdConflictPolicy, req.id_conflict_policy, "id_conflict_policy")
        v.mapping(req.context, "context")
        v.mapping(req.memo, "memo")
        v.mapping(req.search_attributes, "search_attributes")
        v.search_attributes(req.search_attributes)
        # issue 3: the rest of seed 002's start options
        v.retry_policy(req.retry_policy)
        v.cron(req.cron_schedule)
        v.duration(req.start_delay_ms, "start_delay_ms")
        v.boolean(req.execution_error_when_already_started, "execution_error_when_already_started")
        v.boolean(req.enable_eager_start, "enable_eager_start")
        v.boolean(req.wait_for_cancellation, "wait_for_cancellation")
        v.start_messages(req.start_messages)
        v.parent(req.parent)
        v.enum(api.ParentClosePolicy, req.parent_close_policy, "parent_close_policy")
        v.monitors(req.monitors)
        if req.cron_schedule and req.start_delay_ms:
            _bad("start_delay_ms cannot be combined with cron_schedule (a cron workflow starts at its fire times)")
        return await self._history.start_workflow(req)

    async def signal_workflow(self, req: api.SignalWorkflowRequest) -> None:
        v = self._v
        if not isinstance(req, api.SignalWorkflowRequest):
            _bad("signal request is required")
        v.ref(req.ref)
        v.ident(req.signal_name, "signal_name")
        v.payload(req.input, "input")
        v.text(req.sender, "sender")
        v.identity(req.identity)
        v.request_id(req.request_id)
        await self._history.signal_workflow(req)

    async def terminate_workflow(self, req: api.TerminateWorkflowRequest) -> None:
        v = self._v
        if not isinstance(req, api.TerminateWorkflowRequest):
            _bad("terminate request is required")
        v.ref(req.ref)
        v.text(req.reason, "reason", v.payload_limit)
        v.identity(req.identity)
        await self._history.terminate_workflow(req)

    async def request_cancel_workflow(self, req: api.CancelWorkflowRequest) -> None:
        v = self._v
        if not isinstance(req, api.CancelWorkflowRequest):
            _bad("cancel request is required")
        v.ref(req.ref)
        v.text(req.reason, "reason", v.payload_limit)
        v.identity(req.identity)
        v.request_id(req.request_id)
        v.duration(req.deadline_ms, "deadline_ms")
        await self._history.request_cancel_workflow(req)

    # ------------------------------------------------------------ reading workflows

    async def describe_workflow(self, ref: api.ExecutionRef) -> api.DescribeWorkflowResponse:
        self._v.ref(ref)
        return await self._history.describe_workflow(ref)

    async def get_workflow_history(self, req: api.GetHistoryRequest) -> api.GetHistoryResponse:
        v = self._v
        if not isinstance(req, api.GetHistoryRequest):
            _bad("history request is required")
        v.ref(req.ref)
        v.integer(req.first_event_id, "first_event_id", 1, MAX_EVENT_ID)
        v.integer(req.page_size, "page_size", 1, MAX_HISTORY_PAGE_SIZE)
        v.boolean(req.wait_new_event, "wait_new_event")
        v.wait_ms(req.timeout_ms, "timeout_ms")
        return await self._history.get_workflow_history(req)

    async def get_workflow_result(self, req: api.GetResultRequest) -> api.GetResultResponse:
        v = self._v
        if not isinstance(req, api.GetResultRequest):
            _bad("result request is required")
        v.ref(req.ref)
        v.wait_ms(req.timeout_ms, "timeout_ms")
        v.boolean(req.return_on_task_failure, "return_on_task_failure")
        return await self._history.get_workflow_result(req)

    async def list_workflows(self, req: api.ListWorkflowsRequest) -> api.ListWorkflowsResponse:
        v = self._v
        if not isinstance(req, api.ListWorkflowsRequest):
            _bad("list request is required")
        v.namespace(req.namespace)
        q = v.query(req.query)
        if q.group_by is not None:
            _bad("query: GROUP BY is only for counting (CountWorkflows, legato workflow count)", "InvalidQuery")
        v.integer(req.page_size, "page_size", 1, MAX_LIST_PAGE_SIZE)
        if not isinstance(req.next_page_token, bytes):
            _bad(f"next_page_token must be bytes, got {type(req.next_page_token).__name__}")
        if len(req.next_page_token) > MAX_PAGE_TOKEN_BYTES:
            _bad(f"next_page_token is {len(req.next_page_token)} bytes; the limit is {MAX_PAGE_TOKEN_BYTES}")
        return await self._visibility.list(req)

    async def count_workflows(self, req: api.CountWorkflowsRequest) -> api.CountWorkflowsResponse:
        v = self._v
        if not isinstance(req, api.CountWorkflowsRequest):
            _bad("count request is required")
        v.namespace(req.namespace)
        q = v.query(req.query)
        if q.group_by is None:
            return api.CountWorkflowsResponse(await self._visibility.count(req.namespace, req.query))
        groups = await self._visibility.count_by_status(req.namespace, req.query)
        return api.CountWorkflowsResponse(sum(groups.values()),
                                          [api.CountGroup(s.value, n) for s, n in groups.items() if n])

    # ------------------------------------------------------------ worker calls

    async def poll_workflow_task(self, req: api.PollRequest) -> api.WorkflowTask | None:
        self._v.poll(req, "poll")
        return await self._matching.poll_workflow_task(req)

    async def respond_workflow_task_completed(
            self, req: api.RespondWorkflowTaskCompletedRequest) -> api.RespondWorkflowTaskCompletedResponse:
        v = self._v
        if not isinstance(req, api.RespondWorkflowTaskCompletedRequest):
            _bad("respond request is required")
        v.token(req.task_token, api.TaskKind.WORKFLOW)
        v.commands(req.commands)
        v.identity(req.identity)
        return await self._history.respond_workflow_task_completed(req)

    async def respond_workflow_task_failed(self, req: api.RespondWorkflowTaskFailedRequest) -> None:
        v = self._v
        if not isinstance(req, api.RespondWorkflowTaskFailedRequest):
            _bad("respond request is required")
        v.token(req.task_token, api.TaskKind.WORKFLOW)
        if req.cause not in WORKFLOW_TASK_FAILED_CAUSES:
            _bad(f"cause has unknown value {req.cause!r}; expected one of: "
                 + ", ".join(sorted(WORKFLOW_TASK_FAILED_CAUSES)))
        v.failure(req.failure)
        v.identity(req.identity)
        await self._history.respond_workflow_task_failed(req)

    async def poll_activity_task(self, req: api.PollRequest) -> api.ActivityTask | None:
        self._v.poll(req, "poll")
        return await self._matching.poll_activity_task(req)

    async def respond_activity_task_completed(
            self, req: api.RespondActivityTaskCompletedRequest) -> api.RespondActivityTaskCompletedResponse:
        v = self._v
        if not isinstance(req, api.RespondActivityTaskCompletedRequest):
            _bad("respond request is required")
        v.token(req.task_token, api.TaskKind.ACTIVITY)
        v.payload(req.result, "result")
        v.identity(req.identity)
        v.boolean(req.return_workflow_task, "return_workflow_task")
        return await self._history.respond_activity_task_completed(req)

    async def respond_activity_task_failed(self, req: api.RespondActivityTaskFailedRequest) -> None:
        v = self._v
        if not isinstance(req, api.RespondActivityTaskFailedRequest):
            _bad("respond request is required")
        v.token(req.task_token, api.TaskKind.ACTIVITY)
        v.failure(req.failure)
        v.identity(req.identity)
        await self._history.respond_activity_task_failed(req)

    async def record_activity_heartbeat(
            self, req: api.RecordActivityHeartbeatRequest) -> api.RecordActivityHeartbeatResponse:
        v = self._v
        if not isinstance(req, api.RecordActivityHeartbeatRequest):
            _bad("heartbeat request is required")
        v.token(req.task_token, api.TaskKind.ACTIVITY)
        v.payload(req.details, "details")
        v.identity(req.identity)
        return await self._history.record_activity_heartbeat(req)

    async def respond_activity_task_canceled(self, req: api.RespondActivityTaskCanceledRequest) -> None:
        v = self._v
        if not isinstance(req, api.RespondActivityTaskCanceledRequest):
            _bad("respond request is required")
        v.token(req.task_token, api.TaskKind.ACTIVITY)
        v.payload(req.details, "details")
        v.identity(req.identity)
        await self._history.respond_activity_task_canceled(req)

    # ------------------------------------------------------------ queries (issue 14)

    async def query_workflow(self, req: api.QueryWorkflowRequest) -> api.QueryWorkflowResponse:
        """Ask a worker about a run (Temporal's QueryWorkflow): first the worker that has it cached
        (for frontend.query_sticky_timeout_ms), then any worker polling its task queue, which
        replays the history. A closed run is answered by replay too."""
        v = self._v
        if not isinstance(req, api.QueryWorkflowRequest):
            _bad("query request is required")
        v.ref(req.ref)
        if req.query_type not in api.BUILTIN_QUERIES:
            _bad(f"query_type {req.query_type!r} is not a query Legato answers; known: "
                 + ", ".join(sorted(api.BUILTIN_QUERIES)), "UnknownQueryType")
        v.payload(req.args, "args")
        v.wait_ms(req.timeout_ms, "timeout_ms")
        return await run_query(self._history, self._matching, self._config.frontend, req)

    async def respond_query_task_completed(self, req: api.RespondQueryTaskCompletedRequest) -> None:
        v = self._v
        if not isinstance(req, api.RespondQueryTaskCompletedRequest):
            _bad("respond request is required")
        if not isinstance(req.task_token, bytes) or not req.task_token:
            _bad("task_token is required (the query_id of the query being answered)")
        if len(req.task_token) > MAX_TASK_TOKEN_BYTES:
            _bad(f"task_token is {len(req.task_token)} bytes; the limit is {MAX_TASK_TOKEN_BYTES}")
        v.payload(req.result, "result")
        if req.failure is not None:
            v.failure(req.failure)
        v.enum(api.QuerySource, req.source or api.QuerySource.WORKER_REPLAY, "source")
        v.boolean(req.not_cached, "not_cached")
        v.identity(req.identity)
        await self._matching.respond_query_task_completed(req)

    # ------------------------------------------------------------ processes (issue 3)

    async def send_message(self, req: api.SendMessageRequest) -> None:
        """A workflow pid gets a signal with the sender; a caller pid a mailbox message."""
        v = self._v
        if not isinstance(req, api.SendMessageRequest):
            _bad("send request is required")
        v.pid(req.target, "target")
        v.ident(req.topic, "topic")
        v.payload(req.payload, "payload")
        v.text(req.sender, "sender")
        v.namespace(req.namespace)
        v.request_id(req.request_id)
        if req.target.startswith(api.CALLER_PID_PREFIX):
            msg = api.ProcessMessage("message", topic=req.topic, payload=req.payload, sender=req.sender)
            if not await self._matching.deliver_message(req.target, msg):
                raise NotFound(f"no caller {req.target}: it has no mailbox (it ended, or never ran)",
                               reason="CallerNotFound")
            return
        await self._history.signal_workflow(api.SignalWorkflowRequest(
            api.ExecutionRef(req.target, "", req.namespace), req.topic, req.payload, sender=req.sender,
            identity=req.sender, request_id=req.request_id))

    async def open_mailbox(self, pid: str) -> None:
        self._v.caller_pid(pid)
        await self._matching.open_mailbox(pid)

    async def close_mailbox(self, pid: str) -> None:
        self._v.caller_pid(pid)
        await self._matching.close_mailbox(pid)

    async def poll_mailbox(self, req: api.PollMailboxRequest) -> list[api.ProcessMessage]:
        v = self._v
        if not isinstance(req, api.PollMailboxRequest):
            _bad("poll mailbox request is required")
        v.caller_pid(req.pid)
        v.wait_ms(req.timeout_ms, "timeout_ms")
        v.integer(req.max_messages, "max_messages", 1, MAX_MAILBOX_BATCH)
        return await self._matching.poll_mailbox(req)

    async def monitor_workflow(self, req: api.MonitorWorkflowRequest) -> None:
        v = self._v
        if not isinstance(req, api.MonitorWorkflowRequest):
            _bad("monitor request is required")
        v.ref(req.ref)
        v.caller_pid(req.monitor_pid, "monitor_pid")
        v.boolean(req.link, "link")
        v.boolean(req.remove, "remove")
        await self._history.monitor_workflow(req)


__all__ = ["MAX_WAIT_MS", "WORKFLOW_TASK_FAILED_CAUSES", "Frontend"]
