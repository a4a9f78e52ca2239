"""worker service: the Lua runtime, deterministic replay, entry loading, pollers, cache, activities.

Public names:
* `worker.entries.load_registry(path) -> Registry`, `EntryError`
* `worker.worker.Worker(client, registry, config, identity="")` with `await start()` / `await stop()`
* `worker.replay.replay(registry, history, config=None, ...) -> list[Command]` (raises `TaskFailure`)
* `worker.runtime.TaskFailure` (`.cause`, `.failure`)
* `worker.activity.ActivityRunner(registry).call(activity_type, args)` / `.execute(ActivityTask)`
"""
