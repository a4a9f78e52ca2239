"""The execution store contract, shaped so that SQLite and Cassandra implement it alike.

Logical tables (Cassandra: the first five share one partition per shard, so one conditional
batch covers them; history events have their own table; visibility its own):

* ``shards``          (shard_id) -> range_id, owner, transfer_ack_level, timer_ack_level,
                      timer_outbox_ack_level, timer_queue
* ``current_runs``    (shard_id, namespace, workflow_id) -> run_id, status, start_request_id
* ``runs``            (shard_id, namespace, workflow_id, run_id) -> next_event_id, state blob
* ``transfer_tasks``  (shard_id, task_id) -> task
* ``timer_tasks``     (shard_id, fire_time_ms, task_id) -> task (queues.kind inprocess: the timer queue)
* ``timer_outbox``    (shard_id, task_id) -> fire_time_ms, task (queues.kind kafka: timers not yet
                      acknowledged by the timer topic, in task-id order)
* ``history_events``  ((namespace, workflow_id, run_id), event_id, txn_id) -> event
* ``cluster_metadata`` (key) -> value (num_shards, schema version)

Rules every implementation keeps:

* One :meth:`ExecutionStore.write` is ONE atomic, conditional write on one shard: the shard's
  ``range_id`` must equal ``ShardWrite.range_id`` (else :class:`legato.errors.ShardOwnershipLost`),
  every run row must have the expected ``next_event_id`` (or not exist, for a new run), every
  current-run pointer the expected previous run id (or not exist); if any run condition fails,
  nothing is written and :class:`RunConditionFailed` names the failed rows.
* History events are appended BEFORE that write, as an idempotent upsert keyed by
  (event_id, txn_id). ``txn_id`` comes from the shard's task-id allocator, so it grows with
  ``range_id``: for one event id the row with the greatest txn_id wins, which keeps a late write of
  a fenced-off owner from shadowing the events of the owner that replaced it. Readers ignore
  events with an id >= the run's persisted ``next_event_id``, so events of a rejected write are
  never visible. This relies on an owner's cached state never being BEHIND what its own range
  wrote (a stale same-range append at a committed id would win by txn_id): a write whose outcome
  is unknown therefore makes the owner renew its range and reload before writing again
  (``WriteOutcomeUnknown``), and SQLite, which can, checks the conditions before appending.
* Everything is addressed by partition key plus a clustering range; no cross-shard transaction.
* Queues are read from their ack levels upward and what lies below an ack level is dropped with
  ONE range delete: transfer tasks with task_id <= transfer_ack_level, timers with
  fire_time_ms < timer_ack_level. A scan then never starts below what was deleted (on Cassandra a
  deleted row is a tombstone that every read crossing it pays for until compaction purges it, and
  too many fail the read). Point deletes remain only for timers that fired out of order above the
  timer ack level, which it soon passes (a bounded number). The timer outbox (Kafka mode) is read
  above timer_outbox_ack_level and range-deleted at or below it, as the transfer outbox is.
* A shard records which timer queue its owner keeps (``timer_queue``): a shard whose timers went
  to Kafka is refused to an owner that keeps them in the store (`check_timer_queue`), since the
  timers pending in the topic would never fire.
* :meth:`ExecutionStore.delete_run` (retention) deletes a closed run's history events first and
  its run row (and the current-run pointer, if that still names the run) last, conditioned on
  the shard's range_id; it is idempotent, so a deletion cut short is finished by running it again.
  Whether the run may be deleted (it is closed) is for the caller to know: the store never reads
  the state blob.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from legato.errors import FailedPrecondition, Unavailable

# ShardInfo.timer_queue: where the shard's owner keeps its timers ('' : a build from before the
# field, which said nothing).
TIMER_QUEUE_STORE = "store"  # the store's timer rows (queues.kind inprocess)
TIMER_QUEUE_KAFKA = "kafka"  # the timer topic, fed through the store's timer outbox
EVERY_TIMER_ROW = 1 << 62  # a due time (ms) past every timer row: drop_timers_before it drops them all


@dataclass(slots=True)
class ShardInfo:
    shard_id: int
    range_id: int
    owner: str
    transfer_ack_level: int = 0
    updated_ms: int = 0
    # Every timer with fire_time_ms below this (ms since the epoch) has fired with a durable
    # effect and its row is gone: the timer queue reads from here, and the shard never writes a
    # timer due earlier (it moves such a timer's due time up to this level: fired late, never early).
    timer_ack_level: int = 0
    # Every timer outbox row with task_id <= this was acknowledged by the timer topic and is gone
    # (Kafka mode): the outbox is read above it.
    timer_outbox_ack_level: int = 0
    timer_queue: str = ""  # TIMER_QUEUE_*: the queue the shard's previous owner kept its timers in
    # Every due-time timer row below this (ms) was published to Kafka and range-deleted by a Kafka
    # owner (0: none; EVERY_TIMER_ROW: all), so its scan of those rows starts here and never
    # crosses their tombstones again.
    timer_rows_dropped_before: int = 0


def check_timer_queue(shard_id: int, stored: str | None, wanted: str) -> None:
    """Refuse to hand a shard whose timers are on Kafka to an owner that keeps them in the store:
    the timers pending in the topic (and those still in the outbox) would never fire. The other way
    round is safe: a Kafka owner publishes the store's timer rows too."""
    if stored == TIMER_QUEUE_KAFKA and wanted == TIMER_QUEUE_STORE:
        raise FailedPrecondition(
            f"shard {shard_id} keeps its timers on Kafka (it was last owned with queues.kind: kafka); a history "
            "node with another queues.kind cannot take it, because the timers pending in the timer topic would "
            "never fire. Run history with queues.kind: kafka (moving a cluster's timers from Kafka back to "
            "the store is not supported)", reason="TimerQueueMismatch")


