"""`legato workflow trace`: the tree of a workflow's children, with their statuses.

The children come from the parent's own history (`legato.lineage`, shared with the HTTP API). A
child that is expanded (within --depth) has its status read from its own history, which is more
recent than the parent's record of it.
"""

from __future__ import annotations

import asyncio
import sys

import click

from legato.api import ExecutionRef, GetHistoryRequest, WorkflowService, WorkflowStatus
from legato.cli.common import CliError, client_options_with, parse_timeout, run_async
from legato.cli.output import ExitCode, print_json
from legato.cli.security import client_security
from legato.client import GrpcClient
from legato.events import HistoryEvent
from legato.lineage import CLOSE_STATUS, START_FAILED, STARTING, Node, children_of, read_history, status_of

ICONS = {"COMPLETED": "✓", "RUNNING": "▶", "FAILED": "✗", "TIMED_OUT": "⏱", "CANCELED": "⊘", "TERMINATED": "■",
         "CONTINUED_AS_NEW": "↻", STARTING: "…", START_FAILED: "✗"}
READS_AT_ONCE = 16


class Tracer:
    """Builds the tree; the histories of closed runs are kept between redraws (they no longer change)."""

    def __init__(self, client: WorkflowService, depth: int) -> None:
        self.client = client
        self.depth = depth
        self.closed_cache: dict[tuple[str, str, str], list[HistoryEvent]] = {}
        self.sem = asyncio.Semaphore(READS_AT_ONCE)
        self.root_events: list[HistoryEvent] = []

    async def history(self, ref: ExecutionRef) -> list[HistoryEvent]:
        key = (ref.namespace, ref.workflow_id, ref.run_id)
        if ref.run_id and key in self.closed_cache:
            return self.closed_cache[key]
        async with self.sem:
            events = await read_history(self.client, ref)
        if ref.run_id and events and events[-1].event_type in CLOSE_STATUS:
            self.closed_cache[key] = events
        return events

    async def root(self, ref: ExecutionRef) -> Node:
        if not ref.run_id:  # pin the run: its children are those of one run
            page = await self.client.get_workflow_history(GetHistoryRequest(ref, first_event_id=1, page_size=1))
            ref = ExecutionRef(ref.workflow_id, page.run_id, ref.namespace)
        events = self.root_events = await self.history(ref)
        if not events:
            raise CliError(f"workflow {ref.workflow_id} has no history")
        status, failure = status_of(events)
        node = Node(ref.workflow_id, ref.run_id, str(events[0].attrs.get("workflow_type", "")), ref.namespace,
                    status, failure)
        await self.expand(node, events, 1)
        return node

    async def expand(self, node: Node, events: list[HistoryEvent], level: int) -> None:
        if level > self.depth:
            return
        node.children = children_of(events, node.namespace)
        await asyncio.gather(*(self.visit(c, level + 1) for c in node.children if c.run_id))

    async def visit(self, node: Node, level: int) -> None:
        if level > self.depth:  # not read: its status is the parent's record of it
            return
        events = await self.history(ExecutionRef(node.workflow_id, node.run_id, node.namespace))
        if events:
            node.status, failure = status_of(events)
            node.failure = failure or node.failure
        await self.expand(node, events, level)


def render(node: Node, fold: bool) -> list[str]:
    lines = [_label(node)]
    _render_children(node, "", fold, lines)
    return lines


def _label(n: Node) -> str:
    text = f"{ICONS.get(n.status, '?')} {n.workflow_id} ({n.workflow_type}) {n.status}"
    if n.run_id:
        text += f"  run {n.run_id}"
    if n.failure:
        text += f": {n.failure}"
    return text


def _render_children(node: Node, prefix: str, fold: bool, lines: list[str]) -> None:
    kids = node.children or []
    shown = [c for c in kids if not (fold and c.settled())]
    folded = len(kids) - len(shown)
    items: list[Node | int] = [*shown, *([folded] if folded else [])]
    for i, item in enumerate(items):
        last = i == len(items) - 1
        branch, cont = ("└── ", "    ") if last else ("├── ", "│   ")
        if isinstance(item, int):
            lines.append(f"{prefix}{branch}✓ {item} completed")
            continue
        lines.append(f"{prefix}{branch}{_label(item)}")
        _render_children(item, prefix + cont, fold, lines)


@click.command()
@click.option("--id", "workflow_id", required=True)
@click.option("--run-id", default="")
@click.option("--depth", default=3, show_default=True, type=click.IntRange(0, 100),
              help="Levels of children to read (0: the workflow alone); each child read is one history read.")
@click.option("--follow", "-f", is_flag=True, help="Redraw the tree until the workflow closes (or Ctrl-C).")
@click.option("--interval", default="2s", show_default=True,
              help="--follow: the longest wait between redraws (a new event of the root redraws at once).")
@click.option("--no-fold", is_flag=True,
              help="Text: list every child (by default, completed branches fold into a '✓ N completed' line).")
@client_options_with("text", "json", "jsonl",
                     output_help="text: a tree; json: the whole tree as one object (with --follow: the last one); "
                                 "jsonl: the whole tree as a line per redraw.")
@run_async
async def trace(workflow_id: str, run_id: str, depth: int, follow: bool, interval: str, no_fold: bool, address: str,
                output: str, namespace: str) -> int:
    """Show the tree of a workflow's children, with their statuses."""
    wait_ms = parse_timeout(interval, "--interval") or 0
    tty = sys.stdout.isatty()
    async with GrpcClient(address, security=client_security()) as client:
        tracer = Tracer(client, depth)
        ref = ExecutionRef(workflow_id, run_id, namespace)
        drawn = 0
        while True:
            tree = await tracer.root(ref)
            ref = ExecutionRef(workflow_id, tree.run_id, namespace)  # stay on this run
            closed = tree.status != WorkflowStatus.RUNNING.value
            if output == "jsonl":
                print_json(tree.to_dict())
            elif output == "text":
                if follow and drawn:
                    click.echo("\x1b[H\x1b[J" if tty else "", nl=not tty)
                click.echo("\n".join(render(tree, not no_fold)))
            drawn += 1
            if not follow or closed:
                break
            await client.get_workflow_history(GetHistoryRequest(
                ref, first_event_id=_next_event(tracer.root_events), page_size=1, wait_new_event=True,
                timeout_ms=wait_ms))
        if output == "json":
            print_json(tree.to_dict())
    return ExitCode.OK


def _next_event(events: list[HistoryEvent]) -> int:
    return events[-1].event_id + 1 if events else 1
