"""KafkaMatching and KafkaTaskPublisher against the real Kafka broker of the test run (topics of
each test's own): handout only after history recorded the task, stale tasks dropped, offsets
committed only below the oldest task not done, restart from the committed offsets, independent
queues on one partition, parking, the sticky worker preference, the static partition assignment;
and the group mode: matching nodes sharing the partitions, which move when a node stops or dies
(a SIGKILLed process) and come back when one joins."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Protocol

import pytest
from confluent_kafka import TopicPartition

from legato import api
from legato.aio import wait_any
from legato.config import Config, QueuesConfig
from legato.errors import FailedPrecondition
from legato.kafka import topics
from legato.kafka_admin import describe
from legato.task_publisher import KafkaTaskPublisher
from matching.kafka_matching import KafkaMatching
from tests.unit.matching.fakes import FakeHistory, raiser

WF = api.TaskKind.WORKFLOW
ACT = api.TaskKind.ACTIVITY
WAIT_S = 10.0  # safety net of every wait


def task(n: int, queue: str = "q", kind: api.TaskKind = WF, wf: str = "") -> api.TaskInfo:
    return api.TaskInfo(kind, "default", queue, wf or f"wf-{n}", f"run-{n}", scheduled_event_id=n)


def poll(queue: str = "q", identity: str = "w1", timeout_ms: int = int(WAIT_S * 1000)) -> api.PollRequest:
    return api.PollRequest(task_queue=queue, identity=identity, timeout_ms=timeout_ms)


@pytest.fixture
async def publisher(kafka_queues: QueuesConfig) -> AsyncIterator[KafkaTaskPublisher]:
    p = KafkaTaskPublisher(kafka_queues)
    await p.start()
    yield p
    await p.stop()


@pytest.fixture
def history() -> FakeHistory:
    return FakeHistory()


@asynccontextmanager
async def running(cfg: QueuesConfig, history: FakeHistory, publisher: KafkaTaskPublisher,
                  **changes: Any) -> AsyncIterator[KafkaMatching]:
    m = KafkaMatching(history, Config(queues=cfg.model_copy(update=changes)), publisher)  # type: ignore[arg-type]
    await m.start()
    try:
        yield m
    finally:
        await m.stop()


def wf_partition(cfg: QueuesConfig, p: int = 0) -> TopicPartition:
    return TopicPartition(topics(cfg).workflow_tasks, p)


async def committed_at_least(m: KafkaMatching, tp: TopicPartition, offset: int) -> int:
    async def wait() -> int:
        while True:
            at = (await m.next_round()).get(tp, -1)
            if at >= offset:
                return at
    return await asyncio.wait_for(wait(), WAIT_S)


async def on_broker(cfg: QueuesConfig, tp: TopicPartition) -> tuple[int, int | None]:
    """(end offset, offset the matching group committed) of a partition, as the broker has them."""
    states = {s.name: s for s in await describe(cfg)}
    parts = states[tp.topic].partitions
    assert parts is not None
    p = parts[tp.partition]
    return p.end_offset, p.committed.get(f"{cfg.topic_prefix}.matching")


async def publish(publisher: KafkaTaskPublisher, *tasks: api.TaskInfo, partition: int = 0) -> None:
    for t in tasks:
        await publisher.republish(t, partition)


# ---------------------------------------------------------------- handout

async def test_task_is_handed_out_only_after_history_recorded_it(
        kafka_queues: QueuesConfig, history: FakeHistory, publisher: KafkaTaskPublisher) -> None:
    recording, release = asyncio.Event(), asyncio.Event()

    async def hold() -> None:
        recording.set()
        await release.wait()

    history.behaviour["wf-1"] = hold
    tp = wf_partition(kafka_queues)
    async with running(kafka_queues, history, publisher) as m:
        await publish(publisher, task(1))
        p = asyncio.ensure_future(m.poll_workflow_task(poll()))
        await asyncio.wait_for(recording.wait(), WAIT_S)
        assert (await m.next_round()).get(tp) == 0  # being recorded: not done, not committed past
        assert not p.done() and m.outstanding() == 1
        release.set()
        got = await p
        assert got is not None and got.workflow_id == "wf-1"
        assert await committed_at_least(m, tp, 1) == 1
    assert await on_broker(kafka_queues, tp) == (1, 1)


async def test_stale_task_is_dropped_and_counted_done(
        kafka_queues: QueuesConfig, history: FakeHistory, publisher: KafkaTaskPublisher) -> None:
    history.behaviour["wf-1"] = raiser(FailedPrecondition("workflow task already started"))
    tp = wf_partition(kafka_queues)
    async with running(kafka_queues, history, publisher) as m:
        await publish(publisher, task(1), task(2))
        got = await m.poll_workflow_task(poll())
        assert got is not None and got.workflow_id == "wf-2"
        assert await committed_at_least(m, tp, 2) == 2
        assert m.outstanding() == 0
    assert [c[1] for c in history.calls] == ["wf-1", "wf-2"]


async def test_add_task_returns_once_the_broker_has_it(
        kafka_queues: QueuesConfig, history: FakeHistory, publisher: KafkaTaskPublisher) -> None:
    async with running(kafka_queues, history, publisher) as m:
        await m.add_task(task(1))
        total = sum(p.end_offset for s in await describe(kafka_queues) if s.name == topics(kafka_queues).workflow_tasks
                    for p in s.partitions or [])
        assert total == 1
        got = await m.poll_workflow_task(poll())
        assert got is not None and got.workflow_id == "wf-1"


async def test_workflow_tasks_keep_to_one_partition_activity_tasks_spread(
        kafka_queues: QueuesConfig, publisher: KafkaTaskPublisher) -> None:
    for n in range(20):
        await publisher.add_task(task(n, wf="same-workflow"))
    await asyncio.gather(*(publisher.add_task(task(n, kind=ACT)) for n in range(40)))
    states = {s.name: s for s in await describe(kafka_queues)}
    wf_ends = [p.end_offset for p in states[topics(kafka_queues).workflow_tasks].partitions or []]
    act_ends = [p.end_offset for p in states[topics(kafka_queues).activity_tasks].partitions or []]
    assert sorted(wf_ends) == [0] * (len(wf_ends) - 1) + [20]
    assert sum(act_ends) == 40 and sum(1 for e in act_ends if e) > 1


# ---------------------------------------------------------------- offsets

async def test_offsets_stay_below_the_oldest_task_not_done_and_queues_do_not_block_each_other(
        kafka_queues: QueuesConfig, history: FakeHistory, publisher: KafkaTaskPublisher) -> None:
    tp = wf_partition(kafka_queues)
    async with running(kafka_queues, history, publisher) as m:
        await publish(publisher, task(0, queue="idle"), task(1, queue="busy"), task(2, queue="busy"))
        got = [await m.poll_workflow_task(poll("busy")) for _ in range(2)]
        assert [g.workflow_id for g in got if g] == ["wf-1", "wf-2"]  # behind an unpolled task, same partition
        await m.next_round()
        assert (await m.next_round())[tp] == 0
        assert await on_broker(kafka_queues, tp) == (3, 0)
        got_idle = await m.poll_workflow_task(poll("idle"))
        assert got_idle is not None and got_idle.workflow_id == "wf-0"
        assert await committed_at_least(m, tp, 3) == 3
    assert await on_broker(kafka_queues, tp) == (3, 3)


async def test_restart_resumes_from_the_committed_offsets_and_redelivers_what_was_not_done(
        kafka_queues: QueuesConfig, history: FakeHistory, publisher: KafkaTaskPublisher) -> None:
    tp = wf_partition(kafka_queues)
    async with running(kafka_queues, history, publisher) as m:
        await publish(publisher, task(0, queue="busy"), task(1, queue="idle"), task(2, queue="busy"),
                      task(3, queue="busy"))
        got = [await m.poll_workflow_task(poll("busy")) for _ in range(2)]
        assert [g.workflow_id for g in got if g] == ["wf-0", "wf-2"]
        # wf-1 waits unpolled, wf-3 is queued: neither is done when matching stops
    assert await on_broker(kafka_queues, tp) == (4, 1)
    history.behaviour["wf-2"] = raiser(FailedPrecondition("workflow task already started"))
    async with running(kafka_queues, history, publisher) as m:
        got_idle = await m.poll_workflow_task(poll("idle"))
        got_busy = await m.poll_workflow_task(poll("busy"))
        assert got_idle is not None and got_idle.workflow_id == "wf-1"
        assert got_busy is not None and got_busy.workflow_id == "wf-3"  # wf-2 again: stale, dropped
        assert await committed_at_least(m, tp, 4) == 4
    # wf-0 (below the committed offset) was not read again; wf-2 was, and history refused it
    assert [c[1] for c in history.calls] == ["wf-0", "wf-2", "wf-1", "wf-2", "wf-3"]


# ---------------------------------------------------------------- parking

async def test_a_task_nobody_polls_is_parked_and_commits_move_on(
        kafka_queues: QueuesConfig, history: FakeHistory, publisher: KafkaTaskPublisher) -> None:
    tp = wf_partition(kafka_queues)
    async with running(kafka_queues, history, publisher, park_after_ms=300) as m:
        await publish(publisher, task(0, queue="idle"), task(1, queue="busy"))
        got = await m.poll_workflow_task(poll("busy"))
        assert got is not None and got.workflow_id == "wf-1"
        # parked: re-published at offset 2 and counted done, so the commit passes offsets 0 and 1
        assert await committed_at_least(m, tp, 2) >= 2
        end, _ = await on_broker(kafka_queues, tp)
        assert end >= 3
        assert m.backlog("default", "idle", WF) <= 1  # the re-published copy, read again
        got_idle = await m.poll_workflow_task(poll("idle"))
        assert got_idle is not None and got_idle.workflow_id == "wf-0"
        await m.next_round()
        end, committed = await on_broker(kafka_queues, tp)
        assert committed == end and m.outstanding() == 0
    assert [c[1] for c in history.calls] == ["wf-1", "wf-0"]  # parking never asked history


# ---------------------------------------------------------------- sticky workers

async def test_workflow_tasks_prefer_the_previous_worker_then_fall_back(
        kafka_queues: QueuesConfig, history: FakeHistory, publisher: KafkaTaskPublisher) -> None:
    loop = asyncio.get_running_loop()
    async with running(kafka_queues, history, publisher, sticky_wait_ms=400) as m:
        await publish(publisher, task(1, wf="wf-s"))
        first = await m.poll_workflow_task(poll(identity="w1"))
        assert first is not None and first.workflow_id == "wf-s"
        other = asyncio.ensure_future(m.poll_workflow_task(poll(identity="w2")))  # waiting before the task comes
        await publish(publisher, task(2, wf="wf-s"))
        second = await m.poll_workflow_task(poll(identity="w1"))
        assert second is not None and second.started_event_id == 3  # the previous worker got it ...
        assert not other.done()  # ... although w2 was waiting longer
        t0 = loop.time()
        await publish(publisher, task(3, wf="wf-s"))
        third = await other  # w1 does not poll: w2 gets it once the sticky window is over
        assert third is not None and third.started_event_id == 4
        assert loop.time() - t0 >= 0.4
        # a workflow that no worker ran yet is not held back
        await publish(publisher, task(4, wf="wf-new"))
        t1 = loop.time()
        fourth = await m.poll_workflow_task(poll(identity="w2"))
        assert fourth is not None and fourth.workflow_id == "wf-new" and loop.time() - t1 < 0.4
    assert [(c[1], c[2]) for c in history.calls] == [("wf-s", "w1"), ("wf-s", "w1"), ("wf-s", "w2"),
                                                     ("wf-new", "w2")]


# ---------------------------------------------------------------- assignment and lifecycle

async def test_only_the_assigned_partitions_are_consumed(
        kafka_queues: QueuesConfig, history: FakeHistory, publisher: KafkaTaskPublisher) -> None:
    async with running(kafka_queues, history, publisher, matching_partitions=[1]) as m:
        assert {tp.partition for tp in m.assignment()} == {1}
        await publish(publisher, task(0), partition=0)
        await publish(publisher, task(1), partition=1)
        got = await m.poll_workflow_task(poll())
        assert got is not None and got.workflow_id == "wf-1"
        assert await m.poll_workflow_task(poll(timeout_ms=300)) is None
    with pytest.raises(FailedPrecondition, match="matching_partitions"):
        async with running(kafka_queues, history, publisher, matching_partitions=[0, 9]):
            pass


async def test_stop_ends_waiting_polls(
        kafka_queues: QueuesConfig, history: FakeHistory, publisher: KafkaTaskPublisher) -> None:
    async with running(kafka_queues, history, publisher) as m:
        p = asyncio.ensure_future(m.poll_activity_task(poll()))
        await m.next_round()
    assert await asyncio.wait_for(p, WAIT_S) is None



async def test_reading_pauses_while_too_many_tasks_wait_in_memory(
        kafka_queues: QueuesConfig, history: FakeHistory, publisher: KafkaTaskPublisher) -> None:
    async with running(kafka_queues, history, publisher, matching_max_buffered=3) as m:
        await publish(publisher, *(task(n, queue="idle") for n in range(6)))

        async def backlog_reaches(n: int) -> None:
            while m.backlog("default", "idle", WF) < n:
                await m.next_round()

        await asyncio.wait_for(backlog_reaches(3), WAIT_S)
        for _ in range(3):  # reads stay paused round after round
            await m.next_round()
            assert m.backlog("default", "idle", WF) == 3 and m.outstanding() == 3
        got = [await m.poll_workflow_task(poll("idle")) for _ in range(6)]  # handouts make room
        assert [g.workflow_id for g in got if g] == [f"wf-{n}" for n in range(6)]


# ---------------------------------------------------------------- group mode: several matching nodes

SESSION_MS = 1500  # short, so that a dead member's partitions move quickly (the broker allows >= 1000)


class Node(Protocol):
    def assignment_changed(self) -> Coroutine[Any, Any, bool]: ...


def all_partitions(cfg: QueuesConfig) -> set[TopicPartition]:
    t = topics(cfg)
    return {TopicPartition(name, p) for name in (t.workflow_tasks, t.activity_tasks)
            for p in range(cfg.task_partitions)}


def assigned(m: KafkaMatching) -> set[TopicPartition]:
    return set(m.assignment())


async def until(cond: Callable[[], bool], *nodes: Node, timeout_s: float = WAIT_S) -> None:
    """Until `cond()` holds, looking again whenever a node's partitions change."""
    async def wait() -> None:
        while not cond():
            await wait_any(*(n.assignment_changed() for n in nodes))
    await asyncio.wait_for(wait(), timeout_s)


