// The HTTP JSON API of the same origin (frontend/openapi.yaml), and the types of its answers.

export const PREFIX = "/api/v1";
const TOKEN_KEY = "legato.token";
const NAMESPACE_KEY = "legato.namespace";

export type Status = "RUNNING" | "COMPLETED" | "FAILED" | "CANCELED" | "TERMINATED" | "CONTINUED_AS_NEW" | "TIMED_OUT";

export interface Execution {
  namespace: string;
  workflow_id: string;
  run_id: string;
  workflow_type: string;
  task_queue: string;
  status: Status;
  start_time_ms: number;
  close_time_ms: number;
  history_length: number;
  memo: Record<string, unknown>;
  search_attributes: Record<string, unknown>;
}

export interface Failure {
  message: string;
  kind: string;
  retryable?: boolean;
  source?: string;
  cause?: Failure | null;
  [k: string]: unknown;
}

export interface PendingActivity {
  activity_id: string;
  activity_type: string;
  scheduled_event_id: number;
  state: string;
  attempt: number;
  last_failure: Failure | null;
  scheduled_time_ms: number;
  last_started_time_ms: number;
}

export interface Description {
  info: Execution;
  pending_activities: PendingActivity[];
  pending_workflow_task: { state: string; attempt: number; scheduled_time_ms: number } | null;
  last_workflow_task_failure: Failure | null;
  pending_timers: number;
  result: unknown;
  failure: Failure | null;
  parent: { namespace: string; workflow_id: string; run_id: string; initiated_event_id: number } | null;
}

export interface HistoryEvent {
  event_id: number;
  event_type: string;
  timestamp_ms: number;
  attrs: Record<string, any>;
}

export interface HistoryPage {
  run_id: string;
  events: HistoryEvent[];
  next_event_id: number;
  closed: boolean;
}

export interface Child {
  workflow_id: string;
  run_id: string;
  workflow_type: string;
  namespace: string;
  status: string;
  failure: string;
}

export interface StackReport {
  workflow_id: string;
  run_id: string;
  status: string;
  workflow_type: string;
  events: number;
  replayed_events: number;
  note?: string;
  source: "worker-cache" | "worker-replay" | "frontend-replay";
  worker: string;
  coroutines: { id: unknown; main: boolean; status: string; frames: { source: string; line: number; function: string | null }[] }[];
}

export interface ClusterInfo {
  mode: string;
  identity?: string;
  num_shards: number;
  members: { identity: string; roles: Record<string, string>; host: string; pid: number; metrics_address: string; self: boolean }[];
  shards: Record<string, string | null>;
  queues: { namespace: string; task_queue: string; kind: string; backlog: number; pollers: number; member: string }[];
  notes: string[];
}

/** An error answer of the API: `{"error": {"code", "message", "reason", "type"}}`. */
export class ApiError extends Error {
  constructor(public status: number, public code: string, message: string, public reason: string) {
    super(message);
  }
}

export function token(): string {
  return localStorage.getItem(TOKEN_KEY) || "";
}

export function setToken(value: string): void {
  if (value) localStorage.setItem(TOKEN_KEY, value);
  else localStorage.removeItem(TOKEN_KEY);
}

export function namespace(): string {
  return localStorage.getItem(NAMESPACE_KEY) || "default";
}

export function setNamespace(value: string): void {
  localStorage.setItem(NAMESPACE_KEY, value || "default");
}

export async function call<T>(method: string, path: string, body?: unknown, signal?: AbortSignal): Promise<T> {
  const headers: Record<string, string> = { Accept: "application/json" };
  const t = token();
  if (t) headers.Authorization = `Bearer ${t}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let resp: Response;
  try {
    resp = await fetch(PREFIX + path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), signal });
  } catch (e) {
    if ((e as Error).name === "AbortError") throw e;
    throw new ApiError(0, "UNAVAILABLE", `the server does not answer (${(e as Error).message})`, "Unreachable");
  }
  const text = await resp.text();
  let data: any = {};
  try {
    data = text ? JSON.parse(text) : {};
  } catch {
    throw new ApiError(resp.status, "UNKNOWN", `the server answered ${resp.status} with something that is not JSON`, "NotJson");
  }
  if (!resp.ok) {
    const err = data.error || {};
    throw new ApiError(resp.status, err.code || String(resp.status), err.message || resp.statusText, err.reason || "");
  }
  return data as T;
}

export function qs(params: Record<string, string | number | boolean | undefined>): string {
  const u = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== "") u.set(k, String(v));
  const s = u.toString();
  return s ? `?${s}` : "";
}

export function wf(ns: string, id: string, rest = ""): string {
  return `/namespaces/${encodeURIComponent(ns)}/workflows/${encodeURIComponent(id)}${rest}`;
}
