// The workflow list: a query in the query language, status chips, paging, live refresh.
import { useEffect, useRef, useState } from "preact/hooks";
import { ApiError, call, type Execution, qs } from "../api";
import { StatusBadge } from "../components";
import { ago, fmtDuration, fmtTime, href, navigate, STATUSES, statusLabel, useInterval, workflowHref } from "../util";

const PAGE_SIZES = [20, 50, 100];

/** The user's query with a status filter and without its ORDER BY (for counting), or with it. */
export function composeQuery(query: string, status: string): { list: string; count: string } {
  const m = /\border\s+by\b/i.exec(query);
  const where = (m ? query.slice(0, m.index) : query).trim();
  const order = m ? " " + query.slice(m.index).trim() : "";
  const parts = [where ? (status ? `(${where})` : where) : "", status ? `ExecutionStatus = '${status}'` : ""].filter(Boolean);
  const filter = parts.join(" AND ");
  return { list: (filter + order).trim(), count: where };
}

/** "at position 12" (1-based) in a query error: the index in the user's query to point at. */
function errorPosition(message: string, shift: number): number | null {
  const m = /at position (\d+)/.exec(message);
  return m ? Math.max(0, Number(m[1]) - 1 - shift) : null;
}

function QueryError({ query, error, shift }: { query: string; error: ApiError; shift: number }) {
  const pos = errorPosition(error.message, shift);
  return (
    <div class="error query-error" role="alert" id="query-error" data-testid="query-error">
      {pos !== null && pos <= query.length ? (
        <pre class="caret" aria-hidden="true">{query}{"\n"}{" ".repeat(pos)}^</pre>
      ) : null}
      {error.message}
    </div>
  );
}

