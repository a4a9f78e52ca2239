"""worker.start_options: seed 002's spawner options as StartWorkflowRequest fields."""

from __future__ import annotations

from typing import Any

import pytest

from legato.api import IdConflictPolicy, IdReusePolicy, ParentClosePolicy, StartMessage
from worker.start_options import (
    OPTION_KEYS,
    SpawnSpec,
    StartOptionError,
    StartOptions,
    child_command_attrs,
    parse_start_options,
    start_request,
)


def req(spec: SpawnSpec, **kw: Any) -> Any:
    return start_request(spec, "app:wf", "host-q", [1, {"a": 2}], default_workflow_id="gen-1", **kw)


def test_every_key_of_seed_002_is_known() -> None:
    assert set(OPTION_KEYS) == {f"temporal.workflow.{k}" for k in (
        "id", "task_queue", "execution_timeout", "run_timeout", "task_timeout", "id_conflict_policy",
        "id_reuse_policy", "execution_error_when_already_started", "retry_policy", "cron_schedule", "memo",
        "search_attributes", "enable_eager_start", "start_delay", "parent_close_policy", "wait_for_cancellation",
        "namespace")}


def test_defaults() -> None:
    r = req(SpawnSpec(), namespace="ns", base_context={"tenant": "t"})
    assert (r.workflow_id, r.workflow_type, r.task_queue, r.input, r.namespace) == (
        "gen-1", "app:wf", "host-q", [1, {"a": 2}], "ns")
    assert r.id_conflict_policy is IdConflictPolicy.FAIL and r.id_reuse_policy is IdReusePolicy.ALLOW_DUPLICATE
    assert r.parent_close_policy is ParentClosePolicy.TERMINATE and r.context == {"tenant": "t"}
    assert (r.execution_timeout_ms, r.run_timeout_ms, r.task_timeout_ms, r.start_delay_ms) == (0, 0, 0, 0)
    assert r.retry_policy is None and r.cron_schedule == "" and r.start_messages == []


def test_explicit_id_or_name_defaults_to_use_existing() -> None:
    assert req(SpawnSpec().with_name("n")).id_conflict_policy is IdConflictPolicy.USE_EXISTING
    by_id = req(SpawnSpec().with_options({"temporal.workflow.id": "x"}).with_name("n"))
    assert by_id.workflow_id == "x" and by_id.id_conflict_policy is IdConflictPolicy.USE_EXISTING
    strict = req(SpawnSpec().with_options({"temporal.workflow.id": "x",
                                           "temporal.workflow.execution_error_when_already_started": True}))
    assert strict.id_conflict_policy is IdConflictPolicy.FAIL and strict.execution_error_when_already_started


@pytest.mark.parametrize(("key", "value", "field", "expected"), [
    ("execution_timeout", "24h", "execution_timeout_ms", 86_400_000),
    ("run_timeout", 3_600_000_000_000, "run_timeout_ms", 3_600_000),  # a number is nanoseconds, as in Go
    ("run_timeout", 1, "run_timeout_ms", 1),  # rounded up to whole milliseconds
    ("task_timeout", "30s", "task_timeout_ms", 30_000),
    ("start_delay", "1m30s", "start_delay_ms", 90_000),
    ("id_reuse_policy", "allow_duplicate_failed_only", "id_reuse_policy", IdReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY),
    ("id_conflict_policy", "terminate_existing", "id_conflict_policy", IdConflictPolicy.TERMINATE_EXISTING),
    ("parent_close_policy", "request_cancel", "parent_close_policy", ParentClosePolicy.REQUEST_CANCEL),
    ("cron_schedule", "0 */6 * * *", "cron_schedule", "0 */6 * * *"),
    ("memo", {"source": "api"}, "memo", {"source": "api"}),
    ("memo", [], "memo", {}),
    ("search_attributes", {"customer_id": "c-1", "n": 3}, "search_attributes", {"customer_id": "c-1", "n": 3}),
    ("enable_eager_start", True, "enable_eager_start", True),
    ("wait_for_cancellation", True, "wait_for_cancellation", True),
    ("namespace", "other", "namespace", "other"),
    ("task_queue", "special", "task_queue", "special"),
    ("retry_policy", {"initial_interval": "1s", "maximum_attempts": 3}, "retry_policy",
     {"initial_interval_ms": 1000, "backoff_coefficient": 2.0, "maximum_interval_ms": 0, "maximum_attempts": 3,
      "non_retryable_error_types": []}),
])
def test_each_option(key: str, value: Any, field: str, expected: Any) -> None:
    r = req(SpawnSpec().with_options({f"temporal.workflow.{key}": value}))
    assert getattr(r, field) == expected


