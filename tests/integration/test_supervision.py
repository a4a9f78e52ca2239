"""Wippy processes and supervision (issue 15, points 1, 2 and 5): `process.lua` entries on a
`process.host` inside a real worker, driven by non-durable callers against a real engine; and
`process.service` entries restarted with backoff. The app: tests/apps/supervision."""

from __future__ import annotations

import asyncio
import json
import subprocess
import urllib.request
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from legato import api
from legato.events import EventType
from tests.integration.engine_harness import APPS, engine_config, engine_with_worker
from tests.integration.procs import Cluster, Proc, free_port, legato
from worker.caller import Caller, CallerOutcome
from worker.entries import FunctionEntry, Registry, load_registry
from worker.processes.supervisor import ServiceCommandError, ServiceState
from worker.replay import replay
from worker.worker import Worker

APP = APPS / "supervision"


class Env:
    def __init__(self, service: api.WorkflowService, registry: Registry, worker: Worker) -> None:
        self.service = service
        self.registry = registry
        self.worker = worker

    async def call(self, name: str, *args: Any, timeout_s: float = 30) -> CallerOutcome:
        entry = self.registry.get(f"pr:{name}")
        assert isinstance(entry, FunctionEntry)
        caller = Caller(self.service, entry, self.registry, engine_config().limits)
        return await asyncio.wait_for(caller.run(list(args)), timeout_s)

    def service_state(self, name: str) -> ServiceState:
        return self.worker.supervisor.states[f"pr:{name}"]

    async def until(self, check: Callable[[], bool], what: str, timeout_s: float = 20) -> None:
        """Wait for a condition of the services' states (looked at after each change)."""
        try:
            await self.worker.supervisor.wait_until(check, timeout_s)
        except TimeoutError:
            raise AssertionError(f"{what}: not within {timeout_s}s ({self.worker.supervisor.listing()})") from None


@pytest.fixture(params=["in-process", "grpc"])
async def env(request: pytest.FixtureRequest, tmp_path: Any) -> AsyncIterator[Env]:
    """The engine, and a worker with the app's process host; callers and the worker reach the
    engine directly or over gRPC (as `legato worker` does)."""
    config = engine_config()
    config.limits.lua_instructions_per_task = 2_000_000  # the spinning process is stopped quickly
    registry = load_registry(APP)
    async with engine_with_worker(config, registry, str(tmp_path / "db.sqlite"), request.param,
                                  "test-procs") as (service, _, worker):
        yield Env(service, registry, worker)


def ok(o: CallerOutcome) -> Any:
    assert o.failure is None, o.failure
    return o.value


async def test_spawn_send_and_reply_between_a_caller_and_a_process(env: Env) -> None:
    r = ok(await env.call("send_reply"))
    assert r["a"]["echo"] == {"x": 1} and r["a"]["n"] == 1 and r["a"]["greeting"] == "hi"
    assert r["b"]["echo"] == {"x": 2} and r["b"]["n"] == 2
    assert r["pid_ok"] is True and r["exit"] == "EXIT" and r["from_ok"] is True
    assert r["value"] == {"stopped": True, "count": 2} and "err" not in r


async def test_monitor_gets_exit_with_the_result(env: Env) -> None:
    assert ok(await env.call("monitor_result", 21)) == {"kind": "EXIT", "from_ok": True, "value": {"doubled": 42},
                                                        "err": True}


async def test_monitor_gets_exit_with_the_error(env: Env) -> None:
    r = ok(await env.call("monitor_error"))
    assert r["kind"] == "EXIT" and r["from_ok"] is True
    assert "boom from a process" in r["message"]


async def test_a_monitor_made_as_the_process_ends_gets_exit_or_not_found(env: Env) -> None:
    assert ok(await env.call("monitor_at_the_end", 20)) == {"total": 20}


async def test_link_down_is_trapped_as_an_event(env: Env) -> None:
    r = ok(await env.call("link_trapped"))
    assert r["kind"] == "LINK_DOWN" and r["from_ok"] is True and "boom from a process" in r["message"]


