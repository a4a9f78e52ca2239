"""Wippy processes on Legato (issue 15): non-durable Lua processes (`process.lua`) run by
`process.host` entries inside `legato worker`, and their supervision (`process.service`).

* `kinds`: the registry entries (parsed from YAML with file:line errors);
* `control`: the reserved mailbox topics that carry spawns, exits, links and terminations
  between processes, callers and hosts (through the caller mailboxes of matching);
* `process`: one running process (a `worker.caller.Caller` whose entry is a `process.lua`);
* `host`: the hosts of a worker (their spawn mailboxes, the live processes, listing);
* `supervisor`: `process.service` entries started, restarted with backoff, and stopped.

Nothing here is durable: a process lives in one worker's memory and dies with it.
"""
