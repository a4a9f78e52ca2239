"""`legato kafka setup|describe`: the Kafka topics of a cluster (docs/queues.md).

Topics are made by `setup`, never by auto-creation: names, partition counts and replication come
from the `queues` section of the config, with `--bootstrap` and `--prefix` on top. A server with
`queues.kind: kafka` refuses to start until they exist.
"""

from __future__ import annotations

from typing import Any

import click

from legato.cli.common import override_section, quiet_library_logs, run_async
from legato.cli.output import ExitCode, print_json
from legato.config import QueuesConfig, load_config
from legato.kafka_admin import TopicState, bootstrap, setup_hint, wait_for_topics, wanted_partitions
from legato.kafka_client import LIB_LOGGER


def kafka_options(fn: Any) -> Any:
    fn = click.option("--config", "config_path", default=None, type=click.Path(dir_okay=False),
                      help="YAML config; its queues section (and LEGATO_QUEUES__* variables) give the defaults.")(fn)
    fn = click.option("--prefix", default=None, help="Topic name prefix (default: queues.topic_prefix).")(fn)
    return click.option("--bootstrap", default=None, metavar="H:P[,H:P]",
                        help="Kafka brokers (default: queues.kafka_bootstrap).")(fn)


def _queues_config(bootstrap_servers: str | None, prefix: str | None, config_path: str | None) -> QueuesConfig:
    quiet_library_logs(LIB_LOGGER)  # a line for each failed connection attempt
    return override_section(load_config(config_path).queues, QueuesConfig,
                            (("kafka_bootstrap", bootstrap_servers), ("topic_prefix", prefix)))


@click.group()
def kafka() -> None:
    """Create and inspect the Kafka topics of the task and timer queues."""


@kafka.command()
@kafka_options
@run_async
async def setup(bootstrap: str | None, prefix: str | None, config_path: str | None) -> int:
    """Create the topics (idempotent: topics that exist are left as they are)."""
    from legato.kafka import create_topics

    cfg = _queues_config(bootstrap, prefix, config_path)
    made = await create_topics(cfg)  # Unavailable / FailedPrecondition: one line, exit 3
    await wait_for_topics(cfg)  # "created" means a server started next finds them
    wanted = wanted_partitions(cfg)
    if made:
        parts = ", ".join(f"{n} ({wanted[n]} partitions)" for n in made)
        click.echo(f"created Kafka topics {parts} at {_where(cfg)} (replication factor {cfg.replication_factor})")
    else:
        click.echo(f"Kafka topics of prefix {cfg.topic_prefix} exist at {_where(cfg)}; nothing to do")
    return ExitCode.OK


@kafka.command()
@kafka_options
@click.option("--output", type=click.Choice(["text", "json"]), default="text", show_default=True)
@run_async
async def describe(bootstrap: str | None, prefix: str | None, config_path: str | None, output: str) -> int:
    """Show the topics, their partitions' end offsets and the offsets each consumer group committed
    (exit 3 when a topic is missing)."""
    from legato.kafka_admin import describe as describe_topics

    cfg = _queues_config(bootstrap, prefix, config_path)
    states = await describe_topics(cfg)
    if output == "json":
        print_json([_topic_json(s) for s in states])
    else:
        for line in _topic_lines(states, cfg):
            click.echo(line)
    return ExitCode.OK if all(s.partitions is not None for s in states) else ExitCode.ERROR


def _where(cfg: QueuesConfig) -> str:
    return bootstrap(cfg)


def _topic_json(s: TopicState) -> dict[str, Any]:
    parts = None if s.partitions is None else [
        {"partition": p.partition, "end_offset": p.end_offset, "committed": p.committed} for p in s.partitions]
    return {"topic": s.name, "exists": s.partitions is not None, "partitions": parts}


def _topic_lines(states: list[TopicState], cfg: QueuesConfig) -> list[str]:
    lines: list[str] = []
    for s in states:
        if s.partitions is None:
            lines.append(f"{s.name}: missing (create it with: {setup_hint(cfg)})")
            continue
        lines.append(f"{s.name}: {len(s.partitions)} partitions")
        for p in s.partitions:
            groups = "; ".join(f"{g} at {off} (lag {p.end_offset - off})" for g, off in sorted(p.committed.items()))
            lines.append(f"  [{p.partition}] end {p.end_offset}" + (f"; {groups}" if groups else "; no commits"))
    return lines
