"""`legato workflow start|signal|cancel` flags reach the request (the gRPC client is a fake)."""

from __future__ import annotations

from typing import Any

import pytest

from legato import api
from legato.cli import workflow_cmds
from legato.cli.main import main


class FakeClient:
    calls: list[tuple[str, Any]] = []

    def __init__(self, address: str, **options: Any) -> None:  # options: TLS and token
        self.address = address

    async def __aenter__(self) -> FakeClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def start_workflow(self, req: api.StartWorkflowRequest) -> api.StartWorkflowResponse:
        self.calls.append(("start_workflow", req))
        return api.StartWorkflowResponse("run-1", True)

    async def signal_workflow(self, req: api.SignalWorkflowRequest) -> None:
        self.calls.append(("signal_workflow", req))

    async def send_message(self, req: api.SendMessageRequest) -> None:
        self.calls.append(("send_message", req))

    async def request_cancel_workflow(self, req: api.CancelWorkflowRequest) -> None:
        self.calls.append(("request_cancel_workflow", req))


@pytest.fixture(autouse=True)
def fake(monkeypatch: pytest.MonkeyPatch) -> type[FakeClient]:
    FakeClient.calls = []
    monkeypatch.setattr(workflow_cmds, "GrpcClient", FakeClient)
    return FakeClient


def cli(*args: str) -> int:
    return main(list(args))


BASE = ("workflow", "start", "--type", "app:order", "--task-queue", "orders", "--id", "order-1")


def test_every_start_option_is_a_flag() -> None:
    code = cli(*BASE, "--namespace", "shop",
            "--retry-policy", '{"initial_interval": "2s", "maximum_attempts": 3, "backoff_coefficient": 1.5}',
            "--cron", "0 */6 * * *", "--start-delay", "10m", "--memo", '{"a": 1}', "--memo", "b=2",
            "--search-attr", 'Prio=3', "--search-attribute", 'Customer="ann"', "--context", '{"user": "ann"}',
            "--message", 'go={"n": 1}', "--message", "ping=hello", "--execution-error-when-already-started",
            "--enable-eager-start", "--wait-for-cancellation", "--parent-close-policy", "abandon",
            "--execution-timeout", "1h", "--run-timeout", "30m", "--task-timeout", "5s",
            "--id-conflict-policy", "use_existing", "--id-reuse-policy", "reject_duplicate")
    assert code == 0
    (method, req), = FakeClient.calls
    assert method == "start_workflow"
    assert req.namespace == "shop"
    assert req.retry_policy == {"initial_interval_ms": 2000, "backoff_coefficient": 1.5, "maximum_interval_ms": 0,
                                "maximum_attempts": 3, "non_retryable_error_types": []}
    assert req.cron_schedule == "0 */6 * * *"
    assert req.start_delay_ms == 600_000
    assert req.memo == {"a": 1, "b": 2}
    assert req.search_attributes == {"Prio": 3, "Customer": "ann"}
    assert req.context == {"user": "ann"}
    assert req.start_messages == [api.StartMessage("go", {"n": 1}), api.StartMessage("ping", "hello")]
    assert req.execution_error_when_already_started and req.enable_eager_start and req.wait_for_cancellation
    assert req.parent_close_policy == api.ParentClosePolicy.ABANDON
    assert (req.execution_timeout_ms, req.run_timeout_ms, req.task_timeout_ms) == (3_600_000, 1_800_000, 5_000)
    assert req.id_conflict_policy == api.IdConflictPolicy.USE_EXISTING
    assert req.id_reuse_policy == api.IdReusePolicy.REJECT_DUPLICATE


def test_defaults_without_flags() -> None:
    assert cli(*BASE)== 0
    (_, req), = FakeClient.calls
    assert req.retry_policy is None and req.cron_schedule == "" and req.start_delay_ms == 0
    assert req.start_messages == [] and req.context == {} and req.memo == {}
    assert req.parent_close_policy == api.ParentClosePolicy.TERMINATE


def test_retry_policy_in_api_form() -> None:
    assert cli(*BASE, "--retry-policy", '{"initial_interval_ms": 50, "maximum_attempts": 2}')== 0
    assert FakeClient.calls[0][1].retry_policy["initial_interval_ms"] == 50


@pytest.mark.parametrize(("args", "fragment"), [
    (("--retry-policy", "[1]"), "--retry-policy must be a JSON object"),
    (("--retry-policy", "{oops"), "--retry-policy is not valid JSON"),
    (("--retry-policy", '{"tries": 3}'), "unknown retry policy key 'tries'"),
    (("--context", '"x"'), "--context must be a JSON object"),
    (("--memo", "{bad"), "--memo is not valid JSON"),
    (("--message", "nope"), "--message takes TOPIC=JSON"),
    (("--start-delay", "soon"), "--start-delay: 'soon' is not a duration"),
    (("--parent-close-policy", "explode"), "'explode' is not one of"),
])
def test_bad_flags_name_themselves(args: tuple[str, ...], fragment: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(*BASE, *args) != 0
    captured = capsys.readouterr()
    assert fragment in captured.err + captured.out
    assert FakeClient.calls == []


def test_cancel_with_a_deadline() -> None:
    assert cli("workflow", "cancel", "--id", "order-1", "--deadline", "5s")== 0
    (method, req), = FakeClient.calls
    assert method == "request_cancel_workflow" and req.deadline_ms == 5_000
    assert req.ref == api.ExecutionRef("order-1")


def test_signal_to_a_caller_pid_is_a_message() -> None:
    assert cli("workflow", "signal", "--id", "@caller-1", "--name", "reply", "--input", "[1]")== 0
    assert FakeClient.calls == [("send_message", FakeClient.calls[0][1])]
    req = FakeClient.calls[0][1]
    assert (req.target, req.topic, req.payload) == ("@caller-1", "reply", [1])


def test_signal_to_a_workflow_pid_is_a_signal() -> None:
    assert cli("workflow", "signal", "--id", "order-1", "--name", "go")== 0
    assert FakeClient.calls[0][0] == "signal_workflow"
