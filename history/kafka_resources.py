"""The Kafka clients one history node shares among its shards (queues.kind: kafka).

One idempotent producer serves every shard: a producer per shard would multiply connections and
idempotence sessions for nothing, and batching across shards is what keeps publishing cheap.
Consumers are not shared: each shard's timer queue has its own consumer group (docs/queues.md).
"""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaProducer

from legato.config import QueuesConfig
from legato.kafka import make_producer


class KafkaResources:
    """Made from config by HistoryServiceImpl (the server only passes config); started lazily by
    the first user, closed by the service's stop."""

    def __init__(self, cfg: QueuesConfig) -> None:
        self.cfg = cfg
        self._producer: AIOKafkaProducer | None = None  # once started
        self._lock = asyncio.Lock()

    async def producer(self) -> AIOKafkaProducer:
        """The started producer (started on first use; a failed start is retried by the next use)."""
        async with self._lock:
            if self._producer is None:
                p = make_producer(self.cfg)
                try:
                    await p.start()
                except BaseException:
                    await p.stop()
                    raise
                self._producer = p
            return self._producer

    async def send(self, topic: str, partition: int, key: bytes, value: bytes) -> int:
        """Publish one message; return its offset once every in-sync replica has it (acks=all)."""
        producer = await self.producer()
        fut = await producer.send(topic, value, key=key, partition=partition)
        meta = await fut
        return int(meta.offset)

    async def close(self) -> None:
        async with self._lock:
            p, self._producer = self._producer, None
        if p is not None:
            await p.stop()
