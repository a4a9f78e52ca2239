// One workflow: summary, history (table, JSON, download), timeline, family tree, pending work, the
// Lua call stack, and the actions (signal, cancel, terminate, start another like it).
import { useEffect, useRef, useState } from "preact/hooks";
import { ApiError, call, type Description, type HistoryEvent, type HistoryPage, qs, type StackReport, wf } from "../api";
import { ErrorBox, FailureView, Json, StatusBadge } from "../components";
import { fmtDuration, fmtTime, href, navigate, short, workflowHref } from "../util";
import { Actions } from "./actions";
import { Timeline } from "./timeline";
import { Family } from "./tree";

const TABS = [
  ["summary", "Summary"], ["history", "History"], ["timeline", "Timeline"], ["family", "Parent & children"],
  ["pending", "Pending"], ["stack", "Call stack"],
] as const;

const HISTORY_PAGE = 500;
const QUIET = new Set(["identity", "request_id", "workflow_task_completed_event_id", "history_size_bytes", "random_seed"]);

/** The event's attributes as `name value` pairs, the noisy and empty ones left out. */
function details(e: HistoryEvent): string {
  return Object.entries(e.attrs || {})
    .filter(([k, v]) => !QUIET.has(k) && v !== null && v !== "" && !(typeof v === "number" && v === 0 && k.endsWith("_ms")) &&
      !(typeof v === "object" && !Array.isArray(v) && Object.keys(v).length === 0))
    .map(([k, v]) => `${k} ${short(v, 90)}`)
    .join(" · ");
}

/** The whole history, then new events as they come (a long poll) while the run is open. */
function useHistory(ns: string, id: string, run: string, onNew: () => void) {
  const [events, setEvents] = useState<HistoryEvent[]>([]);
  const [error, setError] = useState<unknown>(null);
  const [runId, setRunId] = useState(run);
  const [closed, setClosed] = useState(false);
  const onNewRef = useRef(onNew);
  onNewRef.current = onNew;
  useEffect(() => {
    const abort = new AbortController();
    let first = 1;
    let pinned = run;
    let all: HistoryEvent[] = [];
    (async () => {
      let wait = false;
      while (!abort.signal.aborted) {
        try {
          const p: HistoryPage = await call<HistoryPage>("GET", wf(ns, id, "/history") + qs({
            run_id: pinned, first_event_id: first, page_size: 1000, wait_new_event: wait || undefined, timeout_ms: wait ? 20000 : undefined,
          }), undefined, abort.signal);
          pinned = p.run_id;
          setRunId(p.run_id);
          if (p.events.length) {
            all = [...all, ...p.events];
            setEvents(all);
            if (wait) onNewRef.current();
          }
          setError(null);
          first = p.next_event_id;
          if (p.closed && p.events.length < 1000) { setClosed(true); if (!p.events.length || wait) break; }
          wait = p.events.length < 1000; // caught up: wait for new ones
          if (p.closed) break;
        } catch (e) {
          if (abort.signal.aborted) return;
          setError(e);
          await new Promise((r) => setTimeout(r, 3000));
        }
      }
    })();
    return () => abort.abort();
  }, [ns, id, run]);
  return { events, error, runId, closed };
}

function Summary({ desc, events }: { desc: Description; events: HistoryEvent[] }) {
  const i = desc.info;
  const started = events.find((e) => e.event_type === "WorkflowExecutionStarted");
  const end = i.close_time_ms || Date.now();
  return (
    <div class="summary">
      <dl class="facts">
        <dt>Status</dt><dd><StatusBadge status={i.status} /></dd>
        <dt>Workflow ID</dt><dd class="mono" data-testid="workflow-id">{i.workflow_id}</dd>
        <dt>Run ID</dt><dd class="mono">{i.run_id}</dd>
        <dt>Type</dt><dd>{i.workflow_type}</dd>
        <dt>Task queue</dt><dd>{i.task_queue}</dd>
        <dt>Namespace</dt><dd>{i.namespace}</dd>
        <dt>Started</dt><dd>{fmtTime(i.start_time_ms)}</dd>
        <dt>Closed</dt><dd>{i.close_time_ms ? `${fmtTime(i.close_time_ms)} (took ${fmtDuration(end - i.start_time_ms)})` : `running for ${fmtDuration(end - i.start_time_ms)}`}</dd>
        <dt>Parent</dt><dd>{desc.parent ? <a href={workflowHref(desc.parent.namespace, desc.parent.workflow_id, desc.parent.run_id)}>{desc.parent.workflow_id}</a> : <span class="muted">none</span>}</dd>
        <dt>History</dt><dd>{i.history_length} events</dd>
      </dl>
      {desc.last_workflow_task_failure ? (
        <FailureView failure={desc.last_workflow_task_failure} title={`Workflow task failing${desc.pending_workflow_task ? ` (attempt ${desc.pending_workflow_task.attempt})` : ""}`} />
      ) : null}
      {desc.failure ? <FailureView failure={desc.failure} title={`Workflow ${i.status.toLowerCase().replace("_", " ")}`} /> : null}
      <div class="grid2">
        <section><h3>Input</h3><Json value={started?.attrs.input} label="Input" /></section>
        <section><h3>Result</h3>{i.status === "COMPLETED" ? <Json value={desc.result} label="Result" /> : <p class="muted">{i.status === "RUNNING" ? "not yet" : "none (see the error above)"}</p>}</section>
        <section><h3>Memo</h3><Json value={i.memo} label="Memo" /></section>
        <section><h3>Search attributes</h3><Json value={i.search_attributes} label="Search attributes" /></section>
      </div>
    </div>
  );
}

