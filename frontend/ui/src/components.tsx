// Pieces shared by the pages.
import type { ComponentChildren } from "preact";
import { useEffect, useRef } from "preact/hooks";
import type { Failure } from "./api";
import { json, statusLabel } from "./util";

export function StatusBadge({ status }: { status: string }) {
  return <span class={`badge st-${status.toLowerCase()}`} data-status={status}>{statusLabel(status)}</span>;
}

export function ErrorBox({ error, title }: { error: unknown; title?: string }) {
  if (!error) return null;
  const message = error instanceof Error ? error.message : String(error);
  return (
    <div class="error" role="alert">
      {title ? <strong>{title}: </strong> : null}
      {message}
    </div>
  );
}

export function Json({ value, label }: { value: unknown; label?: string }) {
  return <pre class="json" aria-label={label} tabIndex={0}>{value === undefined ? "—" : json(value)}</pre>;
}

export function FailureView({ failure, title }: { failure: Failure; title: string }) {
  return (
    <div class="failure" data-testid="failure">
      <div class="failure-head">
        <strong>{title}</strong> <span class="kind" title="the error's kind">{failure.kind}</span>
        {failure.retryable === false ? <span class="muted"> (not retryable)</span> : null}
      </div>
      <div class="failure-message">{failure.message}</div>
      {failure.source ? <div class="source">at <code data-testid="lua-source">{failure.source}</code></div> : null}
      {failure.cause ? <FailureView failure={failure.cause} title="caused by" /> : null}
    </div>
  );
}

/** A modal dialog (the browser's <dialog>: Escape closes it, focus stays inside). */
export function Modal(props: { title: string; open: boolean; onClose: () => void; children: ComponentChildren }) {
  const ref = useRef<HTMLDialogElement>(null);
  useEffect(() => {
    const d = ref.current;
    if (!d) return;
    if (props.open && !d.open) d.showModal();
    if (!props.open && d.open) d.close();
  }, [props.open]);
  return (
    <dialog ref={ref} onClose={props.onClose} aria-label={props.title}>
      <h2>{props.title}</h2>
      {props.open ? props.children : null}
    </dialog>
  );
}

export function Field(props: { label: string; children: ComponentChildren; hint?: string }) {
  return (
    <label class="field">
      <span>{props.label}</span>
      {props.children}
      {props.hint ? <small class="muted">{props.hint}</small> : null}
    </label>
  );
}