async def test_link_down_takes_an_untrapping_caller_down(env: Env) -> None:
    o = await env.call("link_kills")
    assert o.failure is not None and "linked process @" in o.failure.message
    assert "boom from a process" in o.failure.message


async def test_terminate_gives_exit_with_a_terminated_error(env: Env) -> None:
    r = ok(await env.call("terminate"))
    assert r == {"ok": True, "kind": "EXIT", "err_kind": "Terminated", "message": "enough"}


async def test_cancel_is_a_cancel_event_in_the_process(env: Env) -> None:
    assert ok(await env.call("cancel")) == {"kind": "EXIT", "value": {"got": "CANCEL"}}


async def test_a_process_spawns_and_talks_to_a_process(env: Env) -> None:
    r = ok(await env.call("via_process"))
    assert r["got"]["answer"]["echo"] == "via relay" and r["got"]["answer"]["greeting"] == "relayed"
    assert r["got"]["exit"] == "EXIT" and r["got"]["value"] == {"stopped": True, "count": 1}
    assert r["exit"] == "EXIT" and r["value"] is True


async def test_bad_spawns_say_what_is_wrong(env: Env) -> None:
    r = ok(await env.call("bad_spawns"))
    assert "pr:echo is a process.lua entry: it runs on a process.host" in r["unknown_host"]
    assert "host 'pr:nohost', which is not in the registry" in r["unknown_host"]
    assert "host 'pr:worker', a temporal.worker entry" in r["worker_host"]
    assert "'pr:nothing' is not in the registry" in r["unknown_entry"]
    assert r["no_process"] == "NotFound"
    assert "@legato." in r["control_topic"] and "Legato's own" in r["control_topic"]
    assert r["hog"].startswith("LimitExceeded: ") and "Lua memory (limits.lua_memory_bytes)" in r["hog"]


async def test_a_spinning_process_is_stopped_and_does_not_block_others(env: Env) -> None:
    r = ok(await env.call("isolated"))
    assert r["answered"] == "alive" and r["stuck_ok"] is True and r["stuck_kind"] == "EXIT"
    assert r["stuck_err"] == "LimitExceeded", r


async def test_a_workflow_spawns_processes_talks_to_them_and_gets_their_exits(env: Env) -> None:
    r = ok(await env.call("from_workflow", "pr:spawn_workflow_child", "wf-spawns"))
    assert r.get("message") is None, r
    v = r["v"]
    assert v["same_pid"] is True and v["answer"] == 7 and v["greeting"] == "from a workflow"
    assert v["exit"] == "EXIT" and v["value"] == {"stopped": True, "count": 1}
    assert v["doubled"] == {"doubled": 42}  # process.exec: the process's result
    assert "'pr:nothing' is not in the registry" in v["bad"]
    assert "boom from a process" in v["failing"]
    # the spawns are recorded: the whole history replays against the code (same pids, same order)
    hist = await env.service.get_workflow_history(api.GetHistoryRequest(api.ExecutionRef("wf-spawns"),
                                                                        page_size=1000))
    replay(env.registry, hist.events)
    spawns = [e for e in hist.events if e.event_type is EventType.SignalExternalWorkflowExecutionInitiated]
    assert [e.attrs["signal_name"] for e in spawns][:1] == ["@legato.spawn"]


async def test_a_workflow_linked_to_a_process_it_spawned_fails_with_it(env: Env) -> None:
    r = ok(await env.call("from_workflow", "pr:linked_process", "wf-linked"))
    assert r.get("v") is None and "linked process @" in r["message"] and "boom from a process" in r["message"]


async def test_a_workflow_monitors_a_process_and_talks_to_it(env: Env) -> None:
    r = ok(await env.call("workflow_watches", "monitor"))
    assert r["kind"] == "EXIT" and r["from_ok"] is True and r.get("message") is None
    assert r["value"] == {"answer": "from a workflow", "kind": "EXIT", "value": {"stopped": True, "count": 1}}


async def test_a_workflow_linked_to_a_crashing_process_is_taken_down(env: Env) -> None:
    r = ok(await env.call("workflow_watches", "link"))
    assert r["kind"] == "EXIT" and r["from_ok"] is True and r.get("value") is None
    assert "linked process @" in r["message"] and "crash requested" in r["message"]


