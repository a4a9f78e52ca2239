// Small helpers: the hash router, times and durations, JSON text.
import { useEffect, useRef, useState } from "preact/hooks";

export interface Route {
  path: string[];
  params: URLSearchParams;
}

export function parseHash(hash: string): Route {
  const raw = hash.replace(/^#/, "") || "/";
  const [p, q = ""] = raw.split("?", 2);
  return { path: p.split("/").filter(Boolean).map(decodeURIComponent), params: new URLSearchParams(q) };
}

export function useRoute(): Route {
  const [route, setRoute] = useState(() => parseHash(location.hash));
  useEffect(() => {
    const on = () => setRoute(parseHash(location.hash));
    addEventListener("hashchange", on);
    return () => removeEventListener("hashchange", on);
  }, []);
  return route;
}

export function href(path: string[], params: Record<string, string | undefined> = {}): string {
  const u = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v) u.set(k, v);
  const q = u.toString();
  return "#/" + path.map(encodeURIComponent).join("/") + (q ? `?${q}` : "");
}

export function workflowHref(ns: string, id: string, run = "", tab = ""): string {
  return href(["workflows", id], { ns: ns === "default" ? undefined : ns, run, tab });
}

export function navigate(to: string): void {
  location.hash = to.replace(/^#/, "");
}

function pad(n: number, w = 2): string {
  return String(n).padStart(w, "0");
}

/** 2026-12-05 05:40:12 (local time) */
export function fmtTime(ms: number): string {
  if (!ms) return "";
  const d = new Date(ms);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

export function fmtDuration(ms: number): string {
  if (ms < 0) ms = 0;
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const s = ms / 1000;
  if (s < 60) return `${s.toFixed(s < 10 ? 2 : 1)} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${Math.round(s % 60)} s`;
  const h = Math.floor(m / 60);
  if (h < 48) return `${h} h ${m % 60} min`;
  return `${Math.floor(h / 24)} d ${h % 24} h`;
}

export function ago(ms: number, now = Date.now()): string {
  return ms ? `${fmtDuration(now - ms)} ago` : "";
}

export function json(value: unknown, indent = 2): string {
  if (value === undefined) return "";
  return JSON.stringify(value, null, indent);
}

export function short(value: unknown, max = 120): string {
  const s = typeof value === "string" ? value : JSON.stringify(value);
  if (s === undefined) return "";
  return s.length > max ? s.slice(0, max - 1) + "…" : s;
}

/** Calls the latest `fn` every `ms` (null: paused). */
export function useInterval(fn: () => void, ms: number | null): void {
  const saved = useRef(fn);
  saved.current = fn;
  useEffect(() => {
    if (ms === null) return;
    const t = setInterval(() => saved.current(), ms);
    return () => clearInterval(t);
  }, [ms]);
}

export const STATUSES = ["RUNNING", "COMPLETED", "FAILED", "CANCELED", "TERMINATED", "TIMED_OUT", "CONTINUED_AS_NEW"];

export function statusLabel(s: string): string {
  return s.toLowerCase().replace(/_/g, " ");
}
