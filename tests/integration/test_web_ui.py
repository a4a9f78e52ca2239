"""The web UI (frontend/ui/, served by frontend/web_ui.py) in a real headless Chromium: Debian's
`chromium` (deploy/chromium/chromium.sh installs it when missing), driven by Playwright.

One `legato server start-dev` on a SQLite file (with --ui-entries, for the stack view) and one
worker of tests/apps/webui serve the whole module, and one browser: the workflows are started
once, each test uses its own. Waiting is Playwright's: `expect(...)` retries until the page shows
what it should (or its timeout fails the test); nothing sleeps.

A screenshot of each page is written to test-artifacts/ui/ (LEGATO_UI_SCREENSHOTS names another
folder); the folder is printed at the end of the module.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from playwright.sync_api import expect, sync_playwright

from frontend.web_ui import UI_DIR
from legato.access_tokens import issue, new_secret
from tests.integration.conftest import APPS
from tests.integration.procs import Proc, free_port

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM_SH = ROOT / "deploy" / "chromium" / "chromium.sh"
SCREENSHOTS = Path(os.environ.get("LEGATO_UI_SCREENSHOTS") or ROOT / "test-artifacts" / "ui")
ENTRIES = APPS / "webui"
NS = "default"
CHILDREN = 60  # more than a page of the tree (50)
TIMEOUT_MS = 20_000

# The first test's setup may install Chromium (apt) on a fresh machine.
pytestmark = pytest.mark.timeout(900)


@dataclass
class Ui:
    base: str  # http://127.0.0.1:PORT (the web UI and the HTTP API)
    browser: Any
    page: Any
    requests: list[str] = field(default_factory=list)  # every URL the pages asked for
    runs: dict[str, str] = field(default_factory=dict)  # workflow id -> run id

    def api(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"{self.base}/api/v1/namespaces/{NS}{path}", data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read())

    def start(self, workflow_id: str, workflow_type: str, *args: Any, memo: dict[str, Any] | None = None) -> str:
        r = self.api("POST", "/workflows", {"workflow_id": workflow_id, "workflow_type": workflow_type,
                                            "task_queue": "ui", "input": list(args), "memo": memo or {}})
        self.runs[workflow_id] = r["run_id"]
        return str(r["run_id"])

    def open(self, workflow_id: str, tab: str = "") -> Any:
        query = f"?tab={tab}" if tab else ""
        self.page.goto(f"{self.base}/#/workflows/{workflow_id}{query}")
        expect(self.page.get_by_role("tablist", name="Workflow views")).to_be_visible()
        return self.page

    def shot(self, name: str, page: Any = None, *, full_page: bool = True) -> Path:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{name}.png"
        (page or self.page).screenshot(path=str(path), full_page=full_page)
        return path


def _chromium() -> str:
    r = subprocess.run(["bash", str(CHROMIUM_SH)], capture_output=True, text=True, timeout=900)
    if r.returncode != 0:
        pytest.fail(f"{CHROMIUM_SH} could not provide Chromium:\n{r.stderr[-3000:]}")
    return r.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def ui(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[Ui]:
    if not (UI_DIR / "index.html").is_file():
        pytest.fail(f"the web UI is not built ({UI_DIR}): `make install` builds it (npm ci && npm run build "
                    "in frontend/ui)")
    executable = _chromium()
    tmp = tmp_path_factory.mktemp("webui")
    port, ui_port = free_port(), free_port()
    server = Proc(["server", "start-dev", "--db", str(tmp / "legato.db"), "--port", str(port),
                   "--ui-address", f"127.0.0.1:{ui_port}", "--ui-entries", str(ENTRIES)])
    worker = Proc(["worker", "--entries", str(ENTRIES), "--address", f"127.0.0.1:{port}"])
    pw = browser = None
    try:
        server.start().wait_for("listening")
        worker.start().wait_for("worker polling")
        pw = sync_playwright().start()
        browser = pw.chromium.launch(executable_path=executable, headless=True,
                                     args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
        context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
        context.set_default_timeout(TIMEOUT_MS)
        expect.set_options(timeout=TIMEOUT_MS)
        page = context.new_page()
        env = Ui(f"http://127.0.0.1:{ui_port}", browser, page)
        page.on("request", lambda r: env.requests.append(r.url))
        env.start("order-1", "default:order", {"item": "pen"}, memo={"customer": "ada"})
        env.start("order-signal", "default:order", {"item": "ink"})
        env.start("order-terminate", "default:order", {"item": "nib"})
        env.start("buggy-1", "default:buggy")
        env.start("stuck-1", "default:stuck")
        env.start("fanout-1", "default:fanout", CHILDREN)
        yield env
    finally:
        if browser is not None:
            browser.close()
        if pw is not None:
            pw.stop()
        worker.stop()
        server.stop()
        reporter = request.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None and SCREENSHOTS.is_dir():
            reporter.write_line(f"\nweb UI screenshots: {SCREENSHOTS}")


def _wait_for_the_approval(page: Any) -> None:
    """On a workflow page of an order: wait (in its live history) until the run blocks on its
    "approve" channel: the workflow task after its child's result has completed."""
    page.get_by_role("tab", name="History").click()
    expect(page.locator('tr[data-event-type="ChildWorkflowExecutionCompleted"]')).to_have_count(1)
    # the history only grows: with the child's result in it, a last event that is a completed
    # workflow task is one after it
    last = page.locator("table.events tbody tr[data-event-type]").last
    expect(last).to_have_attribute("data-event-type", "WorkflowTaskCompleted")


