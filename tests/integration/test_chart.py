"""The Helm chart (helm/legato), checked without a Kubernetes cluster.

* Static checks, as `make chart-check` makes them (deploy/helm/chart-check.sh): `helm lint` and
  `helm template` for the default values and each values file in tests/chart/, every rendered
  object decoded strictly into its Kubernetes API type (deploy/k8s-validate), the rendered Legato
  config accepted by Legato's own config model, and values.schema.json refusing the values files
  in tests/chart/bad/ with Helm's error. Helm and the validator are built from the Go module proxy
  by their scripts, once (cached under .deploy/tools/).

* The chart run: the chart rendered with 2 history, 2 matching, 2 frontend and 2 worker replicas,
  every rendered container started as a local process with its rendered command, args and
  environment, against the real ZooKeeper, Kafka and Cassandra of the test run, under a keyspace,
  topic prefix and ZooKeeper root of its own. This test plays the kubelet's part
  (`LocalKubelet`): it writes each mounted ConfigMap to a folder in the kubelet's layout, expands
  $(VAR) references in args from the container's env, gives status.podIP as 127.0.0.1, and, since
  every replica shares the loopback address, rewrites each "127.0.0.1:<containerPort>" argument
  to a free port of the replica's own; a Service's DNS name in an argument becomes the addresses
  of the pods its selector picks (its targetPort looked up by name). It waits for each process's
  rendered readiness probe, runs the schema Job's containers first, runs workflows through the
  frontends, then renders again with 3 history replicas, starts the third, and checks that the
  shards spread over the three.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from kazoo.client import KazooClient
from kazoo.exceptions import NoNodeError

from legato.api import ExecutionRef, SignalWorkflowRequest, StartWorkflowRequest, WorkflowStatus
from legato.cli.workflow_cmds import wait_result
from legato.client import GrpcClient
from legato.config import QueuesConfig, StoreConfig, load_config
from legato.membership import Paths
from legato.zk import loads
from tests.integration.procs import Proc, free_port

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "legato"
CASES = ROOT / "tests" / "chart"
APP = ROOT / "tests" / "apps" / "cluster"
HELM_SH = ROOT / "deploy" / "helm" / "helm.sh"
VALIDATE_SH = ROOT / "deploy" / "k8s-validate" / "build.sh"
CHART_CHECK_SH = ROOT / "deploy" / "helm" / "chart-check.sh"
VENV_BIN = str(Path(sys.executable).parent)
NAMESPACE = "legato-test"
RELEASE = "legato"
WAIT_S = 90.0  # safety net of every wait on a condition
NUM_SHARDS = 8

GOOD_VALUES = [None, *sorted(p.name for p in CASES.glob("*.yaml"))]
BAD_VALUES = sorted(p.name for p in (CASES / "bad").glob("*.yaml"))


# ---------------------------------------------------------------------- tools

def _script(path: Path) -> str:
    """Run a build script (it builds once, then only prints the cached binary's path)."""
    p = subprocess.run(["bash", str(path)], capture_output=True, text=True, timeout=1800)
    assert p.returncode == 0, f"{path} failed:\n{p.stderr[-3000:]}"
    binary = p.stdout.strip().splitlines()[-1]
    assert os.access(binary, os.X_OK), binary
    return binary


@pytest.fixture(scope="module")
def helm() -> str:
    return _script(HELM_SH)


@pytest.fixture(scope="module")
def validator() -> str:
    return _script(VALIDATE_SH)


def helm_template(helm: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([helm, "template", RELEASE, str(CHART), "--namespace", NAMESPACE, *args],
                          capture_output=True, text=True, timeout=120)


def render(helm: str, *args: str) -> list[dict[str, Any]]:
    p = helm_template(helm, *args)
    assert p.returncode == 0, p.stderr
    return [d for d in yaml.safe_load_all(p.stdout) if d]


def find(objs: list[dict[str, Any]], kind: str, component: str | None = None,
         name: str | None = None) -> list[dict[str, Any]]:
    return [o for o in objs if o["kind"] == kind
            and (component is None or o["metadata"]["labels"].get("app.kubernetes.io/component") == component)
            and (name is None or o["metadata"]["name"] == name)]


def one(objs: list[dict[str, Any]], kind: str, component: str | None = None,
        name: str | None = None) -> dict[str, Any]:
    found = find(objs, kind, component, name)
    assert len(found) == 1, (kind, component, name, [o["metadata"]["name"] for o in found])
    return found[0]


def values_args(case: str | None) -> list[str]:
    return ["-f", str(CASES / case)] if case else []


# ---------------------------------------------------------------------- static checks

def test_chart_check_script_passes() -> None:
    """`make chart-check` as a whole: every case passes, none is skipped."""
    p = subprocess.run(["bash", str(CHART_CHECK_SH)], capture_output=True, text=True, timeout=1800)
    assert p.returncode == 0, p.stdout + p.stderr
    summary = p.stdout.strip().splitlines()[-1]
    assert summary == f"chart-check: {len(GOOD_VALUES) + len(BAD_VALUES)} passed, 0 failed", p.stdout


@pytest.mark.parametrize("case", GOOD_VALUES, ids=lambda c: c or "defaults")
def test_lint_render_and_validate_strictly(helm: str, validator: str, case: str | None, tmp_path: Path) -> None:
    lint = subprocess.run([helm, "lint", "--strict", str(CHART), *values_args(case)],
                          capture_output=True, text=True, timeout=120)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    p = helm_template(helm, *values_args(case))
    assert p.returncode == 0, p.stderr
    v = subprocess.run([validator], input=p.stdout, capture_output=True, text=True, timeout=60)
    assert v.returncode == 0, v.stderr
    objs = [d for d in yaml.safe_load_all(p.stdout) if d]
    # the four Deployments, each with its probes on the metrics port, non-root
    for component in ("frontend", "history", "matching", "worker"):
        pod = one(objs, "Deployment", component)["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        (c,) = pod["containers"]
        assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
        assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
        assert c["securityContext"]["allowPrivilegeEscalation"] is False
    # the rendered config is one Legato itself accepts (its strict pydantic model)
    cm = one(objs, "ConfigMap", name=f"{RELEASE}-config")
    (tmp_path / "legato.yaml").write_text(cm["data"]["legato.yaml"])
    config = load_config(tmp_path / "legato.yaml", env={})
    assert config.store.kind == "cassandra" and config.queues.kind == "kafka" and config.cluster.zookeeper
    assert str(config.history.num_shards) == cm["metadata"]["annotations"]["legato.dev/num-history-shards"]


@pytest.mark.parametrize("case", BAD_VALUES)
def test_schema_refuses_bad_values(helm: str, case: str) -> None:
    path = CASES / "bad" / case
    expect = re.search(r"^# expect: (.+)$", path.read_text(), re.M)
    assert expect, f"{path}: no '# expect: ...' line"
    p = helm_template(helm, "-f", str(path))
    assert p.returncode != 0, f"{case} was accepted"
    assert "values don't meet the specifications of the schema" in p.stderr, p.stderr
    assert expect.group(1) in p.stderr, p.stderr


def test_validator_names_the_object_and_field(helm: str, validator: str) -> None:
    """The validator is strict: a misspelt field, a wrong type and an unknown kind fail, each
    named with its object and field path."""
    good = helm_template(helm).stdout
    broken = (good.replace("revisionHistoryLimit: 5", "revisionHistoryLimt: 5", 1)
              .replace("containerPort: 7234", 'containerPort: "7234"', 1))
    broken += "\n---\napiVersion: example.com/v1\nkind: Gadget\nmetadata: {name: g}\n"
    v = subprocess.run([validator], input=broken, capture_output=True, text=True, timeout=60)
    assert v.returncode == 1, v.stdout + v.stderr
    assert re.search(r"Deployment/legato-frontend: unknown field \"spec.revisionHistoryLimt\"", v.stderr), v.stderr
    assert re.search(r"Deployment/legato-history: .*containerPort of type int32", v.stderr), v.stderr
    assert "Gadget/g: no Go type known" in v.stderr, v.stderr
    monitor = render(helm, "--set", "metrics.serviceMonitor.enabled=true")
    text = yaml.safe_dump(one(monitor, "ServiceMonitor")).replace("scrapeTimeout:", "scrapeTimout:")
    v = subprocess.run([validator], input=text, capture_output=True, text=True, timeout=60)
    assert v.returncode == 1 and 'unknown field "spec.endpoints[0].scrapeTimout"' in v.stderr, v.stderr


def test_schema_job_hook_or_plain(helm: str) -> None:
    hooked = render(helm)
    job = one(hooked, "Job", "schema")
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    # a hook runs before the release's ConfigMap exists: it has its own, a hook as well
    volume = job["spec"]["template"]["spec"]["volumes"][0]["configMap"]["name"]
    assert "helm.sh/hook" in one(hooked, "ConfigMap", name=volume)["metadata"]["annotations"]
    plain = render(helm, "--set", "schemaJob.useHooks=false")
    job = one(plain, "Job", "schema")
    assert "helm.sh/hook" not in job["metadata"].get("annotations", {})
    assert job["spec"]["template"]["spec"]["volumes"][0]["configMap"]["name"] == f"{RELEASE}-config"
    # named after what it runs: a new image makes a new Job (a Job's template cannot change)
    again = one(render(helm, "--set", "schemaJob.useHooks=false", "--set", "image.tag=9.9.9"), "Job", "schema")
    assert again["metadata"]["name"] != job["metadata"]["name"]


def test_worker_app_sources(helm: str, tmp_path: Path) -> None:
    files = ["--set", "worker.app.source=files"] + [
        a for f in sorted(APP.iterdir()) for a in ("--set-file", f"worker.app.files.{f.name.replace('.', '[.]')}={f}")]
    # Helm's --set-file takes dots in a key as path separators unless escaped with a backslash
    files = [a.replace("[.]", "\\.") for a in files]
    objs = render(helm, *files)
    app = one(objs, "ConfigMap", name=f"{RELEASE}-app")
    assert {k: v for k, v in app["data"].items()} == {f.name: f.read_text() for f in APP.iterdir()}
    kubelet = LocalKubelet(tmp_path, objs)
    pod = kubelet.pod(one(objs, "Deployment", "worker"), 0)
    from worker.entries import load_registry

    entries = pod.args[pod.args.index("--entries") + 1]
    assert {e.id for e in load_registry(entries).workflows()} == {"cluster:order", "cluster:part"}
    # the frontends read the same application for the web UI's call stacks (--ui-entries)
    front = kubelet.pod(one(objs, "Deployment", "frontend"), 0)
    ui_entries = front.args[front.args.index("--ui-entries") + 1]
    assert {e.id for e in load_registry(ui_entries).workflows()} == {"cluster:order", "cluster:part"}
    off = one(render(helm, *files, "--set", "frontend.uiStack=false"), "Deployment", "frontend")
    assert "--ui-entries" not in off["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "app" not in {v["name"] for v in off["spec"]["template"]["spec"]["volumes"]}

    existing = one(render(helm, "-f", str(CASES / "app-existing-configmap.yaml")), "Deployment", "worker")
    volumes = {v["name"]: v for v in existing["spec"]["template"]["spec"]["volumes"]}
    assert volumes["app"]["configMap"]["name"] == "shop-app"
    baked = one(render(helm, "-f", str(CASES / "app-image.yaml")), "Deployment", "worker")
    args = baked["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--entries") + 1] == "/srv/app"
    assert "app" not in {v["name"] for v in baked["spec"]["template"]["spec"]["volumes"]}
    baked_front = one(render(helm, "-f", str(CASES / "app-image.yaml")), "Deployment", "frontend")
    args = baked_front["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--ui-entries") + 1] == "/srv/app"


# ---------------------------------------------------------------------- numHistoryShards on upgrade

class FakeKubeApi:
    """Just enough of a Kubernetes API server for `helm template --dry-run=server`: discovery of
    the kinds the chart renders, no Helm release, and the ConfigMaps in `configmaps` (for the
    chart's `lookup`); every other object is absent."""

    KINDS = {"/api/v1": ("v1", [("configmaps", "ConfigMap"), ("secrets", "Secret"), ("services", "Service"),
                                ("serviceaccounts", "ServiceAccount")]),
             "/apis/apps/v1": ("apps/v1", [("deployments", "Deployment")]),
             "/apis/batch/v1": ("batch/v1", [("jobs", "Job")]),
             "/apis/policy/v1": ("policy/v1", [("poddisruptionbudgets", "PodDisruptionBudget")])}

    def __init__(self) -> None:
        self.configmaps: dict[str, dict[str, Any]] = {}
        self.lookups: list[str] = []
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def answer(self, code: int, obj: object) -> None:
                body = json.dumps(obj).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                self.answer(*api.get(self.path.split("?")[0]))

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def get(self, path: str) -> tuple[int, object]:
        if path == "/version":
            return 200, {"major": "1", "minor": "33", "gitVersion": "v1.33.0", "platform": "linux/amd64"}
        if path == "/api":
            return 200, {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}
        if path == "/apis":
            return 200, {"kind": "APIGroupList", "apiVersion": "v1", "groups": [
                {"name": g, "versions": [{"groupVersion": f"{g}/v1", "version": "v1"}],
                 "preferredVersion": {"groupVersion": f"{g}/v1", "version": "v1"}}
                for g in ("apps", "batch", "policy")]}
        if path in self.KINDS:
            group_version, kinds = self.KINDS[path]
            return 200, {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version,
                         "resources": [{"name": n, "singularName": "", "namespaced": True, "kind": k,
                                        "verbs": ["get", "list", "create", "update", "patch", "delete"]}
                                       for n, k in kinds]}
        if path.endswith("/secrets"):  # Helm's release records: none
            return 200, {"kind": "SecretList", "apiVersion": "v1", "metadata": {}, "items": []}
        m = re.fullmatch(rf"/api/v1/namespaces/{NAMESPACE}/configmaps/([^/]+)", path)
        if m:
            self.lookups.append(m.group(1))
            if m.group(1) in self.configmaps:
                return 200, self.configmaps[m.group(1)]
        return 404, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404}

    def kubeconfig(self, tmp: Path) -> Path:
        path = tmp / "kubeconfig"
        path.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "fake",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "fake", "user": {}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake", "namespace": NAMESPACE}}]}))
        return path

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_num_history_shards_cannot_change_on_upgrade(helm: str, tmp_path: Path) -> None:
    """The chart looks up the installed release's ConfigMap and refuses another numHistoryShards
    (`helm template --dry-run=server` against a fake API server that has the ConfigMap)."""
    api = FakeKubeApi()
    try:
        kubeconfig = str(api.kubeconfig(tmp_path))

        def against_cluster(*args: str) -> subprocess.CompletedProcess[str]:
            return helm_template(helm, "--dry-run=server", "--disable-openapi-validation", "--kubeconfig",
                                 kubeconfig, *args)

        fresh = against_cluster("--set", "numHistoryShards=16")  # a first install: nothing to compare with
        assert fresh.returncode == 0, fresh.stderr
        assert f"{RELEASE}-config" in api.lookups  # the chart did look
        installed = one(render(helm, "--set", "numHistoryShards=8"), "ConfigMap", name=f"{RELEASE}-config")
        installed["metadata"]["annotations"].update({"meta.helm.sh/release-name": RELEASE,
                                                     "meta.helm.sh/release-namespace": NAMESPACE})
        api.configmaps[f"{RELEASE}-config"] = installed
        changed = against_cluster("--set", "numHistoryShards=16")
        assert changed.returncode != 0
        assert (f"numHistoryShards cannot change: release {RELEASE} was installed with numHistoryShards=8 "
                "and this upgrade asks for 16") in changed.stderr, changed.stderr
        same = against_cluster("--set", "numHistoryShards=8")
        assert same.returncode == 0, same.stderr
        # a ConfigMap without the annotation: the number in its legato.yaml counts
        del installed["metadata"]["annotations"]["legato.dev/num-history-shards"]
        changed = against_cluster("--set", "numHistoryShards=4")
        assert changed.returncode != 0 and "installed with numHistoryShards=8" in changed.stderr, changed.stderr
    finally:
        api.close()


# ---------------------------------------------------------------------- a local kubelet

_VAR = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion of command and args: $$ is a literal $, an unknown
    $(VAR) stays as it is."""
    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        return env.get(m.group(1), m.group(0))
    return _VAR.sub(sub, text)


@dataclass
class LocalPod:
    name: str
    component: str
    command: list[str]
    args: list[str]
    env: dict[str, str]
    ports: dict[str, int]  # container port name -> the local port of this replica
    probes: dict[str, tuple[str, str]]  # liveness/readiness -> (path, port name)
    proc: Proc | None = None

    def address(self, port_name: str) -> str:
        return f"127.0.0.1:{self.ports[port_name]}"

    def start(self) -> LocalPod:
        p = Proc([])
        p.args = [*self.command, *self.args]
        p.env = self.env
        self.proc = p.start()
        return self

    def probe(self, which: str) -> int:
        """The status code of the rendered probe's HTTP GET (0: no answer)."""
        path, port = self.probes[which]
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.ports[port]}{path}", timeout=3) as r:
                return int(r.status)
        except urllib.error.HTTPError as e:
            return int(e.code)
        except OSError:
            return 0

    def get(self, path: str, port: str = "metrics") -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.ports[port]}{path}", timeout=5) as r:
            return str(r.read().decode())

    def alive(self) -> bool:
        return self.proc is not None and self.proc.alive()

    def output(self) -> str:
        return self.proc.output() if self.proc else ""

    def stop(self, timeout: float = 30.0) -> None:
        p = self.proc.popen if self.proc else None
        if p is None or p.poll() is not None:
            return
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(10)


