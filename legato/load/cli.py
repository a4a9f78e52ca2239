"""`legato load SCENARIO`: the click group and its options."""

from __future__ import annotations

import asyncio
import functools
import importlib.util
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from legato.cli.common import CliError, run_main
from legato.cli.output import ExitCode, print_json
from legato.cli.security import client_security, client_security_options
from legato.load.scenarios import CHILD_WORK, TEST_CHILD_WORK, LoadError, Params, check_params, new_run_id

F = Callable[..., Any]


def _duration_s(text: str | None, what: str) -> float | None:
    from legato.durations import parse_duration_ms

    if text is None:
        return None
    try:
        return parse_duration_ms(text, what) / 1000
    except ValueError as e:
        raise CliError(str(e)) from None


def common_options(fn: F) -> F:
    opts = [
        click.option("--embedded", "mode", flag_value="embedded", default=True,
                     help="Engine and worker in this process (default), on --db or a temporary SQLite file."),
        click.option("--processes", "mode", flag_value="processes",
                     help="A dev server (on --db or a temporary SQLite file) and a worker as child processes, "
                          "driven over gRPC."),
        click.option("--address", default=None, metavar="HOST:PORT",
                     help="A running server or cluster, with a worker for the load app started by you "
                          "(see --entries-dir)."),
        click.option("--entries-dir", default=None, type=click.Path(file_okay=False),
                     help="Write the load app here (default: a temporary folder); with --address, run "
                          "`legato worker --entries DIR --address HOST:PORT` on it."),
        click.option("--db", "db_path", default=None, help="SQLite file (embedded or --processes; needed to resume)."),
        click.option("--config", "config_path", default=None, type=click.Path(dir_okay=False),
                     help="YAML file with limits and tunables (the limits are checked against it)."),
        click.option("--output", type=click.Choice(["text", "json"]), default="text", show_default=True),
        click.option("--report", "report_path", default=None, help="Write the JSON report here."),
        click.option("--plot", "plot_path", default=None, help="Write a PNG plot here."),
        click.option("--rate", type=click.FloatRange(min=0, min_open=True), default=None,
                     help="Workflows started per second."),
        click.option("--concurrency", type=click.IntRange(1, 1_000_000), default=None,
                     help="Workflows in flight at once (children: parents at once, default 4; others: default 50)."),
        click.option("--duration", default=None, help="Stop starting work after this long (e.g. 30s, 10m)."),
        click.option("--total", type=click.IntRange(1, 1_000_000_000), default=None,
                     help="Workflows to run (children: child workflows)."),
        click.option("--resume", "resume_id", default=None, metavar="ROOT_ID",
                     help="Continue a stopped run (its root workflow id / run id, as printed when it stopped)."),
        click.option("--interval", "interval", default="1s", show_default=True, help="Sampling interval."),
        click.option("--stop-after", type=int, default=None, hidden=True,
                     help="(tests) stop as a signal would once this many workflows closed."),
        client_security_options,
    ]
    for opt in reversed(opts):
        fn = opt(fn)
    return fn


# What `legato load` needs beyond the server's dependencies: pyproject's `load` extra.
LOAD_EXTRA = ("psutil", "matplotlib")


@click.group()
def load() -> None:
    """Load generator: scenarios that run many workflows and report throughput, latency, memory
    and store size (`--report` JSON, `--plot` PNG)."""
    missing = [m for m in LOAD_EXTRA if importlib.util.find_spec(m) is None]
    if missing:
        raise CliError(f"legato load needs {', '.join(missing)}, which this installation lacks: "
                       "pip install 'legato[load]' (the server and the worker do not need them)")


def _command(fn: F) -> F:
    @functools.wraps(fn)
    def wrapper(**kw: Any) -> int:
        params = fn(**kw)
        return _run(params, kw)
    return wrapper


@load.command()
@click.option("--fanout", default=1000, show_default=True, type=click.IntRange(1, 100_000_000),
              help="Children per parent.")
@click.option("--window", default=100, show_default=True, type=click.IntRange(1, 100_000_000),
              help="Open children per parent at most (at most limits.max_pending_children).")
@click.option("--per-run", default=500, show_default=True, type=click.IntRange(1, 100_000_000),
              help="Children (parents, for the root) per run before continue-as-new.")
@click.option("--child-work", default="activity", show_default=True,
              help=f"What each child does: {', '.join(CHILD_WORK)}.")
@click.option("--sleep", default="1s", show_default=True, help="The timer of --child-work timer.")
@common_options
@_command
def children(fanout: int, window: int, per_run: int, child_work: str, sleep: str, **kw: Any) -> Params:
    """One root fans out to parents of --fanout children each (--total children in all)."""
    if child_work not in CHILD_WORK + TEST_CHILD_WORK:
        raise CliError(f"--child-work {child_work!r}: expected one of {', '.join(CHILD_WORK)}")
    _duration_s(sleep, "--sleep")
    return Params("children", fanout=fanout, window=window, per_run=per_run, child_work=child_work, sleep=sleep)


@load.command()
@click.option("--sleep", default="1s", show_default=True, help="Each workflow's timer.")
@common_options
@_command
def mix(sleep: str, **kw: Any) -> Params:
    """Workflows that each do activities, a timer, a signal round trip, a child and a continue-as-new."""
    _duration_s(sleep, "--sleep")
    return Params("mix", sleep=sleep)


@load.command()
@click.option("--timers", "count", default=100, show_default=True, type=click.IntRange(1, 1_000_000),
              help="Timers per workflow, all pending at once.")
