"""A request the server cannot decode is the caller's INVALID_ARGUMENT, never INTERNAL, and
costs no traceback in the log: a corrupt protobuf (parsed by our handler, not inside grpc),
JSON that is malformed or nested too deep, a decoder's own exception. A bug in a service method
is still INTERNAL, logged once."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from legato import api, wire
from legato.grpc_serving import Rpc, add_service, bound_port, empty, start_server
from legato.proto import legato_pb2 as pb


class Service:
    async def describe_workflow(self, ref: api.ExecutionRef) -> api.DescribeWorkflowResponse:
        raise ValueError("a bug in the service")

    async def signal_workflow(self, req: api.SignalWorkflowRequest) -> None:
        return None


def _bad_decoder(error: Exception) -> Any:
    def decode(m: Any) -> Any:
        raise error
    return decode


RPCS = {
    "SignalWorkflow": Rpc("signal_workflow", wire.signal_request_from_pb, empty(pb.SignalWorkflowResponse)),
    "DescribeWorkflow": Rpc("describe_workflow", wire.describe_request_from_pb, wire.describe_response_to_pb),
    "TerminateWorkflow": Rpc("signal_workflow", _bad_decoder(RecursionError("maximum recursion depth exceeded")),
                             empty(pb.TerminateWorkflowResponse)),
    "RequestCancelWorkflow": Rpc("signal_workflow", _bad_decoder(OverflowError("int too large")),
                                 empty(pb.RequestCancelWorkflowResponse)),
    "CountWorkflows": Rpc("signal_workflow", _bad_decoder(KeyError("k")), empty(pb.CountWorkflowsResponse)),
}


@pytest.fixture
async def channel(caplog: pytest.LogCaptureFixture) -> AsyncIterator[grpc.aio.Channel]:
    log = logging.getLogger("test.decoding")
    server = await start_server(lambda s: add_service(s, "WorkflowService", Service(), RPCS, log),
                                "127.0.0.1", 0, what="decoding test", log=log)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{bound_port(server)}") as ch:
            yield ch
    finally:
        await server.stop(None)


async def call(ch: grpc.aio.Channel, rpc: str, body: bytes) -> tuple[grpc.StatusCode, str]:
    stub = ch.unary_unary(f"/legato.v1.WorkflowService/{rpc}", request_serializer=lambda b: b,
                          response_deserializer=lambda b: b)
    try:
        await stub(body, timeout=10)
    except grpc.aio.AioRpcError as e:
        return e.code(), e.details() or ""
    return grpc.StatusCode.OK, ""


async def test_a_valid_request_is_served(channel: grpc.aio.Channel) -> None:
    body = pb.SignalWorkflowRequest(ref=pb.ExecutionRef(workflow_id="w"), signal_name="s").SerializeToString()
    assert await call(channel, "SignalWorkflow", body) == (grpc.StatusCode.OK, "")


@pytest.mark.parametrize("body", [b"\xff\xff\xff\xff", b"\x0a\x05ab", b"\x12\x02\xc3\x28"],
                         ids=["corrupt", "truncated", "bad utf-8"])
async def test_a_corrupt_protobuf_is_invalid_argument_without_a_traceback(
        channel: grpc.aio.Channel, caplog: pytest.LogCaptureFixture, body: bytes) -> None:
    code, details = await call(channel, "SignalWorkflow", body)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.startswith("SignalWorkflow: the request is not a valid legato.v1.SignalWorkflowRequest message")
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


async def test_json_too_deep_or_malformed_names_the_field(channel: grpc.aio.Channel) -> None:
    for text, problem in [("[" * 5000 + "]" * 5000, "input_json nests arrays and objects 5000 levels deep"),
                          ("{", "input_json is not valid JSON")]:
        body = pb.SignalWorkflowRequest(signal_name="s", input_json=text).SerializeToString()
        code, details = await call(channel, "SignalWorkflow", body)
        assert (code, details[:len(problem)]) == (grpc.StatusCode.INVALID_ARGUMENT, problem)


@pytest.mark.parametrize(("rpc", "error"), [("TerminateWorkflow", "RecursionError"),
                                            ("RequestCancelWorkflow", "OverflowError"), ("CountWorkflows", "KeyError")])
async def test_a_decoder_that_fails_is_the_callers_error(
        channel: grpc.aio.Channel, caplog: pytest.LogCaptureFixture, rpc: str, error: str) -> None:
    code, details = await call(channel, rpc, b"")
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.startswith(f"{rpc}: the request is not a valid legato.v1.") and error in details
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


async def test_a_bug_in_the_service_is_still_internal_and_logged(
        channel: grpc.aio.Channel, caplog: pytest.LogCaptureFixture) -> None:
    body = pb.DescribeWorkflowRequest(ref=pb.ExecutionRef(workflow_id="w")).SerializeToString()
    code, details = await call(channel, "DescribeWorkflow", body)
    assert code == grpc.StatusCode.INTERNAL and "a bug in the service" in details
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == [
        "internal error in rpc DescribeWorkflow"]