@dataclass(slots=True)
class CurrentRunRow:
    """The pointer from (namespace, workflow_id) to its latest run."""

    namespace: str
    workflow_id: str
    run_id: str
    status: str  # legato.api.WorkflowStatus value
    start_request_id: str = ""
    start_time_ms: int = 0


@dataclass(slots=True)
class RunRow:
    namespace: str
    workflow_id: str
    run_id: str
    next_event_id: int
    state: str  # the mutable state, JSON


@dataclass(slots=True)
class RunWrite:
    namespace: str
    workflow_id: str
    run_id: str
    next_event_id: int
    state: str
    expected_next_event_id: int | None  # None: the run must not exist yet

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.namespace, self.workflow_id, self.run_id)


@dataclass(slots=True)
class CurrentRunWrite:
    row: CurrentRunRow
    expected_run_id: str | None  # None: no current run may exist yet


@dataclass(slots=True)
class TransferTaskRow:
    task_id: int
    data: str


@dataclass(slots=True)
class TimerTaskRow:
    fire_time_ms: int
    task_id: int
    data: str


@dataclass(slots=True)
class ShardWrite:
    shard_id: int
    range_id: int
    runs: list[RunWrite] = field(default_factory=list)
    current_runs: list[CurrentRunWrite] = field(default_factory=list)
    transfer_tasks: list[TransferTaskRow] = field(default_factory=list)
    timer_tasks: list[TimerTaskRow] = field(default_factory=list)
    timer_outbox: list[TimerTaskRow] = field(default_factory=list)  # Kafka mode: timers to publish


@dataclass(slots=True)
class HistoryAppend:
    namespace: str
    workflow_id: str
    run_id: str
    txn_id: int
    events: list[tuple[int, str]]  # (event_id, encoded HistoryEvent)


def history_read_end(first_event_id: int, next_event_id: int, limit: int) -> int | None:
    """The end (exclusive) of the event ids a read_history call reads: below the run's
    next_event_id, at most `limit` of them; None if there is nothing to read."""
    if limit <= 0 or first_event_id >= next_event_id:
        return None
    return min(next_event_id, first_event_id + limit)


def one_event_per_id(rows: Iterable[tuple[int, str]]) -> list[str]:
    """The encoded events of history rows (event_id, data) ordered by event_id ascending, then
    txn_id descending: one per event id, that of the greatest txn_id."""
    out: list[str] = []
    last = -1
    for eid, data in rows:
        if eid != last:  # the greatest txn_id of each event id comes first
            out.append(data)
            last = eid
    return out


class RunConditionFailed(Unavailable):
    """A run row or current-run pointer did not have the expected value; nothing was written.

    Internal to history (the service reloads the run and retries); it is an `Unavailable` so that
    if it ever escapes, the caller sees a retryable service error.
    """

    def __init__(self, message: str, failed: Sequence[tuple[str, str, str]] = ()) -> None:
        super().__init__(message, reason="RunConditionFailed")
        self.failed = list(failed)


class WriteOutcomeUnknown(Unavailable):
    """The store cannot tell whether a conditional write took effect (it timed out after being
    sent). The shard's owner re-acquires the shard (a new range_id settles the outcome and fences
    the write if it is still in flight) and reloads what it cached before it writes again."""

    def __init__(self, message: str) -> None:
        super().__init__(message, reason="WriteOutcomeUnknown")


