"""StartWorkflow: a new run of a workflow id, under its id reuse and id conflict policies."""

from __future__ import annotations

from history.api.access import CONFLICT_RETRIES, RunAccess, current_row, update_of
from history.shard import CacheEntry, ShardContext, Update
from history.state import Mutation
from history.store.base import CurrentRunRow, CurrentRunWrite, RunConditionFailed
from legato.api import IdConflictPolicy, IdReusePolicy, StartWorkflowRequest, StartWorkflowResponse, WorkflowStatus
from legato.errors import AlreadyStarted, Unavailable
from legato.ids import new_run_id


async def start_workflow(runs: RunAccess, req: StartWorkflowRequest) -> StartWorkflowResponse:
    runs.engine.validate_start(req)
    ns, wf = req.namespace, req.workflow_id
    shard = runs.shard(ns, wf)
    for attempt in range(CONFLICT_RETRIES + 1):
        async with shard.lock(ns, wf):
            if attempt == 0:
                # Optimistic: a pointer not in the cache is assumed absent; the write's condition
                # ("no current run") checks it, and only if that fails do we read it (as Temporal does).
                cur = shard.current.get((ns, wf))
            else:
                cur = await shard.get_current(ns, wf)
            old: CacheEntry | None = None
            if cur is not None:
                if req.request_id and cur.start_request_id == req.request_id:
                    return StartWorkflowResponse(cur.run_id, started=False)
                if cur.status == WorkflowStatus.RUNNING.value:
                    if _uses_existing(req, cur):
                        await _use_existing(runs, shard, cur.run_id, req)
                        return StartWorkflowResponse(cur.run_id, started=False, existing=True)
                    old = await runs.load(shard, ns, wf, cur.run_id)
                else:
                    _check_reuse(runs, req, cur)
            try:
                run_id = await _write_new_run(runs, shard, req, cur, old)
            except RunConditionFailed:
                if attempt < CONFLICT_RETRIES:
                    continue
                raise
            return StartWorkflowResponse(run_id, started=True)
    raise Unavailable("unreachable")  # pragma: no cover


def _uses_existing(req: StartWorkflowRequest, cur: CurrentRunRow) -> bool:
    """With a run of the id open: whether the start joins it (use_existing), or refuses, or (False)
    terminates it (terminate_existing)."""
    policy = IdConflictPolicy(req.id_conflict_policy)
    if policy == IdConflictPolicy.USE_EXISTING and not req.execution_error_when_already_started:
        return True
    if policy == IdConflictPolicy.TERMINATE_EXISTING:
        return False
    because = ("execution_error_when_already_started is set" if policy == IdConflictPolicy.USE_EXISTING
               else "id_conflict_policy is fail")
    raise AlreadyStarted(f"workflow {req.workflow_id!r} is already running (run {cur.run_id}) in namespace "
                         f"{req.namespace!r} ({because})", run_id=cur.run_id)


def _check_reuse(runs: RunAccess, req: StartWorkflowRequest, cur: CurrentRunRow) -> None:
    why = runs.engine.reuse_refused(IdReusePolicy(req.id_reuse_policy), cur.status)
    if why:
        raise AlreadyStarted(f"workflow {req.workflow_id!r} already ran (run {cur.run_id}, {cur.status}); {why}",
                             run_id=cur.run_id)


async def _write_new_run(runs: RunAccess, shard: ShardContext, req: StartWorkflowRequest,
                         cur: CurrentRunRow | None, old: CacheEntry | None) -> str:
    """Write the new run (terminating `old`, the open run, in the same write); its run id."""
    ns, wf = req.namespace, req.workflow_id
    now = runs.clock()
    run_id = new_run_id()
    muts: list[Mutation] = []
    mo: Mutation | None = None
    if old is not None:
        mo = Mutation.of(old.state, now)
        runs.engine.terminate_running(
            mo, f"terminated by a new start of workflow {wf!r} (run {run_id}) with id_conflict_policy "
                "terminate_existing", req.identity)
        muts.append(mo)
    mn = runs.engine.new_run(req, run_id, now)
    muts.append(mn)
    current = CurrentRunWrite(current_row(mn.state), cur.run_id if cur is not None else None)
    try:
        await shard.commit(Update(muts, current))
    except BaseException:
        shard.current.pop((ns, wf))
        if old is not None:
            shard.evict(old.state.key)
        raise
    if old is not None and mo is not None:
        runs.after_commit(shard, old, mo)
    shard.runs.put(mn.state.key, CacheEntry(mn.state, list(mn.events), shard.event_budget))
    shard.current.put((ns, wf), current_row(mn.state))
    return run_id


async def _use_existing(runs: RunAccess, shard: ShardContext, run_id: str, req: StartWorkflowRequest) -> None:
    """Deliver a use_existing start's messages, parent and monitors to the running run (the
    caller holds the workflow's lock)."""
    if not (req.start_messages or req.parent is not None or req.monitors):
        return
    entry = await runs.load(shard, req.namespace, req.workflow_id, run_id)
    m = Mutation.of(entry.state, runs.clock())
    try:
        runs.engine.use_existing(m, req)
        if not m.empty:
            await shard.commit(update_of(m))
    except BaseException:
        if not m.empty:
            shard.evict(entry.state.key)
        raise
    if not m.empty:
        runs.after_commit(shard, entry, m)
