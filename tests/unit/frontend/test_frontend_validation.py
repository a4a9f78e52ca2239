"""Frontend: every kind of bad request is refused with InvalidArgument naming the field; good
requests are routed to history, matching or visibility."""

from __future__ import annotations

import base64
import dataclasses
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from frontend.service import Frontend
from legato import api
from legato.commands import Command, CommandType
from legato.config import Config, Limits
from legato.errors import Failure, InvalidArgument
from legato.tokens import TaskToken

LIMIT = 1000  # max_payload_bytes in these tests


class Recorder:
    """Stands in for history, matching and visibility: records (method, request) and answers."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.calls: list[tuple[str, Any]] = []

    def __getattr__(self, method: str) -> Callable[[Any], Awaitable[Any]]:
        async def call(req: Any) -> Any:
            self.calls.append((method, req))
            return f"{self.name}.{method}"
        return call


@pytest.fixture
def parts() -> tuple[Frontend, Recorder, Recorder, Recorder]:
    history, matching, visibility = Recorder("history"), Recorder("matching"), Recorder("visibility")
    fe = Frontend(history, matching, visibility, Config(limits=Limits(max_payload_bytes=LIMIT)))  # type: ignore[arg-type]
    return fe, history, matching, visibility


def wf_token(**kw: Any) -> bytes:
    d: dict[str, Any] = dict(kind="workflow", namespace="default", workflow_id="wf", run_id="r1",
                             scheduled_event_id=2, started_event_id=3, attempt=1)
    d.update(kw)
    return TaskToken(**d).encode()


def act_token() -> bytes:
    return wf_token(kind="activity", started_event_id=0)


REF = api.ExecutionRef("wf")
START = api.StartWorkflowRequest("wf", "app:main", "queue", input=[1, "two"])
BIG = "x" * (LIMIT + 1)


def start(**kw: Any) -> api.StartWorkflowRequest:
    return dataclasses.replace(START, **kw)


# (what the test checks, the call, a fragment the error message must contain)
BAD: list[tuple[str, Callable[[Frontend], Awaitable[Any]], str]] = [
    ("empty workflow id", lambda fe: fe.start_workflow(start(workflow_id="")), "workflow_id must not be empty"),
    ("control characters in id", lambda fe: fe.start_workflow(start(workflow_id="a\nb")),
     "workflow_id 'a\\nb' contains control characters"),
    ("id too long", lambda fe: fe.start_workflow(start(workflow_id="w" * 1001)), "workflow_id is 1001 characters"),
    ("id not a string", lambda fe: fe.start_workflow(start(workflow_id=7)), "workflow_id must be a string"),
    ("empty workflow type", lambda fe: fe.start_workflow(start(workflow_type="")), "workflow_type must not be empty"),
    ("empty task queue", lambda fe: fe.start_workflow(start(task_queue="")), "task_queue must not be empty"),
    ("empty namespace", lambda fe: fe.start_workflow(start(namespace="")), "namespace must not be empty"),
    ("input too large", lambda fe: fe.start_workflow(start(input=[BIG])), "input is 1005 bytes; the limit is 1000"),
    ("input not a list", lambda fe: fe.start_workflow(start(input="x")), "input must be a list"),
    ("input not JSON", lambda fe: fe.start_workflow(start(input=[{1, 2}])), "input cannot be encoded as JSON"),
    ("input NaN", lambda fe: fe.start_workflow(start(input=[float("nan")])), "input cannot be encoded as JSON"),
    ("memo too large", lambda fe: fe.start_workflow(start(memo={"m": BIG})), "memo is"),
    ("context not a mapping", lambda fe: fe.start_workflow(start(context=[1])), "context must be a mapping"),
    ("search attribute key", lambda fe: fe.start_workflow(start(search_attributes={1: "a"})),
     "search_attributes has a key that is not a string"),
    ("negative timeout", lambda fe: fe.start_workflow(start(execution_timeout_ms=-1)),
     "execution_timeout_ms is -1; it must be between 0"),
    ("task timeout above the maximum", lambda fe: fe.start_workflow(start(task_timeout_ms=10**9)),
     "task_timeout_ms is 1000000000; it must be between 0 and 120000"),
    ("timeout not an integer", lambda fe: fe.start_workflow(start(run_timeout_ms=1.5)),
     "run_timeout_ms must be an integer"),
    ("unknown reuse policy", lambda fe: fe.start_workflow(start(id_reuse_policy="sometimes")),
     "id_reuse_policy has unknown value 'sometimes'"),
    ("unknown conflict policy", lambda fe: fe.start_workflow(start(id_conflict_policy="ignore")),
     "id_conflict_policy has unknown value 'ignore'"),
    ("identity too long", lambda fe: fe.start_workflow(start(identity="i" * 1001)), "identity is 1001 characters"),
    ("request id too long", lambda fe: fe.start_workflow(start(request_id="r" * 1001)), "request_id is 1001"),
    ("empty signal name", lambda fe: fe.signal_workflow(api.SignalWorkflowRequest(REF, "")),
     "signal_name must not be empty"),
    ("signal input too large", lambda fe: fe.signal_workflow(api.SignalWorkflowRequest(REF, "s", BIG)), "input is"),
    ("signal to a bad run id", lambda fe: fe.signal_workflow(
        api.SignalWorkflowRequest(api.ExecutionRef("wf", run_id="\x00"), "s")), "ref.run_id"),
    ("missing ref", lambda fe: fe.describe_workflow(None), "ref is required"),  # type: ignore[arg-type]
    ("ref without workflow id", lambda fe: fe.describe_workflow(api.ExecutionRef("")),
     "ref.workflow_id must not be empty"),
    ("terminate reason too long", lambda fe: fe.terminate_workflow(api.TerminateWorkflowRequest(REF, BIG)),
     "reason is 1001 characters"),
    ("cancel with a bad namespace", lambda fe: fe.request_cancel_workflow(
        api.CancelWorkflowRequest(api.ExecutionRef("wf", namespace=""))), "ref.namespace must not be empty"),
    ("history page size zero", lambda fe: fe.get_workflow_history(api.GetHistoryRequest(REF, page_size=0)),
     "page_size is 0; it must be between 1 and 10000"),
    ("history first event zero", lambda fe: fe.get_workflow_history(api.GetHistoryRequest(REF, first_event_id=0)),
     "first_event_id is 0"),
    ("history wait too long", lambda fe: fe.get_workflow_history(
        api.GetHistoryRequest(REF, wait_new_event=True, timeout_ms=10**9)), "timeout_ms is 1000000000"),
    ("result wait negative", lambda fe: fe.get_workflow_result(api.GetResultRequest(REF, timeout_ms=-5)),
     "timeout_ms is -5"),
    ("list page size too large", lambda fe: fe.list_workflows(api.ListWorkflowsRequest(page_size=5000)),
     "page_size is 5000; it must be between 1 and 1000"),
    ("list query too long", lambda fe: fe.list_workflows(api.ListWorkflowsRequest(query="q" * 10_001)),
     "query is 10001 characters"),
    ("list page token not bytes", lambda fe: fe.list_workflows(api.ListWorkflowsRequest(next_page_token="x")),  # type: ignore[arg-type]
     "next_page_token must be bytes"),
    ("poll without a task queue", lambda fe: fe.poll_workflow_task(api.PollRequest("")),
     "task_queue must not be empty"),
    ("poll timeout too long", lambda fe: fe.poll_activity_task(api.PollRequest("q", timeout_ms=10**8)),
     "timeout_ms is 100000000"),
    ("poll in a bad namespace", lambda fe: fe.poll_activity_task(api.PollRequest("q", namespace="a\tb")),
     "namespace 'a\\tb' contains control characters"),
    ("missing task token", lambda fe: fe.respond_workflow_task_completed(
        api.RespondWorkflowTaskCompletedRequest(b"", [])), "task_token is required"),
    ("undecodable task token", lambda fe: fe.respond_workflow_task_completed(
        api.RespondWorkflowTaskCompletedRequest(b"not a token", [])), "task_token: malformed task token"),
    ("token with missing fields", lambda fe: fe.respond_activity_task_completed(
        api.RespondActivityTaskCompletedRequest(base64.urlsafe_b64encode(b'{"kind":"activity"}'))),
     "task_token: malformed task token"),
    ("activity token for a workflow task", lambda fe: fe.respond_workflow_task_completed(
        api.RespondWorkflowTaskCompletedRequest(act_token(), [])),
     "task_token is the token of a task of kind 'activity'; this call answers 'workflow' tasks"),
    ("workflow token for an activity", lambda fe: fe.record_activity_heartbeat(
        api.RecordActivityHeartbeatRequest(wf_token())), "this call answers 'activity' tasks"),
    ("unknown command type", lambda fe: fe.respond_workflow_task_completed(
        api.RespondWorkflowTaskCompletedRequest(wf_token(), [Command("LaunchRocket", {})])),  # type: ignore[arg-type]
     "commands[0].command_type has unknown value 'LaunchRocket'"),
    ("command attribute too large", lambda fe: fe.respond_workflow_task_completed(
        api.RespondWorkflowTaskCompletedRequest(wf_token(), [
            Command(CommandType.StartTimer, {"timer_id": "1"}),
            Command(CommandType.CompleteWorkflowExecution, {"result": BIG})])),
     "commands[1] (CompleteWorkflowExecution) attribute result is"),
    ("commands not a list", lambda fe: fe.respond_workflow_task_completed(
        api.RespondWorkflowTaskCompletedRequest(wf_token(), None)), "commands must be a list"),  # type: ignore[arg-type]
    ("unknown task failure cause", lambda fe: fe.respond_workflow_task_failed(
        api.RespondWorkflowTaskFailedRequest(wf_token(), "OOPS", Failure("x"))), "cause has unknown value 'OOPS'"),
    ("failure kind not a string", lambda fe: fe.respond_workflow_task_failed(
        api.RespondWorkflowTaskFailedRequest(wf_token(), "WORKFLOW_ERROR", Failure("x", kind=7))),  # type: ignore[arg-type]
     "failure.kind must be a string"),
    ("failure missing", lambda fe: fe.respond_activity_task_failed(
        api.RespondActivityTaskFailedRequest(act_token(), None)), "failure is required"),  # type: ignore[arg-type]
    ("failure cause malformed", lambda fe: fe.respond_activity_task_failed(
        api.RespondActivityTaskFailedRequest(act_token(), Failure("x", cause=Failure("y", retryable="no")))),  # type: ignore[arg-type]
     "failure.cause.retryable must be true or false"),
    ("failure details too large", lambda fe: fe.respond_activity_task_failed(
        api.RespondActivityTaskFailedRequest(act_token(), Failure("x", details=BIG))), "failure is"),
    ("activity result too large", lambda fe: fe.respond_activity_task_completed(
        api.RespondActivityTaskCompletedRequest(act_token(), result=BIG)), "result is 1003 bytes"),
    ("heartbeat details too large", lambda fe: fe.record_activity_heartbeat(
        api.RecordActivityHeartbeatRequest(act_token(), details=BIG)), "details is"),
]


@pytest.mark.parametrize(("what", "call", "message"), BAD, ids=[b[0] for b in BAD])
async def test_bad_request_is_refused_before_routing(
        parts: tuple[Frontend, Recorder, Recorder, Recorder], what: str,
        call: Callable[[Frontend], Awaitable[Any]], message: str) -> None:
    fe, history, matching, visibility = parts
    with pytest.raises(InvalidArgument) as info:
        await call(fe)
    assert message in info.value.message, info.value.message
    assert info.value.code == "INVALID_ARGUMENT"
    assert history.calls == matching.calls == visibility.calls == []


async def test_payload_too_large_has_its_own_reason(parts: tuple[Frontend, Recorder, Recorder, Recorder]) -> None:
    fe = parts[0]
    with pytest.raises(InvalidArgument) as info:
        await fe.start_workflow(start(input=[BIG]))
    assert info.value.reason == "PayloadTooLarge"


GOOD: list[tuple[str, Callable[[Frontend], Awaitable[Any]], str, str]] = [
    ("start", lambda fe: fe.start_workflow(START), "history", "start_workflow"),
    ("signal", lambda fe: fe.signal_workflow(api.SignalWorkflowRequest(REF, "go", {"a": 1})),
     "history", "signal_workflow"),
    ("terminate", lambda fe: fe.terminate_workflow(api.TerminateWorkflowRequest(REF, "why")),
     "history", "terminate_workflow"),
    ("cancel", lambda fe: fe.request_cancel_workflow(api.CancelWorkflowRequest(REF)),
     "history", "request_cancel_workflow"),
    ("describe", lambda fe: fe.describe_workflow(REF), "history", "describe_workflow"),
    ("history", lambda fe: fe.get_workflow_history(api.GetHistoryRequest(REF)), "history", "get_workflow_history"),
    ("result", lambda fe: fe.get_workflow_result(api.GetResultRequest(REF)), "history", "get_workflow_result"),
    ("list", lambda fe: fe.list_workflows(api.ListWorkflowsRequest(query="status = 'RUNNING'")),
     "visibility", "list"),
    ("poll workflow", lambda fe: fe.poll_workflow_task(api.PollRequest("q")), "matching", "poll_workflow_task"),
    ("poll activity", lambda fe: fe.poll_activity_task(api.PollRequest("q", timeout_ms=5)),
     "matching", "poll_activity_task"),
    ("complete workflow task", lambda fe: fe.respond_workflow_task_completed(
        api.RespondWorkflowTaskCompletedRequest(wf_token(), [Command(CommandType.CompleteWorkflowExecution,
                                                                     {"result": [1]})])),
     "history", "respond_workflow_task_completed"),
    ("fail workflow task", lambda fe: fe.respond_workflow_task_failed(
        api.RespondWorkflowTaskFailedRequest(wf_token(), "NON_DETERMINISTIC",
                                             Failure("boom", source="main.lua:3", cause=Failure("root")))),
     "history", "respond_workflow_task_failed"),
    ("complete activity", lambda fe: fe.respond_activity_task_completed(
        api.RespondActivityTaskCompletedRequest(act_token(), {"ok": True})),
     "history", "respond_activity_task_completed"),
    ("fail activity", lambda fe: fe.respond_activity_task_failed(
        api.RespondActivityTaskFailedRequest(act_token(), Failure("nope", kind="MyError"))),
     "history", "respond_activity_task_failed"),
    ("heartbeat", lambda fe: fe.record_activity_heartbeat(api.RecordActivityHeartbeatRequest(act_token(), 5)),
     "history", "record_activity_heartbeat"),
]


@pytest.mark.parametrize(("what", "call", "target", "method"), GOOD, ids=[g[0] for g in GOOD])
async def test_good_request_is_routed(
        parts: tuple[Frontend, Recorder, Recorder, Recorder], what: str,
        call: Callable[[Frontend], Awaitable[Any]], target: str, method: str) -> None:
    fe, *recorders = parts
    assert await call(fe) in (f"{target}.{method}", None)
    calls = {r.name: r.calls for r in recorders}
    assert [m for m, _ in calls.pop(target)] == [method]
    assert all(not c for c in calls.values())


async def test_payload_at_the_limit_is_accepted(parts: tuple[Frontend, Recorder, Recorder, Recorder]) -> None:
    fe, history, _, _ = parts
    await fe.signal_workflow(api.SignalWorkflowRequest(REF, "s", "y" * (LIMIT - 2)))  # "yyy..." is LIMIT bytes
    assert len(history.calls) == 1
