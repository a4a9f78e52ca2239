"""The scenarios of `legato load` (the names are a contract): what each starts and checks.

`children` is a tree that runs itself (the generator starts or reattaches to its root and watches
visibility); `mix`, `timers` and `idle` are workflows the generator starts one by one
(`Generated`), at a rate or a concurrency, and awaits.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import asdict, dataclass
from typing import Any

from legato.api import ExecutionRef, SignalWorkflowRequest, WorkflowService
from legato.config import Limits

SCENARIOS = ("children", "mix", "timers", "idle")
CHILD_WORK = ("none", "activity", "timer")
TEST_CHILD_WORK = ("fail",)  # hidden: each child fails on purpose (tests count the failures)


class LoadError(Exception):
    """The load cannot run as asked (a one-sentence message for the user)."""


@dataclass
class Params:
    """What a run does; kept in the root's memo (children) or the state file (others) for resume."""

    scenario: str
    run_id: str = ""
    total: int | None = None
    duration_s: float | None = None
    rate: float | None = None
    concurrency: int | None = None
    # children
    fanout: int = 1000
    window: int = 100
    per_run: int = 500
    child_work: str = "activity"
    # timers (children's timer work, mix's timer, idle's sleep)
    sleep: str = "1s"
    timers: int = 100
    timer_max_ms: int = 1000
    seed: int = 0
    # idle
    idle_sleep: str = "24h"
    hold_s: float = 5.0
    leave_open: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Params:
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        return cls(**known)


def new_run_id(scenario: str) -> str:
    return f"load-{scenario}-{uuid.uuid4().hex[:8]}"


def check_params(p: Params, limits: Limits) -> None:
    """Refuse up front what the engine would refuse later (one sentence naming the setting)."""
    if p.scenario == "children":
        if p.window > limits.max_pending_children:
            raise LoadError(
                f"--window {p.window} is above limits.max_pending_children ({limits.max_pending_children}), the "
                "most children a parent may have open at once: lower --window or raise that setting")
        if (p.concurrency or 0) > limits.max_pending_children:
            raise LoadError(
                f"--concurrency {p.concurrency} (parents at once) is above limits.max_pending_children "
                f"({limits.max_pending_children}), the most children the root may have open at once: lower "
                "--concurrency or raise that setting")
        if p.rate is not None:
            raise LoadError("--rate does not apply to children: the tree paces itself with --concurrency parents "
                            "at once, each with at most --window open children")
        if p.total is None:
            raise LoadError("children needs --total (the number of child workflows); --duration stops it early")
        if p.fanout < 1 or p.window < 1 or p.per_run < 1:
            raise LoadError("--fanout, --window and --per-run must be at least 1")
    if p.scenario == "timers" and p.timers > limits.max_pending_timers:
        raise LoadError(f"--timers {p.timers} is above limits.max_pending_timers ({limits.max_pending_timers}), the "
                        "most timers a workflow may have pending at once: lower --timers or raise that setting")
    if p.scenario != "children" and p.total is None and p.duration_s is None:
        raise LoadError(f"{p.scenario} needs --total N or --duration D")


def children_root_input(p: Params) -> dict[str, Any]:
    total = p.total or 0
    parents = (total + p.fanout - 1) // p.fanout
    return {"root": p.run_id, "total": total, "fanout": p.fanout, "count": parents, "window": p.concurrency or 4,
            "child_window": p.window, "per_run": p.per_run, "work": p.child_work, "sleep": p.sleep, "next": 0,
            "completed": 0, "failed": 0, "failures": [], "paused": False}


class Generated:
    """A scenario whose workflows the generator starts itself: workflow i has id `{run_id}-{i:09d}`."""

    workflow_type = ""
    awaits_result = True

    def __init__(self, p: Params) -> None:
        self.p = p

    def workflow_id(self, i: int) -> str:
        return f"{self.p.run_id}-{i:09d}"

    def input(self, i: int, wid: str) -> list[Any]:
        raise NotImplementedError

    async def after_start(self, service: WorkflowService, wid: str) -> None:
        """What the generator does once the workflow started (mix: its signal)."""

    def check(self, wid: str, result: Any) -> str | None:
        """A message when a completed workflow's result is wrong, else None."""
        return None


class Mix(Generated):
    workflow_type = "load:mix"

    def input(self, i: int, wid: str) -> list[Any]:
        return [{"id": wid, "phase": 1, "sleep": self.p.sleep, "child_work": "activity"}]

    async def after_start(self, service: WorkflowService, wid: str) -> None:
        await service.signal_workflow(SignalWorkflowRequest(ExecutionRef(wid), "ping", {"token": wid},
                                                            request_id=f"{wid}-ping"))

    def check(self, wid: str, result: Any) -> str | None:
        if not isinstance(result, dict):
            return f"unexpected result {result!r}"
        if (result.get("ping") or {}).get("token") != wid:
            return f"the signal round trip returned {result.get('ping')!r}, not the token sent ({wid!r})"
        if result.get("runs") != 2 or result.get("child") is not True:
            return f"unexpected result {result!r} (expected 2 runs and the child's result)"
        return None


class Timers(Generated):
    workflow_type = "load:timers"

    def input(self, i: int, wid: str) -> list[Any]:
        rnd = random.Random(f"{self.p.seed}-{i}")
        return [{"durations_ms": [rnd.randint(1, max(1, self.p.timer_max_ms)) for _ in range(self.p.timers)]}]

    def check(self, wid: str, result: Any) -> str | None:
        return None if result == self.p.timers else f"{result!r} timers fired, expected {self.p.timers}"


class Idle(Generated):
    workflow_type = "load:idle"
    awaits_result = False

    def input(self, i: int, wid: str) -> list[Any]:
        return [{"sleep": self.p.idle_sleep}]


def generated(p: Params) -> Generated:
    return {"mix": Mix, "timers": Timers, "idle": Idle}[p.scenario](p)