async def test_a_process_linked_by_a_failing_workflow_is_taken_down(env: Env) -> None:
    r = ok(await env.call("workflow_link_down"))
    assert "the workflow gives up" in r["workflow"] and r["kind"] == "EXIT"
    assert "linked process" in r["message"] and "the workflow gives up" in r["message"]


async def test_a_process_a_workflow_spawned_linked_goes_down_with_it(env: Env) -> None:
    r = ok(await env.call("workflow_spawned_link_down"))
    assert "the parent gives up" in r["workflow"]
    assert "linked process" in r["process"] and "the parent gives up" in r["process"]


async def test_a_workflow_terminates_a_process(env: Env) -> None:
    r = ok(await env.call("workflow_terminates"))
    assert r == {"r": {"ok": True}, "kind": "EXIT", "err_kind": "Terminated", "message": "the workflow said so"}


async def test_a_service_that_keeps_crashing_is_restarted_with_backoff_then_given_up(env: Env) -> None:
    st = env.service_state("flaky")
    await env.until(lambda: st.state == "failed", "flaky gives up")
    assert st.restarts == 2 and "crashing at start" in st.last_error
    assert len(st.starts) == 3
    gaps = [b - a for a, b in zip(st.starts, st.starts[1:], strict=False)]
    assert gaps[0] >= 0.1 and gaps[1] >= 0.3, gaps  # initial_delay 100ms, backoff 3
    listed = {s["service"]: s for s in env.worker.process_listing()["services"]}
    assert listed["pr:flaky"]["state"] == "failed" and listed["pr:flaky"]["pid"] is None


async def test_auto_start_service_is_restarted_after_a_crash(env: Env) -> None:
    st = env.service_state("session")
    await env.until(lambda: st.state == "running", "session runs")
    first = st.pid
    listing = env.worker.process_listing()
    mine = [p for p in listing["processes"] if p["pid"] == first]
    assert mine and mine[0]["entry"] == "pr:echo" and mine[0]["service"] == "pr:session"
    assert mine[0]["restarts"] == 0 and mine[0]["state"] == "running"
    assert env.worker.supervisor.states["pr:manual"].state == "not_started"  # no auto_start
    await env.service.send_message(api.SendMessageRequest(first, "crash", None, sender="test"))
    await env.until(lambda: st.restarts == 1 and st.state == "running" and st.pid != first, "session restarted")
    assert "crash requested" in st.last_error
    listed = [p for p in env.worker.process_listing()["processes"] if p["service"] == "pr:session"]
    assert [p["restarts"] for p in listed] == [1] and listed[0]["pid"] == st.pid


async def test_stopping_the_worker_stops_its_processes(env: Env) -> None:
    st = env.service_state("session")
    await env.until(lambda: st.state == "running", "session runs")
    assert env.worker.processes.live
    await env.worker.stop()
    assert not env.worker.processes.live and st.state == "stopped"


async def test_a_service_is_started_stopped_and_restarted_by_hand(env: Env) -> None:
    sup = env.worker.supervisor
    st = env.service_state("manual")
    started = await sup.start_service("pr:manual")
    assert started["state"] == "running" and started["pid"] == st.pid and started["auto_start"] is False
    first = st.pid
    listed = [p for p in env.worker.process_listing()["processes"] if p["service"] == "pr:manual"]
    assert [p["pid"] for p in listed] == [first]
    with pytest.raises(ServiceCommandError) as e:
        await sup.start_service("pr:manual")
    assert e.value.status == 409 and f"service pr:manual is already running as {first}" in e.value.message
    # supervised like an auto_start one: a crash is restarted by its policy
    await env.service.send_message(api.SendMessageRequest(first, "crash", None, sender="test"))
    await env.until(lambda: st.restarts == 1 and st.state == "running", "manual restarted after a crash")
    second = st.pid
    assert second != first
    stopped = await sup.stop_service("pr:manual")
    assert stopped["state"] == "stopped" and stopped["pid"] is None and second not in env.worker.processes.live
    with pytest.raises(ServiceCommandError) as e:
        await sup.stop_service("pr:manual")
    assert e.value.status == 409 and "service pr:manual is not running (it is stopped)" in e.value.message
    again = await sup.restart_service("pr:manual")  # from stopped: a start
    assert again["state"] == "running" and again["restarts"] == 0 and again["pid"] not in (first, second)
    third = st.pid
    again = await sup.restart_service("pr:manual")  # while running: stop, then start
    assert again["state"] == "running" and again["pid"] != third and third not in env.worker.processes.live
    assert [p["pid"] for p in env.worker.process_listing()["processes"] if p["service"] == "pr:manual"] \
        == [again["pid"]]  # one copy on this worker, always
    with pytest.raises(ServiceCommandError) as e:
        await sup.start_service("pr:nope")
    assert e.value.status == 404 and e.value.message == (
        "this worker has no process.service 'pr:nope' (its services: pr:flaky, pr:manual, pr:session)")


