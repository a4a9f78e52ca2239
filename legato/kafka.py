"""Kafka plumbing shared by history and matching (docs/queues.md): topic names, the topics
`legato kafka setup` makes, producer/consumer settings for a system that must not lose work, and
the message formats.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from legato import codec
from legato.api import TaskInfo, TaskKind
from legato.config import QueuesConfig
from legato.errors import FailedPrecondition, Unavailable


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


async def create_topics(cfg: QueuesConfig) -> list[str]:
    """Make the topics that do not exist yet (idempotent); return the names made. A topic that
    exists with fewer partitions than configured is refused (keys would move between partitions)."""
    t = topics(cfg)
    wanted = {t.workflow_tasks: cfg.task_partitions, t.activity_tasks: cfg.task_partitions,
              t.timers: cfg.timer_partitions}
    admin = AIOKafkaAdminClient(bootstrap_servers=_bootstrap(cfg), request_timeout_ms=cfg.request_timeout_ms)
    try:
        await admin.start()
    except Exception as e:
        raise Unavailable(f"cannot reach Kafka at {_bootstrap(cfg)}: {e}", reason="KafkaUnavailable") from e
    try:
        existing = set(await admin.list_topics())
        made = [name for name in wanted if name not in existing]
        if made:
            try:
                await admin.create_topics([NewTopic(n, wanted[n], cfg.replication_factor) for n in made])
            except TopicAlreadyExistsError:
                pass  # made by someone else in the meantime
        await _check_partitions(admin, wanted)
        return made
    finally:
        await admin.close()


async def _check_partitions(admin: AIOKafkaAdminClient, wanted: dict[str, int]) -> None:
    for meta in await admin.describe_topics(list(wanted)):
        name, have = meta["topic"], len(meta.get("partitions") or [])
        if have and have != wanted[name]:
            raise FailedPrecondition(f"Kafka topic {name} has {have} partitions, the configuration says "
                                     f"{wanted[name]}; partition counts are fixed once topics exist")


def make_producer(cfg: QueuesConfig) -> AIOKafkaProducer:
    """Idempotent, acks from every in-sync replica: an acknowledged message is not lost."""
    return AIOKafkaProducer(bootstrap_servers=_bootstrap(cfg), enable_idempotence=True, acks="all",
                            linger_ms=cfg.producer_linger_ms, request_timeout_ms=cfg.request_timeout_ms)


def make_consumer(cfg: QueuesConfig, group_id: str) -> AIOKafkaConsumer:
    """Manual commits only (after the effect is durable); partitions are assigned by the caller."""
    return AIOKafkaConsumer(bootstrap_servers=_bootstrap(cfg), group_id=group_id, enable_auto_commit=False,
                            auto_offset_reset="earliest", isolation_level="read_committed")


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
