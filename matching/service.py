"""In-process matching: task queues between history's outbox and long-polling workers.

`add_task` puts a task on its queue (matching/queues.py) and waits until the task is durably
handed over: a poller took it and history recorded it as started (or history said it is stale
or a duplicate). Only then may history acknowledge the outbox row, so a task is never lost
between the outbox and a worker:

* a poller whose `record_*_task_started` call fails with anything but FailedPrecondition/NotFound
  puts the task back at the front of its queue and returns the error to its caller;
* a poll cancelled while it holds a task (the client went away, the server stops) puts the task
  back at the front of its queue;
* `stop()` ends every waiting poll (they return None) and fails every waiting `add_task` with
  `Unavailable`, so history keeps those outbox rows and redelivers them after a restart.

Queues are independent, so a queue nobody polls keeps its tasks and delays nothing else
(`add_task` for it simply keeps waiting; history must therefore call `add_task` concurrently,
not one task after another).
"""

from __future__ import annotations

import asyncio

from legato import api
from legato.config import Config
from legato.errors import Unavailable
from matching.node import MatchingNode
from matching.queues import Queued, task_key

__all__ = ["InProcessMatching", "task_key"]


def _stopped_error() -> Unavailable:
    return Unavailable("matching stopped before the task was handed to a worker", reason="MatchingStopped")


class _Pending(Queued):
    """A task on a queue, and the future its `add_task` caller waits on."""

    __slots__ = ("done",)

    def __init__(self, task: api.TaskInfo, since: float, done: asyncio.Future[None]) -> None:
        super().__init__(task, since)
        self.done = done

    def live(self) -> bool:
        # A cancelled add_task cancels `done`: pollers then skip the task (history redelivers it
        # from its outbox, which it has not acknowledged).
        return not self.done.done()

    def settle(self) -> None:
        if not self.done.done():
            self.done.set_result(None)

    def abort(self) -> None:
        _fail(self.done)


def _fail(done: asyncio.Future[None]) -> None:
    if not done.done():
        done.set_exception(_stopped_error())
        # The caller may be gone already; don't let asyncio log "exception never retrieved".
        done.exception()


class InProcessMatching(MatchingNode):
    """`legato.api.MatchingService` for the one-process assembly on the in-process bus."""

    def __init__(self, history: api.HistoryService, config: Config) -> None:
        super().__init__(history, config)
        self._adders: set[asyncio.Future[None]] = set()

    async def add_task(self, task: api.TaskInfo) -> None:
        self._check_running()
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        self._queues.offer(task_key(task), _Pending(task, loop.time(), done))
        self._adders.add(done)
        try:
            await done
        finally:
            self._adders.discard(done)

    async def stop(self) -> None:
        """End every waiting poll (they return None) and every waiting add_task (Unavailable),
        including those whose task a poll is recording right now."""
        self._stop_serving()
        for done in list(self._adders):
            _fail(done)
        self._adders.clear()
