"""Execution stores: the persistence of shards, runs, outbox tasks and history events."""
