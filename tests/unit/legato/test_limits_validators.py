"""The validators behind the limits at the API edge: JSON depth, durations, cron schedules that
never fire, retry policies out of range, query numbers, non-UTF-8 arguments, undecodable requests."""

from __future__ import annotations

import json
import math
import sys
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from legato import codec
from legato.cli.main import undecodable_argument
from legato.cron import check_cron, next_fire_ms
from legato.durations import MAX_DURATION_MS, check_duration_ms, parse_duration_ms
from legato.errors import InvalidArgument
from legato.query import check_search_attributes, parse
from legato.retry import MAX_ATTEMPTS, RetryPolicy

DEEP = 5000  # far beyond Python's recursion limit (1000)


def nested(levels: int) -> str:
    return "[" * levels + "]" * levels


# ------------------------------------------------------------------ JSON depth

@pytest.mark.parametrize(("text", "depth"), [
    ("1", 0), ('"x"', 0), ("[]", 1), ("{}", 1), ("[[1],[2,[3]]]", 3), ('{"a":{"b":[1]}}', 3),
    ('["[[[[", "]"]', 1), ('["\\"[[", 1]', 1), ('{"a\\\\":"[["}', 1), (nested(DEEP), DEEP),
])
def test_json_depth_counts_brackets_outside_strings(text: str, depth: int) -> None:
    assert codec.json_depth(text) == depth


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(alphabet='[]{}"\\ab'),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(alphabet='[]{}"\\ab'), inner, max_size=3),
    max_leaves=30)


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(json_values)
def test_json_depth_of_encoded_values_is_their_depth(value: Any) -> None:
    text = json.dumps(value)
    assert codec.json_depth(text) == codec.value_depth(value, 10_000)


def test_value_depth_neither_recurses_nor_explodes_on_shared_or_cyclic_values() -> None:
    dag: list[Any] = [1]
    for _ in range(200):  # 2^200 paths, 201 distinct lists
        dag = [dag, dag]
    assert codec.value_depth(dag, 1_000) == 201
    cycle: list[Any] = []
    cycle.append(cycle)
    assert codec.value_depth(cycle, 64) == 65  # infinitely deep: past any limit
    assert codec.value_depth(({"a": (1,)},), 10) == 3


def test_check_depth_names_what_and_the_setting() -> None:
    codec.check_depth(json.loads(nested(64)), 64, "input")
    with pytest.raises(InvalidArgument) as info:
        codec.check_depth(json.loads(nested(65)), 64, "input")
    assert info.value.reason == codec.REASON_TOO_DEEP
    assert info.value.message == ("input nests arrays and objects more than 64 levels deep; the limit "
                                  "(limits.max_payload_depth) is 64 levels")


def test_load_payload_refuses_deep_json_before_decoding_it() -> None:
    assert codec.load_payload(nested(codec.MAX_JSON_DEPTH)) is not None
    for text in (nested(DEEP), '{"a":' * DEEP + "1" + "}" * DEEP, "[" * DEEP):
        with pytest.raises(InvalidArgument) as info:
            codec.load_payload(text, "memo_json")
        assert info.value.reason == codec.REASON_TOO_DEEP
        assert info.value.message.startswith(f"memo_json nests arrays and objects {DEEP}")
        assert "limits.max_payload_depth" in info.value.message


def test_load_payload_refuses_what_is_not_json_or_not_utf8() -> None:
    with pytest.raises(InvalidArgument, match=r"^input_json is not valid JSON: "):
        codec.load_payload("[1,", "input_json")
    with pytest.raises(InvalidArgument, match=r"^x is not valid UTF-8 \(byte 1\)"):
        codec.load_payload(b'"\xff"', "x")


def test_encode_payload_checks_depth_size_and_encodability() -> None:
    assert codec.encode_payload([[1]], 100, "input", max_depth=2) == "[[1]]"
    with pytest.raises(InvalidArgument, match=r"^input nests arrays and objects 3 levels deep; the limit "
                                              r"\(limits.max_payload_depth\) is 2 levels$"):
        codec.encode_payload([[[1]]], 100, "input", max_depth=2)
    with pytest.raises(InvalidArgument, match="number JSON cannot carry"):
        codec.encode_payload([math.inf], 100, "input")
    with pytest.raises(InvalidArgument, match="lone surrogate"):
        codec.encode_payload({"a": "\ud800"}, 100, "memo")
    with pytest.raises(InvalidArgument) as info:
        codec.encode_payload("é" * 60, 100, "result")
    assert info.value.reason == "PayloadTooLarge" and "is 122 bytes; the limit is 100 bytes" in info.value.message
    deep: list[Any] = []
    for _ in range(DEEP):  # deeper than the encoder can recurse
        deep = [deep]
    with pytest.raises(InvalidArgument) as info:
        codec.encode_payload(deep, 10**9, "details")
    assert info.value.reason == codec.REASON_TOO_DEEP