def split_between(cfg: QueuesConfig, *partitions: set[TopicPartition]) -> bool:
    """Each has some, together all, none twice."""
    union = set().union(*partitions)
    return all(partitions) and union == all_partitions(cfg) and sum(map(len, partitions)) == len(union)


def one_per_partition(cfg: QueuesConfig, queue: str, rounds: int = 1) -> list[tuple[api.TaskInfo, int]]:
    """Tasks (and the partition each goes to): `rounds` on every partition of both task topics."""
    kinds = (WF, ACT)
    return [(task(100 * r + 10 * k + p, queue=queue, kind=kinds[k]), p)
            for r in range(rounds) for k in range(2) for p in range(cfg.task_partitions)]


async def take_all(nodes: list[KafkaMatching], queue: str, n: int) -> list[tuple[int, str]]:
    """Poll workflow and activity tasks of `queue` on every node at once until `n` were handed
    out; (node index, workflow id) of each."""
    got: list[tuple[int, str]] = []
    enough = asyncio.Event()

    async def poller(i: int, m: KafkaMatching, kind: api.TaskKind) -> None:
        while not enough.is_set():
            req = poll(queue, identity=f"w{i}", timeout_ms=200)
            t = await (m.poll_workflow_task(req) if kind == WF else m.poll_activity_task(req))
            if t is not None:
                got.append((i, t.workflow_id))
                if len(got) >= n:
                    enough.set()

    pollers = [asyncio.ensure_future(poller(i, m, k)) for i, m in enumerate(nodes) for k in (WF, ACT)]
    try:
        await asyncio.wait_for(enough.wait(), WAIT_S)
    finally:
        enough.set()
        await asyncio.gather(*pollers)
    return got


