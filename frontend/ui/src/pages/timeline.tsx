// A timeline of a run: its activities, timers and children as bars over time, with retries and
// failures marked; workflow-task failures and signals as ticks.
import { useState } from "preact/hooks";
import type { Failure, HistoryEvent, PendingActivity } from "../api";
import { fmtDuration, short } from "../util";

export interface Bar {
  key: string;
  kind: "activity" | "timer" | "child";
  label: string;
  start: number;
  firstRun?: number; // when the attempt that ran last started (after retries)
  end: number | null; // null: still open
  outcome: "running" | "completed" | "failed" | "timed out" | "canceled" | "fired" | "terminated";
  attempts: number;
  lastFailure?: Failure | null;
  detail: string;
}

export interface Tick {
  key: string;
  at: number;
  kind: "signal" | "task-failed";
  label: string;
}

const CHILD_END: Record<string, Bar["outcome"]> = {
  ChildWorkflowExecutionCompleted: "completed", ChildWorkflowExecutionFailed: "failed",
  ChildWorkflowExecutionCanceled: "canceled", ChildWorkflowExecutionTerminated: "terminated",
  ChildWorkflowExecutionTimedOut: "timed out", StartChildWorkflowExecutionFailed: "failed",
};
const ACTIVITY_END: Record<string, Bar["outcome"]> = {
  ActivityTaskCompleted: "completed", ActivityTaskFailed: "failed", ActivityTaskTimedOut: "timed out",
  ActivityTaskCanceled: "canceled",
};

export function buildTimeline(events: HistoryEvent[], pending: PendingActivity[] = []): { bars: Bar[]; ticks: Tick[] } {
  const bars = new Map<number, Bar>(); // by the event that opened it
  const timers = new Map<string, number>();
  const ticks: Tick[] = [];
  for (const e of events) {
    const a = e.attrs || {};
    const t = e.timestamp_ms;
    switch (e.event_type) {
      case "ActivityTaskScheduled":
        bars.set(e.event_id, { key: `a${e.event_id}`, kind: "activity", label: `${a.activity_type} #${a.activity_id}`, start: t, end: null,
          outcome: "running", attempts: 1, detail: `input ${short(a.input, 60)}` });
        break;
      case "ActivityTaskStarted": {
        const b = bars.get(a.scheduled_event_id);
        if (b) { b.attempts = a.attempt || 1; b.firstRun = t; b.lastFailure = a.last_failure; }
        break;
      }
      case "TimerStarted":
        timers.set(String(a.timer_id), e.event_id);
        bars.set(e.event_id, { key: `t${e.event_id}`, kind: "timer", label: `timer ${a.timer_id} (${fmtDuration(a.start_to_fire_timeout_ms || 0)})`,
          start: t, end: null, outcome: "running", attempts: 1, detail: "" });
        break;
      case "TimerFired":
      case "TimerCanceled": {
        const b = bars.get(a.started_event_id ?? timers.get(String(a.timer_id)));
        if (b) { b.end = t; b.outcome = e.event_type === "TimerFired" ? "fired" : "canceled"; }
        break;
      }
      case "StartChildWorkflowExecutionInitiated":
        bars.set(e.event_id, { key: `c${e.event_id}`, kind: "child", label: `${a.workflow_type} ${a.workflow_id}`, start: t, end: null,
          outcome: "running", attempts: 1, detail: `child ${a.workflow_id}` });
        break;
      case "WorkflowExecutionSignaled":
        ticks.push({ key: `s${e.event_id}`, at: t, kind: "signal", label: `signal ${a.signal_name ?? a.topic ?? ""}` });
        break;
      case "WorkflowTaskFailed":
      case "WorkflowTaskTimedOut":
        ticks.push({ key: `w${e.event_id}`, at: t, kind: "task-failed",
          label: `workflow task ${e.event_type === "WorkflowTaskFailed" ? "failed" : "timed out"}${a.failure ? ": " + short(a.failure.message, 80) : ""}` });
        break;
      default: {
        const act = ACTIVITY_END[e.event_type];
        if (act) {
          const b = bars.get(a.scheduled_event_id);
          if (b) {
            b.end = t; b.outcome = act;
            if (a.failure) b.lastFailure = a.failure;
            b.detail = act === "completed" ? `result ${short(a.result, 60)}` : short(a.failure?.message ?? "", 100);
          }
        }
        const child = CHILD_END[e.event_type];
        if (child) {
          const b = bars.get(a.initiated_event_id);
          if (b) {
            b.end = t; b.outcome = child;
            b.detail = child === "completed" ? `result ${short(a.result, 60)}` : short(a.failure?.message ?? a.cause ?? "", 100);
          }
        }
      }
    }
  }
  for (const p of pending) {
    const b = bars.get(p.scheduled_event_id);
    if (b && b.end === null) {
      b.attempts = Math.max(b.attempts, p.attempt);
      if (p.last_failure) b.lastFailure = p.last_failure;
      if (p.state === "BACKOFF") b.detail = `waiting to retry (attempt ${p.attempt})`;
    }
  }
  return { bars: [...bars.values()], ticks };
}

