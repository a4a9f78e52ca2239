"""The Prometheus metrics of every Legato process (README, "Metrics"), with prometheus-client.

Every metric is defined here, once, so that the README's table, the Grafana dashboard and the
tests can check their names against one list. Counters and histograms are updated where the thing
they count happens; gauges of state that already lives in memory (shards owned, queue backlogs,
cached workflows) are read when Prometheus scrapes, from the `Sources` the services register,
so the hot path pays nothing for them.

Conventions: names `legato_...`; counters end in `_total`; durations are `_seconds` histograms
with buckets fitted to each latency; labels are low-cardinality (a service, an rpc, an operation,
an outcome, a namespace or task queue; never a workflow id).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client import REGISTRY, Counter, Histogram, disable_created_metrics
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

disable_created_metrics()  # no `_created` series: Prometheus does not need them, they double the output

# ------------------------------------------------------------------ buckets (seconds unless said)

# A unary call takes a millisecond or so; a long poll up to matching.long_poll_timeout_ms (60 s).
API_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# A SQLite commit takes ~0.1-1 ms, a Cassandra LWT a few ms; seconds are trouble.
STORE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                 5.0, 10.0)
# How many runs' updates one write carried (group commit), or events a run had when it closed.
COUNT_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
HISTORY_LENGTH_BUCKETS = (5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10_000, 25_000, 51_200)
# Shard handoffs: a drain (cluster.shard_drain_timeout_ms, 5 s) plus an LWT or two.
HANDOFF_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# Lags: a timer fires milliseconds after its due time; a task waits for a worker up to minutes.
LAG_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0)
# A workflow task runs Lua for a millisecond; an activity for up to its start-to-close timeout.
WORKFLOW_TASK_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                         1.0, 5.0)
ACTIVITY_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0, 3600.0)
KAFKA_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

# ------------------------------------------------------------------ API (frontend, history, matching)

requests = Counter("legato_requests", "gRPC requests served, by service and rpc.", ["service", "method"])
request_errors = Counter(
    "legato_request_errors", "gRPC requests answered with an error, by service, rpc and error kind "
    "(the error class: NotFound, Unavailable, ShardOwnershipLost, InvalidArgument, Internal, ...).",
    ["service", "method", "kind"])
request_latency = Histogram("legato_request_latency_seconds", "Time to serve a gRPC request (long polls "
                            "included: they last until a task comes or the poll times out).",
                            ["service", "method"], buckets=API_BUCKETS)

# ------------------------------------------------------------------ stores

store_operations = Counter("legato_store_operations", "Store operations, by store (sqlite, cassandra) and "
                           "operation.", ["store", "operation"])
store_errors = Counter("legato_store_errors", "Store operations that raised, by store, operation and error class.",
                       ["store", "operation", "kind"])
store_latency = Histogram("legato_store_latency_seconds", "Time of a store operation.", ["store", "operation"],
                          buckets=STORE_BUCKETS)
cassandra_lwts = Counter("legato_cassandra_lwts", "Cassandra conditional writes (lightweight transactions), by "
                         "result: applied, rejected (a condition failed: a fenced shard or a conflict), unknown "
                         "(a timeout: maybe applied), failed (certainly not applied: no node took it).", ["result"])
cassandra_lwt_transitions = Histogram("legato_cassandra_lwt_state_transitions", "Runs updated by one applied "
                                      "shard write (one LWT batch: group commit puts several in one).",
                                      buckets=COUNT_BUCKETS)
cassandra_requests = Counter("legato_cassandra_requests", "Requests sent to Cassandra, by kind (a statement's verb "
                             "and table, or a batch's purpose: LWT shard write, append history, ...).", ["kind"])
cassandra_statements = Counter("legato_cassandra_request_statements", "Statements those requests carried (a batch "
                               "carries several), by kind.", ["kind"])
sqlite_commits = Counter("legato_sqlite_commits", "SQLite transactions committed by history's writes.")
sqlite_commit_size = Histogram("legato_sqlite_commit_updates", "Shard writes carried by one SQLite transaction "
                               "(group commit).", buckets=COUNT_BUCKETS)

# ------------------------------------------------------------------ shards and membership

shard_acquisitions = Counter("legato_shard_acquisitions", "Shards this history node acquired.")
shard_releases = Counter("legato_shard_releases", "Shards this node gave up, by reason: handover (reassigned or "
                         "stopping: drained first), fenced (another node took it: a write found its range_id), "
                         "session_lost (the ZooKeeper session expired).", ["reason"])
for _reason in ("handover", "fenced", "session_lost"):
    shard_releases.labels(_reason)  # every reason's series exists, at 0 until it happens
shard_acquire_latency = Histogram("legato_shard_acquire_latency_seconds", "From taking a shard's ZooKeeper "
                                  "lock to serving it (range_id renewal, outbox load).", buckets=HANDOFF_BUCKETS)
shard_release_latency = Histogram("legato_shard_release_latency_seconds", "From the decision to hand a shard "
                                  "over to its lock being given up (drain, last ack flush).", buckets=HANDOFF_BUCKETS)
membership_changes = Counter("legato_membership_changes", "Changes of the cluster's member list or shard "
                             "assignment seen by this process.")

# ------------------------------------------------------------------ history queues and workflows

transfer_tasks = Counter("legato_transfer_tasks", "Transfer (outbox) tasks carried out, by kind.", ["kind"])
batched_calls = Counter("legato_batched_calls", "Calls that came in a CallBatch (from other history nodes, "
                        "and the starts a frontend relays; legato_requests_total{method=\"CallBatch\"} counts "
                        "the batches), by call.", ["call"])
timer_fire_lag = Histogram("legato_timer_fire_lag_seconds", "How late a durable timer fired (firing time minus "
                           "its due time).", buckets=LAG_BUCKETS)
state_transitions = Counter("legato_state_transitions", "Workflow state transitions committed (one per run "
                            "updated by a shard write).")
workflows_closed = Counter("legato_workflows_closed", "Workflow runs closed, by namespace and status: "
                           "completed, failed, canceled, terminated, timed_out, continued_as_new.",
                           ["namespace", "status"])
runs_deleted = Counter("legato_runs_deleted", "Closed workflow runs deleted once their retention passed "
                       "(history.retention), by namespace.", ["namespace"])
retention_scan_runs = Counter("legato_retention_scan_runs", "Runs the retention scan examined "
                              "(history.retention_scan_*), by outcome: deleted (closed, past retention, no timer "
                              "had deleted it), kept.", ["result"])
history_length_at_close = Histogram("legato_history_length_at_close", "Events in a run's history when it "
                                    "closed.", buckets=HISTORY_LENGTH_BUCKETS)

# ------------------------------------------------------------------ matching

matching_matches = Counter("legato_matching_matches", "Tasks handed to a poll, by kind (workflow, activity) and "
                           "how: sync (a poll was waiting) or async (the task waited on its queue).",
                           ["kind", "match"])
matching_polls = Counter("legato_matching_polls", "Long polls that ended, by kind and result: task, timeout.",
                         ["kind", "result"])
schedule_to_start = Histogram("legato_schedule_to_start_latency_seconds", "From a task's creation by history "
                              "to its handout to a worker by matching, by kind (activities started eagerly, with "
                              "the workflow task that scheduled them, do not pass matching).", ["kind"],
                              buckets=LAG_BUCKETS)

# ------------------------------------------------------------------ worker

worker_cache_requests = Counter("legato_worker_cache_requests", "Workflow tasks by whether their run was in "
                                "the worker's cache: hit, miss.", ["result"])
worker_cache_evictions = Counter("legato_worker_cache_evictions", "Runs dropped from the worker's cache (to "
                                 "make room, or closed).")
workflow_task_latency = Histogram("legato_workflow_task_latency_seconds", "Time a worker spent on one workflow "
                                  "task (replay and Lua).", buckets=WORKFLOW_TASK_BUCKETS)
activity_latency = Histogram("legato_activity_latency_seconds", "Time an activity ran in a worker.",
                             buckets=ACTIVITY_BUCKETS)
activity_outcomes = Counter("legato_activity_outcomes", "Activities run by a worker, by outcome: completed, "
                            "failed (an error, or a timeout the worker saw), canceled.", ["outcome"])

# ------------------------------------------------------------------ Kafka

kafka_produce_latency = Histogram("legato_kafka_produce_latency_seconds", "From producing a message to the "
                                  "broker's acknowledgement, by producer (task-publisher: tasks to matching; "
                                  "history-producer: timers and re-published tasks).", ["producer"],
                                  buckets=KAFKA_BUCKETS)
kafka_produce_errors = Counter("legato_kafka_produce_errors", "Messages the broker did not acknowledge, by "
                               "producer.", ["producer"])
kafka_timers_unsent = Counter("legato_kafka_timers_unsent", "Timers a shard held before publishing them "
                              "(queues.timer_publish_hold_ms), or far timers its scan reached, never published: "
                              "by then their run no longer expected them (a workflow task or activity that "
                              "completed, a closed run).")


# ------------------------------------------------------------------ gauges read at scrape time

@dataclass(frozen=True, slots=True)
class GaugeDef:
    name: str
    help: str
    labels: tuple[str, ...] = ()


GAUGES: dict[str, GaugeDef] = {g.name: g for g in (
    GaugeDef("legato_up", "1 while this process runs, by its roles (frontend, history, matching, worker).",
             ("roles",)),
    GaugeDef("legato_shards_owned", "Shards this history node owns now."),
    GaugeDef("legato_cluster_members", "Members of the cluster this process sees, by role.", ("role",)),
    GaugeDef("legato_transfer_tasks_pending", "Transfer (outbox) tasks handed to the queue processors and not "
             "yet done, over this node's shards."),
    GaugeDef("legato_transfer_oldest_pending_seconds", "Age of the oldest transfer task not yet done."),
    GaugeDef("legato_timers_pending", "Durable timers held in memory, over this node's shards (due soon, or "
             "all of them with Kafka timers)."),
    GaugeDef("legato_timer_overdue_seconds", "How far past its due time the most overdue unfired timer is (0: "
             "none is due)."),
    GaugeDef("legato_matching_backlog", "Tasks waiting on a task queue of this matching node (approximate: "
             "tasks parked in Kafka are not counted), by kind and task queue.", ("kind", "task_queue")),
    GaugeDef("legato_matching_pollers", "Long polls waiting on a task queue of this matching node.",
             ("kind", "task_queue")),
    GaugeDef("legato_worker_cached_workflows", "Workflow runs in the worker's cache."),
    GaugeDef("legato_worker_task_slots_used", "Task slots running a task, by kind (workflow, activity); polls "
             "waiting for a task hold a slot too, and are not counted.", ("kind",)),
    GaugeDef("legato_worker_task_slots", "Task slots configured, by kind.", ("kind",)),
    GaugeDef("legato_worker_lua_memory_bytes", "Memory the worker's workflow Lua states use."),
    GaugeDef("legato_worker_processes", "Live processes of the worker's process hosts, by host.", ("host",)),
    GaugeDef("legato_worker_service_restarts", "Restarts of each process.service of the worker so far.",
             ("service",)),
    GaugeDef("legato_kafka_consumer_lag", "Messages not yet consumed, by topic and partition (from the "
             "consumer's statistics).", ("topic", "partition")),
)}

Sample = tuple[str, tuple[str, ...], float]  # (gauge name, label values, value)
Source = Callable[[], Iterable[Sample]]


class Sources(Collector):
    """The gauges read at scrape time: each service registers a function yielding its samples.
    Samples of the same gauge and labels from several sources add up (several engines in one
    process, e.g. in tests, report their sum)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sources: dict[int, Source] = {}
        self._next = 0

    def add(self, source: Source) -> Callable[[], None]:
        """Register `source`; returns the function that removes it."""
        with self._lock:
            self._next += 1
            key = self._next
            self._sources[key] = source

        def remove() -> None:
            with self._lock:
                self._sources.pop(key, None)

        return remove

    def collect(self) -> Iterator[GaugeMetricFamily]:
        totals: dict[str, dict[tuple[str, ...], float]] = {name: {} for name in GAUGES}
        with self._lock:
            sources = list(self._sources.values())
        for source in sources:
            try:
                samples = list(source())
            except RuntimeError:  # its data changed under it (another thread): skip it this scrape
                continue
            for name, labels, value in samples:
                values = totals[name]
                values[labels] = values.get(labels, 0.0) + value
        for name, values in totals.items():
            g = GAUGES[name]
            family = GaugeMetricFamily(name, g.help, labels=list(g.labels))
            for labels, value in values.items():
                family.add_metric(list(labels), value)
            yield family

    def describe(self) -> Iterator[GaugeMetricFamily]:
        for g in GAUGES.values():
            yield GaugeMetricFamily(g.name, g.help, labels=list(g.labels))


