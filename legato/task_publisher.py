"""History's task sink with Kafka queues (docs/queues.md, "History publishes").

`add_task` returns only once the broker acknowledged the message (idempotent producer,
`acks=all`): the shard's transfer processor marks a transfer task done only then, so its ack
level never passes a task that Kafka does not have. Workflow tasks are keyed by workflow id (all
tasks of one workflow land in one partition, where the matching node that ran its last task
prefers the same worker); activity tasks have no key and spread over the partitions.

Matching uses the same publisher to park a task nobody polls (re-publish it to the end of its own
partition).
"""

from __future__ import annotations

import asyncio
import logging

from legato.api import TaskInfo, TaskKind
from legato.config import QueuesConfig
from legato.errors import Unavailable
from legato.kafka import encode_task, make_producer, topics
from legato.kafka_admin import require_topics
from legato.kafka_client import AsyncProducer

log = logging.getLogger("legato.kafka")


class KafkaTaskPublisher:
    """Publishes workflow and activity tasks; `start()` before use, `stop()` after."""

    def __init__(self, cfg: QueuesConfig) -> None:
        self._cfg = cfg
        self._topics = topics(cfg)
        self._producer: AsyncProducer | None = None
        self._replacing = asyncio.Lock()

    async def start(self) -> None:
        producer = make_producer(self._cfg, "task-publisher")
        await producer.start()  # Unavailable: cannot reach Kafka
        self._producer = producer

    async def stop(self) -> None:
        """Flush what is being sent, then close."""
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()

    async def _replace(self) -> None:
        """librdkafka declared the producer broken (a fatal error): start another one."""
        async with self._replacing:
            broken = self._producer
            if broken is None or not broken.broken:
                return  # stopped, or replaced meanwhile
            log.warning("replacing the Kafka task publisher's producer after a fatal error")
            await self.start()
            await broken.stop()

    async def unreachable(self) -> str | None:
        """Readiness: None when Kafka answers, else why not."""
        producer = self._producer
        return await producer.unreachable() if producer is not None else "the Kafka task publisher is stopped"

    async def add_task(self, task: TaskInfo) -> None:
        """Return once the broker has the task (the api.TaskSink contract)."""
        await self._send(task, None)

    async def republish(self, task: TaskInfo, partition: int) -> None:
        """Append the task again at the end of `partition` (its own: keys stay where they were)."""
        await self._send(task, partition)

    async def _send(self, task: TaskInfo, partition: int | None) -> None:
        if self._producer is not None and self._producer.broken:
            await self._replace()
        producer = self._producer
        if producer is None:
            raise Unavailable("the Kafka task publisher is not running", reason="KafkaPublisherStopped")
        key = task.workflow_id.encode() if task.kind == TaskKind.WORKFLOW else None
        try:
            await producer.send_and_wait(self._topics.for_kind(task.kind), encode_task(task), key=key,
                                         partition=partition)
        except Unavailable as e:
            raise Unavailable(f"Kafka did not take the {task.kind.value} task of {task.workflow_id}: {e.message}",
                              reason=e.reason) from e


async def open_task_publisher(cfg: QueuesConfig) -> KafkaTaskPublisher:
    """A started publisher, after checking that `legato kafka setup` made the topics."""
    await require_topics(cfg)
    publisher = KafkaTaskPublisher(cfg)
    await publisher.start()
    return publisher
