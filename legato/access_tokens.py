"""Access tokens: who may call, in which namespaces (README, "TLS and tokens").

A token is a JWT signed with HS256 by a secret the servers share (`security.token_secret_file`).
Its claims name the namespaces the caller may act in (`"namespaces": ["shop", ...]`, or `["*"]`
for all of them) and when it expires (`exp`, required). JWT rather than a file of static tokens:
a server needs only the secret to check any token (no list to distribute and reload when a token
is added), a token carries its own expiry, and the services make their own short-lived tokens for
calls to each other from the same secret (`InternalToken`), so nothing else has to be configured
between them. The cost is that whoever holds the secret can make any token: it belongs on the
servers and on the machine that issues tokens only.

Checking a token is cached by its text (`TokenVerifier`), so a worker's calls pay for the
signature once, not on every call.
"""

from __future__ import annotations

import datetime as dt
import secrets
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import jwt

from legato.config import ConfigError
from legato.errors import PermissionDenied, Unauthenticated

ALGORITHM = "HS256"
ISSUER = "legato"
ALL_NAMESPACES = "*"
INTERNAL_SUBJECT = "legato-internal"
# HS256 keys shorter than the hash output weaken the signature (RFC 7518, 3.2).
MIN_SECRET_BYTES = 32
# What `legato token secret` writes: 48 random bytes, URL-safe base64 (64 characters).
SECRET_BYTES = 48


@dataclass(frozen=True, slots=True)
class Claims:
    """What a verified token allows."""

    subject: str
    namespaces: frozenset[str]
    expires_at: float  # Unix time, seconds

    @property
    def all_namespaces(self) -> bool:
        return ALL_NAMESPACES in self.namespaces

    def allows(self, namespace: str) -> bool:
        return self.all_namespaces or namespace in self.namespaces

    def check(self, namespaces: Iterable[str], what: str) -> None:
        """PermissionDenied naming the first namespace of `namespaces` the token does not cover."""
        for ns in namespaces:
            if not self.allows(ns):
                allowed = ", ".join(sorted(self.namespaces)) or "none"
                raise PermissionDenied(f"{what} acts in namespace {ns!r}, which the caller's token "
                                       f"(subject {self.subject!r}) does not allow; it allows: {allowed}")


def new_secret() -> str:
    return secrets.token_urlsafe(SECRET_BYTES)


def read_secret(path: str) -> bytes:
    """The secret in `path` (surrounding whitespace ignored); ConfigError saying what is wrong."""
    try:
        secret = Path(path).read_bytes().strip()
    except OSError as e:
        raise ConfigError(f"cannot read the token secret file {path}: {e.strerror}") from None
    if len(secret) < MIN_SECRET_BYTES:
        raise ConfigError(f"the token secret in {path} has {len(secret)} bytes; it needs at least "
                          f"{MIN_SECRET_BYTES} (make one with `legato token secret FILE`)")
    return secret


def issue(secret: bytes, namespaces: Iterable[str], *, subject: str, ttl_s: float,
          now: float | None = None) -> str:
    """A token for `subject` allowing `namespaces` ("*": all), valid for `ttl_s` seconds."""
    issued = time.time() if now is None else now
    payload = {"iss": ISSUER, "sub": subject, "namespaces": sorted(set(namespaces)),
               "iat": int(issued), "exp": int(issued + ttl_s)}
    return jwt.encode(payload, secret, algorithm=ALGORITHM)


def _when(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


class TokenVerifier:
    """Checks tokens against the secret; remembers up to `cache_size` valid ones (their expiry is
    still checked on every call)."""

    def __init__(self, secret: bytes, *, leeway_s: float = 30.0, cache_size: int = 10_000) -> None:
        self._secret = secret
        self._leeway_s = leeway_s
        self._cache_size = cache_size
        self._cache: OrderedDict[str, Claims] = OrderedDict()

    def verify(self, token: str) -> Claims:
        """The token's claims; Unauthenticated saying why it is refused."""
        claims = self._cache.get(token)
        if claims is None:
            claims = self._decode(token)
            self._cache[token] = claims
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        if time.time() > claims.expires_at + self._leeway_s:
            self._cache.pop(token, None)
            raise Unauthenticated(f"the token (subject {claims.subject!r}) expired at {_when(claims.expires_at)}: "
                                  "ask for a new one (`legato token issue`)", reason="TokenExpired")
        return claims

    def _decode(self, token: str) -> Claims:
        try:
            payload = jwt.decode(token, self._secret, algorithms=[ALGORITHM], issuer=ISSUER, leeway=self._leeway_s,
                                 options={"require": ["exp", "iss", "sub"], "verify_exp": False})
        except jwt.InvalidSignatureError:
            raise Unauthenticated("the token is not signed with this server's secret (security.token_secret_file): "
                                  "it was made for another server, or altered", reason="TokenInvalid") from None
        except jwt.ImmatureSignatureError:
            raise Unauthenticated("the token is not valid yet (its iat is in the future): check the clocks",
                                  reason="TokenInvalid") from None
        except jwt.InvalidTokenError as e:
            raise Unauthenticated(f"the token is not a valid Legato token ({e}): give one made by `legato token "
                                  "issue`", reason="TokenInvalid") from None
        namespaces = payload.get("namespaces")
        if not isinstance(namespaces, list) or not all(isinstance(n, str) for n in namespaces):
            raise Unauthenticated("the token is not a valid Legato token: its 'namespaces' claim is not a list of "
                                  "names", reason="TokenInvalid")
        return Claims(str(payload["sub"]), frozenset(namespaces), float(payload["exp"]))


class InternalToken:
    """The token a service sends on its calls to the other services: all namespaces, made from
    the shared secret, replaced by a new one at half its life."""

    def __init__(self, secret: bytes, ttl_s: float) -> None:
        self._secret = secret
        self._ttl_s = ttl_s
        self._token = ""
        self._renew_at = 0.0

    def __call__(self) -> str:
        now = time.time()
        if now >= self._renew_at:
            self._token = issue(self._secret, [ALL_NAMESPACES], subject=INTERNAL_SUBJECT, ttl_s=self._ttl_s, now=now)
            self._renew_at = now + self._ttl_s / 2
        return self._token
