"""What every matching backend shares: task polls served from `TaskQueues` after history recorded
the task as started, and the caller mailboxes. InProcessMatching and KafkaMatching add where
tasks come from (`add_task`, a Kafka consumer) and how they stop.
"""

from __future__ import annotations

from legato import api
from legato.config import Config
from legato.errors import Unavailable
from matching.forwarding import accept_offer
from matching.mailboxes import Mailboxes
from matching.queues import Key, TaskQueues, task_key


class MatchingNode:
    """The `legato.api.MatchingService` methods that do not depend on the task bus."""

    def __init__(self, history: api.HistoryService, config: Config) -> None:
        self._history = history
        self._config = config
        self._queues = TaskQueues(config.matching.long_poll_timeout_ms)
        self._mailboxes = Mailboxes(config.matching)

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

        return await self._queues.poll((req.namespace, req.task_queue, api.TaskKind.WORKFLOW), req, record)

    async def poll_activity_task(self, req: api.PollRequest) -> api.ActivityTask | None:
        self._check_running()

        async def record(task: api.TaskInfo, request_id: str) -> api.ActivityTask:
            return await self._history.record_activity_task_started(task, request_id, req.identity)

        return await self._queues.poll((req.namespace, req.task_queue, api.TaskKind.ACTIVITY), req, record)

    async def offer_task(self, task: api.TaskInfo, request_id: str) -> api.OfferResult:
        """Another matching node's task for a poll waiting here (matching/forwarding.py)."""
        self._check_running()
        return await accept_offer(self._queues, task, request_id, task_key(task))

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
