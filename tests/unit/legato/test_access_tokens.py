"""Access tokens (JWT, HS256): issuing, checking, the refusals' messages, the services' own
tokens, and which namespaces each public rpc acts in."""

from __future__ import annotations

import json
import time
from pathlib import Path

import jwt
import pytest

from frontend.grpc_server import RPCS
from frontend.namespaces import RULES
from legato.access_tokens import (
    ALL_NAMESPACES,
    INTERNAL_SUBJECT,
    InternalToken,
    TokenVerifier,
    issue,
    new_secret,
    read_secret,
)
from legato.commands import CommandType
from legato.config import ConfigError
from legato.errors import InvalidArgument, PermissionDenied, Unauthenticated
from legato.proto import legato_pb2 as pb
from legato.tokens import TaskToken

SECRET = new_secret().encode()


def test_a_token_allows_the_namespaces_it_names() -> None:
    claims = TokenVerifier(SECRET).verify(issue(SECRET, ["shop", "billing"], subject="ann", ttl_s=60))
    assert claims.subject == "ann"
    assert claims.allows("shop") and claims.allows("billing") and not claims.allows("default")
    claims.check(["shop", "billing"], "StartWorkflow")
    with pytest.raises(PermissionDenied, match=r"StartWorkflow acts in namespace 'default'.*'ann'.*billing, shop"):
        claims.check(["shop", "default"], "StartWorkflow")


def test_an_all_namespaces_token_allows_any() -> None:
    claims = TokenVerifier(SECRET).verify(issue(SECRET, [ALL_NAMESPACES], subject="admin", ttl_s=60))
    assert claims.all_namespaces and claims.allows("anything")


def test_an_expired_token_is_refused_naming_when() -> None:
    token = issue(SECRET, ["shop"], subject="ann", ttl_s=60, now=time.time() - 3600)
    with pytest.raises(Unauthenticated, match=r"token \(subject 'ann'\) expired at 20\d\d-") as info:
        TokenVerifier(SECRET, leeway_s=0).verify(token)
    assert info.value.reason == "TokenExpired"


def test_the_leeway_tolerates_a_clock_slightly_behind() -> None:
    token = issue(SECRET, ["shop"], subject="ann", ttl_s=60, now=time.time() - 70)
    assert TokenVerifier(SECRET, leeway_s=30).verify(token).subject == "ann"


def test_a_token_of_another_secret_or_altered_is_refused() -> None:
    other = issue(new_secret().encode(), ["shop"], subject="ann", ttl_s=60)
    with pytest.raises(Unauthenticated, match="not signed with this server's secret") as info:
        TokenVerifier(SECRET).verify(other)
    assert info.value.reason == "TokenInvalid"
    header, _payload, signature = issue(SECRET, ["shop"], subject="ann", ttl_s=60).split(".")
    forged = jwt.utils.base64url_encode(json.dumps({"iss": "legato", "sub": "ann", "namespaces": ["*"],
                                                    "exp": int(time.time()) + 60}).encode()).decode()
    with pytest.raises(Unauthenticated, match="not signed with this server's secret"):
        TokenVerifier(SECRET).verify(f"{header}.{forged}.{signature}")


@pytest.mark.parametrize("token", ["", "abc", "a.b.c", "x" * 5000])
def test_garbage_is_not_a_token(token: str) -> None:
    with pytest.raises(Unauthenticated, match="not a valid Legato token"):
        TokenVerifier(SECRET).verify(token)


def test_a_token_without_an_expiry_or_namespaces_is_refused() -> None:
    no_exp = jwt.encode({"iss": "legato", "sub": "ann", "namespaces": ["shop"]}, SECRET, algorithm="HS256")
    with pytest.raises(Unauthenticated, match="exp"):
        TokenVerifier(SECRET).verify(no_exp)
    bad_ns = jwt.encode({"iss": "legato", "sub": "ann", "namespaces": "shop", "exp": int(time.time()) + 60},
                        SECRET, algorithm="HS256")
    with pytest.raises(Unauthenticated, match="'namespaces' claim"):
        TokenVerifier(SECRET).verify(bad_ns)


