"""`legato token ...`: the secret servers check tokens with, and the tokens themselves (README,
"TLS and tokens"; `legato.access_tokens` says why tokens are JWTs)."""

from __future__ import annotations

import os
from pathlib import Path

import click

from legato.access_tokens import ALL_NAMESPACES, TokenVerifier, issue, new_secret, read_secret
from legato.cli.common import CliError
from legato.cli.output import ExitCode, print_json
from legato.durations import parse_duration_ms
from legato.errors import Unauthenticated


@click.group()
def token() -> None:
    """Access tokens: which namespaces a caller may use."""


@token.command("secret")
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("--force", is_flag=True, help="Replace the file if it exists (every token made with it stops working).")
def secret(path: str, force: bool) -> int:
    """Write a new random secret to PATH (readable by its owner only): give it to the servers as
    --token-secret-file (security.token_secret_file) and to `legato token issue`."""
    target = Path(path)
    if target.exists() and not force:
        raise CliError(f"{path} exists: tokens made with it would stop working; give --force to replace it")
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(new_secret() + "\n")
    except OSError as e:
        raise CliError(f"cannot write the secret to {path}: {e.strerror}") from None
    click.echo(f"legato: new token secret in {path}", err=True)
    return ExitCode.OK


@token.command("issue")
@click.option("--namespace", "namespaces", multiple=True, required=True, metavar="NS",
              help=f"A namespace the token allows (repeatable); {ALL_NAMESPACES!r} allows all of them, and the "
                   "internal APIs of history and matching.")
@click.option("--secret-file", required=True, type=click.Path(exists=True, dir_okay=False),
              help="The servers' token secret (security.token_secret_file).")
@click.option("--subject", default="legato-client", show_default=True,
              help="Who the token is for: named in the servers' refusals.")
@click.option("--ttl", default="30d", show_default=True, help="How long the token is valid, e.g. 12h, 90d.")
def issue_cmd(namespaces: tuple[str, ...], secret_file: str, subject: str, ttl: str) -> int:
    """Print a token that lets its holder use NAMESPACES until it expires."""
    try:
        ttl_ms = parse_duration_ms(ttl, "--ttl")
    except ValueError as e:
        raise CliError(str(e)) from None
    if ttl_ms <= 0:
        raise CliError("--ttl: a token must be valid for some time (e.g. 30d)")
    if any(not ns.strip() for ns in namespaces):
        raise CliError("--namespace: a namespace name cannot be empty")
    click.echo(issue(read_secret(secret_file), [ns.strip() for ns in namespaces], subject=subject,
                     ttl_s=ttl_ms / 1000))
    return ExitCode.OK


@token.command("verify")
@click.argument("token_text", metavar="TOKEN")
@click.option("--secret-file", required=True, type=click.Path(exists=True, dir_okay=False),
              help="The servers' token secret (security.token_secret_file).")
def verify(token_text: str, secret_file: str) -> int:
    """Check TOKEN as a server would and print what it allows (JSON)."""
    try:
        claims = TokenVerifier(read_secret(secret_file), leeway_s=0).verify(token_text.strip())
    except Unauthenticated as e:
        raise CliError(e.message) from None
    print_json({"subject": claims.subject, "namespaces": sorted(claims.namespaces),
                "expires_at": int(claims.expires_at)})
    return ExitCode.OK


__all__ = ["token"]
