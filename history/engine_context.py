"""What the command handlers (history/processes.py, history/runs.py) use of the engine that owns
them: a Protocol, so that they depend on this and not on history/engine.py (which imports them).
`history.engine.Engine` is the one implementation."""

from __future__ import annotations

from typing import Any, Protocol

from history.state import Mutation
from legato.api import StartWorkflowRequest
from legato.config import Config
from legato.events import EventType


class EngineContext(Protocol):
    config: Config

    def payload(self, value: Any, what: str) -> None:
        """Refuse a payload over the configured size or depth, or not representable as JSON."""

    def validate_start(self, req: StartWorkflowRequest, where: str = "start workflow") -> None:
        """Refuse a start request the frontend would refuse."""

    def add_external(self, m: Mutation, events: list[tuple[EventType, dict[str, Any]]]) -> None:
        """Write external events to the run and schedule a workflow task (or buffer them)."""

    def visibility(self, m: Mutation) -> None:
        """Queue the run's visibility record for update."""

    def schedule_wft(self, m: Mutation, attempt: int, transient: bool = False) -> None:
        """Schedule a workflow task."""

    def wft_backoff(self, m: Mutation, attempt: int, delay_ms: int) -> None:
        """No workflow task until `delay_ms` from now."""
