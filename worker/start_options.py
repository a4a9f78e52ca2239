"""Spawner options: seed 002's `process.with_options{...}` table (and `with_context`, `with_name`,
`with_message`) turned into the fields of a `StartWorkflowRequest`.

Pure Python, no Lua: the workflow runtime uses it for child workflows (`StartChildWorkflowExecution`)
and the non-durable caller runtime for `WorkflowService.start_workflow`. Every problem raises
`StartOptionError` (a ValueError) whose message names the option key and what is wrong; Lua code
sees it as an error of kind INVALID.

A spec is immutable: `with_*` return a new one, so a base spawner can be reused:

    spec = SpawnSpec().with_options({"temporal.workflow.id": "order-1"}).with_message("go", {"n": 1})
    req = start_request(spec, "app:order", "orders", [order], namespace="default",
                        default_workflow_id="generated-id")
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from legato import DEFAULT_NAMESPACE
from legato.api import (
    CALLER_PID_PREFIX,
    IdConflictPolicy,
    IdReusePolicy,
    ParentClosePolicy,
    StartMessage,
    StartWorkflowRequest,
)
from legato.durations import lua_duration_ms
from legato.query import check_search_attributes
from legato.retry import RetryPolicy
from worker.convert import map_or_value

try:  # validated again (authoritatively) by the frontend / history
    from croniter import croniter as _croniter
except ImportError:  # pragma: no cover - croniter is a dependency
    _croniter = None

PREFIX = "temporal.workflow."

# short name -> what the value is (for messages)
OPTIONS: dict[str, str] = {
    "id": "string",
    "task_queue": "string",
    "execution_timeout": "duration",
    "run_timeout": "duration",
    "task_timeout": "duration",
    "id_conflict_policy": "string",
    "id_reuse_policy": "string",
    "execution_error_when_already_started": "boolean",
    "retry_policy": "table",
    "cron_schedule": "string",
    "memo": "table",
    "search_attributes": "table",
    "enable_eager_start": "boolean",
    "start_delay": "duration",
    "parent_close_policy": "string",
    "wait_for_cancellation": "boolean",
    "namespace": "string",
}
OPTION_KEYS = tuple(PREFIX + k for k in OPTIONS)

MAX_NAME_LENGTH = 1000


class StartOptionError(ValueError):
    """A spawner option is unknown or has a bad value; the message names it."""


@dataclass(slots=True, frozen=True)
class StartOptions:
    """The options set so far (None: not set, the default applies)."""

    workflow_id: str | None = None
    task_queue: str | None = None
    namespace: str | None = None
    execution_timeout_ms: int | None = None
    run_timeout_ms: int | None = None
    task_timeout_ms: int | None = None
    id_conflict_policy: IdConflictPolicy | None = None
    id_reuse_policy: IdReusePolicy | None = None
    execution_error_when_already_started: bool | None = None
    retry_policy: dict[str, Any] | None = None
    cron_schedule: str | None = None
    memo: dict[str, Any] | None = None
    search_attributes: dict[str, Any] | None = None
    enable_eager_start: bool | None = None
    start_delay_ms: int | None = None
    parent_close_policy: ParentClosePolicy | None = None
    wait_for_cancellation: bool | None = None


def _text(key: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise StartOptionError(f"{key}: expected a non-empty string, got {_show(value)}")
    if len(value) > MAX_NAME_LENGTH:
        raise StartOptionError(f"{key}: longer than {MAX_NAME_LENGTH} characters")
    return value


def _bool(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise StartOptionError(f"{key}: expected true or false, got {_show(value)}")
    return value


def _duration(key: str, value: Any) -> int:
    try:
        return lua_duration_ms(value, key)
    except ValueError as err:
        raise StartOptionError(str(err)) from None


def _enum(key: str, value: Any, enum: Any) -> Any:
    allowed = [e.value for e in enum]
    if not isinstance(value, str) or value not in allowed:
        raise StartOptionError(f"{key}: expected one of {', '.join(repr(a) for a in allowed)}, got {_show(value)}")
    return enum(value)


def _mapping(key: str, value: Any) -> dict[str, Any]:
    value = map_or_value(value)
    if not isinstance(value, dict):
        raise StartOptionError(f"{key}: expected a table of name = value, got {_show(value)}")
    return dict(value)


def _show(value: Any) -> str:
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a table"
    if value is None:
        return "nil"
    return repr(value)


def _workflow_id(key: str, value: Any) -> str:
    wid = _text(key, value)
    if wid.startswith(CALLER_PID_PREFIX):
        raise StartOptionError(f"{key}: a workflow id cannot start with {CALLER_PID_PREFIX!r} "
                               f"(that is the prefix of caller pids), got {wid!r}")
    return wid


def _cron(key: str, value: Any) -> str:
    text = _text(key, value).strip()
    if _croniter is not None:
        if not _croniter.is_valid(text):
            raise StartOptionError(f"{key}: {text!r} is not a cron schedule (5 fields: minute hour day-of-month "
                                   "month day-of-week, e.g. \"0 */6 * * *\")")
    elif len(text.split()) != 5:  # pragma: no cover
        raise StartOptionError(f"{key}: {text!r} is not a 5-field cron schedule")
    return text


def parse_option(key: str, value: Any) -> dict[str, Any]:
    """One `with_options` key and value -> the StartOptions fields it sets."""
    if not isinstance(key, str) or not key.startswith(PREFIX) or key[len(PREFIX):] not in OPTIONS:
        raise StartOptionError(f"unknown start option {key!r} (known: {', '.join(OPTION_KEYS)})")
    short = key[len(PREFIX):]
    if short == "id":
        return {"workflow_id": _workflow_id(key, value)}
    if short in ("task_queue", "namespace"):
        return {short: _text(key, value)}
    if short in ("execution_timeout", "run_timeout", "task_timeout", "start_delay"):
        return {f"{short}_ms": _duration(key, value)}
    if short == "id_conflict_policy":
        return {short: _enum(key, value, IdConflictPolicy)}
    if short == "id_reuse_policy":
        return {short: _enum(key, value, IdReusePolicy)}
    if short == "parent_close_policy":
        return {short: _enum(key, value, ParentClosePolicy)}
    if short in ("execution_error_when_already_started", "enable_eager_start", "wait_for_cancellation"):
        return {short: _bool(key, value)}
    if short == "retry_policy":
        table = _mapping(key, value)
        try:
            return {short: RetryPolicy.from_user(table, key, lua_duration_ms).to_dict()}
        except ValueError as err:
            raise StartOptionError(str(err)) from None
    if short == "cron_schedule":
        return {short: _cron(key, value)}
    if short == "memo":
        return {short: _mapping(key, value)}
    # search_attributes
    attrs = _mapping(key, value)
    problem = check_search_attributes(attrs, key)
    if problem:
        raise StartOptionError(problem)
    return {short: attrs}


def parse_start_options(table: Any, base: StartOptions | None = None) -> StartOptions:
    """A `with_options{...}` table (as a Python dict) merged over `base`: later keys win."""
    if table is None or table == []:
        table = {}
    if not isinstance(table, dict):
        raise StartOptionError("with_options: expected a table of options such as "
                               "{[\"temporal.workflow.id\"] = \"order-1\"}, got " + _show(table))
    changes: dict[str, Any] = {}
    for key in sorted(table, key=str):  # sorted: the first bad key reported is always the same
        changes.update(parse_option(key, table[key]))
    return dataclasses.replace(base or StartOptions(), **changes)


@dataclass(slots=True, frozen=True)
class SpawnSpec:
    """What a spawner chain has collected: options, context, name and start messages."""

    options: StartOptions = field(default_factory=StartOptions)
    context: dict[str, Any] = field(default_factory=dict)
    name: str | None = None
    messages: tuple[StartMessage, ...] = ()

    def with_options(self, table: Any) -> SpawnSpec:
        return dataclasses.replace(self, options=parse_start_options(table, self.options))

    def with_context(self, table: Any) -> SpawnSpec:
        if table is None or table == []:
            table = {}
        if not isinstance(table, dict):
            raise StartOptionError(f"with_context: expected a table of name = value, got {_show(table)}")
        return dataclasses.replace(self, context={**self.context, **table})

    def with_name(self, name: Any) -> SpawnSpec:
        return dataclasses.replace(self, name=_workflow_id("with_name", name))

    def with_message(self, topic: Any, payload: Any = None) -> SpawnSpec:
        t = _text("with_message: the topic", topic)
        return dataclasses.replace(self, messages=(*self.messages, StartMessage(t, payload)))


def start_request(spec: SpawnSpec, workflow_type: str, task_queue: str, args: list[Any], *,
                  namespace: str = DEFAULT_NAMESPACE, default_workflow_id: str,
                  base_context: dict[str, Any] | None = None, request_id: str = "",
                  identity: str = "") -> StartWorkflowRequest:
    """The start request for `workflow_type` with the spec's options.

    The workflow id is `temporal.workflow.id`, else the name (`with_name`), else
    `default_workflow_id`. `id_conflict_policy` defaults to `use_existing` when the id is explicit
    or named, else `fail` (also the default when `execution_error_when_already_started` is set).
    The task queue is `temporal.workflow.task_queue`, else `task_queue` (the host's); the
    namespace `temporal.workflow.namespace`, else `namespace`; the context is `base_context`
    (the starter's own) overlaid with `with_context`.
    """
    o = spec.options
    explicit = o.workflow_id or spec.name
    policy = o.id_conflict_policy
    if policy is None:
        policy = (IdConflictPolicy.USE_EXISTING if explicit and not o.execution_error_when_already_started
                  else IdConflictPolicy.FAIL)
    context = {**(base_context or {}), **spec.context}
    return StartWorkflowRequest(
        workflow_id=explicit or default_workflow_id,
        workflow_type=workflow_type,
        task_queue=o.task_queue or task_queue,
        input=list(args),
        namespace=o.namespace or namespace,
        request_id=request_id,
        identity=identity,
        execution_timeout_ms=o.execution_timeout_ms or 0,
        run_timeout_ms=o.run_timeout_ms or 0,
        task_timeout_ms=o.task_timeout_ms or 0,
        id_reuse_policy=o.id_reuse_policy or IdReusePolicy.ALLOW_DUPLICATE,
        id_conflict_policy=policy,
        context=context,
        memo=dict(o.memo or {}),
        search_attributes=dict(o.search_attributes or {}),
        retry_policy=o.retry_policy,
        cron_schedule=o.cron_schedule or "",
        start_delay_ms=o.start_delay_ms or 0,
        execution_error_when_already_started=bool(o.execution_error_when_already_started),
        enable_eager_start=bool(o.enable_eager_start),
        wait_for_cancellation=bool(o.wait_for_cancellation),
        start_messages=list(spec.messages),
        parent_close_policy=o.parent_close_policy or ParentClosePolicy.TERMINATE,
    )


def child_command_attrs(req: StartWorkflowRequest, seq: str) -> dict[str, Any]:
    """The attributes of a `StartChildWorkflowExecution` command for `req` (legato.commands)."""
    return {
        "seq": seq,
        "namespace": req.namespace,
        "workflow_id": req.workflow_id,
        "workflow_type": req.workflow_type,
        "task_queue": req.task_queue,
        "input": list(req.input),
        "options": {
            "execution_timeout_ms": req.execution_timeout_ms,
            "run_timeout_ms": req.run_timeout_ms,
            "task_timeout_ms": req.task_timeout_ms,
            "id_reuse_policy": req.id_reuse_policy.value,
            "id_conflict_policy": req.id_conflict_policy.value,
            "execution_error_when_already_started": req.execution_error_when_already_started,
            "retry_policy": req.retry_policy,
            "cron_schedule": req.cron_schedule,
            "memo": req.memo,
            "search_attributes": req.search_attributes,
            "start_delay_ms": req.start_delay_ms,
            "context": req.context,
            "start_messages": [{"topic": m.topic, "payload": m.payload} for m in req.start_messages],
            "parent_close_policy": req.parent_close_policy.value,
            "wait_for_cancellation": req.wait_for_cancellation,
            "enable_eager_start": req.enable_eager_start,
        },
    }


def apply_spawner_call(op: str, base: Any, a: Any, b: Any) -> tuple[SpawnSpec | None, str | None]:
    """One `:with_options/with_context/with_name/with_message` call on a Lua spawner: the new
    (immutable) spec, or None and the error text naming what is wrong."""
    from worker.convert import ConversionError, to_python

    spec = base if isinstance(base, SpawnSpec) else SpawnSpec()
    try:
        if op == "options":
            return spec.with_options(to_python(a)), None
        if op == "context":
            return spec.with_context(to_python(a)), None
        if op == "name":
            return spec.with_name(a), None
        return spec.with_message(a, to_python(b)), None
    except StartOptionError as err:
        return None, str(err)
    except ConversionError as err:
        return None, f"with_{op}: {err}"
