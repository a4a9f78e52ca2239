"""Run ids: UUIDs of version 7, so that what is keyed by run id is written in time order."""

from __future__ import annotations

import os
import time
import uuid

from legato.ids import new_run_id


def test_run_ids_are_version_7_unique_and_in_time_order() -> None:
    before_ms = time.time_ns() // 1_000_000
    ids = [new_run_id() for _ in range(5000)]
    assert len(set(ids)) == len(ids)
    parsed = [uuid.UUID(i) for i in ids]
    assert all(u.version == 7 and u.variant == uuid.RFC_4122 and str(u) == i for u, i in zip(parsed, ids, strict=True))
    assert ids == sorted(ids)  # made one after another: each sorts after the one before
    # The first 48 bits are Unix milliseconds: not before the test began.
    assert parsed[0].int >> 80 >= before_ms


def test_a_forked_process_draws_other_run_ids() -> None:
    """A process forked from one that made run ids (a prefork server, a test runner) must not
    repeat its parent's: the random bits come from the OS, not from a state the fork copies."""
    new_run_id()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: three ids to the pipe, then out without any cleanup of the parent's
        try:
            os.write(write, " ".join(new_run_id() for _ in range(3)).encode())
        finally:
            os._exit(0)
    os.close(write)
    ours = {new_run_id() for _ in range(3)}
    with os.fdopen(read) as f:
        theirs = set(f.read().split())
    os.waitpid(pid, 0)
    assert len(theirs) == 3 and not ours & theirs
