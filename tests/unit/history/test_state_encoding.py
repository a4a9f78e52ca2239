"""Mutable state encoding: fields at their defaults are left out, and decoding restores them."""

from __future__ import annotations

import dataclasses

from history.state import (
    ActivityInfo,
    ChildInfo,
    MutableState,
    Registration,
    RequestInfo,
    TimerInfo,
    WorkflowTaskInfo,
)
from legato import codec


def _state() -> MutableState:
    return MutableState("default", "wf-1", "run-1", "app:w", "q", 1_700_000_000_000)


def test_defaults_are_left_out_and_restored() -> None:
    st = _state()
    d = codec.loads(st.encode())
    assert d["workflow_id"] == "wf-1" and "status" not in d and "memo" not in d and "buffered" not in d
    assert MutableState.decode(st.encode()) == st


def test_a_busy_state_round_trips() -> None:
    st = _state()
    st.next_event_id = 12
    st.memo = {"k": [1, 2]}
    st.cancel_requested = True
    st.wft = WorkflowTaskInfo(state="STARTED", scheduled_event_id=8, started_event_id=9, attempt=2,
                              request_id="r", identity="w", timeout_ms=10_000)
    st.activities[5] = ActivityInfo(5, "1", "app:charge", "q", 123, start_to_close_ms=1000,
                                    retry_policy={"maximum_attempts": 3}, heartbeat_details={"p": 0})
    st.timers["t"] = TimerInfo("t", 6, 999)
    st.result = 0  # not the default None: kept
    st.buffered = [{"t": "WorkflowExecutionSignaled", "a": {"signal_name": "s"}}]
    back = MutableState.decode(st.encode())
    assert back == st
    assert back.result == 0 and type(back.result) is int


def test_a_value_equal_to_its_default_but_of_another_type_is_kept() -> None:
    st = _state()
    st.cancel_requested = 0  # type: ignore[assignment]  # 0 == False, but it is not False
    d = codec.loads(st.encode())
    assert d["cancel_requested"] == 0 and MutableState.decode(st.encode()).cancel_requested == 0


def _reference_flat(obj: object) -> dict[str, object]:
    """What the generated flatteners must give: every field not at its default, in field order."""
    out: dict[str, object] = {}
    for f in dataclasses.fields(obj):  # type: ignore[arg-type]
        if f.name in ("wft", "activities", "timers", "children", "requests", "monitors", "watching"):
            continue
        v = getattr(obj, f.name)
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            out[f.name] = v
            continue
        if v != default or type(v) is not type(default):
            out[f.name] = v
    return out


def test_the_encoding_is_every_field_off_its_default_in_field_order() -> None:
    st = _state()
    st.status, st.next_event_id, st.parent_close_policy = "COMPLETED", 40, "abandon"
    st.wft = WorkflowTaskInfo(state="STARTED", scheduled_event_id=8, started_event_id=9, transient=True)
    st.activities[5] = ActivityInfo(5, "1", "app:charge", "q", 123, cancel_requested=True, attempt=0)
    st.children[7] = ChildInfo(7, "default", "c-1", "app:c", "terminate", state="STARTED", run_id="r")
    st.requests[8] = RequestInfo(8, "signal_external", "default", "w-2", link=True)
    st.monitors = [Registration("default", "pid-1", link=True)]
    st.watching = [Registration("default", "pid-2")]
    d = codec.loads(st.encode())
    expected = _reference_flat(st)
    assert list(d)[:len(expected)] == list(expected) and {k: d[k] for k in expected} == expected
    assert d["wft"] == _reference_flat(st.wft)
    assert d["activities"] == [_reference_flat(st.activities[5])]
    assert d["children"] == [_reference_flat(st.children[7])]
    assert d["requests"] == [_reference_flat(st.requests[8])]
    assert d["monitors"] == [_reference_flat(st.monitors[0])] and d["watching"] == [_reference_flat(st.watching[0])]
    assert d["activities"][0]["attempt"] == 0 and "heartbeat_ms" not in d["activities"][0]
    assert MutableState.decode(st.encode()) == st
