"""Commands that run Legato itself: `server start-dev`, `worker`, `run`, `bench`."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from legato import DEFAULT_NAMESPACE
from legato.access_tokens import TokenVerifier, read_secret
from legato.api import ExecutionRef, StartWorkflowRequest
from legato.cli.common import CliError, override_section, parse_input, parse_timeout, run_async
from legato.cli.output import ExitCode, fmt_value
from legato.cli.security import client_security, client_security_options, server_security, server_security_options
from legato.cli.workflow_cmds import report_result, wait_result
from legato.config import Config, load_config
from legato.ids import new_request_id

if TYPE_CHECKING:
    from worker.entries import FunctionEntry, Registry

config_option = click.option("--config", "config_path", default=None, type=click.Path(dir_okay=False),
                             help="YAML file with limits and tunables (see README).")
metrics_option = click.option("--metrics-address", default=None, metavar="H:P",
                              help="Serve Prometheus metrics (/metrics) and health probes (/healthz, /readyz) "
                                   "over HTTP here (default: metrics.address; none: not served).")


OFF = ("off", "none", "")


def ui_address_option(default_help: str) -> Any:
    return click.option("--ui-address", default=None, metavar="H:P|off",
                        help="Serve the HTTP JSON API (/api/v1/, documented by /api/v1/openapi.json) here, with the "
                             f"frontend's limits, tokens and TLS; off: not served (default: {default_help}).")


ui_entries_option = click.option(
    "--ui-entries", default=None, metavar="PATH",
    help="The registry (YAML file or folder) of the workflows' Lua code, for the web UI's stack view, which "
         "replays a running workflow against it (default: ui.entries; none: no stack view).")


def with_ui_entries(config: Config, entries: str | None) -> None:
    if entries is not None:
        if not Path(entries).exists():
            raise CliError(f"--ui-entries {entries}: no such file or folder")
        config.ui.entries = entries


def with_ui_address(config: Config, address: str | None) -> None:
    """--ui-address over the config's `ui.address` ("off": not served; validated like the file)."""
    from legato.config import UiConfig

    value = "" if address is not None and address.strip().lower() in OFF else address
    config.ui = override_section(config.ui, UiConfig, (("address", value),), "--ui-address (ui.address): ")


def with_metrics_address(config: Config, address: str | None) -> None:
    """--metrics-address over the config's `metrics.address` (validated like the file)."""
    from legato.config import MetricsConfig

    config.metrics = override_section(config.metrics, MetricsConfig, (("address", address),),
                                      "--metrics-address (metrics.address): ")


def store_options(fn: Any) -> Any:
    """--store, --cassandra-hosts, --keyspace: override the `store` section of the config."""
    fn = click.option("--keyspace", default=None, help="Cassandra keyspace (default: store.cassandra_keyspace).")(fn)
    fn = click.option("--cassandra-hosts", default=None,
                      help="Cassandra contact points, host[:port][,host...] (default: store.cassandra_hosts).")(fn)
    return click.option("--store", "store_kind", type=click.Choice(["sqlite", "cassandra"]), default=None,
                        help="Where history keeps its state (default: store.kind, sqlite).")(fn)


def queue_options(fn: Any) -> Any:
    """--queues, --kafka-bootstrap: override the `queues` section of the config."""
    fn = click.option("--kafka-bootstrap", default=None, metavar="H:P[,H:P]",
                      help="Kafka brokers (default: queues.kafka_bootstrap).")(fn)
    return click.option("--queues", "queues_kind", type=click.Choice(["inprocess", "kafka"]), default=None,
                        help="How tasks travel from history to matching (default: queues.kind, inprocess); "
                             "kafka needs the topics of `legato kafka setup`.")(fn)


def load_server_config(config_path: str | None, store_kind: str | None, cassandra_hosts: str | None,
                       keyspace: str | None, queues_kind: str | None = None,
                       kafka_bootstrap: str | None = None) -> Config:
    """The config file and environment, then the store and queue flags on top (validated like the file)."""
    from legato.config import QueuesConfig, StoreConfig

    config = load_config(config_path)
    config.store = override_section(config.store, StoreConfig, (
        ("kind", store_kind), ("cassandra_hosts", cassandra_hosts), ("cassandra_keyspace", keyspace)))
    config.queues = override_section(config.queues, QueuesConfig, (
        ("kind", queues_kind), ("kafka_bootstrap", kafka_bootstrap)))
    return config


