"""`legato cluster describe`: the members of a cluster and which history node owns each shard,
read from ZooKeeper (docs/cluster.md).

With `--output json` the answer is exactly
`{"members": [{"role", "address", "identity"}...], "shards": {"0": "<history address>"...},
"num_shards": N}`: a member entry per role a process serves, and for each shard the history
address holding its lock (null while nobody does, e.g. during a move).
"""

from __future__ import annotations

from typing import Any

import click

from legato.cli.common import CliError, override_section, quiet_library_logs, run_async
from legato.cli.output import ExitCode, print_json
from legato.config import ClusterConfig, load_config
from legato.membership import ClusterState, read_cluster
from legato.zk import Zk


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
    if output == "json":
        print_json(describe_json(state))
    else:
        click.echo(describe_text(state, f"{cfg.zookeeper_hosts}{cfg.zookeeper_root}"))
    return ExitCode.OK


def describe_json(state: ClusterState) -> dict[str, Any]:
    members = [{"role": role, "address": address, "identity": m.identity}
               for m in state.members for role, address in sorted(m.roles.items())]
    shards = {str(s): (state.shard_owners[s].get("address") if s in state.shard_owners else None)
              for s in range(state.num_shards)}
    return {"members": members, "shards": shards, "num_shards": state.num_shards}


def describe_text(state: ClusterState, where: str) -> str:
    lines = [f"cluster {where}: {state.num_shards} shards, {len(state.members)} member process(es)", ""]
    lines.append(f"{'ROLE':<10} {'ADDRESS':<24} {'SHARDS':>6}  IDENTITY")
    owned: dict[str, list[int]] = {}
    for s, data in state.shard_owners.items():
        owned.setdefault(str(data.get("identity", "")), []).append(s)
    for m in state.members:
        for role, address in sorted(m.roles.items()):
            count = str(len(owned.get(m.identity, []))) if role == "history" else "-"
            lines.append(f"{role:<10} {address:<24} {count:>6}  {m.identity}")
    lines.append("")
    for m in state.members:
        if "history" in m.roles:
            lines.append(f"{m.roles['history']} owns shards {_ranges(sorted(owned.get(m.identity, [])))}")
    unowned = [s for s in range(state.num_shards) if s not in state.shard_owners]
    if unowned:
        lines.append(f"not owned right now (moving, or no history node): {_ranges(unowned)}")
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
