"""TLS, client certificates and tokens end to end (issue 10, item 5): a real `legato server
start-dev` (SQLite) and `server start --role` processes with certificates made for the test, the
real CLI and a real worker. Workflows run over TLS with tokens; every refusal is one paragraph on
stderr and exit code 3, naming what is wrong."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from legato.access_tokens import issue, new_secret, read_secret
from legato.api import ExecutionRef, StartWorkflowRequest, TerminateWorkflowRequest, WorkflowStatus
from legato.cli.workflow_cmds import wait_result
from legato.client import GrpcClient
from legato.errors import PermissionDenied, Unauthenticated
from legato.internal_clients import GrpcHistoryClient
from legato.tls import ClientSecurity, static_token
from tests.certs import Ca, Pair
from tests.integration.conftest import BASIC
from tests.integration.procs import LEGATO, Proc, free_port

pytestmark = pytest.mark.timeout(180)


@dataclass
class Pki:
    root: Path
    ca: Ca
    server: Pair
    client: Pair
    other_ca: Ca
    secret: Path

    def token_file(self, name: str, *namespaces: str, ttl_s: float = 3600, now: float | None = None) -> Path:
        path = self.root / f"{name}.token"
        path.write_text(issue(read_secret(str(self.secret)), namespaces, subject=name, ttl_s=ttl_s, now=now))
        return path

    def client_flags(self, token: Path | None = None) -> list[str]:
        flags = ["--tls-ca", str(self.ca.cert), "--tls-cert", str(self.client.cert), "--tls-key", str(self.client.key)]
        return [*flags, "--token-file", str(token)] if token else flags

    def security(self, token: Path | None) -> ClientSecurity:
        return ClientSecurity(str(self.ca.cert), str(self.client.cert), str(self.client.key),
                              token=static_token(token.read_text().strip()) if token else None)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    root = tmp_path_factory.mktemp("pki")
    ca = Ca(root)
    secret = root / "secret"
    secret.write_text(new_secret())
    return Pki(root, ca, ca.issue("server"), ca.issue("client", server=False), Ca(root, "Other CA"), secret)


@pytest.fixture(scope="module")
def server(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A dev server with TLS, client certificates (mTLS) and tokens."""
    tmp = tmp_path_factory.mktemp("secure-dev")
    port = free_port()
    proc = Proc(["server", "start-dev", "--db", str(tmp / "legato.db"), "--port", str(port),
                 "--tls-cert", str(pki.server.cert), "--tls-key", str(pki.server.key), "--tls-ca", str(pki.ca.cert),
                 "--tls-client-auth", "--token-secret-file", str(pki.secret)]).start()
    try:
        line = proc.wait_for("listening")
        assert "security: TLS with client certificates + tokens" in line
        yield f"127.0.0.1:{port}"
    finally:
        proc.stop()


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([LEGATO, *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **(env or {})})


def assert_refused(r: subprocess.CompletedProcess[str], *phrases: str) -> None:
    """Exit 3 and one paragraph on stderr, naming what is wrong."""
    assert r.returncode == 3, (r.returncode, r.stdout, r.stderr)
    assert r.stderr.startswith("error: ") and r.stderr.count("\n") == 1, r.stderr
    assert "Traceback" not in r.stderr
    for phrase in phrases:
        assert phrase in r.stderr, r.stderr


# ---------------------------------------------------------------- workflows over TLS, with tokens

def test_a_worker_with_a_token_runs_workflows_over_tls(pki: Pki, server: str) -> None:
    token = pki.token_file("worker", "default")
    worker = Proc(["worker", "--entries", str(BASIC), "--address", server, *pki.client_flags(token)]).start()
    try:
        worker.wait_for("worker polling")
        started = cli("workflow", "start", "--type", "basic:hello", "--task-queue", "basic", "--id", "tls-hello",
                      "--input", '"Ada"', "--address", server, *pki.client_flags(token))
        assert started.returncode == 0, started.stderr
        # the same flags from the environment
        env = {"LEGATO_TLS_CA": str(pki.ca.cert), "LEGATO_TLS_CERT": str(pki.client.cert),
               "LEGATO_TLS_KEY": str(pki.client.key), "LEGATO_TOKEN": token.read_text().strip()}
        result = cli("workflow", "result", "--id", "tls-hello", "--address", server, "--output", "json",
                     "--timeout", "30s", env=env)
    finally:
        worker.stop()
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"greeting": "hello, Ada"}


