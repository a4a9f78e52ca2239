"""The shared queue machinery without a bus: sticky holds, taking old tasks out (parking), and the
offset bookkeeping of a partition."""

from __future__ import annotations

import asyncio

from legato import api
from matching.offsets import PartitionOffsets
from matching.queues import Key, Queued, TaskQueues

KEY: Key = ("default", "q", api.TaskKind.WORKFLOW)


class Item(Queued):
    __slots__ = ("settled",)

    def __init__(self, n: int, since: float = 0.0, sticky: str | None = None, sticky_until: float = 0.0) -> None:
        super().__init__(api.TaskInfo(api.TaskKind.WORKFLOW, "default", "q", f"wf-{n}", f"run-{n}", n), since,
                         sticky, sticky_until)
        self.settled = False

    def settle(self) -> None:
        self.settled = True


async def record(task: api.TaskInfo, request_id: str) -> str:
    return task.workflow_id


def poll(identity: str, timeout_ms: int = 5000) -> api.PollRequest:
    return api.PollRequest(task_queue="q", identity=identity, timeout_ms=timeout_ms)


async def test_a_sticky_task_waits_for_its_worker_before_the_shared_ones() -> None:
    queues = TaskQueues(30_000)
    now = asyncio.get_running_loop().time()
    queues.offer(KEY, Item(1))
    queues.offer(KEY, Item(2, sticky="w1", sticky_until=now + 60))
    assert await queues.poll(KEY, poll("w2"), record) == "wf-1"  # not wf-2: held for w1
    assert await queues.poll(KEY, poll("w2", timeout_ms=10), record) is None
    assert queues.backlog(KEY) == 1
    assert await queues.poll(KEY, poll("w1"), record) == "wf-2"
    queues.stop()


async def test_a_held_task_goes_to_anyone_when_its_window_ends() -> None:
    queues = TaskQueues(30_000)
    loop = asyncio.get_running_loop()
    waiting = asyncio.ensure_future(queues.poll(KEY, poll("w2"), record))
    await asyncio.sleep(0)  # let the poll register (one loop turn)
    queues.offer(KEY, Item(1, sticky="w1", sticky_until=loop.time() + 0.05))
    assert not waiting.done()
    assert await asyncio.wait_for(waiting, 5) == "wf-1"
    queues.stop()


async def test_a_sticky_task_whose_window_passed_is_not_held() -> None:
    queues = TaskQueues(30_000)
    queues.offer(KEY, Item(1, sticky="w1", sticky_until=asyncio.get_running_loop().time() - 1))
    assert await queues.poll(KEY, poll("w2", timeout_ms=10), record) == "wf-1"
    queues.stop()


async def test_tasks_queued_before_the_cutoff_are_taken_out() -> None:
    queues = TaskQueues(30_000)
    now = asyncio.get_running_loop().time()
    old, held, new = Item(1, since=1.0), Item(2, since=2.0, sticky="w1", sticky_until=now + 60), Item(3, since=50.0)
    for item in (old, held, new):
        queues.offer(KEY, item)
    taken = queues.take_waiting_since(10.0)
    assert [i for _, i in taken] == [old, held]
    assert queues.backlog(KEY) == 1
    assert await queues.poll(KEY, poll("w1"), record) == "wf-3"
    queues.stop()


async def test_stop_aborts_queued_tasks_and_ends_polls() -> None:
    aborted: list[int] = []

    class Abortable(Item):
        def abort(self) -> None:
            aborted.append(self.task.scheduled_event_id)

    queues = TaskQueues(30_000)
    other: Key = ("default", "other", api.TaskKind.WORKFLOW)
    waiting = asyncio.ensure_future(queues.poll(other, poll("w1"), record))
    await asyncio.sleep(0)
    queues.offer(KEY, Abortable(1))
    queues.stop()
    assert aborted == [1] and await waiting is None
    queues.offer(KEY, Abortable(2))  # after stop: aborted at once
    assert aborted == [1, 2]


def test_offsets_commit_below_the_oldest_not_done() -> None:
    o = PartitionOffsets()
    assert o.committable() is None
    for off in (5, 6, 7, 9):  # 8: a gap (e.g. a transaction marker)
        o.consumed(off)
    o.done(6)
    o.done(9)
    assert o.committable() == 5 and o.outstanding == 2
    o.done(5)
    assert o.committable() == 7
    o.done(7)
    assert o.committable() == 10 and o.outstanding == 0