function History({ events, id, runId, closed }: { events: HistoryEvent[]; id: string; runId: string; closed: boolean }) {
  const [asJson, setAsJson] = useState(false);
  const [open, setOpen] = useState<Set<number>>(new Set());
  const [shown, setShown] = useState(HISTORY_PAGE); // rows rendered (a history may have many thousands)
  const t0 = events.length ? events[0].timestamp_ms : 0;
  const download = () => {
    const blob = new Blob([JSON.stringify({ workflow_id: id, run_id: runId, events }, null, 2)], { type: "application/json" });
    const a = document.createElement("a");
    a.href = URL.createObjectURL(blob);
    a.download = `${id.replace(/[^\w.-]+/g, "_")}-${runId}-history.json`;
    document.body.appendChild(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(a.href), 1000);
  };
  const toggle = (n: number) => { const s = new Set(open); if (s.has(n)) s.delete(n); else s.add(n); setOpen(s); };
  return (
    <div class="history">
      <div class="toolbar">
        <div role="group" aria-label="View" class="seg">
          <button type="button" aria-pressed={!asJson} onClick={() => setAsJson(false)}>Table</button>
          <button type="button" aria-pressed={asJson} onClick={() => setAsJson(true)}>JSON</button>
        </div>
        <button type="button" class="secondary" onClick={download}>Download JSON</button>
        <span class="muted small">{events.length} events{closed ? "" : " · live"}</span>
      </div>
      {asJson ? <Json value={events} label="History as JSON" /> : (
        <div class="table-wrap">
          <table class="events" aria-label="History events">
            <thead><tr><th>#</th><th>Time</th><th>Event</th><th>Details</th></tr></thead>
            <tbody>
              {events.slice(0, shown).map((e) => {
                const failed = /Failed|TimedOut|Terminated/.test(e.event_type);
                return [
                  <tr key={e.event_id} class={failed ? "ev-failed" : ""} data-event-type={e.event_type}>
                    <td>{e.event_id}</td>
                    <td title={fmtTime(e.timestamp_ms)} class="nowrap">+{fmtDuration(e.timestamp_ms - t0)}</td>
                    <td><button type="button" class="link" aria-expanded={open.has(e.event_id)} onClick={() => toggle(e.event_id)}>{e.event_type}</button></td>
                    <td class="details">{details(e)}</td>
                  </tr>,
                  open.has(e.event_id) ? <tr key={`${e.event_id}-json`} class="ev-json"><td colSpan={4}><Json value={e} label={`Event ${e.event_id}`} /></td></tr> : null,
                ];
              })}
            </tbody>
          </table>
          {events.length > shown ? (
            <p class="more"><button type="button" class="secondary" onClick={() => setShown(shown + HISTORY_PAGE)}>
              Show {Math.min(HISTORY_PAGE, events.length - shown)} more events ({shown} of {events.length} shown)</button></p>
          ) : null}
        </div>
      )}
    </div>
  );
}

