"""Caller mailboxes are bounded in bytes as well as messages: per mailbox and per node."""

from __future__ import annotations

import pytest

from legato import api
from legato.config import MatchingConfig
from legato.errors import ResourceExhausted
from matching.mailboxes import MESSAGE_OVERHEAD_BYTES, Mailboxes, message_bytes

KB = 1024


def msg(size: int, topic: str = "t") -> api.ProcessMessage:
    return api.ProcessMessage("message", topic=topic, payload="x" * size, sender="wf")


def test_a_message_counts_its_payload_topic_sender_and_overhead() -> None:
    assert message_bytes(msg(1000)) == MESSAGE_OVERHEAD_BYTES + len("t") + len("wf") + 1002  # the JSON quotes
    assert message_bytes(api.ProcessMessage("exit", event={"a": 1})) == MESSAGE_OVERHEAD_BYTES + 7


async def test_a_mailbox_is_bounded_in_bytes() -> None:
    mb = Mailboxes(MatchingConfig(max_mailbox_bytes=10 * KB))
    mb.open("@a")
    for _ in range(4):
        mb.deliver("@a", msg(2 * KB))
    with pytest.raises(ResourceExhausted) as info:
        mb.deliver("@a", msg(2 * KB))
    assert info.value.reason == "MailboxFull"
    assert "the mailbox of @a is full" in info.value.message
    assert "the limit (matching.max_mailbox_bytes) is 10240 bytes" in info.value.message
    mb.deliver("@a", msg(100))  # a small one still fits
    # polling frees the room again
    got = await mb.poll(api.PollMailboxRequest("@a", timeout_ms=0, max_messages=2))
    assert len(got) == 2
    mb.deliver("@a", msg(2 * KB))


async def test_every_mailbox_of_a_node_together_is_bounded_in_bytes() -> None:
    mb = Mailboxes(MatchingConfig(max_mailbox_bytes=10 * KB, max_mailboxes_total_bytes=24 * KB))
    for pid in ("@a", "@b", "@c"):
        mb.open(pid)
    for pid in ("@a", "@b"):
        for _ in range(4):
            mb.deliver(pid, msg(2 * KB))
    for _ in range(2):
        mb.deliver("@c", msg(2 * KB))
    with pytest.raises(ResourceExhausted, match=r"the limit \(matching.max_mailboxes_total_bytes\) is 24576 bytes"):
        mb.deliver("@c", msg(2 * KB))
    mb.close("@a")  # closing a mailbox frees what waited in it (kept a while for its owner's last poll)
    assert mb.bytes == 6 * message_bytes(msg(2 * KB))
    assert len(await mb.poll(api.PollMailboxRequest("@a", timeout_ms=0))) == 4
    assert mb.bytes == 6 * message_bytes(msg(2 * KB))
    mb.deliver("@c", msg(2 * KB))


def test_the_message_count_limit_still_holds() -> None:
    mb = Mailboxes(MatchingConfig(max_mailbox_messages=3))
    mb.open("@a")
    for _ in range(3):
        mb.deliver("@a", msg(0))
    with pytest.raises(ResourceExhausted, match=r"matching.max_mailbox_messages\) is 3"):
        mb.deliver("@a", msg(0))
