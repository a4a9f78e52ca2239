"""Fixtures for tests that need a real Apache ZooKeeper (registered by tests/conftest.py).

`zookeeper_node` is the test run's single node, started once by the project's own script
(deploy/zookeeper/zookeeper.sh) and stopped at the end if this run started it;
LEGATO_TEST_ZOOKEEPER=host:port uses one that is already running instead. Tests share it and keep
apart under a root path of their own (`zk_root()`).

`zookeeper_ensemble` is a three-node ensemble on loopback for fault tests (kill a member, see the
others carry on), started at its first use and, if this run started it, stopped at the end.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from kazoo.client import KazooClient

from tests.conftest import ROOT, _node_for_run

ZOOKEEPER_SH = ROOT / "deploy" / "zookeeper" / "zookeeper.sh"
ENSEMBLE_SIZE = 3


def zookeeper_script(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(ZOOKEEPER_SH), *args], capture_output=True, text=True, timeout=300)


def zk_root() -> str:
    """A fresh path of the test's own, e.g. "/legato-test/3f2a9c0d11be" (not yet created: pass
    makepath=True, or use it as a chroot), so tests keep apart on one server."""
    return f"/legato-test/{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="session")
def zookeeper_node() -> Iterator[str]:
    """The connect string of the test run's ZooKeeper node ("127.0.0.1:2181"): LEGATO_TEST_ZOOKEEPER
    =host:port names a running one; otherwise deploy/zookeeper/zookeeper.sh starts one (stopped at
    the end if this run started it, unless LEGATO_TEST_KEEP_ZOOKEEPER is set)."""
    with _node_for_run(zookeeper_script, ZOOKEEPER_SH, "LEGATO_TEST_ZOOKEEPER", "LEGATO_TEST_KEEP_ZOOKEEPER") as given:
        yield given or f"127.0.0.1:{os.environ.get('ZOOKEEPER_PORT', '2181')}"


@dataclass(frozen=True)
class ZooKeeperEnsemble:
    """The three members of the test ensemble on 127.0.0.1: member n (1..3) serves clients on
    base_port + n."""

    base_port: int

    @property
    def hosts(self) -> str:
        """The connect string naming every member: "127.0.0.1:2281,127.0.0.1:2282,127.0.0.1:2283"."""
        return ",".join(f"127.0.0.1:{self.port(n)}" for n in range(1, ENSEMBLE_SIZE + 1))

    def port(self, n: int) -> int:
        """The client port of member n."""
        return self.base_port + n

    def member_at(self, port: int) -> int:
        """The member whose client port is `port` (e.g. a client's peer: see `connected_member`)."""
        n = port - self.base_port
        if not 1 <= n <= ENSEMBLE_SIZE:
            raise ValueError(f"port {port} is no member's of the ensemble on {self.hosts}")
        return n

    def kill(self, n: int) -> None:
        """SIGKILL member n and wait until its process is gone. The test must `start(n)` it again
        itself (in a `finally`): later tests expect three members."""
        self._run("ensemble", "kill", str(n))

    def start(self, n: int) -> None:
        """Start member n again and wait until it serves clients (it has rejoined the quorum)."""
        self._run("ensemble", "start", str(n))

    def status(self) -> dict[int, str]:
        """Each member's mode: "leader", "follower", "not-serving" (running, outside a quorum) or
        "down"."""
        r = zookeeper_script("ensemble", "status")
        modes: dict[int, str] = {}
        for line in r.stdout.splitlines():
            member, _address, mode = line.split()
            modes[int(member)] = mode
        return modes

    def serving(self) -> list[int]:
        """The members that serve clients now (leader or follower)."""
        return sorted(n for n, mode in self.status().items() if mode in ("leader", "follower"))

    def wait_all_serving(self, timeout: float = 30.0) -> None:
        """Until every member serves clients (`ensemble start` returns once a quorum does; the
        third member may still be syncing with the leader)."""
        deadline = time.monotonic() + timeout
        while (serving := self.serving()) != list(range(1, ENSEMBLE_SIZE + 1)):
            if time.monotonic() > deadline:
                pytest.fail(f"only members {serving} of the ZooKeeper ensemble serve after {timeout}s")
            time.sleep(0.1)

    def _run(self, *args: str) -> None:
        r = zookeeper_script(*args)
        if r.returncode != 0:
            pytest.fail(f"{ZOOKEEPER_SH} {' '.join(args)} failed:\n{r.stderr[-3000:]}")


def connected_member(ensemble: ZooKeeperEnsemble, client: KazooClient) -> int:
    """The member a connected kazoo client talks to now (its socket's peer; kazoo keeps it private)."""
    return ensemble.member_at(int(client._connection._socket.getpeername()[1]))


@pytest.fixture(scope="session")
def zookeeper_ensemble() -> Iterator[ZooKeeperEnsemble]:
    """A three-node ZooKeeper ensemble on loopback (deploy/zookeeper/zookeeper.sh ensemble start),
    every member serving, stopped at the end of the run if this run started it (unless
    LEGATO_TEST_KEEP_ZOOKEEPER is set). A test that kills a member with `.kill(n)` must bring it
    back with `.start(n)` itself, in a `finally`, so that later tests find three members."""
    ensemble = ZooKeeperEnsemble(int(os.environ.get("ZOOKEEPER_ENSEMBLE_BASE_PORT", "2280")))
    running = zookeeper_script("ensemble", "status").returncode == 0
    ensemble._run("ensemble", "start")  # also starts a member a previous run left dead
    ensemble.wait_all_serving()
    try:
        yield ensemble
    finally:
        if not running and not os.environ.get("LEGATO_TEST_KEEP_ZOOKEEPER"):
            zookeeper_script("ensemble", "stop")