@click.option("--max-timer", default="1s", show_default=True, help="Durations are drawn from 1 ms to this.")
@click.option("--seed", default=0, show_default=True, type=int)
@common_options
@_command
def timers(count: int, max_timer: str, seed: int, **kw: Any) -> Params:
    """Workflows with many timers each (short random durations)."""
    return Params("timers", timers=count, timer_max_ms=int((_duration_s(max_timer, "--max-timer") or 1) * 1000),
                  seed=seed)


@load.command()
@click.option("--sleep", default="24h", show_default=True, help="How long each workflow sleeps unless woken.")
@click.option("--hold", default="5s", show_default=True, help="How long to keep them all open (sampled) before "
              "waking them.")
@click.option("--leave-open", is_flag=True, help="Do not wake them: they stay open (e.g. to bench alongside).")
@common_options
@_command
def idle(sleep: str, hold: str, leave_open: bool, **kw: Any) -> Params:
    """N workflows that wait for a signal (or a long sleep): memory and throughput with many open."""
    _duration_s(sleep, "--sleep")
    return Params("idle", idle_sleep=sleep, hold_s=_duration_s(hold, "--hold") or 0.0, leave_open=leave_open)


def _run(p: Params, kw: dict[str, Any]) -> int:
    from legato.config import load_config
    from legato.load import driver

    mode = "address" if kw["address"] else kw["mode"]
    if kw["address"] and kw["mode"] == "processes":
        raise CliError("--processes starts its own server; --address drives one that is running: choose one")
    if mode == "address" and kw["db_path"]:
        raise CliError("--db is the file of a server the load starts; with --address the server has its own")
    if kw["resume_id"] and mode != "address" and not kw["db_path"]:
        raise CliError("--resume needs --db PATH, the SQLite file of the run to continue (without --db a run keeps "
                       "its data in a temporary file, gone when it stops)")
    p.total, p.rate, p.concurrency = kw["total"], kw["rate"], kw["concurrency"]
    p.duration_s = _duration_s(kw["duration"], "--duration")
    interval = _duration_s(kw["interval"], "--interval") or 1.0
    config = load_config(kw["config_path"])
    if not kw["resume_id"]:
        try:
            check_params(p, config.limits)  # up front: what the engine would refuse later
        except LoadError as e:
            raise CliError(str(e)) from None
    where = driver.Where(mode, config, kw["config_path"], kw["db_path"], kw["entries_dir"], kw["address"],
                         client_security() if mode == "address" else None)
    if mode == "address" and kw["entries_dir"]:
        from legato.load.app import write_app

        write_app(Path(kw["entries_dir"]))
        click.echo(f"legato: load app written to {kw['entries_dir']}; the worker for it: "
                   f"legato worker --entries {kw['entries_dir']} --address {kw['address']}", err=True)
    elif mode == "address":
        click.echo("legato: the server needs a worker for the load app: write it with --entries-dir DIR and run "
                   f"legato worker --entries DIR --address {kw['address']}", err=True)
    try:
        report = run_main(_main(p, kw, where, interval))
    except LoadError as e:
        raise CliError(str(e)) from None
    except asyncio.CancelledError:  # a second signal
        raise CliError("stopped at once (a second signal): no report written; the workflows are durable, "
                       "--resume continues them", 130) from None
    if kw["report_path"]:
        report.write_json(kw["report_path"])
    if kw["plot_path"]:
        from legato.load.report import write_plot

        write_plot(report, kw["plot_path"])
    if kw["output"] == "json":
        print_json(report)
    else:
        click.echo(report.text())
    if report.failed:
        return ExitCode.WORKFLOW_FAILED
    if report.stopped == "signal":
        return 130
    return ExitCode.OK


def _resume_command(p: Params, kw: dict[str, Any], mode: str) -> str:
    if mode != "address" and not kw["db_path"]:
        return ""
    args = ["legato", "load", p.scenario, "--resume", p.run_id]
    if mode == "processes":
        args.append("--processes")
    for flag, key in (("--address", "address"), ("--db", "db_path"), ("--config", "config_path"),
                      ("--report", "report_path"), ("--plot", "plot_path"), ("--entries-dir", "entries_dir")):
        if kw.get(key):
            args += [flag, str(kw[key])]
    return shlex.join(args)


async def _main(p: Params, kw: dict[str, Any], where: Any, interval: float) -> Any:
    from legato.load import driver
    from legato.load.progress import ProcessWatch
    watch = ProcessWatch()
    resume_id = kw["resume_id"]
    state_file: Path | None = None
    next_index = 0
    async with driver.open_target(where, watch) as target:
        if resume_id:
            if p.scenario == "children":
                saved = await driver.root_params(target.service, resume_id)
                saved.duration_s = p.duration_s  # this invocation's
                p = saved
            else:
                state_file = driver.state_path(resume_id, kw["db_path"], kw["report_path"])
                state = driver.read_state(state_file)
                saved = Params.from_dict(state["params"])
                saved.duration_s = p.duration_s
                saved.rate = p.rate or saved.rate
                saved.concurrency = p.concurrency or saved.concurrency
                p = saved
                next_index = int(state.get("next_index", 0))
        else:
            p.run_id = new_run_id(p.scenario)
            if p.scenario != "children" and (where.mode == "address" or kw["db_path"]):  # resumable
                state_file = driver.state_path(p.run_id, kw["db_path"], kw["report_path"])
        runner = driver.Runner(target, p, resume=bool(resume_id), interval_s=interval,
                               progress=kw["output"] != "json", watch=watch, state_file=state_file,
                               resume_command=_resume_command(p, kw, where.mode), stop_after=kw["stop_after"])
        runner.next_index = next_index
        main = asyncio.current_task()
        assert main is not None
        driver.install_signal_handlers(runner, main)
        report = await runner.run()
        if not report.finished and not report.resume_command:
            report.notes.append("not resumable: this run kept its data in a temporary file (give --db PATH to be "
                                "able to resume)")
        return report
