"""Mailboxes of non-durable Lua callers (pids starting with `@`).

A caller (a `function.lua` entry run by `legato run`) opens a mailbox for its pid while it runs;
workflows that `process.send` to it and the close of workflows it monitors put `ProcessMessage`s
there (through `MatchingService.deliver_message`), and the caller long-polls them out. A caller
that is gone has no mailbox: delivering to it returns False (the sender sees NOT_FOUND).

Each mailbox is a bounded FIFO deque plus the futures of the polls waiting on it: a delivery
hands the message to a waiting poll at once, so there is no polling loop and no sleep. A full
mailbox refuses the delivery with ResourceExhausted naming the pid and the limit: messages
(`matching.max_mailbox_messages`) or bytes (`matching.max_mailbox_bytes`, what a message's
payload, topic and sender take), and so do all the mailboxes of the node together
(`matching.max_mailboxes_total_bytes`); the number of open mailboxes is bounded too
(`matching.max_mailboxes`). Messages are not persisted: a caller is not durable.

Closing a mailbox refuses later deliveries at once; the messages delivered before go to the polls
waiting then, and what they leave to the next poll of that pid within `CLOSING_KEEP_S` (once;
then it is NotFound). So a process that closes its mailbox as it ends and polls until NotFound
sees every message that was accepted for it (a monitor sent just before its end is answered, not
lost). Those leftovers no longer count against the byte limits, and at most `CLOSING_KEPT`
closed mailboxes keep them.
"""

from __future__ import annotations

import asyncio
from collections import deque

from legato import api, codec
from legato.config import MatchingConfig
from legato.errors import InvalidArgument, NotFound, ResourceExhausted


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


# What a message costs beyond its text (the Python objects that hold it), so that even empty
# messages count against the byte limits.
MESSAGE_OVERHEAD_BYTES = 200
CLOSING_KEPT = 1_000  # closed mailboxes whose messages wait for their owner's last poll ...
CLOSING_KEEP_S = 10.0  # ... for this long


def message_bytes(msg: api.ProcessMessage) -> int:
    """The bytes a message counts for in the mailbox limits."""
    size = MESSAGE_OVERHEAD_BYTES + len(msg.topic) + len(msg.sender)
    for value in (msg.payload, msg.event):
        if value is not None:
            size += len(codec.dumps(value))
    return size


class _Mailbox:
    __slots__ = ("bytes", "closed", "drop_timer", "messages", "sizes", "waiters")

    def __init__(self) -> None:
        self.messages: deque[api.ProcessMessage] = deque()
        self.sizes: deque[int] = deque()  # message_bytes of each message, in the same order
        self.bytes = 0
        self.waiters: deque[asyncio.Future[None]] = deque()
        self.closed = False
        self.drop_timer: asyncio.TimerHandle | None = None

    def pop(self) -> tuple[api.ProcessMessage, int]:
        size = self.sizes.popleft()
        self.bytes -= size
        return self.messages.popleft(), size

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
        self._closing: dict[str, _Mailbox] = {}  # closed, with messages for the last poll (see above)
        self.bytes = 0  # of the messages waiting in every mailbox

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
        box = self._closing.pop(pid, None)  # opened again before its last poll: it keeps its messages
        if box is None:
            box = _Mailbox()
        else:
            if box.drop_timer is not None:
                box.drop_timer.cancel()
            self.bytes += box.bytes
        box.closed = False
        self._boxes[pid] = box

    def close(self, pid: str) -> None:
        """Refuse later deliveries; the polls waiting now, then the next one, get what waits in it."""
        box = self._boxes.pop(pid, None)
        if box is not None:
            box.closed = True
            self.bytes -= box.bytes  # what is left is not this node's to bound any more
            if box.messages:
                self._closing[pid] = box
                try:
                    box.drop_timer = asyncio.get_running_loop().call_later(CLOSING_KEEP_S, self._drop, pid, box)
                except RuntimeError:  # no event loop (stopping): nobody will poll
                    self._drop(pid, box)
                while len(self._closing) > CLOSING_KEPT:
                    self._drop(next(iter(self._closing)))
            box.wake_all()

    def _drop(self, pid: str, box: _Mailbox | None = None) -> None:
        if box is not None and self._closing.get(pid) is not box:
            return  # opened again, or polled empty, since
        box = self._closing.pop(pid, None)
        if box is not None:
            if box.drop_timer is not None:
                box.drop_timer.cancel()
            box.messages.clear()
            box.sizes.clear()
            box.bytes = 0

    def deliver(self, pid: str, msg: api.ProcessMessage) -> bool:
        box = self._boxes.get(pid)
        if box is None:
            return False
        size = message_bytes(msg)
        self._check_room(pid, box, size)
        box.messages.append(msg)
        box.sizes.append(size)
        box.bytes += size
        self.bytes += size
        box.wake_one()
        return True

    def _check_room(self, pid: str, box: _Mailbox, size: int) -> None:
        """ResourceExhausted (reason MailboxFull) naming the limit a message of `size` bytes would cross."""
        cfg = self._config
        if len(box.messages) >= cfg.max_mailbox_messages:
            raise ResourceExhausted(f"the mailbox of {pid} is full: {len(box.messages)} messages wait in it, "
                                    f"the limit (matching.max_mailbox_messages) is {cfg.max_mailbox_messages}",
                                    reason="MailboxFull")
        if box.bytes + size > cfg.max_mailbox_bytes:
            raise ResourceExhausted(f"the mailbox of {pid} is full: {box.bytes} bytes of messages wait in it and "
                                    f"this one takes {size}; the limit (matching.max_mailbox_bytes) is "
                                    f"{cfg.max_mailbox_bytes} bytes", reason="MailboxFull")
        if self.bytes + size > cfg.max_mailboxes_total_bytes:
            raise ResourceExhausted(f"cannot deliver to {pid}: the mailboxes of this matching node hold {self.bytes} "
                                    f"bytes of messages and this one takes {size}; the limit "
                                    f"(matching.max_mailboxes_total_bytes) is {cfg.max_mailboxes_total_bytes} bytes",
                                    reason="MailboxFull")

    async def poll(self, req: api.PollMailboxRequest) -> list[api.ProcessMessage]:
        """Up to `max_messages` messages, waiting up to `timeout_ms` for the first one
        (capped at `long_poll_timeout_ms`). NotFound when the mailbox is not open."""
        box = self._boxes.get(req.pid) or self._closing.get(req.pid)
        if box is None:
            raise NotFound(f"no mailbox for {req.pid}: open it first (or its caller is gone)", reason="NoMailbox")
        if not box.messages and req.timeout_ms > 0 and not box.closed:
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
            msg, size = box.pop()
            if not box.closed:
                self.bytes -= size
            out.append(msg)
        if box.messages:  # more left: let the next waiting poll have them
            box.wake_one()
        if box.closed and not box.messages and self._closing.get(req.pid) is box:
            self._drop(req.pid, box)
        return out

    def stop(self) -> None:
        for pid in list(self._boxes):
            self.close(pid)
        for pid in list(self._closing):
            self._drop(pid)