async def all_committed(cfg: QueuesConfig, *nodes: KafkaMatching) -> None:
    """Until the group committed the end of every task partition."""
    async def wait() -> None:
        while True:
            await asyncio.gather(*(m.next_round() for m in nodes))
            states = {s.name: s for s in await describe(cfg)}
            parts = [p for name in (topics(cfg).workflow_tasks, topics(cfg).activity_tasks)
                     for p in states[name].partitions or []]
            if all(p.committed.get(f"{cfg.topic_prefix}.matching", 0) == p.end_offset for p in parts):
                return
    await asyncio.wait_for(wait(), WAIT_S)


async def read_by(nodes: list[KafkaMatching], n: int) -> None:
    """Until the nodes together read `n` tasks that are not done."""
    async def wait() -> None:
        while sum(m.outstanding() for m in nodes) < n:
            await asyncio.gather(*(m.next_round() for m in nodes))
    await asyncio.wait_for(wait(), WAIT_S)


async def test_group_members_split_the_partitions_and_hand_each_task_out_once(
        kafka_queues: QueuesConfig, history: FakeHistory, publisher: KafkaTaskPublisher) -> None:
    cfg = kafka_queues.model_copy(update={"matching_session_timeout_ms": SESSION_MS})
    async with running(cfg, history, publisher) as m1:
        await until(lambda: assigned(m1) == all_partitions(cfg), m1)  # alone: all of them
        async with running(cfg, history, publisher) as m2:
            await until(lambda: split_between(cfg, assigned(m1), assigned(m2)), m1, m2)
            tasks = [task(n, wf=f"wf-{n}") for n in range(24)] + [task(n, kind=ACT) for n in range(24, 48)]
            await asyncio.gather(*(publisher.add_task(t) for t in tasks))
            got = await take_all([m1, m2], "q", len(tasks))
            assert sorted(wf for _, wf in got) == sorted(t.workflow_id for t in tasks)  # each exactly once
            assert {i for i, _ in got} == {0, 1}  # both nodes handed out tasks of their partitions
            assert split_between(cfg, assigned(m1), assigned(m2))  # no rebalance meanwhile
            await all_committed(cfg, m1, m2)
        # m2 left: its partitions come back to m1, and they come back to a node that joins
        await until(lambda: assigned(m1) == all_partitions(cfg), m1)
        async with running(cfg, history, publisher) as m3:
            await until(lambda: split_between(cfg, assigned(m1), assigned(m3)), m1, m3)
    assert len(history.calls) == len(tasks)  # nothing was recorded twice


