"""Visibility on Cassandra (being written)."""

from __future__ import annotations

# CQL statements of the visibility tables, `{keyspace}` to be formatted in; part of schema v1
# (history/store/cassandra_schema.py applies them).
VISIBILITY_SCHEMA: list[str] = []
