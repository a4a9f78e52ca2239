"""The apps of examples/, one per pattern of seed 002, each run the way its YAML file says: one
`legato run` command (engine and worker in that process), checking the JSON it prints."""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from legato.errors import Kind
from tests.integration.conftest import EXAMPLES
from tests.integration.procs import legato


def run(app: str, entry: str, payload: Any) -> Any:
    p = legato("run", "--entries", str(EXAMPLES / app), entry, "--input", json.dumps(payload), "--timeout", "60s")
    assert p.returncode == 0, (p.stdout, p.stderr)
    return json.loads(p.stdout)


def test_shop_saga_compensates_in_reverse_order() -> None:
    r = run("shop", "shop:order_saga",
            {"items": ["desk"], "payment": {"amount": 300, "card": "ok"}, "shipping": {}})
    assert r["status"] == "failed" and r["step"] == "shipping"
    assert r["compensated"] == [{"action": "shop:refund_payment", "ok": True},
                                {"action": "shop:release_inventory", "ok": True}]
    ok = run("shop", "shop:order_saga",
             {"items": ["book"], "payment": {"amount": 42, "card": "ok"}, "shipping": {"address": "Baker St"}})
    assert ok == {"status": "completed", "reservation": "res-1-book", "payment": "pay-42", "tracking": "TRK-BAK"}


def test_counter_request_reply_and_refusals_leave_the_state_unchanged() -> None:
    r = run("counter", "counter:client", {"initial": 5})
    replies = [(s["request"], s["reply"]) for s in r["steps"]]
    assert replies == [
        ("increment", {"ok": {"value": 8}}),
        ("decrement", {"nak": "would result in negative value"}),  # refused ...
        ("increment", {"nak": "amount must be a number"}),
        ("decrement", {"ok": {"value": 6}}),                        # ... so 8 - 2, not less
        ("finish", {"ok": {"message": "finishing"}}),
    ]
    assert r["result"] == {"final_counter": 6}  # the EXIT event carried the workflow's result


def test_children_results_and_a_childs_error_reach_the_parent() -> None:
    r = run("children", "family:parent", {"items": ["book", "lamp", "desk"]})
    first, second, third = r["quotes"]
    assert first == {"item": "book", "price": 12}                        # workflow.exec
    assert second["value"] == {"item": "lamp", "price": 30}              # process.spawn + EXIT
    assert second["is_child"] is True and second.get("error") is None
    assert third == {"item": "desk", "price": 250}                       # process.exec
    assert r["total"] == 292
    assert r["exec_error"] == {"kind": "NotFound", "retryable": False, "message": "no such sku: sku-404"}
    assert r["exit_error"] == {"kind": "NotFound", "retryable": False, "message": "no such sku: sku-405"}


def test_start_from_a_caller_with_context_and_a_conflicting_second_start() -> None:
    r = run("orders", "orders:place", {"id": "1001", "customer": "ann", "total": 42})
    assert r["workflow_id"] == "order-1001"
    context = {"user_id": "user-1", "tenant": "tenant-1", "request_id": "req-1001"}
    assert r["result"] == {
        "order_id": "1001", "user_id": "user-1", "context": context, "confirmed_by": "caller",
        # the activity read the context too, without it being passed as an argument
        "reservation": {"id": "res-1001", "tenant": "tenant-1", "request_id": "req-1001"},
    }
    second = r["second_start"]
    assert second["started"] is False and second["kind"] == "AlreadyExists"
    assert "order-1001" in second["message"] and "id_conflict_policy" in second["message"]


def test_versioning_new_run_takes_max() -> None:
    r = run("versioning", "versioning:main", {"id": "A-1", "total": 42})
    assert r["workflow_id"] == "checkout-A-1"
    assert r["result"] == {"version": 2, "payment": {"provider": "new-psp", "amount": 42},
                           "receipt": "receipt for order A-1"}


def test_vault_seals_a_secret_that_python_opens() -> None:
    r = run("vault", "vault:open", {"user": "ann", "secret": "the launch code"})
    assert r["forged_token"] == Kind.INTERNAL and len(r["request_id"]) == 36
    s = r["sealed"]
    assert s["user"] == "ann" and s["tampered"] == Kind.INTERNAL and s["other_user"] == Kind.INTERNAL
    # the workflow's key: PBKDF2 of the signing key with the salt it drew (seal.lua)
    signing_key = b"vault example signing key: load it from a secret store"
    key = hashlib.pbkdf2_hmac("sha256", signing_key, bytes.fromhex(s["salt"]), 10000, 32)
    sealed = bytes.fromhex(s["sealed"])
    secret = AESGCM(key).decrypt(sealed[:12], sealed[12:], b"ann")  # nonce || ciphertext || tag
    assert secret == b"the launch code"
    assert s["fingerprint"] == hmac.new(key, secret, "sha256").hexdigest()


def test_typed_lua_quote_runs_with_its_types_erased() -> None:
    order = {"lines": [{"sku": "book", "qty": 2}, {"sku": "lamp", "qty": 1}], "coupon": "HALF"}
    r = run("typed", "typed:quote", order)
    assert r == {"total": 27, "coupon": "HALF",
                 "lines": [{"sku": "book", "amount": 24}, {"sku": "lamp", "amount": 30}]}
    p = legato("run", "--entries", str(EXAMPLES / "typed"), "typed:quote", "--input",
               json.dumps({"lines": [{"sku": "book", "qty": 1.5}]}), "--timeout", "60s")
    assert p.returncode == 2 and "quote.lua:26: cannot cast float to integer" in p.stderr, p.stderr


def test_sessions_service_restarted_after_a_crash_keeps_talking_to_the_workflow() -> None:
    """examples/sessions: a supervised session handler (process.service) crashed on purpose is
    started again; its memory is new, the ledger workflow's counts are not."""
    p = legato("run", "--entries", str(EXAMPLES / "sessions"), "sessions:demo", "--timeout", "60s")
    assert p.returncode == 0, (p.stdout, p.stderr)
    r = json.loads(p.stdout)
    assert r["restarted"] is True
    assert r["before_crash"] == [1, 1, 2]  # ann's first login, bob's first, two users in memory
    assert r["after_crash"] == [2, 1, True]  # ann's second login (durable), one user in the new memory
    assert r["ledger"] == {"handler_starts": 2, "logins": {"ann": 2, "bob": 1}}
    assert "service sessions:session_manager: ended with an error" in p.stderr and "restart 1 of 10" in p.stderr
