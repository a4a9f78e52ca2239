"""Legato's container image (Dockerfile), built without a registry by deploy/container/build.sh and
run by deploy/container/run.sh on each engine: podman (the image imported into podman, run by runc)
and chroot (its root filesystem under an overlay, in new mount and PID namespaces). On each: a dev
server and a worker run from the image, the worker's Lua app mounted at /app and the server's
SQLite file in a volume at /var/lib/legato; a workflow started from the host's CLI completes, the
image's processes run as uid 10001, and `legato schema --help` works. And the Dockerfile itself,
built by buildah from the same Debian base, gives the same image (deploy/container/dockerfile-check.sh).

The build is cached under .deploy/container: the first run debootstraps Debian and installs Legato
(about a minute here), later ones only replace Legato's wheel when its sources changed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import BASIC
from tests.integration.procs import Proc, free_port, legato

ROOT = Path(__file__).resolve().parents[2]
BUILD_SH = ROOT / "deploy" / "container" / "build.sh"
RUN_SH = ROOT / "deploy" / "container" / "run.sh"
CHECK_SH = ROOT / "deploy" / "container" / "dockerfile-check.sh"
UID = 10001
# The image's entry point as its processes show it in /proc/PID/cmdline (the venv's script, run by
# the venv's python): tells the image's processes from the host's `legato` and from run.sh's.
IMAGE_LEGATO = "/opt/legato/bin/legato"

# A cold build (debootstrap, apt, pip) takes minutes, more than the default per-test timeout.
pytestmark = pytest.mark.timeout(1200)


@pytest.fixture(scope="module")
def image() -> None:
    """The image, built (or brought up to date) by the script and imported into podman."""
    r = subprocess.run(["bash", str(BUILD_SH), "--podman"], capture_output=True, text=True, timeout=1100)
    assert r.returncode == 0, f"build.sh failed:\n{r.stdout[-3000:]}\n{r.stderr[-5000:]}"


class Container(Proc):
    """`run.sh --engine ENGINE [OPTIONS] -- ARGS`: a container running the image's entry point."""

    def __init__(self, engine: str, options: list[str], args: list[str]) -> None:
        super().__init__([])
        self.args = ["bash", str(RUN_SH), "--engine", engine, *options, "--", *args]

    def stop(self) -> None:
        """SIGTERM to run.sh's process group (the image's process too: with the chroot engine it is
        in that group; with podman, `podman run` passes the signal on); SIGKILL if it lingers."""
        if self.popen is not None and self.alive():
            os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()


def image_processes(marker: str) -> list[int]:
    """PIDs of the image's `legato` processes whose command line contains `marker`."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue  # gone meanwhile
        if IMAGE_LEGATO in argv[:2] and marker in " ".join(argv):
            pids.append(int(entry.name))
    return pids


def ids(pid: int) -> dict[str, list[int]]:
    """The Uid, Gid and Groups lines of /proc/PID/status."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("Uid", "Gid", "Groups"):
            out[key] = [int(x) for x in value.split()]
    return out


@pytest.fixture(scope="module", params=["podman", "chroot"])
def engine(request: pytest.FixtureRequest, image: None) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def data_dir(engine: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The server's volume (/var/lib/legato): a host folder the image's user owns, as a volume would be."""
    d = tmp_path_factory.mktemp(f"data-{engine}")
    os.chown(d, UID, UID)
    return d


@pytest.fixture(scope="module")
def served(engine: str, data_dir: Path) -> Iterator[str]:
    """A dev server and a worker for tests/apps/basic, each in a container of the image; the address."""
    port = free_port()
    address = f"127.0.0.1:{port}"
    name = f"legato-test-{port}"
    server = Container(engine, ["--name", f"{name}-server", "-v", f"{data_dir}:/var/lib/legato"],
                       ["server", "start-dev", "--db", "/var/lib/legato/legato.db", "--port", str(port)])
    worker = Container(engine, ["--name", f"{name}-worker", "-v", f"{BASIC}:/app:ro"],
                       ["worker", "--entries", "/app", "--address", address])
    try:
        server.start().wait_for("listening", timeout=60)
        worker.start().wait_for("worker polling", timeout=60)
        yield address
    finally:
        worker.stop()
        server.stop()
        if engine == "podman":  # a container whose `podman run` was SIGKILLed would linger
            for role in ("server", "worker"):
                subprocess.run(["podman", "rm", "-f", "--ignore", f"{name}-{role}"], capture_output=True)


def test_a_workflow_runs_through_the_image(engine: str, served: str, data_dir: Path) -> None:
    start = legato("workflow", "start", "--type", "basic:hello", "--task-queue", "basic", "--id", f"c-{engine}",
                   "--input", json.dumps(engine), "--address", served)
    assert start.returncode == 0, start.stderr
    result = legato("workflow", "result", "--id", f"c-{engine}", "--output", "json", "--timeout", "60s",
                    "--address", served)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"greeting": f"hello, {engine}"}
    # The server kept its state in the volume, as the image's user.
    db = data_dir / "legato.db"
    assert db.exists() and db.stat().st_uid == UID


def test_the_image_runs_as_its_non_root_user(engine: str, served: str) -> None:
    port = served.rsplit(":", 1)[1]
    for marker in (f"start-dev --db /var/lib/legato/legato.db --port {port}", f"--address {served}"):
        pids = image_processes(marker)
        assert pids, f"no process of the image runs {marker!r}"
        for pid in pids:
            assert ids(pid) == {"Uid": [UID] * 4, "Gid": [UID] * 4, "Groups": [UID]}, (marker, pid)


def test_schema_help_runs_in_the_image(engine: str) -> None:
    r = subprocess.run(["bash", str(RUN_SH), "--engine", engine, "--", "schema", "--help"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "Usage: legato schema" in r.stdout
    for command in ("setup", "upgrade", "version"):
        assert command in r.stdout


def test_the_dockerfile_builds_the_same_image(image: None) -> None:
    """buildah builds the Dockerfile: the same packages, Python distributions, user and config as
    build.sh's image (what the script compares; it prints the differences)."""
    r = subprocess.run(["bash", str(CHECK_SH)], capture_output=True, text=True, timeout=1100)
    assert r.returncode == 0, f"dockerfile-check.sh failed:\n{r.stdout[-3000:]}\n{r.stderr[-5000:]}"
    assert "dockerfile-check: same image" in r.stderr
