// Signal, cancel, terminate, and start another run like this one: each asks before it acts.
import { useState } from "preact/hooks";
import { call, type Description, type HistoryEvent, wf } from "../api";
import { ErrorBox, Field, Modal } from "../components";
import { navigate, workflowHref } from "../util";

type Kind = "signal" | "cancel" | "terminate" | "start" | null;

function parseJson(text: string, what: string): unknown {
  if (!text.trim()) return undefined;
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new Error(`${what} is not valid JSON: ${(e as Error).message}`);
  }
}

export function Actions({ desc, events, onDone }: { desc: Description; events: HistoryEvent[]; onDone: () => void }) {
  const [open, setOpen] = useState<Kind>(null);
  const [error, setError] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);
  const [notice, setNotice] = useState("");
  const i = desc.info;
  const running = i.status === "RUNNING";
  const ref = (rest: string) => wf(i.namespace, i.workflow_id, rest);
  const started = events.find((e) => e.event_type === "WorkflowExecutionStarted");

  const show = (k: Kind) => { setError(null); setOpen(k); };
  const act = async (fn: () => Promise<string | void>) => {
    setBusy(true);
    try {
      const msg = await fn();
      setOpen(null);
      setNotice(msg || "");
      onDone();
    } catch (e) {
      setError(e);
    } finally {
      setBusy(false);
    }
  };
  const value = (form: HTMLFormElement, name: string) => (form.elements.namedItem(name) as HTMLInputElement | HTMLTextAreaElement).value;

  return (
    <div class="actions">
      <div class="buttons">
        <button type="button" disabled={!running} onClick={() => show("signal")}>Signal</button>
        <button type="button" class="secondary" disabled={!running} onClick={() => show("cancel")}>Cancel</button>
        <button type="button" class="danger" disabled={!running} onClick={() => show("terminate")}>Terminate</button>
        <button type="button" class="secondary" onClick={() => show("start")}>Start like this</button>
      </div>
      {notice ? <p class="notice small" role="status">{notice}</p> : null}

      <Modal title={`Signal ${i.workflow_id}`} open={open === "signal"} onClose={() => setOpen(null)}>
        <form method="dialog" onInput={() => setError(null)} onSubmit={(e) => {
          e.preventDefault();
          const f = e.currentTarget;
          void act(async () => {
            const topic = value(f, "topic").trim();
            if (!topic) throw new Error("the signal needs a topic");
            const input = parseJson(value(f, "payload"), "the payload");
            await call("POST", ref("/signal"), { signal_name: topic, input: input ?? null, run_id: i.run_id });
            return `signal ${topic} sent`;
          });
        }}>
          <Field label="Topic (signal name)"><input name="topic" required autoFocus /></Field>
          <Field label="Payload (JSON)" hint="empty: null"><textarea name="payload" rows={5} spellcheck={false} /></Field>
          <ErrorBox error={error} />
          <div class="buttons"><button type="submit" disabled={busy}>Send signal</button>
            <button type="button" class="secondary" onClick={() => setOpen(null)}>Close</button></div>
        </form>
      </Modal>

      <Modal title={`Cancel ${i.workflow_id}?`} open={open === "cancel"} onClose={() => setOpen(null)}>
        <form method="dialog" onInput={() => setError(null)} onSubmit={(e) => {
          e.preventDefault();
          const f = e.currentTarget;
          void act(async () => { await call("POST", ref("/cancel"), { run_id: i.run_id, reason: value(f, "reason") }); return "cancellation requested"; });
        }}>
          <p>The workflow is asked to cancel; its code decides how to wind down.</p>
          <Field label="Reason"><input name="reason" autoFocus /></Field>
          <ErrorBox error={error} />
          <div class="buttons"><button type="submit" disabled={busy}>Request cancellation</button>
            <button type="button" class="secondary" onClick={() => setOpen(null)}>Keep running</button></div>
        </form>
      </Modal>

      <Modal title={`Terminate ${i.workflow_id}?`} open={open === "terminate"} onClose={() => setOpen(null)}>
        <form method="dialog" onInput={() => setError(null)} onSubmit={(e) => {
          e.preventDefault();
          const f = e.currentTarget;
          void act(async () => { await call("POST", ref("/terminate"), { run_id: i.run_id, reason: value(f, "reason") }); return "terminated"; });
        }}>
          <p>Terminating ends the run at once: its code gets no chance to clean up.</p>
          <Field label="Reason"><input name="reason" required autoFocus /></Field>
          <ErrorBox error={error} />
          <div class="buttons"><button type="submit" class="danger" disabled={busy}>Terminate</button>
            <button type="button" class="secondary" onClick={() => setOpen(null)}>Keep running</button></div>
        </form>
      </Modal>

      <Modal title="Start a new workflow like this one" open={open === "start"} onClose={() => setOpen(null)}>
        <form method="dialog" onInput={() => setError(null)} onSubmit={(e) => {
          e.preventDefault();
          const f = e.currentTarget;
          void act(async () => {
            const id = value(f, "workflow_id").trim();
            const input = parseJson(value(f, "input"), "the input");
            if (input !== undefined && !Array.isArray(input)) throw new Error("the input must be a JSON array (the workflow's arguments)");
            const body = {
              workflow_id: id, workflow_type: value(f, "workflow_type").trim(), task_queue: value(f, "task_queue").trim(),
              input: input ?? [], memo: parseJson(value(f, "memo"), "the memo") ?? {},
              search_attributes: parseJson(value(f, "search_attributes"), "the search attributes") ?? {},
            };
            const r = await call<{ run_id: string }>("POST", `/namespaces/${encodeURIComponent(i.namespace)}/workflows`, body);
            navigate(workflowHref(i.namespace, id, r.run_id));
          });
        }}>
          <Field label="Workflow ID"><input name="workflow_id" required value={`${i.workflow_id}-${Date.now().toString(36)}`} autoFocus /></Field>
          <Field label="Type"><input name="workflow_type" required value={i.workflow_type} /></Field>
          <Field label="Task queue"><input name="task_queue" required value={i.task_queue} /></Field>
          <Field label="Input (JSON array)"><textarea name="input" rows={4} spellcheck={false} value={JSON.stringify(started?.attrs.input ?? [], null, 1)} /></Field>
          <Field label="Memo (JSON)"><textarea name="memo" rows={2} spellcheck={false} value={JSON.stringify(i.memo)} /></Field>
          <Field label="Search attributes (JSON)"><textarea name="search_attributes" rows={2} spellcheck={false} value={JSON.stringify(i.search_attributes)} /></Field>
          <ErrorBox error={error} />
          <div class="buttons"><button type="submit" disabled={busy}>Start</button>
            <button type="button" class="secondary" onClick={() => setOpen(null)}>Close</button></div>
        </form>
      </Modal>
    </div>
  );
}
