"""Reading a workflow's history for the CLI: all of it, or following it as it grows (long poll)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from legato.api import ExecutionRef, GetHistoryRequest, WorkflowService
from legato.cli.common import CliError
from legato.cli.output import fmt_time, fmt_value
from legato.events import EventType, HistoryEvent

PAGE = 1000
FOLLOW_WAIT_MS = 30_000  # one long poll; the server answers at once when an event comes or the run closes


@dataclass(slots=True)
class FollowEnd:
    run_id: str
    last: HistoryEvent | None  # the run's last event (its close event)


async def follow_history(client: WorkflowService, ref: ExecutionRef, emit: Callable[[HistoryEvent], None],
                         first_event_id: int = 1, wait_ms: int = FOLLOW_WAIT_MS) -> FollowEnd:
    """Call `emit` for each event of the run from `first_event_id`, then for each new one as it is
    written (long polls of GetWorkflowHistory), until the run closes. The run is pinned after the
    first page, so a continue-as-new ends this run's stream (its last event names the new run)."""
    first = first_event_id
    last: HistoryEvent | None = None
    while True:
        page = await client.get_workflow_history(GetHistoryRequest(
            ref, first_event_id=first, page_size=PAGE, wait_new_event=True, timeout_ms=wait_ms))
        if not ref.run_id:
            ref = ExecutionRef(ref.workflow_id, page.run_id, ref.namespace)
        for e in page.events:
            emit(e)
            last = e
        if page.events:
            first = max(first, page.next_event_id)
        elif page.closed:
            return FollowEnd(ref.run_id, last)


def event_text(e: HistoryEvent) -> str:
    attrs = {k: v for k, v in e.attrs.items() if v not in (None, "", [], {}, 0) or k == "result"}
    return f"{e.event_id:>5}  {fmt_time(e.timestamp_ms)}  {e.event_type.value:<34} {fmt_value(attrs)}"


def continued_as_new_run(e: HistoryEvent | None) -> str | None:
    """The new run's id when `e` is a WorkflowExecutionContinuedAsNew event."""
    if e is None or e.event_type is not EventType.WorkflowExecutionContinuedAsNew:
        return None
    return str(e.attrs.get("new_execution_run_id") or "")


def load_history_file(path: str) -> list[HistoryEvent]:
    """A history saved with `legato workflow show --output json` (a JSON array of events), or with
    `--output jsonl` (an event per line)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise CliError(f"--history-file: cannot read {path}: {e.strerror or e}") from None
    try:
        stripped = text.lstrip()
        raw: Any = json.loads(text) if stripped.startswith("[") else [
            json.loads(line) for line in text.splitlines() if line.strip()]
        if not isinstance(raw, list):
            raise ValueError("expected a JSON array of events")
        events = [HistoryEvent.from_dict(d) for d in raw]
    except (ValueError, KeyError, TypeError) as e:
        raise CliError(f"--history-file {path} is not a history saved with 'legato workflow show --output json': "
                       f"{e}") from None
    if not events:
        raise CliError(f"--history-file {path} holds no events")
    return events