async def test_the_python_client_raises_the_refusals(pki: Pki, server: str) -> None:
    shop = pki.token_file("shop", "shop")
    async with GrpcClient(server, security=pki.security(shop)) as client:
        await client.start_workflow(StartWorkflowRequest("py-1", "basic:hello", "nobody", ["x"], namespace="shop"))
        with pytest.raises(PermissionDenied, match="namespace 'default'"):
            await client.start_workflow(StartWorkflowRequest("py-2", "basic:hello", "nobody", ["x"]))
    async with GrpcClient(server, security=pki.security(None)) as client:
        with pytest.raises(Unauthenticated, match="requires a token"):
            await client.describe_workflow(ExecutionRef("py-1", namespace="shop"))


# ---------------------------------------------------------------- refusals, each one clear

def test_a_plain_client_is_refused(server: str) -> None:
    assert_refused(cli("workflow", "describe", "--id", "x", "--address", server),
                   "without TLS", "probably requires TLS", "--tls-ca")


def test_a_client_without_a_certificate_is_refused(pki: Pki, server: str) -> None:
    assert_refused(cli("workflow", "describe", "--id", "x", "--address", server, "--tls-ca", str(pki.ca.cert)),
                   "requires a client certificate", "--tls-cert")


def test_a_client_trusting_another_ca_is_refused(pki: Pki, server: str) -> None:
    flags = pki.client_flags()
    flags[1] = str(pki.other_ca.cert)
    assert_refused(cli("workflow", "describe", "--id", "x", "--address", server, *flags),
                   "could not be verified", "not signed by the CA given")


def test_a_call_without_a_token_is_unauthenticated(pki: Pki, server: str) -> None:
    assert_refused(cli("workflow", "describe", "--id", "x", "--address", server, *pki.client_flags()),
                   "requires a token", "--token", "legato token issue")


def test_an_expired_token_is_unauthenticated(pki: Pki, server: str) -> None:
    old = pki.token_file("old", "default", ttl_s=60, now=1_000_000_000)
    assert_refused(cli("workflow", "describe", "--id", "x", "--address", server, *pki.client_flags(old)),
                   "token (subject 'old') expired at 2001-09-09")


def test_an_invalid_token_is_unauthenticated(pki: Pki, server: str) -> None:
    assert_refused(cli("workflow", "describe", "--id", "x", "--address", server, *pki.client_flags(),
                       "--token", "not.a.token"), "not a valid Legato token")


def test_a_token_outside_the_namespace_is_permission_denied(pki: Pki, server: str) -> None:
    shop = pki.token_file("shop-cli", "shop")
    assert_refused(cli("workflow", "start", "--type", "basic:hello", "--task-queue", "basic", "--namespace", "billing",
                       "--address", server, *pki.client_flags(shop)),
                   "acts in namespace 'billing'", "subject 'shop-cli'", "allows: shop")


def test_a_worker_its_token_does_not_cover_stops_at_once(pki: Pki, server: str) -> None:
    shop = pki.token_file("shop-worker", "shop")
    r = subprocess.run([LEGATO, "worker", "--entries", str(BASIC), "--address", server, *pki.client_flags(shop)],
                       capture_output=True, text=True, timeout=60)
    assert_refused(r, "does not let this worker in for namespace 'default'", "allows: shop")


# ---------------------------------------------------------------- the services in separate processes

