"""The replay engine against hand-built histories (docs/protocol.md)."""

from __future__ import annotations

from pathlib import Path

import pytest

from legato.commands import CommandType
from legato.events import EventType as E
from tests.unit.worker.helpers import History, Sim, make_app, types
from worker.replay import replay
from worker.runtime import TaskFailure

C = CommandType

ORDER = """\
local funcs = require("funcs")
local time = require("time")

local function main(order)
    local payment, err = funcs.call("app:charge", {amount = order.total})
    if err then
        return nil, err
    end
    time.sleep("1h")
    local shipment = funcs.call("app:ship", order.id)
    return {status = "completed", payment_id = payment.id, tracking = shipment.tracking}
end

return { main = main }
"""

ORDER_SWAPPED = """\
local funcs = require("funcs")
local time = require("time")

local function main(order)
    time.sleep("1h")
    local payment, err = funcs.call("app:charge", {amount = order.total})
    if err then
        return nil, err
    end
    local shipment = funcs.call("app:ship", order.id)
    return {status = "completed", payment_id = payment.id, tracking = shipment.tracking}
end

return { main = main }
"""


def order_history(tmp_path: Path) -> tuple[History, object]:
    reg = make_app(tmp_path, {"order": ORDER})
    sim = Sim(reg, "app:order", [{"id": "o-1", "total": 30}])
    c1 = sim.step()
    sim.complete(c1)
    sim.h.tick(10).activity_completed("1", {"id": "pay-9"}).next_task()
    c2 = sim.step()
    sim.complete(c2)
    sim.h.tick(3_600_000).timer_fired("1").next_task()
    c3 = sim.step()
    sim.complete(c3)
    sim.h.tick(5).activity_completed("2", {"tracking": "TRK"}).next_task()
    c4 = sim.step()
    sim.complete(c4)
    return sim.h, (c1, c2, c3, c4)


def test_recorded_history_gives_expected_commands(tmp_path: Path) -> None:
    _h, (c1, c2, c3, c4) = order_history(tmp_path)  # type: ignore[misc]
    assert types(c1) == ["ScheduleActivityTask"]
    assert c1[0].attrs["activity_type"] == "app:charge"
    assert c1[0].attrs["activity_id"] == "1"
    assert c1[0].attrs["input"] == [{"amount": 30}]
    assert c1[0].attrs["task_queue"] == "q"
    assert types(c2) == ["StartTimer"]
    assert c2[0].attrs == {"timer_id": "1", "start_to_fire_timeout_ms": 3_600_000}
    assert types(c3) == ["ScheduleActivityTask"]
    assert c3[0].attrs["activity_id"] == "2" and c3[0].attrs["input"] == ["o-1"]
    assert types(c4) == ["CompleteWorkflowExecution"]
    assert c4[0].attrs["result"] == {"status": "completed", "payment_id": "pay-9", "tracking": "TRK"}


def test_replaying_a_closed_history_returns_no_new_commands(tmp_path: Path) -> None:
    h, _ = order_history(tmp_path)
    reg = make_app(tmp_path, {"order": ORDER})
    assert h.events[-1].event_type is E.WorkflowExecutionCompleted
    assert replay(reg, h.events) == []


def test_replay_at_each_task_gives_that_tasks_commands(tmp_path: Path) -> None:
    h, cmds = order_history(tmp_path)
    reg = make_app(tmp_path, {"order": ORDER})
    cuts = [i + 1 for i, e in enumerate(h.events) if e.event_type is E.WorkflowTaskStarted]
    for cut, expected in zip(cuts, cmds, strict=True):  # type: ignore[call-overload]
        got = replay(reg, h.events[:cut])
        assert [c.to_dict() for c in got] == [c.to_dict() for c in expected]


def test_changed_order_of_commands_is_non_determinism(tmp_path: Path) -> None:
    h, _ = order_history(tmp_path)
    reg = make_app(tmp_path, {"order": ORDER_SWAPPED})
    cut = [i + 1 for i, e in enumerate(h.events) if e.event_type is E.WorkflowTaskStarted][1]
    with pytest.raises(TaskFailure) as info:
        replay(reg, h.events[:cut])
    f = info.value.failure
    assert info.value.cause == "NON_DETERMINISTIC"
    assert f.kind == "NonDeterministic"
    assert "event 5 ActivityTaskScheduled(activity_type=app:charge)" in f.message
    assert "StartTimer" in f.message
    assert f.source == "order.lua:5"
    assert "order.lua:5" in f.message


