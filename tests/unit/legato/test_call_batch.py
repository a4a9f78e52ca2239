"""Calls between history nodes in batches (legato/call_batch.py): concurrent starts and child
closes to one node travel as few `CallBatch` messages, each answered as if it came alone (an
error with its class and fields, the others unharmed); a server without `CallBatch` gets the
calls one by one; a node that cannot be reached fails every call of the batch as it would fail
each alone. The queue itself (order, limits, batches in flight) against a `send` of the test's."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import pytest

from history.grpc_server import RPCS, serve, served
from legato import api, call_batch, wire
from legato.errors import AlreadyStarted, InvalidArgument, NotFound, ServiceError, ShardOwnershipLost, Unavailable
from legato.grpc_serving import add_service, bound_port, start_server
from legato.internal_clients import GrpcHistoryClient
from legato.proto import legato_pb2 as pb
from tests.unit.legato.grpc_fakes import CLOSED, PARENT, Recorder, served_engine_history

Env = tuple[api.HistoryService, GrpcHistoryClient]


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    async with served_engine_history() as env:
        yield env


def _start(workflow_id: str, request_id: str = "") -> api.StartWorkflowRequest:
    return api.StartWorkflowRequest(workflow_id, "app:order", "orders", [{"n": workflow_id}],
                                    request_id=request_id or f"req-{workflow_id}")


async def test_concurrent_starts_go_in_one_batch_and_each_gets_its_run(env: Env) -> None:
    history, client = env
    batcher = client._batcher
    started = await asyncio.gather(*(client.start_workflow(_start(f"order-{i}")) for i in range(40)))
    assert (batcher.batches_sent, batcher.calls_sent) == (1, 40)
    assert all(s.started for s in started) and len({s.run_id for s in started}) == 40
    for i, s in enumerate(started):  # each start made its own workflow, with its own input
        desc = await history.describe_workflow(api.ExecutionRef(f"order-{i}"))
        assert desc.info.run_id == s.run_id
    retried = await asyncio.gather(*(client.start_workflow(_start(f"order-{i}")) for i in range(3)))
    assert [(r.run_id, r.started) for r in retried] == [(s.run_id, False) for s in started[:3]]


async def test_an_error_in_a_batch_is_that_calls_own(env: Env) -> None:
    _, client = env
    first = await client.start_workflow(_start("dup"))
    sent = client._batcher.batches_sent
    results = await asyncio.gather(
        client.start_workflow(_start("dup", request_id="another-request")),  # running: AlreadyStarted
        client.start_workflow(_start("fine")),
        client.start_workflow(api.StartWorkflowRequest("", "app:order", "orders", [])),  # no id
        client.record_child_closed(api.RecordChildClosedRequest(PARENT, CLOSED)),  # no such parent: nothing to do
        return_exceptions=True)
    assert client._batcher.batches_sent == sent + 1
    dup, fine, bad, closed = results
    assert isinstance(dup, AlreadyStarted) and dup.run_id == first.run_id
    assert isinstance(fine, api.StartWorkflowResponse) and fine.started
    assert isinstance(bad, InvalidArgument) and "workflow" in bad.message.lower()
    assert closed is None


async def test_errors_keep_their_class_and_fields_through_a_batch() -> None:
    service = Recorder()
    service.errors["start_workflow"] = ShardOwnershipLost("shard 3 is owned elsewhere", owner="10.0.0.9:7234")
    service.errors["record_child_closed"] = NotFound("parent gone", reason="WorkflowNotFound")
    server = await serve(service, "127.0.0.1", 0)  # type: ignore[arg-type]
    try:
        async with GrpcHistoryClient(f"127.0.0.1:{bound_port(server)}") as client:
            lost, gone = await asyncio.gather(client.start_workflow(_start("x")),
                                              client.record_child_closed(api.RecordChildClosedRequest(PARENT, CLOSED)),
                                              return_exceptions=True)
            assert client._batcher.batches_sent == 1
    finally:
        await server.stop(None)
    assert isinstance(lost, ShardOwnershipLost)
    assert (lost.message, lost.owner) == ("shard 3 is owned elsewhere", "10.0.0.9:7234")
    assert isinstance(gone, NotFound) and (gone.message, gone.reason) == ("parent gone", "WorkflowNotFound")
    assert [name for name, _ in service.calls] == ["start_workflow", "record_child_closed"]


async def test_a_server_without_call_batch_gets_the_calls_one_by_one(caplog: pytest.LogCaptureFixture) -> None:
    service = Recorder()
    service.responses["start_workflow"] = api.StartWorkflowResponse("run-9", True)
    older = {name: spec for name, spec in RPCS.items() if name != "CallBatch"}  # as a version before it
    log = logging.getLogger("test")
    server = await start_server(lambda s: add_service(s, "HistoryService", served(service), older, log),  # type: ignore[arg-type]
                                "127.0.0.1", 0, what="older history", log=log)
    try:
        async with GrpcHistoryClient(f"127.0.0.1:{bound_port(server)}") as client:
            with caplog.at_level(logging.INFO, logger="legato.call_batch"):
                first = await asyncio.gather(*(client.start_workflow(_start(f"w{i}")) for i in range(3)))
            await client.record_child_closed(api.RecordChildClosedRequest(PARENT, CLOSED))
            assert client._batcher.batches_sent == 0
    finally:
        await server.stop(None)
    assert first == [api.StartWorkflowResponse("run-9", True)] * 3
    assert sorted(name for name, _ in service.calls) == ["record_child_closed"] + ["start_workflow"] * 3
    assert "does not serve CallBatch" in caplog.text


async def test_an_unreachable_node_fails_every_call_of_the_batch() -> None:
    async with GrpcHistoryClient("127.0.0.1:1", connect_timeout_s=1.0) as client:
        results = await asyncio.gather(*(client.start_workflow(_start(f"w{i}")) for i in range(3)),
                                       return_exceptions=True)
    assert all(isinstance(r, Unavailable) and r.reason == "ServerUnreachable" for r in results), results
    assert len({id(r) for r in results}) == 3  # each caller its own exception


async def test_a_corrupt_call_in_a_batch_is_invalid_argument_for_it_alone() -> None:
    service = Recorder()
    service.responses["start_workflow"] = api.StartWorkflowResponse("run-1", True)
    server = await serve(service, "127.0.0.1", 0)  # type: ignore[arg-type]
    try:
        async with GrpcHistoryClient(f"127.0.0.1:{bound_port(server)}") as client:
            good = pb.HistoryCall(start_workflow=wire.start_request_to_pb(_start("w")))
            bad = pb.HistoryCall(start_workflow=wire.start_request_to_pb(_start("v")))
            bad.start_workflow.input_json = "{not json"
            answer = await client._rpc.call("CallBatch", pb.HistoryCallBatch(calls=[bad, good, pb.HistoryCall()]))
    finally:
        await server.stop(None)
    kinds = [r.WhichOneof("result") for r in answer.results]
    assert kinds == ["error", "start_workflow", "error"]
    first, third = (call_batch.error_from_pb(answer.results[i].error) for i in (0, 2))
    assert isinstance(first, InvalidArgument) and "input_json is not valid JSON" in first.message  # as alone
    assert isinstance(third, InvalidArgument) and "call 2" in third.message and "none set" in third.message


async def test_a_call_larger_than_a_batch_goes_alone() -> None:
    sends = Sends()
    batcher = call_batch.CallBatcher(sends.send, sends.single)
    huge = _start("big")
    huge.input = ["x" * call_batch.MAX_BATCH_BYTES]
    ids = await asyncio.gather(_call(batcher, "s1"), _call(batcher, "s2"),
                               batcher.call("start_workflow", wire.start_request_to_pb(huge)))
    assert ids[:2] == ["run-s1", "run-s2"] and ids[2].run_id == "run-big"
    assert sorted(sends.batches) == [["big"], ["s1", "s2"]]  # the big one alone, the others batched
    await batcher.close()


async def test_a_call_that_finds_itself_alone_goes_in_its_own_rpc() -> None:
    sends = Sends()
    batcher = call_batch.CallBatcher(sends.send, sends.single)
    assert await _call(batcher, "lone") == "run-lone"
    assert (sends.batches, batcher.batches_sent) == ([["lone"]], 0)
    await batcher.close()


# ------------------------------------------------------------------ the queue, against the test's send

class Sends:
    """A `send_batch` and a `send_single` that record what each sent (a call alone as a list of
    one) and answer when the test lets them."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.in_flight = 0
        self.most_in_flight = 0

    async def _wait(self, ids: list[str]) -> None:
        self.batches.append(ids)
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await self.gate.wait()
        finally:
            self.in_flight -= 1

    async def send(self, batch: pb.HistoryCallBatch) -> pb.HistoryCallResults:
        await self._wait([c.start_workflow.workflow_id for c in batch.calls])
        return pb.HistoryCallResults(results=[pb.HistoryCallResult(start_workflow=_started(c.start_workflow))
                                              for c in batch.calls])

    async def single(self, rpc: str, request: pb.StartWorkflowRequest) -> pb.StartWorkflowResponse:
        assert rpc == "StartWorkflow"
        await self._wait([request.workflow_id])
        return _started(request)


