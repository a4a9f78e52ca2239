// The family of a run: its ancestors up to the root, and its children as a tree that loads a page
// of children at a time and expands a branch only when asked (for runs with thousands of them).
import { useEffect, useState } from "preact/hooks";
import { call, type Child, type Description, qs, wf } from "../api";
import { ErrorBox, StatusBadge } from "../components";
import { workflowHref } from "../util";

const PAGE = 50;

interface Page { children: Child[]; next_page_token: string; run_id: string }

function Children({ ns, id, run, depth }: { ns: string; id: string; run: string; depth: number }) {
  const [items, setItems] = useState<Child[] | null>(null);
  const [next, setNext] = useState("");
  const [error, setError] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);
  const more = async (token: string) => {
    setBusy(true);
    try {
      const p = await call<Page>("GET", wf(ns, id, "/children") + qs({ run_id: token ? undefined : run, page_size: PAGE, next_page_token: token }));
      setItems((old) => [...(token ? old || [] : []), ...p.children]);
      setNext(p.next_page_token);
      setError(null);
    } catch (e) {
      setError(e);
    } finally {
      setBusy(false);
    }
  };
  useEffect(() => { void more(""); }, [ns, id, run]);
  if (error) return <ErrorBox error={error} />;
  if (items === null) return <div class="muted small">loading…</div>;
  if (!items.length) return depth === 0 ? <p class="muted">This run started no children.</p> : <div class="muted small">no children</div>;
  return (
    <ul class="tree" role={depth === 0 ? "tree" : "group"} aria-label={depth === 0 ? "Children" : undefined}>
      {items.map((c) => <Node key={`${c.workflow_id}/${c.run_id}`} child={c} depth={depth} />)}
      {next ? (
        <li>
          <button type="button" class="secondary small" disabled={busy} onClick={() => void more(next)}>
            {busy ? "loading…" : `Show more children (${items.length} shown)`}
          </button>
        </li>
      ) : null}
    </ul>
  );
}

function Node({ child, depth }: { child: Child; depth: number }) {
  const [open, setOpen] = useState(false);
  return (
    <li role="treeitem" aria-expanded={open} data-child={child.workflow_id}>
      <div class="tree-row">
        <button type="button" class="twisty" aria-label={`${open ? "Collapse" : "Expand"} the children of ${child.workflow_id}`}
          onClick={() => setOpen(!open)} disabled={!child.run_id}>{open ? "▾" : "▸"}</button>
        <StatusBadge status={child.status} />
        <a href={workflowHref(child.namespace, child.workflow_id, child.run_id)}>{child.workflow_id}</a>
        <span class="muted small">{child.workflow_type}</span>
        {child.failure ? <span class="small err-text">{child.failure}</span> : null}
      </div>
      {open && child.run_id ? <Children ns={child.namespace} id={child.workflow_id} run={child.run_id} depth={depth + 1} /> : null}
    </li>
  );
}

function Ancestors({ desc }: { desc: Description }) {
  const [chain, setChain] = useState<Description[]>([]);
  useEffect(() => {
    let stop = false;
    (async () => {
      const out: Description[] = [];
      let p = desc.parent;
      while (p && out.length < 20 && !stop) {
        const d = await call<Description>("GET", wf(p.namespace, p.workflow_id) + qs({ run_id: p.run_id })).catch(() => null);
        if (!d) break;
        out.unshift(d);
        p = d.parent;
      }
      if (!stop) setChain(out);
    })();
    return () => { stop = true; };
  }, [desc.info.run_id]);
  if (!desc.parent) return <p class="muted small">No parent: this run is a root.</p>;
  return (
    <ol class="ancestors" aria-label="Parents, root first">
      {chain.map((d) => (
        <li key={d.info.run_id}><StatusBadge status={d.info.status} />{" "}
          <a href={workflowHref(d.info.namespace, d.info.workflow_id, d.info.run_id)}>{d.info.workflow_id}</a>{" "}
          <span class="muted small">{d.info.workflow_type}</span></li>
      ))}
      <li aria-current="true"><StatusBadge status={desc.info.status} /> <strong>{desc.info.workflow_id}</strong> <span class="muted small">(this run)</span></li>
    </ol>
  );
}

export function Family({ desc }: { desc: Description }) {
  return (
    <div class="family">
      <h3>Parents</h3>
      <Ancestors desc={desc} />
      <h3>Children</h3>
      <Children ns={desc.info.namespace} id={desc.info.workflow_id} run={desc.info.run_id} depth={0} />
    </div>
  );
}
