"""Checks of what a caller sent that every operation shares: execution references and task
tokens. Each failure is an InvalidArgument naming the operation and the field."""

from __future__ import annotations

from legato.api import ExecutionRef, TaskInfo, TaskKind
from legato.errors import InvalidArgument
from legato.tokens import TaskToken


def check_ref(ref: ExecutionRef, what: str) -> ExecutionRef:
    if not isinstance(ref, ExecutionRef):
        raise InvalidArgument(f"{what}: expected an execution reference")
    for value, name in ((ref.namespace, "namespace"), (ref.workflow_id, "workflow_id")):
        if not isinstance(value, str) or not value:
            raise InvalidArgument(f"{what}: {name} must be a non-empty string")
    if not isinstance(ref.run_id, str):
        raise InvalidArgument(f"{what}: run_id must be a string")
    return ref


def check_token(raw: bytes, kind: str) -> TaskToken:
    if not isinstance(raw, bytes | bytearray) or not raw:
        raise InvalidArgument("task_token must be non-empty bytes")
    tok = TaskToken.decode(bytes(raw))
    if tok.kind != kind:
        raise InvalidArgument(f"expected a {kind} task token, got a {tok.kind} one")
    for name in ("namespace", "workflow_id", "run_id"):
        if not isinstance(getattr(tok, name), str) or not getattr(tok, name):
            raise InvalidArgument(f"malformed task token: {name} is missing")
    for name in ("scheduled_event_id", "started_event_id", "attempt"):
        if not isinstance(getattr(tok, name), int):
            raise InvalidArgument(f"malformed task token: {name} is not a number")
    return tok


def check_strings(what: str, **fields: object) -> None:
    """Each field must be a string (possibly empty)."""
    for name, value in fields.items():
        if not isinstance(value, str):
            raise InvalidArgument(f"{what}: {name} must be a string")


def check_task_started(task: TaskInfo, kind: TaskKind, request_id: str) -> None:
    """What matching sends when a poller takes a task: a task of `kind`, and the poll's id."""
    what = f"record_{kind.value}_task_started"
    if task.kind != kind:
        raise InvalidArgument(f"{what} got a {task.kind} task")
    if not isinstance(request_id, str) or not request_id:
        raise InvalidArgument(f"{what}: request_id must be a non-empty string")