def _rows(page: Any) -> Any:
    return page.locator("table.workflows tbody tr[data-workflow-id]")


def test_list_filters_by_status_chip_and_query_and_shows_query_errors_where_they_are(ui: Ui) -> None:
    page = ui.page
    page.goto(ui.base + "/")
    expect(page.locator('tr[data-workflow-id="order-1"]')).to_be_visible()
    expect(page.locator('tr[data-workflow-id="order-1"] .badge')).to_have_text("running")
    expect(page.locator('tr[data-workflow-id="order-1"]')).to_contain_text("default:order")
    # fanout-1, its children and the child of each order complete: the "completed" chip counts
    # them and lists only them
    completed = page.locator('.chip[data-status="COMPLETED"]')
    expect(completed.locator(".count")).to_have_text(str(CHILDREN + 1 + 3))
    ui.shot("01-workflow-list", full_page=False)
    completed.click()
    expect(completed).to_have_attribute("aria-pressed", "true")
    expect(page.locator('tr[data-workflow-id="order-1"]')).to_have_count(0)
    expect(_rows(page).first).to_be_visible()
    statuses = page.locator("table.workflows tbody .badge").evaluate_all("els => els.map(e => e.dataset.status)")
    assert statuses and set(statuses) == {"COMPLETED"}, statuses
    completed.click()  # off again
    expect(completed).to_have_attribute("aria-pressed", "false")
    # a query: only the orders
    box = page.get_by_role("searchbox")
    box.fill("WorkflowType = 'default:order'")
    box.press("Enter")
    expect(_rows(page)).to_have_count(3)
    expect(page.locator('tr[data-workflow-id="fanout-1"]')).to_have_count(0)
    # a wrong query: the server's message, a caret under the place, the box marked invalid
    box.fill("WorkflowType = 'default:order' AND StartTime >")
    box.press("Enter")
    error = page.get_by_test_id("query-error")
    expect(error).to_contain_text("position")
    expect(error.locator("pre.caret")).to_contain_text("^")
    expect(box).to_have_attribute("aria-invalid", "true")
    caret = error.locator("pre.caret").inner_text().splitlines()
    assert caret[0] == "WorkflowType = 'default:order' AND StartTime >" and caret[1].index("^") >= len(caret[0]) - 1
    ui.shot("02-query-error")
    # paging: 20 a page over the 65 runs
    page.goto(ui.base + "/#/workflows?size=20")
    expect(_rows(page)).to_have_count(20)
    first_page = _rows(page).first.get_attribute("data-workflow-id")
    page.get_by_role("button", name="Next page").click()
    expect(page.get_by_text("page 2", exact=True)).to_be_visible()
    expect(_rows(page).first).not_to_have_attribute("data-workflow-id", first_page or "")