export function WorkflowList({ ns, params }: { ns: string; params: URLSearchParams }) {
  const query = params.get("query") || "";
  const status = params.get("status") || "";
  const pageSize = Number(params.get("size")) || 50;
  const [draft, setDraft] = useState(query);
  const [rows, setRows] = useState<Execution[] | null>(null);
  const [tokens, setTokens] = useState<string[]>([""]); // the token of each page seen so far
  const [page, setPage] = useState(0);
  const [next, setNext] = useState("");
  const [error, setError] = useState<ApiError | null>(null);
  const [counts, setCounts] = useState<Record<string, number>>({});
  const [total, setTotal] = useState<number | null>(null);
  const [live, setLive] = useState(true);
  const [updated, setUpdated] = useState(0);
  const [shift, setShift] = useState(0);
  const seq = useRef(0);

  useEffect(() => setDraft(query), [query]);
  useEffect(() => { setTokens([""]); setPage(0); }, [ns, query, status, pageSize]);

  const load = async () => {
    const mine = ++seq.current;
    const q = composeQuery(query, status);
    try {
      const listing = call<{ executions: Execution[]; next_page_token: string }>("GET", `/namespaces/${encodeURIComponent(ns)}/workflows` +
        qs({ query: q.list, page_size: pageSize, next_page_token: tokens[page] }));
      const counting = call<{ count: number; groups: { value: string; count: number }[] }>("GET", `/namespaces/${encodeURIComponent(ns)}/workflow-count` +
        qs({ query: (q.count ? q.count + " " : "") + "GROUP BY ExecutionStatus" }));
      counting.catch(() => undefined); // its error, if any, is taken below (the list's first)
      setShift(status && q.count ? 1 : 0); // the list's query wraps the user's in "(" with a status
      const list = await listing;
      setShift(0);
      const count = await counting;
      if (mine !== seq.current) return;
      setRows(list.executions);
      setNext(list.next_page_token);
      setCounts(Object.fromEntries(count.groups.map((g) => [g.value, g.count])));
      setTotal(count.count);
      setError(null);
      setUpdated(Date.now());
    } catch (e) {
      if (mine !== seq.current) return;
      setError(e instanceof ApiError ? e : new ApiError(0, "UNKNOWN", String(e), ""));
      setRows((r) => (e instanceof ApiError && e.reason === "InvalidQuery" ? [] : r));
    }
  };

  useEffect(() => { void load(); }, [ns, query, status, pageSize, page, tokens]);
  // live: every 3 s (after an error too, but a wrong query, which only a new query mends)
  useInterval(() => { if (!document.hidden) void load(); }, live && error?.reason !== "InvalidQuery" ? 3000 : null);

  const go = (changes: Record<string, string>) => {
    const all = { query, status, size: pageSize === 50 ? "" : String(pageSize), ...changes };
    navigate(href(["workflows"], all));
  };
  const queryError = error && error.reason === "InvalidQuery" ? error : null;
  const now = Date.now();

  return (
    <section class="list">
      <h1>Workflows <span class="muted small">in {ns}</span></h1>
      <form class="query" role="search" onSubmit={(e) => { e.preventDefault(); go({ query: draft.trim() }); }}>
        <label for="query" class="sr-only">Query</label>
        <input id="query" name="query" type="search" value={draft} onInput={(e) => setDraft(e.currentTarget.value)}
          placeholder="WorkflowType = 'shop:order' AND StartTime > '2026-01-01'" spellcheck={false} autoComplete="off"
          aria-invalid={queryError ? "true" : undefined} aria-describedby={queryError ? "query-error" : "query-help"} />
        <button type="submit">Search</button>
        {query ? <button type="button" class="secondary" onClick={() => go({ query: "" })}>Clear</button> : null}
      </form>
      <p id="query-help" class="muted small">Fields: WorkflowId, WorkflowType, RunId, TaskQueue, ExecutionStatus, StartTime, CloseTime and
        search attributes; AND, OR, NOT, IN, BETWEEN; ORDER BY StartTime.</p>
      {queryError ? <QueryError query={query} error={queryError} shift={shift} /> : error ? <div class="error" role="alert">{error.message}</div> : null}

      <div class="chips" role="group" aria-label="Status filter">
        <button type="button" class="chip" aria-pressed={!status} onClick={() => go({ status: "" })}>
          all{total !== null ? <span class="count">{total}</span> : null}
        </button>
        {STATUSES.map((s) => (
          <button type="button" key={s} class={`chip st-${s.toLowerCase()}`} aria-pressed={status === s} data-status={s}
            onClick={() => go({ status: status === s ? "" : s })}>
            {statusLabel(s)}<span class="count">{counts[s] || 0}</span>
          </button>
        ))}
      </div>

      <div class="toolbar">
        <label class="inline"><input type="checkbox" checked={live} onChange={(e) => setLive(e.currentTarget.checked)} /> live refresh</label>
        <span class="muted small" aria-live="polite">{updated ? `updated ${fmtTime(updated).slice(11)}` : "loading…"}</span>
        <label class="inline">per page{" "}
          <select value={pageSize} onChange={(e) => go({ size: e.currentTarget.value })} aria-label="Workflows per page">
            {PAGE_SIZES.map((n) => <option value={n} key={n}>{n}</option>)}
          </select>
        </label>
      </div>

      <div class="table-wrap">
        <table class="workflows" aria-label="Workflows">
          <thead>
            <tr><th>Status</th><th>Workflow ID</th><th>Type</th><th>Started</th><th>Closed / running for</th></tr>
          </thead>
          <tbody>
            {rows === null ? <tr><td colSpan={5} class="muted">loading…</td></tr> : null}
            {rows !== null && rows.length === 0 ? <tr><td colSpan={5} class="muted">No workflows match.</td></tr> : null}
            {(rows || []).map((r) => (
              <tr key={r.run_id} data-workflow-id={r.workflow_id}>
                <td><StatusBadge status={r.status} /></td>
                <td class="id"><a href={workflowHref(r.namespace, r.workflow_id, r.run_id)}>{r.workflow_id}</a>
                  <div class="muted small mono">{r.run_id}</div></td>
                <td>{r.workflow_type}<div class="muted small">{r.task_queue}</div></td>
                <td title={fmtTime(r.start_time_ms)}>{fmtTime(r.start_time_ms)}<div class="muted small">{ago(r.start_time_ms, now)}</div></td>
                <td>{r.close_time_ms ? <>{fmtTime(r.close_time_ms)}<div class="muted small">took {fmtDuration(r.close_time_ms - r.start_time_ms)}</div></>
                  : <span class="muted">running for {fmtDuration(now - r.start_time_ms)}</span>}</td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
      <nav class="pager" aria-label="Pages of workflows">
        <button type="button" disabled={page === 0} onClick={() => setPage(0)} aria-label="First page">« First</button>
        <button type="button" disabled={page === 0} onClick={() => setPage(page - 1)} aria-label="Previous page">‹ Previous</button>
        <span>page {page + 1}</span>
        <button type="button" disabled={!next} aria-label="Next page"
          onClick={() => { setTokens([...tokens.slice(0, page + 1), next]); setPage(page + 1); }}>Next ›</button>
      </nav>
    </section>
  );
}
