"""Configuration: every limit and tunable in one validated model.

Values come from defaults, an optional YAML file (`--config`), and `LEGATO_<SECTION>__<KEY>`
environment variables, in that order of precedence (last wins).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from legato import codec
from legato.durations import parse_duration_ms

# host:port, the host a name, an IPv4 address or a bracketed IPv6 address
_HOST_PORT = r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+):[0-9]{1,5}$"


def split_address(address: str) -> tuple[str, int]:
    """"host:port" (or "[v6]:port") -> (host, port), for binding a server."""
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Limits(_Strict):
    max_payload_bytes: int = Field(2 * 1024 * 1024, gt=0, description="input, result, signal, activity args")
    # How deeply arrays and objects may nest in one payload (a JSON document of the API: an input
    # list, a memo, a signal's value...), in levels; deeper JSON never reaches Python's recursive
    # decoder (legato.codec). A command of workflow code may wrap a payload in a few more levels.
    max_payload_depth: int = Field(codec.DEFAULT_MAX_PAYLOAD_DEPTH, gt=0, le=codec.MAX_PAYLOAD_DEPTH_CEILING,
                                   description="levels of nested arrays and objects in one payload")
    max_history_events: int = Field(50_000, gt=0)
    max_history_bytes: int = Field(50 * 1024 * 1024, gt=0)
    max_pending_activities: int = Field(2_000, gt=0)
    max_pending_timers: int = Field(2_000, gt=0)
    max_buffered_signals: int = Field(10_000, gt=0)
    max_commands_per_task: int = Field(10_000, gt=0)
    # issue 3: per workflow run
    max_pending_children: int = Field(2_000, gt=0, description="children started and not yet closed")
    max_pending_external_requests: int = Field(
        2_000, gt=0, description="signals, cancels, terminates and monitors sent to other workflows, awaiting outcome")
    max_monitors: int = Field(10_000, gt=0, description="monitors and links registered on one workflow")
    lua_memory_bytes: int = Field(64 * 1024 * 1024, gt=0, description="per workflow run")
    lua_instructions_per_task: int = Field(50_000_000, gt=0)
    activity_lua_memory_bytes: int = Field(256 * 1024 * 1024, gt=0, description="per activity runtime (one per "
                                           "function entry and worker thread)")


DEFAULT_RETENTION_MS = 72 * 3_600_000  # Temporal's default for new namespaces: 3 days
DEFAULT_RETENTION_SCAN_INTERVAL_MS = 24 * 3_600_000  # a retention scan pass a day (Temporal's scavenger: daily)


MAX_GROUP_COMMIT_WAIT_MS = 5_000.0  # history.group_commit_max_wait_ms, at most


class HistoryConfig(_Strict):
    num_shards: int = Field(4, gt=0)
    workflow_task_timeout_ms: int = Field(10_000, gt=0)
    max_workflow_task_timeout_ms: int = Field(120_000, gt=0)
    workflow_task_retry_initial_ms: int = Field(1_000, ge=0)
    workflow_task_retry_max_ms: int = Field(600_000, ge=0)
    activity_start_to_close_default_ms: int = Field(300_000, gt=0)
    activity_retry_initial_ms: int = Field(1_000, gt=0)
    activity_retry_maximum_interval_factor: int = Field(100, gt=0)
    range_block_bits: int = Field(20, gt=0, le=40)
    group_commit_max_batch: int = Field(64, gt=0, description="runs' updates in one shard write, at most")
    # A shard's write waits until its oldest queued update has waited this long (or the batch is
    # full), as Kafka's linger.ms: fewer, larger conditional batches for latency. 0: a write
    # goes as soon as the one before it returns (history/shard.py, `_linger`). At most 5 s: every
    # transition of the shard waits it, workflow task timeouts (10 s by default) included.
    group_commit_max_wait_ms: float = Field(0.0, ge=0, le=MAX_GROUP_COMMIT_WAIT_MS,
                                            description="an update waits this long for company, at most")
    # SQLite: while writes arrive together, a transaction waits up to this long for more writes
    # (of every shard) to join it; a lone write after a quiet spell goes at once.
    store_commit_window_ms: float = Field(5.0, ge=0)
    # Updates of one run that queued while it was being written are applied in turn and
    # committed as one write, at most this many (history/update_queue.py).
    max_coalesced_updates: int = Field(64, gt=0, description="updates of one run committed together, at most")
    mutable_state_cache_size: int = Field(10_000, ge=0)
    # Per shard: ids of runs that closed, so that a timer of theirs coming due (a workflow task's
    # or an activity's timeout, which nobody deletes) is dropped without reading the run back.
    closed_runs_remembered: int = Field(50_000, ge=0, description="closed run ids each shard remembers")
    timer_lookahead_ms: int = Field(60_000, gt=0)
    # A shard fires at most this many timers at once; the rest wait their turn. A backlog (a shard
    # taken over re-reads about queues.timer_publish_lookahead_ms of timers, every workflow task's
    # timeout among them; a restart after downtime) then drains at the store's pace instead of
    # sending every read at once: 60,000 at once timed out on Cassandra and were retried for minutes.
    timer_fires_in_flight: int = Field(100, gt=0, description="timers one shard fires at once, at most")
    # Timers in the store's rows due less than this apart fire in one turn of their shard's timer
    # loop, so a timer may fire up to this late. Under load timers come due every millisecond or
    # so (each workflow task's and activity's timeout): one wake-up each cost more than the fire.
    timer_batch_ms: int = Field(5, ge=0, le=1_000, description="timers due this close together fire together (ms)")
    ack_flush_interval_ms: int = Field(1_000, gt=0)
    # Retention (README, "Retention"): a closed run (completed, failed, canceled, terminated, timed
    # out, continued as new) is deleted this long after it closed: its history, mutable state,
    # visibility record and current-run pointer. A duration ("72h", "30d", "90m") or milliseconds;
    # 0 keeps closed runs for ever. Stored in milliseconds.
    retention: int = Field(DEFAULT_RETENTION_MS, description="how long closed runs are kept (ms; 0: for ever)")
    # Per namespace: {namespace: duration}; a namespace not listed has `retention`.
    namespace_retention: dict[str, int] = Field(default_factory=dict,
                                                description="retention of the namespaces listed (ms; 0: for ever)")
    # The retention scan (history/retention_scan.py): each shard's owner walks its runs this often
    # and deletes the closed ones past retention that no timer deleted (closed while retention was
    # 0, or before it existed), examining at most `retention_scan_rate` runs a second; a run is
    # left to its own timer until `retention_scan_grace` after it was due.
    retention_scan_interval: int = Field(DEFAULT_RETENTION_SCAN_INTERVAL_MS, ge=0,
                                         description="time between two passes of the retention scan (ms; 0: none)")
    retention_scan_rate: float = Field(200.0, gt=0, description="runs the retention scan examines per second "
                                                               "and shard, at most")
    retention_scan_grace: int = Field(3_600_000, ge=0, description="how long past its retention a run is left to "
                                                                   "its own timer before the scan deletes it (ms)")

    @field_validator("retention", mode="before")
    @classmethod
    def _retention(cls, v: object) -> int:
        return parse_duration_ms(v, "retention")

    @field_validator("retention_scan_interval", "retention_scan_grace", mode="before")
    @classmethod
    def _scan_durations(cls, v: object, info: ValidationInfo) -> int:
        return parse_duration_ms(v, str(info.field_name))

    @field_validator("namespace_retention", mode="before")
    @classmethod
    def _namespace_retention(cls, v: object) -> object:
        if isinstance(v, str):  # "orders=30d,scratch=1h" (environment variables)
            pairs = [p.partition("=") for p in v.split(",") if p.strip()]
            if any(not sep for _, sep, _ in pairs):
                raise ValueError(f"expected namespace=duration[,namespace=duration...], got {v!r}")
            v = {ns.strip(): d.strip() for ns, _, d in pairs}
        if not isinstance(v, dict):
            raise ValueError(f"expected a mapping of namespace to duration, got {type(v).__name__}")
        out: dict[str, int] = {}
        for ns, d in v.items():
            if not isinstance(ns, str) or not ns:
                raise ValueError(f"namespace names must be non-empty strings, got {ns!r}")
            out[ns] = parse_duration_ms(d, f"retention of namespace {ns!r}")
        return out

    def retention_ms(self, namespace: str) -> int:
        """How long the closed runs of `namespace` are kept, in ms (0: for ever)."""
        return self.namespace_retention.get(namespace, self.retention)


class MatchingConfig(_Strict):
    long_poll_timeout_ms: int = Field(30_000, gt=0)
    # Mailboxes of non-durable Lua callers (`legato run` of a function entry): messages and
    # process events wait here until the caller polls them.
    max_mailbox_messages: int = Field(10_000, gt=0, description="messages waiting in one caller's mailbox")
    max_mailboxes: int = Field(100_000, gt=0, description="open caller mailboxes per matching node")
    # Bytes as well as counts: a message counts its payload's JSON plus its topic and sender (and
    # a fixed overhead), so that 200 messages of 2 MB cannot take 400 MB of a node's memory.
    max_mailbox_bytes: int = Field(16 * 1024 * 1024, gt=0, description="bytes of messages waiting in one mailbox")
    max_mailboxes_total_bytes: int = Field(
        256 * 1024 * 1024, gt=0, description="bytes of messages waiting in all the mailboxes of a matching node")
    # Several matching nodes (docs/cluster.md, "Matching"): a task that finds no poll waiting on
    # its node is offered to the other nodes' waiting polls; a node that had none for a queue is
    # asked again about that queue after forward_backoff_ms.
    forward_after_ms: int = Field(20, ge=0, description="a task waits this long for a local poll first")
    forward_backoff_ms: int = Field(200, gt=0)
    forward_concurrency: int = Field(64, gt=0, description="offers one node has in flight at once")


class FrontendConfig(_Strict):
    """Queries (`legato workflow stack`, QueryWorkflow): the worker that has the run cached gets
    `query_sticky_timeout_ms` to answer from its cache; then any worker polling the run's task
    queue may replay the history and answer, until `query_timeout_ms` (from the request's start)
    has passed, when the caller gets DEADLINE_EXCEEDED naming the task queue."""

    query_sticky_timeout_ms: int = Field(1_000, gt=0, description="the sticky worker's time to answer a query")
    query_timeout_ms: int = Field(10_000, gt=0, description="a query's whole time (when the request sets none)")

    @model_validator(mode="after")
    def _sticky_within_total(self) -> FrontendConfig:
        if self.query_sticky_timeout_ms > self.query_timeout_ms:
            raise ValueError(f"query_sticky_timeout_ms ({self.query_sticky_timeout_ms}) must not exceed "
                             f"query_timeout_ms ({self.query_timeout_ms})")
        return self


class WorkerConfig(_Strict):
    workflow_cache_size: int = Field(1_000, ge=0)
    workflow_cache_bytes: int = Field(512 * 1024 * 1024, ge=0)
    max_concurrent_workflow_tasks: int = Field(64, gt=0)
    max_concurrent_activities: int = Field(100, gt=0)
    # Each poll waits for history to record its task as started, so pollers bound throughput.
    workflow_pollers: int = Field(16, gt=0)
    activity_pollers: int = Field(16, gt=0)
    # Tasks handed over with the responses instead of through polls: a workflow task's new
    # activities on its own task queue, when activity slots are free (eager activity execution,
    # as Temporal does), and the workflow task an activity's completion schedules, for a run this
    # worker has cached.
    eager_tasks: bool = True
    # activity.heartbeat() reaches the server at most this often (and at most every 80% of the
    # activity's heartbeat timeout); calls in between only keep the latest details, which are sent
    # before a failure is reported so that the next attempt sees them.
    heartbeat_throttle_ms: int = Field(1_000, ge=0)
    # A task's response (completed, failed, canceled) that finds the server unavailable (a history
    # or matching node restarting) is sent again for up to this long; history accepts a response
    # once (by its task token), so a retry is harmless, and one given up on costs a timeout.
    respond_retry_ms: int = Field(30_000, ge=0)
    # Where workflow code runs (docs/security.md): "process" (default) in Lua host processes
    # behind a watchdog, so that no workflow can stop the worker from serving others or from
    # stopping; "inline" on the worker's event loop (no child process, no watchdog).
    lua_isolation: Literal["process", "inline"] = "process"
    lua_processes: int = Field(1, gt=0, le=64, description="Lua host processes (a run always uses the same one)")
    # A workflow task still running after this long is abandoned: its Lua host process is
    # killed (and started again) and the task fails with LIMIT_EXCEEDED. Keep it below the
    # workflow task timeout (history.workflow_task_timeout_ms).
    lua_watchdog_ms: int = Field(5_000, gt=0)


class StoreConfig(_Strict):
    """Where history keeps its state. SQLite: the file named on the command line. Cassandra: a
    keyspace made by `legato schema setup --store cassandra` (the server refuses an absent or
    outdated schema)."""

    kind: Literal["sqlite", "cassandra"] = "sqlite"
    cassandra_hosts: list[str] = Field(default_factory=lambda: ["127.0.0.1"], min_length=1,
                                       description="contact points, host or host:port")
    cassandra_port: int = Field(9042, gt=0, lt=65536, description="CQL port of hosts given without one")
    cassandra_keyspace: str = Field("legato", pattern=r"^[A-Za-z][A-Za-z0-9_]{0,47}$")
    cassandra_local_dc: str = Field("", description="data centre of this node's requests; empty: any")
    # LOCAL_QUORUM/LOCAL_SERIAL keep a write within one data centre; QUORUM/SERIAL span them.
    cassandra_consistency: Literal["ONE", "LOCAL_ONE", "LOCAL_QUORUM", "QUORUM", "ALL"] = "LOCAL_QUORUM"
    cassandra_serial_consistency: Literal["LOCAL_SERIAL", "SERIAL"] = "LOCAL_SERIAL"
    cassandra_request_timeout_ms: int = Field(10_000, gt=0, description="one CQL request, client side")
    cassandra_connect_timeout_ms: int = Field(10_000, gt=0)
    # One conditional batch carries several runs' writes (group commit); Cassandra refuses a
    # batch above its batch_size_fail_threshold, so a shard's batch is also cut at this size.
    cassandra_max_batch_bytes: int = Field(256 * 1024, gt=0)

    @field_validator("cassandra_hosts", mode="before")
    @classmethod
    def _split_hosts(cls, v: object) -> object:
        """Accept "h1,h2:9043" (environment variables, command-line flags) as well as a list."""
        return [h.strip() for h in v.split(",") if h.strip()] if isinstance(v, str) else v


class QueuesConfig(_Strict):
    """How tasks travel from history's outbox to matching, and how timers wait (docs/queues.md)."""

    kind: Literal["inprocess", "kafka"] = "inprocess"
    kafka_bootstrap: list[str] = Field(default_factory=lambda: ["127.0.0.1:9092"], min_length=1,
                                       description="brokers, host:port")
    topic_prefix: str = Field("legato", pattern=r"^[A-Za-z0-9._-]{1,100}$")
    task_partitions: int = Field(8, gt=0, description="partitions of each task topic")
    timer_partitions: int = Field(4, gt=0, description="partitions of the timer topic (shard_id mod this)")
    replication_factor: int = Field(1, gt=0, description="of the topics `legato kafka setup` makes")
    producer_linger_ms: int = Field(2, ge=0, description="a producer batches messages this long")
    request_timeout_ms: int = Field(30_000, gt=0, description="a produce or admin request, client side")
    # Matching: which partitions of the task topics this node consumes. Empty (the default): the
    # matching nodes share them through the consumer group `{prefix}.matching` (docs/queues.md).
    matching_partitions: list[int] = Field(default_factory=list)
    matching_session_timeout_ms: int = Field(
        6_000, ge=1_000, le=300_000,
        description="a matching node that stops heartbeating keeps its partitions this long (group mode)")
    park_after_ms: int = Field(60_000, gt=0, description="a task nobody polls is re-published after this long")
    matching_max_buffered: int = Field(
        100_000, gt=0, description="tasks read and not yet done on a matching node; above it reading pauses")
    sticky_wait_ms: int = Field(200, ge=0, description="a workflow task waits this long for its previous worker")
    commit_interval_ms: int = Field(200, gt=0, description="consumers commit their offsets this often")
    # A timer due further ahead than this waits in the store's due-time timer rows and goes to the
    # timer topic when it comes this close (history/kafka_timers.py, "Far timers"): a new owner of
    # a shard re-reads about this much of the log, and holds about this much in memory, instead of
    # every timer up to the horizon below (a closed run's 72 h retention timer among them).
    timer_publish_lookahead_ms: int = Field(
        60_000, gt=0, description="timers due further ahead wait in the store until this close")
    # A timer committed to the outbox waits in memory up to this long (and until 1 s before it is
    # due at the latest) before it is published; if by then its run no longer expects it (a
    # workflow task's or an activity's timeout once the task completed), it is never published
    # (docs/queues.md, "Held timers"). A new owner of the shard re-publishes about this much.
    # Far timers are judged the same way when the scan reaches them; 0 turns both off.
    timer_publish_hold_ms: int = Field(
        10_000, ge=0, le=600_000,
        description="an outbox timer waits this long at most before it is published; 0: every timer published at once")
    timer_republish_horizon_ms: int = Field(
        3_600_000, gt=0, description="a timer due later than this is re-published forward (bounded re-reads)")
    statistics_interval_ms: int = Field(
        15_000, ge=0, description="each consumer reports its lag (legato_kafka_consumer_lag) this often; 0: never")

    @field_validator("kafka_bootstrap", mode="before")
    @classmethod
    def _split_brokers(cls, v: object) -> object:
        return [h.strip() for h in v.split(",") if h.strip()] if isinstance(v, str) else v

    @field_validator("matching_partitions", mode="before")
    @classmethod
    def _split_partitions(cls, v: object) -> object:
        return [int(p) for p in v.split(",") if p.strip()] if isinstance(v, str) else v


class ClusterConfig(_Strict):
    """Where each role of `legato server start --role ...` listens, and so where the other roles
    (in other processes) reach it: one address per role serves both purposes. With
    `zookeeper_hosts`, the processes find each other in ZooKeeper and history nodes share the
    shards (docs/cluster.md); without, one history process owns every shard and the others reach
    it at `history_address`."""

    frontend_address: str = Field("127.0.0.1:7233", pattern=_HOST_PORT, description="the public gRPC API")
    history_address: str = Field("127.0.0.1:7234", pattern=_HOST_PORT, description="history's internal gRPC API")
    matching_address: str = Field("127.0.0.1:7235", pattern=_HOST_PORT,
                                  description="matching's internal gRPC API")
    zookeeper_hosts: str = Field("", pattern=r"^$|^[^\s,]+(,[^\s,]+)*$",
                                 description="host:port[,host:port...]; empty: no ZooKeeper (static ownership)")
    zookeeper_root: str = Field("/legato/default", pattern=r"^(/[A-Za-z0-9._-]+)+$",
                                description="the cluster's path in ZooKeeper: one per cluster")
    # A node that stops answering ZooKeeper for this long has its shards moved to the others; it
    # stops writing them itself at the latest then (docs/cluster.md, "Losing ZooKeeper").
    zookeeper_session_timeout_ms: int = Field(5_000, ge=1_000, le=60_000)
    zookeeper_connect_timeout_ms: int = Field(15_000, gt=0, description="a process's first connection at start")
    # A call whose shard (or matching node) is moving is retried on the new owner for up to this
    # long before the caller sees Unavailable (a SIGKILLed node's shards move after its session expires).
    route_timeout_ms: int = Field(30_000, gt=0)
    # On losing a shard (reassigned, or a graceful stop), requests already running on it may
    # finish for up to this long before the shard is released to its new owner.
    shard_drain_timeout_ms: int = Field(5_000, ge=0)
    shard_acquire_concurrency: int = Field(32, gt=0, description="shards one node acquires at once")
    # On SIGTERM a node hands its shards over, waiting at most this long for the new assignment.
    graceful_stop_timeout_ms: int = Field(20_000, ge=0)
    # The roles bind their addresses above; other members reach them at this host instead, with
    # the same ports: set it when a role binds 0.0.0.0 (in Kubernetes: the pod's IP).
    advertise_host: str = Field("", pattern=r"^$|^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)$",
                                description="the host other members reach this process at (empty: each "
                                            "role's address as it is)")

    @property
    def zookeeper(self) -> bool:
        return bool(self.zookeeper_hosts)

    def advertised(self, address: str) -> str:
        """`address` ("host:port": a role's, or the metrics') as other members reach it: on
        `advertise_host` when that is set."""
        if not self.advertise_host or not address:
            return address
        return f"{self.advertise_host}:{address.rpartition(':')[2]}"


class GrpcConfig(_Strict):
    """How each gRPC server of this process (every role's) takes a burst of calls, and how the
    clients of this process are pushed back (README, "Bursts"). A call the server cannot take is
    refused before any work is done on it, so every Legato client retries it, with backoff,
    until its own deadline."""

    # Calls being served at once, long polls included; one more is refused with RESOURCE_EXHAUSTED
    # (reason ServerBusy). Each costs a few KB of memory while it waits.
    max_concurrent_calls: int = Field(20_000, gt=0, description="calls one server serves at once")
    # Calls received but not yet taken up by the server (gRPC's queue, outside Python). gRPC's own
    # default (1,000, then random drops up to 3,000) dropped bursts with CANCELLED; past this
    # limit gRPC still drops a call, which Legato clients then retry like a refused one.
    max_queued_calls: int = Field(100_000, gt=0, description="calls waiting to be taken up by one server")
    busy_retry_initial_ms: int = Field(50, gt=0, description="a refused call is first retried after about this long")
    busy_retry_max_ms: int = Field(2_000, gt=0, description="the longest wait between retries of a refused call")


class SecurityConfig(_Strict):
    """TLS and tokens for the gRPC APIs of this process (README, "TLS and tokens"): its servers
    (the public frontend API, history's and matching's internal ones) and its calls to the other
    services. Empty file names leave TLS (or tokens) off."""

    tls_cert_file: str = Field("", description="PEM certificate (chain) the servers present; with tls_key_file: TLS on")
    tls_key_file: str = Field("", description="PEM private key of tls_cert_file")
    tls_ca_file: str = Field("", description="PEM CA bundle that signs client certificates (tls_client_auth) and "
                                             "the other services' certificates (verified on calls to them)")
    tls_client_auth: bool = Field(False, description="require a client certificate signed by tls_ca_file (mTLS)")
    tls_server_name: str = Field("", description="the name the services expect in each other's certificates "
                                                 "(empty: the host of the address called)")
    internal_cert_file: str = Field("", description="client certificate for calls to the other services "
                                                    "(empty: tls_cert_file, which then needs clientAuth usage)")
    internal_key_file: str = Field("", description="private key of internal_cert_file (empty: tls_key_file)")
    token_secret_file: str = Field("", description="file holding the HS256 secret tokens are signed with "
                                                   "(`legato token secret`); set: every call needs a token")
    token_leeway_ms: int = Field(30_000, ge=0, description="clock difference tolerated on a token's times")
    internal_token_ttl_ms: int = Field(3_600_000, ge=60_000,
                                       description="life of the tokens the services make for calls to each other "
                                                   "(a new one at half of it)")
    token_cache_size: int = Field(10_000, gt=0, description="verified tokens remembered, so each is checked once")

    @model_validator(mode="after")
    def _pairs(self) -> SecurityConfig:
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            raise ValueError("tls_cert_file and tls_key_file go together: give both (TLS on) or neither")
        if bool(self.internal_cert_file) != bool(self.internal_key_file):
            raise ValueError("internal_cert_file and internal_key_file go together: give both or neither")
        if self.tls_client_auth and not (self.tls_cert_file and self.tls_ca_file):
            raise ValueError("tls_client_auth needs TLS (tls_cert_file, tls_key_file) and the CA that signs the "
                             "client certificates (tls_ca_file)")
        return self

    @property
    def tls(self) -> bool:
        return bool(self.tls_cert_file)


class MetricsConfig(_Strict):
    """The HTTP port of this process: Prometheus metrics on /metrics, Kubernetes probes on
    /healthz and /readyz (README, "Metrics"). Off by default, so that several processes on one
    machine need no ports of their own; the Helm chart turns it on."""

    address: str = Field("", pattern=r"^$|^" + _HOST_PORT[1:],
                         description="host:port of /metrics, /healthz and /readyz (empty: not served)")


class UiConfig(_Strict):
    """The HTTP port of a frontend (README, "HTTP API"): the JSON API beside gRPC, documented by
    the OpenAPI file it serves at /api/v1/openapi.json. It takes the frontend's limits, security
    and TLS (`limits`, `grpc.max_concurrent_calls`, `security`). Off by default here (`legato
    server start`); `legato server start-dev` opens it on 127.0.0.1:8233 unless told otherwise."""

    address: str = Field("", pattern=r"^$|^" + _HOST_PORT[1:],
                         description="host:port of the HTTP JSON API and the web UI (empty: not served)")
    entries: str = Field("", description="the registry (YAML file or folder) of the Lua code the web UI's stack "
                                         "view replays a running workflow against (empty: no stack view)")


class Config(_Strict):
    store: StoreConfig = Field(default_factory=StoreConfig)
    queues: QueuesConfig = Field(default_factory=QueuesConfig)
    limits: Limits = Field(default_factory=Limits)
    history: HistoryConfig = Field(default_factory=HistoryConfig)
    matching: MatchingConfig = Field(default_factory=MatchingConfig)
    frontend: FrontendConfig = Field(default_factory=FrontendConfig)
    worker: WorkerConfig = Field(default_factory=WorkerConfig)
    cluster: ClusterConfig = Field(default_factory=ClusterConfig)
    grpc: GrpcConfig = Field(default_factory=GrpcConfig)
    security: SecurityConfig = Field(default_factory=SecurityConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    ui: UiConfig = Field(default_factory=UiConfig)


class ConfigError(Exception):
    pass


def load_config(path: str | Path | None = None, env: dict[str, str] | None = None) -> Config:
    data: dict[str, Any] = {}
    if path:
        try:
            loaded = yaml.safe_load(Path(path).read_text()) or {}
        except OSError as e:
            raise ConfigError(f"cannot read config file {path}: {e.strerror}") from e
        except UnicodeDecodeError as e:
            raise ConfigError(f"config file {path} is not UTF-8 text (byte {e.start})") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"config file {path} is not valid YAML: {e}") from e
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {path}: expected a mapping at the top level")
        data = loaded
    for key, value in (env if env is not None else os.environ).items():
        if not key.startswith("LEGATO_") or "__" not in key:
            continue
        section, _, name = key[len("LEGATO_"):].lower().partition("__")
        data.setdefault(section, {})[name] = value
    try:
        return Config.model_validate(data)
    except ValidationError as e:
        where = f" in {path}" if path else ""
        lines = [f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors()]
        raise ConfigError(f"invalid configuration{where}: " + "; ".join(lines)) from e
