"""Processes a workflow spawned, and their parent close policy (docs/processes.md, "Processes on
a process.host").

A workflow's spawn of a process (a process.lua entry on a process.host) is a recorded signal
(`@legato.spawn`) to the host's spawn mailbox; the pid is the workflow's choice. Like a child
workflow, the process has a parent close policy, `temporal.workflow.parent_close_policy` of the
spawner (`terminate`, the default; `request_cancel`; `abandon`). The run keeps the pids it spawned
and has not heard the end of (`MutableState.processes`): a spawn adds one; the process's
`@legato.spawned` with an error (refused), its `@legato.exit`, or an undelivered spawn removes it.
When the run closes (any way, continue-as-new included) the closing write carries one transfer
task that terminates or cancels the ones left (history/process_tasks.py): decided from the
recorded history, carried out once per close (a replay of the workflow's code issues nothing).

A spawn the host carries out only after the run closed (or continued as new) is covered from
the other side: the spawn carries the run's id (`run`), the host sends it back with the
`@legato.spawned` signal, and a run that is not the spawning one refuses that signal; the host
then applies the policy itself (worker/processes/host.py).
"""

from __future__ import annotations

from typing import Any

from history.state import MutableState
from legato.api import ParentClosePolicy, SignalWorkflowRequest
from legato.errors import NotFound
from legato.process_control import CONTROL_PREFIX, EXIT, HOST_PID_PREFIX, SPAWN, SPAWNED

POLICIES = tuple(p.value for p in ParentClosePolicy)


class BadSpawn(ValueError):
    """A spawn command whose fields are wrong (the engine fails the workflow task with it)."""


def is_spawn(a: dict[str, Any]) -> bool:
    """A SignalExternalWorkflowExecution that is a workflow's spawn of a process."""
    return a.get("signal_name") == SPAWN and str(a.get("workflow_id", "")).startswith(HOST_PID_PREFIX)


def check_spawn(st: MutableState, a: dict[str, Any], where: str) -> None:
    """Check a spawn's fields; stamp it with the spawning run (sent back in SPAWNED) and its policy."""
    data = a.get("input")
    if not isinstance(data, dict):
        raise BadSpawn(f"{where}: the spawn of a process must carry a mapping, got {type(data).__name__}")
    pid = data.get("pid")
    if not isinstance(pid, str) or not pid.startswith("@") or len(pid) < 2:
        raise BadSpawn(f"{where}: the spawn's pid must be a string starting with '@', got {pid!r}")
    policy = data.get("parent_close_policy") or ParentClosePolicy.TERMINATE.value
    if policy not in POLICIES:
        raise BadSpawn(f"{where}: unknown parent_close_policy {policy!r} for process {pid} (use one of "
                       f"{', '.join(POLICIES)})")
    a["input"] = {**data, "parent_close_policy": policy, "run": st.run_id}


def spawned(st: MutableState, init: int, a: dict[str, Any]) -> None:
    """The spawn was recorded as event `init`: the run looks after this process until it hears its
    end. Not when the policy is to abandon it (nothing to do at the close), nor when it was spawned
    linked: a link decides, as in Wippy (an abnormal close takes the process down with LINK_DOWN,
    a normal one sends it an EXIT), and links move to the run that continues this one."""
    data = a["input"]
    if data["parent_close_policy"] != ParentClosePolicy.ABANDON.value and not data.get("link"):
        st.processes[data["pid"]] = [init, data["parent_close_policy"]]


def spawn_undelivered(st: MutableState, init: int) -> None:
    """The spawn recorded as event `init` never reached a host: no process to look after."""
    for pid in [p for p, (i, _) in st.processes.items() if i == init]:
        del st.processes[pid]


def on_signal(st: MutableState, req: SignalWorkflowRequest) -> None:
    """A signal about to be recorded: a process's end (or refusal) ends the run's watch of it; a
    SPAWNED meant for another run (the one that spawned it closed or continued as new) is refused
    with NotFound, which tells the host to apply the parent close policy itself."""
    if not req.signal_name.startswith(CONTROL_PREFIX) or (not st.processes and req.signal_name != SPAWNED):
        return
    data = req.input if isinstance(req.input, dict) else {}
    if req.signal_name == SPAWNED:
        run = data.get("run")
        if isinstance(run, str) and run and run != st.run_id:
            raise NotFound(f"process {req.sender} was spawned by run {run} of workflow {st.workflow_id}, which has "
                           f"closed (run {st.run_id} is current)", reason="WorkflowClosed")
        if data.get("error") is not None:
            st.processes.pop(req.sender, None)
    elif req.signal_name == EXIT:
        st.processes.pop(req.sender, None)


def close_actions(st: MutableState) -> list[dict[str, str]]:
    """The run closes: what to do to the processes it spawned that may still run ({pid, policy})."""
    acts = [{"pid": pid, "policy": policy} for pid, (_, policy) in sorted(st.processes.items())]
    st.processes.clear()
    return acts
