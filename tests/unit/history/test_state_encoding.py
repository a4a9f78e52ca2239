"""Mutable state encoding: fields at their defaults are left out, and decoding restores them."""

from __future__ import annotations

from history.state import ActivityInfo, MutableState, TimerInfo, WorkflowTaskInfo
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
