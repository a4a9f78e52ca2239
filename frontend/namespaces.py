"""The namespaces each public rpc acts in, read from its protobuf request: what a caller's token
must allow (`legato.authz`). An empty namespace field means the default namespace, as in
`legato.wire`.

Besides the namespace of the request itself: a start's parent (its close is reported there), and
for a completed workflow task the namespaces its commands reach (children started, workflows
signalled, cancelled, terminated or monitored elsewhere). Task responses act in the namespace of
their task token. Mailbox calls and query answers name no namespace (a caller's pid and a query's id are their own
secrets): any valid token may make them.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any

from legato import DEFAULT_NAMESPACE
from legato.commands import CommandType
from legato.errors import InvalidArgument
from legato.tokens import TaskToken

# Commands that act on a workflow in a namespace of their own ("namespace" in their attributes).
_CROSS_NAMESPACE = frozenset({
    CommandType.StartChildWorkflowExecution.value, CommandType.SignalExternalWorkflowExecution.value,
    CommandType.RequestCancelExternalWorkflowExecution.value, CommandType.TerminateExternalWorkflowExecution.value,
    CommandType.MonitorExternalWorkflowExecution.value,
})


def _ns(name: str) -> str:
    return name or DEFAULT_NAMESPACE


def _own(m: Any) -> list[str]:
    return [_ns(m.namespace)]


def _ref(m: Any) -> list[str]:
    return [_ns(m.ref.namespace)]


def _none(_: Any) -> list[str]:
    return []


def _start(m: Any) -> list[str]:
    names = [_ns(m.namespace)]
    if m.HasField("parent"):
        names.append(_ns(m.parent.namespace))
    return names


def _task(m: Any) -> list[str]:
    return [TaskToken.decode(m.task_token).namespace]


def _completed(m: Any) -> list[str]:
    own = TaskToken.decode(m.task_token).namespace
    names = [own]
    for c in m.commands:
        if c.command_type not in _CROSS_NAMESPACE:
            continue
        try:
            attrs = json.loads(c.attrs_json or "{}")
        except (ValueError, RecursionError):
            raise InvalidArgument(f"command {c.command_type}: attrs_json is not valid JSON") from None
        target = attrs.get("namespace") if isinstance(attrs, dict) else None
        names.append(target if isinstance(target, str) and target else own)
    return names


RULES: dict[str, Callable[[Any], Iterable[str]]] = {
    "StartWorkflow": _start,
    "SignalWorkflow": _ref,
    "TerminateWorkflow": _ref,
    "RequestCancelWorkflow": _ref,
    "DescribeWorkflow": _ref,
    "GetWorkflowHistory": _ref,
    "GetWorkflowResult": _ref,
    "ListWorkflows": _own,
    "CountWorkflows": _own,
    "PollWorkflowTask": _own,
    "RespondWorkflowTaskCompleted": _completed,
    "RespondWorkflowTaskFailed": _task,
    "PollActivityTask": _own,
    "RespondActivityTaskCompleted": _task,
    "RespondActivityTaskFailed": _task,
    "RecordActivityHeartbeat": _task,
    "RespondActivityTaskCanceled": _task,
    "SendMessage": _own,
    "OpenMailbox": _none,
    "CloseMailbox": _none,
    "PollMailbox": _none,
    "MonitorWorkflow": _ref,
    "QueryWorkflow": _ref,
    # A query's answer names no namespace; its query id is a random secret held by the worker it
    # was handed to (as a caller's pid is): any valid token may send it.
    "RespondQueryTaskCompleted": _none,
}