async def test_a_service_that_gave_up_can_be_started_again(env: Env) -> None:
    st = env.service_state("flaky")
    await env.until(lambda: st.state == "failed", "flaky gives up")
    assert len(st.starts) == 3
    started = await env.worker.supervisor.start_service("pr:flaky")
    assert started["state"] == "running" and started["restarts"] == 0  # a fresh start: its policy anew
    await env.until(lambda: st.state == "failed" and len(st.starts) == 6, "flaky gives up again")
    assert st.restarts == 2 and "crashing at start" in st.last_error


def test_registry_errors_name_file_and_line(tmp_path: Any) -> None:
    from worker.entries import EntryError
    cases = {
        "host: pr:nothere": "`host` refers to pr:nothere, which does not exist",
        "host: pr:code": "`host` refers to pr:code, which is a process.lua, not a process.host",
        "lifecycle: {restart: {max_attempts: -1}}": "`max_attempts` must be a whole number >= 0",
        "lifecycle: {restart: {initial_delay: soon}}": "'soon' is not a duration",
        "lifecycle: {auto_start: yes please}": "`auto_start` must be true or false",
        "lifecycle: {restart: {backof: 2}}": "unknown field `backof`",
        "lifecycle: {restart: {max_delay: 5000}}": "`max_delay` must be a duration string such as",
    }
    (tmp_path / "p.lua").write_text("return {main = function() end}")
    for extra, message in cases.items():
        field = "" if extra.startswith("host") else "host: pr:h\n    "
        (tmp_path / "app.yaml").write_text(
            "version: '1.0'\nnamespace: pr\nentries:\n"
            "  - {name: h, kind: process.host}\n"
            "  - {name: code, kind: process.lua, source: file://p.lua}\n"
            f"  - name: svc\n    kind: process.service\n    process: pr:code\n    {field}{extra}\n")
        with pytest.raises(EntryError) as e:
            load_registry(tmp_path / "app.yaml")
        assert message in str(e.value), (extra, str(e.value))
        # file:line of the field at fault (the service starts on line 6: process on 8, host on 9, lifecycle on 10)
        line = 9 if extra.startswith("host") else 10
        assert str(e.value).startswith(f"{tmp_path / 'app.yaml'}:{line}: "), str(e.value)


def test_legato_worker_runs_services_and_lists_processes(tmp_path: Any) -> None:
    """Real `legato server start-dev` and `legato worker` processes; `legato process list`."""
    cluster = Cluster(tmp_path, APP)
    status = f"127.0.0.1:{free_port()}"
    cluster.worker.args += ["--metrics-address", status]
    cluster.worker.env["LEGATO_LOG_LEVEL"] = "INFO"
    try:
        cluster.start()
        cluster.worker.wait_for(r"service pr:session: running as @")
        cluster.worker.wait_for(r"service pr:flaky: .*gave up after 2 restart")
        p = legato("process", "list", "--worker", status, "--output", "json")
        assert p.returncode == 0, p.stderr
        data = json.loads(p.stdout)
        session = [x for x in data["processes"] if x["service"] == "pr:session"]
        assert len(session) == 1 and session[0]["entry"] == "pr:echo" and session[0]["pid"].startswith("@")
        states = {s["service"]: s["state"] for s in data["services"]}
        assert states == {"pr:flaky": "failed", "pr:session": "running", "pr:manual": "not_started"}
        with urllib.request.urlopen(f"http://{status}/metrics", timeout=10) as resp:
            scraped = resp.read().decode()
        assert 'legato_worker_processes{host="pr:host"} 1.0' in scraped
        assert 'legato_worker_service_restarts{service="pr:flaky"} 2.0' in scraped
        text = legato("process", "list", "--worker", status)
        assert text.returncode == 0 and session[0]["pid"] in text.stdout and "pr:flaky" in text.stdout
    finally:
        cluster.stop()