function Pending({ desc }: { desc: Description }) {
  const w = desc.pending_workflow_task;
  return (
    <div class="pending">
      <h3>Activities</h3>
      {desc.pending_activities.length === 0 ? <p class="muted">No pending activities.</p> : (
        <div class="table-wrap">
          <table aria-label="Pending activities">
            <thead><tr><th>Activity</th><th>State</th><th>Attempt</th><th>Scheduled for</th><th>Last failure</th></tr></thead>
            <tbody>
              {desc.pending_activities.map((a) => (
                <tr key={a.scheduled_event_id}>
                  <td>{a.activity_type} <span class="muted small">#{a.activity_id}</span></td>
                  <td>{a.state}</td><td>{a.attempt}</td><td>{fmtTime(a.scheduled_time_ms)}</td>
                  <td class="small">{a.last_failure ? `${a.last_failure.kind}: ${a.last_failure.message}` : ""}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
      <h3>Workflow task</h3>
      {w ? <p>{w.state}, attempt {w.attempt}{w.scheduled_time_ms ? `, scheduled ${fmtTime(w.scheduled_time_ms)}` : ""}</p> : <p class="muted">none</p>}
      <h3>Timers</h3>
      <p>{desc.pending_timers} pending</p>
    </div>
  );
}

// Where the stack came from (issue 14): the worker's cache, a worker's replay, or this server's.
const SOURCES: Record<string, string> = {
  "worker-cache": "from the cache of worker",
  "worker-replay": "replayed by worker",
  "frontend-replay": "replayed by the server (no worker answered)",
};

function Stack({ ns, id, runId, status }: { ns: string; id: string; runId: string; status: string }) {
  const [report, setReport] = useState<StackReport | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);
  const load = async () => {
    setBusy(true);
    try {
      setReport(await call<StackReport>("GET", wf(ns, id, "/stack") + qs({ run_id: runId })));
      setError(null);
    } catch (e) {
      setError(e);
    } finally {
      setBusy(false);
    }
  };
  useEffect(() => { void load(); }, [ns, id, runId, status]);
  return (
    <div class="stack" data-testid="stack">
      <div class="toolbar">
        <button type="button" class="secondary" onClick={() => void load()} disabled={busy}>{busy ? "Asking…" : "Refresh"}</button>
        {report ? <span class="muted small" data-testid="stack-source">{SOURCES[report.source] ?? report.source}{report.worker ? ` ${report.worker}` : ""}, as of event {report.replayed_events} (the last completed workflow task)</span> : null}
      </div>
      <ErrorBox error={error} title="No stack" />
      {report?.note ? <p class="muted">{report.note}</p> : null}
      {report?.coroutines.map((c) => (
        <section key={String(c.id)} class="coroutine">
          <h3>{c.main ? "main" : `coroutine ${c.id}`} <span class="muted small">({c.status})</span></h3>
          {c.frames.length === 0 ? <p class="muted small">not started yet</p> : (
            <ol class="frames">
              {c.frames.map((f, n) => <li key={n}><code>{f.source}:{f.line}</code>{f.function ? <span class="muted"> in {f.function}</span> : null}{n === 0 ? <span class="small muted"> ← waits here</span> : null}</li>)}
            </ol>
          )}
        </section>
      ))}
    </div>
  );
}

export function WorkflowPage({ ns, id, run, tab }: { ns: string; id: string; run: string; tab: string }) {
  const [desc, setDesc] = useState<Description | null>(null);
  const [error, setError] = useState<unknown>(null);
  const loadDesc = async () => {
    try {
      setDesc(await call<Description>("GET", wf(ns, id) + qs({ run_id: run })));
      setError(null);
    } catch (e) {
      setError(e);
    }
  };
  const { events, error: historyError, runId, closed } = useHistory(ns, id, run, () => void loadDesc());
  useEffect(() => { void loadDesc(); }, [ns, id, run]);
  useEffect(() => { if (closed) void loadDesc(); }, [closed]);
  const select = (t: string) => navigate(href(["workflows", id], { ns: ns === "default" ? undefined : ns, run, tab: t === "summary" ? undefined : t }));
  const onTabKey = (e: KeyboardEvent) => {
    const i = TABS.findIndex(([k]) => k === tab);
    const d = e.key === "ArrowRight" ? 1 : e.key === "ArrowLeft" ? -1 : 0;
    if (!d) return;
    e.preventDefault();
    const next = TABS[(i + d + TABS.length) % TABS.length][0];
    select(next);
    setTimeout(() => document.getElementById(`tab-${next}`)?.focus());
  };
  if (error && !desc) {
    return <section><h1 class="mono">{id}</h1><ErrorBox error={error} />{error instanceof ApiError && error.status === 404 ? <p><a href="#/">Back to the list</a></p> : null}</section>;
  }
  if (!desc) return <p class="muted">loading…</p>;
  const i = desc.info;
  return (
    <section class="workflow">
      <p class="crumbs"><a href="#/">Workflows</a> / <span class="mono">{i.workflow_id}</span></p>
      <div class="wf-head">
        <h1><span class="mono">{i.workflow_id}</span> <StatusBadge status={i.status} /></h1>
        <Actions desc={desc} events={events} onDone={() => void loadDesc()} />
      </div>
      <p class="muted small">{i.workflow_type} · {i.task_queue} · run {i.run_id}</p>
      <ErrorBox error={error || historyError} />
      <div role="tablist" aria-label="Workflow views" class="tabs" onKeyDown={onTabKey}>
        {TABS.map(([k, label]) => (
          <a key={k} id={`tab-${k}`} role="tab" href={href(["workflows", id], { ns: ns === "default" ? undefined : ns, run, tab: k === "summary" ? undefined : k })}
            aria-selected={tab === k} tabIndex={tab === k ? 0 : -1}>
            {label}{k === "pending" && desc.pending_activities.length ? ` (${desc.pending_activities.length})` : ""}
          </a>
        ))}
      </div>
      <div role="tabpanel" aria-labelledby={`tab-${tab}`} class="panel">
        {tab === "summary" ? <Summary desc={desc} events={events} /> : null}
        {tab === "history" ? <History events={events} id={id} runId={runId} closed={closed} /> : null}
        {tab === "timeline" ? <Timeline events={events} pending={desc.pending_activities} closeTime={i.close_time_ms} /> : null}
        {tab === "family" ? <Family desc={desc} /> : null}
        {tab === "pending" ? <Pending desc={desc} /> : null}
        {tab === "stack" ? <Stack ns={ns} id={id} runId={i.run_id} status={i.status} /> : null}
      </div>
    </section>
  );
}
