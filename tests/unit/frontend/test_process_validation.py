"""Frontend, issue 3: every new start field, cancel deadlines and the process calls are validated
with errors naming the field; good requests are routed (signals to history, caller messages and
mailboxes to matching, monitors to history)."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from frontend.service import Frontend
from legato import api
from legato.config import Config, Limits
from legato.errors import InvalidArgument, NotFound
from legato.tokens import TaskToken


class Recorder:
    def __init__(self, name: str, answer: Any = None) -> None:
        self.name = name
        self.answer = answer
        self.calls: list[tuple[str, Any]] = []

    def __getattr__(self, method: str) -> Callable[..., Awaitable[Any]]:
        async def call(*args: Any) -> Any:
            self.calls.append((method, args[0] if len(args) == 1 else args))
            return self.answer
        return call


@pytest.fixture
def parts() -> tuple[Frontend, Recorder, Recorder]:
    history, matching = Recorder("history"), Recorder("matching", answer=True)
    cfg = Config(limits=Limits(max_payload_bytes=1000, max_monitors=2, max_buffered_signals=2))
    return Frontend(history, matching, Recorder("visibility"), cfg), history, matching  # type: ignore[arg-type]


START = api.StartWorkflowRequest("wf", "app:main", "queue")
REF = api.ExecutionRef("wf")


def start(**kw: Any) -> api.StartWorkflowRequest:
    return dataclasses.replace(START, **kw)


def act_token() -> bytes:
    return TaskToken(kind="activity", namespace="default", workflow_id="wf", run_id="r1", scheduled_event_id=2,
                     started_event_id=0, attempt=1).encode()


BAD: list[tuple[str, Callable[[Frontend], Awaitable[Any]], str]] = [
    ("workflow id with the caller prefix", lambda fe: fe.start_workflow(start(workflow_id="@me")),
     "workflow_id '@me' starts with '@'"),
    ("retry policy not a mapping", lambda fe: fe.start_workflow(start(retry_policy=[1])),
     "retry_policy must be a mapping"),
    ("retry policy unknown key", lambda fe: fe.start_workflow(start(retry_policy={"tries": 3})),
     "retry_policy has unknown key 'tries'"),
    ("retry policy negative attempts", lambda fe: fe.start_workflow(start(retry_policy={"maximum_attempts": -1})),
     "retry_policy.maximum_attempts is -1"),
    ("retry policy zero interval", lambda fe: fe.start_workflow(start(retry_policy={"initial_interval_ms": 0})),
     "retry_policy.initial_interval_ms is 0"),
    ("retry policy coefficient", lambda fe: fe.start_workflow(start(retry_policy={"backoff_coefficient": 0.5})),
     "retry_policy.backoff_coefficient must be a number between 1 and 1000"),
    ("retry policy error types", lambda fe: fe.start_workflow(
        start(retry_policy={"non_retryable_error_types": "INVALID"})), "retry_policy.non_retryable_error_types"),
    ("bad cron", lambda fe: fe.start_workflow(start(cron_schedule="every day")),
     "cron_schedule 'every day' is not a cron schedule"),
    ("cron with 6 fields", lambda fe: fe.start_workflow(start(cron_schedule="0 0 * * * *")),
     "cron_schedule '0 0 * * * *' is not a cron schedule"),
    ("cron out of range", lambda fe: fe.start_workflow(start(cron_schedule="61 * * * *")),
     "is not a cron schedule"),
    ("negative start delay", lambda fe: fe.start_workflow(start(start_delay_ms=-1)), "start_delay_ms is -1"),
    ("start delay with cron", lambda fe: fe.start_workflow(start(start_delay_ms=5, cron_schedule="* * * * *")),
     "start_delay_ms cannot be combined with cron_schedule"),
    ("already-started flag not bool", lambda fe: fe.start_workflow(start(execution_error_when_already_started=1)),
     "execution_error_when_already_started must be true or false"),
    ("eager flag not bool", lambda fe: fe.start_workflow(start(enable_eager_start="yes")),
     "enable_eager_start must be true or false"),
    ("wait flag not bool", lambda fe: fe.start_workflow(start(wait_for_cancellation=None)),
     "wait_for_cancellation must be true or false"),
    ("start messages not a list", lambda fe: fe.start_workflow(start(start_messages="go")),
     "start_messages must be a list"),
    ("start message not a message", lambda fe: fe.start_workflow(start(start_messages=[("go", 1)])),
     "start_messages[0] must be a start message"),
    ("start message empty topic", lambda fe: fe.start_workflow(start(start_messages=[api.StartMessage("")])),
     "start_messages[0].topic must not be empty"),
    ("start messages too large",
     lambda fe: fe.start_workflow(start(start_messages=[api.StartMessage("t", "x" * 2000)])),
     "start_messages is"),
    ("too many start messages", lambda fe: fe.start_workflow(start(start_messages=[api.StartMessage("t")] * 3)),
     "start_messages has 3 messages; the limit (limits.max_buffered_signals) is 2"),
    ("parent not a parent", lambda fe: fe.start_workflow(start(parent={"workflow_id": "p"})),
     "parent must be a parent"),
    ("parent without run", lambda fe: fe.start_workflow(start(parent=api.ParentInfo("default", "p", "", 5))),
     "parent.run_id must not be empty"),
    ("parent event zero", lambda fe: fe.start_workflow(start(parent=api.ParentInfo("default", "p", "r", 0))),
     "parent.initiated_event_id is 0"),
    ("unknown parent close policy", lambda fe: fe.start_workflow(start(parent_close_policy="explode")),
     "parent_close_policy has unknown value 'explode'"),
    ("monitor that is a workflow id", lambda fe: fe.start_workflow(start(monitors=["wf-2"])),
     "monitors[0] must be a caller pid"),
    ("too many monitors", lambda fe: fe.start_workflow(start(monitors=["@a", "@b", "@c"])),
     "monitors has 3 pids; the limit (limits.max_monitors) is 2"),
    ("negative cancel deadline", lambda fe: fe.request_cancel_workflow(api.CancelWorkflowRequest(REF, deadline_ms=-1)),
     "deadline_ms is -1"),
    ("send with empty target", lambda fe: fe.send_message(api.SendMessageRequest("", "t")),
     "target must not be empty"),
    ("send to bare @", lambda fe: fe.send_message(api.SendMessageRequest("@", "t")), "target must be a caller pid"),
    ("send with empty topic", lambda fe: fe.send_message(api.SendMessageRequest("wf", "")),
     "topic must not be empty"),
    ("send too large", lambda fe: fe.send_message(api.SendMessageRequest("wf", "t", "x" * 2000)), "payload is"),
    ("open mailbox of a workflow id", lambda fe: fe.open_mailbox("wf"), "pid must be a caller pid"),
    ("close mailbox of a workflow id", lambda fe: fe.close_mailbox("wf"), "pid must be a caller pid"),
    ("poll mailbox of a workflow id", lambda fe: fe.poll_mailbox(api.PollMailboxRequest("wf")),
     "pid must be a caller pid"),
    ("poll mailbox wait too long", lambda fe: fe.poll_mailbox(api.PollMailboxRequest("@c", timeout_ms=10**9)),
     "timeout_ms is 1000000000"),
    ("poll mailbox too many", lambda fe: fe.poll_mailbox(api.PollMailboxRequest("@c", max_messages=10_001)),
     "max_messages is 10001; it must be between 1 and 10000"),
    ("poll mailbox none", lambda fe: fe.poll_mailbox(api.PollMailboxRequest("@c", max_messages=0)),
     "max_messages is 0"),
    ("monitor by a workflow id", lambda fe: fe.monitor_workflow(api.MonitorWorkflowRequest(REF, "wf-2")),
     "monitor_pid must be a caller pid"),
    ("monitor without a ref", lambda fe: fe.monitor_workflow(api.MonitorWorkflowRequest(None, "@c")),  # type: ignore[arg-type]
     "ref is required"),
    ("monitor link not bool", lambda fe: fe.monitor_workflow(api.MonitorWorkflowRequest(REF, "@c", link=1)),  # type: ignore[arg-type]
     "link must be true or false"),
    ("canceled without token", lambda fe: fe.respond_activity_task_canceled(
        api.RespondActivityTaskCanceledRequest(b"")), "task_token is required"),
    ("canceled details too large", lambda fe: fe.respond_activity_task_canceled(
        api.RespondActivityTaskCanceledRequest(act_token(), "x" * 2000)), "details is"),
]


@pytest.mark.parametrize(("what", "call", "fragment"), BAD, ids=[b[0] for b in BAD])
async def test_bad_request_names_the_field(parts: tuple[Frontend, Recorder, Recorder], what: str,
                                           call: Callable[[Frontend], Awaitable[Any]], fragment: str) -> None:
    fe, history, matching = parts
    with pytest.raises(InvalidArgument) as info:
        await call(fe)
    assert fragment in info.value.message
    assert history.calls == [] and matching.calls == []


async def test_start_with_every_option_reaches_history(parts: tuple[Frontend, Recorder, Recorder]) -> None:
    fe, history, _ = parts
    req = start(retry_policy={"initial_interval_ms": 10, "backoff_coefficient": 2, "maximum_interval_ms": 0,
                              "maximum_attempts": 3, "non_retryable_error_types": ["INVALID"]},
                cron_schedule="*/5 * * * *", execution_error_when_already_started=True, enable_eager_start=True,
                wait_for_cancellation=True, start_messages=[api.StartMessage("go", {"n": 1})],
                parent=api.ParentInfo("default", "p", "r", 5), parent_close_policy=api.ParentClosePolicy.ABANDON,
                monitors=["@c1"])
    await fe.start_workflow(req)
    await fe.start_workflow(start(start_delay_ms=5_000))
    assert [c[0] for c in history.calls] == ["start_workflow", "start_workflow"]
    assert history.calls[0][1] is req


async def test_send_to_a_workflow_is_a_signal_with_the_sender(parts: tuple[Frontend, Recorder, Recorder]) -> None:
    fe, history, matching = parts
    await fe.send_message(api.SendMessageRequest("wf", "approve", {"ok": 1}, "@c1", "shop", "req-1"))
    assert matching.calls == []
    (method, sig), = history.calls
    assert method == "signal_workflow"
    assert sig == api.SignalWorkflowRequest(api.ExecutionRef("wf", "", "shop"), "approve", {"ok": 1},
                                            sender="@c1", identity="@c1", request_id="req-1")


async def test_send_to_a_caller_goes_to_its_mailbox(parts: tuple[Frontend, Recorder, Recorder]) -> None:
    fe, history, matching = parts
    await fe.send_message(api.SendMessageRequest("@c1", "reply", [1], "wf"))
    assert history.calls == []
    assert matching.calls == [("deliver_message", ("@c1", api.ProcessMessage("message", "reply", [1], "wf")))]


async def test_send_to_a_gone_caller_is_not_found(parts: tuple[Frontend, Recorder, Recorder]) -> None:
    fe, _, matching = parts
    matching.answer = False
    with pytest.raises(NotFound, match="no caller @gone"):
        await fe.send_message(api.SendMessageRequest("@gone", "reply"))


async def test_mailbox_and_monitor_calls_are_routed(parts: tuple[Frontend, Recorder, Recorder]) -> None:
    fe, history, matching = parts
    await fe.open_mailbox("@c1")
    await fe.poll_mailbox(api.PollMailboxRequest("@c1", 100, 10))
    await fe.close_mailbox("@c1")
    await fe.monitor_workflow(api.MonitorWorkflowRequest(REF, "@c1", link=True))
    await fe.request_cancel_workflow(api.CancelWorkflowRequest(REF, deadline_ms=5_000))
    await fe.respond_activity_task_canceled(api.RespondActivityTaskCanceledRequest(act_token(), {"d": 1}))
    assert [c[0] for c in matching.calls] == ["open_mailbox", "poll_mailbox", "close_mailbox"]
    assert [c[0] for c in history.calls] == ["monitor_workflow", "request_cancel_workflow",
                                             "respond_activity_task_canceled"]
