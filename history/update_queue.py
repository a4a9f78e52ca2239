"""Updates of one workflow queued, so that those of one run can be committed as one write.

Each update of a run is a load-modify-commit under the workflow's lock, and a commit takes a
store round trip (SQLite waits `store_commit_window_ms` for company; Cassandra runs a Paxos round).
Updates of a busy run would each wait for the previous one's commit: a parent with hundreds of
children open hears of every child's start and close, one write after another, and its own
workflow task completion queues behind them all.

Instead, an update that finds another of its workflow id under way queues (`submit`); once that
one is done, a drain task takes the queue in arrival order, and the consecutive updates aimed at
the same run are applied in turn to the same state and committed as one write
(history/api/access.py, `RunAccess._apply_updates`): they succeed or fail together, in the order they arrived,
as if committed one by one. An update that finds nothing under way is applied at once by its
caller (no extra cost). A caller cancelled while its update waits is skipped; one cancelled
after its update was applied does not stop the write (a queued write always settles).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("legato.history")

Key = tuple[str, str]  # (namespace, workflow_id)


@dataclass(slots=True, eq=False)
class PendingUpdate:
    """One caller's update: `fn(mutation, entry)` on run `run_id` ("" = the current run)."""

    run_id: str
    fn: Callable[..., Any]
    future: asyncio.Future[Any]

    @property
    def live(self) -> bool:
        """False once the caller has its answer (or gave up waiting for it)."""
        return not self.future.done()

    def resolve(self, value: Any) -> None:
        if not self.future.done():
            self.future.set_result(value)

    def fail(self, err: BaseException) -> None:
        if self.future.done():
            return
        if isinstance(err, asyncio.CancelledError):
            # Cancelled, not failed: the caller may be gone (its task was cancelled, as every
            # timer fire is when a shard is dropped), and a future holding an exception nobody
            # retrieves is logged as an ERROR when collected (36,547 of them after one lost shard).
            self.future.cancel()
        else:
            self.future.set_exception(err)


Drain = Callable[[Key, "deque[PendingUpdate]"], Awaitable[None]]


class UpdateQueue:
    """The updates waiting, per workflow id, each id drained by one task at a time.

    `drain(key, queue)` takes what it handles from the front of `queue` (it may put updates
    back at the front to be applied afresh) and settles their futures; it is called again while
    the queue is not empty."""

    def __init__(self, drain: Drain) -> None:
        self._drain = drain
        self._queues: dict[Key, deque[PendingUpdate]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def submit(self, key: Key, run_id: str, fn: Callable[..., Any]) -> Any:
        """Apply `fn` to the run: at once, in the caller's task, when nothing of this workflow is
        under way (no extra cost then); else queued behind what is, for the drain task to batch."""
        loop = asyncio.get_running_loop()
        p = PendingUpdate(run_id, fn, loop.create_future())
        q = self._queues.get(key)
        if q is not None:
            q.append(p)
            return await p.future
        q = self._queues[key] = deque()  # others queue here meanwhile
        try:
            mine = deque((p,))
            while mine:
                await self._drain(key, mine)
        finally:
            if q:
                task = loop.create_task(self._run(key, q), name=f"updates {key[1]}")
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            else:
                del self._queues[key]
        return p.future.result()

    async def _run(self, key: Key, q: deque[PendingUpdate]) -> None:
        try:
            while q:
                await self._drain(key, q)
        except Exception as e:  # drain settles what it took; a bug must not leave the rest waiting
            log.exception("history: updates of workflow %r could not be applied", key[1])
            self._fail_all(q, e)
        except BaseException:  # cancelled (shutdown)
            self._fail_all(q, asyncio.CancelledError())
            raise
        finally:
            if self._queues.get(key) is q:
                del self._queues[key]

    @staticmethod
    def _fail_all(q: deque[PendingUpdate], err: BaseException) -> None:
        for p in q:
            p.fail(err)
        q.clear()

    def waiting(self) -> int:
        """Updates queued and not yet taken by their drain."""
        return sum(len(q) for q in self._queues.values())