def _stop_on_signals() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


def _identity(role: str) -> str:
    return f"{role}-{os.getpid()}@{socket.gethostname()}"


@click.group()
def server() -> None:
    """Run the Legato server."""


@server.command("start-dev")
@click.option("--db", "db_path", default=None, help="SQLite file (default: in memory, gone on exit).")
@click.option("--port", default=7233, show_default=True, type=click.IntRange(0, 65535))
@click.option("--host", default="127.0.0.1", show_default=True)
@ui_address_option("ui.address, else HOST and PORT+1000: 127.0.0.1:8233, Temporal's UI port; "
                   "when that port is taken the server starts without it")
@ui_entries_option
@metrics_option
@store_options
@queue_options
@server_security_options
@config_option
@run_async
async def start_dev(db_path: str | None, port: int, host: str, ui_address: str | None, ui_entries: str | None,
                    metrics_address: str | None,
                    store_kind: str | None, cassandra_hosts: str | None, keyspace: str | None,
                    queues_kind: str | None, kafka_bootstrap: str | None, config_path: str | None) -> int:
    """History, matching and frontend in one process, gRPC on PORT and the web UI with the HTTP
    JSON API on --ui-address (PORT+1000 by default).

    State goes to a SQLite file (--db) or, with --store cassandra, to a Cassandra keyspace made
    by `legato schema setup --store cassandra`. Tasks travel in-process or, with --queues kafka,
    through the Kafka topics made by `legato kafka setup`."""
    from legato.server import serve_dev

    config = load_server_config(config_path, store_kind, cassandra_hosts, keyspace, queues_kind, kafka_bootstrap)
    config.security = server_security(config.security)
    with_metrics_address(config, metrics_address)
    with_ui_address(config, ui_address)
    with_ui_entries(config, ui_entries)
    # Neither the flag nor the config chose: Temporal's convention (the UI on the gRPC port + 1000),
    # given up with a warning when that port is taken (a second dev server on this machine).
    ui_default = ui_address is None and not config.ui.address
    if ui_default:
        ui_port = port + 1000 if port and port + 1000 <= 65535 else 0
        config.ui.address = f"[{host}]:{ui_port}" if ":" in host else f"{host}:{ui_port}"
    await serve_dev(config, db_path, host, port, _stop_on_signals(), ui_optional=ui_default)
    return ExitCode.OK


@server.command("start")
@click.option("--role", "roles_text", required=True, metavar="ROLES",
              help="Comma-separated subset of frontend,history,matching to run in this process.")
@click.option("--db", "db_path", default=None,
              help="SQLite file of history (history role) or the one it writes (a frontend reads visibility there).")
@click.option("--frontend-address", default=None, metavar="H:P", help="Default: cluster.frontend_address.")
@click.option("--history-address", default=None, metavar="H:P", help="Default: cluster.history_address.")
@click.option("--matching-address", default=None, metavar="H:P", help="Default: cluster.matching_address.")
@click.option("--zookeeper", "zookeeper_hosts", default=None, metavar="H:P[,H:P]",
              help="Join the cluster registered in this ZooKeeper ensemble (default: cluster.zookeeper_hosts; "
                   "none: this process works alone, history owning every shard).")
@click.option("--zookeeper-root", default=None, metavar="PATH", help="Default: cluster.zookeeper_root.")
@click.option("--advertise-host", default=None, metavar="HOST",
              help="The host other members reach this process at, with each role's port (default: "
                   "cluster.advertise_host; none: each role's address as given). For roles bound to 0.0.0.0.")
