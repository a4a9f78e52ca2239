"""TLS for Legato's gRPC servers and clients, and what a client sends to be let in.

Servers: `server_credentials(security)` from the `security` section (certificate, key, and with
`tls_client_auth` the CA that client certificates must be signed by).

Clients: a `ClientSecurity` says how to reach a server: its CA (TLS on), a client certificate
(mTLS), the name to expect in the server's certificate, and the token to send. Made from the
command line (`--tls-ca`, `--tls-cert`, `--tls-key`, `--token`) for the CLI and workers, and
from the `security` section for the services' calls to each other (`internal_security`).

A connection that fails during set-up gives gRPC's terse reason ("Socket closed", "WRONG_VERSION_
NUMBER"); `explain_connect_failure` turns it into what is most likely wrong, given whether this
client uses TLS.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import grpc

from legato.config import ConfigError, SecurityConfig

AUTHORIZATION_KEY = "authorization"
BEARER = "Bearer "

Metadata = tuple[tuple[str, str], ...]


def read_pem(path: str, what: str) -> bytes:
    """The PEM file `path` (a `what`: "certificate", "private key", "CA bundle"); ConfigError
    naming the file when it cannot be read or is not PEM."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise ConfigError(f"cannot read the TLS {what} {path}: {e.strerror}") from None
    if b"-----BEGIN " not in data:
        raise ConfigError(f"the TLS {what} {path} is not a PEM file (no '-----BEGIN' line)")
    return data


def check_pair(cert_file: str, key_file: str, ca_file: str = "") -> None:
    """ConfigError when the certificate and key do not make a pair (or a file is not what it
    should be), checked with Python's own TLS library: gRPC reports such files only in its log,
    and then fails to listen (or to connect) without saying why."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        if cert_file:
            # An encrypted key must fail here, not make OpenSSL prompt for its password.
            context.load_cert_chain(cert_file, key_file, password=lambda: b"")
    except ssl.SSLError as e:
        raise ConfigError(f"the TLS certificate {cert_file} and private key {key_file} cannot be used together "
                          f"({e.reason or e}): is the key the certificate's, both PEM, the key unencrypted?") from None
    try:
        if ca_file:
            context.load_verify_locations(ca_file)
    except ssl.SSLError as e:
        raise ConfigError(f"the TLS CA bundle {ca_file} cannot be used ({e.reason or e})") from None


def server_credentials(security: SecurityConfig) -> grpc.ServerCredentials | None:
    """The credentials of a TLS server (None: TLS off)."""
    if not security.tls:
        return None
    key = read_pem(security.tls_key_file, "private key")
    cert = read_pem(security.tls_cert_file, "certificate")
    ca = read_pem(security.tls_ca_file, "CA bundle") if security.tls_ca_file else None
    check_pair(security.tls_cert_file, security.tls_key_file, security.tls_ca_file)
    return grpc.ssl_server_credentials([(key, cert)], root_certificates=ca if security.tls_client_auth else None,
                                       require_client_auth=security.tls_client_auth)


def server_ssl_context(security: SecurityConfig) -> ssl.SSLContext | None:
    """The TLS of a server that is not gRPC (the HTTP API), from the same settings as
    `server_credentials`: the same certificate, and client certificates when tls_client_auth
    (None: TLS off). ConfigError naming a file that cannot be used."""
    if not security.tls:
        return None
    check_pair(security.tls_cert_file, security.tls_key_file, security.tls_ca_file)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(security.tls_cert_file, security.tls_key_file, password=lambda: b"")
    if security.tls_client_auth:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(security.tls_ca_file)
    return context


@dataclass(frozen=True)
class ClientSecurity:
    """How a client reaches a server: TLS (on when `ca_file` or `cert_file` is given), a client
    certificate for mTLS, and the token it sends (`token`: a function, so that a service can
    renew its own)."""

    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    server_name: str = ""  # expected in the server's certificate; empty: the host of the address
    token: Callable[[], str] | None = None

    def __post_init__(self) -> None:
        if bool(self.cert_file) != bool(self.key_file):
            raise ConfigError("a client certificate needs its key and the other way round: give both --tls-cert "
                              "and --tls-key (LEGATO_TLS_CERT, LEGATO_TLS_KEY) or neither")

    @property
    def tls(self) -> bool:
        return bool(self.ca_file or self.cert_file)

    def channel_credentials(self) -> grpc.ChannelCredentials | None:
        """None: a plain (insecure) channel. Without a CA file the system's CAs verify the server."""
        if not self.tls:
            return None
        ca = read_pem(self.ca_file, "CA bundle") if self.ca_file else None
        key = read_pem(self.key_file, "private key") if self.key_file else None
        cert = read_pem(self.cert_file, "certificate") if self.cert_file else None
        check_pair(self.cert_file, self.key_file, self.ca_file)
        return grpc.ssl_channel_credentials(ca, key, cert)

    def channel_options(self) -> list[tuple[str, str]]:
        return [("grpc.ssl_target_name_override", self.server_name)] if self.tls and self.server_name else []

    def metadata(self) -> Metadata | None:
        """What each call sends: the token, if any."""
        return ((AUTHORIZATION_KEY, BEARER + self.token()),) if self.token is not None else None

    def describe(self) -> str:
        if not self.tls:
            return "without TLS"
        parts = [f"CA {self.ca_file}" if self.ca_file else "the system's CAs"]
        if self.cert_file:
            parts.append(f"client certificate {self.cert_file}")
        return "with TLS, " + ", ".join(parts)


