"""Per-shard queue processors: the transfer queue (outbox -> matching / visibility) and the timer
queue (durable timers, fired when due).

Both are fed in memory by the shard's committer right after each commit; on start they read
what the store holds (transfer tasks above the ack level, timers within the look-ahead window).
Neither knows what a task means: the service supplies the callbacks that carry them out.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from history.fire_lags import FireLags
from history.retries import retry_delay_s, worth_a_warning
from history.store.base import ExecutionStore
from history.timers import TimerDeletes, TimerTask
from legato import codec, metrics
from legato.errors import ShardOwnershipLost

log = logging.getLogger("legato.history")
_TRANSFER_TASKS = metrics.children(metrics.transfer_tasks)

READ_PAGE = 1000
DROPS_PER_TURN = 1000  # obsolete timers a shard drops before letting the event loop run others


@dataclass(slots=True)
class TransferTask:
    task_id: int
    data: dict[str, Any]


class TransferQueueProcessor:
    """Dispatches every task concurrently (a queue nobody polls blocks nothing else); the ack
    level is just below the oldest task still in flight."""

    def __init__(self, shard_id: int, store: ExecutionStore, ack_level: int,
                 dispatch: Callable[[TransferTask], Awaitable[None]]) -> None:
        self.shard_id = shard_id
        self._store = store
        self._dispatch = dispatch
        self._inflight: dict[int, asyncio.Task[None]] = {}
        self._handed_at: dict[int, float] = {}  # task id -> monotonic time it was handed (oldest-age gauge)
        # run id -> its tasks in flight, and the futures of those waiting for none (retention)
        self._runs: dict[str, int] = {}
        self._run_waiters: dict[str, asyncio.Future[None]] = {}
        self._max_handed = ack_level
        self._stopped = False

    async def load(self) -> int:
        """Read and dispatch every task above the ack level; return how many."""
        after, count = self._max_handed, 0
        while not self._stopped:
            rows = await self._store.read_transfer_tasks(self.shard_id, after, READ_PAGE)
            self.add([TransferTask(r.task_id, codec.loads(r.data)) for r in rows])
            count += len(rows)
            if len(rows) < READ_PAGE:
                break
            after = rows[-1].task_id
        return count

    def add(self, tasks: list[TransferTask]) -> None:
        if self._stopped:
            return
        now = time.monotonic()
        for t in tasks:
            if t.task_id in self._inflight:
                continue
            self._inflight[t.task_id] = asyncio.create_task(self._run(t), name=f"transfer-{self.shard_id}-{t.task_id}")
            self._handed_at[t.task_id] = now
            run = t.data.get("run")
            if run:
                self._runs[run] = self._runs.get(run, 0) + 1
            if t.task_id > self._max_handed:
                self._max_handed = t.task_id

    async def _run(self, t: TransferTask) -> None:
        failures = 0
        while not self._stopped:
            try:
                await self._dispatch(t)
                _TRANSFER_TASKS(str(t.data.get("k"))).inc()
                break
            except Exception as e:
                moving = isinstance(e, ShardOwnershipLost)
                if moving and self._stopped:
                    return  # this shard is being dropped; the task stays un-acked for the next owner
                # Otherwise retry, also when another shard (the target of a cross-workflow task) is
                # moving: a task left un-acked would never run again while this node owns the shard.
                failures += 1
                delay = retry_delay_s(failures)
                loud = not moving and worth_a_warning(failures)  # a moving shard is expected
                log.log(logging.WARNING if loud else logging.DEBUG,
                        "shard %d: transfer task %d (%s) failed %d time(s), retrying in %.2fs: %s",
                        self.shard_id, t.task_id, t.data.get("k"), failures, delay, e)
                await asyncio.sleep(delay)
        self._inflight.pop(t.task_id, None)
        self._handed_at.pop(t.task_id, None)
        run = t.data.get("run")
        if run:
            n = self._runs.get(run, 0) - 1
            if n > 0:
                self._runs[run] = n
            else:
                self._runs.pop(run, None)
                waiter = self._run_waiters.pop(run, None)
                if waiter is not None and not waiter.done():
                    waiter.set_result(None)

    def ack_level(self) -> int:
        """Every task with an id <= this is done."""
        if self._inflight:
            return min(self._inflight) - 1
        return self._max_handed

    async def wait_run_done(self, run_id: str, timeout_s: float) -> bool:
        """Wait (up to `timeout_s`) until no task of the run (created by its writes) is in
        flight; whether none is."""
        if run_id not in self._runs:
            return True
        waiter = self._run_waiters.get(run_id)
        if waiter is None:
            waiter = self._run_waiters[run_id] = asyncio.get_running_loop().create_future()
        try:
            await asyncio.wait_for(asyncio.shield(waiter), timeout_s)
        except TimeoutError:
            pass
        return run_id not in self._runs

    @property
    def inflight(self) -> int:
        return len(self._inflight)

    def oldest_age_s(self, now: float) -> float:
        """How long the oldest task not yet done has waited (0: none), by time.monotonic()."""
        if not self._inflight:
            return 0.0
        handed = self._handed_at.get(min(self._inflight))
        return max(0.0, now - handed) if handed is not None else 0.0

    async def wait_idle(self) -> None:
        """Wait until every task handed so far is done (tests, shutdown)."""
        while self._inflight:
            await asyncio.gather(*list(self._inflight.values()), return_exceptions=True)

    def stop(self) -> None:
        self._stopped = True
        current = asyncio.current_task()
        for task in self._inflight.values():
            if task is not current:
                task.cancel()


class TimerQueueProcessor(TimerDeletes):
    """Timers due within the look-ahead window live in a heap; they fire when the clock reaches
    them. A fired timer's row is deleted (by the shard's flush) only after its effect is durable:
    with the range delete below `ack_level()` if every earlier timer fired too, else by itself.

    `ack_level_ms` is the shard's persisted timer ack level: every stored timer due earlier is
    gone, so the first read starts there and never crosses the tombstones of those deleted."""

    def __init__(self, shard_id: int, store: ExecutionStore, clock: Callable[[], int], lookahead_ms: int,
                 fire: Callable[[TimerTask], Awaitable[None]], ack_level_ms: int = 0,
                 max_firing: int = 100, obsolete: Callable[[TimerTask], bool] | None = None,
                 batch_ms: int = 0) -> None:
        """`obsolete(timer)`: True when no run will ever expect the timer (judged on what is in
        memory, False when unsure); such a timer comes due without being fired at all.
        `batch_ms` (history.timer_batch_ms): timers due less than this apart fire in one turn of
        the loop, up to this many ms late (0: each due time on its own)."""
        super().__init__()  # _held: timers in the heap, firing, or fired and awaiting delete
        self.shard_id = shard_id
        self._store = store
        self._clock = clock
        self._lookahead = lookahead_ms
        self._fire = fire
        self._obsolete = obsolete
        self._batch_ms = batch_ms
        self._started = 0  # timers fired or dropped as obsolete so far (fire_due's count)
        self._heap: list[tuple[int, int, TimerTask]] = []
        # Every stored timer with fire_time_ms <= horizon is in memory, or on its way: `_known` is
        # the horizon of the last read that completed (the bound the ack level may rely on).
        self._horizon = self._known = max(ack_level_ms, 0) - 1
        # The timers in memory whose effect is not durable yet (task id -> fire_time_ms), and a
        # heap of their (fire_time_ms, task_id) with stale entries dropped lazily: the ack level.
        self._unacked: dict[int, int] = {}
        self._unacked_heap: list[tuple[int, int]] = []
        self._firing: dict[int, asyncio.Task[None]] = {}
        self._max_firing = max_firing  # history.timer_fires_in_flight
        self._retries: dict[int, int] = {}
        self._wake = asyncio.Event()
        self._load_lock = asyncio.Lock()
        self._loop_task: asyncio.Task[None] | None = None
        self._stopped = False
        self.lags = FireLags()

    def start(self) -> None:
        self._loop_task = asyncio.create_task(self._loop(), name=f"timers-{self.shard_id}")

    async def close(self) -> None:
        """Stop (fired timers not yet deleted are deleted by the shard's last flush, or fire
        again for the next owner: harmless)."""
        self.stop()

    def stop(self) -> None:
        self._stopped = True
        current = asyncio.current_task()
        for task in [self._loop_task, *self._firing.values()]:
            if task is not None and task is not current:
                task.cancel()

    def add(self, timers: list[TimerTask]) -> None:
        if self._stopped:
            return
        wake = False
        for t in timers:
            if t.fire_time_ms <= self._horizon and t.task_id not in self._held:
                self._held.add(t.task_id)
                self._unacked[t.task_id] = t.fire_time_ms
                heapq.heappush(self._unacked_heap, (t.fire_time_ms, t.task_id))
                if not self._heap or t.fire_time_ms < self._heap[0][0]:
                    wake = True
                heapq.heappush(self._heap, (t.fire_time_ms, t.task_id, t))
        if wake:
            self._wake.set()

    def ack_level(self) -> int:
        """The fire time (ms) below which every stored timer of the shard has fired with a durable
        effect: the earliest timer in memory not fired yet, and no later than the first one not
        read yet (past the completed read's horizon) or than now. The shard writes no timer due
        before the level it persists (it moves such a timer up to it), so keeping the level at
        or below the clock delays no timer that is not already due."""
        heap = self._unacked_heap
        while heap and heap[0][1] not in self._unacked:
            heapq.heappop(heap)
        level = min(self._known + 1, self._clock())
        if heap:
            level = min(level, heap[0][0])
        return level

    def outbox_ack_level(self) -> None:
        return None  # no outbox: the timer rows are the queue

    def outbox_until(self) -> None:
        return None  # every timer goes to the timer rows, by due time

    def add_far(self, timers: list[TimerTask]) -> None:
        self.add(timers)  # (never called: with no outbox, every timer is handed to `add`)

    def take_drop_before(self) -> int:
        return 0  # the timer ack level covers the rows below it

    def restore_drop_before(self, before: int) -> None:
        return None

    def poke(self) -> None:
        """The clock may have moved (tests with a controllable clock): look again."""
        self._wake.set()

    @property
    def pending(self) -> int:
        return len(self._heap)

    @property
    def next_due_ms(self) -> int | None:
        return self._heap[0][0] if self._heap else None

    async def fire_due(self) -> int:
        """Fire everything due now and wait for the effects (including timers those effects
        create that are already due). Returns how many timers fired."""
        before = self._started
        while not self._stopped:
            await self._maybe_load()
            started = self._start_due()
            if self._firing:
                await asyncio.gather(*list(self._firing.values()), return_exceptions=True)
            elif not started:
                break
        return self._started - before  # the shard's own loop may have started some meanwhile

    async def _maybe_load(self) -> None:
        now = self._clock()
        if now + self._lookahead // 2 < self._horizon:
            return
        async with self._load_lock:
            new_horizon = self._clock() + self._lookahead
            if new_horizon <= self._horizon:
                return
            after = (self._known, 1 << 62)
            # Commits from now on push their timers up to new_horizon themselves; the read below
            # may also return some of them, `_held` removes the duplicates.
            self._horizon = new_horizon
            try:
                while not self._stopped:
                    rows = await self._store.read_timer_tasks(self.shard_id, after, new_horizon, READ_PAGE)
                    self.add([TimerTask(r.fire_time_ms, r.task_id, codec.loads(r.data)) for r in rows])
                    if len(rows) < READ_PAGE:
                        self._known = new_horizon
                        break
                    after = (rows[-1].fire_time_ms, rows[-1].task_id)
            except BaseException:
                # The next load reads again from what is known (a read cut short must not leave
                # stored timers behind the horizon, unread until the shard moves).
                self._horizon = self._known
                raise

    def _start_due(self) -> int:
        now = self._clock()
        n = 0
        obsolete = self._obsolete
        drops = 0
        while self._heap and self._heap[0][0] <= now and len(self._firing) < self._max_firing:
            if obsolete is not None and obsolete(self._heap[0][2]):
                # Most timers that come due guard what finished long ago (a workflow task's or an
                # activity's timeout, which nobody deletes): done here, without a task and a fire.
                if drops == DROPS_PER_TURN:
                    break  # the loop comes back at once, after the others' turn
                _, _, t = heapq.heappop(self._heap)
                self._fired(t, now)
                drops += 1
                n += 1
                continue
            _, _, t = heapq.heappop(self._heap)
            n += 1
            self._firing[t.task_id] = asyncio.create_task(self._fire_one(t), name=f"timer-{self.shard_id}-{t.task_id}")
        self._started += n
        return n

    def _fired(self, t: TimerTask, started: int) -> None:
        """`t` fired with a durable effect (or none): it no longer holds the ack level back, and
        the shard's next flush may delete its row."""
        self._retries.pop(t.task_id, None)
        self._unacked.pop(t.task_id, None)
        self.lags.record(started - t.fire_time_ms)
        self._deletable(t)

    async def _fire_one(self, t: TimerTask) -> None:
        started = self._clock()
        try:
            await self._fire(t)
        except ShardOwnershipLost:
            return  # the shard is being dropped; the row stays for the next owner
        except asyncio.CancelledError:
            raise
        except Exception as e:
            n = self._retries.get(t.task_id, 0) + 1
            self._retries[t.task_id] = n
            delay_ms = int(retry_delay_s(n) * 1000)
            log.log(logging.WARNING if worth_a_warning(n) else logging.DEBUG,
                    "shard %d: timer %d (%s) failed (attempt %d), retrying in %d ms: %s",
                    self.shard_id, t.task_id, t.data.get("k"), n, delay_ms, e)
            heapq.heappush(self._heap, (self._clock() + delay_ms, t.task_id, t))
            self._wake.set()
        else:
            self._fired(t, started)
        finally:
            self._firing.pop(t.task_id, None)
            self._wake.set()  # a slot is free: a timer waiting its turn may start

    def _wait_ms(self, now: int) -> int:
        """How long the loop may sleep: until the next read is due, or the next timer (at least
        `_batch_ms`: one wake-up for what comes due meanwhile); <= 0: go on at once."""
        wait_ms = self._horizon - self._lookahead // 2 - now
        if self._heap and len(self._firing) < self._max_firing:  # (else a fire's end wakes it)
            wait_ms = min(wait_ms, self._heap[0][0] - now)
            if 0 < wait_ms < self._batch_ms:
                wait_ms = self._batch_ms
        return wait_ms

    async def _loop(self) -> None:
        while not self._stopped:
            self._wake.clear()
            try:
                await self._maybe_load()
                self._start_due()
            except asyncio.CancelledError:
                raise
            except ShardOwnershipLost:
                return
            except Exception as e:
                log.warning("shard %d: reading timers failed: %s", self.shard_id, e)
                await asyncio.sleep(1.0)
                continue
            wait_ms = self._wait_ms(self._clock())
            if wait_ms > 0:
                # Woken by the clock or by `_wake` (a sooner timer, a free slot), whichever comes
                # first: a timer handle, not `wait_for`'s task per wait (one wait per due time).
                alarm = asyncio.get_running_loop().call_later(wait_ms / 1000.0, self._wake.set)
                try:
                    await self._wake.wait()
                finally:
                    alarm.cancel()
            else:
                await asyncio.sleep(0)  # more is due at once (a long run of obsolete timers): others first