def test_workflow_page_summary_history_json_and_download(ui: Ui, tmp_path: Path) -> None:
    page = ui.page
    page.goto(ui.base + "/#/workflows?query=" + quote("WorkflowType = 'default:order'"))  # the newest 50 are children
    page.locator('tr[data-workflow-id="order-1"] a').click()
    expect(page.get_by_test_id("workflow-id")).to_have_text("order-1")
    summary = page.locator(".summary")
    expect(summary).to_contain_text("default:order")
    expect(summary).to_contain_text(ui.runs["order-1"])
    expect(page.get_by_label("Input")).to_contain_text('"item": "pen"')
    expect(page.get_by_label("Memo")).to_contain_text('"customer": "ada"')
    ui.shot("03-workflow-summary")
    page.get_by_role("tab", name="History").click()
    failed = page.locator('tr[data-event-type="ActivityTaskFailed"]')
    expect(failed).to_have_count(1)
    expect(failed).to_contain_text("broken: always fails")
    expect(page.locator('tr[data-event-type="ChildWorkflowExecutionCompleted"]')).to_have_count(1)
    # an event's own JSON
    failed.get_by_role("button").click()
    expect(page.get_by_label(re.compile(r"^Event \d+$"))).to_contain_text('"kind": "Internal"')
    ui.shot("04-workflow-history")
    # the JSON view and the download
    page.get_by_role("button", name="JSON", exact=True).click()
    expect(page.get_by_label("History as JSON")).to_contain_text('"event_type": "WorkflowExecutionStarted"')
    with page.expect_download() as info:
        page.get_by_role("button", name="Download JSON").click()
    saved = tmp_path / "history.json"
    info.value.save_as(saved)
    doc = json.loads(saved.read_text())
    assert doc["workflow_id"] == "order-1" and doc["run_id"] == ui.runs["order-1"]
    assert doc["events"][0]["event_type"] == "WorkflowExecutionStarted"
    assert any(e["event_type"] == "TimerFired" for e in doc["events"])


def test_timeline_shows_activities_timers_children_with_retries_and_failures(ui: Ui) -> None:
    page = ui.open("order-1", "timeline")
    timeline = page.get_by_test_id("timeline")
    flaky = timeline.locator('li[data-kind="activity"]', has_text="default:flaky")
    expect(flaky).to_have_attribute("data-attempts", "2")  # failed once, retried
    expect(flaky).to_have_attribute("data-outcome", "completed")
    expect(flaky.locator(".retries")).to_contain_text("1 retry")
    expect(flaky.locator(".bar.retrying")).to_have_count(1)
    broken = timeline.locator('li[data-kind="activity"]', has_text="default:broken")
    expect(broken).to_have_attribute("data-outcome", "failed")
    expect(broken).to_contain_text("broken: always fails")
    expect(timeline.locator('li[data-kind="timer"]')).to_have_attribute("data-outcome", "fired")
    expect(timeline.locator('li[data-kind="child"]')).to_have_attribute("data-outcome", "completed")
    ui.shot("05-workflow-timeline")


def test_call_stack_of_a_running_workflow(ui: Ui) -> None:
    page = ui.open("order-1")
    _wait_for_the_approval(page)
    page.get_by_role("tab", name="Call stack").click()
    stack = page.get_by_test_id("stack")
    # the main coroutine waits for "approve", the second one for "note": each at its order.lua line
    expect(stack.locator("section.coroutine")).to_have_count(2)
    # asked of the worker that has the run cached (issue 14), not replayed by the server
    expect(stack.get_by_test_id("stack-source")).to_contain_text("from the cache of worker")
    expect(stack.locator("section.coroutine").first).to_contain_text("main")
    expect(stack.locator("section.coroutine").nth(1)).to_contain_text("coroutine")
    lines = stack.locator("ol.frames code").all_inner_texts()
    assert lines and all(re.fullmatch(r"order\.lua:\d+", x) for x in lines), lines
    # main waits in wait_for_approval (its receive line), called from order
    source = (ENTRIES / "order.lua").read_text().splitlines()
    main = stack.locator("section.coroutine").first.locator("ol.frames code").all_inner_texts()
    assert len(main) == 2, main
    assert "approve:receive()" in source[int(main[0].split(":")[1]) - 1], main
    assert "wait_for_approval(approve)" in source[int(main[1].split(":")[1]) - 1], main
    ui.shot("06-call-stack")


def test_signal_with_confirmation_and_see_the_workflow_finish(ui: Ui) -> None:
    page = ui.open("order-signal")
    expect(page.locator(".wf-head .badge")).to_have_text("running")
    _wait_for_the_approval(page)
    page.get_by_role("button", name="Signal").click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_be_visible()
    dialog.get_by_label("Topic (signal name)").fill("approve")
    dialog.get_by_label("Payload (JSON)").fill("{not json")
    dialog.get_by_role("button", name="Send signal").click()
    expect(dialog.get_by_role("alert")).to_contain_text("not valid JSON")  # refused before sending
    dialog.get_by_label("Payload (JSON)").fill('{"by": "ui-test"}')
    expect(dialog.get_by_role("alert")).to_have_count(0)  # mended: the complaint goes
    ui.shot("07-signal-dialog", full_page=False)
    dialog.get_by_role("button", name="Send signal").click()
    expect(dialog).to_be_hidden()
    # the history's long poll brings the signal and the close; the status follows
    expect(page.locator(".wf-head .badge")).to_have_text("completed")
    expect(page.locator('tr[data-event-type="WorkflowExecutionSignaled"]')).to_contain_text("approve")
    page.get_by_role("tab", name="Summary").click()
    expect(page.get_by_label("Result")).to_contain_text('"by": "ui-test"')
    expect(page.get_by_role("button", name="Signal")).to_be_disabled()
    ui.shot("08-signalled-completed")