def static_token(token: str) -> Callable[[], str]:
    return lambda: token


class FileToken:
    """The token in a file, read again whenever the file changes: a long-running worker picks up
    a renewed token without a restart. ConfigError when the file cannot be read at first."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._mtime_ns = -1
        self._token = ""
        if not self():
            raise ConfigError(f"the token file {path} is empty")

    def __call__(self) -> str:
        try:
            mtime_ns = os.stat(self._path).st_mtime_ns
            if mtime_ns != self._mtime_ns:
                text = Path(self._path).read_text().strip()
                if text:  # a file being rewritten may be empty for a moment: keep the last token
                    self._token, self._mtime_ns = text, mtime_ns
        except (OSError, UnicodeDecodeError) as e:
            if not self._token:
                raise ConfigError(f"cannot read the token file {self._path}: "
                                  f"{getattr(e, 'strerror', None) or e}") from None
        return self._token


def internal_security(security: SecurityConfig, token: Callable[[], str] | None) -> ClientSecurity | None:
    """How the services of this process call the others: the same CA, the process's own
    certificate when the others require one, and the internal token (None: plain, no token)."""
    if not security.tls and token is None:
        return None
    if not security.tls:
        return ClientSecurity(token=token)
    cert = security.internal_cert_file or (security.tls_cert_file if security.tls_client_auth else "")
    key = security.internal_key_file or (security.tls_key_file if security.tls_client_auth else "")
    # Without a CA file the services verify each other against the system's CAs.
    return ClientSecurity(ca_file=security.tls_ca_file, cert_file=cert, key_file=key,
                          server_name=security.tls_server_name, token=token)


def explain_connect_failure(details: str, security: ClientSecurity | None) -> tuple[str, bool]:
    """A hint for a connection that failed during set-up, from gRPC's `details` ("" when the
    failure says nothing about TLS: refused, timed out, ...), and whether the failure is surely
    about TLS. A connection closed or reset during set-up is also what a server that is being
    killed or restarted does: that one stays an unreachable server, retried like any other."""
    hint = _connect_hint(details, security)
    ambiguous = "Socket closed" in details or "Connection reset" in details
    return hint, bool(hint) and not ambiguous


def _connect_hint(details: str, security: ClientSecurity | None) -> str:
    tls = security is not None and security.tls
    if "WRONG_VERSION_NUMBER" in details or "wrong version number" in details.lower():
        return ("the server does not speak TLS (or not on this port): connect without --tls-ca/--tls-cert "
                "(LEGATO_TLS_CA, LEGATO_TLS_CERT), or turn TLS on at the server")
    if "Hostname Verification" in details or "No match found for server name" in details:
        if security is not None and security.server_name:
            return (f"the server's certificate does not name {security.server_name!r} (--tls-server-name, "
                    "LEGATO_TLS_SERVER_NAME): give a name it was issued for")
        return ("the server's certificate does not name the host of the address: use the name it was issued for, "
                "or give that name with --tls-server-name (LEGATO_TLS_SERVER_NAME)")
    if "CERTIFICATE_VERIFY_FAILED" in details or "certificate verify failed" in details.lower():
        why = "its certificate has expired" if "expired" in details else \
            "its certificate is not signed by the CA given"
        where = f" ({security.ca_file})" if security is not None and security.ca_file else " (the system's CAs)"
        return f"the server could not be verified: {why}{where}: give the CA that signed it with --tls-ca"
    if "Socket closed" in details or "Connection reset" in details or "handshake" in details.lower():
        if not tls:
            return ("the server closed the connection during set-up: unless it is stopping, it probably requires "
                    "TLS; give its CA with --tls-ca (LEGATO_TLS_CA)")
        if security is not None and not security.cert_file:
            return ("the server closed the TLS connection during set-up: it probably requires a client certificate "
                    "(mTLS); give one with --tls-cert and --tls-key (LEGATO_TLS_CERT, LEGATO_TLS_KEY)")
        return ("the server closed the TLS connection during set-up: it probably does not accept the client "
                "certificate (not signed by the CA it trusts, or expired)")
    return ""


def describe_server_security(security: SecurityConfig) -> str:
    """What a server prints about its security once it listens."""
    parts = []
    if security.tls:
        parts.append("TLS with client certificates" if security.tls_client_auth else "TLS")
    if security.token_secret_file:
        parts.append("tokens")
    return " + ".join(parts) or "none"