def test_verified_tokens_are_remembered_but_their_expiry_still_counts() -> None:
    verifier = TokenVerifier(SECRET, leeway_s=0, cache_size=2)
    tokens = [issue(SECRET, ["shop"], subject=f"s{i}", ttl_s=60) for i in range(3)]
    for t in tokens:
        verifier.verify(t)
    assert len(verifier._cache) == 2  # bounded
    soon = issue(SECRET, ["shop"], subject="soon", ttl_s=0.5, now=time.time() - 1)
    with pytest.raises(Unauthenticated, match="expired"):
        verifier.verify(soon)


def test_the_secret_file_must_hold_enough_bytes(tmp_path: Path) -> None:
    short = tmp_path / "short"
    short.write_text("too short\n")
    with pytest.raises(ConfigError, match=r"has 9 bytes; it needs at least 32.*legato token secret"):
        read_secret(str(short))
    with pytest.raises(ConfigError, match="cannot read the token secret file"):
        read_secret(str(tmp_path / "missing"))
    good = tmp_path / "good"
    good.write_text(new_secret() + "\n")
    assert len(read_secret(str(good))) >= 32


def test_the_internal_token_allows_all_namespaces_and_is_renewed() -> None:
    make = InternalToken(SECRET, ttl_s=60)
    first = make()
    assert make() == first  # the same until half its life has passed
    claims = TokenVerifier(SECRET).verify(first)
    assert claims.subject == INTERNAL_SUBJECT and claims.all_namespaces
    make._renew_at = 0  # as if half its life had passed
    assert TokenVerifier(SECRET).verify(make()).all_namespaces


# ---------------------------------------------------------------- the namespaces of each public rpc

def test_every_public_rpc_has_a_namespace_rule() -> None:
    assert set(RULES) == set(RPCS)


def _task_token(namespace: str) -> bytes:
    return TaskToken("workflow", namespace, "wf", "run", 2, 3, 1).encode()


def test_the_rules_read_the_namespaces_requests_act_in() -> None:
    assert list(RULES["StartWorkflow"](pb.StartWorkflowRequest(namespace="shop"))) == ["shop"]
    assert list(RULES["StartWorkflow"](pb.StartWorkflowRequest())) == ["default"]
    child = pb.StartWorkflowRequest(namespace="shop", parent=pb.ParentInfo(namespace="billing"))
    assert list(RULES["StartWorkflow"](child)) == ["shop", "billing"]
    assert list(RULES["SignalWorkflow"](pb.SignalWorkflowRequest(ref=pb.ExecutionRef(namespace="shop")))) == ["shop"]
    assert list(RULES["RespondActivityTaskCompleted"](
        pb.RespondActivityTaskCompletedRequest(task_token=_task_token("shop")))) == ["shop"]
    assert list(RULES["PollMailbox"](pb.PollMailboxRequest(pid="@x"))) == []


def test_a_completed_workflow_task_acts_where_its_commands_reach() -> None:
    def command(kind: CommandType, attrs: dict[str, object]) -> pb.Command:
        return pb.Command(command_type=kind.value, attrs_json=json.dumps(attrs))

    req = pb.RespondWorkflowTaskCompletedRequest(task_token=_task_token("shop"), commands=[
        command(CommandType.StartTimer, {"timer_id": "t", "start_to_fire_timeout_ms": 5}),
        command(CommandType.StartChildWorkflowExecution, {"namespace": "billing", "workflow_id": "c"}),
        command(CommandType.SignalExternalWorkflowExecution, {"namespace": "", "workflow_id": "w"}),
        command(CommandType.TerminateExternalWorkflowExecution, {"namespace": "audit", "workflow_id": "w"}),
    ])
    assert list(RULES["RespondWorkflowTaskCompleted"](req)) == ["shop", "billing", "shop", "audit"]
    bad = pb.RespondWorkflowTaskCompletedRequest(task_token=_task_token("shop"), commands=[
        pb.Command(command_type=CommandType.StartChildWorkflowExecution.value, attrs_json="{not json")])
    with pytest.raises(InvalidArgument, match="attrs_json is not valid JSON"):
        list(RULES["RespondWorkflowTaskCompleted"](bad))