@ui_address_option("ui.address, else off; frontend role only")
@ui_entries_option
@metrics_option
@store_options
@queue_options
@server_security_options
@config_option
@run_async
async def start(roles_text: str, db_path: str | None, frontend_address: str | None, history_address: str | None,
                matching_address: str | None, zookeeper_hosts: str | None, zookeeper_root: str | None,
                advertise_host: str | None, ui_address: str | None, ui_entries: str | None, metrics_address: str | None,
                store_kind: str | None,
                cassandra_hosts: str | None, keyspace: str | None, queues_kind: str | None, kafka_bootstrap: str | None,
                config_path: str | None) -> int:
    """Run some of the services (ROLES) as one process of a cluster.

    Each role listens on its address of the `cluster` section (or the flag), which is also where
    the roles in other processes reach it; roles in this process call each other directly. Roles
    split over processes exchange tasks through Kafka: they need --queues kafka and the topics of
    `legato kafka setup`. With --zookeeper, any number of history, matching and frontend
    processes form one cluster: history nodes share the shards, frontends route to their owners
    (docs/cluster.md). SIGTERM hands this node's shards over before it exits."""
    from legato.config import ClusterConfig
    from legato.membership import new_identity
    from legato.roles import parse_roles
    from legato.server import serve_roles

    roles = parse_roles(roles_text)
    config = load_server_config(config_path, store_kind, cassandra_hosts, keyspace, queues_kind, kafka_bootstrap)
    config.security = server_security(config.security)
    config.cluster = override_section(config.cluster, ClusterConfig, (
        ("frontend_address", frontend_address), ("history_address", history_address),
        ("matching_address", matching_address), ("zookeeper_hosts", zookeeper_hosts),
        ("zookeeper_root", zookeeper_root), ("advertise_host", advertise_host)))
    with_metrics_address(config, metrics_address)
    with_ui_address(config, ui_address)
    with_ui_entries(config, ui_entries)
    if config.ui.address and "frontend" not in roles and ui_address not in (None, *OFF):
        raise CliError(f"--ui-address serves the frontend's HTTP API; --role {roles_text} has no frontend")
    await serve_roles(config, roles, db_path, new_identity("-".join(sorted(roles))), _stop_on_signals())
    return ExitCode.OK


def _load_registry(path: str) -> Registry:
    from worker.entries import load_registry

    return load_registry(path)


def _token_verifier(config: Config) -> TokenVerifier | None:
    """Verifies tokens with security.token_secret_file, when the worker is given it."""
    sec = config.security
    if not sec.token_secret_file:
        return None
    return TokenVerifier(read_secret(sec.token_secret_file), leeway_s=sec.token_leeway_ms / 1000,
                         cache_size=sec.token_cache_size)


@click.command()
@click.option("--entries", required=True, help="Registry YAML file, or a folder of them (read recursively).")
@click.option("--address", default="127.0.0.1:7233", show_default=True, envvar="LEGATO_ADDRESS",
              help="The server (frontend), or several as H1:P1,H2:P2: the next is used when one cannot be reached.")
@metrics_option
@client_security_options
@config_option
@run_async
async def worker(entries: str, address: str, metrics_address: str | None, config_path: str | None) -> int:
    """Run the workflows and activities of ENTRIES against a server.

    It first checks that the server lets it in (TLS, token, namespaces) for each namespace it
    polls, and stops with the reason if not."""
    from legato.cli.security import check_access, connect
    from legato.status_server import Readiness, start_status_server, stop_status_server
    from worker.processes.control_api import action_guard, service_actions
    from worker.worker import Worker

    config = load_config(config_path)
    with_metrics_address(config, metrics_address)
    registry = _load_registry(entries)
    stop = _stop_on_signals()
    async with connect(address, grpc_config=config.grpc) as client:
        await check_access(client, sorted({ns for ns, _ in registry.task_queues()}))
        w = Worker(client, registry, config, identity=_identity("worker"))
        readiness = Readiness()
        readiness.add("polling", w.unready)
        status = await start_status_server(config.metrics.address, readiness, {"/processes": w.process_listing},
                                           service_actions(w.supervisor), action_guard(_token_verifier(config)))
        await w.start()
        click.echo(f"legato: worker polling {address} ({entries})", err=True)
        try:
            await stop.wait()
        finally:
            await w.stop()
            await stop_status_server(status)
    return ExitCode.OK


