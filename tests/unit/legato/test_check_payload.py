"""`codec.check_payload` (the validators' check of a value, which skips encoding short scalars)
refuses exactly what `codec.encode_payload` refuses, with the same words, at every limit."""

from __future__ import annotations

from typing import Any

import pytest

from legato import codec
from legato.errors import InvalidArgument

VALUES: list[Any] = ["", "abc", "x" * 1000, "é", "\ud800", "\x00\x01\"\\", 0, -5, 2**63, 2**64, -(2**64), 10**30,
                     10**5000, 1.5, float("nan"), float("inf"), -0.0, 1e308, 5e-324, True, False, None, [1],
                     {"a": [1, {"b": None}]}, [[[[]]]]]
LIMITS = [1, 2, 3, 4, 5, 10, 23, 24, 25, 100, 6002, 1_000_000]


def _outcome(check: Any, value: Any, limit: int, depth: int) -> str:
    try:
        check(value, limit, "input", depth)
    except InvalidArgument as e:
        return f"{e.reason}: {e}"
    return "ok"


@pytest.mark.parametrize("limit", LIMITS)
def test_same_refusals_as_encoding(limit: int) -> None:
    for value in VALUES:
        for depth in (2, 64):
            assert _outcome(codec.check_payload, value, limit, depth) == \
                _outcome(codec.encode_payload, value, limit, depth), (repr(value)[:40], limit, depth)