def test_changed_activity_type_names_both(tmp_path: Path) -> None:
    h, _ = order_history(tmp_path)
    reg = make_app(tmp_path, {"order": ORDER.replace('"app:ship"', '"app:ship_v2"')})
    with pytest.raises(TaskFailure) as info:
        replay(reg, h.events)
    f = info.value.failure
    assert "app:ship" in f.message and "app:ship_v2" in f.message
    assert f.source == "order.lua:10"


def test_fewer_commands_than_recorded_is_non_determinism(tmp_path: Path) -> None:
    h, _ = order_history(tmp_path)
    code = ORDER.replace('    time.sleep("1h")\n', "")
    reg = make_app(tmp_path, {"order": code})
    with pytest.raises(TaskFailure) as info:
        replay(reg, h.events)
    # the code now calls app:ship where the history has the timer
    assert info.value.cause == "NON_DETERMINISTIC"
    assert "TimerStarted(timer_id=1)" in info.value.failure.message


def test_missing_command_is_non_determinism(tmp_path: Path) -> None:
    reg = make_app(tmp_path, {"w": """\
        local function main()
            time.sleep("1s")
            time.sleep("2s")
            return "ok"
        end
        return main
        """})
    sim = Sim(reg, "app:w")
    sim.complete(sim.step())
    sim.h.timer_fired("1").next_task()
    sim.complete(sim.step())
    reg2 = make_app(tmp_path, {"w": """\
        local function main()
            time.sleep("1s")
            local ch = channel.new()
            ch:receive()
        end
        return main
        """})
    with pytest.raises(TaskFailure) as info:
        replay(reg2, sim.h.events)
    assert "was recorded, but the code issued no command for it" in info.value.failure.message


def test_failed_and_timed_out_tasks_are_skipped(tmp_path: Path) -> None:
    reg = make_app(tmp_path, {"w": """\
        local function main()
            local got = {}
            local ch = process.listen("s")
            for i = 1, 2 do table.insert(got, (ch:receive())) end
            local r = funcs.call("app:a", got)
            return r
        end
        return main
        """})
    sim = Sim(reg, "app:w")
    assert sim.step() == []
    sim.complete([])
    # a signal; the task that sees it fails (e.g. a bug, then fixed), then one times out
    sim.h.signal("s", 1).next_task().fail_task()
    sim.h.signal("s", 2).next_task().time_out_task()
    sim.h.next_task()
    cmds = replay(reg, sim.h.events)
    assert types(cmds) == ["ScheduleActivityTask"]
    assert cmds[0].attrs["input"] == [[1, 2]]
    # and the same again once that task completed and the activity returned
    sim.h.complete_task(cmds).activity_completed("1", "done").next_task()
    final = replay(reg, sim.h.events)
    assert types(final) == ["CompleteWorkflowExecution"] and final[0].attrs["result"] == "done"


def test_cache_hit_applies_only_new_events_and_matches_full_replay(tmp_path: Path) -> None:
    reg = make_app(tmp_path, {"w": """\
        local runs = 0
        local function main()
            local ch = process.listen("go")
            local total = 0
            for i = 1, 3 do
                runs = runs + 1
                total = total + ch:receive()
                funcs.call("app:a", total)
            end
            return {total = total, runs = runs}
        end
        return main
        """})
    sim = Sim(reg, "app:w")
    sim.complete(sim.step())
    ex = sim.ex
    for i in range(3):
        sim.h.signal("go", i + 1).next_task()
        cmds = sim.step()
        assert sim.ex is ex, "the cached execution continued"
        sim.complete(cmds)
        sim.h.activity_completed(str(i + 1), None)
    sim.h.next_task()
    cmds = sim.step()
    assert cmds[0].attrs["result"] == {"total": 6, "runs": 3}  # code ran each step once, never replayed
    assert ex is not None and ex.closed


