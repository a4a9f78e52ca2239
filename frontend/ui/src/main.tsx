// Legato's web UI: workflows, one workflow, the cluster. A hash router keeps every view a link.
import { render } from "preact";
import { useState } from "preact/hooks";
import { namespace, setNamespace, setToken, token } from "./api";
import { ClusterPage } from "./pages/cluster";
import { WorkflowList } from "./pages/list";
import { WorkflowPage } from "./pages/workflow";
import { useRoute } from "./util";
import "./style.css";

function Header({ ns, onNs, onToken }: { ns: string; onNs: (ns: string) => void; onToken: () => void }) {
  const route = useRoute();
  const [editing, setEditing] = useState(false);
  const here = route.path[0] || "workflows";
  return (
    <header class="top">
      <a class="brand" href="#/">Legato</a>
      <nav aria-label="Pages">
        <a href="#/" aria-current={here === "workflows" ? "page" : undefined}>Workflows</a>
        <a href="#/cluster" aria-current={here === "cluster" ? "page" : undefined}>Cluster</a>
      </nav>
      <form class="ns" onSubmit={(e) => { e.preventDefault(); const v = (e.currentTarget.elements.namedItem("ns") as HTMLInputElement).value.trim(); onNs(v || "default"); }}>
        <label>
          <span class="muted">namespace</span>
          <input name="ns" value={ns} size={10} aria-label="Namespace" />
        </label>
      </form>
      <button type="button" class="link" onClick={() => setEditing(!editing)} aria-expanded={editing}>
        {token() ? "token ✓" : "token"}
      </button>
      {editing ? (
        <form class="token" onSubmit={(e) => { e.preventDefault(); setToken((e.currentTarget.elements.namedItem("token") as HTMLInputElement).value.trim()); setEditing(false); onToken(); }}>
          <input name="token" type="password" placeholder="Bearer token (legato token issue)" aria-label="Access token" value={token()} />
          <button type="submit">Save</button>
        </form>
      ) : null}
    </header>
  );
}

function App() {
  const route = useRoute();
  const [ns, setNs] = useState(namespace());
  const [version, setVersion] = useState(0); // a new token: every page loads again
  const routeNs = route.params.get("ns") || ns;
  const onNs = (v: string) => { setNamespace(v); setNs(v); };
  let page;
  if (route.path[0] === "cluster") page = <ClusterPage key={version} />;
  else if (route.path[0] === "workflows" && route.path.length > 1)
    page = <WorkflowPage key={`${version}/${routeNs}/${route.path[1]}/${route.params.get("run") || ""}`} ns={routeNs} id={route.path[1]} run={route.params.get("run") || ""} tab={route.params.get("tab") || "summary"} />;
  else page = <WorkflowList key={version} ns={ns} params={route.params} />;
  return (
    <>
      <button type="button" class="skip" onClick={() => document.getElementById("main")?.focus()}>Skip to content</button>
      <Header ns={ns} onNs={onNs} onToken={() => setVersion(version + 1)} />
      <main id="main" tabIndex={-1}>{page}</main>
    </>
  );
}

render(<App />, document.getElementById("app")!);
