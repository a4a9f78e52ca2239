// The cluster: members and their roles, which history member owns each shard, task-queue backlogs.
import { useEffect, useState } from "preact/hooks";
import { call, type ClusterInfo } from "../api";
import { ErrorBox } from "../components";
import { fmtTime, useInterval } from "../util";

export function ClusterPage() {
  const [info, setInfo] = useState<ClusterInfo | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [updated, setUpdated] = useState(0);
  const load = async () => {
    try {
      setInfo(await call<ClusterInfo>("GET", "/cluster"));
      setError(null);
      setUpdated(Date.now());
    } catch (e) {
      setError(e);
    }
  };
  useEffect(() => { void load(); }, []);
  useInterval(() => { if (!document.hidden) void load(); }, 5000);
  const owners = new Map<string, number[]>();
  for (const [s, a] of Object.entries(info?.shards || {})) {
    const k = a ?? "(nobody)";
    owners.set(k, [...(owners.get(k) || []), Number(s)]);
  }
  return (
    <section class="cluster">
      <h1>Cluster</h1>
      <ErrorBox error={error} />
      {info ? (
        <>
          <p><strong>{info.mode}</strong> · {info.num_shards} shards · {info.members.length} member process(es)
            <span class="muted small"> · updated {fmtTime(updated).slice(11)}</span></p>
          {info.notes.map((n) => <p class="muted small" key={n}>{n}</p>)}
          <h2>Members</h2>
          <div class="table-wrap">
            <table aria-label="Members">
              <thead><tr><th>Identity</th><th>Roles</th><th>Host</th><th>Metrics</th></tr></thead>
              <tbody>
                {info.members.map((m) => (
                  <tr key={m.identity}>
                    <td class="mono">{m.identity}{m.self ? <span class="muted small"> (serving this page)</span> : null}</td>
                    <td>{Object.entries(m.roles).map(([r, a]) => <div key={r}><strong>{r}</strong> <span class="mono small">{a}</span></div>)}</td>
                    <td>{m.host}{m.pid ? ` (pid ${m.pid})` : ""}</td>
                    <td class="mono small">{m.metrics_address || "—"}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
          <h2>Shards</h2>
          <ul class="owners">
            {[...owners.entries()].map(([a, s]) => <li key={a}><span class="mono">{a}</span>: {s.length} shard(s)</li>)}
          </ul>
          <div class="shards" aria-label="Shard owners">
            {Object.entries(info.shards).map(([s, a]) => (
              <span key={s} class={`shard ${a ? "" : "unowned"}`} title={`shard ${s}: ${a ?? "nobody right now"}`}>{s}</span>
            ))}
          </div>
          <h2>Task queues</h2>
          {info.queues.length === 0 ? <p class="muted">No task queue has been used yet.</p> : (
            <div class="table-wrap">
              <table aria-label="Task queues">
                <thead><tr><th>Task queue</th><th>Namespace</th><th>Kind</th><th>Backlog</th><th>Waiting polls</th><th>Matching member</th></tr></thead>
                <tbody>
                  {info.queues.map((q) => (
                    <tr key={`${q.member}/${q.namespace}/${q.task_queue}/${q.kind}`}>
                      <td>{q.task_queue}</td><td>{q.namespace || "—"}</td><td>{q.kind}</td>
                      <td class={q.backlog ? "warn" : ""}>{q.backlog}</td><td>{q.pollers}</td>
                      <td class="mono small">{q.member}</td>
                    </tr>
                  ))}
                </tbody>
              </table>
            </div>
          )}
        </>
      ) : !error ? <p class="muted">loading…</p> : null}
    </section>
  );
}