def test_roles_in_separate_processes_talk_tls_with_client_certificates_and_tokens(pki: Pki, tmp_path: Path) -> None:
    """Frontend in one process, history and matching in another (on SQLite no Kafka is needed
    between those two): the frontend reaches history and matching over mTLS with the services'
    own token, and a worker's workflow completes."""
    address = f"127.0.0.1:{free_port()}"
    config = tmp_path / "legato.yaml"
    config.write_text(yaml.safe_dump({
        "cluster": {"frontend_address": address, "history_address": f"127.0.0.1:{free_port()}",
                    "matching_address": f"127.0.0.1:{free_port()}"},
        "security": {"tls_cert_file": str(pki.server.cert), "tls_key_file": str(pki.server.key),
                     "tls_ca_file": str(pki.ca.cert), "tls_client_auth": True,
                     "token_secret_file": str(pki.secret)}}))
    db = str(tmp_path / "legato.db")
    back = Proc(["server", "start", "--role", "history,matching", "--db", db, "--config", str(config)]).start()
    front = Proc(["server", "start", "--role", "frontend", "--db", db, "--config", str(config)]).start()
    token = pki.token_file("roles-worker", "default")
    worker = Proc(["worker", "--entries", str(BASIC), "--address", address, *pki.client_flags(token)])
    try:
        back.wait_for("listening")
        front.wait_for("security: TLS with client certificates")
        worker.start().wait_for("worker polling")
        r = cli("workflow", "start", "--type", "basic:hello", "--task-queue", "basic", "--id", "roles-1",
                "--input", '"Bo"', "--address", address, *pki.client_flags(token))
        assert r.returncode == 0, r.stderr
        r = cli("workflow", "result", "--id", "roles-1", "--output", "json", "--timeout", "30s",
                "--address", address, *pki.client_flags(token))
        assert r.returncode == 0, r.stderr + front.output() + back.output()
        assert json.loads(r.stdout) == {"greeting": "hello, Bo"}
    finally:
        worker.stop()
        front.stop()
        back.stop()


async def test_a_plain_client_of_a_tls_role_process_is_refused(pki: Pki, tmp_path: Path) -> None:
    """The internal API of history, with TLS and tokens: a namespace token is not enough."""
    history_address = f"127.0.0.1:{free_port()}"
    config = tmp_path / "legato.yaml"
    config.write_text(yaml.safe_dump({
        "cluster": {"history_address": history_address, "matching_address": f"127.0.0.1:{free_port()}"},
        "security": {"tls_cert_file": str(pki.server.cert), "tls_key_file": str(pki.server.key),
                     "tls_ca_file": str(pki.ca.cert), "tls_client_auth": True,
                     "token_secret_file": str(pki.secret)}}))
    proc = Proc(["server", "start", "--role", "history,matching", "--db", str(tmp_path / "legato.db"),
                 "--config", str(config)]).start()
    try:
        proc.wait_for("listening")
        shop = pki.token_file("intruder", "default")
        async with GrpcHistoryClient(history_address, security=pki.security(shop)) as history:
            with pytest.raises(PermissionDenied, match="needs a token for all namespaces"):
                await history.describe_workflow(ExecutionRef("x"))
        async with GrpcClient(history_address) as plain:
            with pytest.raises(Exception, match="requires TLS"):
                await plain.describe_workflow(ExecutionRef("x"))
    finally:
        proc.stop()


async def test_wait_result_over_tls(pki: Pki, server: str) -> None:
    """A long poll (result wait) over TLS with a token ends with the workflow's status."""
    token = pki.token_file("poller", "default")
    async with GrpcClient(server, security=pki.security(token)) as client:
        await client.start_workflow(StartWorkflowRequest("tls-wait", "basic:hello", "nobody", ["x"]))
        await client.terminate_workflow(TerminateWorkflowRequest(ExecutionRef("tls-wait"), "test"))
        resp = await wait_result(client, ExecutionRef("tls-wait"), timeout_ms=10_000)
    assert resp.status == WorkflowStatus.TERMINATED
