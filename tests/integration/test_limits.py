"""Every limit fails where it is crossed, with a clear error (README, "Limits").

Over the API, against a real `legato server start-dev` on SQLite: JSON nested too deep, durations
and numbers out of range, a cron schedule that never fires, a corrupt protobuf, a caller's
mailbox and a workflow's buffered signals full in bytes. Each is answered with the right status
(INVALID_ARGUMENT or RESOURCE_EXHAUSTED, never INTERNAL or UNAVAILABLE) and a message naming the
field and the limit; the server logs no traceback and still serves.

Over the CLI: the same inputs give exit code 3 and one paragraph on stderr, never a traceback.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml

from legato import api, codec
from legato.client import GrpcClient
from legato.errors import InvalidArgument, ResourceExhausted, ServiceError
from legato.proto import legato_pb2 as pb
from tests.integration.procs import LEGATO, Proc, free_port
from tests.unit.legato.test_grpc_decoding import call as call_raw

MAX_DEPTH = codec.DEFAULT_MAX_PAYLOAD_DEPTH
NEVER = "0 0 30 2 *"  # February 30th
INT64 = 2**63 - 1
CONFIG = {
    "matching": {"max_mailbox_bytes": 100_000, "max_mailboxes_total_bytes": 250_000},
    "limits": {"max_history_bytes": 1_000_000},
}


def deep(levels: int) -> Any:
    value: list[Any] = []
    for _ in range(levels - 1):
        value = [value]
    return value


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Proc]]:
    tmp = tmp_path_factory.mktemp("limits")
    (tmp / "legato.yaml").write_text(yaml.safe_dump(CONFIG))
    port = free_port()
    proc = Proc(["server", "start-dev", "--db", str(tmp / "legato.db"), "--port", str(port),
                 "--config", str(tmp / "legato.yaml")]).start()
    proc.wait_for("listening")
    try:
        yield f"127.0.0.1:{port}", proc
    finally:
        proc.stop()
    assert "Traceback" not in proc.output(), proc.output()


@pytest.fixture
async def client(server: tuple[str, Proc]) -> AsyncIterator[GrpcClient]:
    """A client; after the test, the server must still answer (and have logged no traceback)."""
    address, proc = server
    async with GrpcClient(address) as c:
        yield c
        assert (await c.count_workflows(api.CountWorkflowsRequest("default", ""))).count >= 0
    assert proc.alive() and "Traceback" not in proc.output(), proc.output()


def start(wid: str, **kw: Any) -> api.StartWorkflowRequest:
    return api.StartWorkflowRequest(wid, "app:w", "limits-q", **kw)


async def refused(call: Any, cls: type[ServiceError], *needles: str) -> ServiceError:
    with pytest.raises(cls) as info:
        await call
    for needle in needles:
        assert needle in info.value.message, info.value.message
    return info.value


# ------------------------------------------------------------------ depth

@pytest.mark.parametrize(("field", "make"), [
    ("input", lambda v: start("d-1", input=[v])),
    ("memo", lambda v: start("d-2", memo={"a": v})),
    ("context", lambda v: start("d-3", context={"a": v})),
    ("search_attributes", lambda v: start("d-4", search_attributes={"a": v})),
    ("start_messages", lambda v: start("d-5", start_messages=[api.StartMessage("t", v)])),
])
async def test_a_start_nested_too_deep_is_refused(client: GrpcClient, field: str, make: Any) -> None:
    err = await refused(client.start_workflow(make(deep(MAX_DEPTH))), InvalidArgument, field,
                        f"the limit (limits.max_payload_depth) is {MAX_DEPTH} levels")
    assert err.reason == codec.REASON_TOO_DEEP
    if field != "search_attributes":  # whose values are flat anyway
        await client.start_workflow(make(deep(MAX_DEPTH - 3)))  # within the limit: fine


async def test_a_signal_or_message_nested_too_deep_is_refused(client: GrpcClient) -> None:
    await client.start_workflow(start("d-sig"))
    ref = api.ExecutionRef("d-sig")
    await refused(client.signal_workflow(api.SignalWorkflowRequest(ref, "s", deep(MAX_DEPTH + 1))),
                  InvalidArgument, "input nests arrays and objects 65 levels deep")
    await client.open_mailbox("@deep")
    await refused(client.send_message(api.SendMessageRequest("@deep", "t", deep(MAX_DEPTH + 1))),
                  InvalidArgument, "payload nests arrays and objects 65 levels deep")


async def test_the_python_client_refuses_what_it_cannot_encode(client: GrpcClient) -> None:
    err = await refused(client.start_workflow(start("d-py", input=[deep(5000)])), InvalidArgument,
                        "input nests arrays and objects too deep to be encoded")
    assert err.reason == codec.REASON_TOO_DEEP


@pytest.mark.parametrize(("rpc", "message"), [
    ("StartWorkflow", pb.StartWorkflowRequest(workflow_id="x", workflow_type="a:b", task_queue="q",
                                              input_json="[" * 5000 + "]" * 5000)),
    ("StartWorkflow", pb.StartWorkflowRequest(workflow_id="x", workflow_type="a:b", task_queue="q",
                                              memo_json='{"a":' * 5000 + "1" + "}" * 5000)),
    ("SignalWorkflow", pb.SignalWorkflowRequest(ref=pb.ExecutionRef(workflow_id="x"), signal_name="s",
                                                input_json="[" * 100_000)),
    ("SendMessage", pb.SendMessageRequest(target="@deep", topic="t", payload_json="[" * 5000 + "]" * 5000)),
], ids=["input", "memo", "signal", "message"])
async def test_json_thousands_of_levels_deep_is_refused_before_decoding(
        client: GrpcClient, server: tuple[str, Proc], rpc: str, message: Any) -> None:
    code, details = await raw_call(server[0], rpc, message.SerializeToString())
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "levels deep, more than can be decoded (512)" in details


# ------------------------------------------------------------------ ranges

@pytest.mark.parametrize(("field", "kw"), [
    ("execution_timeout_ms", {"execution_timeout_ms": INT64}),
    ("run_timeout_ms", {"run_timeout_ms": 2**62}),
    ("start_delay_ms", {"start_delay_ms": INT64}),
    ("retry_policy.initial_interval_ms", {"retry_policy": {"initial_interval_ms": INT64}}),
    ("retry_policy.maximum_interval_ms", {"retry_policy": {"maximum_interval_ms": 10**19}}),
    ("retry_policy.maximum_attempts", {"retry_policy": {"maximum_attempts": 2**40}}),
    ("cron_schedule", {"cron_schedule": NEVER}),
    ("task_timeout_ms", {"task_timeout_ms": INT64}),
])
async def test_a_start_option_out_of_range_is_refused_naming_it(client: GrpcClient, field: str,
                                                                 kw: dict[str, Any]) -> None:
    err = await refused(client.start_workflow(start("r-1", **kw)), InvalidArgument, field)
    if field == "cron_schedule":
        assert err.message == f"cron_schedule {NEVER!r} never fires (no such time in the next 50 years)"


async def test_other_numbers_out_of_range(client: GrpcClient) -> None:
    await client.start_workflow(start("r-2"))
    ref = api.ExecutionRef("r-2")
    await refused(client.request_cancel_workflow(api.CancelWorkflowRequest(ref, deadline_ms=INT64)),
                  InvalidArgument, "deadline_ms is 9223372036854775807; it must be between 0 and 3153600000000")
    await refused(client.get_workflow_history(api.GetHistoryRequest(ref, page_size=2**31 - 1)),
                  InvalidArgument, "page_size is 2147483647")
    await refused(client.list_workflows(api.ListWorkflowsRequest("default", "", 2**31 - 1)),
                  InvalidArgument, "page_size is 2147483647")
    await refused(client.count_workflows(api.CountWorkflowsRequest("default", "CustomInt > " + "9" * 400)),
                  InvalidArgument, "is out of range")
    await refused(client.start_workflow(start("r-3", search_attributes={"n": 10**400})), InvalidArgument,
                  "search_attributes.n: a number is out of range")
    await client.open_mailbox("@range")
    await refused(client.poll_mailbox(api.PollMailboxRequest("@range", 0, 2**31 - 1)), InvalidArgument,
                  "max_messages is 2147483647")
    page = await client.get_workflow_history(api.GetHistoryRequest(ref, first_event_id=INT64))  # the end: empty
    assert page.events == []


# ------------------------------------------------------------------ protobuf

async def raw_call(address: str, rpc: str, body: bytes) -> tuple[grpc.StatusCode, str]:
    async with grpc.aio.insecure_channel(address) as ch:
        return await call_raw(ch, rpc, body)


@pytest.mark.parametrize("body", [b"\xff" * 16, b"\x0a\xff\xff\xff\xff\x0f", bytes(range(256))])
async def test_a_corrupt_protobuf_is_invalid_argument(client: GrpcClient, server: tuple[str, Proc],
                                                      body: bytes) -> None:
    code, details = await raw_call(server[0], "StartWorkflow", body)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.startswith("StartWorkflow: the request is not a valid legato.v1.StartWorkflowRequest message")


# ------------------------------------------------------------------ buffers in bytes

async def test_a_callers_mailbox_is_bounded_in_bytes(client: GrpcClient) -> None:
    """200 messages of 2 MB were all accepted once (+260 MB of server memory)."""
    await client.open_mailbox("@full")
    sent = 0
    with pytest.raises(ResourceExhausted) as info:
        for _ in range(100):
            await client.send_message(api.SendMessageRequest("@full", "t", "x" * 30_000))
            sent += 1
    assert sent == 3  # 3 x ~30 KB fit in 100,000 bytes
    assert info.value.reason == "MailboxFull"
    assert "the limit (matching.max_mailbox_bytes) is 100000 bytes" in info.value.message
    got = await client.poll_mailbox(api.PollMailboxRequest("@full", 0, 10))
    assert len(got) == 3
    await client.send_message(api.SendMessageRequest("@full", "t", "x" * 30_000))  # room again
    await client.close_mailbox("@full")


async def test_all_the_mailboxes_together_are_bounded_in_bytes(client: GrpcClient) -> None:
    pids = [f"@many-{i}" for i in range(4)]
    with pytest.raises(ResourceExhausted, match=r"matching.max_mailboxes_total_bytes\) is 250000 bytes"):
        for pid in pids:
            await client.open_mailbox(pid)
            for _ in range(3):
                await client.send_message(api.SendMessageRequest(pid, "t", "x" * 30_000))
    for pid in pids:
        await client.close_mailbox(pid)


async def test_signals_buffered_during_a_workflow_task_are_bounded_in_bytes(client: GrpcClient) -> None:
    await client.start_workflow(api.StartWorkflowRequest("buffered", "app:w", "buffer-q"))
    task = await client.poll_workflow_task(api.PollRequest("buffer-q", timeout_ms=5_000))
    assert task is not None  # started: signals now wait in memory for it to complete
    ref = api.ExecutionRef("buffered")
    sent = 0
    with pytest.raises(ResourceExhausted) as info:
        for _ in range(50):
            await client.signal_workflow(api.SignalWorkflowRequest(ref, "s", "x" * 200_000))
            sent += 1
    assert 4 <= sent <= 5
    assert "(limits.max_history_bytes)" in info.value.message
    await client.terminate_workflow(api.TerminateWorkflowRequest(ref, "done"))


# ------------------------------------------------------------------ the CLI

def cli(address: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    full = [LEGATO, *args] + (["--address", address] if args[0] == "workflow" else [])
    return subprocess.run(full, capture_output=True, timeout=60, env={**os.environ, **(env or {})})


def _argv(text: bytes) -> str:
    return os.fsdecode(text)  # how Python hands a non-UTF-8 argument to the program


def _cli_cases(tmp: Path) -> list[tuple[list[str], str]]:
    bad_yaml = tmp / "latin1.yaml"
    bad_yaml.write_bytes("limits:\n  max_payload_depth: 10 # déjà\n".encode("latin-1"))
    nested = "[" * 5000 + "]" * 5000
    return [
        (["workflow", "start", "--type", "a:b", "--task-queue", "q", "--input", nested],
         "--input nests arrays and objects 5000 levels deep"),
        (["workflow", "start", "--type", "a:b", "--task-queue", "q", "--input", "[" * 70 + "]" * 70],
         "the limit (limits.max_payload_depth) is 64 levels"),
        (["workflow", "start", "--type", "a:b", "--task-queue", "q", "--memo", '{"a":' + nested + "}"],
         "--memo nests arrays and objects"),
        (["workflow", "start", "--type", "a:b", "--task-queue", "q", "--search-attribute", "a=" + nested],
         "--search-attribute nests arrays and objects"),
        (["workflow", "start", "--type", "a:b", "--task-queue", "q", "--message", "t=" + nested],
         "--message nests arrays and objects"),
        (["workflow", "signal", "--id", "x", "--name", "s", "--input", nested], "--input nests arrays"),
        (["workflow", "start", "--type", "a:b", "--task-queue", "q", "--input", '"\\ud800"'], "lone surrogate"),
        (["workflow", "start", "--type", _argv(b"a:\xff"), "--task-queue", "q"], "is not valid UTF-8 text"),
        (["workflow", "start", "--type", "a:b", "--task-queue", "q", "--execution-timeout", "99999999999d"],
         "--execution-timeout: '99999999999d' is too long; the longest duration is 36500d"),
        (["workflow", "start", "--type", "a:b", "--task-queue", "q", "--start-delay", str(INT64)],
         "--start-delay: '9223372036854775807' is too long"),
        (["workflow", "start", "--type", "a:b", "--task-queue", "q", "--run-timeout", "1e400h"],
         "--run-timeout: '1e400h' is not a duration"),
        (["workflow", "start", "--type", "a:b", "--task-queue", "q", "--cron", NEVER], "never fires"),
        (["workflow", "start", "--type", "a:b", "--task-queue", "q", "--retry-policy",
          '{"initial_interval": "' + "9" * 30 + 'h"}'], "is too long"),
        (["workflow", "start", "--type", "a:b", "--task-queue", "q", "--retry-policy",
          '{"maximum_attempts": 99999999999999}'], "retry_policy.maximum_attempts is 99999999999999"),
        (["workflow", "cancel", "--id", "x", "--deadline", "99999999999999d"], "--deadline: "),
        (["workflow", "result", "--id", "x", "--timeout", "36501d"], "--timeout: '36501d' is too long"),
        (["workflow", "list", "--query", "CustomInt = " + "9" * 500], "is out of range"),
        (["server", "start-dev", "--config", str(bad_yaml), "--port", "0"], "is not UTF-8 text"),
    ]


def test_cli_inputs_out_of_limits_give_exit_3_and_one_paragraph(
        server: tuple[str, Proc], tmp_path: Path) -> None:
    cases = _cli_cases(tmp_path)
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda case: cli(server[0], *case[0]), cases))
    for (args, needle), p in zip(cases, results, strict=True):
        err = p.stderr.decode(errors="replace")
        shown = f"{[a[:40] for a in args]}: exit {p.returncode}\n{err}"
        assert p.returncode == 3, shown
        assert "Traceback" not in err, shown
        assert err.startswith("error: ") and "\n\n" not in err.strip(), shown
        assert needle in err, shown
    assert server[1].alive()
