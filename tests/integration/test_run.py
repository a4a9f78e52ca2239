"""`legato run`: engine and worker in one process, one workflow, exit codes."""

from __future__ import annotations

import json

from tests.integration.conftest import BASIC, EXAMPLES
from tests.integration.procs import legato


def run(*args: str) -> tuple[int, str, str]:
    p = legato("run", "--entries", str(BASIC), *args)
    return p.returncode, p.stdout, p.stderr


def test_completes_and_prints_result_as_json() -> None:
    code, out, err = run("basic:hello", "--input", '"Ada"')
    assert code == 0, err
    assert json.loads(out) == {"greeting": "hello, Ada"}


def test_failed_workflow_exits_1_with_its_error() -> None:
    code, out, err = run("basic:fails", "--input", '{"why": "no stock"}')
    assert code == 1
    assert "Invalid" in err and "refused: no stock" in err
    assert out == ""


def test_lua_bug_fails_the_task_exits_2_with_file_and_line() -> None:
    code, _, err = run("basic:buggy")
    assert code == 2
    assert "buggy.lua:3" in err
    assert "Traceback" not in err


def test_forbidden_call_exits_2_naming_the_alternative() -> None:
    code, _, err = run("basic:forbidden")
    assert code == 2
    assert "os.time" in err and "time.now" in err


def test_activity_errors_reach_the_workflow_with_kind_and_message() -> None:
    code, out, err = run("basic:activity_errors")
    assert code == 0, err
    r = json.loads(out)
    assert r["missing"]["kind"] == "NotFound" and r["missing"]["retryable"] is True
    assert r["raised"]["kind"] == "Internal" and "activity exploded: kaput" in r["raised"]["message"]
    assert r["returned"]["message"] == "plain text error"
    assert "plain text error" in r["returned"]["text"]


def test_order_saga_example_compensates() -> None:
    order = {"items": ["lamp"], "payment": {"amount": 5, "card": "declined"}, "shipping": {"address": "x"}}
    p = legato("run", "--entries", str(EXAMPLES / "shop"), "shop:order_saga", "--input", json.dumps(order))
    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout)
    assert r["status"] == "failed" and r["step"] == "payment"
    assert r["compensated"] == [{"action": "shop:release_inventory", "ok": True}]


def test_run_on_a_db_file_keeps_the_history(tmp_path) -> None:  # type: ignore[no-untyped-def]
    db = tmp_path / "run.db"
    code, _, err = run("basic:hello", "--input", '"db"', "--db", str(db), "--id", "kept")
    assert code == 0, err
    assert db.exists() and db.stat().st_size > 0
