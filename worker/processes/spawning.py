"""Which spawns go to a process host; a workflow's spawn of a process; what workflows may not spawn."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from worker.entries import Registry


@dataclass(slots=True)
class ProcessSpawn:
    """The payload of a workflow's spawn of a process, a recorded side effect: a
    SignalExternalWorkflowExecution to the host's mailbox (`control.SPAWN`), whose arguments
    (`packed`, Lua) are converted when the command is built. The pid is chosen by the workflow,
    deterministically (`workflow_process_pid`), so replay gives the same one."""

    packed: Any
    fields: dict[str, Any] = field(default_factory=dict)


def workflow_process_pid(run_seed: int, seq: int) -> str:
    """From the run's recorded random seed (WorkflowExecutionStarted.random_seed): the same in a
    replay without the run's ids (`legato workflow replay`), different for every run."""
    digest = hashlib.sha256(f"{run_seed}/{seq}".encode()).hexdigest()
    return "@" + digest[:32]


def is_process_host(registry: Registry, host: Any) -> bool:
    from worker.processes.kinds import HostEntry
    return isinstance(host, str) and isinstance(registry.find(host), HostEntry)


def is_process_entry(entry: Any) -> bool:
    from worker.processes.kinds import ProcessEntry
    return isinstance(entry, ProcessEntry)


def process_without_host(registry: Registry, entry_id: Any, host: Any) -> str | None:
    """A spawn of a process.lua entry whose host is not a process.host: why it cannot run."""
    if not isinstance(entry_id, str) or not is_process_entry(registry.find(entry_id)):
        return None
    found = registry.find(host) if isinstance(host, str) else None
    what = "no host" if host is None else (f"host {host!r}, which is not in the registry" if found is None
                                           else f"host {host!r}, a {found.kind} entry")
    return (f"{entry_id} is a process.lua entry: it runs on a process.host, but the spawn names {what} "
            "(name a process.host entry)")


def workflow_spawn_refusal(registry: Registry, host: Any, linked: bool) -> str | None:
    """A workflow's spawn of a workflow that Legato does not do: a message saying so (None: go ahead)."""
    if linked:
        return ("spawn_linked from a workflow is not supported yet: spawn the child, then process.link(pid) "
                "(or spawn_monitored to get its EXIT)")
    return None
