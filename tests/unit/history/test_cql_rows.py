"""The rows `Cql` returns: the driver's named tuples, with one class per column list instead of
the driver's new class per result (about 100 us each, on every conditional batch's result)."""

from __future__ import annotations

import pytest
from cassandra.query import named_tuple_factory

from history.store import cql as cql_module
from history.store.cql import Cql, cached_named_tuple_factory


def test_rows_are_the_drivers_named_tuples_with_the_drivers_names() -> None:
    for cols in (["[applied]", "range_id"], ["a b", "1x", "select"], ["x", "x"]):
        values = [tuple(range(len(cols)))]
        ours, theirs = cached_named_tuple_factory(cols, values), named_tuple_factory(cols, values)
        assert ours == theirs and ours[0]._fields == theirs[0]._fields


def test_one_class_per_column_list_and_the_classes_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    first = cached_named_tuple_factory(["[applied]", "next_event_id"], [(True, 7)])
    again = cached_named_tuple_factory(["[applied]", "next_event_id"], [(False, 8), (True, 9)])
    assert type(first[0]) is type(again[0]) and again[1].applied and again[1].next_event_id == 9
    assert cached_named_tuple_factory(["a"], []) == []
    monkeypatch.setattr(cql_module, "MAX_ROW_CLASSES", 3)
    for i in range(10):
        cached_named_tuple_factory([f"c{i}"], [(i,)])
    assert len(cql_module._row_classes) <= 3


async def test_the_nodes_rows_come_through_the_cached_factory(cassandra_admin: Cql) -> None:
    text = "SELECT key, cluster_name FROM system.local"
    one, two = await cassandra_admin.execute(text), await cassandra_admin.execute(text)
    assert one[0].key == "local" and one[0][0] == "local" and one[0].cluster_name == two[0].cluster_name
    assert type(one[0]) is type(two[0])  # the driver's own factory makes a new class per result
