"""`legato cluster describe`: the members of a cluster and which history node owns each shard,
read from ZooKeeper (docs/cluster.md).

With `--output json` the answer is exactly
`{"members": [{"role", "address", "identity", "metrics_address", "health"}...],
"shards": {"0": "<history address>"...}, "num_shards": N}`: a member entry per role a process
serves, and for each shard the history address holding its lock (null while nobody does, e.g.
during a move). `health` is what the process's /readyz answered: "ready", "not ready: <why>",
"unreachable: <why>", or "" when it serves no metrics port.
"""

from __future__ import annotations

import asyncio
from typing import Any

import click

from legato.cli.common import CliError, override_section, quiet_library_logs, run_async
from legato.cli.output import ExitCode, print_json
from legato.config import ClusterConfig, load_config
from legato.membership import ClusterState, read_cluster
from legato.zk import Zk

HEALTH_TIMEOUT_S = 3.0  # a member's /readyz answer, at most


@click.group()
def cluster() -> None:
    """Inspect a cluster registered in ZooKeeper."""


@cluster.command()
@click.option("--zookeeper", "zookeeper_hosts", default=None, metavar="H:P[,H:P]",
              help="The cluster's ZooKeeper ensemble (default: cluster.zookeeper_hosts).")
@click.option("--root", "zookeeper_root", default=None, metavar="PATH",
              help="The cluster's path in ZooKeeper (default: cluster.zookeeper_root).")
@click.option("--output", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option("--config", "config_path", default=None, type=click.Path(dir_okay=False),
              help="YAML config; its cluster section gives the defaults.")
@run_async
async def describe(zookeeper_hosts: str | None, zookeeper_root: str | None, output: str,
                   config_path: str | None) -> int:
    """The members (role, address, identity) and the owner of every shard."""
    quiet_library_logs("kazoo")
    cfg = override_section(load_config(config_path).cluster, ClusterConfig,
                           (("zookeeper_hosts", zookeeper_hosts), ("zookeeper_root", zookeeper_root)))
    if not cfg.zookeeper:
        raise CliError("no ZooKeeper to read the cluster from: give --zookeeper HOST:PORT (or cluster.zookeeper_hosts)")
    zk = Zk(cfg)
    await zk.start()
    try:
        state = await zk.retrying(lambda: read_cluster(zk, cfg.zookeeper_root), "reading the cluster",
                                  zk.session_timeout_s * 2)
    finally:
        await zk.stop()
    health = await _health_of(state)
    if output == "json":
        print_json(describe_json(state, health))
    else:
        click.echo(describe_text(state, f"{cfg.zookeeper_hosts}{cfg.zookeeper_root}", health))
    return ExitCode.OK


async def _health_of(state: ClusterState) -> dict[str, str]:
    """identity -> what the member's /readyz says (for members that serve metrics)."""
    import aiohttp

    async def ask(session: aiohttp.ClientSession, address: str) -> str:
        try:
            async with session.get(f"http://{address}/readyz") as r:
                text = (await r.text()).strip()
        except (aiohttp.ClientError, TimeoutError, OSError) as e:
            return f"unreachable: {type(e).__name__}: {e}".rstrip(": ")
        return "ready" if r.status == 200 else "not ready: " + "; ".join(text.splitlines()[1:])

    asking = [m for m in state.members if m.metrics_address]
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=HEALTH_TIMEOUT_S)) as session:
        answers = await asyncio.gather(*(ask(session, m.metrics_address) for m in asking))
    return {m.identity: a for m, a in zip(asking, answers, strict=True)}


def describe_json(state: ClusterState, health: dict[str, str] | None = None) -> dict[str, Any]:
    health = health or {}
    members = [{"role": role, "address": address, "identity": m.identity, "metrics_address": m.metrics_address,
                "health": health.get(m.identity, "")}
               for m in state.members for role, address in sorted(m.roles.items())]
    shards = {str(s): (state.shard_owners[s].get("address") if s in state.shard_owners else None)
              for s in range(state.num_shards)}
    return {"members": members, "shards": shards, "num_shards": state.num_shards}


def describe_text(state: ClusterState, where: str, health: dict[str, str] | None = None) -> str:
    health = health or {}
    lines = [f"cluster {where}: {state.num_shards} shards, {len(state.members)} member process(es)", ""]
    lines.append(f"{'ROLE':<10} {'ADDRESS':<24} {'SHARDS':>6}  {'HEALTH':<10} IDENTITY")
    owned: dict[str, list[int]] = {}
    for s, data in state.shard_owners.items():
        owned.setdefault(str(data.get("identity", "")), []).append(s)
    for m in state.members:
        for role, address in sorted(m.roles.items()):
            count = str(len(owned.get(m.identity, []))) if role == "history" else "-"
            ready = health.get(m.identity, "-").split(":")[0]
            lines.append(f"{role:<10} {address:<24} {count:>6}  {ready:<10} {m.identity}")
    lines.append("")
    for m in state.members:
        if "history" in m.roles:
            lines.append(f"{m.roles['history']} owns shards {_ranges(sorted(owned.get(m.identity, [])))}")
    unowned = [s for s in range(state.num_shards) if s not in state.shard_owners]
    if unowned:
        lines.append(f"not owned right now (moving, or no history node): {_ranges(unowned)}")
    for m in state.members:
        answer = health.get(m.identity, "")
        if answer and answer != "ready":
            lines.append(f"{m.identity}: {answer}")
    return "\n".join(lines)


def _ranges(shards: list[int]) -> str:
    """[0, 1, 2, 5, 7, 8] -> "0-2, 5, 7-8"."""
    if not shards:
        return "none"
    out: list[str] = []
    start = prev = shards[0]
    for s in [*shards[1:], None]:
        if s is not None and s == prev + 1:
            prev = s
            continue
        out.append(str(start) if start == prev else f"{start}-{prev}")
        if s is not None:
            start = prev = s
    return ", ".join(out)
