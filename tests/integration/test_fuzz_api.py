"""A fuzz test of the public gRPC API and of the query language over it (tests/integration/apifuzz.py),
against a real `legato server start-dev` on SQLite, on loopback: seeded, bounded (a fixed number
of requests, each with a deadline).

It asserts what the API promises for any input a client can send:

* no crash: the server process is alive afterwards and answers at once;
* no hang: every call answered before its deadline (a long poll ends, empty, before it);
* no INTERNAL (nor UNKNOWN, UNAVAILABLE, DEADLINE_EXCEEDED): only the statuses of the client's
  own errors and of valid requests;
* no traceback in the server's log (no background task failed on what a request left behind).

LEGATO_FUZZ_REQUESTS and LEGATO_FUZZ_SEED change the size and the seed (a failure prints both).
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from legato import api
from legato.client import GrpcClient
from legato.errors import InvalidArgument
from legato.query import parse
from tests.integration import apifuzz
from tests.integration.procs import Proc, free_port

REQUESTS = int(os.environ.get("LEGATO_FUZZ_REQUESTS", "3000"))
QUERIES = int(os.environ.get("LEGATO_FUZZ_QUERIES", "400"))
SEED = int(os.environ.get("LEGATO_FUZZ_SEED", "20261204"))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Proc]]:
    tmp: Path = tmp_path_factory.mktemp("fuzz")
    port = free_port()
    proc = Proc(["server", "start-dev", "--db", str(tmp / "legato.db"), "--port", str(port)]).start()
    proc.wait_for("listening")
    try:
        yield f"127.0.0.1:{port}", proc
    finally:
        proc.stop()


def _report(out: apifuzz.Outcome, seed: int) -> str:
    lines = [f"seed {seed}: {out.summary()}"]
    for rpc, code, details, body in out.bad[:20]:
        lines.append(f"{rpc} -> {code}: {details[:300]} (request {body[:60]!r}...)")
    return "\n".join(lines)


async def _still_serving(address: str, proc: Proc) -> None:
    assert proc.alive(), proc.output()[-5000:]
    async with GrpcClient(address, call_timeout_s=5) as client:
        started = time.monotonic()
        await client.count_workflows(api.CountWorkflowsRequest("default", ""))
        await client.list_workflows(api.ListWorkflowsRequest("default", "", 10))
        assert time.monotonic() - started < 5
    assert "Traceback" not in proc.output(), proc.output()[-5000:]


async def test_fuzz_the_grpc_api(server: tuple[str, Proc]) -> None:
    address, proc = server
    known = apifuzz.Known()
    async with GrpcClient(address) as client:
        out = await apifuzz.run(address, known, SEED, REQUESTS, refresh=apifuzz.Seeder(client, known),
                                refresh_every=40)
    print(f"\napi fuzz, seed {SEED}: {out.summary()}")
    assert out.requests == REQUESTS
    assert not out.bad, _report(out, SEED)
    # the fuzz got past validation too: real workflows, tasks and answers
    assert out.codes["OK"] > REQUESTS // 10, out.summary()
    assert out.per_rpc["RespondWorkflowTaskCompleted", "OK"] > 0, out.summary()
    assert out.per_rpc["RespondActivityTaskCompleted", "OK"] + out.per_rpc["RespondActivityTaskFailed", "OK"] > 0
    await _still_serving(address, proc)


async def test_fuzz_the_query_language_over_the_api(server: tuple[str, Proc]) -> None:
    """Random queries to ListWorkflows and CountWorkflows: each is served or refused as the
    parser says, never an internal error."""
    address, proc = server
    rng = random.Random(SEED)
    queries = [apifuzz.random_query(rng) for _ in range(QUERIES)]
    codes: dict[str, int] = {}
    started = time.monotonic()
    async with grpc.aio.insecure_channel(address) as channel:
        for i in range(0, len(queries), 8):
            batch = queries[i:i + 8]
            bodies = [("ListWorkflows", apifuzz.pb.ListWorkflowsRequest(query=q, page_size=5)) for q in batch]
            bodies += [("CountWorkflows", apifuzz.pb.CountWorkflowsRequest(query=q)) for q in batch]
            results = await asyncio.gather(*(apifuzz.send(channel, rpc, m.SerializeToString(), 5.0)
                                             for rpc, m in bodies))
            for (rpc, m), (code, details) in zip(bodies, results, strict=True):
                codes[code] = codes.get(code, 0) + 1
                expected = _expected(m.query, rpc)
                assert code == expected, f"{rpc} {m.query[:200]!r}: {code} {details[:300]} (expected {expected})"
    print(f"\nquery fuzz, seed {SEED}: {2 * len(queries)} requests in {time.monotonic() - started:.1f} s: {codes}")
    assert codes.get("OK", 0) > 0 and codes.get("INVALID_ARGUMENT", 0) > 0
    await _still_serving(address, proc)


def _expected(query: str, rpc: str) -> str:
    try:
        q = parse(query)
    except InvalidArgument:
        return "INVALID_ARGUMENT"
    if q.group_by is not None and rpc == "ListWorkflows":  # GROUP BY is for counting only
        return "INVALID_ARGUMENT"
    return "OK"
