"""In-process matching: task queues between history's outbox and long-polling workers.

A task queue is keyed by (namespace, task_queue, kind). `add_task` puts a task on its queue and
waits until the task is durably handed over: a poller took it and history recorded it as started
(or history said it is stale or a duplicate). Only then may history acknowledge the outbox row,
so a task is never lost between the outbox and a worker:

* a poller whose `record_*_task_started` call fails with anything but FailedPrecondition/NotFound
  puts the task back at the front of its queue and returns the error to its caller (the worker
  backs off and polls again; matching itself never retries in a loop);
* a poll cancelled while it holds a task (the client went away, the server stops) puts the task
  back at the front of its queue;
* `stop()` ends every waiting poll (they return None) and fails every waiting `add_task` with
  `Unavailable`, so history keeps those outbox rows and redelivers them after a restart.

Each queue is two FIFO deques: tasks waiting for a poller, and pollers waiting for a task (at
most one of them is non-empty). A handout is a deque operation and a future resolution; there is
no polling loop, no sleep and no lock. Queues are independent, so a queue nobody polls keeps its
tasks and delays nothing else (`add_task` for it simply keeps waiting; history must therefore
call `add_task` concurrently, not one task after another).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TypeVar

from legato import api
from legato.config import Config
from legato.errors import FailedPrecondition, NotFound, Unavailable
from matching.mailboxes import Mailboxes

log = logging.getLogger("legato.matching")

_T = TypeVar("_T")
_Key = tuple[str, str, api.TaskKind]


class _Pending:
    """A task on a queue, and the future its `add_task` caller waits on."""

    __slots__ = ("done", "task")

    def __init__(self, task: api.TaskInfo, done: asyncio.Future[None]) -> None:
        self.task = task
        self.done = done


class _Queue:
    __slots__ = ("pollers", "tasks")

    def __init__(self) -> None:
        self.tasks: deque[_Pending] = deque()
        # Each waiting poller's future receives a task, or None when its poll ends empty.
        self.pollers: deque[asyncio.Future[_Pending | None]] = deque()


def _expire(waiter: asyncio.Future[_Pending | None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class InProcessMatching:
    """`legato.api.MatchingService` for the one-process assembly."""

    def __init__(self, history: api.HistoryService, config: Config) -> None:
        self._history = history
        self._config = config
        self._queues: dict[_Key, _Queue] = {}
        self._adders: set[asyncio.Future[None]] = set()
        self._stopped = False
        self._request_prefix = uuid.uuid4().hex[:16]
        self._request_seq = itertools.count(1)
        self._mailboxes = Mailboxes(config.matching)

    # ------------------------------------------------------------ MatchingService

    async def add_task(self, task: api.TaskInfo) -> None:
        if self._stopped:
            raise Unavailable("matching is stopped", reason="MatchingStopped")
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._offer(task_key(task), _Pending(task, done), front=False)
        self._adders.add(done)
        try:
            # A cancelled add_task cancels `done`; pollers then skip the task (history will
            # redeliver it from its outbox, which it has not acknowledged).
            await done
        finally:
            self._adders.discard(done)

    async def poll_workflow_task(self, req: api.PollRequest) -> api.WorkflowTask | None:
        return await self._poll(api.TaskKind.WORKFLOW, req, self._history.record_workflow_task_started)

    async def poll_activity_task(self, req: api.PollRequest) -> api.ActivityTask | None:
        return await self._poll(api.TaskKind.ACTIVITY, req, self._history.record_activity_task_started)

    # ------------------------------------------------------------ caller mailboxes (matching/mailboxes.py)

    async def open_mailbox(self, pid: str) -> None:
        self._mailboxes.open(pid)

    async def close_mailbox(self, pid: str) -> None:
        self._mailboxes.close(pid)

    async def deliver_message(self, pid: str, msg: api.ProcessMessage) -> bool:
        return self._mailboxes.deliver(pid, msg)

    async def poll_mailbox(self, req: api.PollMailboxRequest) -> list[api.ProcessMessage]:
        if self._stopped:
            raise Unavailable("matching is stopped", reason="MatchingStopped")
        return await self._mailboxes.poll(req)

    # ------------------------------------------------------------ lifecycle

    async def stop(self) -> None:
        """End every waiting poll (they return None) and every waiting add_task (Unavailable)."""
        self._stopped = True
        self._mailboxes.stop()
        for q in self._queues.values():
            while q.pollers:
                _expire(q.pollers.popleft())
            q.tasks.clear()
        for done in list(self._adders):
            if not done.done():
                done.set_exception(Unavailable("matching stopped before the task was handed to a worker",
                                               reason="MatchingStopped"))
                # The caller may be gone already; don't let asyncio log "exception never retrieved".
                done.exception()
        self._adders.clear()

    def backlog(self, namespace: str, task_queue: str, kind: api.TaskKind) -> int:
        """How many tasks wait on a queue (for metrics and tests)."""
        q = self._queues.get((namespace, task_queue, kind))
        return len(q.tasks) if q else 0

    def pollers(self, namespace: str, task_queue: str, kind: api.TaskKind) -> int:
        """How many polls wait on a queue (for metrics and tests)."""
        q = self._queues.get((namespace, task_queue, kind))
        return sum(1 for w in q.pollers if not w.done()) if q else 0

    # ------------------------------------------------------------ internals

    def _queue(self, key: _Key) -> _Queue:
        q = self._queues.get(key)
        if q is None:
            q = self._queues[key] = _Queue()
        return q

    def _offer(self, key: _Key, item: _Pending, front: bool) -> None:
        """Hand `item` to the longest-waiting live poller, else queue it (FIFO, or at the front
        when it is going back after a failed handout)."""
        if self._stopped:
            if not item.done.done():
                item.done.set_exception(Unavailable("matching stopped before the task was handed to a worker",
                                                    reason="MatchingStopped"))
                item.done.exception()
            return
        q = self._queue(key)
        pollers = q.pollers
        while pollers:
            waiter = pollers.popleft()
            if not waiter.done():
                waiter.set_result(item)
                return
        if front:
            q.tasks.appendleft(item)
        else:
            q.tasks.append(item)

    def _request_id(self) -> str:
        return f"{self._request_prefix}-{next(self._request_seq)}"

    async def _poll(self, kind: api.TaskKind, req: api.PollRequest,
                    record: Callable[[api.TaskInfo, str, str], Awaitable[_T]]) -> _T | None:
        if self._stopped:
            raise Unavailable("matching is stopped", reason="MatchingStopped")
        loop = asyncio.get_running_loop()
        limit_ms = self._config.matching.long_poll_timeout_ms
        timeout_ms = min(req.timeout_ms, limit_ms) if req.timeout_ms > 0 else limit_ms
        deadline = loop.time() + timeout_ms / 1000.0
        key: _Key = (req.namespace, req.task_queue, kind)
        while True:
            item = await self._next_item(key, deadline, loop)
            if item is None:
                return None
            try:
                result = await record(item.task, self._request_id(), req.identity)
            except (FailedPrecondition, NotFound) as e:
                # Stale or duplicate (already started, run closed, ...): drop it and keep polling.
                log.debug("dropping stale %s task %s/%s@%d: %s", kind.value, item.task.workflow_id,
                          item.task.run_id, item.task.scheduled_event_id, e)
                if not item.done.done():
                    item.done.set_result(None)
                continue
            except BaseException:
                # Unavailable, a transient store error, a bug, or this poll was cancelled: the task
                # was not handed out, so it goes back to the front of its queue. The error goes to
                # the caller, which backs off; retrying here would spin on a failing history.
                self._offer(key, item, front=True)
                raise
            if not item.done.done():
                item.done.set_result(None)
            return result

    async def _next_item(self, key: _Key, deadline: float, loop: asyncio.AbstractEventLoop) -> _Pending | None:
        """The next live task of the queue, waiting until `deadline`; None when the wait ends empty."""
        q = self._queue(key)
        while True:
            tasks = q.tasks
            while tasks:
                item = tasks.popleft()
                if not item.done.done():  # skip tasks whose add_task was cancelled
                    return item
            if self._stopped:
                return None
            remaining = deadline - loop.time()
            if remaining <= 0:
                return None
            waiter: asyncio.Future[_Pending | None] = loop.create_future()
            q.pollers.append(waiter)
            timer = loop.call_later(remaining, _expire, waiter)
            try:
                got = await waiter
            except BaseException:
                # Cancelled. If a task was handed to us in the meantime, give it back first.
                if waiter.done() and not waiter.cancelled():
                    handed = waiter.result()
                    if handed is not None:
                        self._offer(key, handed, front=True)
                else:
                    waiter.cancel()
                    _discard(q.pollers, waiter)
                raise
            finally:
                timer.cancel()
            if got is None:
                _discard(q.pollers, waiter)
                return None
            if not got.done.done():
                return got
            # The add_task behind it was cancelled: wait again for the rest of the time.


def _discard(pollers: deque[asyncio.Future[_Pending | None]], waiter: asyncio.Future[_Pending | None]) -> None:
    try:
        pollers.remove(waiter)
    except ValueError:
        pass


def task_key(task: api.TaskInfo) -> _Key:
    return (task.namespace, task.task_queue, task.kind)
