"""Wippy conformance (issue 11): apps written the way Wippy code is written, each run through
`legato run` on the embedded default (tests/apps/wippy)."""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

from tests.integration.conftest import APPS
from tests.integration.procs import legato

WIPPY = APPS / "wippy"


def run(entry: str, value: Any = None) -> Any:
    args = ["run", "--entries", str(WIPPY), entry, "--timeout", "60s"]
    if value is not None:
        args += ["--input", json.dumps(value)]
    p = legato(*args)
    assert p.returncode == 0, (entry, p.returncode, p.stdout, p.stderr)
    return json.loads(p.stdout)


def test_modules_may_list_the_always_available_modules() -> None:
    assert run("wippy:listed", "x") == {"value": "x", "pid": "string", "upper": "OK"}


def test_spawn_takes_a_plain_task_queue_as_its_host() -> None:
    assert run("wippy:spawn_by_queue", 21) == {"kind": "EXIT", "value": 42, "from_child": True}


def test_an_activity_nobody_registers_is_not_found_and_retryable() -> None:
    out = run("wippy:missing_activity")
    assert out["retryable"] is True and out["kind"] == "NotFound"


def test_futures_never_block_and_deliver_one_value_each() -> None:
    out = run("wippy:futures")
    assert out["early"] == {"complete": False, "result_nil": True, "error_flag": False}
    assert out["got"]["ok"] == [True, "done"] and out["got"]["bad"][0] is True
    assert out["payload"] == "done" and out["failed"] is True and out["bad"] == "it failed"


def test_a_link_hears_of_a_normal_end_as_exit() -> None:
    assert run("wippy:link_normal", 5) == {"kind": "EXIT", "value": 10}


def test_a_caller_runs_function_entries_with_funcs() -> None:
    out = run("wippy:caller_funcs", "hi")
    assert out["echo"] == "hi" and out["async"] == "later" and out["missing"] == "NotFound"


def test_sends_to_a_caller_do_not_hold_the_workflow_up() -> None:
    """Three start messages and a finish signal: the workflow acknowledges every message (each
    send to the caller goes on in the same task) before it finishes."""
    assert run("wippy:batch_caller") == {"acks": [1, 2, 3], "handled": 3}


def test_typed_lua_with_crypto_as_wippy_has_it() -> None:
    key = "k" * 32
    out = run("wippy:seal", {"secret": "top secret", "key": key})
    assert out["roundtrip"] == "top secret" and out["uuid_len"] == 36
    assert out["hmac"] == hmac.new(key.encode(), b"top secret", hashlib.sha256).hexdigest()


def test_error_kinds_are_wippys_values() -> None:
    out = run("wippy:kinds")
    assert out["constants"] == {"NOT_FOUND": "NotFound", "ALREADY_EXISTS": "AlreadyExists", "INVALID": "Invalid",
                                "PERMISSION_DENIED": "PermissionDenied", "UNAVAILABLE": "Unavailable",
                                "INTERNAL": "Internal", "CANCELED": "Canceled", "CONFLICT": "Conflict",
                                "TIMEOUT": "Timeout", "RATE_LIMITED": "RateLimited", "UNKNOWN": ""}
    assert (out["missing"], out["returned"], out["plain"], out["given"]) == ("NotFound", "Invalid", "", "MyKind")
    assert out["text"] == "plain"  # an error of unknown kind prints as its message
