"""Looking at the Kafka topics of a Legato cluster: are they there (a server refuses to start
without them), and how far has each consumer group got (`legato kafka describe`).

Topics are made by `legato kafka setup` (legato.kafka.create_topics), never implicitly.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from legato.config import QueuesConfig
from legato.errors import FailedPrecondition, Unavailable
from legato.kafka import topics

log = logging.getLogger("legato.kafka")

_METADATA_RETRY_S = 0.05


def bootstrap(cfg: QueuesConfig) -> str:
    return ",".join(cfg.kafka_bootstrap)


def setup_hint(cfg: QueuesConfig) -> str:
    return f"legato kafka setup --bootstrap {bootstrap(cfg)} --prefix {cfg.topic_prefix}"


def wanted_partitions(cfg: QueuesConfig) -> dict[str, int]:
    t = topics(cfg)
    return {t.workflow_tasks: cfg.task_partitions, t.activity_tasks: cfg.task_partitions,
            t.timers: cfg.timer_partitions}


@asynccontextmanager
async def admin_client(cfg: QueuesConfig) -> AsyncIterator[AIOKafkaAdminClient]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap(cfg), request_timeout_ms=cfg.request_timeout_ms)
    try:
        await admin.start()
    except Exception as e:
        await admin.close()
        raise Unavailable(f"cannot reach Kafka at {bootstrap(cfg)}: {e}", reason="KafkaUnavailable") from e
    try:
        yield admin
    finally:
        await admin.close()


async def partition_counts(admin: AIOKafkaAdminClient, names: list[str]) -> dict[str, int]:
    """Partitions of each named topic that exists (absent ones are left out)."""
    existing = set(await admin.list_topics())
    present = [n for n in names if n in existing]
    if not present:
        return {}
    return {m["topic"]: len(m.get("partitions") or []) for m in await admin.describe_topics(present)}


async def wait_for_topics(cfg: QueuesConfig, timeout_s: float = 30.0) -> None:
    """Until every topic is visible with a leader for each partition: a topic just made (by this
    or another client) reaches the brokers' metadata a moment after CreateTopics returned."""
    wanted = wanted_partitions(cfg)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    async with admin_client(cfg) as admin:
        while True:
            if await _ready(admin, wanted):
                return
            if loop.time() >= deadline:
                raise Unavailable(f"Kafka topics of prefix {cfg.topic_prefix} are not ready at {bootstrap(cfg)} "
                                  f"after {timeout_s:.0f}s", reason="KafkaTopicsNotReady")
            await asyncio.sleep(_METADATA_RETRY_S)  # metadata has no change notification to wait on


async def _ready(admin: AIOKafkaAdminClient, wanted: dict[str, int]) -> bool:
    existing = set(await admin.list_topics())
    if not existing.issuperset(wanted):
        return False
    for meta in await admin.describe_topics(list(wanted)):
        parts = meta.get("partitions") or []
        if meta.get("error_code") or len(parts) < wanted[meta["topic"]] or any(p["leader"] < 0 for p in parts):
            return False
    return True


async def require_topics(cfg: QueuesConfig) -> None:
    """FailedPrecondition naming the setup command when a topic is missing or has another partition
    count than configured; Unavailable when Kafka cannot be reached."""
    wanted = wanted_partitions(cfg)
    async with admin_client(cfg) as admin:
        have = await partition_counts(admin, list(wanted))
    missing = [n for n in wanted if n not in have]
    if missing:
        raise FailedPrecondition(f"Kafka topics {', '.join(missing)} do not exist at {bootstrap(cfg)}; "
                                 f"create them with: {setup_hint(cfg)}", reason="KafkaTopicsMissing")
    for name, n in wanted.items():
        if have[name] != n:
            raise FailedPrecondition(f"Kafka topic {name} has {have[name]} partitions, the configuration says {n}; "
                                     "partition counts are fixed once topics exist", reason="KafkaPartitions")


@dataclass
class PartitionState:
    partition: int
    end_offset: int
    committed: dict[str, int] = field(default_factory=dict)  # consumer group -> committed offset


@dataclass
class TopicState:
    name: str
    partitions: list[PartitionState] | None  # None: the topic does not exist


async def describe(cfg: QueuesConfig) -> list[TopicState]:
    """Each topic of the cluster: its partitions' end offsets and what every consumer group of the
    prefix (`{prefix}.matching`, `{prefix}.timers.shard-N`) committed on them."""
    names = list(wanted_partitions(cfg))
    async with admin_client(cfg) as admin:
        counts = await partition_counts(admin, names)
        groups = await _groups_of_prefix(admin, cfg.topic_prefix)
        committed: dict[tuple[str, int], dict[str, int]] = {}
        for g in groups:
            for tp, meta in (await admin.list_consumer_group_offsets(g)).items():
                if meta.offset >= 0:
                    committed.setdefault((tp.topic, tp.partition), {})[g] = meta.offset
    tps = [TopicPartition(n, p) for n in names if n in counts for p in range(counts[n])]
    ends = await _end_offsets(cfg, tps) if tps else {}
    return [TopicState(n, [PartitionState(p, ends.get(TopicPartition(n, p), 0), committed.get((n, p), {}))
                           for p in range(counts[n])] if n in counts else None) for n in names]


async def _groups_of_prefix(admin: AIOKafkaAdminClient, prefix: str) -> list[str]:
    found = await admin.list_consumer_groups()
    ids = [g[0] if isinstance(g, tuple) else str(g) for g in found]
    return sorted(g for g in ids if g.startswith(prefix + "."))


async def _end_offsets(cfg: QueuesConfig, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap(cfg), enable_auto_commit=False,
                                request_timeout_ms=cfg.request_timeout_ms)
    await consumer.start()
    try:
        ends: dict[TopicPartition, int] = await consumer.end_offsets(tps)
        return ends
    finally:
        await consumer.stop()


async def delete_topics(cfg: QueuesConfig) -> None:
    """Delete the topics of the prefix that exist (tests clean up their own prefixes with it)."""
    async with admin_client(cfg) as admin:
        existing = set(await admin.list_topics())
        names = [n for n in wanted_partitions(cfg) if n in existing]
        if names:
            await admin.delete_topics(names)
