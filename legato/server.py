"""The one-process assembly: history, matching and frontend in one process on SQLite.

`legato server start-dev` serves it over gRPC; `legato run` adds an in-process worker.
The services still meet only through the interfaces of `legato.api`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field

from frontend.service import Frontend
from history.service import HistoryServiceImpl
from history.store.sqlite import SqliteStore
from history.visibility import SqliteVisibilityStore
from legato.api import WorkflowService
from legato.config import Config
from matching.service import InProcessMatching

log = logging.getLogger("legato.server")


@dataclass
class Engine:
    """History + matching + frontend. `db_path=None` keeps everything in memory."""

    config: Config
    db_path: str | None = None
    identity: str = "legato-dev"
    _store: SqliteStore | None = field(default=None, init=False)
    _history: HistoryServiceImpl | None = field(default=None, init=False)
    _matching: InProcessMatching | None = field(default=None, init=False)
    _frontend: Frontend | None = field(default=None, init=False)

    @property
    def frontend(self) -> WorkflowService:
        assert self._frontend is not None, "engine not started"
        return self._frontend

    async def start(self) -> None:
        store = SqliteStore(self.db_path, commit_window_ms=self.config.history.store_commit_window_ms)
        await store.open()
        self._store = store
        visibility = SqliteVisibilityStore(store)
        history = HistoryServiceImpl(store, visibility, self.config, identity=self.identity)
        matching = InProcessMatching(history, self.config)
        history.set_matching(matching)
        await history.start()
        self._history, self._matching = history, matching
        self._frontend = Frontend(history, matching, visibility, self.config)

    async def stop(self) -> None:
        # History first: with matching gone it would keep retrying its hand-offs.
        if self._history is not None:
            await self._history.stop()
        if self._matching is not None:
            await self._matching.stop()
        if self._store is not None:
            await self._store.close()

    async def __aenter__(self) -> Engine:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


async def serve_dev(config: Config, db_path: str | None, host: str, port: int,
                    stop: asyncio.Event | None = None) -> None:
    """Run the engine with its gRPC API until `stop` is set (or forever)."""
    from frontend.grpc_server import serve

    async with Engine(config, db_path) as engine:
        server = await serve(engine.frontend, host, port, config=config)
        where = db_path or "memory"
        print(f"legato: dev server listening on {host}:{port} (data: {where})", flush=True)
        try:
            await (stop.wait() if stop is not None else asyncio.Event().wait())
        finally:
            with contextlib.suppress(Exception):
                await server.stop(grace=1.0)
