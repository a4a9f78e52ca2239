"""The frames between a worker and its Lua host (`worker.frames`): every message comes back equal,
the hot ones in their compact form, and a broken length is refused."""

from __future__ import annotations

import pickle
from typing import Any

import pytest

from legato.api import RespondWorkflowTaskCompletedRequest, RespondWorkflowTaskFailedRequest, WorkflowTask
from legato.commands import Command, CommandType
from legato.errors import Failure, Kind
from legato.events import EventType, HistoryEvent
from worker.frames import LENGTH_BYTES, MAX_FRAME_BYTES, decode_body, decode_length, encode_frame
from worker.queries import QueryJob, QueryOutcome
from worker.task_runner import TaskOutcome


def _events() -> list[HistoryEvent]:
    return [HistoryEvent(i + 1, t, 1_700_000_000_000 + i, {"input": [{"n": i, "s": "é\u2603"}], "big": 2**70})
            for i, t in enumerate(EventType)]


def _task() -> WorkflowTask:
    return WorkflowTask(b"\x00token\xff", "default", "wf-1", "run-1", "Order", "q", 2, 7, 3, _events())


MESSAGES: list[Any] = [
    ("task", _task()),
    ("done", TaskOutcome(RespondWorkflowTaskCompletedRequest(
        b"tok", [Command(t, {"n": i, "nested": {"list": [1.5, None, True]}}) for i, t in enumerate(CommandType)],
        "worker-1"), cached=True, evicted=["run-0"], hit=True, cache_bytes=42)),
    ("done", TaskOutcome(RespondWorkflowTaskFailedRequest(b"tok", "NON_DETERMINISTIC",
                                                          Failure("boom", Kind.INTERNAL, False)), cached=False)),
    ("done", TaskOutcome(None, cached=False, needs_history=True)),
    ("query", QueryJob("run-1", "Order", "status", events=_events())),
    ("done", QueryOutcome(result={"a": [1, 2]}, from_cache=True)),
    ("evict", "run-1"),
    ("ready",),
]


def _roundtrip(message: Any) -> Any:
    frame = encode_frame(message)
    header, body = frame[:LENGTH_BYTES], frame[LENGTH_BYTES:]
    assert decode_length(header) == len(body)
    return decode_body(body)


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: f"{m[0]}-{type(m[-1]).__name__}")
def test_every_message_comes_back_equal(message: Any) -> None:
    back = _roundtrip(message)
    assert back == message
    assert type(back[-1]) is type(message[-1])


def test_enum_members_come_back_as_the_members() -> None:
    task = _roundtrip(("task", _task()))[1]
    assert [e.event_type for e in task.history] == list(EventType)
    assert all(type(e.event_type) is EventType for e in task.history)


def test_the_hot_messages_are_smaller_than_pickles_own_form() -> None:
    # The compact form names no field and rebuilds no enum by calling its class.
    for message in MESSAGES[:2]:
        assert len(encode_frame(message)) - LENGTH_BYTES < len(pickle.dumps(message, protocol=5)) * 0.8


def test_a_length_past_the_limit_is_a_broken_stream() -> None:
    with pytest.raises(ValueError, match="frame of"):
        decode_length((MAX_FRAME_BYTES + 1).to_bytes(4, "big"))