@dataclass
class LocalKubelet:
    """Turns rendered pod templates into local processes (see the module's docstring)."""

    tmp: Path
    objs: list[dict[str, Any]]
    pods: list[LocalPod] = field(default_factory=list)
    _volumes: dict[str, Path] = field(default_factory=dict)

    def configmap_folder(self, name: str) -> Path:
        """A ConfigMap's data as the kubelet writes a volume: the files in a hidden, timestamped
        folder, ..data linking to it, and one link per key at the top."""
        if name not in self._volumes:
            cm = one(self.objs, "ConfigMap", name=name)
            top = self.tmp / "volumes" / name
            stamp = top / f"..{time.strftime('%Y_%m_%d_%H_%M_%S')}.{uuid.uuid4().hex[:6]}"
            stamp.mkdir(parents=True)
            for key, text in cm["data"].items():
                (stamp / key).write_text(text)
            (top / "..data").symlink_to(stamp.name)
            for key in cm["data"]:
                (top / key).symlink_to(f"..data/{key}")
            self._volumes[name] = top
        return self._volumes[name]

    def mounts(self, pod_spec: dict[str, Any], container: dict[str, Any], pod_name: str) -> dict[str, Path]:
        """mountPath -> the local path of each volume mount of `container`."""
        volumes = {v["name"]: v for v in pod_spec.get("volumes", [])}
        out: dict[str, Path] = {}
        for m in container.get("volumeMounts", []):
            v = volumes[m["name"]]
            if "configMap" in v:
                local = self.configmap_folder(v["configMap"]["name"])
            elif "emptyDir" in v:
                local = self.tmp / "empty" / pod_name / v["name"]
                local.mkdir(parents=True, exist_ok=True)
            else:
                raise AssertionError(f"{pod_name}: the chart run has no volume like {v}")
            out[m["mountPath"]] = local / m["subPath"] if m.get("subPath") else local
        return out

    def services(self, text: str) -> str:
        """"<service>.<namespace>.svc.<domain>:<port>" -> the addresses of the Service's pods."""
        m = re.fullmatch(rf"([a-z0-9-]+)\.{NAMESPACE}\.svc(\.[a-z.]+)?:(\d+)", text)
        if not m:
            return text
        svc = one(self.objs, "Service", name=m.group(1))
        (port,) = [p for p in svc["spec"]["ports"] if p["port"] == int(m.group(3))]
        selector = svc["spec"]["selector"]
        picked = [p for p in self.pods if all(self._labels(p).get(k) == v for k, v in selector.items())]
        if not picked:  # nothing runs behind it (yet): left as it is
            return text
        return ",".join(p.address(port["targetPort"]) for p in picked)

    def _labels(self, pod: LocalPod) -> dict[str, str]:
        deployment = one(self.objs, "Deployment", pod.component)
        return dict(deployment["spec"]["template"]["metadata"]["labels"])

    def container(self, name: str, component: str, pod_spec: dict[str, Any],
                  container: dict[str, Any]) -> LocalPod:
        # This machine's own environment (not rewritten below: the checkout may live under a
        # path the pod mounts, e.g. /tmp).
        host_env = {"PATH": f"{VENV_BIN}:/usr/bin:/bin", "HOME": str(self.tmp), "LANG": "C.UTF-8",
                    "PYTHONUNBUFFERED": "1"}
        env: dict[str, str] = dict(host_env)
        for e in container.get("env", []):
            if "value" in e:
                env[e["name"]] = expand(str(e["value"]), env)
            else:
                ref = e["valueFrom"]["fieldRef"]["fieldPath"]
                env[e["name"]] = {"status.podIP": "127.0.0.1", "metadata.name": name}[ref]
        ports = {p["name"]: free_port() for p in container.get("ports", [])}
        by_container_port = {str(p["containerPort"]): ports[p["name"]] for p in container.get("ports", [])}
        mounts = self.mounts(pod_spec, container, name)

        def local(arg: str) -> str:
            arg = expand(arg, env)
            hp = re.fullmatch(r"(127\.0\.0\.1|0\.0\.0\.0):(\d+)", arg)
            if hp and hp.group(2) in by_container_port:  # this replica's own port (the pod IP's, or all)
                return f"{hp.group(1)}:{by_container_port[hp.group(2)]}"
            for path, there in mounts.items():  # a file or folder the pod mounts
                if arg == path or arg.startswith(path + "/"):
                    return str(there) + arg[len(path):]
            return self.services(arg)

        command = [local(a) for a in container.get("command", [])]
        if command and command[0] == "legato":
            command[0] = str(Path(VENV_BIN) / "legato")
        args = [local(a) for a in container.get("args", [])]
        if command[:2] == ["/bin/sh", "-c"] and mounts:  # a script: its paths are rewritten as text, once
            rx = re.compile("|".join(re.escape(m) for m in sorted(mounts, key=len, reverse=True)) + r"(?=/|\s|$)")
            args = [rx.sub(lambda m: str(mounts[m.group(0)]), a) for a in args]
        env = {k: v if host_env.get(k) == v else local(v) for k, v in env.items()}
        probes = {which: (container[f"{which}Probe"]["httpGet"]["path"], container[f"{which}Probe"]["httpGet"]["port"])
                  for which in ("liveness", "readiness") if f"{which}Probe" in container}
        return LocalPod(name, component, command, args, env, ports, probes)

    def pod(self, deployment: dict[str, Any], index: int) -> LocalPod:
        spec = deployment["spec"]["template"]["spec"]
        (container,) = spec["containers"]
        component = deployment["metadata"]["labels"]["app.kubernetes.io/component"]
        return self.container(f"{deployment['metadata']['name']}-{index}", component, spec, container)

    def start(self, deployment: dict[str, Any], index: int) -> LocalPod:
        pod = self.pod(deployment, index).start()
        self.pods.append(pod)
        return pod

    def run_job(self, job: dict[str, Any]) -> list[str]:
        """Run the Job's init containers, then its containers, each to completion (exit 0)."""
        spec = job["spec"]["template"]["spec"]
        outputs = []
        for c in [*spec.get("initContainers", []), *spec["containers"]]:
            pod = self.container(f"{job['metadata']['name']}-{c['name']}", "schema", spec, c)
            p = subprocess.run([*pod.command, *pod.args], env=pod.env, capture_output=True, text=True, timeout=300)
            assert p.returncode == 0, f"{c['name']}: exit {p.returncode}\n{p.stdout}\n{p.stderr[-3000:]}"
            outputs.append(p.stdout + p.stderr)
        return outputs

    def stop(self) -> None:
        order = {"worker": 0, "frontend": 1, "matching": 2, "history": 3}
        for pod in sorted(self.pods, key=lambda p: order[p.component]):
            pod.stop()
            (self.tmp / f"{pod.name}.log").write_text(pod.output())


