"""A real Legato cluster for tests: history, matching and frontend processes (`legato server start
--role ... --zookeeper ...`), each its own process on loopback, sharing a ZooKeeper root, the
test keyspace of Cassandra and Kafka topics of the test's own, plus a worker reaching every
frontend (`--address f1,f2`). Processes can be added, SIGKILLed, SIGTERMed, frozen (SIGSTOP) and
resumed.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import yaml
from kazoo.client import KazooClient
from kazoo.exceptions import NoNodeError

from legato.membership import Paths
from legato.zk import loads
from tests.integration.procs import Proc, free_port

# The processes log at INFO (their shard moves, session changes); LEGATO_TEST_CLUSTER_LOG_LEVEL=DEBUG for more.
LOG_LEVEL = os.environ.get("LEGATO_TEST_CLUSTER_LOG_LEVEL", "INFO")


class ClusterProcs:
    def __init__(self, tmp: Path, entries: Path, zookeeper: str, root: str, store: dict[str, Any],
                 queues: dict[str, Any], num_shards: int = 8, session_timeout_ms: int = 2000,
                 extra: dict[str, dict[str, Any]] | None = None, metrics: bool = False) -> None:
        """`metrics`: every process serves /metrics, /healthz and /readyz on a port of its own
        (`self.metrics[name]`)."""
        self.zookeeper = zookeeper
        self.root = root
        self.num_shards = num_shards
        self.entries = entries
        self.tmp = tmp
        self.config = tmp / "cluster.yaml"
        sections: dict[str, dict[str, Any]] = {
            "store": store, "queues": queues,
            "history": {"num_shards": num_shards, "workflow_task_timeout_ms": 3000,
                        "workflow_task_retry_initial_ms": 100},
            "cluster": {"zookeeper_hosts": zookeeper, "zookeeper_root": root,
                        "zookeeper_session_timeout_ms": session_timeout_ms, "route_timeout_ms": 60_000,
                        "shard_drain_timeout_ms": 3000},
            "worker": {"respond_retry_ms": 60_000},
        }
        for name, values in (extra or {}).items():
            sections.setdefault(name, {}).update(values)
        self.config.write_text(yaml.safe_dump(sections))
        self.procs: dict[str, Proc] = {}
        self.addresses: dict[str, str] = {}
        self.worker: Proc | None = None
        self._count: dict[str, int] = {}
        self._metrics = metrics
        self.metrics: dict[str, str] = {}  # process name ("worker" too) -> its metrics address

    # ------------------------------------------------------------ processes

    def add(self, role: str, wait: bool = True, zookeeper: str | None = None) -> str:
        """Start another process of `role`; its name is e.g. "history-2". `zookeeper`: the
        connect string this one uses (e.g. through a proxy the test controls)."""
        n = self._count[role] = self._count.get(role, 0) + 1
        name = f"{role}-{n}"
        address = f"127.0.0.1:{free_port()}"
        self.addresses[name] = address
        zk = ["--zookeeper", zookeeper] if zookeeper else []
        self.procs[name] = Proc(["server", "start", "--role", role, f"--{role}-address", address, *zk,
                                 *self._metrics_args(name), "--config", str(self.config)],
                                env={"LEGATO_LOG_LEVEL": LOG_LEVEL}).start()
        if wait:
            self.wait_serving(name)
        return name

    def _metrics_args(self, name: str) -> list[str]:
        if not self._metrics:
            return []
        self.metrics[name] = f"127.0.0.1:{free_port()}"
        return ["--metrics-address", self.metrics[name]]

    def wait_serving(self, name: str, timeout: float = 60.0) -> None:
        self.procs[name].wait_for(r"legato: \w+ listening", timeout)

    def frontends(self) -> list[str]:
        return [self.addresses[n] for n, p in self.procs.items() if n.startswith("frontend") and p.alive()]

    @property
    def address(self) -> str:
        """Every live frontend, for a client: "h1:p1,h2:p2"."""
        return ",".join(self.frontends())

    def start_worker(self) -> Proc:
        self.worker = Proc(["worker", "--entries", str(self.entries), "--address", self.address,
                            *self._metrics_args("worker"), "--config", str(self.config)]).start()
        self.worker.wait_for("worker polling", 60)
        return self.worker

    def kill(self, name: str) -> None:
        self.procs[name].kill()

    def terminate(self, name: str, timeout: float = 60.0) -> int:
        """SIGTERM and wait for the exit; the exit code."""
        p = self.procs[name].popen
        assert p is not None
        p.send_signal(signal.SIGTERM)
        return p.wait(timeout)

    def freeze(self, name: str) -> None:
        p = self.procs[name].popen
        assert p is not None
        os.killpg(p.pid, signal.SIGSTOP)

    def thaw(self, name: str) -> None:
        p = self.procs[name].popen
        assert p is not None
        os.killpg(p.pid, signal.SIGCONT)

    def stop(self) -> None:
        """Stop every process; their output is left in <tmp>/<name>.log for a failing test's reader."""
        if self.worker is not None:
            self.worker.stop()
            (self.tmp / "worker.log").write_text(self.worker.output())
        for name in sorted(self.procs, key=lambda n: ("frontend", "matching", "history").index(n.split("-")[0])):
            p = self.procs[name]
            if p.popen is not None and p.alive():
                self.thaw(name)
            p.stop()
            (self.tmp / f"{name}.log").write_text(p.output())

    def output(self, name: str) -> str:
        return self.procs[name].output()

    # ------------------------------------------------------------ what ZooKeeper says

    def shard_owners(self) -> dict[int, str]:
        """shard -> the history address holding its lock, read from ZooKeeper now."""
        zk = KazooClient(hosts=self.zookeeper)
        zk.start(15)
        try:
            paths = Paths(self.root)
            out: dict[int, str] = {}
            for child in zk.get_children(paths.shards):
                try:
                    data = loads(zk.get(paths.shard(int(child)))[0]) or {}
                except NoNodeError:
                    continue  # released since the listing
                out[int(child)] = str(data.get("address", ""))
            return out
        finally:
            zk.stop()
            zk.close()

    def owned_by(self, name: str) -> set[int]:
        address = self.addresses[name]
        return {s for s, a in self.shard_owners().items() if a == address}
