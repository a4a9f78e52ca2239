"""Mailboxes of non-durable Lua callers (pids starting with `@`).

A caller (a `function.lua` entry run by `legato run`) opens a mailbox for its pid while it runs;
workflows that `process.send` to it and the close of workflows it monitors put `ProcessMessage`s
there (through `MatchingService.deliver_message`), and the caller long-polls them out. A caller
that is gone has no mailbox: delivering to it returns False (the sender sees NOT_FOUND).

Each mailbox is a bounded FIFO deque plus the futures of the polls waiting on it: a delivery
hands the message to a waiting poll at once, so there is no polling loop and no sleep. A full
mailbox refuses the delivery with ResourceExhausted naming the pid and the limit
(`matching.max_mailbox_messages`); the number of open mailboxes is bounded too
(`matching.max_mailboxes`). Messages are not persisted: a caller is not durable.
"""

from __future__ import annotations

import asyncio
from collections import deque

from legato import api
from legato.config import MatchingConfig
from legato.errors import InvalidArgument, NotFound, ResourceExhausted


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class _Mailbox:
    __slots__ = ("closed", "messages", "waiters")

    def __init__(self) -> None:
        self.messages: deque[api.ProcessMessage] = deque()
        self.waiters: deque[asyncio.Future[None]] = deque()
        self.closed = False

    def wake_one(self) -> None:
        while self.waiters:
            w = self.waiters.popleft()
            if not w.done():
                w.set_result(None)
                return

    def wake_all(self) -> None:
        while self.waiters:
            _wake(self.waiters.popleft())


def check_caller_pid(pid: object, field: str = "pid") -> str:
    if not isinstance(pid, str) or not pid.startswith(api.CALLER_PID_PREFIX) or len(pid) < 2:
        raise InvalidArgument(f"{field} must be a caller pid (starting with {api.CALLER_PID_PREFIX!r}), got {pid!r}")
    if len(pid) > 1000:
        raise InvalidArgument(f"{field} is {len(pid)} characters long; the limit is 1000")
    return pid


class Mailboxes:
    """The mailboxes of one matching node."""

    def __init__(self, config: MatchingConfig) -> None:
        self._config = config
        self._boxes: dict[str, _Mailbox] = {}

    def __len__(self) -> int:
        return len(self._boxes)

    def is_open(self, pid: str) -> bool:
        return pid in self._boxes

    def pending(self, pid: str) -> int:
        box = self._boxes.get(pid)
        return len(box.messages) if box else 0

    def open(self, pid: str) -> None:
        """Open the mailbox of `pid` (opening an open one is a no-op)."""
        check_caller_pid(pid)
        if pid in self._boxes:
            return
        if len(self._boxes) >= self._config.max_mailboxes:
            raise ResourceExhausted(f"cannot open a mailbox for {pid}: {len(self._boxes)} mailboxes are open, "
                                    f"the limit (matching.max_mailboxes) is {self._config.max_mailboxes}",
                                    reason="TooManyMailboxes")
        self._boxes[pid] = _Mailbox()

    def close(self, pid: str) -> None:
        """Drop the mailbox and whatever waits in it; polls waiting on it return empty."""
        box = self._boxes.pop(pid, None)
        if box is not None:
            box.closed = True
            box.messages.clear()
            box.wake_all()

    def deliver(self, pid: str, msg: api.ProcessMessage) -> bool:
        box = self._boxes.get(pid)
        if box is None:
            return False
        limit = self._config.max_mailbox_messages
        if len(box.messages) >= limit:
            raise ResourceExhausted(f"the mailbox of {pid} is full: {len(box.messages)} messages wait in it, "
                                    f"the limit (matching.max_mailbox_messages) is {limit}",
                                    reason="MailboxFull")
        box.messages.append(msg)
        box.wake_one()
        return True

    async def poll(self, req: api.PollMailboxRequest) -> list[api.ProcessMessage]:
        """Up to `max_messages` messages, waiting up to `timeout_ms` for the first one
        (capped at `long_poll_timeout_ms`). NotFound when the mailbox is not open."""
        box = self._boxes.get(req.pid)
        if box is None:
            raise NotFound(f"no mailbox for {req.pid}: open it first (or its caller is gone)", reason="NoMailbox")
        if not box.messages and req.timeout_ms > 0:
            loop = asyncio.get_running_loop()
            timeout_ms = min(req.timeout_ms, self._config.long_poll_timeout_ms)
            waiter: asyncio.Future[None] = loop.create_future()
            box.waiters.append(waiter)
            timer = loop.call_later(timeout_ms / 1000.0, _wake, waiter)
            try:
                await waiter
            finally:
                timer.cancel()
                if not waiter.done():
                    waiter.cancel()
                try:
                    box.waiters.remove(waiter)
                except ValueError:
                    pass
        out: list[api.ProcessMessage] = []
        n = max(1, req.max_messages)
        while box.messages and len(out) < n:
            out.append(box.messages.popleft())
        if box.messages:  # more left: let the next waiting poll have them
            box.wake_one()
        return out

    def stop(self) -> None:
        for pid in list(self._boxes):
            self.close(pid)