def _started(request: pb.StartWorkflowRequest) -> pb.StartWorkflowResponse:
    return pb.StartWorkflowResponse(run_id=f"run-{request.workflow_id[:20]}", started=True)


async def _until(condition: Callable[[], bool], turns: int = 100) -> None:
    """Let the event loop run until `condition` holds; fail after `turns` turns."""
    for _ in range(turns):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("the condition did not come true")


async def _call(batcher: call_batch.CallBatcher, workflow_id: str) -> str:
    response = await batcher.call("start_workflow", wire.start_request_to_pb(_start(workflow_id)))
    return str(response.run_id)


async def _every_slot_taken() -> tuple[Sends, call_batch.CallBatcher, list[asyncio.Task[str]]]:
    """A batcher whose sends are held (`sends.gate` cleared) with `MAX_BATCHES_IN_FLIGHT` batches of
    one call out, sent one at a time; the tasks of those calls."""
    sends = Sends()
    sends.gate.clear()
    batcher = call_batch.CallBatcher(sends.send, sends.single)
    out = []
    for i in range(call_batch.MAX_BATCHES_IN_FLIGHT):
        out.append(asyncio.create_task(_call(batcher, f"a{i}")))
        await _until(functools.partial(lambda n: len(sends.batches) == n, i + 1))
    return sends, batcher, out


