"""How a shard's queues retry what failed: transfer tasks, timer fires, timer publishing. All
double their delay from a first one up to one cap, and warn on the first failure and then every
`WARN_EVERY`th (a store or broker that is down for a minute fails every task many times over).

The cap bounds how long work waits after an outage ends: a timer whose fire failed while
Cassandra restarted is retried at most `RETRY_MAX_S` after the node answers again (it was a
minute before: every timer that had failed eight times or more waited 25 to 60 s more)."""

from __future__ import annotations

import asyncio

RETRY_FIRST_S = 0.05  # the first retry's delay
RETRY_MAX_S = 10.0  # no retry waits longer than this
WARN_EVERY = 20  # after the first failure, a warning every this many


def retry_delay_s(failures: int) -> float:
    """The delay before the retry that follows the `failures`th failure (1, 2, ...)."""
    return min(RETRY_FIRST_S * 2 ** min(failures - 1, 30), RETRY_MAX_S)


def worth_a_warning(failures: int) -> bool:
    """Whether the `failures`th failure (1, 2, ...) is logged as a warning (else at debug)."""
    return failures == 1 or failures % WARN_EVERY == 0


class Backoff:
    """Doubling delays between retries of something that must eventually happen."""

    def __init__(self) -> None:
        self.failures = 0

    def reset(self) -> None:
        """It worked: the next failure starts over with the first delay."""
        self.failures = 0

    async def wait(self) -> None:
        self.failures += 1
        await asyncio.sleep(retry_delay_s(self.failures))

    def loud(self) -> bool:
        """Whether the failure about to be waited for is worth a warning: asked before `wait`,
        which counts it."""
        return worth_a_warning(self.failures + 1)