# ---------------------------------------------------------------------- the chart run

async def eventually(cond: Any, what: str, timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while True:
        got = await asyncio.to_thread(cond)
        if got:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for: {what}")
        await asyncio.sleep(0.2)


def shard_owners(zookeeper: str, root: str) -> dict[int, str]:
    zk = KazooClient(hosts=zookeeper)
    zk.start(15)
    try:
        paths = Paths(root)
        out: dict[int, str] = {}
        for child in zk.get_children(paths.shards) if zk.exists(paths.shards) else []:
            try:
                data = loads(zk.get(paths.shard(int(child)))[0]) or {}
            except NoNodeError:
                continue
            out[int(child)] = str(data.get("address", ""))
        return out
    finally:
        zk.stop()
        zk.close()


def spread_over(owners: dict[int, str], addresses: set[str]) -> bool:
    counts = {a: sum(1 for o in owners.values() if o == a) for a in addresses}
    return (len(owners) == NUM_SHARDS and set(owners.values()) == addresses
            and max(counts.values()) - min(counts.values()) <= 1)


@dataclass
class ChartRun:
    zookeeper: str
    root: str
    store: StoreConfig
    queues: QueuesConfig


@pytest.fixture
async def chart_run(zookeeper_node: str, kafka_node: str, cassandra_node: StoreConfig) -> AsyncIterator[ChartRun]:
    """A keyspace, topic prefix and ZooKeeper root of this test's own, removed afterwards."""
    suffix = uuid.uuid4().hex[:10]
    run = ChartRun(zookeeper_node, f"/legato-test/chart-{suffix}",
                   cassandra_node.model_copy(update={"cassandra_keyspace": f"legato_chart_{suffix}"}),
                   QueuesConfig(kind="kafka", kafka_bootstrap=[kafka_node], topic_prefix=f"legato-chart-{suffix}",
                                task_partitions=4, timer_partitions=2))
    try:
        yield run
    finally:
        from history.store.cql import connect
        from legato.kafka_admin import delete_topics

        cluster, session = await asyncio.to_thread(connect, run.store, None)
        try:
            await asyncio.to_thread(session.execute, f"DROP KEYSPACE IF EXISTS {run.store.cassandra_keyspace}")
        finally:
            await asyncio.to_thread(cluster.shutdown)
        await delete_topics(run.queues)
        zk = KazooClient(hosts=run.zookeeper)
        zk.start(15)
        try:
            zk.delete(run.root, recursive=True)
        except NoNodeError:
            pass
        finally:
            zk.stop()
            zk.close()


def run_values(run: ChartRun, tmp: Path, history: int, listen: str) -> list[str]:
    values = {
        "listen": listen,
        "numHistoryShards": NUM_SHARDS,
        "logLevel": "INFO",
        "cassandra": {"hosts": run.store.cassandra_hosts, "keyspace": run.store.cassandra_keyspace,
                      "replicationFactor": 1},
        "kafka": {"bootstrap": run.queues.kafka_bootstrap, "topicPrefix": run.queues.topic_prefix,
                  "replicationFactor": 1, "taskPartitions": 4, "timerPartitions": 2},
        "zookeeper": {"hosts": [run.zookeeper], "root": run.root, "sessionTimeoutMs": 3000},
        # as the cluster tests run: quick retries, so that a workflow's task that meets a moving
        # shard goes again soon
        "config": {"history": {"workflow_task_timeout_ms": 3000, "workflow_task_retry_initial_ms": 100},
                   "cluster": {"route_timeout_ms": 60000, "shard_drain_timeout_ms": 3000},
                   "queues": {"matching_session_timeout_ms": 3000, "commit_interval_ms": 50}},
        "frontend": {"replicaCount": 2}, "history": {"replicaCount": history},
        "matching": {"replicaCount": 2}, "worker": {"replicaCount": 2, "app": {"source": "files"}},
    }
    path = tmp / f"values-{history}.yaml"
    path.write_text(yaml.safe_dump(values))
    files = [a for f in sorted(APP.iterdir())
             for a in ("--set-file", "worker.app.files." + f.name.replace(".", "\\.") + f"={f}")]
    return ["-f", str(path), *files]


async def run_workflows(frontends: str, prefix: str, count: int) -> None:
    async with GrpcClient(frontends, call_timeout_s=90) as c:
        async def one_workflow(n: int) -> None:
            wid = f"{prefix}-{n}"
            await c.start_workflow(StartWorkflowRequest(wid, "cluster:order", "cluster",
                                                        [{"n": n, "sleep": "200ms"}], request_id=wid))
            await c.signal_workflow(SignalWorkflowRequest(ExecutionRef(wid), "go", [n], request_id=f"{wid}-go"))
            r = await wait_result(c, ExecutionRef(wid), 120_000)
            assert (r.status, r.result) == (WorkflowStatus.COMPLETED, {
                "n": n, "worked": 2 * n, "go": [n], "part": 2 * (n + 1000)}), (wid, r)
        await asyncio.gather(*(one_workflow(n) for n in range(count)))


@pytest.fixture
def kubelet(tmp_path: Path) -> Iterator[list[LocalKubelet]]:
    made: list[LocalKubelet] = []
    try:
        yield made
    finally:
        for k in made:
            k.stop()


@pytest.mark.timeout(600)
@pytest.mark.parametrize("listen", ["all", "podIP"])
async def test_chart_run(helm: str, chart_run: ChartRun, tmp_path: Path, kubelet: list[LocalKubelet],
                         listen: str) -> None:
    """listen all: each process binds 0.0.0.0 and advertises $(POD_IP) (--advertise-host); podIP:
    it binds the pod IP, which it registers as it is."""
    run = chart_run
    objs = render(helm, *run_values(run, tmp_path, history=2, listen=listen))
    k = LocalKubelet(tmp_path, objs)
    kubelet.append(k)

    # the schema Job first: schema setup and the Kafka topics, in the test's own keyspace and prefix
    outputs = k.run_job(one(objs, "Job", "schema"))
    assert "created schema version" in outputs[0] and run.store.cassandra_keyspace in outputs[0], outputs[0]
    assert "created Kafka topics" in outputs[1], outputs[1]
    again = k.run_job(one(objs, "Job", "schema"))  # an upgrade's hook runs it again: a no-op
    assert "nothing to do" in again[0] and "nothing to do" in again[1], again

    deployments = {c: one(objs, "Deployment", c) for c in ("history", "matching", "frontend", "worker")}
    args = deployments["history"]["spec"]["template"]["spec"]["containers"][0]["args"]
    bind = "0.0.0.0" if listen == "all" else "$(POD_IP)"
    assert args[args.index("--history-address") + 1] == f"{bind}:7234"
    assert ("--advertise-host" in args) == (listen == "all")
    for component in ("history", "matching", "frontend"):
        d = deployments[component]
        assert d["spec"]["replicas"] == 2
        for i in range(2):
            k.start(d, i)

    def all_ready() -> bool:
        for pod in k.pods:
            assert pod.alive(), f"{pod.name} exited:\n{pod.output()[-3000:]}"
        return all(pod.probe("readiness") == 200 and pod.probe("liveness") == 200 for pod in k.pods)

    await eventually(all_ready, "every server pod passes its readiness and liveness probes")
    histories = {p.address("grpc") for p in k.pods if p.component == "history"}
    await eventually(lambda: spread_over(shard_owners(run.zookeeper, run.root), histories),
                     "the shards spread over the two history pods")
    for i in range(2):
        worker = k.start(deployments["worker"], i)
        frontends = {p.address("grpc") for p in k.pods if p.component == "frontend"}
        assert set(worker.args[worker.args.index("--address") + 1].split(",")) == frontends
    await eventually(all_ready, "the workers pass their probes")
    for pod in k.pods:
        assert "legato_" in pod.get("/metrics"), pod.name

    frontends_address = ",".join(sorted(p.address("grpc") for p in k.pods if p.component == "frontend"))
    await asyncio.wait_for(run_workflows(frontends_address, "chart-a", 20), 240)

    # scale history from 2 to 3 by rendering again: only the replica count changes
    objs3 = render(helm, *run_values(run, tmp_path, history=3, listen=listen))
    history3 = one(objs3, "Deployment", "history")
    assert history3["spec"]["replicas"] == 3
    assert history3["spec"]["template"] == deployments["history"]["spec"]["template"]
    k.objs = objs3
    third = k.start(history3, 2)
    await eventually(lambda: third.alive() and third.probe("readiness") == 200, "the third history pod is ready")
    histories.add(third.address("grpc"))
    await eventually(lambda: spread_over(shard_owners(run.zookeeper, run.root), histories),
                     "the shards spread over the three history pods")
    await asyncio.wait_for(run_workflows(frontends_address, "chart-b", 20), 240)
    owners = shard_owners(run.zookeeper, run.root)
    assert spread_over(owners, histories), owners

    for pod in k.pods:
        assert pod.alive(), f"{pod.name} exited:\n{pod.output()[-3000:]}"
    k.stop()
    assert all(not p.alive() for p in k.pods)
    shutil.rmtree(tmp_path / "volumes", ignore_errors=True)