def test_cache_mismatch_replays_from_start(tmp_path: Path) -> None:
    reg = make_app(tmp_path, {"w": 'return function() time.sleep("1s") time.sleep("1s") return 1 end'})
    sim = Sim(reg, "app:w")
    cmds = sim.step()
    ex = sim.ex
    assert ex is not None
    # history refused the commands (the task failed on the server side): the next task's
    # previous_started_event_id is not the cached one
    sim.h.fail_task("BAD_COMMAND").next_task()
    assert not ex.can_continue(sim.h.events, sim.h.last_completed_started)
    assert [c.to_dict() for c in sim.step()] == [c.to_dict() for c in cmds]
    assert sim.ex is not ex


def test_time_now_and_uuid_are_stable_across_replays(tmp_path: Path) -> None:
    reg = make_app(tmp_path, {"w": """\
        local function main()
            local t0 = time.now()
            local a = uuid.v4()
            time.sleep("5s")
            local b = uuid.v4()
            return {a = a, b = b, t0 = t0:unix_milli(), t1 = time.now():unix_milli(),
                    elapsed = time.now():sub(t0):milliseconds()}
        end
        return main
        """})
    sim = Sim(reg, "app:w", seed="0123456789abcdef")
    sim.complete(sim.step())
    sim.h.tick(5000).timer_fired("1").next_task()
    r1 = sim.step()[0].attrs["result"]
    r2 = replay(reg, sim.h.events)[0].attrs["result"]
    assert r1 == r2
    assert r1["a"] != r1["b"] and len(r1["a"]) == 36 and r1["a"][14] == "4"
    assert r1["t0"] == sim.h.events[2].timestamp_ms
    assert r1["elapsed"] == 5000 and r1["t1"] - r1["t0"] == 5000
    other = Sim(reg, "app:w", seed="feedface")
    other.complete(other.step())
    other.h.tick(5000).timer_fired("1").next_task()
    assert other.step()[0].attrs["result"]["a"] != r1["a"]


def test_crypto_random_bytes_is_recorded_and_replayed(tmp_path: Path) -> None:
    reg = make_app(tmp_path, {"w": """\
        local function main()
            local b = crypto.random_bytes(8)
            time.sleep("1s")
            local hex = b:gsub(".", function(c) return string.format("%02x", c:byte()) end)
            return {len = #b, hex = hex}
        end
        return main
        """})
    sim = Sim(reg, "app:w", check_replay=False)
    cmds = sim.step()
    assert types(cmds) == ["RecordMarker", "StartTimer"]
    assert cmds[0].attrs["marker_name"] == "crypto.random_bytes"
    recorded = cmds[0].attrs["details"]
    assert len(recorded) == 16
    sim.complete(cmds)
    sim.h.timer_fired("1").next_task()
    for result in (sim.step(), replay(reg, sim.h.events)):
        assert result[0].attrs["result"] == {"len": 8, "hex": recorded}


def test_activity_failure_and_timeout_reach_the_code_as_error_objects(tmp_path: Path) -> None:
    reg = make_app(tmp_path, {"w": """\
        local function main()
            local _, e1 = funcs.call("app:a")
            local _, e2 = funcs.call("app:b")
            return {
                e1 = {kind = e1:kind(), msg = e1:message(), retryable = e1:retryable(), text = tostring(e1),
                      details = e1:details()},
                e2 = {kind = e2:kind(), msg = e2:message()},
            }
        end
        return main
        """})
    sim = Sim(reg, "app:w")
    sim.complete(sim.step())
    sim.h.activity_failed("1", {"message": "no stock", "kind": "NotFound", "retryable": False,
                                "details": {"sku": 7}}).next_task()
    sim.complete(sim.step())
    sim.h.activity_timed_out("2").next_task()
    r = sim.step()[0].attrs["result"]
    assert r["e1"] == {"kind": "NotFound", "msg": "no stock", "retryable": False, "text": "NotFound: no stock",
                       "details": {"sku": 7}}
    assert r["e2"]["kind"] == "Timeout"


def test_replay_rejects_history_without_start(tmp_path: Path) -> None:
    reg = make_app(tmp_path, {"w": "return function() end"})
    with pytest.raises(ValueError):
        replay(reg, [])


def test_unknown_workflow_type_fails_the_task(tmp_path: Path) -> None:
    reg = make_app(tmp_path, {"w": "return function() end"})
    h = History("app:nope")
    with pytest.raises(TaskFailure) as info:
        replay(reg, h.events)
    assert info.value.failure.kind == "NotFound"
