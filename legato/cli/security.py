"""The command-line side of TLS and tokens (README, "TLS and tokens").

Clients (`workflow ...`, `worker`, `bench hello --address`): `--tls-ca`, `--tls-cert`,
`--tls-key`, `--tls-server-name`, `--token`, `--token-file`, each also an environment variable
(LEGATO_TLS_CA, ...). Servers (`server start`, `server start-dev`): `--tls-cert`, `--tls-key`,
`--tls-ca`, `--tls-client-auth`, `--token-secret-file`, on top of the `security` section of the
config. The options leave their values in the click context, so that the commands keep their
signatures: `client_security()` and `server_security(config)` read them back.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

import click
from pydantic import ValidationError

from legato.api import ExecutionRef
from legato.cli.cli_error import CliError
from legato.client import GrpcClient
from legato.config import ConfigError, SecurityConfig
from legato.errors import NotFound, PermissionDenied, ServiceError, Unauthenticated, Unavailable
from legato.grpc_channel import TLS_FAILURE
from legato.tls import ClientSecurity, FileToken, static_token

F = TypeVar("F", bound=Callable[..., Any])

_CLIENT = "legato.client_security"
_SERVER = "legato.server_security"


def _keep(key: str) -> Callable[[click.Context, click.Parameter, Any], None]:
    def callback(ctx: click.Context, param: click.Parameter, value: Any) -> None:
        if value not in (None, "", False):
            ctx.meta.setdefault(key, {})[param.name] = value
    return callback


_FILE = click.Path(exists=True, dir_okay=False, readable=True)


def _apply(fn: F, options: list[Callable[[F], F]]) -> F:
    """Apply click options so that --help lists them in the order given."""
    for option in reversed(options):
        fn = option(fn)
    return fn


def client_security_options(fn: F) -> F:
    """The TLS and token options of a command that calls a server."""
    keep = _keep(_CLIENT)
    hidden: dict[str, Any] = {"callback": keep, "expose_value": False, "default": None}
    return _apply(fn, [
        click.option("--tls-ca", envvar="LEGATO_TLS_CA", type=_FILE, metavar="FILE", **hidden,
                     help="CA bundle (PEM) to verify the server with: turns TLS on."),
        click.option("--tls-cert", envvar="LEGATO_TLS_CERT", type=_FILE, metavar="FILE", **hidden,
                     help="Client certificate (PEM) for servers that require one (mTLS)."),
        click.option("--tls-key", envvar="LEGATO_TLS_KEY", type=_FILE, metavar="FILE", **hidden,
                     help="Private key (PEM) of --tls-cert."),
        click.option("--tls-server-name", envvar="LEGATO_TLS_SERVER_NAME", metavar="NAME", **hidden,
                     help="The name to expect in the server's certificate (default: the host of --address)."),
        click.option("--token", envvar="LEGATO_TOKEN", **hidden,
                     help="Access token (from `legato token issue`) sent with every call."),
        click.option("--token-file", envvar="LEGATO_TOKEN_FILE", type=_FILE, metavar="FILE", **hidden,
                     help="File holding the access token (instead of --token, which other users may see in ps); "
                          "read again when it changes."),
    ])


def client_security() -> ClientSecurity | None:
    """What the client options of the running command ask for (None: plain, no token)."""
    given: dict[str, str] = click.get_current_context().meta.get(_CLIENT, {})
    if not given:
        return None
    text, path = given.get("token", "").strip(), given.get("token_file", "")
    if text and path:
        raise CliError("give the token once: --token or --token-file (LEGATO_TOKEN, LEGATO_TOKEN_FILE), not both")
    try:
        token = FileToken(path) if path else static_token(text) if text else None
        return ClientSecurity(ca_file=given.get("tls_ca", ""), cert_file=given.get("tls_cert", ""),
                              key_file=given.get("tls_key", ""), server_name=given.get("tls_server_name", ""),
                              token=token)
    except ConfigError as e:
        raise CliError(str(e)) from None


def server_security_options(fn: F) -> F:
    """The TLS and token options of a command that runs servers (override `security.*`)."""
    keep = _keep(_SERVER)
    hidden: dict[str, Any] = {"callback": keep, "expose_value": False, "default": None}
    return _apply(fn, [
        click.option("--tls-cert", "tls_cert_file", type=_FILE, metavar="FILE", **hidden,
                     help="Server certificate (PEM): with --tls-key, every gRPC API of this process uses TLS "
                          "(default: security.tls_cert_file)."),
        click.option("--tls-key", "tls_key_file", type=_FILE, metavar="FILE", **hidden,
                     help="Private key (PEM) of --tls-cert."),
        click.option("--tls-ca", "tls_ca_file", type=_FILE, metavar="FILE", **hidden,
                     help="CA bundle (PEM) that signs client certificates and the other services' certificates "
                          "(default: security.tls_ca_file)."),
        click.option("--tls-client-auth", "tls_client_auth", is_flag=True, **hidden,
                     help="Require client certificates signed by --tls-ca (mTLS) from every caller, workers and "
                          "the other services included (default: security.tls_client_auth)."),
        click.option("--token-secret-file", "token_secret_file", type=_FILE, metavar="FILE", **hidden,
                     help="Require a token signed with this secret on every call (default: "
                          "security.token_secret_file; `legato token secret FILE` makes one)."),
    ])


def server_security(config: SecurityConfig) -> SecurityConfig:
    """`config` with the server options of the running command on top, validated like the file."""
    given: dict[str, Any] = click.get_current_context().meta.get(_SERVER, {})
    if not given:
        return config
    try:
        return SecurityConfig.model_validate({**config.model_dump(), **given})
    except ValidationError as e:
        raise CliError("security: " + "; ".join(err["msg"].removeprefix("Value error, ") for err in e.errors())) \
            from None


def connect(address: str, **kwargs: Any) -> GrpcClient:
    """A client of the server at `address` with the running command's TLS and token options."""
    return GrpcClient(address, security=client_security(), **kwargs)


# The workflow id a worker's access check describes: no such workflow is expected (NotFound is the
# answer that means "let in").
ACCESS_CHECK_ID = "legato-worker-access-check"
ACCESS_CHECK_TIMEOUT_S = 3.0


async def check_access(client: GrpcClient, namespaces: list[str]) -> None:
    """CliError when the server refuses this client (TLS, token, namespace) for one of
    `namespaces`, so that a worker stops at once with the reason instead of polling in vain. A
    server that cannot be reached yet, or answers slowly, is left to the worker's polls."""
    for namespace in namespaces:
        try:
            async with asyncio.timeout(ACCESS_CHECK_TIMEOUT_S):
                await client.describe_workflow(ExecutionRef(ACCESS_CHECK_ID, namespace=namespace))
        except (NotFound, TimeoutError):
            continue
        except (Unauthenticated, PermissionDenied) as e:
            raise CliError(f"the server at {client.address} does not let this worker in for namespace "
                           f"{namespace!r}: {e.message}") from None
        except Unavailable as e:
            if e.reason == TLS_FAILURE:
                raise CliError(e.message) from None
            return
        except ServiceError:
            continue
