"""Who may call a gRPC server, checked on every call before its request is served (README,
"TLS and tokens").

With `security.token_secret_file` set, each call must carry `authorization: Bearer <token>`
(`legato.access_tokens`):

* no token, or one that is invalid or expired: UNAUTHENTICATED, saying which;
* the public API (frontend): each rpc names the namespaces it acts in (`NamespaceRules`, made by
  the frontend from the request message); a token must allow all of them, else PERMISSION_DENIED
  naming the namespace. An rpc without a rule is refused to all but all-namespace tokens, so a
  new rpc cannot slip through unchecked;
* the internal APIs (history, matching) take only tokens for all namespaces: the services' own
  (`access_tokens.InternalToken`) or an administrator's.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from legato.access_tokens import Claims, TokenVerifier, read_secret
from legato.admission import Behaviour, wrapped_handler
from legato.config import SecurityConfig
from legato.errors import InvalidArgument, PermissionDenied, ServiceError, Unauthenticated
from legato.grpc_errors import error_status
from legato.proto import legato_pb2 as pb
from legato.tls import AUTHORIZATION_KEY, BEARER

# rpc name -> the namespaces a request (the protobuf message) acts in
NamespaceRules = Mapping[str, Callable[[Any], Iterable[str]]]


def bearer_token(context: grpc.aio.ServicerContext[Any, Any]) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key == AUTHORIZATION_KEY:
            text = value.decode(errors="replace") if isinstance(value, bytes) else str(value)
            return text[len(BEARER):].strip() if text.startswith(BEARER) else text.strip()
    return None


def _message(path: str, request: Any) -> Any:
    """The request as its protobuf message (parsed, when it arrived as bytes)."""
    if not isinstance(request, bytes):
        return request
    service, _, rpc = path.lstrip("/").rpartition("/")
    desc = pb.DESCRIPTOR.services_by_name[service.rpartition(".")[2]].methods_by_name[rpc]
    try:
        return getattr(pb, desc.input_type.name).FromString(request)
    except DecodeError:
        raise InvalidArgument(f"{rpc}: the request is not a valid {desc.input_type.full_name} message",
                              reason="BadRequest") from None


class TokenAuth(grpc.aio.ServerInterceptor):
    """Checks each call's token; with `rules` (the public API) against the namespaces of its
    request, without (an internal API) for all namespaces."""

    def __init__(self, verifier: TokenVerifier, rules: NamespaceRules | None, what: str) -> None:
        self._verifier = verifier
        self._rules = rules
        self._what = what
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    async def intercept_service(
            self, continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
            handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        path = handler_call_details.method
        return await wrapped_handler(self._wrapped, continuation, handler_call_details,
                                     lambda behaviour: self._guard(path, behaviour))

    def authorize(self, path: str, request: Any, token: str | None) -> Claims:
        """The caller's claims, if it may make the call to `path` ("/legato.WorkflowService/
        StartWorkflow"); Unauthenticated or PermissionDenied. `request` is the protobuf message
        or its bytes (servers that parse requests themselves), parsed here only when a rule needs it."""
        rpc = path.rpartition("/")[2]
        if not token:
            raise Unauthenticated(f"the {self._what} requires a token and the call to {rpc} had none: give one with "
                                  "--token or --token-file (LEGATO_TOKEN, LEGATO_TOKEN_FILE); `legato token issue` "
                                  "makes one", reason="TokenMissing")
        claims = self._verifier.verify(token)
        if claims.all_namespaces:
            return claims
        rule = self._rules.get(rpc) if self._rules is not None else None
        if rule is None:
            raise PermissionDenied(f"{rpc} on the {self._what} needs a token for all namespaces (\"*\"); the caller's "
                                   f"token (subject {claims.subject!r}) allows: "
                                   f"{', '.join(sorted(claims.namespaces)) or 'none'}")
        claims.check(rule(_message(path, request)), rpc)
        return claims

    def _guard(self, path: str, behaviour: Behaviour) -> Behaviour:
        async def guarded(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            try:
                self.authorize(path, request, bearer_token(context))
            except ServiceError as e:
                await context.abort(*error_status(e))
            return await behaviour(request, context)
        return guarded


def token_auth(security: SecurityConfig, rules: NamespaceRules | None, what: str) -> TokenAuth | None:
    """The token check of a server (None: `security` has no token secret, any caller may call)."""
    if not security.token_secret_file:
        return None
    verifier = TokenVerifier(read_secret(security.token_secret_file), leeway_s=security.token_leeway_ms / 1000,
                             cache_size=security.token_cache_size)
    return TokenAuth(verifier, rules, what)
