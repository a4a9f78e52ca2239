"""The messages between processes, callers and hosts that are not the user's.

Every process and every caller has a pid starting with `@` and a mailbox in matching (the
caller mailboxes of docs/processes.md); a `process.host` entry served by a worker has one too, at
`host_pid(host id)`. Spawns, exits, links, monitors, terminations and cancellations
travel as ordinary `send_message` calls to those mailboxes, on topics starting with
`CONTROL_PREFIX`, which user code cannot send (`process.send` refuses the prefix): so they need no
new API call, and they reach the right worker wherever it runs, the way a user's message does.
The receiver turns them back into what they mean (`decode`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from legato import api
from legato.errors import Failure

CONTROL_PREFIX = "@legato."
SPAWN = CONTROL_PREFIX + "spawn"  # to a host: {ref, entry, args, reply_to, monitor, link, context}
SPAWNED = CONTROL_PREFIX + "spawned"  # to the spawner: {ref, pid} or {ref, error}
EXIT = CONTROL_PREFIX + "exit"  # to a watcher: {kind: EXIT|LINK_DOWN, from, link, result}
WATCH = CONTROL_PREFIX + "watch"  # to a process: {link, remove} (sender: the watcher)
TERMINATE = CONTROL_PREFIX + "terminate"  # to a process: {reason}
CANCEL = CONTROL_PREFIX + "cancel"  # to a process: {deadline_ms}


def host_pid(host_id: str) -> str:
    """The mailbox a worker serving `host_id` spawns from (every such worker polls it)."""
    return f"@host/{host_id}"


def is_control(topic: str) -> bool:
    return topic.startswith(CONTROL_PREFIX)


@dataclass(slots=True)
class Control:
    """A control message: what (`topic`), from whom, and its fields."""

    topic: str
    sender: str
    data: dict[str, Any]


def decode(m: api.ProcessMessage) -> api.ProcessMessage | Control:
    """A mailbox message as the receiver handles it: an EXIT/LINK_DOWN of a process becomes the
    same process event a workflow's close is; other control messages a `Control`; the rest as is."""
    if m.kind != "message" or not is_control(m.topic):
        return m
    data = m.payload if isinstance(m.payload, dict) else {}
    if m.topic == EXIT:
        return api.ProcessMessage("event", sender=m.sender, event={
            "kind": data.get("kind", "EXIT"), "from": m.sender, "link": bool(data.get("link")),
            "result": data.get("result") or {}})
    return Control(m.topic, m.sender, data)


def exit_payload(link: bool, value: Any, failure: Failure | None) -> dict[str, Any]:
    kind = "LINK_DOWN" if link and failure is not None else "EXIT"
    return {"kind": kind, "link": link,
            "result": {"value": value, "error": failure.to_dict() if failure is not None else None}}