def _workflow_target(registry: Registry, entry_id: str, entries: str) -> tuple[str, str, str]:
    """(workflow type, task queue, namespace) of the workflow entry `entry_id`."""
    from worker.entries import WorkerEntry, WorkflowEntry

    entry = registry.find(entry_id) or registry.workflow_for_type(entry_id)
    if not isinstance(entry, WorkflowEntry):
        known = ", ".join(sorted(e.id for e in registry.workflows())) or "none"
        what = f"is a {entry.kind} entry, not a workflow.lua entry" if entry else "is not in the registry"
        raise CliError(f"entry {entry_id!r} {what} ({entries}); workflows there: {known}")
    worker = registry.find(entry.worker) if entry.worker else None
    if not isinstance(worker, WorkerEntry):
        raise CliError(f"workflow {entry_id!r} ({entry.where}) is not bound to a temporal.worker entry: "
                       "set meta.temporal.workflow.worker to the id of one")
    return entry.workflow_type, worker.task_queue, registry.namespace_of_worker(worker.id)


@click.command()
@click.option("--entries", required=True, help="Registry YAML file, or a folder of them.")
@click.argument("entry_id")
@click.option("--input", "input_json", default=None, help="The workflow's argument, as JSON.")
@click.option("--db", "db_path", default=None, help="SQLite file (default: in memory).")
@click.option("--id", "workflow_id", default=None, help="Workflow id (default: a new uuid).")
@click.option("--timeout", default=None, help="Give up after this long (default: wait).")
@click.option("--output", type=click.Choice(["text", "json"]), default="json", show_default=True)
@store_options
@queue_options
@config_option
@run_async
async def run(entries: str, entry_id: str, input_json: str | None, db_path: str | None, workflow_id: str | None,
              timeout: str | None, output: str, store_kind: str | None, cassandra_hosts: str | None,
              keyspace: str | None, queues_kind: str | None, kafka_bootstrap: str | None,
              config_path: str | None) -> int:
    """Run one workflow in this process (engine and worker) and print its result as JSON.

    ENTRY_ID may also be a function.lua entry: it then runs as a non-durable caller with the
    `process` API live (its own @pid and mailbox; it can spawn, exec, send to and monitor
    workflows), and its return value is printed (exit 1 when it returns nil, err or raises).

    Exit 0 when it completes, 1 when it fails, 2 when its workflow task fails (a bug,
    non-determinism or a forbidden call) instead of waiting for a fix.
    """
    from legato.server import Engine
    from worker.entries import FunctionEntry
    from worker.worker import Worker

    config = load_server_config(config_path, store_kind, cassandra_hosts, keyspace, queues_kind, kafka_bootstrap)
    registry = _load_registry(entries)
    function = registry.find(entry_id)
    if isinstance(function, FunctionEntry):
        if workflow_id:
            raise CliError(f"--id: {entry_id} is a function entry, which runs as a caller with its own pid, "
                           "not as a workflow with an id")
        return await _run_caller(registry, function, parse_input(input_json), db_path, parse_timeout(timeout),
                                 output, config)
    workflow_type, task_queue, namespace = _workflow_target(registry, entry_id, entries)
    args = parse_input(input_json)
    wait_ms = parse_timeout(timeout)
    async with Engine(config, db_path) as engine:
        w = Worker(engine.frontend, registry, config, identity=_identity("run"))
        await w.start()
        try:
            wid = workflow_id or f"run-{new_request_id()}"
            await engine.frontend.start_workflow(StartWorkflowRequest(
                workflow_id=wid, workflow_type=workflow_type, task_queue=task_queue, input=args,
                namespace=namespace, request_id=new_request_id(), identity="legato-run"))
            resp = await wait_result(engine.frontend, ExecutionRef(wid, namespace=namespace), wait_ms,
                                     return_on_task_failure=True)
        finally:
            await w.stop()
    return report_result(resp, output, wid)


