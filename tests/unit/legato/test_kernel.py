"""The shared kernel: durations, retry policies, config, payload limits, ids, tokens."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from legato.codec import encode_payload, parse_json_input
from legato.config import ConfigError, load_config
from legato.durations import format_duration_ms, parse_duration_ms
from legato.errors import Failure, InvalidArgument, Kind
from legato.events import EventType, HistoryEvent
from legato.ids import check_id, shard_for
from legato.retry import RetryPolicy
from legato.tokens import TaskToken


@pytest.mark.parametrize("text,ms", [("30s", 30_000), ("5m", 300_000), ("24h", 86_400_000), ("250ms", 250),
                                     ("1h30m", 5_400_000), ("1.5s", 1500), (1500, 1500), ("42", 42)])
def test_durations(text: object, ms: int) -> None:
    assert parse_duration_ms(text) == ms


@pytest.mark.parametrize("bad", ["", "5 parsecs", "s", "-1s", -5, True, None, "1h 5"])
def test_bad_durations_name_the_option(bad: object) -> None:
    with pytest.raises(ValueError, match=r"activity\.timeout"):
        parse_duration_ms(bad, "activity.timeout")


def test_format_duration() -> None:
    assert [format_duration_ms(x) for x in (7_200_000, 120_000, 3000, 1500)] == ["2h", "2m", "3s", "1500ms"]


def test_retry_backoff_grows_and_caps() -> None:
    p = RetryPolicy(initial_interval_ms=100, backoff_coefficient=2.0, maximum_interval_ms=500)
    assert [p.backoff_ms(a) for a in range(1, 6)] == [100, 200, 400, 500, 500]
    assert RetryPolicy(initial_interval_ms=10).backoff_ms(30) == 1000  # default cap: 100 x initial


def test_retry_allows() -> None:
    p = RetryPolicy(maximum_attempts=3, non_retryable_error_types=[Kind.INVALID])
    assert p.allows_retry(2, Kind.INTERNAL, True)
    assert not p.allows_retry(3, Kind.INTERNAL, True)
    assert not p.allows_retry(1, Kind.INVALID, True)
    assert not p.allows_retry(1, Kind.INTERNAL, False)
    assert RetryPolicy().allows_retry(10_000, Kind.INTERNAL, True)


def test_retry_policy_from_lua_options() -> None:
    p = RetryPolicy.from_user({"initial_interval": "2s", "backoff_coefficient": 3, "maximum_interval": 60_000,
                               "maximum_attempts": 4, "non_retryable_error_types": {1: "INVALID"}}, "opts")
    assert (p.initial_interval_ms, p.backoff_coefficient, p.maximum_interval_ms, p.maximum_attempts) == \
        (2000, 3.0, 60_000, 4)
    assert p.non_retryable_error_types == ["INVALID"]
    assert RetryPolicy.from_dict(p.to_dict()) == p


@pytest.mark.parametrize("opts,needle", [({"bogus": 1}, "bogus"), ({"maximum_attempts": -1}, "maximum_attempts"),
                                         ({"backoff_coefficient": 0.5}, "backoff_coefficient"),
                                         ({"initial_interval": "soon"}, "initial_interval")])
def test_retry_policy_rejects_bad_options(opts: dict, needle: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(ValueError, match=needle):
        RetryPolicy.from_user(opts, "activity.retry_policy")


def test_config_file_and_env(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("limits:\n  max_payload_bytes: 1000\nhistory:\n  num_shards: 8\n")
    cfg = load_config(f, env={"LEGATO_HISTORY__NUM_SHARDS": "16"})
    assert cfg.limits.max_payload_bytes == 1000 and cfg.history.num_shards == 16


@pytest.mark.parametrize("text,needle", [("limits:\n  max_payload_bytes: -1\n", "limits.max_payload_bytes"),
                                         ("limits:\n  no_such_limit: 1\n", "no_such_limit"),
                                         ("limits: [1\n", "not valid YAML"), ("- 1\n", "mapping")])
def test_bad_config_is_a_clear_error(tmp_path: Path, text: str, needle: str) -> None:
    f = tmp_path / "c.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=needle):
        load_config(f, env={})


def test_payload_limit() -> None:
    assert encode_payload({"a": 1}, 100) == '{"a":1}'
    with pytest.raises(InvalidArgument, match="limit is 10 bytes"):
        encode_payload("x" * 20, 10, "input")
    with pytest.raises(InvalidArgument, match="JSON"):
        encode_payload({1, 2}, 100)
    with pytest.raises(InvalidArgument, match="--input is not valid JSON"):
        parse_json_input("{oops")


def test_shard_hash_is_stable_and_in_range() -> None:
    assert shard_for("default", "order-1", 4) == shard_for("default", "order-1", 4)
    assert {shard_for("default", f"w{i}", 4) for i in range(100)} == {0, 1, 2, 3}


def test_ids() -> None:
    assert check_id("ok-id", "workflow id") is None
    assert "empty" in (check_id("", "workflow id") or "")
    assert "control" in (check_id("a\nb", "workflow id") or "")
    assert "limit" in (check_id("x" * 1001, "workflow id") or "")


def test_round_trips() -> None:
    f = Failure("boom", Kind.INTERNAL, True, {"x": 1}, "a.lua:3", Failure("inner", Kind.TIMEOUT))
    assert Failure.from_dict(f.to_dict()) == f
    assert str(f) == "Internal: boom (at a.lua:3)"
    e = HistoryEvent(3, EventType.TimerFired, 1000, {"timer_id": "1"})
    assert HistoryEvent.decode(e.encode()) == e
    t = TaskToken("workflow", "default", "w", "r", 2, 3, 1)
    assert TaskToken.decode(t.encode()) == t
    with pytest.raises(InvalidArgument, match="malformed task token"):
        TaskToken.decode(b"!!!")


# A token made by an earlier build (the standard library's json): still taken after an upgrade.
EARLIER_TOKEN = (b"eyJraW5kIjoid29ya2Zsb3ciLCJuYW1lc3BhY2UiOiJkZWZhdWx0Iiwid29ya2Zsb3dfaWQiOiJjb21tYW5kZS3DqS"
                 b"IsInJ1bl9pZCI6InIiLCJzY2hlZHVsZWRfZXZlbnRfaWQiOjIsInN0YXJ0ZWRfZXZlbnRfaWQiOjMsImF0dGVtcHQiOjF9")


def test_task_tokens_across_builds_and_hostile_ones() -> None:
    t = TaskToken("workflow", "default", "commande-é", "r", 2, 3, 1)
    assert TaskToken.decode(EARLIER_TOKEN) == t
    assert t.encode() == EARLIER_TOKEN  # the same bytes: a token is the same whichever build made it
    hostile = [b"[" * 5000 + b"]" * 5000,  # nested past any decoder's depth
               b'["workflow"]',  # not an object
               base64.urlsafe_b64decode(EARLIER_TOKEN)[:-9],  # cut short
               b'{"kind": "workflow", "evil": 1}']  # fields no token has
    for text in hostile:
        with pytest.raises(InvalidArgument, match="malformed task token"):
            TaskToken.decode(base64.urlsafe_b64encode(text))
