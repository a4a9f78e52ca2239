"""history service: shards, mutable state, history events, execution stores, queue processors.

Public surface (what the one-process assembly wires up):

* ``history.store.sqlite.SqliteStore(path)`` - the SQLite execution store (``None``: in memory);
  ``await open()`` before use, ``await close()`` after.
* ``history.store.base.ExecutionStore`` - the store protocol (SQLite now, Cassandra later).
* ``history.visibility.SqliteVisibilityStore(store)`` - ``legato.api.VisibilityStore``.
* ``history.service.HistoryServiceImpl(store, visibility, config, *, matching=None, clock=None,
  identity="", task_sink=None)`` - ``legato.api.HistoryService``; ``set_matching(m)``,
  ``await start()``, ``await stop()``; ``set_history_client(h)`` routes cross-workflow calls
  (default: itself); workflow and activity tasks go to ``task_sink`` (a Kafka publisher), else to
  matching.

Inside: ``engine`` (the protocol rules), ``processes`` (children, messages, monitors, links,
attributes, activity cancellation: docs/processes.md), ``runs`` (first runs with their start
options; continue-as-new, retry and cron runs), ``process_tasks`` (the cross-workflow transfer
tasks), ``state`` (mutable state and mutations), ``shard`` (ownership, fencing, group commit,
caches), ``queues`` (transfer and timer processors).
"""
