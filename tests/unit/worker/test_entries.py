"""Registry loading and every EntryError (with file and line)."""

from __future__ import annotations

from pathlib import Path

import pytest

from worker.entries import ClientEntry, EntryError, FunctionEntry, WorkerEntry, WorkflowEntry, load_registry

APP = """\
version: "1.0"
namespace: app
entries:
  - name: client
    kind: temporal.client
    address: localhost:7233
    namespace: prod
  - name: worker
    kind: temporal.worker
    client: app:client
    task_queue: orders
    lifecycle:
      auto_start: true
  - name: order_workflow
    kind: workflow.lua
    source: file://flows/order.lua
    method: main
    modules:
      - funcs
      - time
    meta:
      temporal:
        workflow:
          worker: app:worker
          name: OrderWorkflow
  - name: charge
    kind: function.lua
    source: file://acts.lua
    method: charge
    meta:
      temporal:
        activity:
          worker: worker
  - name: free
    kind: function.lua
    source: file://acts.lua
    method: free
"""


def write(tmp: Path, yaml_text: str, files: dict[str, str] | None = None, name: str = "app.yaml") -> Path:
    for rel, text in (files or {"flows/order.lua": "return function() end\n",
                                "acts.lua": "return {charge = function() end, free = function() end}\n"}).items():
        p = tmp / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    f = tmp / name
    f.parent.mkdir(parents=True, exist_ok=True)
    f.write_text(yaml_text)
    return f


def test_loads_entries_and_lookups(tmp_path: Path) -> None:
    reg = load_registry(write(tmp_path, APP))
    wf = reg.get("app:order_workflow")
    assert isinstance(wf, WorkflowEntry)
    assert wf.workflow_type == "OrderWorkflow" and wf.modules == ("funcs", "time") and wf.worker == "app:worker"
    assert wf.chunk_name == "flows/order.lua" and wf.line == 14 and wf.bytecode
    assert reg.workflow_for_type("OrderWorkflow") is wf and reg.workflow_for_type("app:order_workflow") is wf
    charge = reg.get("app:charge")
    assert isinstance(charge, FunctionEntry) and charge.worker == "app:worker" and charge.method == "charge"
    assert isinstance(reg.get("app:worker"), WorkerEntry) and isinstance(reg.get("app:client"), ClientEntry)
    assert reg.workflows_for_worker("app:worker") == [wf]
    assert reg.activities_for_worker("app:worker") == [charge]
    assert [e.id for e in reg.unbound_activities()] == ["app:free"]
    assert reg.task_queues() == [("prod", "orders")]
    assert reg.activity_task_queue("app:charge") == "orders" and reg.activity_task_queue("app:free") is None
    with pytest.raises(KeyError):
        reg.get("app:nope")


def test_loads_a_folder_recursively(tmp_path: Path) -> None:
    write(tmp_path, APP, name="a/app.yaml")
    (tmp_path / "a" / "flows").mkdir()
    (tmp_path / "a" / "flows" / "order.lua").write_text("return function() end\n")
    (tmp_path / "a" / "acts.lua").write_text("return {}\n")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "more.yml").write_text(
        "version: '1'\nnamespace: other\nentries:\n  - {name: w2, kind: temporal.worker, task_queue: q2}\n")
    (tmp_path / "b" / "settings.yaml").write_text("log_level: debug\n")  # not a registry file
    reg = load_registry(tmp_path)
    assert "other:w2" in reg and "app:order_workflow" in reg


def test_a_configmap_volume_is_read_once(tmp_path: Path) -> None:
    """Kubernetes mounts a ConfigMap as links to a hidden, timestamped folder (`..data` points at
    it): the files are seen where the links are, not again inside the hidden folders."""
    real = tmp_path / "..2026_12_04_23_00_00.123"
    real.mkdir()
    write(real, APP, name="app.yaml")  # with flows/order.lua and acts.lua
    (tmp_path / "..data").symlink_to(real.name)
    for name in ("app.yaml", "flows", "acts.lua"):
        (tmp_path / name).symlink_to(Path("..data") / name)
    reg = load_registry(tmp_path)
    assert "app:order_workflow" in reg


