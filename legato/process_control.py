"""The control messages of non-durable processes (docs/processes.md, "Processes on a
process.host"): mailbox messages and workflow signals on topics starting with `CONTROL_PREFIX`,
which user code cannot send. Shared by the worker (processes, callers) and history (a workflow's
terminate, cancel, monitor and link of a process pid)."""

from __future__ import annotations

from typing import Any

from legato.errors import Failure

CONTROL_PREFIX = "@legato."
SPAWN = CONTROL_PREFIX + "spawn"  # to a host: {ref, entry, args, reply_to, monitor, link, context}
# (a workflow's spawn adds {pid, namespace, parent_close_policy, run}: history adds `run`, the
# spawning run's id, which the host sends back in SPAWNED)
SPAWNED = CONTROL_PREFIX + "spawned"  # to the spawner: {ref, pid, monitor, link, run} or {ref, error, run}
EXIT = CONTROL_PREFIX + "exit"  # to a watcher: {kind: EXIT|LINK_DOWN, link, result: {value, error}}
WATCH = CONTROL_PREFIX + "watch"  # to a process: {link, remove, namespace} (sender: the watcher)
TERMINATE = CONTROL_PREFIX + "terminate"  # to a process: {reason}
CANCEL = CONTROL_PREFIX + "cancel"  # to a process: {deadline_ms}


HOST_PID_PREFIX = "@host/"  # the spawn mailbox of a process.host: HOST_PID_PREFIX + its entry id


def host_pid(host_id: str) -> str:
    """The mailbox a worker serving process.host `host_id` spawns from (every such worker polls it)."""
    return HOST_PID_PREFIX + host_id


def is_control(topic: str) -> bool:
    return topic.startswith(CONTROL_PREFIX)


def exit_payload(link: bool, value: Any, failure: Failure | None) -> dict[str, Any]:
    kind = "LINK_DOWN" if link and failure is not None else "EXIT"
    return {"kind": kind, "link": link,
            "result": {"value": value, "error": failure.to_dict() if failure is not None else None}}


def exit_of(payload: Any) -> tuple[bool, Any, Failure | None]:
    """(link, value, failure) of an EXIT payload."""
    data = payload if isinstance(payload, dict) else {}
    raw = data.get("result")
    result: dict[str, Any] = raw if isinstance(raw, dict) else {}
    err = result.get("error")
    return bool(data.get("link")), result.get("value"), Failure.from_dict(err) if isinstance(err, dict) else None


def spawned_of(payload: Any) -> tuple[int | None, Failure | None]:
    """(ref as a workflow's spawn seq, failure) of a SPAWNED payload sent to a workflow."""
    data = payload if isinstance(payload, dict) else {}
    ref = data.get("ref")
    seq = ref if isinstance(ref, int) and not isinstance(ref, bool) else None
    err = data.get("error")
    return seq, Failure.from_dict(err) if isinstance(err, dict) else None
