"""The transfer queue processor: a task whose dispatch meets a moving shard is retried, never
left un-acked and forgotten while its own shard is still served."""

from __future__ import annotations

import asyncio
from typing import Any

from history.queues import TransferQueueProcessor, TransferTask
from legato.errors import ShardOwnershipLost


async def test_a_task_that_meets_a_moving_shard_is_retried_until_it_runs() -> None:
    calls: list[int] = []
    done = asyncio.Event()

    async def dispatch(t: TransferTask) -> None:
        calls.append(t.task_id)
        if len(calls) < 3:  # the target shard is being handed over twice in a row
            raise ShardOwnershipLost("shard 3 is being handed over", reason="ShardMoving")
        done.set()

    q = TransferQueueProcessor(0, store=Any, ack_level=9, dispatch=dispatch)  # type: ignore[arg-type]
    q.add([TransferTask(10, {"k": "close_notify"})])
    await asyncio.wait_for(done.wait(), 5)
    await q.wait_idle()
    assert calls == [10, 10, 10]
    assert q.ack_level() == 10 and q.inflight == 0


async def test_a_stopped_queue_leaves_its_task_for_the_next_owner() -> None:
    started = asyncio.Event()

    async def dispatch(t: TransferTask) -> None:
        started.set()
        raise ShardOwnershipLost("this shard was lost", reason="ShardOwnershipLost")

    q = TransferQueueProcessor(0, store=Any, ack_level=9, dispatch=dispatch)  # type: ignore[arg-type]
    q.add([TransferTask(10, {"k": "workflow_task"})])
    await asyncio.wait_for(started.wait(), 5)
    q.stop()
    assert q.ack_level() == 9  # not done: the next owner loads it again
