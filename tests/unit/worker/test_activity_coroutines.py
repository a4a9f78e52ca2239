"""Activities get Wippy's `channel` global and `coroutine.spawn`, as workflows do: the function and
the coroutines it spawns run on a small scheduler of the call (worker/kernel/coop.lua). Orders of
events are asserted, never durations."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import pytest

from tests.unit.worker.helpers import make_app
from worker.activity import ActivityOutcome, ActivityRunner, CallContext
from worker.entries import Registry

FUNCS = {
    # n workers, each squares its number after yielding once; results come back on one channel in
    # completion order and are gathered by index, then read from per-task channels in order
    "fan_out": """\
        return function(n)
            local results = channel.new()
            local each = {}
            for i = 1, n do
                each[i] = channel.new(1)
                coroutine.spawn(function(k)
                    time.sleep(0)
                    results:send({k, k * k})
                    each[k]:send(k * k)
                end, i)
            end
            local by_index = {}
            for _ = 1, n do
                local r = results:receive()
                by_index[r[1]] = r[2]
            end
            local in_order = {}
            for i = 1, n do in_order[i] = each[i]:receive() end
            return {by_index = by_index, in_order = in_order}
        end
        """,
    "select_default": """\
        return function()
            local empty, ready, full = channel.new(1), channel.new(1), channel.new(1)
            ready:send("here")
            full:send("taken")
            local r1 = channel.select{empty:case_receive(), default = true}
            local r2 = channel.select{empty:case_receive(), ready:case_receive(), default = true}
            local r3 = channel.select{full:case_send("more"), default = true}
            local sender = channel.new()
            coroutine.spawn(function() sender:receive() end)
            time.sleep(0)
            local r3b = channel.select{sender:case_send("waited")}
            local r4 = channel.select{empty:case_send("in"), default = true}
            full:close()
            local r5 = channel.select{full:case_receive()}
            local r6 = channel.select{full:case_receive()}
            return {r1 = {r1.default, r1.ok}, r2 = {r2.channel == ready, r2.value, r2.ok, r2.default == nil},
                    r3 = {r3.default, r3.ok}, r3b = {r3b.channel == sender, r3b.value, r3b.ok},
                    r4 = {r4.channel == empty, r4.value, r4.ok, (empty:receive())},
                    r5 = {r5.channel == full, r5.value, r5.ok}, r6 = {r6.value == nil, r6.ok}}
        end
        """,
    "unbuffered": """\
        return function(cap)
            local log = {}
            local ch = channel.new(cap)
            coroutine.spawn(function()
                log[#log + 1] = "receiver starts"
                local v = ch:receive()
                log[#log + 1] = "received " .. v
            end)
            log[#log + 1] = "send"
            ch:send("x")
            log[#log + 1] = "sent"
            time.sleep(0)
            return log
        end
        """,
    "buffer_full": """\
        return function()
            local log = {}
            local ch = channel.new(2)
            coroutine.spawn(function()
                for _ = 1, 3 do log[#log + 1] = "got " .. ch:receive() end
            end)
            for i = 1, 3 do
                ch:send(i)
                log[#log + 1] = "sent " .. i
            end
            time.sleep(0)
            return log
        end
        """,
    "closing": """\
        return function()
            local ch = channel.new(1)
            ch:send("last")
            ch:close()
            local v1, ok1 = ch:receive()
            local v2, ok2 = ch:receive()
            local sent, err = pcall(ch.send, ch, "late")
            local waiter = channel.new()
            local got = channel.new(1)
            coroutine.spawn(function() got:send({waiter:receive()}) end)
            time.sleep(0)
            waiter:close()
            local w = got:receive()
            return {v1, ok1, v2 == nil, ok2, sent, tostring(err):find("send on closed channel") ~= nil,
                    w[1] == nil, w[2]}
        end
        """,
    "sleepers": """\
        return function()
            local done = channel.new(3)
            coroutine.spawn(function() time.sleep("100ms") done:send("slow") end)
            coroutine.spawn(function() time.sleep(50 * time.MILLISECOND) done:send("fast") end)
            coroutine.spawn(function() done:send("now") end)
            local out = {}
            for i = 1, 3 do out[i] = done:receive() end
            return out
        end
        """,
    "after": """\
        return function()
            local never = channel.new()
            local timeout = time.after("20ms")
            local r = channel.select{never:case_receive(), timeout:case_receive()}
            local late = time.after(10 * time.MILLISECOND)
            local v = late:receive()
            return {r.channel == timeout, r.ok, type(r.value:unix_milli()), type(v:unix()) == "number"}
        end
        """,
    "deadlock": """\
        return function()
            local ch, other = channel.new(), channel.new()
            coroutine.spawn(function() other:receive() end)
            local v = ch:receive()
            return v
        end
        """,
    "deadlock_select": """\
        return function()
            local ch = channel.new()
            local r = channel.select{ch:case_receive()}
            return r
        end
        """,
    "blocked_until_timeout": """\
        return function(spin)
            local ch = channel.new()
            coroutine.spawn(function()
                if spin then while true do end end
                time.sleep("1h")
                ch:send("never")
            end)
            local v = ch:receive()
            return v
        end
        """,
    "spawned_error": """\
        return function()
            local ch = channel.new(1)
            coroutine.spawn(function() error("a spawned coroutine failed") end)
            coroutine.spawn(function() ch:send("the other one ran") end)
            return (ch:receive())
        end
        """,
    "abandoned": """\
        return function()
            local ch = channel.new()
            coroutine.spawn(function() ch:receive() end)
            coroutine.spawn(function() time.sleep("1h") end)
            time.sleep(0)
            return "done"
        end
        """,
    # a coroutine of the code's own (coroutine.wrap) that waits on a channel: its wait goes up to
    # the scheduler, which runs the producer meanwhile
    "wrapped": """\
        return function()
            local ch = channel.new()
            coroutine.spawn(function() for i = 1, 3 do ch:send(i) end ch:close() end)
            local gen = coroutine.wrap(function()
                while true do
                    local v, ok = ch:receive()
                    if not ok then return end
                    coroutine.yield(v * 10)
                end
            end)
            local out = {}
            for v in gen do out[#out + 1] = v end
            return out
        end
        """,
    # funcs.call of another entry of this Lua state from a spawned coroutine: the nested call
    # runs its own scheduler, then this one goes on
    "nested": """\
        return function()
            local ch = channel.new(2)
            coroutine.spawn(function() ch:send(funcs.call("app:fan_out", 3).in_order) end)
            coroutine.spawn(function() ch:send("second") end)
            return {(ch:receive()), (ch:receive())}
        end
        """,
    "globals": """\
        return function()
            return {channel = type(channel), spawn = type(coroutine.spawn), create = #table.create(4, 2),
                    bad_create = select(2, pcall(table.create, -1)), freeze = table.freeze == nil}
        end
        """,
    "top_level_block": """\
        local ch = channel.new()
        local ok, err = pcall(ch.receive, ch)
        return function() return {ok, err} end
        """,
    "yield_in_main": "return function() coroutine.yield(1) return 'no' end",
}


@pytest.fixture(scope="module")
def reg(tmp_path_factory: pytest.TempPathFactory) -> Registry:
    return make_app(tmp_path_factory.mktemp("coroutines"), functions=FUNCS,
                    function_modules="[time, funcs, errors]")


def call(runner: ActivityRunner, name: str, *args: Any, ctx: CallContext | None = None) -> ActivityOutcome:
    return runner.call(f"app:{name}", list(args), ctx or CallContext(activity_type=f"app:{name}"))


def ok(out: ActivityOutcome) -> Any:
    assert out.ok, out.failure
    return out.result


def test_fan_out_gathers_the_results_in_order(runner: ActivityRunner) -> None:
    r = ok(call(runner, "fan_out", 5))
    assert r == {"by_index": [1, 4, 9, 16, 25], "in_order": [1, 4, 9, 16, 25]}


def test_select_with_default_and_closed_channels(runner: ActivityRunner) -> None:
    assert ok(call(runner, "select_default")) == {
        "r1": [True, True], "r2": [True, "here", True, True], "r3": [True, True], "r3b": [True, "waited", True],
        "r4": [True, "in", True, "in"],
        "r5": [True, "taken", True], "r6": [True, False]}


def test_an_unbuffered_send_waits_for_the_receiver(runner: ActivityRunner) -> None:
    assert ok(call(runner, "unbuffered", 0)) == ["send", "receiver starts", "received x", "sent"]


def test_a_buffered_send_goes_on_while_there_is_room(runner: ActivityRunner) -> None:
    assert ok(call(runner, "unbuffered", 1)) == ["send", "sent", "receiver starts", "received x"]
    # the third send waits for the receiver, which takes all three in order
    assert ok(call(runner, "buffer_full")) == ["sent 1", "sent 2", "got 1", "got 2", "got 3", "sent 3"]


def test_closed_channels(runner: ActivityRunner) -> None:
    assert ok(call(runner, "closing")) == ["last", True, True, False, False, True, True, False]


def test_sleeping_coroutines_wake_by_their_deadlines(runner: ActivityRunner) -> None:
    assert ok(call(runner, "sleepers")) == ["now", "fast", "slow"]


def test_time_after_in_a_select(runner: ActivityRunner) -> None:
    assert ok(call(runner, "after")) == [True, True, "number", True]


def test_a_deadlock_is_an_error_naming_where_the_function_waits(runner: ActivityRunner) -> None:
    out = call(runner, "deadlock")
    assert not out.ok and out.failure is not None
    assert out.failure.message == ("deadlock: every coroutine of the activity waits on a channel "
                                   "(the function waits in channel:receive at deadlock.lua:4)")
    out = call(runner, "deadlock_select")
    assert out.failure is not None and out.failure.message.endswith("(the function waits in channel.select at "
                                                                    "deadlock_select.lua:3)")


@pytest.mark.parametrize("spin", [False, True], ids=["sleeping", "spinning"])
def test_the_timeout_stops_every_coroutine(tmp_path: Path, spin: bool) -> None:
    # a runner of its own: the runtime of an entry is per runner and thread
    runner = ActivityRunner(make_app(tmp_path, functions={"b": FUNCS["blocked_until_timeout"]},
                                     function_modules="[time]"), lambda ctx, details: False)
    ctx = CallContext(activity_type="app:b", deadline=time.monotonic() + 0.05, start_to_close_timeout_ms=50)
    out = runner.call("app:b", [spin], ctx)
    assert not out.ok and out.failure is not None
    assert (out.failure.kind, out.failure.message) == (
        "Timeout", "the activity ran past its start-to-close timeout (50 ms) and was stopped")


def test_the_worker_stopping_ends_a_sleeping_scheduler(tmp_path: Path) -> None:
    runner = ActivityRunner(make_app(tmp_path, functions={"b": FUNCS["blocked_until_timeout"]},
                                     function_modules="[time]"), lambda ctx, details: False)
    runner.stopping.set()  # set before the call: the scheduler's sleep ends at once
    out = runner.call("app:b", [False], CallContext(activity_type="app:b"))
    assert out.failure is not None and out.failure.message == "the worker is stopping"


def test_a_failing_spawned_coroutine_is_logged_not_fatal(runner: ActivityRunner,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="legato.worker.activity"):
        assert ok(call(runner, "spawned_error")) == "the other one ran"
    assert any("coroutine.spawn'd coroutine (#1) failed: spawned_error.lua:3: a spawned coroutine failed"
               in r.getMessage() for r in caplog.records), caplog.records


def test_coroutines_still_waiting_are_abandoned_when_the_function_returns(runner: ActivityRunner) -> None:
    assert ok(call(runner, "abandoned")) == "done"
    assert ok(call(runner, "fan_out", 2))["in_order"] == [1, 4]  # the next call starts afresh


def test_a_coroutine_of_the_codes_own_may_wait_on_a_channel(runner: ActivityRunner) -> None:
    assert ok(call(runner, "wrapped")) == [10, 20, 30]


def test_a_nested_call_from_a_spawned_coroutine(runner: ActivityRunner) -> None:
    assert ok(call(runner, "nested")) == [[1, 4, 9], "second"]


def test_the_globals_of_functions(runner: ActivityRunner) -> None:
    r = ok(call(runner, "globals"))
    assert r["channel"] == "table" and r["spawn"] == "function" and r["create"] == 0 and r["freeze"]
    assert "table.create: argument #1 must be a whole number >= 0, got -1" in r["bad_create"]


def test_blocking_in_the_entrys_top_level_code_is_an_error(runner: ActivityRunner) -> None:
    r = ok(call(runner, "top_level_block"))
    assert r[0] is False and "channel:receive: cannot block here" in r[1]


def test_coroutine_yield_in_the_function_is_an_error(runner: ActivityRunner) -> None:
    out = call(runner, "yield_in_main")
    assert out.failure is not None and out.failure.message.startswith("attempt to yield from outside a coroutine")
