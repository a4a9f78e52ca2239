"""Real `legato` processes for integration tests: start, wait for a line they print, kill."""

from __future__ import annotations

import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

LEGATO = str(Path(sys.executable).with_name("legato"))


# A port for a process that binds it later comes from below the kernel's ephemeral range: one
# from inside it (what binding port 0 gives) can be taken meanwhile as the local end of any
# outgoing connection, and the process then fails with "address already in use" (it did, once, in
# test_chart_run). Each is handed out once per test run.
EPHEMERAL_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
EPHEMERAL_START_DEFAULT = 32768  # Linux's default, when the file cannot be read
LOWEST_TEST_PORT = 10000
FREE_PORT_TRIES = 1000
_handed: set[int] = set()


def _ephemeral_start() -> int:
    try:
        return int(EPHEMERAL_RANGE_FILE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return EPHEMERAL_START_DEFAULT


def free_port() -> int:
    """A port free now on every address (a process may bind 0.0.0.0), below the ephemeral range."""
    top = max(_ephemeral_start(), LOWEST_TEST_PORT + FREE_PORT_TRIES)
    for _ in range(FREE_PORT_TRIES):
        port = random.randrange(LOWEST_TEST_PORT, top)
        if port in _handed:
            continue
        with socket.socket() as s:
            try:
                s.bind(("0.0.0.0", port))
            except OSError:
                continue
        _handed.add(port)
        return port
    raise RuntimeError(f"no free port between {LOWEST_TEST_PORT} and {top} in {FREE_PORT_TRIES} tries")


class Proc:
    """A background `legato ...` process whose output lines are collected as they come."""

    def __init__(self, args: Sequence[str], env: dict[str, str] | None = None) -> None:
        self.args = [LEGATO, *args]
        self.env = {**os.environ, **(env or {})}
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self.popen: subprocess.Popen[str] | None = None

    def start(self) -> Proc:
        self.lines.clear()
        self.popen = subprocess.Popen(self.args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                      env=self.env, start_new_session=True)
        threading.Thread(target=self._pump, args=(self.popen,), daemon=True).start()
        return self

    def _pump(self, p: subprocess.Popen[str]) -> None:
        assert p.stdout is not None
        for line in p.stdout:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def wait_for(self, pattern: str, timeout: float = 30.0) -> str:
        rx = re.compile(pattern)
        with self._cond:
            ok = self._cond.wait_for(lambda: any(rx.search(x) for x in self.lines) or not self.alive(), timeout)
            for line in self.lines:
                if rx.search(line):
                    return line
        raise AssertionError(f"{self.args[1:3]} did not print {pattern!r} (alive={self.alive()}, "
                             f"waited={ok}); output:\n" + "\n".join(self.lines[-50:]))

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def kill(self) -> None:
        if self.popen is not None and self.alive():
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(10)

    def stop(self) -> None:
        if self.popen is not None and self.alive():
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    def output(self) -> str:
        return "\n".join(self.lines)


def legato(*args: str, timeout: float = 120, input_text: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run a `legato` command to completion."""
    return subprocess.run([LEGATO, *args], capture_output=True, text=True, timeout=timeout, input=input_text)


class Cluster:
    """A dev server (on a SQLite file, or on the store `store_args` name) plus a worker, restartable
    for crash tests."""

    def __init__(self, tmp: Path, entries: Path, config: Path | None = None, store_args: Sequence[str] = ()) -> None:
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.db = tmp / "legato.db"
        extra = ["--config", str(config)] if config else []
        self.server = Proc(["server", "start-dev", "--db", str(self.db), "--port", str(self.port), *store_args,
                            *extra])
        self.worker = Proc(["worker", "--entries", str(entries), "--address", self.address, *extra])

    def start_server(self) -> None:
        self.server.start().wait_for("listening")

    def start_worker(self) -> None:
        self.worker.start().wait_for("worker polling")

    def start(self) -> Cluster:
        self.start_server()
        self.start_worker()
        return self

    def stop(self) -> None:
        self.worker.stop()
        self.server.stop()

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return legato(*args, "--address", self.address, timeout=timeout)


class Services:
    """Frontend, history and matching as three `legato server start --role` processes plus a
    worker, on one SQLite file and the Kafka topics of `queues`; each process restartable.

    `config` is the YAML the processes share: `extra` (more sections) merged with the queues and
    the cluster addresses (free ports)."""

    ROLES = ("history", "matching", "frontend")

    def __init__(self, tmp: Path, entries: Path, queues: dict[str, object],
                 extra: dict[str, dict[str, object]] | None = None) -> None:
        import yaml

        self.address = f"127.0.0.1:{free_port()}"
        cluster = {"frontend_address": self.address, "history_address": f"127.0.0.1:{free_port()}",
                   "matching_address": f"127.0.0.1:{free_port()}"}
        self.config = tmp / "services.yaml"
        self.config.write_text(yaml.safe_dump({**(extra or {}), "queues": queues, "cluster": cluster}))
        db = ["--db", str(tmp / "legato.db")]
        self.procs = {role: Proc(["server", "start", "--role", role, *(db if role != "matching" else []),
                                  "--config", str(self.config)]) for role in self.ROLES}
        self.worker = Proc(["worker", "--entries", str(entries), "--address", self.address,
                            "--config", str(self.config)])

    def start(self, *roles: str) -> None:
        """Start these roles (default: all three) and wait until each serves."""
        chosen = roles or self.ROLES
        for role in chosen:
            self.procs[role].start()
        for role in chosen:
            self.procs[role].wait_for(f"legato: {role} listening")

    def start_worker(self) -> None:
        self.worker.start().wait_for("worker polling")

    def kill(self, *roles: str) -> None:
        for role in roles:
            self.procs[role].kill()

    def alive(self) -> dict[str, bool]:
        return {name: p.alive() for name, p in [*self.procs.items(), ("worker", self.worker)]}

    def stop(self) -> None:
        self.worker.stop()
        for role in reversed(self.ROLES):
            self.procs[role].stop()
