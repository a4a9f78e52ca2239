"""The one-process assembly: history, matching and frontend in one process, on SQLite (default)
or on Cassandra (`config.store.kind`), with the in-process task bus (default) or Kafka
(`config.queues.kind`; the topics must have been made by `legato kafka setup`).

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
from history.store.base import ExecutionStore
from history.store.factory import Stores, open_stores
from legato.api import WorkflowService
from legato.config import Config
from legato.task_publisher import KafkaTaskPublisher, open_task_publisher
from matching.kafka_matching import KafkaMatching
from matching.service import InProcessMatching

log = logging.getLogger("legato.server")


@dataclass
class Engine:
    """History + matching + frontend. On SQLite, `db_path=None` keeps everything in memory."""

    config: Config
    db_path: str | None = None
    identity: str = "legato-dev"
    _stores: Stores | None = field(default=None, init=False)
    _history: HistoryServiceImpl | None = field(default=None, init=False)
    _matching: InProcessMatching | KafkaMatching | None = field(default=None, init=False)
    _publisher: KafkaTaskPublisher | None = field(default=None, init=False)
    _frontend: Frontend | None = field(default=None, init=False)

    @property
    def frontend(self) -> WorkflowService:
        assert self._frontend is not None, "engine not started"
        return self._frontend

    @property
    def data_description(self) -> str:
        return self._stores.description if self._stores is not None else "not open"

    @property
    def matching(self) -> InProcessMatching | KafkaMatching:
        assert self._matching is not None, "engine not started"
        return self._matching

    @property
    def queues_description(self) -> str:
        q = self.config.queues
        return f"Kafka {','.join(q.kafka_bootstrap)} prefix {q.topic_prefix}" if q.kind == "kafka" else "in-process"

    @property
    def execution_store(self) -> ExecutionStore:
        assert self._stores is not None, "engine not started"
        return self._stores.execution

    async def start(self) -> None:
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise

    async def _start(self) -> None:
        kafka = self.config.queues.kind == "kafka"
        publisher = self._publisher = await open_task_publisher(self.config.queues) if kafka else None
        stores = self._stores = await open_stores(self.config, self.db_path)
        visibility = stores.visibility
        history = self._history = HistoryServiceImpl(stores.execution, visibility, self.config,
                                                     identity=self.identity, task_sink=publisher)
        if publisher is None:
            matching: InProcessMatching | KafkaMatching = InProcessMatching(history, self.config)
        else:
            matching = KafkaMatching(history, self.config, publisher)
            await matching.start()
        self._matching = matching
        history.set_matching(matching)
        await history.start()
        self._frontend = Frontend(history, matching, visibility, self.config)

    async def stop(self) -> None:
        # History first: with matching gone it would keep retrying its hand-offs.
        history, self._history = self._history, None
        if history is not None:
            await history.stop()
        matching, self._matching = self._matching, None
        if matching is not None:
            await matching.stop()
        publisher, self._publisher = self._publisher, None
        if publisher is not None:
            await publisher.stop()
        stores, self._stores = self._stores, None
        if stores is not None:
            await stores.close()

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
        print(f"legato: dev server listening on {host}:{port} (data: {engine.data_description}; "
              f"queues: {engine.queues_description})", flush=True)
        try:
            await (stop.wait() if stop is not None else asyncio.Event().wait())
        finally:
            with contextlib.suppress(Exception):
                await server.stop(grace=1.0)
