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
from legato.process_control import (  # noqa: F401  (re-exported: the worker's names for them)
    CANCEL,
    CONTROL_PREFIX,
    EXIT,
    SPAWN,
    SPAWNED,
    TERMINATE,
    WATCH,
    exit_payload,
    host_pid,
    is_control,
)


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