sources = Sources()
REGISTRY.register(sources)


def families() -> dict[str, str]:
    """Every metric this module defines, by the name Prometheus shows (counters with `_total`)
    -> its type: counter, histogram or gauge."""
    out = {name: "gauge" for name in GAUGES}
    for value in globals().values():
        if isinstance(value, Counter):
            out[value._name + "_total"] = "counter"
        elif isinstance(value, Histogram):
            out[value._name] = "histogram"
    return out


def metric_names() -> set[str]:
    """Every sample name this module can export (counters with `_total`, histograms with their
    `_bucket`, `_sum`, `_count`), for the dashboard and README checks."""
    names: set[str] = set(GAUGES)
    for value in globals().values():
        if isinstance(value, Counter):
            names.add(value._name + "_total")
        elif isinstance(value, Histogram):
            names |= {value._name + s for s in ("_bucket", "_sum", "_count")}
    return names


def children(metric: Any) -> Callable[..., Any]:
    """`metric.labels(...)` with the labelled children kept (a dict lookup instead of
    prometheus-client's validation and lock), for labels taken on the hot path."""
    cache: dict[tuple[str, ...], Any] = {}

    def child(*labels: str) -> Any:
        c = cache.get(labels)
        if c is None:
            c = cache[labels] = metric.labels(*labels)
        return c

    return child


def error_kind(e: BaseException) -> str:
    """The low-cardinality label of an error: its class name."""
    return type(e).__name__