def error_of(path: Path) -> str:
    with pytest.raises(EntryError) as info:
        load_registry(path)
    return str(info.value)


def test_invalid_yaml(tmp_path: Path) -> None:
    f = write(tmp_path, "version: '1.0'\nnamespace: x\nentries:\n  - name: a\n    kind: [unclosed\n")
    msg = error_of(f)
    assert msg.startswith(f"{f}:") and "invalid YAML" in msg and "line" in msg


def test_unknown_kind(tmp_path: Path) -> None:
    f = write(tmp_path, "namespace: x\nentries:\n  - name: a\n    kind: http.service\n")
    assert error_of(f).startswith(f"{f}:4: entry x:a: unknown kind 'http.service'")


@pytest.mark.parametrize(("text", "line", "field"), [
    ("entries: []\n", 1, "namespace"),
    ("namespace: x\n", 1, "entries"),
    ("namespace: x\nentries:\n  - kind: temporal.worker\n", 3, "name"),
    ("namespace: x\nentries:\n  - name: a\n", 3, "kind"),
    ("namespace: x\nentries:\n  - name: w\n    kind: temporal.worker\n", 3, "task_queue"),
    ("namespace: x\nentries:\n  - name: f\n    kind: function.lua\n", 3, "source"),
])
def test_missing_field(tmp_path: Path, text: str, line: int, field: str) -> None:
    f = write(tmp_path, text)
    msg = error_of(f)
    assert msg.startswith(f"{f}:{line}:") and f"missing field `{field}`" in msg


def test_missing_source_file(tmp_path: Path) -> None:
    f = write(tmp_path, "namespace: x\nentries:\n  - name: f\n    kind: function.lua\n    source: file://gone.lua\n")
    msg = error_of(f)
    assert msg.startswith(f"{f}:5:") and "source file not found" in msg and "gone.lua" in msg


def test_lua_syntax_error_names_lua_file_and_line(tmp_path: Path) -> None:
    f = write(tmp_path, "namespace: x\nentries:\n  - {name: w, kind: temporal.worker, task_queue: q}\n"
                        "  - {name: a, kind: workflow.lua, source: file://a.lua}\n",
              {"a.lua": "local function main()\n  return 1 +\nend\nreturn main\n"})
    msg = error_of(f)
    assert msg.startswith(f"{f}:4:") and "a.lua:3:" in msg and "syntax error" in msg


def test_duplicate_id(tmp_path: Path) -> None:
    f = write(tmp_path, "namespace: x\nentries:\n  - {name: w, kind: temporal.worker, task_queue: q}\n"
                        "  - {name: w, kind: temporal.worker, task_queue: r}\n")
    msg = error_of(f)
    assert msg.startswith(f"{f}:4: duplicate entry id x:w") and f"{f}:3" in msg


def test_unknown_worker_and_client(tmp_path: Path) -> None:
    f = write(tmp_path, "namespace: x\nentries:\n"
                        "  - {name: a, kind: workflow.lua, source: file://a.lua,"
                        " meta: {temporal: {workflow: {worker: x:nope}}}}\n", {"a.lua": "return 1\n"})
    msg = error_of(f)
    assert msg.startswith(f"{f}:3:") and "x:nope" in msg and "does not exist" in msg
    f = write(tmp_path, "namespace: x\nentries:\n  - {name: w, kind: temporal.worker, client: c, task_queue: q}\n")
    msg = error_of(f)
    assert msg.startswith(f"{f}:3:") and "x:c" in msg


def test_unknown_module(tmp_path: Path) -> None:
    f = write(tmp_path, "namespace: x\nentries:\n  - name: a\n    kind: workflow.lua\n    source: file://a.lua\n"
                        "    modules: [funcs, http]\n", {"a.lua": "return 1\n"})
    msg = error_of(f)
    assert msg.startswith(f"{f}:6:") and "'http'" in msg


def test_missing_path(tmp_path: Path) -> None:
    assert "nowhere" in error_of(tmp_path / "nowhere")
