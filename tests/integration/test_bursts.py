"""Bursts against a real `legato server start-dev` (SQLite): 10,000 concurrent StartWorkflow calls
from one client, and from ten, all succeed (issue 10, item 4). gRPC's own queue used to drop
about a tenth of such a burst with CANCELLED; the server now sizes that queue
(`grpc.max_queued_calls`), refuses calls past `grpc.max_concurrent_calls` with ServerBusy, and
the clients send those again with backoff. The workflows have no worker: only starts are measured.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from legato.api import StartWorkflowRequest, StartWorkflowResponse
from legato.client import GrpcClient
from legato.config import GrpcConfig
from tests.integration.procs import Proc, free_port

pytestmark = pytest.mark.timeout(240)

BURST = 10_000
CALL_TIMEOUT_S = 120.0  # a loaded two-core machine takes several seconds for a burst


def _dev_server(tmp: Path, config_yaml: str = "") -> tuple[Proc, str]:
    port = free_port()
    args = ["server", "start-dev", "--db", str(tmp / "legato.db"), "--port", str(port)]
    if config_yaml:
        (tmp / "legato.yaml").write_text(config_yaml)
        args += ["--config", str(tmp / "legato.yaml")]
    return Proc(args).start(), f"127.0.0.1:{port}"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    proc, address = _dev_server(tmp_path_factory.mktemp("bursts"))
    try:
        proc.wait_for("listening")
        yield address
    finally:
        proc.stop()


async def _burst(address: str, clients: int, count: int, grpc_config: GrpcConfig | None = None
                 ) -> tuple[list[StartWorkflowResponse | BaseException], int]:
    """`count` StartWorkflow calls at once, spread over `clients` clients (one channel each): the
    answers, and how many calls the clients had to send again."""
    prefix = uuid.uuid4().hex[:8]
    conns = [GrpcClient(address, call_timeout_s=CALL_TIMEOUT_S, grpc_config=grpc_config) for _ in range(clients)]
    try:
        results = await asyncio.gather(*(
            conns[i % clients].start_workflow(StartWorkflowRequest(
                f"burst-{prefix}-{i}", "burst:none", "nobody-polls", [i], request_id=f"{prefix}-{i}"))
            for i in range(count)), return_exceptions=True)
        return results, sum(c.busy_retries for c in conns)
    finally:
        for c in conns:
            await c.close()


def _assert_all_started(results: list[StartWorkflowResponse | BaseException]) -> None:
    errors = [r for r in results if isinstance(r, BaseException)]
    assert not errors, f"{len(errors)} of {len(results)} failed, e.g. {errors[:3]!r}"
    ok = [r for r in results if isinstance(r, StartWorkflowResponse)]
    assert all(r.started for r in ok)
    assert len({r.run_id for r in ok}) == len(results)


async def test_ten_thousand_concurrent_starts_from_one_client(server: str) -> None:
    results, _ = await _burst(server, clients=1, count=BURST)
    _assert_all_started(results)


async def test_ten_thousand_concurrent_starts_from_ten_clients(server: str) -> None:
    results, _ = await _burst(server, clients=10, count=BURST)
    _assert_all_started(results)


# Limits far below the burst: with 50 calls at once, a quiet machine's server kept up with ten
# clients' sending (no call was pushed back in one CI run); 2,000 calls never stay under 2.
@pytest.mark.parametrize("limit", ["max_concurrent_calls: 2", "max_queued_calls: 100"])
async def test_a_burst_past_the_servers_limits_is_pushed_back_and_retried(tmp_path: Path, limit: str) -> None:
    """With small limits, most calls of the burst are pushed back at first: refused by the server
    (RESOURCE_EXHAUSTED, ServerBusy), or dropped by gRPC from its full queue (CANCELLED). The
    clients send them again until each is served."""
    proc, address = _dev_server(tmp_path, f"grpc:\n  {limit}\n")
    try:
        proc.wait_for("listening")
        results, retries = await _burst(address, clients=10, count=2_000,
                                        grpc_config=GrpcConfig(busy_retry_initial_ms=20, busy_retry_max_ms=500))
    finally:
        proc.stop()
    _assert_all_started(results)
    assert retries > 0