class ExecutionStore(Protocol):
    async def open(self) -> None: ...
    async def close(self) -> None: ...

    async def init_cluster(self, num_shards: int) -> int:
        """Record num_shards if the store has none yet; return the recorded value."""
        ...

    # -------------------------------------------------------------- shards

    async def acquire_shard(self, shard_id: int, owner: str, timer_queue: str = TIMER_QUEUE_STORE) -> ShardInfo:
        """Conditionally increment the shard's range_id (creating the row at 1) and record owner and
        timer_queue; FailedPrecondition (nothing written) if `check_timer_queue` refuses. The
        returned ShardInfo.timer_queue is the one recorded before."""
        ...

    async def renew_range(self, shard_id: int, expected_range_id: int, owner: str) -> ShardInfo:
        """range_id + 1 if it still equals expected_range_id, else ShardOwnershipLost. A renewal
        that already took effect for this same `owner` (the shard holds expected + 1 and `owner`)
        returns that range: a retry after an unknown outcome must not drop the shard it holds.
        Owners are therefore unique per history start."""
        ...

    async def update_shard(self, shard_id: int, range_id: int, transfer_ack_level: int,
                           timer_deletes: Sequence[tuple[int, int]], timer_ack_level: int = 0,
                           outbox_ack_level: int = 0, drop_timers_before: int = 0) -> None:
        """Conditioned on range_id: persist the ack levels, range-delete transfer tasks with
        task_id <= transfer_ack_level, timers with fire_time_ms < timer_ack_level and timer outbox
        rows with task_id <= outbox_ack_level, delete the given (fire_time_ms, task_id) timers.
        timer_ack_level / outbox_ack_level 0 leave that level as it is; callers never pass a level
        below one they persisted (Cassandra would store it: it writes without reading).
        drop_timers_before > 0 range-deletes the timer rows with fire_time_ms below it WITHOUT
        moving the timer ack level (Kafka mode: the rows were published, their due times bound
        nothing the store-backed queue may rely on) and records it as timer_rows_dropped_before."""
        ...

    # -------------------------------------------------------------- runs

    async def get_current_run(self, shard_id: int, namespace: str, workflow_id: str) -> CurrentRunRow | None: ...
    async def get_run(self, shard_id: int, namespace: str, workflow_id: str, run_id: str) -> RunRow | None: ...

    async def append_history(self, appends: Sequence[HistoryAppend]) -> None:
        """Idempotent upsert of events; invisible until a run write moves next_event_id past them."""
        ...

    async def write(self, write: ShardWrite) -> None:
        """The atomic conditional write (see the module doc)."""
        ...

    async def commit(self, appends: Sequence[HistoryAppend], write: ShardWrite) -> None:
        """append_history then write, in one round trip where the backend allows it. A backend
        that can do both in one transaction (SQLite) checks the conditions first and appends
        nothing when they fail."""
        ...

    async def read_history(self, namespace: str, workflow_id: str, run_id: str, first_event_id: int,
                           next_event_id: int, limit: int) -> list[str]:
        """Encoded events with first_event_id <= id < next_event_id (the run's persisted
        next_event_id), at most `limit`, one per id (the greatest txn_id), in id order."""
        ...

    async def delete_run(self, shard_id: int, range_id: int, namespace: str, workflow_id: str, run_id: str) -> None:
        """Retention: delete every history event of the run, then, conditioned on range_id (else
        ShardOwnershipLost), its run row and the current-run pointer of workflow_id if that names
        run_id (a pointer to another run is left alone). Idempotent: deleting what is gone is no
        error. The caller holds the workflow's lock and knows the run is closed."""
        ...

    async def scan_runs(self, shard_id: int, after: tuple[str, str, str] | None, limit: int) -> list[RunRow]:
        """The shard's run rows in (namespace, workflow_id, run_id) order, after `after` (None:
        from the first), at most `limit` (the retention scan, history/retention_scan.py)."""
        ...

    # -------------------------------------------------------------- cluster metadata

    async def get_metadata(self, key: str) -> str | None:
        """A value of the cluster metadata (None: never written)."""
        ...

    async def put_metadata(self, key: str, value: str) -> None:
        """Write a value of the cluster metadata, unconditionally (never num_shards, which
        init_cluster records once): for advisory state such as the retention scan's cursors."""
        ...

    # -------------------------------------------------------------- queues

    async def read_transfer_tasks(self, shard_id: int, after_task_id: int, limit: int) -> list[TransferTaskRow]: ...

    async def read_timer_tasks(self, shard_id: int, after: tuple[int, int], until_fire_ms: int,
                               limit: int) -> list[TimerTaskRow]:
        """Timers with (fire_time_ms, task_id) > after and fire_time_ms <= until_fire_ms, in order."""
        ...

    async def read_timer_outbox(self, shard_id: int, after_task_id: int, limit: int) -> list[TimerTaskRow]:
        """Timer outbox rows with task_id > after_task_id, in task-id order, at most `limit`."""
        ...