def test_two_workers_each_run_one_copy_and_are_controlled_one_by_one(tmp_path: Any) -> None:
    """Two real `legato worker` processes on one app (issue 15, item 3): each runs its own copy of
    every auto_start service (as each Wippy node runs its supervisor), one copy each; `legato
    process start|stop|restart --worker` acts on that worker only, with clear errors."""
    cluster = Cluster(tmp_path, APP)
    status_a, status_b = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    cluster.worker.args += ["--metrics-address", status_a]
    cluster.worker.env["LEGATO_LOG_LEVEL"] = "INFO"
    other = Proc(["worker", "--entries", str(APP), "--address", cluster.address, "--metrics-address", status_b],
                 env={"LEGATO_LOG_LEVEL": "INFO"})
    try:
        cluster.start()
        other.start().wait_for("worker polling")

        def listing(status: str) -> dict[str, Any]:
            p = legato("process", "list", "--worker", status, "--output", "json")
            assert p.returncode == 0, p.stderr
            return dict(json.loads(p.stdout))

        def sessions(status: str) -> list[str]:
            return [x["pid"] for x in listing(status)["processes"] if x["service"] == "pr:session"]

        def cli(*args: str) -> subprocess.CompletedProcess[str]:
            return legato("process", *args)

        # the service's start is logged once it runs; each worker has one copy of its own
        cluster.worker.wait_for(r"service pr:session: running as @")
        other.wait_for(r"service pr:session: running as @")
        a, b = sessions(status_a), sessions(status_b)
        assert len(a) == 1 and len(b) == 1 and a != b

        r = cli("start", "pr:manual", "--worker", status_a)
        assert r.returncode == 0 and "service pr:manual started: running as @" in r.stdout, r.stderr
        manual = {s["service"]: s for s in listing(status_a)["services"]}["pr:manual"]
        assert manual["state"] == "running" and manual["restarts"] == 0
        assert {s["service"]: s for s in listing(status_b)["services"]}["pr:manual"]["state"] == "not_started"
        r = cli("start", "pr:manual", "--worker", status_a)
        assert r.returncode == 3 and f"cannot start pr:manual: service pr:manual is already running as " \
            f"{manual['pid']}" in r.stderr, r.stderr
        r = cli("start", "pr:nope", "--worker", status_b)
        assert r.returncode == 3 and "cannot start pr:nope: this worker has no process.service 'pr:nope'" in r.stderr

        r = cli("stop", "pr:session", "--worker", status_b, "--output", "json")
        assert r.returncode == 0 and json.loads(r.stdout)["state"] == "stopped", r.stderr
        assert sessions(status_b) == [] and sessions(status_a) == a  # the other copy runs on
        r = cli("stop", "pr:session", "--worker", status_b)
        assert r.returncode == 3 and "service pr:session is not running (it is stopped)" in r.stderr
        r = cli("restart", "pr:session", "--worker", status_a)
        assert r.returncode == 0 and "service pr:session restarted: running as @" in r.stdout
        assert len(sessions(status_a)) == 1 and sessions(status_a) != a

        text = cli("list", "--worker", status_a)
        assert text.returncode == 0 and "pr:manual" in text.stdout and "RESTARTS" in text.stdout
        dead = f"127.0.0.1:{free_port()}"
        r = cli("restart", "pr:session", "--worker", dead)
        assert r.returncode == 3 and f"--worker {dead}: cannot restart pr:session:" in r.stderr
        assert "Traceback" not in r.stderr
    finally:
        other.stop()
        cluster.stop()
