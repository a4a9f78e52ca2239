"""The public classes satisfy the shared protocols (checked by mypy; constructed here too)."""

from __future__ import annotations

from history.service import HistoryServiceImpl
from history.store.base import ExecutionStore
from history.store.sqlite import SqliteStore
from history.visibility import SqliteVisibilityStore
from legato import api
from tests.unit.history.conftest import FakeMatching, make_config


def test_protocols() -> None:
    store: ExecutionStore = SqliteStore(None)
    assert isinstance(store, SqliteStore)
    vis: api.VisibilityStore = SqliteVisibilityStore(store)
    matching: api.MatchingService = FakeMatching()
    history: api.HistoryService = HistoryServiceImpl(store, vis, make_config(), matching=matching)
    assert isinstance(history, HistoryServiceImpl)
