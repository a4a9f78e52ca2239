"""Which offset of a partition may be committed: the oldest message not yet done.

Messages are consumed in offset order and become done in any order (handed out, found stale,
parked). Committing the oldest not-done offset means a restart re-reads from there: every message
that was not done is delivered again, and some that were done may be too (history drops those
as stale), but none is skipped.
"""

from __future__ import annotations

from collections import deque


class PartitionOffsets:
    """The messages of one partition that this consumer read and has not yet finished."""

    __slots__ = ("_done", "_next", "_pending", "committed")

    def __init__(self) -> None:
        self._pending: deque[int] = deque()  # consumed offsets, ascending, some of them done
        self._done: set[int] = set()
        self._next: int | None = None  # one past the last consumed offset
        self.committed: int | None = None  # the last offset committed (set by the committer)

    def consumed(self, offset: int) -> None:
        self._pending.append(offset)
        self._next = offset + 1

    def done(self, offset: int) -> None:
        self._done.add(offset)

    def committable(self) -> int | None:
        """The offset a restart must resume from (None: nothing consumed yet)."""
        pending, done = self._pending, self._done
        while pending and pending[0] in done:
            done.discard(pending.popleft())
        return pending[0] if pending else self._next

    @property
    def outstanding(self) -> int:
        """Messages read and not yet done."""
        return len(self._pending) - len(self._done)
