"""TLS, client certificates and tokens on real grpc.aio servers on loopback (the frontend's public
API and history's internal one, serving recording fakes), with certificates made for the test:
what gets through, and the one-paragraph error each refusal gives the client."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from frontend.grpc_server import bound_port
from frontend.grpc_server import serve as serve_frontend
from history.grpc_server import serve as serve_history
from legato import api
from legato.access_tokens import InternalToken, issue, new_secret, read_secret
from legato.client import GrpcClient
from legato.config import Config, ConfigError, SecurityConfig
from legato.errors import PermissionDenied, Unauthenticated, Unavailable
from legato.grpc_channel import TLS_FAILURE
from legato.internal_clients import GrpcHistoryClient
from legato.tls import ClientSecurity, FileToken, internal_security, server_credentials, static_token
from tests.certs import Ca, Pair
from tests.unit.legato.grpc_fakes import Recorder


@dataclass
class Pki:
    ca: Ca
    other_ca: Ca
    server: Pair
    client: Pair
    stranger: Pair  # signed by the other CA
    secret_file: Path

    def token(self, *namespaces: str, ttl_s: float = 600) -> Callable[[], str]:
        return static_token(issue(read_secret(str(self.secret_file)), namespaces, subject="test", ttl_s=ttl_s))

    def security(self, *, client_auth: bool = True, tokens: bool = True) -> SecurityConfig:
        return SecurityConfig(tls_cert_file=str(self.server.cert), tls_key_file=str(self.server.key),
                              tls_ca_file=str(self.ca.cert), tls_client_auth=client_auth,
                              token_secret_file=str(self.secret_file) if tokens else "")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    root = tmp_path_factory.mktemp("pki")
    ca, other = Ca(root), Ca(root, "Other CA")
    secret = root / "secret"
    secret.write_text(new_secret())
    return Pki(ca, other, ca.issue("server"), ca.issue("client", server=False), other.issue("stranger", server=False),
               secret)


async def _frontend(security: SecurityConfig) -> tuple[grpc.aio.Server, Recorder, str]:
    service = Recorder()
    server = await serve_frontend(service, "127.0.0.1", 0, config=Config(security=security))
    return server, service, f"127.0.0.1:{bound_port(server)}"


@pytest.fixture
async def secured(pki: Pki) -> AsyncIterator[tuple[Recorder, str]]:
    """A frontend with TLS, client certificates and tokens."""
    server, service, address = await _frontend(pki.security())
    try:
        yield service, address
    finally:
        await server.stop(None)


def _signal(namespace: str = "shop") -> api.SignalWorkflowRequest:
    return api.SignalWorkflowRequest(api.ExecutionRef("order-1", namespace=namespace), "go", [1], request_id="r")


async def _refusal(address: str, security: ClientSecurity | None, request: api.SignalWorkflowRequest | None = None
                   ) -> Exception:
    async with GrpcClient(address, security=security, connect_timeout_s=5) as client:
        with pytest.raises(Exception) as info:
            await client.signal_workflow(request or _signal())
    assert isinstance(info.value, Exception)
    return info.value


async def test_a_client_with_the_ca_its_certificate_and_a_token_gets_through(
        pki: Pki, secured: tuple[Recorder, str]) -> None:
    service, address = secured
    security = ClientSecurity(str(pki.ca.cert), str(pki.client.cert), str(pki.client.key), token=pki.token("shop"))
    async with GrpcClient(address, security=security) as client:
        await client.signal_workflow(_signal("shop"))
    assert [name for name, _ in service.calls] == ["signal_workflow"]


async def test_a_plain_client_is_told_the_server_requires_tls(pki: Pki, secured: tuple[Recorder, str]) -> None:
    err = await _refusal(secured[1], ClientSecurity(token=pki.token("shop")))
    # a connection closed during set-up is also what a restarting server does: it stays an
    # unreachable server (retried like one), with the hint in its message
    assert isinstance(err, Unavailable) and err.reason == "ServerUnreachable"
    assert "without TLS" in err.message and "requires TLS" in err.message and "--tls-ca" in err.message
    assert secured[0].calls == []


async def test_a_client_without_a_certificate_is_told_one_is_required(
        pki: Pki, secured: tuple[Recorder, str]) -> None:
    err = await _refusal(secured[1], ClientSecurity(str(pki.ca.cert), token=pki.token("shop")))
    assert isinstance(err, Unavailable) and err.reason == "ServerUnreachable"
    assert "requires a client certificate" in err.message and "--tls-cert" in err.message


async def test_a_certificate_of_another_ca_is_not_accepted(pki: Pki, secured: tuple[Recorder, str]) -> None:
    err = await _refusal(secured[1], ClientSecurity(str(pki.ca.cert), str(pki.stranger.cert), str(pki.stranger.key),
                                                    token=pki.token("shop")))
    assert isinstance(err, Unavailable) and "does not accept the client certificate" in err.message


async def test_a_server_certificate_of_another_ca_is_not_trusted(pki: Pki, secured: tuple[Recorder, str]) -> None:
    err = await _refusal(secured[1], ClientSecurity(str(pki.other_ca.cert), str(pki.client.cert),
                                                    str(pki.client.key), token=pki.token("shop")))
    assert isinstance(err, Unavailable) and err.reason == TLS_FAILURE
    assert "not signed by the CA given" in err.message and str(pki.other_ca.cert) in err.message


async def test_a_name_the_certificate_does_not_have_is_refused(pki: Pki, secured: tuple[Recorder, str]) -> None:
    err = await _refusal(secured[1], ClientSecurity(str(pki.ca.cert), str(pki.client.cert), str(pki.client.key),
                                                    server_name="db.example.com", token=pki.token("shop")))
    assert isinstance(err, Unavailable) and "does not name 'db.example.com'" in err.message


async def test_a_tls_client_of_a_plain_server_is_told_it_does_not_speak_tls(pki: Pki) -> None:
    server, _, address = await _frontend(SecurityConfig())
    try:
        err = await _refusal(address, ClientSecurity(str(pki.ca.cert)))
    finally:
        await server.stop(None)
    assert isinstance(err, Unavailable) and "does not speak TLS" in err.message


async def test_tls_without_client_certificates_lets_any_tls_client_in(pki: Pki) -> None:
    server, service, address = await _frontend(pki.security(client_auth=False, tokens=False))
    try:
        async with GrpcClient(address, security=ClientSecurity(str(pki.ca.cert))) as client:
            await client.signal_workflow(_signal())
        err = await _refusal(address, None)
    finally:
        await server.stop(None)
    assert len(service.calls) == 1
    assert isinstance(err, Unavailable) and "requires TLS" in err.message


# ---------------------------------------------------------------- tokens

def _with_token(pki: Pki, token: Callable[[], str] | None) -> ClientSecurity:
    return ClientSecurity(str(pki.ca.cert), str(pki.client.cert), str(pki.client.key), token=token)


async def test_a_call_without_a_token_is_unauthenticated(pki: Pki, secured: tuple[Recorder, str]) -> None:
    err = await _refusal(secured[1], _with_token(pki, None))
    assert isinstance(err, Unauthenticated) and err.reason == "TokenMissing"
    assert "requires a token" in err.message and "--token" in err.message
    assert secured[0].calls == []


async def test_an_expired_token_is_unauthenticated(pki: Pki, secured: tuple[Recorder, str]) -> None:
    expired = static_token(issue(read_secret(str(pki.secret_file)), ["shop"], subject="old", ttl_s=1,
                                 now=1_000_000_000))
    err = await _refusal(secured[1], _with_token(pki, expired))
    assert isinstance(err, Unauthenticated) and "expired at 2001-09-09" in err.message


async def test_a_token_outside_the_namespace_is_permission_denied(pki: Pki, secured: tuple[Recorder, str]) -> None:
    err = await _refusal(secured[1], _with_token(pki, pki.token("shop")), _signal("billing"))
    assert isinstance(err, PermissionDenied)
    assert "SignalWorkflow acts in namespace 'billing'" in err.message and "allows: shop" in err.message
    assert secured[0].calls == []


async def test_a_token_of_another_secret_is_unauthenticated(pki: Pki, secured: tuple[Recorder, str]) -> None:
    foreign = static_token(issue(new_secret().encode(), ["*"], subject="mallory", ttl_s=60))
    err = await _refusal(secured[1], _with_token(pki, foreign))
    assert isinstance(err, Unauthenticated) and "not signed with this server's secret" in err.message


# ---------------------------------------------------------------- the internal API

async def test_the_internal_api_takes_the_services_token_and_refuses_a_namespace_token(pki: Pki) -> None:
    security = pki.security()
    service = Recorder()
    server = await serve_history(service, "127.0.0.1", 0, config=Config(security=security))
    address = f"127.0.0.1:{bound_port(server)}"
    try:
        internal = internal_security(security, InternalToken(read_secret(security.token_secret_file), 600))
        assert internal is not None and internal.cert_file == str(pki.server.cert)  # its own certificate (mTLS)
        async with GrpcHistoryClient(address, security=internal) as history:
            await history.signal_workflow(_signal("any-namespace"))
        async with GrpcHistoryClient(address, security=_with_token(pki, pki.token("shop"))) as history:
            with pytest.raises(PermissionDenied, match=r"needs a token for all namespaces"):
                await history.signal_workflow(_signal("shop"))
    finally:
        await server.stop(None)
    assert len(service.calls) == 1


# ---------------------------------------------------------------- unusable files

def test_a_key_that_is_not_the_certificates_is_refused_before_serving(pki: Pki, tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization

    with pytest.raises(ConfigError, match=r"server.pem and private key .*client.key cannot be used together"):
        server_credentials(SecurityConfig(tls_cert_file=str(pki.server.cert), tls_key_file=str(pki.client.key)))
    key = serialization.load_pem_private_key(pki.server.key.read_bytes(), password=None)
    locked = tmp_path / "locked.key"
    locked.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                         serialization.BestAvailableEncryption(b"pw")))
    with pytest.raises(ConfigError, match="the key unencrypted"):  # and no password prompt
        server_credentials(SecurityConfig(tls_cert_file=str(pki.server.cert), tls_key_file=str(locked)))
    with pytest.raises(ConfigError, match="is not a PEM file"):
        ClientSecurity(ca_file=str(pki.secret_file)).channel_credentials()


def test_a_token_file_is_read_again_when_it_changes(tmp_path: Path) -> None:
    path = tmp_path / "worker.token"
    path.write_text("first\n")
    token = FileToken(str(path))
    assert token() == "first"
    path.write_text("second\n")
    os.utime(path, ns=(0, path.stat().st_mtime_ns + 1_000_000))  # a new mtime, whatever the clock's grain
    assert token() == "second"
    path.unlink()
    assert token() == "second"  # the last one, while the file is being replaced
    with pytest.raises(ConfigError, match="cannot read the token file"):
        FileToken(str(tmp_path / "missing"))
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ConfigError, match="is empty"):
        FileToken(str(tmp_path / "empty"))