async def _run_caller(registry: Registry, entry: FunctionEntry, args: list[Any], db_path: str | None,
                      wait_ms: int | None, output: str, config: Config) -> int:
    """A function entry as a non-durable caller (worker/caller.py), with the engine and a worker for
    the workflows it starts in this process. Prints its return value as JSON (exit 0), or its error
    (`nil, err` or a raised error: exit 1)."""
    from legato.cli.output import print_json
    from legato.server import Engine
    from worker.caller import Caller
    from worker.worker import Worker

    namespace = registry.namespace_of_worker(entry.worker) if entry.worker else DEFAULT_NAMESPACE
    async with Engine(config, db_path) as engine:
        w = Worker(engine.frontend, registry, config, identity=_identity("run"))
        await w.start()
        try:
            caller = Caller(engine.frontend, entry, registry, config.limits, namespace=namespace,
                            watchdog_ms=config.worker.lua_watchdog_ms)
            try:
                outcome = await asyncio.wait_for(caller.run(args), None if wait_ms is None else wait_ms / 1000)
            except TimeoutError:
                click.echo(f"error: {entry.id} ({caller.pid}) is still running after --timeout", err=True)
                return ExitCode.WAIT_TIMEOUT
        finally:
            await w.stop()
    if outcome.failure is not None:
        click.echo(f"error: {entry.id} failed: {outcome.failure}", err=True)
        return ExitCode.WORKFLOW_FAILED
    if output == "json":
        print_json(outcome.value)
    else:
        click.echo(fmt_value(outcome.value))
    return ExitCode.OK


@click.group()
def bench() -> None:
    """Benchmarks (commands, not tests)."""


@bench.command()
@click.option("--workflows", "count", default=500, show_default=True, type=click.IntRange(1, 10_000_000))
@click.option("--processes", is_flag=True,
              help="Run `legato server start-dev` and `legato worker` as child processes and drive them over "
                   "gRPC (the set-up Temporal's dev server is measured in), instead of one process without gRPC.")
@click.option("--address", default=None,
              help="Drive the server already running at HOST:PORT (with a worker for the bench app, see "
                   "--entries-dir) instead of starting one.")
@click.option("--entries-dir", default=None, type=click.Path(file_okay=False),
              help="Write the bench app (registry YAML and Lua) into this folder and use it from there "
                   "(default: a temporary folder). With --address, run `legato worker --entries DIR` on it.")
