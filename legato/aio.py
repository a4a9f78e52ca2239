"""Small asyncio helpers shared by the services."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable


async def wait_any(*waits: Awaitable[object]) -> None:
    """Return as soon as one of `waits` (e.g. `event.wait()`) is done; the others are cancelled."""
    futures = [asyncio.ensure_future(w) for w in waits]
    try:
        await asyncio.wait(futures, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for f in futures:
            f.cancel()
