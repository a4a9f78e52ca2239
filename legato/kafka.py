"""Kafka plumbing shared by history and matching (docs/queues.md): topic names, the topics
`legato kafka setup` makes, producer/consumer settings for a system that must not lose work, and
the message formats.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from legato import codec, kafka_lag
from legato.api import TaskInfo, TaskKind
from legato.config import QueuesConfig
from legato.errors import FailedPrecondition
from legato.kafka_client import AsyncProducer, ClientErrors, client_config, kafka_unavailable, probe, run_blocking


@dataclass(frozen=True, slots=True)
class Topics:
    workflow_tasks: str
    activity_tasks: str
    timers: str

    def for_kind(self, kind: TaskKind) -> str:
        return self.workflow_tasks if kind == TaskKind.WORKFLOW else self.activity_tasks


def topics(cfg: QueuesConfig) -> Topics:
    p = cfg.topic_prefix
    return Topics(f"{p}.workflow-tasks", f"{p}.activity-tasks", f"{p}.timers")


def _bootstrap(cfg: QueuesConfig) -> str:
    return ",".join(cfg.kafka_bootstrap)


def base_config(cfg: QueuesConfig) -> dict[str, Any]:
    """Brokers, request timeout, no implicit topic creation, librdkafka's logs into Python's."""
    return client_config(_bootstrap(cfg), cfg.request_timeout_ms)


# ---------------------------------------------------------------- admin (blocking: run_blocking)

def open_admin(cfg: QueuesConfig) -> AdminClient:
    """Blocking: an admin client that reached the cluster (Unavailable otherwise)."""
    errors = ClientErrors("admin")
    conf: dict[str, Any] = {**base_config(cfg), "error_cb": errors}
    admin = AdminClient(conf)
    probe(admin, _bootstrap(cfg), cfg.request_timeout_ms / 1000.0, errors)
    return admin


def topic_partitions(admin: AdminClient, cfg: QueuesConfig) -> dict[str, list[Any]]:
    """Blocking: the partitions (PartitionMetadata) of every topic of the cluster."""
    try:
        meta = admin.list_topics(timeout=cfg.request_timeout_ms / 1000.0)
    except KafkaException as e:
        raise kafka_unavailable(f"Kafka at {_bootstrap(cfg)} did not list its topics", e) from e
    return {name: [t.partitions[p] for p in sorted(t.partitions)] for name, t in meta.topics.items()
            if t.error is None}


def _create_topics(cfg: QueuesConfig) -> list[str]:
    t = topics(cfg)
    wanted = {t.workflow_tasks: cfg.task_partitions, t.activity_tasks: cfg.task_partitions,
              t.timers: cfg.timer_partitions}
    admin = open_admin(cfg)
    try:
        made = [name for name in wanted if name not in topic_partitions(admin, cfg)]
        if made:
            timeout_s = cfg.request_timeout_ms / 1000.0
            futures = admin.create_topics([NewTopic(n, wanted[n], cfg.replication_factor) for n in made],
                                          request_timeout=timeout_s, operation_timeout=timeout_s)
            for name, f in futures.items():
                try:
                    f.result()
                except KafkaException as e:
                    if e.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:  # else: made by someone else meanwhile
                        raise kafka_unavailable(f"Kafka did not create topic {name}", e) from e
        have = topic_partitions(admin, cfg)
        for name, n in wanted.items():
            if name in have and have[name] and len(have[name]) != n:
                raise FailedPrecondition(f"Kafka topic {name} has {len(have[name])} partitions, the configuration "
                                         f"says {n}; partition counts are fixed once topics exist")
        return made
    finally:
        admin.poll(0)  # the last log lines


async def create_topics(cfg: QueuesConfig) -> list[str]:
    """Make the topics that do not exist yet (idempotent); return the names made. A topic that
    exists with another partition count than configured is refused (keys would move between
    partitions)."""
    return await run_blocking(_create_topics, cfg)


# ---------------------------------------------------------------- clients

def producer_config(cfg: QueuesConfig) -> dict[str, Any]:
    """Idempotent, acks from every in-sync replica: an acknowledged message is not lost. Keyed
    messages are partitioned like Kafka's Java client (murmur2), keyless ones each at random (no
    sticky batching: activity tasks spread); a send fails after the request timeout."""
    return {**base_config(cfg), "enable.idempotence": True, "acks": "all", "linger.ms": cfg.producer_linger_ms,
            "request.timeout.ms": cfg.request_timeout_ms,
            "message.timeout.ms": max(cfg.request_timeout_ms, cfg.producer_linger_ms + 1),
            "partitioner": "murmur2_random", "sticky.partitioning.linger.ms": 0}


def make_producer(cfg: QueuesConfig, name: str = "producer") -> AsyncProducer:
    return AsyncProducer(producer_config(cfg), name)


def consumer_config(cfg: QueuesConfig, group_id: str) -> dict[str, Any]:
    """Manual commits only (after the effect is durable), from the start of a partition the group
    never committed on, and only committed transactions' messages."""
    return {**base_config(cfg), "group.id": group_id, "client.id": group_id, "enable.auto.commit": False,
            "enable.auto.offset.store": False, "auto.offset.reset": "earliest",
            "isolation.level": "read_committed", "enable.partition.eof": False,
            "statistics.interval.ms": cfg.statistics_interval_ms, "stats_cb": kafka_lag.on_stats}


# ---------------------------------------------------------------- messages

def encode_task(task: TaskInfo) -> bytes:
    return codec.dumps(task.to_dict()).encode()


def decode_task(raw: bytes) -> TaskInfo:
    return TaskInfo.from_dict(codec.loads(raw))


@dataclass(frozen=True, slots=True)
class TimerMessage:
    shard_id: int
    fire_time_ms: int
    task_id: int
    data: dict[str, Any]


def encode_timer(t: TimerMessage) -> bytes:
    return codec.dumps({"shard": t.shard_id, "fire_ms": t.fire_time_ms, "task_id": t.task_id,
                        "data": t.data}).encode()


def decode_timer(raw: bytes) -> TimerMessage:
    d = codec.loads(raw)
    return TimerMessage(int(d["shard"]), int(d["fire_ms"]), int(d["task_id"]), dict(d["data"]))


def timer_partition(cfg: QueuesConfig, shard_id: int) -> int:
    return shard_id % cfg.timer_partitions
