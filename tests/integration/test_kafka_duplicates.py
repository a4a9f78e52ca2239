"""Exactly-once effect with Kafka queues: the same workflows run once with every task published
once and once with every task published twice; their histories must be the same (history drops
the second copy as stale or already started), and every step recorded once.

Eager handovers are off, so every workflow and activity task travels through Kafka.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from legato.api import TaskInfo
from legato.config import Config, QueuesConfig
from legato.events import HistoryEvent
from legato.kafka import create_topics, topics
from legato.kafka_admin import delete_topics, describe, wait_for_topics
from legato.task_publisher import KafkaTaskPublisher
from matching.kafka_matching import KafkaMatching
from tests.integration.engine_harness import Harness, engine_config
from tests.integration.histories import assert_steps_recorded_once

# Differ from run to run whatever the queues do.
# (history_size_bytes counts the bytes of the others: a request id one digit longer changes it)
VOLATILE = {"first_run_id", "random_seed", "request_id", "history_size_bytes"}

WORKFLOWS: dict[str, tuple[str, Any]] = {
    "two-calls": ("eng:two_calls", {"a": "x", "b": "y"}),
    "echo": ("eng:call", {"activity": "eng:echo", "args": ["hi"]}),
    "retries": ("eng:call", {"activity": "eng:raise_kind", "args": ["CONFLICT"], "options": {
        "activity.retry_policy": {"initial_interval": "10ms", "maximum_attempts": 3}}}),
    "stop-timer": ("eng:stop_timer", None),
    "timer-wins": ("eng:after", {"timeout": "50ms"}),
    "signal": ("eng:collect", {"n": 1}),
}


def normalized(events: list[HistoryEvent]) -> list[tuple[int, str, Any]]:
    return [(e.event_id, e.event_type.value, _strip(e.attrs)) for e in events]


def _strip(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def kafka_config(queues: QueuesConfig) -> Config:
    c = engine_config()
    c.queues = queues
    c.worker.eager_tasks = False
    return c


async def run_workload(tmp: Path, queues: QueuesConfig) -> dict[str, list[tuple[int, str, Any]]]:
    async with Harness(tmp, config=kafka_config(queues), grpc=False) as h:
        for wid, (wtype, arg) in WORKFLOWS.items():
            await h.start_workflow(wtype, *([arg] if arg is not None else []), workflow_id=wid)
        await h.wait_idle("signal")
        await h.signal("signal", "n", 5)
        histories: dict[str, list[tuple[int, str, Any]]] = {}
        for wid in WORKFLOWS:
            await h.result(wid)
            events = await h.history(wid)
            assert_steps_recorded_once(events)
            histories[wid] = normalized(events)
        assert h.engine is not None
        matching = h.engine.matching
        assert isinstance(matching, KafkaMatching)
        await asyncio.wait_for(all_done(matching, queues), 10)
        return histories


async def all_done(matching: KafkaMatching, queues: QueuesConfig) -> None:
    """Until matching committed every task message (the last duplicates are dropped once a poll
    takes them)."""
    while True:
        await matching.next_round()
        ends, committed = await offsets(queues)
        if ends == committed:
            return


async def offsets(queues: QueuesConfig) -> tuple[list[int], list[int | None]]:
    """End offsets of the task partitions, and what the matching group committed on them."""
    t = topics(queues)
    ends: list[int] = []
    committed: list[int | None] = []
    for s in await describe(queues):
        if s.name in (t.workflow_tasks, t.activity_tasks):
            for p in s.partitions or []:
                ends.append(p.end_offset)
                committed.append(p.committed.get(f"{queues.topic_prefix}.matching", 0))
    return ends, committed


async def published(queues: QueuesConfig) -> int:
    return sum((await offsets(queues))[0])


@pytest.fixture
def run_dirs(tmp_path: Path) -> tuple[Path, Path]:
    (tmp_path / "clean").mkdir()
    (tmp_path / "doubled").mkdir()
    return tmp_path / "clean", tmp_path / "doubled"


@pytest.fixture
async def other_queues(kafka_queues: QueuesConfig) -> AsyncIterator[QueuesConfig]:
    """Topics of their own for the second run."""
    cfg = kafka_queues.model_copy(update={"topic_prefix": kafka_queues.topic_prefix + "-dup"})
    await create_topics(cfg)
    await wait_for_topics(cfg)
    try:
        yield cfg
    finally:
        await delete_topics(cfg)


async def test_every_task_delivered_twice_leaves_the_same_histories(
        run_dirs: tuple[Path, Path], kafka_queues: QueuesConfig, other_queues: QueuesConfig,
        monkeypatch: pytest.MonkeyPatch) -> None:
    clean = await run_workload(run_dirs[0], kafka_queues)
    once = await published(kafka_queues)

    publish = KafkaTaskPublisher.add_task

    async def twice(self: KafkaTaskPublisher, task: TaskInfo) -> None:
        await publish(self, task)
        await publish(self, task)

    monkeypatch.setattr(KafkaTaskPublisher, "add_task", twice)
    doubled = await run_workload(run_dirs[1], other_queues)
    assert await published(other_queues) == 2 * once > 0
    for wid in WORKFLOWS:
        assert doubled[wid] == clean[wid], wid