async def test_a_stopped_members_partitions_and_queued_tasks_move_to_the_other(
        kafka_queues: QueuesConfig, history: FakeHistory, publisher: KafkaTaskPublisher) -> None:
    loop = asyncio.get_running_loop()
    cfg = kafka_queues.model_copy(update={"matching_session_timeout_ms": SESSION_MS})
    tasks = one_per_partition(cfg, "later", rounds=2)
    async with running(cfg, history, publisher) as m1:
        async with running(cfg, history, publisher) as m2:
            await until(lambda: split_between(cfg, assigned(m1), assigned(m2)), m1, m2)
            for t, p in tasks:
                await publisher.republish(t, p)
            await read_by([m1, m2], len(tasks))
            assert m1.outstanding() == m2.outstanding() == len(tasks) // 2  # each holds those of its partitions
            t0 = loop.time()
        # m2 stopped: committed what is done (nothing), left the group
        await until(lambda: assigned(m1) == all_partitions(cfg), m1)
        assert loop.time() - t0 < SESSION_MS / 1000.0 + 3.0
        got = await take_all([m1], "later", len(tasks))  # what m2 held is read again from the committed offsets
        assert sorted(wf for _, wf in got) == sorted(t.workflow_id for t, _ in tasks)
        await all_committed(cfg, m1)
    assert sorted(c[1] for c in history.calls) == sorted(t.workflow_id for t, _ in tasks)  # m2 handed out none