const BARS_PAGE = 300;

export function Timeline({ events, pending, closeTime }: { events: HistoryEvent[]; pending: PendingActivity[]; closeTime: number }) {
  const [shown, setShown] = useState(BARS_PAGE); // bars drawn (a run may have thousands)
  const { bars, ticks } = buildTimeline(events, pending);
  if (!events.length) return <p class="muted">No events yet.</p>;
  const t0 = events[0].timestamp_ms;
  const last = events[events.length - 1].timestamp_ms;
  // a closed run: up to its close; an open one: up to its last event and a little more (bars still
  // open run to the edge), so that a run waiting for days does not squeeze its work into a line
  const t1 = closeTime ? Math.max(closeTime, last, t0 + 1) : Math.max(last + (last - t0) * 0.1, t0 + 1000);
  const span = t1 - t0;
  const pct = (t: number) => `${(((t - t0) / span) * 100).toFixed(3)}%`;
  const width = (a: number, b: number) => `${Math.max(((b - a) / span) * 100, 0.6).toFixed(3)}%`;
  return (
    <div class="timeline" data-testid="timeline">
      <div class="axis muted small"><span>0</span><span>{fmtDuration(span / 2)}</span><span>{fmtDuration(span)}{closeTime ? "" : " →"}</span></div>
      <p class="legend small muted">
        <span class="key out-completed" /> completed / fired <span class="key out-failed" /> failed / timed out
        <span class="key retrying" /> retrying (before the last attempt) <span class="key out-running" /> still open
      </p>
      {bars.length === 0 ? <p class="muted">This run has no activities, timers or children.</p> : null}
      <ul class="bars" aria-label="Activities, timers and children over time">
        {bars.slice(0, shown).map((b) => {
          const end = b.end ?? Math.max(t1, Date.now());
          const retried = b.attempts > 1;
          const text = `${b.label}: ${b.outcome}${retried ? `, ${b.attempts} attempts` : ""}, ${fmtDuration(end - b.start)}` +
            (b.lastFailure ? ` — last failure: ${b.lastFailure.message}` : "") + (b.detail ? ` — ${b.detail}` : "");
          return (
            <li key={b.key} class={`bar-row kind-${b.kind}`} data-kind={b.kind} data-outcome={b.outcome} data-attempts={b.attempts} title={text} tabIndex={0} aria-label={text}>
              <div class="bar-label">
                <span class="kind-tag">{b.kind}</span> {b.label}
                {retried ? <span class="retries" title={b.lastFailure?.message}> ↻ {b.attempts - 1} {b.attempts === 2 ? "retry" : "retries"}</span> : null}
              </div>
              <div class="bar-track">
                {retried && b.firstRun ? <div class="bar retrying" style={{ left: pct(b.start), width: width(b.start, b.firstRun) }} /> : null}
                <div class={`bar out-${b.outcome.replace(" ", "-")}`}
                  style={{ left: pct(retried && b.firstRun ? b.firstRun : b.start), width: width(retried && b.firstRun ? b.firstRun : b.start, Math.min(end, t1)) }} />
              </div>
              <div class="bar-info muted small">{b.outcome}{b.outcome === "failed" || b.outcome === "timed out" ? " ✗" : ""} · {fmtDuration(end - b.start)}
                {b.detail ? ` · ${b.detail}` : ""}</div>
            </li>
          );
        })}
      </ul>
      {bars.length > shown ? (
        <p class="more"><button type="button" class="secondary" onClick={() => setShown(shown + BARS_PAGE)}>
          Show {Math.min(BARS_PAGE, bars.length - shown)} more ({shown} of {bars.length} shown)</button></p>
      ) : null}
      {ticks.length ? (
        <div class="ticks" aria-label="Signals and workflow-task failures">
          <div class="bar-track">
            {ticks.map((t) => <span key={t.key} class={`tick ${t.kind}`} style={{ left: pct(t.at) }} title={t.label} />)}
          </div>
          <ul class="small muted">{ticks.map((t) => <li key={t.key}>{fmtDuration(t.at - t0)}: {t.label}</li>)}</ul>
        </div>
      ) : null}
    </div>
  );
}
