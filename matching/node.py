"""What every matching backend shares: task polls served from `TaskQueues` after history recorded
the task as started, and the caller mailboxes. InProcessMatching and KafkaMatching add where
tasks come from (`add_task`, a Kafka consumer) and how they stop.
"""

from __future__ import annotations

import asyncio

from legato import api
from legato.config import Config
from legato.errors import DeadlineExceeded, NotFound, Unavailable
from matching.forwarding import accept_offer
from matching.mailboxes import Mailboxes
from matching.queues import Key, QueryItem, TaskQueues, task_key


class MatchingNode:
    """The `legato.api.MatchingService` methods that do not depend on the task bus."""

    def __init__(self, history: api.HistoryService, config: Config) -> None:
        self._history = history
        self._config = config
        self._queues = TaskQueues(config.matching.long_poll_timeout_ms)
        self._mailboxes = Mailboxes(config.matching)
        self._queries: dict[str, asyncio.Future[api.RespondQueryTaskCompletedRequest]] = {}  # by query id

    @property
    def _stopped(self) -> bool:
        return self._queues.stopped

    def _check_running(self) -> None:
        if self._queues.stopped:
            raise Unavailable("matching is stopped", reason="MatchingStopped")

    # ------------------------------------------------------------ task polls

    async def poll_workflow_task(self, req: api.PollRequest) -> api.WorkflowTask | None:
        self._check_running()

        async def record(task: api.TaskInfo, request_id: str) -> api.WorkflowTask:
            return await self._record_workflow_task(task, request_id, req.identity)

        return await self._queues.poll((req.namespace, req.task_queue, api.TaskKind.WORKFLOW), req, record,
                                       _query_task)

    async def poll_activity_task(self, req: api.PollRequest) -> api.ActivityTask | None:
        self._check_running()

        async def record(task: api.TaskInfo, request_id: str) -> api.ActivityTask:
            return await self._history.record_activity_task_started(task, request_id, req.identity)

        return await self._queues.poll((req.namespace, req.task_queue, api.TaskKind.ACTIVITY), req, record)

    async def offer_task(self, task: api.TaskInfo, request_id: str) -> api.OfferResult:
        """Another matching node's task for a poll waiting here (matching/forwarding.py)."""
        self._check_running()
        return await accept_offer(self._queues, task, request_id, task_key(task))

    # ------------------------------------------------------------ queries (issue 14)

    async def query_workflow(self, req: api.QueryTaskRequest) -> api.RespondQueryTaskCompletedRequest:
        """Hand the query to a workflow-task poll of its queue (of `req.sticky_identity` only, if
        set) and wait for the worker's answer up to `req.timeout_ms`. Queries are served from this
        node's memory with every backend (a Kafka topic would outlive the caller's wait)."""
        self._check_running()
        loop = asyncio.get_running_loop()
        q = req.query
        answer: asyncio.Future[api.RespondQueryTaskCompletedRequest] = loop.create_future()
        task = api.WorkflowTask(q.query_id.encode(), req.namespace, req.workflow_id, req.run_id, req.workflow_type,
                                req.task_queue, 0, 0, 0, [], query=q)
        key: Key = (req.namespace, req.task_queue, api.TaskKind.WORKFLOW)
        item = QueryItem(task, loop.time(), req.sticky_identity or None, answer)
        self._queries[q.query_id] = answer
        try:
            self._queues.offer_query(key, item)
            async with asyncio.timeout(max(req.timeout_ms, 0) / 1000.0):
                return await answer
        except TimeoutError:
            who = f"the worker {req.sticky_identity}" if req.sticky_identity else "any worker"
            raise DeadlineExceeded(
                f"no answer to the query {q.query_type} of workflow {req.workflow_id} from {who} polling task queue "
                f"{req.namespace}/{req.task_queue} within {req.timeout_ms} ms", reason="QueryTimeout") from None
        finally:
            self._queries.pop(q.query_id, None)
            if not answer.done():
                answer.cancel()
            self._queues.withdraw_query(key, item)

    async def respond_query_task_completed(self, req: api.RespondQueryTaskCompletedRequest) -> None:
        answer = self._queries.get(req.task_token.decode(errors="replace"))
        if answer is None or answer.done():
            raise NotFound("no query waits for this answer any more (its caller stopped waiting)",
                           reason="QueryNotWaiting")
        answer.set_result(req)

    @property
    def task_queues(self) -> TaskQueues:
        return self._queues

    async def _record_workflow_task(self, task: api.TaskInfo, request_id: str, identity: str) -> api.WorkflowTask:
        """History records the task started (a backend may note who got it)."""
        return await self._history.record_workflow_task_started(task, request_id, identity)

    # ------------------------------------------------------------ caller mailboxes (matching/mailboxes.py)

    async def open_mailbox(self, pid: str) -> None:
        self._mailboxes.open(pid)

    async def close_mailbox(self, pid: str) -> None:
        self._mailboxes.close(pid)

    async def deliver_message(self, pid: str, msg: api.ProcessMessage) -> bool:
        return self._mailboxes.deliver(pid, msg)

    async def poll_mailbox(self, req: api.PollMailboxRequest) -> list[api.ProcessMessage]:
        self._check_running()
        return await self._mailboxes.poll(req)

    # ------------------------------------------------------------ metrics and tests

    def backlog(self, namespace: str, task_queue: str, kind: api.TaskKind) -> int:
        """How many tasks wait on a queue."""
        key: Key = (namespace, task_queue, kind)
        return self._queues.backlog(key)

    def pollers(self, namespace: str, task_queue: str, kind: api.TaskKind) -> int:
        """How many polls wait on a queue."""
        key: Key = (namespace, task_queue, kind)
        return self._queues.pollers(key)

    def _stop_serving(self) -> None:
        """End every waiting task and mailbox poll; abort every queued task."""
        self._queues.stop()
        self._mailboxes.stop()


def _query_task(item: QueryItem) -> api.WorkflowTask:
    return item.workflow_task
