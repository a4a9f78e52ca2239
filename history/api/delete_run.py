"""Retention: deleting a closed run (its retention timer fired, or the retention scan found it
past its retention)."""

from __future__ import annotations

import logging

from history.shard import ShardContext
from history.state import MutableState
from history.store.base import ExecutionStore
from legato import api, metrics
from legato.errors import Unavailable

log = logging.getLogger("legato.history")
_RUNS_DELETED = metrics.children(metrics.runs_deleted)

# A run's deletion waits this long for the run's transfer tasks still in flight (its close's
# visibility update among them); then its timer is retried later.
RETENTION_TRANSFER_WAIT_S = 10.0


async def delete_closed_run(store: ExecutionStore, visibility: api.VisibilityStore, shard: ShardContext, ns: str,
                            wf: str, run_id: str, start_time_ms: int) -> bool:
    """Delete a closed run under the workflow's lock (a start of the same workflow id waits, or
    went first and moved the current-run pointer): the run's visibility record, then its events,
    then its run row and the pointer if it still names the run. Each step is idempotent, so a
    timer fired twice, or again after a crash halfway, finishes the job. Whether a run row was
    there to delete (an open run is never deleted: False)."""
    # The run's transfer tasks (the close's visibility upsert among them) are done first: a
    # late upsert would bring the visibility record back.
    if not await shard.transfer.wait_run_done(run_id, RETENTION_TRANSFER_WAIT_S):
        raise Unavailable(f"deleting run {run_id} of workflow {wf!r} waits for its transfer tasks (its "
                          "visibility record among them)", reason="RetentionWaits")
    async with shard.lock(ns, wf):
        row = await store.get_run(shard.shard_id, ns, wf, run_id)
        shard.check()
        if row is not None:
            st = MutableState.decode(row.state)
            if st.running:  # a run never reopens; never delete an open run
                log.error("shard %d: retention for run %s of %r, which is open: not deleted",
                          shard.shard_id, run_id, wf)
                return False
            start_time_ms = st.start_time_ms
        await visibility.delete(ns, run_id, start_time_ms)
        await shard.delete_run(ns, wf, run_id)
    _RUNS_DELETED(ns).inc()
    return row is not None