async def test_calls_made_while_batches_are_in_flight_wait_for_the_next_batch() -> None:
    sends = Sends()
    sends.gate.clear()
    batcher = call_batch.CallBatcher(sends.send, sends.single)
    first = [asyncio.create_task(_call(batcher, f"a{i}")) for i in range(2)]
    await _until(lambda: len(sends.batches) == 1)
    second = [asyncio.create_task(_call(batcher, f"b{i}")) for i in range(2)]
    await _until(lambda: len(sends.batches) == 2)
    later = [asyncio.create_task(_call(batcher, f"c{i}")) for i in range(5)]
    for _ in range(20):
        await asyncio.sleep(0)
    assert sends.batches == [["a0", "a1"], ["b0", "b1"]]  # two in flight: the c's wait
    sends.gate.set()
    assert await asyncio.gather(*first, *second, *later) == [f"run-{w}" for w in
                                                           ["a0", "a1", "b0", "b1"] + [f"c{i}" for i in range(5)]]
    assert sends.batches[2:] == [[f"c{i}" for i in range(5)]]
    assert sends.most_in_flight == call_batch.MAX_BATCHES_IN_FLIGHT
    await batcher.close()


async def test_batches_that_hang_hold_the_calls_behind_them_only_so_long(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(call_batch, "BATCH_PATIENCE_S", 0.05)
    sends, batcher, hung = await _every_slot_taken()  # nothing is ever answered: a node that hangs
    behind = asyncio.create_task(_call(batcher, "behind"))
    loop = asyncio.get_running_loop()
    queued_at = loop.time()
    deadline = queued_at + 5.0
    while len(sends.batches) < call_batch.MAX_BATCHES_IN_FLIGHT + 1:  # the patience timer sends it
        assert loop.time() < deadline, "the call behind the hung batches was never sent"
        await asyncio.sleep(0.01)
    assert loop.time() - queued_at >= 0.04  # not at once: the hung batches held it while they could
    assert sends.batches[-1] == ["behind"] and sends.in_flight == call_batch.MAX_BATCHES_IN_FLIGHT + 1
    for t in [*hung, behind]:
        t.cancel()
    await asyncio.gather(*hung, behind, return_exceptions=True)
    await batcher.close()


async def test_a_batch_holds_at_most_its_count_and_bytes() -> None:
    sends = Sends()
    batcher = call_batch.CallBatcher(sends.send, sends.single)
    n = call_batch.MAX_BATCH_CALLS + 10
    ids = [f"w{i}" for i in range(n)]
    assert await asyncio.gather(*(_call(batcher, w) for w in ids)) == [f"run-{w}" for w in ids]
    assert [len(b) for b in sends.batches] == [call_batch.MAX_BATCH_CALLS, 10]
    assert [w for b in sends.batches for w in b] == ids  # in the order called

    sends.batches.clear()
    sent = batcher.batches_sent
    big = "x" * (call_batch.MAX_BATCH_BYTES // 5)  # thrice in a call (id, request id, input): 0.6 of a batch
    await asyncio.gather(*(_call(batcher, f"{i}{big}") for i in range(3)))
    assert [len(b) for b in sends.batches] == [1, 1, 1]
    assert batcher.batches_sent == sent  # each alone
    await batcher.close()


async def test_a_caller_cancelled_before_its_batch_left_is_not_sent() -> None:
    sends, batcher, busy = await _every_slot_taken()
    gone = asyncio.create_task(_call(batcher, "gone"))
    kept = asyncio.create_task(_call(batcher, "kept"))
    for _ in range(5):
        await asyncio.sleep(0)
    gone.cancel()
    sends.gate.set()
    assert await kept == "run-kept"
    await asyncio.gather(*busy)
    with pytest.raises(asyncio.CancelledError):
        await gone
    assert sends.batches[-1] == ["kept"]
    await batcher.close()


async def _two_calls_answered_by(send: Callable[[pb.HistoryCallBatch], Awaitable[pb.HistoryCallResults]]
                                 ) -> list[Any]:
    """Two calls made together (so they go in one batch) to a server answering with `send`; what
    each caller got (its result or its exception)."""
    batcher = call_batch.CallBatcher(send, Sends().single)
    results = await asyncio.gather(_call(batcher, "a"), _call(batcher, "b"), return_exceptions=True)
    await batcher.close()
    return list(results)


async def test_a_wrong_count_of_results_fails_the_calls_clearly() -> None:
    async def short(batch: pb.HistoryCallBatch) -> pb.HistoryCallResults:
        return pb.HistoryCallResults()

    results = await _two_calls_answered_by(short)
    assert all(isinstance(r, ServiceError) and r.reason == "BadBatchAnswer" for r in results)
    assert "2 calls with 0 results" in str(results[0])


async def test_a_result_of_another_call_fails_that_call_clearly() -> None:
    async def crossed(batch: pb.HistoryCallBatch) -> pb.HistoryCallResults:
        return pb.HistoryCallResults(results=[
            pb.HistoryCallResult(record_child_closed=pb.RecordChildClosedResponse()) for _ in batch.calls])

    results = await _two_calls_answered_by(crossed)
    assert all(isinstance(r, ServiceError) and r.reason == "BadBatchAnswer" for r in results)
    assert "answered a start_workflow call of a batch with record_child_closed" in str(results[0])


async def test_closing_cancels_the_calls_still_queued() -> None:
    sends, batcher, busy = await _every_slot_taken()
    queued = asyncio.create_task(_call(batcher, "queued"))
    await _until(lambda: bool(batcher._queue))
    await batcher.close()
    for t in [*busy, queued]:
        with pytest.raises(asyncio.CancelledError):
            await t
    assert ["queued"] not in sends.batches  # never sent


def test_an_error_travels_as_a_call_of_its_own_would() -> None:
    for err in (AlreadyStarted("running", run_id="run-7"), ShardOwnershipLost("moved", owner="h2:7234"),
                NotFound("no such workflow", reason="WorkflowNotFound")):
        back = call_batch.error_from_pb(call_batch.error_to_pb(err))
        assert (type(back), back.message, back.reason) == (type(err), err.message, err.reason)
        assert getattr(back, "run_id", None) == getattr(err, "run_id", None)
        assert getattr(back, "owner", None) == getattr(err, "owner", None)
    unknown = call_batch.error_from_pb(pb.CallError(code="NO_SUCH_CODE", message="odd"))
    assert (type(unknown), unknown.message) == (ServiceError, "odd")
    assert grpc.StatusCode.UNKNOWN.name == unknown.code
