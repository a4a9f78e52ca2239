"""Non-durable Lua callers (issue 3, points 7 and 8): a function.lua entry run with the `process`
API live, against the in-process engine (directly and over gRPC) and through `legato run`."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from legato import api
from legato.server import Engine
from tests.integration.engine_harness import APPS, engine_config, engine_with_worker
from tests.integration.procs import legato
from worker.caller import Caller, CallerOutcome
from worker.entries import FunctionEntry, Registry, load_registry

APP = APPS / "callers"
NS = "default"


class Env:
    def __init__(self, service: api.WorkflowService, registry: Registry, engine: Engine) -> None:
        self.service = service
        self.registry = registry
        self.engine = engine

    async def call(self, name: str, *args: Any, timeout_s: float = 30) -> CallerOutcome:
        entry = self.registry.get(f"cl:{name}")
        assert isinstance(entry, FunctionEntry)
        caller = Caller(self.service, entry, self.registry, engine_config().limits, namespace=NS)
        return await asyncio.wait_for(caller.run(list(args)), timeout_s)


@pytest.fixture(params=["in-process", "grpc"])
async def env(request: pytest.FixtureRequest, tmp_path: Any) -> AsyncIterator[Env]:
    registry = load_registry(APP)
    async with engine_with_worker(engine_config(), registry, str(tmp_path / "db.sqlite"), request.param,
                                  "test-callers") as (service, engine, _):
        yield Env(service, registry, engine)


def ok(o: CallerOutcome) -> Any:
    assert o.failure is None, o.failure
    return o.value


async def test_spawn_monitored_gets_the_exit_event(env: Env) -> None:
    r = ok(await env.call("spawn_exit", "Ada"))
    assert r == {"kind": "EXIT", "same": True, "value": {"greeting": "hello, Ada"}, "pid_is_string": True}


async def test_a_caller_gets_the_real_clock_and_randomness(env: Env) -> None:
    """Callers are not replayed: os.time/os.date/os.clock and math.random work there (a workflow
    refuses them: tests/integration/test_sandbox.py)."""
    before = int(time.time())
    r = ok(await env.call("real_world"))
    assert before <= r["time"] <= int(time.time()) + 1
    assert r["year"] == time.strftime("%Y", time.gmtime()) and r["clock"] == "number"
    assert r["distinct"] >= 18 and r["unit"] is True  # 20 draws of a million: collisions are rare


async def test_exec_returns_the_result(env: Env) -> None:
    assert ok(await env.call("exec_one", "Ada")) == {"greeting": "hello, Ada"}


async def test_exec_of_a_failing_workflow_keeps_kind_and_message(env: Env) -> None:
    r = ok(await env.call("exec_fail"))
    assert "result" not in r and r["kind"] == "Invalid" and r["retryable"] is False
    assert "refused: no stock" in r["message"]


async def test_spawner_options_and_context(env: Env) -> None:
    r = ok(await env.call("options"))
    assert r == {"pid": "caller-opt-1", "value": {"greeting": "hello, Bo", "user": "ann"}}


async def test_request_reply_with_refusal(env: Env) -> None:
    r = ok(await env.call("request_reply"))
    assert r["a"] == {"ok": {"value": 15}}
    assert r["b"] == {"nak": "amount must be a number"}  # refused, state unchanged:
    assert r["c"] == {"ok": {"value": 16}}
    assert r["d"] == {"ok": {"final": 16}}


async def test_reply_timeout_with_time_after(env: Env) -> None:
    assert ok(await env.call("timeout")) == {"timed_out": True}


async def test_send_to_unknown_targets_is_not_found(env: Env) -> None:
    r = ok(await env.call("unknown_target"))
    assert r == {"kind": "NotFound", "retryable": False, "kind2": "NotFound"}


async def test_unknown_start_option_is_invalid_naming_the_key(env: Env) -> None:
    r = ok(await env.call("bad_option"))
    assert r["ok"] is False and r["kind"] == "Invalid" and "temporal.workflow.colour" in r["message"]


async def test_nil_err_is_the_callers_failure(env: Env) -> None:
    o = await env.call("returns_error")
    assert o.failure is not None and o.failure.kind == "NotFound" and "nothing to do" in o.failure.message


async def test_terminate_gives_exit_with_an_error(env: Env) -> None:
    assert ok(await env.call("monitor_terminate")) == {"kind": "EXIT", "err": "Terminated"}


async def test_plain_spawn_from_a_caller_asks_for_no_exit(env: Env) -> None:
    assert ok(await env.call("plain_spawn_no_exit")) == {"first_from_watched": True, "from_plain": False}


async def test_cancel_with_wait_for_cancellation_returns_once_the_workflow_closed(env: Env) -> None:
    assert ok(await env.call("cancel_waits")) == {"ok": True, "closed": True, "kind": "EXIT", "err": "Canceled"}


async def test_pid_time_channels_and_coroutines(env: Env) -> None:
    assert ok(await env.call("pid_and_sleep")) == {"caller": True, "waited": True, "got": '{"n":1}', "uuid": 36}


async def test_mailbox_is_closed_when_the_caller_ends(env: Env) -> None:
    entry = env.registry.get("cl:exec_one")
    assert isinstance(entry, FunctionEntry)
    caller = Caller(env.service, entry, env.registry, engine_config().limits, namespace=NS)
    ok(await caller.run(["x"]))
    with pytest.raises(Exception, match="no caller"):
        await env.service.send_message(api.SendMessageRequest(caller.pid, "late"))


# ------------------------------------------------------------------ legato run

def run(*args: str) -> tuple[int, str, str]:
    p = legato("run", "--entries", str(APP), *args)
    return p.returncode, p.stdout, p.stderr


def test_legato_run_of_a_function_prints_its_result() -> None:
    code, out, err = run("cl:exec_one", "--input", '"Ada"')
    assert code == 0, err
    assert json.loads(out) == {"greeting": "hello, Ada"}


def test_legato_run_of_a_function_that_returns_an_error_exits_1() -> None:
    code, out, err = run("cl:returns_error")
    assert code == 1
    assert "NotFound" in err and "nothing to do" in err and out == ""


def test_legato_run_request_reply() -> None:
    code, out, err = run("cl:request_reply")
    assert code == 0, err
    assert json.loads(out)["d"] == {"ok": {"final": 16}}
