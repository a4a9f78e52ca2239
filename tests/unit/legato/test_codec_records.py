"""`codec.dump_record` (orjson) writes the same JSON values as `codec.dumps` (the standard
library), and takes what orjson alone would refuse."""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Any

import pytest

from legato import codec
from legato.events import EventType, HistoryEvent


class Color(StrEnum):
    RED = "red"


RECORDS: list[Any] = [
    {"event_id": 7, "event_type": "ActivityTaskScheduled", "attrs": {"input": [{"a": 1.5, "b": None, "c": True}]}},
    {1: "int key", None: "none key", 2.5: "float key"},
    {True: "bool key", False: "another"},
    {"text": "é ü 漢字 \u2028 \n \" \\", "nested": [[[]], {}], "neg": -1, "big": 2**63 - 1, "small": -(2**63)},
    {"beyond 64 bits": 2**70, "list": [2**80]},  # orjson refuses: the standard library writes them
    {"lone surrogate": "\ud800"},  # orjson refuses: the standard library writes it
    {"enum": Color.RED, "tuple": (1, 2)},
    [1e16, 0.1, 1e-7, 123456789.125],
]


@pytest.mark.parametrize("value", RECORDS)
def test_the_same_json_values(value: Any) -> None:
    assert json.loads(codec.dump_record(value)) == json.loads(codec.dumps(value))


def test_compact() -> None:
    assert codec.dump_record({"a": [1, {"b": 2}]}) == '{"a":[1,{"b":2}]}'


def test_an_event_round_trips() -> None:
    ev = HistoryEvent(3, EventType.TimerStarted, 1_700_000_000_123, {"timer_id": "1", "start_to_fire_timeout_ms": 5})
    assert HistoryEvent.decode(ev.encode()) == ev


def test_dumps_still_refuses_nan_where_input_is_checked() -> None:
    with pytest.raises(ValueError):
        codec.dumps({"x": float("nan")})
