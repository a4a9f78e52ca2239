"""The task queues of one matching node and the long-poll handout, shared by InProcessMatching
and KafkaMatching (which differ only in where tasks come from and what "done" means).

A queue is keyed (namespace, task_queue, kind) and holds FIFO deques: tasks waiting for a poll,
polls waiting for a task (at most one of the two is non-empty), and, per worker identity, sticky
tasks held for that worker until their sticky window ends (then any poll may take them). A
handout is a deque operation and a future resolution: no polling loop, no sleep, no lock. Queues
are independent, so a queue nobody polls keeps its tasks and delays nothing else.

A poll asks history to record its task as started before handing it out:

* stale or duplicate (FailedPrecondition/NotFound): the task is settled (done) and the poll goes on;
* any other failure, or the poll is cancelled: the task goes back to the front of its queue and
  the error goes to the caller (the worker backs off; retrying here would spin on a failing
  history).

A query task (issue 14) waits beside the tasks, in `queries`: a workflow-task poll takes one
before any task (of its worker, when the query is sticky) and gets it as is: history records
nothing, and a query is never parked, forwarded or put on Kafka (it lives only as long as its
caller waits, `QueryItem`).

What "done" means belongs to the backend: a `Queued` says whether it is still live (an in-process
`add_task` may have been withdrawn) and what settling or aborting it does (an `add_task` returns
or fails; a Kafka offset may be committed past it).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

from legato import api, metrics
from legato.errors import FailedPrecondition, NotFound, Unavailable
from legato.metrics import Sample

log = logging.getLogger("legato.matching")
_POLLS = metrics.children(metrics.matching_polls)
_MATCHES = metrics.children(metrics.matching_matches)
_SCHEDULE_TO_START = metrics.children(metrics.schedule_to_start)

T = TypeVar("T")
Key = tuple[str, str, api.TaskKind]


def task_key(task: api.TaskInfo) -> Key:
    return (task.namespace, task.task_queue, task.kind)


class Queued:
    """A task on a queue. `sticky`: the identity of the only worker that may take it until the
    loop time `sticky_until` (a workflow task offered first to the worker that has its run cached)."""

    __slots__ = ("release", "request_id", "since", "sticky", "sticky_until", "task")

    def __init__(self, task: api.TaskInfo, since: float, sticky: str | None = None, sticky_until: float = 0.0) -> None:
        self.task = task
        self.since = since  # loop time it was first queued (parking)
        self.sticky = sticky
        self.sticky_until = sticky_until
        self.release: asyncio.TimerHandle | None = None  # ends the sticky hold
        # The id history records the task started with; kept when the task goes back to its queue,
        # so that after a record whose outcome was lost (history applied it, the reply failed) the
        # next poll gets the task again instead of "already started by another poller".
        self.request_id = ""

    def live(self) -> bool:
        """False: the task was withdrawn; skip it."""
        return True

    def settle(self) -> None:
        """Handed out, or found stale by history: this task is done."""

    def abort(self) -> None:
        """Matching stopped with this task not handed out."""

    def bounce(self) -> bool:
        """The task could not be handed out here and would go (back) on the queue: True if it
        belongs elsewhere instead (a task another node offered: that node keeps it)."""
        return False


class QueryItem(Queued):
    """A query task waiting for a workflow-task poll: live until a poll took it or its caller
    stopped waiting (`answer` done). `sticky`: only polls of that worker may take it."""

    __slots__ = ("answer", "handed", "workflow_task")

    def __init__(self, workflow_task: api.WorkflowTask, since: float, sticky: str | None,
                 answer: asyncio.Future[api.RespondQueryTaskCompletedRequest]) -> None:
        t = workflow_task
        super().__init__(api.TaskInfo(api.TaskKind.WORKFLOW, t.namespace, t.task_queue, t.workflow_id, t.run_id, 0),
                         since, sticky)
        self.workflow_task = workflow_task
        self.answer = answer
        self.handed = False

    def live(self) -> bool:
        return not self.handed and not self.answer.done()

    def settle(self) -> None:
        self.handed = True

    def abort(self) -> None:
        if not self.answer.done():
            self.answer.set_exception(Unavailable("matching stopped before a worker answered the query",
                                                  reason="MatchingStopped"))
            self.answer.exception()  # the caller may be gone: no "exception never retrieved"


class _Poll:
    __slots__ = ("future", "identity")

    def __init__(self, identity: str, future: asyncio.Future[Queued | None]) -> None:
        self.identity = identity
        self.future = future  # receives a task, or None when the poll ends empty


class _Queue:
    __slots__ = ("held", "polls", "queries", "tasks")

    def __init__(self) -> None:
        self.tasks: deque[Queued] = deque()
        self.polls: deque[_Poll] = deque()
        self.held: dict[str, deque[Queued]] = {}
        self.queries: deque[QueryItem] = deque()  # few, and short-lived

    def hand(self, item: Queued, identity: str | None) -> bool:
        """Give `item` to the longest-waiting live poll (of `identity`, if given)."""
        polls = self.polls
        while polls and polls[0].future.done():
            polls.popleft()
        for p in polls:
            if not p.future.done() and (identity is None or p.identity == identity):
                polls.remove(p)
                p.future.set_result(item)
                return True
        return False

    def take(self, identity: str) -> Queued | None:
        """The next live task for a poll of `identity`: a query for it first (a caller waits), then
        its held tasks, then the shared ones."""
        if self.queries:
            query = self._take_query(identity)
            if query is not None:
                return query
        held = self.held.get(identity)
        while held:
            item = held.popleft()
            if not held:
                del self.held[identity]
            if item.release is not None:
                item.release.cancel()
                item.release = None
            if item.live():
                return item
            held = self.held.get(identity)
        while self.tasks:
            item = self.tasks.popleft()
            if item.live():
                return item
        return None

    def _take_query(self, identity: str) -> QueryItem | None:
        for item in list(self.queries):
            if not item.live():
                self.queries.remove(item)
            elif item.sticky is None or item.sticky == identity:
                self.queries.remove(item)
                return item
        return None

    def size(self) -> int:
        return len(self.tasks) + sum(len(h) for h in self.held.values())


def _expire(waiter: asyncio.Future[Queued | None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class TaskQueues:
    """Every queue of a matching node."""

    def __init__(self, long_poll_timeout_ms: int) -> None:
        self._limit_ms = long_poll_timeout_ms
        self._queues: dict[Key, _Queue] = {}
        self.stopped = False
        self._request_prefix = uuid.uuid4().hex[:16]
        self._request_seq = itertools.count(1)
        self.queued = asyncio.Event()  # set when a task is queued for want of a poll (forwarding wakes up)

    def new_request_id(self) -> str:
        """The id history records a task started with (unique to this node's run)."""
        return f"{self._request_prefix}-{next(self._request_seq)}"

    def _queue(self, key: Key) -> _Queue:
        q = self._queues.get(key)
        if q is None:
            q = self._queues[key] = _Queue()
        return q

    # ------------------------------------------------------------ putting tasks on queues

    def offer(self, key: Key, item: Queued, front: bool = False) -> None:
        """Hand `item` to a waiting poll, else queue it (FIFO, or at the front when it goes back
        after a failed handout; a sticky one is held for its worker until its window ends)."""
        if self.stopped:
            item.abort()
            return
        loop = asyncio.get_running_loop()
        if item.sticky is not None and loop.time() >= item.sticky_until:
            item.sticky = None
        q = self._queue(key)
        if q.hand(item, item.sticky):
            return
        if item.bounce():
            return
        self.queued.set()
        if item.sticky is None:
            if front:
                q.tasks.appendleft(item)
            else:
                q.tasks.append(item)
            return
        held = q.held.setdefault(item.sticky, deque())
        if front:
            held.appendleft(item)
        else:
            held.append(item)
        item.release = loop.call_at(item.sticky_until, self._unstick, key, item)

    def offer_query(self, key: Key, item: QueryItem) -> None:
        """Hand a query to a waiting poll (of its sticky worker, if any), else keep it for the next
        one; it stays as long as it is live (`withdraw_query` when its caller stops waiting)."""
        if self.stopped:
            item.abort()
            return
        q = self._queue(key)
        if not q.hand(item, item.sticky):
            q.queries.append(item)

    def withdraw_query(self, key: Key, item: QueryItem) -> None:
        q = self._queues.get(key)
        if q is not None and item in q.queries:
            q.queries.remove(item)

    def _give_back(self, key: Key, item: Queued) -> None:
        """A task (or query) handed to a poll that was cancelled before it used it."""
        if isinstance(item, QueryItem):
            self.offer_query(key, item)
        else:
            self.offer(key, item, front=True)

    def _unstick(self, key: Key, item: Queued) -> None:
        """The sticky window of a held task ended: any poll may take it now (it is older than
        the shared tasks queued meanwhile, so it goes to the front)."""
        item.release = None
        q = self._queues.get(key)
        held = q.held.get(item.sticky) if q is not None and item.sticky is not None else None
        if held is None or item not in held:
            return
        held.remove(item)
        if not held and q is not None and item.sticky is not None:
            del q.held[item.sticky]
        item.sticky = None
        if item.live():
            self.offer(key, item, front=True)

    def hand_now(self, key: Key, item: Queued) -> bool:
        """Give `item` to a poll waiting on its queue now, or return False (nothing is queued)."""
        if self.stopped:
            return False
        q = self._queues.get(key)
        return q is not None and q.hand(item, None)

    def unpolled(self, cutoff: float, limit: int) -> list[tuple[Key, Queued]]:
        """Take (up to `limit`) tasks queued at or before loop time `cutoff` on queues that have no
        poll waiting here, to offer them to other nodes; sticky ones stay for their worker."""
        out: list[tuple[Key, Queued]] = []
        for key, q in self._queues.items():
            if not q.tasks or any(not p.future.done() for p in q.polls):
                continue
            while q.tasks and len(out) < limit and (not q.tasks[0].live() or q.tasks[0].since <= cutoff):
                item = q.tasks.popleft()
                if item.live():
                    out.append((key, item))
            if len(out) >= limit:
                break
        return out

    def waiting(self) -> int:
        """Tasks queued here, on every queue."""
        return sum(len(q.tasks) for q in self._queues.values())

    def take_waiting_since(self, cutoff: float) -> list[tuple[Key, Queued]]:
        """Remove and return the tasks queued at or before loop time `cutoff` (to park them)."""
        out: list[tuple[Key, Queued]] = []
        for key, q in self._queues.items():
            for dq in [q.tasks, *q.held.values()]:
                while dq and (not dq[0].live() or dq[0].since <= cutoff):
                    item = dq.popleft()
                    if item.release is not None:
                        item.release.cancel()
                        item.release = None
                    if item.live():
                        out.append((key, item))
            for ident in [i for i, h in q.held.items() if not h]:
                del q.held[ident]
        return out

    # ------------------------------------------------------------ polls

    async def poll(self, key: Key, req: api.PollRequest,
                   record: Callable[[api.TaskInfo, str], Awaitable[T]],
                   as_query: Callable[[QueryItem], T] | None = None) -> T | None:
        """Long-poll the queue: the next task that history records as started (`record(task,
        request_id)`) or query (`as_query(item)`: workflow polls only), or None when
        `req.timeout_ms` (capped at the long-poll timeout) passes first or matching stops."""
        loop = asyncio.get_running_loop()
        timeout_ms = min(req.timeout_ms, self._limit_ms) if req.timeout_ms > 0 else self._limit_ms
        deadline = loop.time() + timeout_ms / 1000.0
        kind = key[2].value
        while True:
            item, match = await self._next_item(key, req.identity, deadline, loop)
            if item is None:
                _POLLS(kind, "timeout").inc()
                return None
            if isinstance(item, QueryItem):
                item.settle()
                if as_query is None:  # not a workflow poll (cannot happen: queries go to those)
                    continue
                _POLLS(kind, "query").inc()
                return as_query(item)
            try:
                if not item.request_id:
                    item.request_id = self.new_request_id()
                result = await record(item.task, item.request_id)
            except (FailedPrecondition, NotFound) as e:
                log.debug("dropping stale %s task %s/%s@%d: %s", key[2].value, item.task.workflow_id,
                          item.task.run_id, item.task.scheduled_event_id, e)
                item.settle()
                continue
            except BaseException:
                # Unavailable, a transient store error, a bug, or this poll was cancelled: the task
                # was not handed out, so it goes back to the front of its queue.
                self.offer(key, item, front=True)
                raise
            item.settle()
            _POLLS(kind, "task").inc()
            _MATCHES(kind, match).inc()
            if item.task.created_ms:
                _SCHEDULE_TO_START(kind).observe(max(0.0, time.time() - item.task.created_ms / 1000))
            return result

    async def _next_item(self, key: Key, identity: str, deadline: float,
                         loop: asyncio.AbstractEventLoop) -> tuple[Queued | None, str]:
        """The next live task for this poll, waiting until `deadline`, and how it matched: "async"
        (it waited on the queue) or "sync" (handed to this poll as it came); None when the wait
        ends empty."""
        q = self._queue(key)
        while True:
            item = q.take(identity)
            if item is not None:
                return item, "async"
            if self.stopped:
                return None, ""
            remaining = deadline - loop.time()
            if remaining <= 0:
                return None, ""
            poll = _Poll(identity, loop.create_future())
            q.polls.append(poll)
            timer = loop.call_later(remaining, _expire, poll.future)
            try:
                got = await poll.future
            except BaseException:
                # Cancelled. If a task was handed to us in the meantime, give it back first.
                if poll.future.done() and not poll.future.cancelled():
                    handed = poll.future.result()
                    if handed is not None:
                        self._give_back(key, handed)
                else:
                    poll.future.cancel()
                    _discard(q.polls, poll)
                raise
            finally:
                timer.cancel()
            if got is None:
                _discard(q.polls, poll)
                return None, ""
            if got.live():
                return got, "sync"
            # withdrawn meanwhile: wait again for the rest of the time

    # ------------------------------------------------------------ lifecycle and metrics

    def stop(self) -> None:
        """End every waiting poll (it returns None) and abort every queued task."""
        self.stopped = True
        for q in self._queues.values():
            while q.polls:
                _expire(q.polls.popleft().future)
            for dq in [q.tasks, *q.held.values()]:
                while dq:
                    item = dq.popleft()
                    if item.release is not None:
                        item.release.cancel()
                    item.abort()
            q.held.clear()
            while q.queries:
                q.queries.popleft().abort()

    def gauges(self) -> Iterator[Sample]:
        """legato_matching_backlog and legato_matching_pollers, per kind and task queue."""
        for (_, task_queue, kind), q in list(self._queues.items()):
            yield "legato_matching_backlog", (kind.value, task_queue), float(q.size())
            yield "legato_matching_pollers", (kind.value, task_queue), float(
                sum(1 for p in q.polls if not p.future.done()))

    def stats(self) -> list[dict[str, object]]:
        """Each queue this node holds: its namespace, task queue, kind, backlog and waiting polls
        (the web UI's cluster page)."""
        return [{"namespace": ns, "task_queue": task_queue, "kind": kind.value, "backlog": q.size(),
                 "pollers": sum(1 for p in q.polls if not p.future.done())}
                for (ns, task_queue, kind), q in sorted(self._queues.items(), key=lambda kv: str(kv[0]))]

    def backlog(self, key: Key) -> int:
        q = self._queues.get(key)
        return q.size() if q else 0

    def pollers(self, key: Key) -> int:
        q = self._queues.get(key)
        return sum(1 for p in q.polls if not p.future.done()) if q else 0


def _discard(polls: deque[_Poll], poll: _Poll) -> None:
    try:
        polls.remove(poll)
    except ValueError:
        pass
