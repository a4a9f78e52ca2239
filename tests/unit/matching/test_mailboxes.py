"""Caller mailboxes in matching: delivery, long polls without busy loops, bounds, close."""

from __future__ import annotations

import asyncio

import pytest

from legato import api
from legato.config import Config, MatchingConfig
from legato.errors import InvalidArgument, NotFound, ResourceExhausted, Unavailable
from matching.mailboxes import Mailboxes
from matching.service import InProcessMatching

PID = "@caller-1"


def msg(n: int) -> api.ProcessMessage:
    return api.ProcessMessage("message", topic="t", payload=n, sender="wf")


def boxes(**kw: int) -> Mailboxes:
    return Mailboxes(MatchingConfig(**kw))


async def test_deliver_then_poll_in_order() -> None:
    mb = boxes()
    mb.open(PID)
    assert mb.deliver(PID, msg(1)) and mb.deliver(PID, msg(2))
    got = await mb.poll(api.PollMailboxRequest(PID, timeout_ms=0))
    assert [m.payload for m in got] == [1, 2]
    assert await mb.poll(api.PollMailboxRequest(PID, timeout_ms=0)) == []


async def test_deliver_to_unknown_pid_is_false() -> None:
    mb = boxes()
    assert mb.deliver("@nobody", msg(1)) is False


async def test_poll_without_mailbox_is_not_found() -> None:
    with pytest.raises(NotFound, match="no mailbox for @nobody"):
        await boxes().poll(api.PollMailboxRequest("@nobody", timeout_ms=0))


async def test_open_refuses_a_workflow_id() -> None:
    with pytest.raises(InvalidArgument, match="caller pid"):
        boxes().open("order-1")


async def test_long_poll_wakes_on_delivery() -> None:
    mb = boxes()
    mb.open(PID)
    poll = asyncio.create_task(mb.poll(api.PollMailboxRequest(PID, timeout_ms=60_000)))
    await asyncio.sleep(0)
    assert not poll.done()
    mb.deliver(PID, msg(7))
    got = await asyncio.wait_for(poll, 5)
    assert [m.payload for m in got] == [7]


async def test_long_poll_times_out_empty() -> None:
    mb = boxes()
    mb.open(PID)
    assert await mb.poll(api.PollMailboxRequest(PID, timeout_ms=10)) == []


async def test_long_poll_is_capped_by_the_configured_long_poll_timeout() -> None:
    mb = boxes(long_poll_timeout_ms=10)
    mb.open(PID)
    assert await asyncio.wait_for(mb.poll(api.PollMailboxRequest(PID, timeout_ms=600_000)), 5) == []


async def test_max_messages_per_poll() -> None:
    mb = boxes()
    mb.open(PID)
    for i in range(5):
        mb.deliver(PID, msg(i))
    got = await mb.poll(api.PollMailboxRequest(PID, timeout_ms=0, max_messages=2))
    assert [m.payload for m in got] == [0, 1]
    assert mb.pending(PID) == 3


async def test_full_mailbox_is_resource_exhausted_naming_the_limit() -> None:
    mb = boxes(max_mailbox_messages=2)
    mb.open(PID)
    mb.deliver(PID, msg(1))
    mb.deliver(PID, msg(2))
    with pytest.raises(ResourceExhausted, match=r"mailbox of @caller-1 is full.*max_mailbox_messages\) is 2"):
        mb.deliver(PID, msg(3))


async def test_number_of_mailboxes_is_bounded() -> None:
    mb = boxes(max_mailboxes=1)
    mb.open(PID)
    mb.open(PID)  # idempotent
    with pytest.raises(ResourceExhausted, match="max_mailboxes"):
        mb.open("@caller-2")


async def test_close_ends_waiting_polls_and_later_deliveries_fail() -> None:
    mb = boxes()
    mb.open(PID)
    poll = asyncio.create_task(mb.poll(api.PollMailboxRequest(PID, timeout_ms=60_000)))
    await asyncio.sleep(0)
    mb.close(PID)
    assert await asyncio.wait_for(poll, 5) == []
    assert mb.deliver(PID, msg(1)) is False


async def test_messages_delivered_before_a_close_go_to_the_last_poll_once() -> None:
    mb = boxes()
    mb.open(PID)
    assert mb.deliver(PID, msg(1)) and mb.deliver(PID, msg(2))
    mb.close(PID)
    assert mb.deliver(PID, msg(3)) is False  # refused from the close on
    got = await asyncio.wait_for(mb.poll(api.PollMailboxRequest(PID, timeout_ms=60_000)), 5)
    assert [m.payload for m in got] == [msg(1).payload, msg(2).payload] and mb.bytes == 0
    with pytest.raises(NotFound):
        await mb.poll(api.PollMailboxRequest(PID, timeout_ms=0))


async def test_a_mailbox_opened_again_before_its_last_poll_keeps_its_messages() -> None:
    mb = boxes()
    mb.open(PID)
    mb.deliver(PID, msg(1))
    mb.close(PID)
    mb.open(PID)
    assert [m.payload for m in await mb.poll(api.PollMailboxRequest(PID, timeout_ms=0))] == [msg(1).payload]


async def test_cancelled_poll_leaves_no_waiter() -> None:
    mb = boxes()
    mb.open(PID)
    poll = asyncio.create_task(mb.poll(api.PollMailboxRequest(PID, timeout_ms=60_000)))
    await asyncio.sleep(0)
    poll.cancel()
    with pytest.raises(asyncio.CancelledError):
        await poll
    mb.deliver(PID, msg(1))
    assert [m.payload for m in await mb.poll(api.PollMailboxRequest(PID, timeout_ms=0))] == [1]


async def test_two_waiting_polls_share_messages() -> None:
    mb = boxes()
    mb.open(PID)
    p1 = asyncio.create_task(mb.poll(api.PollMailboxRequest(PID, timeout_ms=60_000, max_messages=1)))
    p2 = asyncio.create_task(mb.poll(api.PollMailboxRequest(PID, timeout_ms=60_000, max_messages=1)))
    await asyncio.sleep(0)
    mb.deliver(PID, msg(1))
    mb.deliver(PID, msg(2))
    got = await asyncio.wait_for(asyncio.gather(p1, p2), 5)
    assert sorted(m.payload for r in got for m in r) == [1, 2]


class _NoHistory:
    pass


async def test_matching_service_exposes_mailboxes() -> None:
    m = InProcessMatching(_NoHistory(), Config())  # type: ignore[arg-type]
    await m.open_mailbox(PID)
    assert await m.deliver_message(PID, msg(1))
    assert [x.payload for x in await m.poll_mailbox(api.PollMailboxRequest(PID, timeout_ms=0))] == [1]
    await m.close_mailbox(PID)
    assert not await m.deliver_message(PID, msg(2))
    await m.open_mailbox(PID)
    poll = asyncio.create_task(m.poll_mailbox(api.PollMailboxRequest(PID, timeout_ms=60_000)))
    await asyncio.sleep(0)
    await m.stop()
    assert await asyncio.wait_for(poll, 5) == []
    with pytest.raises(Unavailable):
        await m.poll_mailbox(api.PollMailboxRequest(PID, timeout_ms=0))
