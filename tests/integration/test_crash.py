"""SIGKILL the server, the worker or both mid-run; every workflow still completes exactly once."""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path

from legato.api import ExecutionRef, StartWorkflowRequest, WorkflowStatus
from legato.cli.workflow_cmds import read_history, wait_result
from legato.client import GrpcClient
from tests.integration.conftest import BASIC, fast_config
from tests.integration.histories import assert_steps_recorded_once
from tests.integration.procs import Cluster

WORKFLOWS = 16
STEPS = 8
EXPECTED_TOTAL = sum(10 * i for i in range(1, STEPS + 1))


async def start_all(address: str) -> list[str]:
    ids = [f"crash-{i}" for i in range(WORKFLOWS)]
    async with GrpcClient(address) as c:
        for wid in ids:
            await c.start_workflow(StartWorkflowRequest(wid, "basic:steps", "basic", [{"n": STEPS, "sleep": "250ms"}],
                                                        request_id=wid))
    return ids


async def running(address: str, ids: list[str]) -> int:
    async with GrpcClient(address) as c:
        return sum([(await c.describe_workflow(ExecutionRef(w))).info.status == WorkflowStatus.RUNNING
                    for w in ids])


async def collect(address: str, ids: list[str]) -> dict[str, tuple[object, list]]:
    out = {}
    async with GrpcClient(address) as c:
        for wid in ids:
            r = await wait_result(c, ExecutionRef(wid), timeout_ms=180_000)
            assert r.status == WorkflowStatus.COMPLETED, (wid, r)
            out[wid] = (r.result, await read_history(c, ExecutionRef(wid)))
    return out


def chaos(c: Cluster, rounds: int, seed: int) -> None:
    rnd = random.Random(seed)
    victims = ["server", "worker", "both"]
    for i in range(rounds):
        time.sleep(rnd.uniform(0.1, 0.6))  # fault injection at an arbitrary moment, not synchronisation
        victim = victims[i % len(victims)]
        if victim in ("server", "both"):
            c.server.kill()
        if victim in ("worker", "both"):
            c.worker.kill()
        if not c.server.alive():
            c.start_server()
        if not c.worker.alive():
            c.start_worker()


def test_kill_server_worker_and_both(tmp_path: Path) -> None:
    c = Cluster(tmp_path, BASIC, fast_config(tmp_path)).start()
    try:
        ids = asyncio.run(start_all(c.address))
        chaos(c, rounds=6, seed=7)
        # The kills must have hit workflows in the middle of their run, or this proves nothing.
        assert asyncio.run(running(c.address, ids)) > 0
        done = asyncio.run(collect(c.address, ids))
    finally:
        c.stop()
    for wid, (result, events) in done.items():
        assert result == {"total": EXPECTED_TOTAL, "n": STEPS, "ids": STEPS}, wid
        assert_steps_recorded_once(events)


def test_restart_on_same_db_gives_same_result(tmp_path: Path) -> None:
    c = Cluster(tmp_path, BASIC, fast_config(tmp_path)).start()
    try:
        ids = asyncio.run(start_all(c.address))[:4]
        before = asyncio.run(collect(c.address, ids))
        c.server.kill()
        c.worker.kill()
        c.start()
        after = asyncio.run(collect(c.address, ids))
    finally:
        c.stop()
    assert {k: v[0] for k, v in before.items()} == {k: v[0] for k, v in after.items()}
    assert [e.to_dict() for e in before[ids[0]][1]] == [e.to_dict() for e in after[ids[0]][1]]