def test_terminate_with_a_reason(ui: Ui) -> None:
    page = ui.open("order-terminate")
    expect(page.locator(".wf-head .badge")).to_have_text("running")
    page.get_by_role("button", name="Terminate").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_role("button", name="Keep running").click()  # changed my mind: nothing happens
    expect(dialog).to_be_hidden()
    expect(page.locator(".wf-head .badge")).to_have_text("running")
    page.get_by_role("button", name="Terminate").click()
    dialog.get_by_label("Reason").fill("stopped from the web UI test")
    dialog.get_by_role("button", name="Terminate").click()
    expect(page.locator(".wf-head .badge")).to_have_text("terminated")
    expect(page.get_by_test_id("failure")).to_contain_text("stopped from the web UI test")
    assert ui.api("GET", "/workflows/order-terminate")["info"]["status"] == "TERMINATED"
    ui.shot("09-terminated")


def test_failing_workflow_task_shows_the_lua_file_and_line(ui: Ui) -> None:
    page = ui.open("buggy-1")
    failure = page.get_by_test_id("failure")
    expect(failure).to_contain_text("attempt to index a nil value")
    expect(failure.get_by_test_id("lua-source")).to_have_text("other.lua:20")
    ui.shot("10-workflow-task-failure")


def test_pending_activity_in_backoff_with_its_last_failure(ui: Ui) -> None:
    page = ui.open("stuck-1", "pending")
    table = page.get_by_role("table", name="Pending activities")
    row = table.locator("tbody tr", has_text="default:broken")
    expect(row).to_contain_text("BACKOFF")
    expect(row).to_contain_text("broken: always fails")
    expect(page.get_by_role("tab", name=re.compile(r"Pending \(1\)"))).to_be_visible()
    ui.shot("11-pending-activity")
    page.get_by_role("tab", name="Timeline").click()
    bar = page.get_by_test_id("timeline").locator('li[data-kind="activity"]')
    expect(bar).to_have_attribute("data-outcome", "running")
    expect(bar).to_contain_text("waiting to retry")


def test_children_tree_is_paged_and_navigable(ui: Ui) -> None:
    page = ui.open("fanout-1", "family")
    expect(page.locator(".wf-head .badge")).to_have_text("completed")
    tree = page.get_by_role("tree", name="Children")
    items = tree.locator(":scope > li[data-child]")
    expect(items).to_have_count(50)
    more = page.get_by_role("button", name=re.compile("Show more children"))
    more.click()
    expect(items).to_have_count(CHILDREN)
    expect(more).to_have_count(0)
    first = items.first
    first.get_by_role("button", name=re.compile("^Expand")).click()
    expect(first).to_contain_text("no children")
    ui.shot("12-children-tree")
    child_id = first.get_attribute("data-child") or ""
    first.get_by_role("link", name=child_id).click()
    expect(page.get_by_test_id("workflow-id")).to_have_text(child_id)
    page.get_by_role("tab", name="Parent & children").click()
    expect(page.get_by_role("list", name="Parents, root first")).to_contain_text("fanout-1")


def test_start_a_workflow_like_this_one_and_cancel_it(ui: Ui) -> None:
    page = ui.open("order-1")
    page.get_by_role("button", name="Start like this").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_label("Workflow ID").fill("order-copy")
    expect(dialog.get_by_label("Input (JSON array)")).to_have_value(re.compile('"item": "pen"'))
    dialog.get_by_role("button", name="Start").click()
    expect(page.get_by_test_id("workflow-id")).to_have_text("order-copy")
    described = ui.api("GET", "/workflows/order-copy")["info"]
    assert described["workflow_type"] == "default:order" and described["memo"] == {"customer": "ada"}
    page.get_by_role("button", name="Cancel").click()
    page.get_by_role("dialog").get_by_role("button", name="Request cancellation").click()
    page.get_by_role("tab", name="History").click()
    expect(page.locator('tr[data-event-type="WorkflowExecutionCancelRequested"]')).to_have_count(1)