@pytest.mark.parametrize(("table", "needle"), [
    ({"temporal.workflow.nope": 1}, "unknown start option 'temporal.workflow.nope' (known: temporal.workflow.id"),
    ({"workflow.id": "x"}, "unknown start option 'workflow.id'"),
    ({"temporal.workflow.id": ""}, "temporal.workflow.id: expected a non-empty string"),
    ({"temporal.workflow.id": "@x"}, "temporal.workflow.id: a workflow id cannot start with '@'"),
    ({"temporal.workflow.id": 5}, "temporal.workflow.id: expected a non-empty string, got 5"),
    ({"temporal.workflow.run_timeout": "forever"}, "temporal.workflow.run_timeout: 'forever' is not a duration"),
    ({"temporal.workflow.run_timeout": -1}, "temporal.workflow.run_timeout: a duration cannot be negative"),
    ({"temporal.workflow.id_reuse_policy": "never"}, "temporal.workflow.id_reuse_policy: expected one of"),
    ({"temporal.workflow.parent_close_policy": "kill"}, "temporal.workflow.parent_close_policy: expected one of"),
    ({"temporal.workflow.enable_eager_start": 1}, "temporal.workflow.enable_eager_start: expected true or false"),
    ({"temporal.workflow.memo": "x"}, "temporal.workflow.memo: expected a table"),
    ({"temporal.workflow.search_attributes": {"a": {"b": 1}}}, "temporal.workflow.search_attributes.a"),
    ({"temporal.workflow.cron_schedule": "61 * * * *"}, "temporal.workflow.cron_schedule: '61 * * * *'"),
    ({"temporal.workflow.retry_policy": {"maximum_attempts": -1}}, "temporal.workflow.retry_policy.maximum_attempts"),
    ({"temporal.workflow.retry_policy": "x"}, "temporal.workflow.retry_policy: expected a table"),
])
def test_bad_options_name_the_key(table: dict[str, Any], needle: str) -> None:
    with pytest.raises(StartOptionError) as info:
        parse_start_options(table)
    assert needle in str(info.value)


def test_not_a_table() -> None:
    with pytest.raises(StartOptionError, match="with_options: expected a table"):
        parse_start_options("x")
    assert parse_start_options(None) == StartOptions()


def test_chaining_is_immutable_and_later_values_win() -> None:
    base = SpawnSpec().with_options({"temporal.workflow.run_timeout": "1m", "temporal.workflow.memo": {"a": 1}})
    one = base.with_context({"u": 1}).with_message("inc", {"amount": 2}).with_message("inc", 1)
    two = one.with_options({"temporal.workflow.run_timeout": "2m"}).with_context({"u": 2, "v": 3})
    assert base.context == {} and base.messages == ()
    assert one.options.run_timeout_ms == 60_000 and two.options.run_timeout_ms == 120_000
    assert two.options.memo == {"a": 1} and two.context == {"u": 2, "v": 3}
    r = req(two, base_context={"tenant": "t", "u": 0})
    assert r.context == {"tenant": "t", "u": 2, "v": 3}
    assert r.start_messages == [StartMessage("inc", {"amount": 2}), StartMessage("inc", 1)]


@pytest.mark.parametrize(("call", "needle"), [
    (lambda s: s.with_name(""), "with_name: expected a non-empty string"),
    (lambda s: s.with_name("@me"), "cannot start with '@'"),
    (lambda s: s.with_message("", 1), "with_message: the topic: expected a non-empty string"),
    (lambda s: s.with_context([1, 2]), "with_context: expected a table"),
])
def test_bad_chain_arguments(call: Any, needle: str) -> None:
    with pytest.raises(StartOptionError, match=needle):
        call(SpawnSpec())


def test_child_command_attrs_follow_the_command_contract() -> None:
    from legato.commands import ATTRIBUTES, CommandType

    spec = SpawnSpec().with_options({"temporal.workflow.cron_schedule": "@hourly"}).with_message("go", [1])
    attrs = child_command_attrs(req(spec), 7)
    assert tuple(attrs) == ATTRIBUTES[CommandType.StartChildWorkflowExecution]
    assert attrs["seq"] == 7 and attrs["options"]["start_messages"] == [{"topic": "go", "payload": [1]}]
    assert set(attrs["options"]) == {
        "execution_timeout_ms", "run_timeout_ms", "task_timeout_ms", "id_reuse_policy", "id_conflict_policy",
        "execution_error_when_already_started", "retry_policy", "cron_schedule", "memo", "search_attributes",
        "start_delay_ms", "context", "start_messages", "parent_close_policy", "wait_for_cancellation",
        "enable_eager_start"}
