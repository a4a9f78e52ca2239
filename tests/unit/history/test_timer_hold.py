"""Held timers (history/kafka_timer_publisher.py, docs/queues.md "Held timers"): a timer committed
to the outbox waits in memory until `hold_ms` has passed or it is due within PUBLISH_MARGIN_MS,
whichever is first; then it is sent, unless its run no longer expects it. Held or unsent, a row
counts for the outbox's ack level like one being sent: the level passes it only once it was
acknowledged or found obsolete.

The broker is the acknowledging stand-in of test_timer_outbox_level.py (the real broker is in
tests/integration/test_kafka_timers.py, "held timers"); the clock is a list the test moves.
"""

from __future__ import annotations

import time
from typing import cast

import pytest

from history.kafka_resources import KafkaResources
from history.kafka_timer_publisher import PUBLISH_MARGIN_MS, TimerPublisher
from history.queues import TimerTask
from history.state import TM_DELETE_HISTORY, TM_WFT_TIMEOUT
from legato.config import ConfigError, load_config
from tests.unit.history.conftest import close_env, complete_wf, make_env
from tests.unit.history.test_timer_outbox_level import HeldAcks, Progress

HOLD_MS = 10_000
NOW = 1_000_000


def _publisher(acks: HeldAcks, clock: list[int], obsolete: set[int], hold_ms: int = HOLD_MS
               ) -> tuple[TimerPublisher, Progress]:
    """A publisher whose `obsolete` judgement says yes for the task ids in `obsolete`."""
    progress = Progress()
    p = TimerPublisher(0, "timers", 0, cast(KafkaResources, acks), progress, clock=lambda: clock[0],
                       hold_ms=hold_ms, obsolete=lambda t: t.task_id in obsolete)
    p._scan_done = True  # the stored outbox was read (empty)
    return p, progress


def _timer(task_id: int, due_in_ms: int) -> TimerTask:
    return TimerTask(NOW + due_in_ms, task_id, {"k": "t"})


async def test_a_timer_obsolete_when_its_hold_ends_is_never_sent_and_the_level_passes_it() -> None:
    acks, clock, obsolete = HeldAcks(), [NOW], {1}
    p, progress = _publisher(acks, clock, obsolete)
    p.publish_rows([_timer(1, 30_000), _timer(2, 30_000)])
    assert p.held == 2 and p.outbox_ack_level() == 0  # held rows bound the level
    clock[0] = NOW + HOLD_MS - 1
    assert p.release_due() == 0 and acks.sent == []
    clock[0] = NOW + HOLD_MS
    assert p.release_due() == 2
    await acks.until_sent(2)
    assert acks.sent == [2] and p.unsent == 1
    assert p.outbox_ack_level() == 1  # 1 is done (obsolete), 2 is on its way
    acks.ack(2)
    await progress.until(lambda: p.unacked == 0)
    assert p.outbox_ack_level() == 2


async def test_a_timer_is_looked_at_again_the_margin_before_it_is_due() -> None:
    acks, clock = HeldAcks(), [NOW]
    p, _ = _publisher(acks, clock, set())
    p.publish_rows([_timer(1, 3_000)])  # due before the hold would end
    clock[0] = NOW + 3_000 - PUBLISH_MARGIN_MS - 1
    assert p.release_due() == 0
    clock[0] += 1
    assert p.release_due() == 1
    await acks.until_sent(1)


async def test_timers_due_within_the_margin_or_without_a_hold_are_sent_at_once() -> None:
    acks, clock = HeldAcks(), [NOW]
    p, _ = _publisher(acks, clock, {1, 2})
    p.publish_rows([_timer(1, PUBLISH_MARGIN_MS), _timer(2, 0)])
    await acks.until_sent(1, 2)  # obsolete or not: nobody asks
    assert p.held == 0
    unheld, _ = _publisher(acks, clock, {3}, hold_ms=0)
    unheld.publish_rows([_timer(3, 60_000)])
    await acks.until_sent(3)
    assert unheld.held == 0 and unheld.unsent == 0


