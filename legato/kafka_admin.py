"""Looking at the Kafka topics of a Legato cluster: are they there (a server refuses to start
without them), and how far has each consumer group got (`legato kafka describe`).

Topics are made by `legato kafka setup` (legato.kafka.create_topics), never implicitly.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import ConsumerGroupTopicPartitions, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec

from legato.config import QueuesConfig
from legato.errors import FailedPrecondition, Unavailable
from legato.kafka import open_admin, topic_partitions, topics
from legato.kafka_client import kafka_unavailable, run_blocking

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


def partition_counts(admin: AdminClient, cfg: QueuesConfig, names: list[str]) -> dict[str, int]:
    """Blocking: partitions of each named topic that exists (absent ones are left out)."""
    have = topic_partitions(admin, cfg)
    return {n: len(have[n]) for n in names if n in have}


async def wait_for_topics(cfg: QueuesConfig, timeout_s: float = 30.0) -> None:
    """Until every topic is visible with a leader for each partition: a topic just made (by this
    or another client) reaches the brokers' metadata a moment after CreateTopics returned."""
    await run_blocking(_wait_for_topics, cfg, timeout_s)


def _wait_for_topics(cfg: QueuesConfig, timeout_s: float) -> None:
    wanted = wanted_partitions(cfg)
    deadline = time.monotonic() + timeout_s
    admin = open_admin(cfg)
    try:
        while True:
            have = topic_partitions(admin, cfg)
            if all(n in have and len(have[n]) >= k and all(p.leader >= 0 and p.error is None for p in have[n])
                   for n, k in wanted.items()):
                return
            if time.monotonic() >= deadline:
                raise Unavailable(f"Kafka topics of prefix {cfg.topic_prefix} are not ready at {bootstrap(cfg)} "
                                  f"after {timeout_s:.0f}s", reason="KafkaTopicsNotReady")
            time.sleep(_METADATA_RETRY_S)  # metadata has no change notification to wait on
    finally:
        admin.poll(0)


async def require_topics(cfg: QueuesConfig) -> None:
    """FailedPrecondition naming the setup command when a topic is missing or has another partition
    count than configured; Unavailable when Kafka cannot be reached."""
    wanted = wanted_partitions(cfg)

    def counts() -> dict[str, int]:
        admin = open_admin(cfg)
        try:
            return partition_counts(admin, cfg, list(wanted))
        finally:
            admin.poll(0)

    have = await run_blocking(counts)
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
    return await run_blocking(_describe, cfg)


def _describe(cfg: QueuesConfig) -> list[TopicState]:
    names = list(wanted_partitions(cfg))
    timeout_s = cfg.request_timeout_ms / 1000.0
    admin = open_admin(cfg)
    try:
        counts = partition_counts(admin, cfg, names)
        committed: dict[tuple[str, int], dict[str, int]] = {}
        for g in _groups_of_prefix(admin, cfg):
            found = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(g)], request_timeout=timeout_s)
            for tp in _result(found[g], f"the offsets of consumer group {g}").topic_partitions or []:
                if tp.offset >= 0 and tp.error is None:
                    committed.setdefault((tp.topic, tp.partition), {})[g] = tp.offset
        tps = [TopicPartition(n, p) for n in names if n in counts for p in range(counts[n])]
        ends: dict[tuple[str, int], int] = {}
        if tps:
            listed = admin.list_offsets({tp: OffsetSpec.latest() for tp in tps}, request_timeout=timeout_s)
            for tp, f in listed.items():
                ends[(tp.topic, tp.partition)] = _result(f, f"the end offset of {tp.topic}[{tp.partition}]").offset
    finally:
        admin.poll(0)
    return [TopicState(n, [PartitionState(p, ends.get((n, p), 0), committed.get((n, p), {}))
                           for p in range(counts[n])] if n in counts else None) for n in names]


def _groups_of_prefix(admin: AdminClient, cfg: QueuesConfig) -> list[str]:
    listed = _result(admin.list_consumer_groups(request_timeout=cfg.request_timeout_ms / 1000.0),
                     "the consumer groups")
    return sorted(g.group_id for g in listed.valid if g.group_id.startswith(cfg.topic_prefix + "."))


def _result(f: Any, what: str) -> Any:
    try:
        return f.result()
    except KafkaException as e:
        raise kafka_unavailable(f"Kafka did not give {what}", e) from e


async def delete_topics(cfg: QueuesConfig) -> None:
    """Delete the topics of the prefix that exist (tests clean up their own prefixes with it)."""
    await run_blocking(_delete_topics, cfg)


def _delete_topics(cfg: QueuesConfig) -> None:
    admin = open_admin(cfg)
    try:
        have = topic_partitions(admin, cfg)
        names = [n for n in wanted_partitions(cfg) if n in have]
        if names:
            timeout_s = cfg.request_timeout_ms / 1000.0
            for name, f in admin.delete_topics(names, request_timeout=timeout_s, operation_timeout=timeout_s).items():
                _result(f, f"the deletion of topic {name}")
    finally:
        admin.poll(0)