def test_cluster_page_of_the_dev_server(ui: Ui) -> None:
    page = ui.page
    page.goto(ui.base + "/#/cluster")
    expect(page.get_by_role("heading", name="Cluster")).to_be_visible()
    expect(page.locator("main")).to_contain_text("single process")
    members = page.get_by_role("table", name="Members").locator("tbody tr")
    expect(members).to_have_count(1)
    expect(members).to_contain_text("frontend")
    expect(page.locator(".shard")).to_have_count(4)
    expect(page.locator(".shard.unowned")).to_have_count(0)
    queues = page.get_by_role("table", name="Task queues")
    expect(queues.locator("tbody tr", has_text="workflow")).to_contain_text("ui")
    ui.shot("13-cluster")


def test_phone_screen_and_keyboard_only(ui: Ui) -> None:
    context = ui.browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    try:
        page = context.new_page()
        page.goto(ui.base + "/")
        expect(_rows(page)).to_have_count(50)
        # nothing wider than the screen: no sideways scrolling of the page
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
        ui.shot("14-phone-list", page, full_page=False)
        # the keyboard alone: to the query box, search, then to a workflow's link and open it
        page.keyboard.press("Tab")
        for _ in range(20):
            if page.evaluate("document.activeElement && document.activeElement.id") == "query":
                break
            page.keyboard.press("Tab")
        assert page.evaluate("document.activeElement.id") == "query"
        page.keyboard.type("WorkflowId = 'buggy-1'")
        page.keyboard.press("Enter")
        expect(_rows(page)).to_have_count(1)
        link = page.locator('tr[data-workflow-id="buggy-1"] a')
        for _ in range(40):
            if page.evaluate("document.activeElement && document.activeElement.textContent") == "buggy-1":
                break
            page.keyboard.press("Tab")
        page.keyboard.press("Enter")
        expect(page.get_by_test_id("workflow-id")).to_have_text("buggy-1")
        expect(link).to_have_count(0)
        # tabs by arrow keys
        page.get_by_role("tab", name="Summary").focus()
        page.keyboard.press("ArrowRight")
        expect(page.get_by_role("tab", name="History")).to_have_attribute("aria-selected", "true")
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
        ui.shot("15-phone-workflow", page)
    finally:
        context.close()


def test_a_server_with_tokens_asks_for_one_and_takes_it(ui: Ui, tmp_path: Path) -> None:
    secret = new_secret()
    (tmp_path / "secret").write_text(secret)
    port, ui_port = free_port(), free_port()
    server = Proc(["server", "start-dev", "--port", str(port), "--ui-address", f"127.0.0.1:{ui_port}",
                   "--token-secret-file", str(tmp_path / "secret")])
    context = ui.browser.new_context()
    try:
        server.start().wait_for("listening")
        page = context.new_page()
        page.goto(f"http://127.0.0.1:{ui_port}/")
        expect(page.get_by_role("alert")).to_contain_text("requires a token")
        page.get_by_role("button", name="token").click()
        page.get_by_label("Access token").fill(issue(secret.encode(), [NS], subject="ui-test", ttl_s=600))
        page.get_by_role("button", name="Save").click()
        expect(page.get_by_role("alert")).to_have_count(0)
        expect(page.get_by_text("No workflows match.")).to_be_visible()
        # the cluster page needs a token for all namespaces: it says so
        page.get_by_role("link", name="Cluster").click()
        expect(page.get_by_role("alert")).to_contain_text("all namespaces")
    finally:
        context.close()
        server.stop()


def test_pages_load_nothing_from_elsewhere(ui: Ui) -> None:
    """Offline-proof: every request of the pages (this module's, and the list's here) went to the
    server itself."""
    ui.page.goto(ui.base + "/#/cluster")
    expect(ui.page.get_by_role("table", name="Members")).to_be_visible()
    assert any(u.endswith(".js") for u in ui.requests) and any("/api/v1/" in u for u in ui.requests), ui.requests
    foreign = [u for u in ui.requests if not (u.startswith(ui.base + "/") or u.startswith(("data:", "blob:")))]
    assert not foreign, foreign
    html = urllib.request.urlopen(ui.base + "/", timeout=10)
    assert "default-src 'self'" in html.headers["Content-Security-Policy"]