MEMBER = """
import asyncio, json, sys
from legato.config import Config, QueuesConfig
from legato.task_publisher import KafkaTaskPublisher
from matching.kafka_matching import KafkaMatching
from tests.unit.matching.fakes import FakeHistory

async def main() -> None:
    cfg = QueuesConfig.model_validate_json(sys.argv[1])
    publisher = KafkaTaskPublisher(cfg)
    await publisher.start()
    m = KafkaMatching(FakeHistory(), Config(queues=cfg), publisher)
    await m.start()
    last = None
    while True:  # report what it reads and holds whenever that changes; it never hands anything out
        state = {"partitions": [[tp.topic, tp.partition] for tp in m.assignment()], "outstanding": m.outstanding()}
        if state != last:
            print(json.dumps(state), flush=True)
            last = state
        await m.next_round()

asyncio.run(main())
"""
ROOT = Path(__file__).resolve().parents[3]


class Member:
    """A matching node in a process of its own, to be SIGKILLed: a member that stops heartbeating
    without leaving the group or committing anything. Its reports (partitions, tasks held) are
    read as they come."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.partitions: set[TopicPartition] = set()
        self.outstanding = 0
        self._event = asyncio.Event()
        self._reader = asyncio.ensure_future(self._read())

    @classmethod
    async def start(cls, cfg: QueuesConfig) -> Member:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", MEMBER, cfg.model_dump_json(), stdout=asyncio.subprocess.PIPE,
            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
        return cls(proc)

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            state = json.loads(line)
            self.partitions = {TopicPartition(t, p) for t, p in state["partitions"]}
            self.outstanding = state["outstanding"]
            self._event.set()
            self._event = asyncio.Event()

    def assignment_changed(self) -> Coroutine[Any, Any, bool]:
        """Awaitable: until the process reports again."""
        return self._event.wait()

    async def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGKILL)
        await self.proc.wait()
        await self._reader


async def test_a_dead_members_partitions_and_queued_tasks_move_after_its_session_timeout(
        kafka_queues: QueuesConfig, history: FakeHistory, publisher: KafkaTaskPublisher) -> None:
    loop = asyncio.get_running_loop()
    cfg = kafka_queues.model_copy(update={"matching_session_timeout_ms": SESSION_MS})
    tasks = one_per_partition(cfg, "later", rounds=2)
    async with running(cfg, history, publisher) as m1:
        member = await Member.start(cfg)
        try:
            await until(lambda: split_between(cfg, assigned(m1), member.partitions), m1, member)
            for t, p in tasks:
                await publisher.republish(t, p)
            await read_by([m1], len(tasks) // 2)
            await until(lambda: member.outstanding == len(tasks) // 2, member)  # it holds those of its partitions
            t0 = loop.time()
            await member.kill()  # no LeaveGroup, no commit: the group finds out when its session expires
            await until(lambda: assigned(m1) == all_partitions(cfg), m1)
            elapsed = loop.time() - t0
        finally:
            await member.kill()
        # not before its session could expire (its last heartbeat was at most a third of it before the
        # kill), and not much later
        assert SESSION_MS / 1000.0 * 0.6 <= elapsed < SESSION_MS / 1000.0 + 3.0, elapsed
        got = await take_all([m1], "later", len(tasks))
        assert sorted(wf for _, wf in got) == sorted(t.workflow_id for t, _ in tasks)
        await all_committed(cfg, m1)
    assert sorted(c[1] for c in history.calls) == sorted(t.workflow_id for t, _ in tasks)
