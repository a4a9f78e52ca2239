"""Retry policies (activities, and later workflows) and their backoff arithmetic."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from legato.durations import MAX_DURATION_MS, parse_duration_ms
from legato.errors import Kind

MAX_ATTEMPTS = 2**31 - 1  # maximum_attempts (as Temporal's int32)


@dataclass(slots=True)
class RetryPolicy:
    initial_interval_ms: int = 1000
    backoff_coefficient: float = 2.0
    maximum_interval_ms: int = 0  # 0: 100 x initial interval
    maximum_attempts: int = 0  # 0: unlimited (bounded by schedule-to-close)
    non_retryable_error_types: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "initial_interval_ms": self.initial_interval_ms,
            "backoff_coefficient": self.backoff_coefficient,
            "maximum_interval_ms": self.maximum_interval_ms,
            "maximum_attempts": self.maximum_attempts,
            "non_retryable_error_types": list(self.non_retryable_error_types),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> RetryPolicy:
        d = d or {}
        return cls(
            initial_interval_ms=int(d.get("initial_interval_ms", 1000)),
            backoff_coefficient=float(d.get("backoff_coefficient", 2.0)),
            maximum_interval_ms=int(d.get("maximum_interval_ms", 0)),
            maximum_attempts=int(d.get("maximum_attempts", 0)),
            non_retryable_error_types=list(d.get("non_retryable_error_types") or []),
        )

    @classmethod
    def from_user(cls, d: dict[str, Any], where: str,
                  duration: Callable[[Any, str], int] = parse_duration_ms) -> RetryPolicy:
        """From a user's table (`initial_interval` etc.): the CLI's JSON (numbers are ms), or Lua
        options (`duration=lua_duration_ms`: numbers are ns)."""
        known = {"initial_interval", "backoff_coefficient", "maximum_interval", "maximum_attempts",
                 "non_retryable_error_types"}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"{where}: unknown retry policy key {unknown[0]!r} (known: {', '.join(sorted(known))})")
        p = cls()
        if "initial_interval" in d:
            p.initial_interval_ms = max(1, duration(d["initial_interval"], f"{where}.initial_interval"))
        if "backoff_coefficient" in d:
            coef = d["backoff_coefficient"]
            if isinstance(coef, bool) or not isinstance(coef, int | float) or coef < 1:
                raise ValueError(f"{where}.backoff_coefficient: expected a number >= 1, got {coef!r}")
            p.backoff_coefficient = float(coef)
        if "maximum_interval" in d:
            p.maximum_interval_ms = duration(d["maximum_interval"], f"{where}.maximum_interval")
        if "maximum_attempts" in d:
            n = d["maximum_attempts"]
            if isinstance(n, bool) or not isinstance(n, int | float) or n < 0 or int(n) != n:
                raise ValueError(f"{where}.maximum_attempts: expected a whole number >= 0, got {n!r}")
            p.maximum_attempts = int(n)
        if "non_retryable_error_types" in d:
            types = d["non_retryable_error_types"]
            if isinstance(types, dict):  # a Lua array arrives as {1: ..., 2: ...}
                types = [types[k] for k in sorted(types)]
            if not isinstance(types, list) or not all(isinstance(t, str) for t in types):
                raise ValueError(f"{where}.non_retryable_error_types: expected a list of error kinds")
            p.non_retryable_error_types = list(types)
        return p

    def out_of_range(self) -> str | None:
        """Which number is beyond what the stores and timers can take (intervals over 100 years,
        attempts over 2^31 - 1), or None."""
        for name in ("initial_interval_ms", "maximum_interval_ms"):
            if getattr(self, name) > MAX_DURATION_MS:
                return f"{name} is {getattr(self, name)}; the longest interval is {MAX_DURATION_MS} ms (100 years)"
        if self.maximum_attempts > MAX_ATTEMPTS:
            return f"maximum_attempts is {self.maximum_attempts}; the largest is {MAX_ATTEMPTS}"
        return None

    def backoff_ms(self, attempt: int) -> int:
        """Delay before attempt `attempt + 1`, after attempt `attempt` (1-based) failed."""
        cap = self.maximum_interval_ms or self.initial_interval_ms * 100
        try:
            delay = self.initial_interval_ms * (self.backoff_coefficient ** max(0, attempt - 1))
        except OverflowError:  # the coefficient to a high power: far past any cap
            return int(cap)
        return int(min(delay, cap))

    def allows_retry(self, attempt: int, error_kind: str, retryable: bool) -> bool:
        # kinds compare as spelled now (a policy recorded with "NOT_FOUND" means "NotFound")
        if not retryable or Kind.normalize(error_kind) in {Kind.normalize(k) for k in self.non_retryable_error_types}:
            return False
        return self.maximum_attempts == 0 or attempt < self.maximum_attempts
