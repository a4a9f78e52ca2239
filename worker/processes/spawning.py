"""Which spawns go to a process host, and what workflows may not spawn (yet)."""

from __future__ import annotations

from typing import Any

from worker.entries import Registry


def is_process_host(registry: Registry, host: Any) -> bool:
    from worker.processes.kinds import HostEntry
    return isinstance(host, str) and isinstance(registry.find(host), HostEntry)


def workflow_spawn_refusal(registry: Registry, host: Any, linked: bool) -> str | None:
    """A workflow's spawn that Legato does not do: a message saying so (None: go ahead)."""
    if is_process_host(registry, host):
        return (f"host {host!r} is a process.host: spawning a non-durable process from a workflow is not "
                "supported yet (spawn it from a caller, a process or a process.service, and send its pid to the "
                "workflow)")
    if linked:
        return ("spawn_linked from a workflow is not supported yet: spawn the child, then process.link(pid) "
                "(or spawn_monitored to get its EXIT)")
    return None
