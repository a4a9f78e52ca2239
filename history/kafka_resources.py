"""The Kafka clients one history node shares among its shards (queues.kind: kafka).

One idempotent producer serves every shard: a producer per shard would multiply connections and
idempotence sessions for nothing, and batching across shards is what keeps publishing cheap.
Consumers are not shared: each shard's timer queue has its own consumer group (docs/queues.md);
the process's consumers share one reading thread (legato/kafka_client.py).
"""

from __future__ import annotations

import asyncio
import logging

from legato.config import QueuesConfig
from legato.kafka import make_producer
from legato.kafka_client import AsyncProducer

log = logging.getLogger("legato.history")


class KafkaResources:
    """Made from config by HistoryServiceImpl (the server only passes config); started lazily by
    the first user, closed by the service's stop."""

    def __init__(self, cfg: QueuesConfig) -> None:
        self.cfg = cfg
        self._producer: AsyncProducer | None = None  # once started
        self._lock = asyncio.Lock()

    async def producer(self) -> AsyncProducer:
        """The started producer (started on first use; a failed start is retried by the next use,
        and a producer librdkafka declared broken is replaced)."""
        async with self._lock:
            if self._producer is not None and self._producer.broken:
                log.warning("replacing the history's Kafka producer after a fatal error")
                broken, self._producer = self._producer, None
                await broken.stop()
            if self._producer is None:
                p = make_producer(self.cfg, "history-producer")
                await p.start()
                self._producer = p
            return self._producer

    async def send(self, topic: str, partition: int, key: bytes, value: bytes) -> int:
        """Publish one message; return its offset once every in-sync replica has it (acks=all)."""
        producer = await self.producer()
        return await producer.send_and_wait(topic, value, key=key, partition=partition)

    async def close(self) -> None:
        async with self._lock:
            p, self._producer = self._producer, None
        if p is not None:
            await p.stop()