@click.option("--db", "db_path", default=None, help="SQLite file (default: a temporary file).")
@click.option("--output", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option("--sleep", default=None,
              help="Each workflow sleeps this long (a durable timer, e.g. 1s) before its activity; the report "
                   "adds the timers' fire lag p50/p99.")
@store_options
@queue_options
@client_security_options
@config_option
@run_async
async def hello(count: int, processes: bool, address: str | None, entries_dir: str | None, db_path: str | None,
                output: str, sleep: str | None, store_kind: str | None, cassandra_hosts: str | None,
                keyspace: str | None, queues_kind: str | None, kafka_bootstrap: str | None,
                config_path: str | None) -> int:
    """N workflows that each call one activity (after a durable sleep, with --sleep), started at
    once; prints workflows/s and the p50/p99 start-to-result latency (and timer fire lag).

    By default the engine and the worker run in this process, without gRPC. With --processes the
    server and the worker are separate processes and every call goes over gRPC.
    """
    from legato.bench import BenchError, Load, run_hello, run_hello_processes, run_hello_remote, write_app
    from legato.cli.output import print_json
    from legato.durations import parse_duration_ms

    if processes and address:
        raise CliError("--processes starts its own server; --address drives one that is running: choose one")
    if sleep is not None:
        try:
            parse_duration_ms(sleep, "--sleep")
        except ValueError as e:
            raise CliError(str(e)) from None
    load = Load(count, sleep)
    if address and db_path:
        raise CliError("--db is the file of a server the bench starts; with --address the server has its own")
    config = load_server_config(config_path, store_kind, cassandra_hosts, keyspace, queues_kind, kafka_bootstrap)
    store_args = _server_args(store_kind, cassandra_hosts, keyspace, queues_kind, kafka_bootstrap)
    if address and store_args:
        raise CliError("--store/--cassandra-hosts/--keyspace/--queues/--kafka-bootstrap configure a server the bench "
                       "starts; with --address the server has its own")
    try:
        if address:
            if entries_dir:
                write_app(Path(entries_dir))
                click.echo(f"legato: bench app written to {entries_dir}; the worker for it: "
                           f"legato worker --entries {entries_dir} --address {address}", err=True)
            report = await run_hello_remote(address, load, client_security())
        elif processes:
            report = await run_hello_processes(load, db_path, config_path, entries_dir, store_args)
        else:
            report = await run_hello(config, load, db_path, entries_dir)
    except BenchError as e:
        raise CliError(str(e)) from None
    if output == "json":
        print_json(report)
    else:
        click.echo(report.text())
    return ExitCode.OK


@bench.command()
@click.option("--runs", default=2000, show_default=True, type=click.IntRange(1, 10_000_000))
@click.option("--output", type=click.Choice(["text", "json"]), default="text", show_default=True)
def cache(runs: int, output: str) -> int:
    """Worker memory per cached workflow run: N runs (an activity done, then waiting on a signal or a
    timer) cached by the worker's task path in this process; prints process memory (RSS) and Lua heap
    per run."""
    from legato.bench_cache import measure_cache
    from legato.cli.output import print_json

    report = measure_cache(runs)
    if output == "json":
        print_json(report)
    else:
        click.echo(report.text())
    return ExitCode.OK


@bench.command()
@click.option("--nodes", default=100, show_default=True, type=click.IntRange(1, 100_000))
@click.option("--shards", default=16_384, show_default=True, type=click.IntRange(1, 1_000_000))
@click.option("--output", type=click.Choice(["text", "json"]), default="text", show_default=True)
def assignment(nodes: int, shards: int, output: str) -> int:
    """Simulate the shard assignment: shards per node, and shards moved when a node joins or leaves."""
    from legato.bench_cluster import simulate_assignment
    from legato.cli.output import print_json

    report = simulate_assignment(nodes, shards)
    if output == "json":
        print_json(report)
    else:
        click.echo(report.text())
    return ExitCode.OK


def _cassandra_jvm_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """--pid and --pidfile: which process is the Cassandra node (the benches that read its CPU)."""
    f = click.option("--pidfile", type=click.Path(dir_okay=False), default=None,
                     help="The pidfile to read it from (default: .deploy/cassandra/cassandra.pid, or under "
                          "$LEGATO_DEPLOY_DIR).")(f)
    return click.option("--pid", type=click.IntRange(1), default=None,
                        help="The Cassandra JVM's process id (default: from deploy/cassandra/cassandra.sh's "
                             "pidfile).")(f)


@bench.command("cassandra-cost")
@click.option("--workflows", "count", default=2000, show_default=True, type=click.IntRange(1, 10_000_000))
@click.option("--warmup", default=1000, show_default=True, type=click.IntRange(0, 10_000_000),
              help="Workflows run first and not measured (the JVM compiles its hot paths meanwhile).")
@click.option("--cassandra-hosts", default=None, help="Contact points (default: store.cassandra_hosts).")
@click.option("--keyspace", default="legato_cost", show_default=True,
              help="The bench's own keyspace: made if missing (replication factor 1) and EMPTIED first.")
@_cassandra_jvm_options
@click.option("--output", type=click.Choice(["text", "json"]), default="text", show_default=True)
@config_option
@run_async
async def cassandra_cost(count: int, warmup: int, cassandra_hosts: str | None, keyspace: str, pid: int | None,
                         pidfile: str | None, output: str, config_path: str | None) -> int:
    """Cassandra CPU per `bench hello` workflow and what it is spent on: the JVM's CPU time over N
    workflows (engine and worker in this process), the requests sent per workflow by kind, and
    each kind's CPU per request, measured by replaying a sample of them against the same node.
    The keyspace is the bench's own: it is emptied before the run."""
    from legato.bench_cassandra import default_pidfile, jvm_process, run_cost

    config = load_server_config(config_path, "cassandra", cassandra_hosts, keyspace, None, None)

    async def cost() -> Any:
        proc = jvm_process(pid, Path(pidfile) if pidfile else default_pidfile())
        return await run_cost(config, count, warmup, proc)

    return await _bench_report(cost(), output)


@bench.command("cassandra-profile")
@click.option("--seconds", default=60.0, show_default=True, type=click.FloatRange(1, 3600),
              help="How long to record the node.")
@_cassandra_jvm_options
@click.option("--jfr", "jfr_path", type=click.Path(dir_okay=False), default=None,
              help="Keep the Java Flight Recorder recording here (for `jfr print` or JDK Mission Control).")
@click.option("--output", type=click.Choice(["text", "json"]), default="text", show_default=True)
@run_async
async def cassandra_profile(seconds: float, pid: int | None, pidfile: str | None, jfr_path: str | None,
                            output: str) -> int:
    """What the Cassandra node's CPU is spent on while something runs against it (a `legato load`
    run, a cluster, a bench): records the JVM with Java Flight Recorder for --seconds and splits
    its CPU by what each sample's stack shows (Paxos rounds of the shard writes, SAI indexes,
    batches, reads, flushes, compaction, commit log, network), with its threads' CPU by name.

    Starting the recording sets the node's JIT compiler recompiling for a while (half a core over
    a 120 s window on a warm node): compare the shares with the JIT left out, not the total."""
    from legato.bench_cassandra import default_pidfile, jvm_process
    from legato.cassandra_profile import profile_node

    async def profile() -> Any:
        proc = jvm_process(pid, Path(pidfile) if pidfile else default_pidfile())
        return await profile_node(proc, seconds, Path(jfr_path) if jfr_path else None)

    return await _bench_report(profile(), output)


async def _bench_report(run: Awaitable[Any], output: str) -> int:
    """Print what a bench returns (its `text()`, or `to_json()` as JSON); a BenchError is one line."""
    from legato.bench import BenchError
    from legato.cli.output import print_json

    try:
        report = await run
    except BenchError as e:
        raise CliError(str(e)) from None
    if output == "json":
        print_json(report.to_json())
    else:
        click.echo(report.text())
    return ExitCode.OK


@bench.command("cluster")
@click.option("--zookeeper", default="127.0.0.1:2181", show_default=True, metavar="H:P[,H:P]")
@click.option("--cassandra-hosts", default="127.0.0.1", show_default=True)
@click.option("--keyspace", default="legato_bench", show_default=True)
@click.option("--kafka-bootstrap", default="127.0.0.1:9092", show_default=True)
@click.option("--shards", "num_shards", default=16, show_default=True, type=click.IntRange(1, 100_000),
              help="history.num_shards (fixed per keyspace: a keyspace used before keeps its number).")
@click.option("--workflows", default=500, show_default=True, type=click.IntRange(1, 1_000_000),
              help="hello workflows per throughput run.")
@click.option("--handoffs", default=3, show_default=True, type=click.IntRange(0, 100),
              help="SIGKILLs and graceful stops of a history node to time.")
@click.option("--output", type=click.Choice(["text", "json"]), default="text", show_default=True)
@run_async
async def cluster_bench(zookeeper: str, cassandra_hosts: str, keyspace: str, kafka_bootstrap: str, num_shards: int,
                        workflows: int, handoffs: int, output: str) -> int:
    """Start a cluster on this machine (on running ZooKeeper, Cassandra and Kafka) and report
    bench hello throughput with 1, 2 and 3 history nodes, and shard handoff times after a SIGKILL
    and after a graceful stop (p50/p99)."""
    from legato.bench_cluster import ClusterSetup, run_cluster_bench

    setup = ClusterSetup(zookeeper, cassandra_hosts, keyspace, kafka_bootstrap, num_shards)
    return await _bench_report(run_cluster_bench(setup, workflows, handoffs), output)


def _server_args(store_kind: str | None, cassandra_hosts: str | None, keyspace: str | None, queues_kind: str | None,
                 kafka_bootstrap: str | None) -> list[str]:
    """The store and queue flags given, to pass on to a server the bench starts."""
    pairs = (("--store", store_kind), ("--cassandra-hosts", cassandra_hosts), ("--keyspace", keyspace),
             ("--queues", queues_kind), ("--kafka-bootstrap", kafka_bootstrap))
    return [a for flag, value in pairs if value for a in (flag, value)]


__all__ = ["bench", "run", "server", "worker"]
