"""Activities: function.lua entries and their result conventions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from legato.api import ActivityTask
from tests.unit.worker.helpers import make_app
from worker.activity import ActivityRunner, CallContext

FUNCS = {
    "value": "return function(a, b) return {sum = a + b, none = nil} end",
    "text_error": 'return function() return nil, "plain text error" end',
    "obj_error": """\
        return function()
            return nil, errors.new({message = "no such order", kind = errors.NOT_FOUND, details = {id = 7}})
        end
        """,
    "retryable_error": """\
        return function()
            return nil, errors.new({message = "busy", kind = errors.UNAVAILABLE, retryable = true})
        end
        """,
    "raises": """\
        local function main(x)
            error("activity exploded: " .. x)
        end
        return main
        """,
    "raises_obj": 'return function() error(errors.new({message = "denied", kind = errors.PERMISSION_DENIED})) end',
    "nested": """\
        return function(n)
            local r, err = funcs.call("app:value", n, 1)
            local _, e2 = funcs.call("app:nope")
            return {r = r, missing = e2:kind()}
        end
        """,
    "modules": """\
        return function()
            local t0 = time.now()
            time.sleep(2 * time.MILLISECOND)
            local d = time.now():sub(t0):milliseconds()
            return {json = json.encode({a = 1}), uuid = #uuid.v4(), bytes = #crypto.random_bytes(4),
                    slept = d >= 2, ctx = ctx.get("tenant"), hb = activity.heartbeat({p = 1}),
                    info = activity.info().activity_id, io = io == nil}
        end
        """,
    "stateful": "local n = 0\nreturn function() n = n + 1 return n end",
    "leaky": "return function() counter = (counter or 0) + 1; string.upper = nil; return counter end",
}


def runner(tmp_path: Path, heartbeats: list[Any] | None = None, cancel: bool = False) -> ActivityRunner:
    reg = make_app(tmp_path, functions=FUNCS)

    def hb(ctx: CallContext, details: Any) -> bool:
        if heartbeats is not None:
            heartbeats.append((ctx.task_token, details))
        return cancel

    return ActivityRunner(reg, hb)


def test_returned_value_completes(tmp_path: Path) -> None:
    out = runner(tmp_path).call("app:value", [2, 3])
    assert out.ok and out.result == {"sum": 5}


def test_returned_text_error_is_a_non_retryable_failure(tmp_path: Path) -> None:
    out = runner(tmp_path).call("app:text_error", [])
    assert not out.ok and out.failure is not None
    assert out.failure.message == "plain text error"
    assert out.failure.kind == "" and out.failure.retryable is False


def test_returned_error_object_keeps_kind_and_details(tmp_path: Path) -> None:
    r = runner(tmp_path)
    f = r.call("app:obj_error", []).failure
    assert f is not None and (f.kind, f.message, f.retryable, f.details) == ("NotFound", "no such order", False,
                                                                            {"id": 7})
    f = r.call("app:retryable_error", []).failure
    assert f is not None and f.kind == "Unavailable" and f.retryable is True


def test_raised_error_is_internal_and_retryable(tmp_path: Path) -> None:
    f = runner(tmp_path).call("app:raises", ["kaput"]).failure
    assert f is not None
    assert f.kind == "Internal" and f.retryable is True
    assert "activity exploded: kaput" in f.message
    assert f.source == "raises.lua:2"
    f = runner(tmp_path).call("app:raises_obj", []).failure
    assert f is not None and f.kind == "PermissionDenied" and f.message == "denied" and f.retryable is True


def test_missing_activity_is_not_found(tmp_path: Path) -> None:
    f = runner(tmp_path).call("app:nope", []).failure
    assert f is not None and f.kind == "NotFound" and f.retryable is True and "app:nope" in f.message


def test_funcs_call_runs_another_entry_directly(tmp_path: Path) -> None:
    out = runner(tmp_path).call("app:nested", [4])
    assert out.ok and out.result == {"r": {"sum": 5}, "missing": "NotFound"}


def test_modules_and_heartbeat(tmp_path: Path) -> None:
    beats: list[Any] = []
    task = ActivityTask(b"tok", "default", "wf", "run", "app:w", "7", "app:modules", "q", [], 1, 0, 0, 0,
                        context={"tenant": "t-1"})
    out = runner(tmp_path, beats).execute(task)
    assert out.ok, out.failure
    assert out.result == {"json": '{"a":1}', "uuid": 36, "bytes": 4, "slept": True, "ctx": "t-1",
                          "info": "7", "io": True}
    assert beats == [(b"tok", {"p": 1})]


def test_each_call_starts_from_fresh_globals_and_libraries(tmp_path: Path) -> None:
    """Nothing one call sets (module-level locals, globals, library tables) is seen by the next."""
    r = runner(tmp_path)
    assert [r.call("app:stateful", []).result for _ in range(3)] == [1, 1, 1]
    assert [r.call("app:leaky", []).result for _ in range(2)] == [1, 1]