def test_parse_json_input_is_one_clear_error_for_every_bad_input() -> None:
    assert codec.parse_json_input('{"a": [1]}') == {"a": [1]}
    for text, problem in [(nested(DEEP), "nests arrays and objects 5000 levels deep"),
                          ("{oops", "is not valid JSON"), ('"\\udc80"', "lone surrogate")]:
        with pytest.raises(InvalidArgument, match=problem):
            codec.parse_json_input(text, "--input")


# ------------------------------------------------------------------ durations

def test_durations_are_bounded_at_100_years() -> None:
    assert MAX_DURATION_MS == 100 * 365 * 24 * 3600 * 1000
    assert parse_duration_ms("36500d") == MAX_DURATION_MS
    assert parse_duration_ms(MAX_DURATION_MS) == MAX_DURATION_MS
    for value in ("36501d", str(2**63), "9" * 400 + "h", "1" * 40, 2**63, MAX_DURATION_MS + 1, math.inf, 1e300):
        with pytest.raises(ValueError, match=r"^--timeout: .* is too long; the longest duration is 36500d"):
            parse_duration_ms(value, "--timeout")
    with pytest.raises(ValueError, match="is not a duration"):
        parse_duration_ms(math.nan, "--timeout")


def test_check_duration_ms_names_the_field_and_the_range() -> None:
    assert check_duration_ms(5, "start_delay_ms") == 5
    with pytest.raises(ValueError, match=r"^start_delay_ms is 9223372036854775807; it must be between 0 and "
                                         r"3153600000000 \(milliseconds: 100 years\)$"):
        check_duration_ms(2**63 - 1, "start_delay_ms")
    with pytest.raises(ValueError, match="must be between 1 and"):
        check_duration_ms(0, "initial_interval_ms", minimum=1)
    with pytest.raises(ValueError, match="must be an integer"):
        check_duration_ms(True, "deadline_ms")


# ------------------------------------------------------------------ cron, retry policies

@pytest.mark.parametrize("expr", ["0 0 30 2 *", "0 0 31 4 *", "0 0 31 2 *", "0 0 31 11 *"])
def test_a_cron_schedule_that_never_fires_is_refused(expr: str) -> None:
    assert check_cron(expr) == f"{expr!r} never fires (no such time in the next 50 years)"
    assert next_fire_ms(expr, 0) is None


@pytest.mark.parametrize("expr", ["0 0 29 2 *", "* * * * *", "0 */6 * * *", "59 23 31 12 *"])
def test_cron_schedules_that_fire(expr: str) -> None:
    assert check_cron(expr) is None
    fire = next_fire_ms(expr, 1_795_255_200_000)
    assert fire is not None and fire > 1_795_255_200_000


def test_a_malformed_cron_schedule_is_refused() -> None:
    for expr in ["61 * * * *", "* * * *", "*/0 * * * *", "@daily", "a b c d e"]:
        problem = check_cron(expr)
        assert problem is not None and "is not a cron schedule" in problem


def test_retry_policies_out_of_range() -> None:
    assert RetryPolicy().out_of_range() is None
    assert "initial_interval_ms is 9223372036854775807" in str(RetryPolicy(2**63 - 1).out_of_range())
    assert "maximum_interval_ms" in str(RetryPolicy(maximum_interval_ms=MAX_DURATION_MS + 1).out_of_range())
    assert f"the largest is {MAX_ATTEMPTS}" in str(RetryPolicy(maximum_attempts=2**31).out_of_range())


def test_backoff_never_overflows() -> None:
    # 1000^attempt overflows a float after ~100 attempts: the delay is the cap, not an OverflowError
    assert RetryPolicy(1, 1000.0).backoff_ms(10_000) == 100
    assert RetryPolicy(10, 2.0, maximum_interval_ms=60_000).backoff_ms(5_000) == 60_000


# ------------------------------------------------------------------ query numbers, search attributes

@pytest.mark.parametrize("literal", ["9" * 400, "9" * 5000, "-" + "9" * 320, "1e400"])
def test_query_numbers_beyond_a_float_are_refused(literal: str) -> None:
    with pytest.raises(InvalidArgument, match="is out of range"):
        parse(f"CustomInt = {literal}")


def test_search_attribute_numbers_beyond_a_float_are_refused() -> None:
    assert check_search_attributes({"n": 2**64}) is None  # kept as a decimal
    assert "out of range" in str(check_search_attributes({"n": 10**400}))
    assert "out of range" in str(check_search_attributes({"n": [1, -(10**400)]}))


# ------------------------------------------------------------------ the CLI's arguments

def test_arguments_that_are_not_utf8_are_named() -> None:
    assert undecodable_argument(["workflow", "start", "--id", "é"]) is None
    bad = b"a\xffb".decode(sys.getfilesystemencoding(), "surrogateescape")
    problem = undecodable_argument(["workflow", "start", "--id", bad])
    assert problem is not None
    assert problem.startswith("argument 4 (b'a\\xffb') is not valid UTF-8 text (byte 1)")