async def test_a_stopped_publisher_leaves_held_timers_in_the_store_for_the_next_owner() -> None:
    acks, clock = HeldAcks(), [NOW]
    p, _ = _publisher(acks, clock, {1})
    p.publish_rows([_timer(1, 30_000), _timer(2, 30_000)])
    p.stop()
    await p.wait_stopped()
    clock[0] = NOW + HOLD_MS
    assert p.release_due() == 0 and p.held == 0
    assert p.outbox_ack_level() == 0 and acks.sent == []  # neither left the store


async def test_a_judgement_that_fails_sends_the_timer() -> None:
    acks, clock = HeldAcks(), [NOW]
    progress = Progress()

    def broken(_: TimerTask) -> bool:
        raise RuntimeError("a bug in the judgement")

    p = TimerPublisher(0, "timers", 0, cast(KafkaResources, acks), progress, clock=lambda: clock[0],
                       hold_ms=HOLD_MS, obsolete=broken)
    p.publish_rows([_timer(1, 30_000)])
    clock[0] = NOW + HOLD_MS
    p.release_due()
    await acks.until_sent(1)
    assert p.unsent == 0


async def test_the_hold_ends_on_its_own_in_real_time() -> None:
    """Without a test moving a clock: the publisher wakes itself when the first hold ends."""
    acks = HeldAcks()

    def now_ms() -> int:
        return int(time.time() * 1000)

    p = TimerPublisher(0, "timers", 0, cast(KafkaResources, acks), Progress(), clock=now_ms, hold_ms=20,
                       obsolete=lambda t: t.task_id == 1)
    p._scan_done = True
    start = now_ms()
    p.publish_rows([TimerTask(start + 60_000, 1, {"k": "t"}), TimerTask(start + 60_000, 2, {"k": "t"})])
    assert p.held == 2
    await acks.until_sent(2)
    assert acks.sent == [2] and p.unsent == 1 and p.held == 0
    assert now_ms() - start >= 20  # not before its hold ended


async def test_history_judges_a_timer_on_the_committed_state_of_a_cached_run() -> None:
    env = await make_env(None)
    try:
        await env.start("wf-1")
        wt = await env.poll_next("wf-1")
        st = await env.state("wf-1")
        assert st.wft is not None
        timeout = TimerTask(0, 1, {"k": TM_WFT_TIMEOUT, "ns": "default", "wf": "wf-1", "run": st.run_id,
                                   "sched": st.wft.scheduled_event_id, "started": st.wft.started_event_id,
                                   "attempt": st.wft.attempt})
        judge = env.history._timer_obsolete
        assert not judge(timeout)  # the task is running: its timeout is expected
        assert judge(TimerTask(0, 2, {**timeout.data, "attempt": st.wft.attempt - 1}))  # an earlier attempt's
        shard = env.history.shard(env.history.shard_for("default", "wf-1"))
        async with shard.lock("default", "wf-1"):  # an update is changing the cached state
            assert shard.settled_state("default", "wf-1", st.run_id) is None
            assert not judge(TimerTask(0, 2, {**timeout.data, "attempt": st.wft.attempt - 1}))
        shard.evict(st.key)  # not cached: not judged
        assert not judge(TimerTask(0, 2, {**timeout.data, "attempt": st.wft.attempt - 1}))
        await env.complete(wt, complete_wf())
        assert judge(timeout)  # the run closed
        retention = TimerTask(0, 3, {"k": TM_DELETE_HISTORY, "ns": "default", "wf": "wf-1", "run": st.run_id})
        assert not judge(retention)  # due on a closed run by design
    finally:
        await close_env(env)


@pytest.mark.parametrize("value", ["-1", "600001", "ten"])
def test_a_hold_out_of_range_is_refused_naming_the_setting(value: str) -> None:
    with pytest.raises(ConfigError, match=r"invalid configuration: queues\.timer_publish_hold_ms: "):
        load_config(env={"LEGATO_QUEUES__TIMER_PUBLISH_HOLD_MS": value})
    assert load_config(env={"LEGATO_QUEUES__TIMER_PUBLISH_HOLD_MS": "0"}).queues.timer_publish_hold_ms == 0
